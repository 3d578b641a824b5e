//! The `write` scenario: POST line-protocol bodies of B points over C
//! keep-alive connections in a closed loop. Bodies are generated (and
//! optionally gzip-compressed) before timing starts. Only 204 responses
//! count as points written; 503 is reported separately as refused.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::body;
use crate::cli::Settings;
use crate::closed_loop::{self, Plan};
use crate::http::build_post;
use crate::progress::Progress;
use crate::report::{Report, per_sec};
use crate::stats::rate;

/// The pre-built requests of a run and what they hold.
pub struct Prepared {
    pub requests: Vec<Vec<u8>>,
    /// Average body size before and after gzip (the same without `--gzip`).
    pub body_avg: usize,
    pub wire_avg: usize,
    /// Numeric field values per point (every line of every body has this many).
    pub values_per_point: u64,
}

/// Generates `s.bodies` bodies of `s.batch` lines whose timestamps end about
/// now, and wraps each in a complete POST request.
pub fn prepare(s: &Settings) -> std::io::Result<Prepared> {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    // Timestamps of the whole set end about now.
    let span = (s.bodies as u64) * (s.batch as u64) * 1_000_000;
    let texts = body::make_bodies(s.bodies as u64, s.batch as u64, now_ns.saturating_sub(span));
    let mut values_per_point = None;
    for t in &texts {
        let n = body::values_per_line(t);
        if n.is_none() || values_per_point.get_or_insert(n) != &n {
            return Err(std::io::Error::other(
                "generated bodies differ in values per line",
            ));
        }
    }
    let raw_bytes: usize = texts.iter().map(String::len).sum();
    let mut requests = Vec::with_capacity(texts.len());
    let mut wire_bytes = 0usize;
    for t in &texts {
        let payload = if s.gzip {
            body::gzip(t.as_bytes())?
        } else {
            t.as_bytes().to_vec()
        };
        wire_bytes += payload.len();
        requests.push(build_post(&s.path, &s.host, &payload, s.gzip));
    }
    Ok(Prepared {
        body_avg: raw_bytes / requests.len().max(1),
        wire_avg: wire_bytes / requests.len().max(1),
        requests,
        values_per_point: values_per_point.flatten().unwrap_or(0),
    })
}

pub fn run(s: &Settings) -> std::io::Result<Report> {
    let Prepared {
        requests,
        body_avg,
        wire_avg,
        ..
    } = prepare(s)?;

    let mut progress = Progress::start("write", "requests", None);
    let start = Instant::now();
    let plan = Plan {
        requests: &requests,
        points_per_request: s.batch as u64,
        connections: s.connections,
        threads: s.threads,
        timeout: s.timeout,
        measure_from: start + s.warmup,
        end: start + s.warmup + s.duration,
        budget: None,
    };
    let out = closed_loop::run(&plan, s.addr, &progress.counters)?;
    progress.finish();
    let secs = s.duration.as_secs_f64();
    let pps = rate(out.points, secs);
    let rps = rate(out.responses, secs);
    let refused = out.statuses.get(503);
    let mib_s = ((out.bytes_sent as f64 / secs / 1_048_576.0) * 100.0).round() / 100.0;

    let mut rep = Report::new();
    rep.reached = out.connected > 0;
    rep.set("connections", json!(s.connections));
    rep.set("threads", json!(s.threads));
    rep.set("batch", json!(s.batch));
    rep.set("gzip", json!(s.gzip));
    rep.set("distinct_bodies", json!(requests.len()));
    rep.set("body_bytes", json!(body_avg));
    rep.set("wire_body_bytes", json!(wire_avg));
    rep.set("duration_secs", json!(secs));
    rep.set("warmup_secs", json!(s.warmup.as_secs_f64()));
    rep.set("requests", json!(out.responses));
    rep.set("requests_per_sec", json!(rps));
    rep.set("points_written", json!(out.points));
    rep.set("points_per_sec", json!(pps));
    rep.set("refused", json!(refused));
    rep.set("latency_us", out.latency.to_json());
    rep.set("status_counts", out.statuses.to_json());
    rep.set("errors", out.errors.to_json());
    rep.set("error_count", json!(out.errors.total()));
    rep.set("reconnects", json!(out.reconnects));
    rep.set("connected", json!(out.connected));
    rep.set("send_mib_per_sec", json!(mib_s));

    rep.row(
        "connections",
        format!("{} on {} thread(s)", s.connections, s.threads),
    );
    rep.row(
        "bodies",
        format!(
            "{} distinct x {} points, {} bytes{}",
            requests.len(),
            s.batch,
            body_avg,
            if s.gzip {
                format!(" ({wire_avg} gzipped)")
            } else {
                String::new()
            }
        ),
    );
    rep.row(
        "window",
        format!("{secs:.1} s after {:.1} s warm-up", s.warmup.as_secs_f64()),
    );
    rep.row("points (204)", format!("{} ({})", out.points, per_sec(pps)));
    rep.row("requests", format!("{} ({})", out.responses, per_sec(rps)));
    rep.row("sent", format!("{mib_s:.2} MiB/s"));
    rep.row("latency", out.latency.summary());
    rep.row("statuses", out.statuses.summary());
    rep.row("refused (503)", refused.to_string());
    rep.row("errors", out.errors.summary());
    rep.row("reconnects", out.reconnects.to_string());
    Ok(rep)
}
