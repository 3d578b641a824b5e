//! The `keepalive` scenario: `GET --path` over C keep-alive connections in
//! a closed loop for D seconds after a warm-up, reporting requests/s,
//! latency percentiles, errors and non-2xx responses.

use std::time::Instant;

use serde_json::json;

use crate::cli::Settings;
use crate::closed_loop::{self, Plan};
use crate::http::build_request;
use crate::progress::Progress;
use crate::report::{Report, per_sec};
use crate::stats::rate;

pub fn run(s: &Settings) -> std::io::Result<Report> {
    let requests = vec![build_request("GET", &s.path, &s.host, false)];
    let mut progress = Progress::start("keepalive", "requests", None);
    let start = Instant::now();
    let plan = Plan {
        requests: &requests,
        points_per_request: 0,
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
    let rps = rate(out.responses, secs);

    let mut rep = Report::new();
    rep.reached = out.connected > 0;
    rep.set("connections", json!(s.connections));
    rep.set("threads", json!(s.threads));
    rep.set("duration_secs", json!(secs));
    rep.set("warmup_secs", json!(s.warmup.as_secs_f64()));
    rep.set("requests", json!(out.responses));
    rep.set("requests_per_sec", json!(rps));
    rep.set("latency_us", out.latency.to_json());
    rep.set("status_counts", out.statuses.to_json());
    rep.set("non_2xx", json!(out.statuses.non_2xx()));
    rep.set("errors", out.errors.to_json());
    rep.set("error_count", json!(out.errors.total()));
    rep.set("reconnects", json!(out.reconnects));
    rep.set("connected", json!(out.connected));
    rep.set("warmup_requests", json!(out.warmup_responses));

    rep.row(
        "connections",
        format!("{} on {} thread(s)", s.connections, s.threads),
    );
    rep.row(
        "window",
        format!("{secs:.1} s after {:.1} s warm-up", s.warmup.as_secs_f64()),
    );
    rep.row("requests", format!("{} ({})", out.responses, per_sec(rps)));
    rep.row("latency", out.latency.summary());
    rep.row("statuses", out.statuses.summary());
    rep.row("non-2xx", out.statuses.non_2xx().to_string());
    rep.row("errors", out.errors.summary());
    rep.row("reconnects", out.reconnects.to_string());
    Ok(rep)
}
