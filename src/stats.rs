//! The server's own counters and gauges, and the `/stats` JSON built from them.
//!
//! Counters are relaxed atomics grouped by the thread that writes them (reactor, workers,
//! pipeline), each group on its own cache lines, so the hot paths never bounce a line
//! between cores. Everything since start; gauges (`connections_active`, queue depths,
//! `series`) are current values. The Prometheus rendering of the same figures
//! (`metricstream_*` families) lives with `/metrics`, which reads these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Keeps a group of counters on their own cache lines.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Written by the I/O thread(s): the reactor, or the accept/serve threads of the
/// comparison models.
#[derive(Default)]
pub struct IoCounters {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_rejected_over_limit: AtomicU64,
    pub accept_batches: AtomicU64,
    pub accept_batch_max: AtomicU64,
    pub accept_errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub timeouts_header: AtomicU64,
    pub timeouts_body: AtomicU64,
    pub timeouts_idle: AtomicU64,
    pub timeouts_write: AtomicU64,
}

/// Statuses counted individually in `responses_by_status`; others land in `other`.
pub const COUNTED_STATUSES: [u16; 17] = [
    100, 200, 204, 400, 401, 404, 405, 408, 411, 413, 415, 417, 431, 500, 501, 503, 505,
];

/// Written by workers.
#[derive(Default)]
pub struct RequestCounters {
    pub requests_total: AtomicU64,
    pub responses: [AtomicU64; COUNTED_STATUSES.len()],
    pub responses_other: AtomicU64,
    pub worker_jobs: AtomicU64,
    pub waker_wakes: AtomicU64,
}

/// Written by the ingestion path and the aggregator.
#[derive(Default)]
pub struct PipelineCounters {
    pub points_accepted: AtomicU64,
    pub points_queued: AtomicU64,
    pub points_aggregated: AtomicU64,
    pub points_dropped_series_limit: AtomicU64,
    pub writes_refused_queue_full: AtomicU64,
    pub series: AtomicU64,
    pub label_collisions: AtomicU64,
}

/// Gauges the worker pool maintains.
#[derive(Default)]
pub struct PoolGauges {
    pub worker_queue_depth: AtomicU64,
}

pub struct Stats {
    pub started: Instant,
    pub io: Padded<IoCounters>,
    pub requests: Padded<RequestCounters>,
    pub pipeline: Padded<PipelineCounters>,
    pub pool: Padded<PoolGauges>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            io: Padded::default(),
            requests: Padded::default(),
            pipeline: Padded::default(),
            pool: Padded::default(),
        }
    }
}

/// Adds `n` to a counter only one thread writes (no locked read-modify-write needed).
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl Stats {
    pub fn count_response(&self, status: u16) {
        match COUNTED_STATUSES.iter().position(|&s| s == status) {
            Some(i) => bump(&self.requests.responses[i], 1),
            None => bump(&self.requests.responses_other, 1),
        }
    }

    pub fn note_accept_batch(&self, n: u64) {
        bump(&self.io.accept_batches, 1);
        self.io.accept_batch_max.fetch_max(n, Relaxed);
    }

    /// `(status, count)` for every status answered at least once.
    pub fn responses_by_status(&self) -> Vec<(u16, u64)> {
        COUNTED_STATUSES
            .iter()
            .zip(self.requests.responses.iter())
            .map(|(&s, c)| (s, c.load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// What `/stats` needs beyond the counters: facts about this server instance.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub io_model: &'static str,
    pub listen_addr: String,
    pub backlog_configured: u32,
    pub backlog_effective: u32,
    pub workers: usize,
    pub listener_fd: Option<std::os::fd::RawFd>,
}

/// Renders the `/stats` JSON object.
pub fn render_json(stats: &Stats, info: &ServerInfo, out: &mut Vec<u8>) {
    use serde_json::{Map, Value, json};
    let io = &stats.io;
    let rq = &stats.requests;
    let pl = &stats.pipeline;
    let l = |c: &AtomicU64| c.load(Relaxed);
    let mut by_status = Map::new();
    for (s, n) in stats.responses_by_status() {
        by_status.insert(s.to_string(), Value::from(n));
    }
    let other = l(&rq.responses_other);
    if other > 0 {
        by_status.insert("other".to_string(), Value::from(other));
    }
    let queue_depth = info
        .listener_fd
        .and_then(crate::net::listener::accept_queue_depth);
    let netstat = crate::net::listener::listen_counters();
    let v = json!({
        "uptime_seconds": stats.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
        "io_model": info.io_model,
        "listen_addr": info.listen_addr,
        "backlog_configured": info.backlog_configured,
        "backlog_effective": info.backlog_effective,
        "workers": info.workers,
        "connections_accepted": l(&io.connections_accepted),
        "connections_active": l(&io.connections_active),
        "connections_rejected_over_limit": l(&io.connections_rejected_over_limit),
        "accept_batches": l(&io.accept_batches),
        "accept_batch_max": l(&io.accept_batch_max),
        "accept_errors": l(&io.accept_errors),
        "accept_queue_depth": queue_depth,
        "listen_overflows": netstat.map(|n| n.overflows),
        "listen_drops": netstat.map(|n| n.drops),
        "requests_total": l(&rq.requests_total),
        "responses_by_status": Value::Object(by_status),
        "worker_jobs": l(&rq.worker_jobs),
        "worker_queue_depth": l(&stats.pool.worker_queue_depth),
        "waker_wakes": l(&rq.waker_wakes),
        "points_accepted": l(&pl.points_accepted),
        "points_queued": l(&pl.points_queued),
        "points_aggregated": l(&pl.points_aggregated),
        "points_dropped_series_limit": l(&pl.points_dropped_series_limit),
        "writes_refused_queue_full": l(&pl.writes_refused_queue_full),
        "series": l(&pl.series),
        "label_collisions": l(&pl.label_collisions),
        "bytes_read": l(&io.bytes_read),
        "bytes_written": l(&io.bytes_written),
        "timeouts_header": l(&io.timeouts_header),
        "timeouts_body": l(&io.timeouts_body),
        "timeouts_idle": l(&io.timeouts_idle),
        "timeouts_write": l(&io.timeouts_write),
        "process_rss_bytes": crate::sys::rss_bytes(),
    });
    // serde_json never fails writing a Value into a Vec.
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// The server's own figures as Prometheus families (`metricstream_*`), for `/metrics`.
pub fn own_families(
    stats: &Stats,
    info: &ServerInfo,
    pipeline: &crate::ingest::Pipeline,
) -> Vec<crate::read::exposition::OwnFamily<'static>> {
    use crate::read::exposition::{OwnFamily, OwnKind};
    let io = &stats.io;
    let rq = &stats.requests;
    let pl = &stats.pipeline;
    let l = |c: &AtomicU64| c.load(Relaxed) as f64;
    let one = |name, help, kind, v: f64| OwnFamily {
        name,
        help,
        kind,
        samples: vec![(Vec::new(), v)],
    };
    use OwnKind::{Counter, Gauge};
    let mut f = vec![
        OwnFamily {
            name: "metricstream_build_info",
            help: "Version and I/O model of this server (always 1).",
            kind: Gauge,
            samples: vec![(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("io_model", info.io_model.to_string()),
                ],
                1.0,
            )],
        },
        one(
            "metricstream_uptime_seconds",
            "Seconds since the server started.",
            Gauge,
            stats.started.elapsed().as_secs_f64(),
        ),
        one(
            "metricstream_connections_accepted_total",
            "Connections accepted from the listener.",
            Counter,
            l(&io.connections_accepted),
        ),
        one(
            "metricstream_connections_active",
            "Client connections open now.",
            Gauge,
            l(&io.connections_active),
        ),
        one(
            "metricstream_connections_rejected_over_limit_total",
            "Connections answered 503 because --max-connections was reached.",
            Counter,
            l(&io.connections_rejected_over_limit),
        ),
        one(
            "metricstream_accept_batches_total",
            "Drains of the accept queue that took at least one connection.",
            Counter,
            l(&io.accept_batches),
        ),
        one(
            "metricstream_accept_batch_max",
            "Most connections taken from the accept queue in one drain.",
            Gauge,
            l(&io.accept_batch_max),
        ),
        one(
            "metricstream_requests_total",
            "HTTP requests received.",
            Counter,
            l(&rq.requests_total),
        ),
        OwnFamily {
            name: "metricstream_responses_total",
            help: "HTTP responses sent, by status code.",
            kind: Counter,
            samples: stats
                .responses_by_status()
                .into_iter()
                .map(|(s, n)| (vec![("status", s.to_string())], n as f64))
                .collect(),
        },
        one(
            "metricstream_worker_jobs_total",
            "Jobs handed from the reactor to the worker pool.",
            Counter,
            l(&rq.worker_jobs),
        ),
        one(
            "metricstream_worker_queue_depth",
            "Jobs waiting for a worker.",
            Gauge,
            l(&stats.pool.worker_queue_depth),
        ),
        one(
            "metricstream_waker_wakes_total",
            "Times a worker woke the reactor (once per batch of completions).",
            Counter,
            l(&rq.waker_wakes),
        ),
        one(
            "metricstream_points_accepted_total",
            "Points in writes that parsed successfully.",
            Counter,
            l(&pl.points_accepted),
        ),
        one(
            "metricstream_points_queued_total",
            "Points admitted to the ingestion queue (acknowledged with 204).",
            Counter,
            l(&pl.points_queued),
        ),
        one(
            "metricstream_points_aggregated_total",
            "Points applied to the series aggregates.",
            Counter,
            l(&pl.points_aggregated),
        ),
        one(
            "metricstream_points_dropped_series_limit_total",
            "Points that lost a field to --max-series.",
            Counter,
            l(&pl.points_dropped_series_limit),
        ),
        one(
            "metricstream_writes_refused_queue_full_total",
            "Writes answered 503 because the ingestion queue was full.",
            Counter,
            l(&pl.writes_refused_queue_full),
        ),
        one(
            "metricstream_queue_points",
            "Points admitted and not yet aggregated.",
            Gauge,
            pipeline.queue_depth() as f64,
        ),
        one(
            "metricstream_queue_capacity_points",
            "Capacity of the ingestion queue in points (--queue-capacity).",
            Gauge,
            pipeline.queue_capacity() as f64,
        ),
        one(
            "metricstream_series",
            "Distinct series (measurement, tag set, field) held.",
            Gauge,
            l(&pl.series),
        ),
        one(
            "metricstream_label_collisions_total",
            "Tags left out of /metrics because another tag of the series sanitised to the same label name.",
            Counter,
            l(&pl.label_collisions),
        ),
        one(
            "metricstream_read_bytes_total",
            "Bytes read from client connections.",
            Counter,
            l(&io.bytes_read),
        ),
        one(
            "metricstream_written_bytes_total",
            "Bytes written to client connections.",
            Counter,
            l(&io.bytes_written),
        ),
        OwnFamily {
            name: "metricstream_timeouts_total",
            help: "Connections closed by a deadline, by kind.",
            kind: Counter,
            samples: [
                ("header", &io.timeouts_header),
                ("body", &io.timeouts_body),
                ("idle", &io.timeouts_idle),
                ("write", &io.timeouts_write),
            ]
            .into_iter()
            .map(|(k, c)| (vec![("kind", k.to_string())], l(c)))
            .collect(),
        },
    ];
    if let Some(depth) = info
        .listener_fd
        .and_then(crate::net::listener::accept_queue_depth)
    {
        f.push(one(
            "metricstream_accept_queue_depth",
            "Connections waiting in the listener's accept queue (TCP_INFO).",
            Gauge,
            depth as f64,
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_has_every_spec_field() {
        let stats = Stats::default();
        stats.count_response(204);
        stats.count_response(204);
        stats.count_response(418);
        let info = ServerInfo {
            io_model: "reactor",
            listen_addr: "127.0.0.1:1".into(),
            backlog_configured: 1024,
            backlog_effective: 1024,
            workers: 2,
            listener_fd: None,
        };
        let mut out = Vec::new();
        render_json(&stats, &info, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for field in [
            "uptime_seconds",
            "io_model",
            "listen_addr",
            "backlog_configured",
            "backlog_effective",
            "connections_accepted",
            "connections_active",
            "connections_rejected_over_limit",
            "accept_batches",
            "accept_batch_max",
            "accept_queue_depth",
            "listen_overflows",
            "listen_drops",
            "requests_total",
            "responses_by_status",
            "worker_jobs",
            "worker_queue_depth",
            "waker_wakes",
            "points_accepted",
            "points_queued",
            "points_aggregated",
            "points_dropped_series_limit",
            "series",
            "bytes_read",
            "bytes_written",
            "timeouts_header",
            "timeouts_body",
            "timeouts_idle",
        ] {
            assert!(v.get(field).is_some(), "missing {}", field);
        }
        assert_eq!(v["responses_by_status"]["204"], 2);
        assert_eq!(v["responses_by_status"]["other"], 1);
    }
}
