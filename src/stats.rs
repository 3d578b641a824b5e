//! The server's own counters and gauges, declared once in `stats_table!`, and the two
//! renderings generated from that declaration: the `/stats` JSON and the `metricstream_*`
//! Prometheus families that `/metrics` appends after the user's series.
//!
//! Counters are relaxed atomics grouped by the thread that writes them (reactor, workers,
//! pipeline), each group on its own cache lines, so the hot paths never bounce a line
//! between cores. Everything since start; gauges (`connections_active`, queue depths,
//! `series`) are current values. This module sits at the bottom of the dependency graph:
//! it must never import `ingest` or `read` (they import it); what it needs from them comes
//! in as plain numbers or through [`QueueGauges`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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

/// Prometheus type of one of the server's own families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnKind {
    Counter,
    Gauge,
}

/// One of the server's own metric families, as `/metrics` renders it. `name` and label
/// names must already be valid Prometheus names (they are the server's constants); label
/// values and `help` are escaped by the renderer. Samples with a non-finite value are
/// skipped.
#[derive(Clone, Debug)]
pub struct OwnFamily<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub kind: OwnKind,
    /// `(labels, value)` per sample.
    pub samples: Vec<(Vec<(&'a str, String)>, f64)>,
}

/// One declared counter or gauge: where it shows up in `/stats` and in `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    /// The `/stats` key, which is also the field name in its group.
    pub key: &'static str,
    /// The `metricstream_*` family it is a sample of.
    pub family: &'static str,
    /// The one label that tells apart several figures sharing a family (`kind="header"`).
    pub label: Option<(&'static str, &'static str)>,
    pub kind: OwnKind,
    pub help: &'static str,
}

/// Declares every counter group, the [`Stats`] that holds them, and [`FIGURES`] (the
/// table both renderings walk). One line per figure:
/// `field: Kind "family" [{label = "value"}], help;` — the field name is the `/stats` key.
/// Figures of one labelled family must be consecutive and share kind and help (a test
/// checks it). Fields that are not plain figures (arrays) go in a `+ { field: Type, }`
/// block after the group and are rendered by hand.
macro_rules! stats_table {
    ($(
        $(#[$group_meta:meta])*
        $group:ident: $Group:ident {
            $( $field:ident: $kind:ident $family:literal $({ $lname:ident = $lvalue:literal })?, $help:expr; )*
        }
        $( + { $( $(#[$extra_meta:meta])* $extra:ident: $extra_ty:ty, )* } )?
    )*) => {
        $(
            $(#[$group_meta])*
            #[derive(Default)]
            pub struct $Group {
                $( pub $field: AtomicU64, )*
                $( $( $(#[$extra_meta])* pub $extra: $extra_ty, )* )?
            }
        )*

        /// Every counter and gauge of the server, by the thread that writes it.
        pub struct Stats {
            pub started: Instant,
            $( pub $group: Padded<$Group>, )*
            /// One entry per forward target, set once at start-up (empty if none).
            pub forward: OnceLock<Vec<Arc<ForwardStats>>>,
        }

        impl Default for Stats {
            fn default() -> Self {
                Stats {
                    started: Instant::now(),
                    $( $group: Padded::default(), )*
                    forward: OnceLock::new(),
                }
            }
        }

        /// Every declared figure, in declaration order.
        pub const FIGURES: &[Figure] = &[
            $( $( Figure {
                key: stringify!($field),
                family: $family,
                label: stats_table!(@label $($lname $lvalue)?),
                kind: OwnKind::$kind,
                help: $help,
            }, )* )*
        ];

        impl Stats {
            /// The cell behind every entry of [`FIGURES`], in the same order.
            pub fn figure_cells(&self) -> [&AtomicU64; FIGURES.len()] {
                [ $( $( &self.$group.$field, )* )* ]
            }
        }
    };
    (@label) => { None };
    (@label $name:ident $value:literal) => { Some((stringify!($name), $value)) };
}

const TIMEOUTS_HELP: &str = "Connections closed by a deadline, by kind.";

stats_table! {
    /// Written by the I/O thread(s): the reactor, or the accept/serve threads of the
    /// comparison models.
    io: IoCounters {
        connections_accepted: Counter "metricstream_connections_accepted_total",
            "Connections accepted from the listener.";
        connections_active: Gauge "metricstream_connections_active",
            "Client connections open now.";
        connections_rejected_over_limit: Counter "metricstream_connections_rejected_over_limit_total",
            "Connections answered 503 because --max-connections was reached.";
        accept_batches: Counter "metricstream_accept_batches_total",
            "Drains of the accept queue that took at least one connection.";
        accept_batch_max: Gauge "metricstream_accept_batch_max",
            "Most connections taken from the accept queue in one drain.";
        accept_errors: Counter "metricstream_accept_errors_total",
            "accept(2) calls that failed (descriptors exhausted, connection aborted); would-block is not an error.";
        bytes_read: Counter "metricstream_read_bytes_total",
            "Bytes read from client connections.";
        bytes_written: Counter "metricstream_written_bytes_total",
            "Bytes written to client connections.";
        timeouts_header: Counter "metricstream_timeouts_total" { kind = "header" },
            TIMEOUTS_HELP;
        timeouts_body: Counter "metricstream_timeouts_total" { kind = "body" },
            TIMEOUTS_HELP;
        timeouts_idle: Counter "metricstream_timeouts_total" { kind = "idle" },
            TIMEOUTS_HELP;
        timeouts_write: Counter "metricstream_timeouts_total" { kind = "write" },
            TIMEOUTS_HELP;
    }

    /// Written by workers.
    requests: RequestCounters {
        requests_total: Counter "metricstream_requests_total",
            "HTTP requests received.";
        worker_jobs: Counter "metricstream_worker_jobs_total",
            "Jobs handed from the reactor to the worker pool.";
        waker_wakes: Counter "metricstream_waker_wakes_total",
            "Times a worker woke the reactor (once per batch of completions).";
    } + {
        /// Responses per status of [`COUNTED_STATUSES`], same index.
        responses: [AtomicU64; COUNTED_STATUSES.len()],
        /// Responses with any other status.
        responses_other: AtomicU64,
    }

    /// Written by the ingestion path and the aggregator.
    pipeline: PipelineCounters {
        points_accepted: Counter "metricstream_points_accepted_total",
            "Points in writes that parsed successfully.";
        points_queued: Counter "metricstream_points_queued_total",
            "Points admitted to the ingestion queue (acknowledged with 204).";
        points_aggregated: Counter "metricstream_points_aggregated_total",
            "Points applied to the series aggregates.";
        points_dropped_series_limit: Counter "metricstream_points_dropped_series_limit_total",
            "Points that lost a field to --max-series.";
        writes_refused_queue_full: Counter "metricstream_writes_refused_queue_full_total",
            "Writes answered 503 because the ingestion queue was full.";
        series: Gauge "metricstream_series",
            "Distinct series (measurement, tag set, field) held.";
        label_collisions: Counter "metricstream_label_collisions_total",
            "Tags left out of /metrics because another tag of the series sanitised to the same label name.";
        series_expired: Counter "metricstream_series_expired_total",
            "Series removed because they were not written for --series-ttl seconds.";
        series_deleted: Counter "metricstream_series_deleted_total",
            "Series removed by DELETE /series.";
    }

    /// Gauges the worker pool maintains.
    pool: PoolGauges {
        worker_queue_depth: Gauge "metricstream_worker_queue_depth",
            "Jobs waiting for a worker.";
    }

    /// Written by the write log thread, snapshots and recovery (`storage::StorageStats`);
    /// zero under `--memory-only`.
    storage: StorageCounters {
        log_bytes: Counter "metricstream_log_bytes_total",
            "Bytes appended to the write log since start.";
        log_segments: Gauge "metricstream_log_segments",
            "Write log segment files on disk now.";
        log_fsyncs: Counter "metricstream_log_fsyncs_total",
            "fdatasync calls on the write log since start.";
        log_corrupt_records: Counter "metricstream_log_corrupt_records_total",
            "Damaged log records skipped at start-up (a torn tail not counted).";
        snapshot_last_unix: Gauge "metricstream_snapshot_last_unix_seconds",
            "Wall-clock time of the last snapshot written or loaded (0: none).";
        recovered_points: Gauge "metricstream_recovered_points",
            "Points replayed from the write log at start-up.";
    }
}

/// The counters of one forward target, written by its forwarder thread. `url` is the
/// redacted form (never the password).
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub url: String,
    /// `remote_write` or `line_protocol`.
    pub format: &'static str,
    /// Points with at least one value in a request answered `2xx`.
    pub points_sent: AtomicU64,
    /// Points of requests answered with a `4xx` other than `429`.
    pub dropped_rejected: AtomicU64,
    /// Points skipped because the target fell more than `--forward-max-backlog-bytes` behind.
    pub dropped_backlog: AtomicU64,
    /// Field values the format cannot carry (strings in remote_write).
    pub dropped_unsupported: AtomicU64,
    /// Log bytes not yet sent.
    pub backlog_bytes: AtomicU64,
    /// Requests sent again after a network error, `5xx` or `429`.
    pub retries: AtomicU64,
    /// Wall-clock seconds of the last `2xx` (0: none yet).
    pub last_success_unix: AtomicU64,
    /// The last failure, if any (no URL, no secret).
    pub last_error: Mutex<Option<String>>,
}

impl ForwardStats {
    pub fn new(url: &str, format: &'static str) -> ForwardStats {
        ForwardStats {
            url: url.to_string(),
            format,
            ..ForwardStats::default()
        }
    }

    pub fn set_last_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "format": self.format,
            "points_sent": self.points_sent.load(Relaxed),
            "points_dropped": {
                "rejected": self.dropped_rejected.load(Relaxed),
                "backlog": self.dropped_backlog.load(Relaxed),
                "unsupported": self.dropped_unsupported.load(Relaxed),
            },
            "backlog_bytes": self.backlog_bytes.load(Relaxed),
            "retries": self.retries.load(Relaxed),
            "last_error": self.last_error(),
            "last_success_unix": self.last_success_unix.load(Relaxed),
        })
    }
}

/// Statuses counted individually in `responses_by_status`; others land in `other`.
pub const COUNTED_STATUSES: [u16; 17] = [
    100, 200, 204, 400, 401, 404, 405, 408, 411, 413, 415, 417, 431, 500, 501, 503, 505,
];

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

    /// Every declared figure with its current value, in declaration order.
    pub fn figures(&self) -> impl Iterator<Item = (&'static Figure, u64)> + '_ {
        FIGURES
            .iter()
            .zip(self.figure_cells())
            .map(|(f, c)| (f, c.load(Relaxed)))
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

/// Figures read from the kernel at render time rather than counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// Connections waiting in the listener's accept queue (`TCP_INFO`, Linux).
    pub accept_queue_depth: Option<u64>,
    /// System-wide `ListenOverflows` / `ListenDrops` (`/proc/net/netstat`, Linux).
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    pub process_rss_bytes: Option<u64>,
}

impl Readings {
    /// Reads them now (a few syscalls and two /proc files: for `/stats`, never per write).
    pub fn sample(info: &ServerInfo) -> Readings {
        let netstat = crate::sys::listen_counters();
        Readings {
            accept_queue_depth: Readings::accept_queue_depth(info),
            listen_overflows: netstat.map(|n| n.overflows),
            listen_drops: netstat.map(|n| n.drops),
            process_rss_bytes: crate::sys::rss_bytes(),
        }
    }

    /// The one reading `/metrics` exports: one `getsockopt`, no file read.
    pub fn accept_queue_depth(info: &ServerInfo) -> Option<u64> {
        info.listener_fd.and_then(crate::sys::accept_queue_depth)
    }
}

/// The ingestion queue's size as `/metrics` reports it. `ingest::Pipeline` implements it,
/// so this module reads the queue without importing `ingest`.
pub trait QueueGauges {
    /// Points admitted and not yet aggregated.
    fn queue_points(&self) -> usize;
    /// Capacity in points (`--queue-capacity`).
    fn queue_capacity_points(&self) -> usize;
}

impl<T: QueueGauges + ?Sized> QueueGauges for Arc<T> {
    fn queue_points(&self) -> usize {
        (**self).queue_points()
    }
    fn queue_capacity_points(&self) -> usize {
        (**self).queue_capacity_points()
    }
}

/// Renders the `/stats` JSON object, sampling the kernel readings now.
pub fn render_json(stats: &Stats, info: &ServerInfo, out: &mut Vec<u8>) {
    render_json_with(stats, info, &Readings::sample(info), out);
}

/// Renders the `/stats` JSON object: instance facts, readings, every declared figure (key =
/// field name) and `responses_by_status`. Keys are sorted (serde_json's map).
pub fn render_json_with(stats: &Stats, info: &ServerInfo, readings: &Readings, out: &mut Vec<u8>) {
    use serde_json::{Map, Value, json};
    let mut by_status = Map::new();
    for (s, n) in stats.responses_by_status() {
        by_status.insert(s.to_string(), Value::from(n));
    }
    let other = stats.requests.responses_other.load(Relaxed);
    if other > 0 {
        by_status.insert("other".to_string(), Value::from(other));
    }
    let mut v = json!({
        "uptime_seconds": stats.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
        "io_model": info.io_model,
        "listen_addr": info.listen_addr,
        "backlog_configured": info.backlog_configured,
        "backlog_effective": info.backlog_effective,
        "workers": info.workers,
        "accept_queue_depth": readings.accept_queue_depth,
        "listen_overflows": readings.listen_overflows,
        "listen_drops": readings.listen_drops,
        "process_rss_bytes": readings.process_rss_bytes,
        "responses_by_status": Value::Object(by_status),
    });
    if let Value::Object(map) = &mut v {
        for (figure, value) in stats.figures() {
            map.insert(figure.key.to_string(), Value::from(value));
        }
        let forward = stats.forward.get().map_or(&[][..], Vec::as_slice);
        map.insert(
            "forward".to_string(),
            Value::Array(forward.iter().map(|t| t.json()).collect()),
        );
    }
    // serde_json never fails writing a Value into a Vec.
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// The server's own figures as Prometheus families (`metricstream_*`), for `/metrics`,
/// reading the accept-queue depth now.
pub fn own_families(
    stats: &Stats,
    info: &ServerInfo,
    queue: &impl QueueGauges,
) -> Vec<OwnFamily<'static>> {
    own_families_with(
        stats,
        info,
        Readings::accept_queue_depth(info),
        queue.queue_points(),
        queue.queue_capacity_points(),
    )
}

/// The server's own families: build info, uptime, one family per declared figure (figures
/// sharing a family become its labelled samples), responses by status, the queue gauges
/// and, when known, the accept-queue depth.
pub fn own_families_with(
    stats: &Stats,
    info: &ServerInfo,
    accept_queue_depth: Option<u64>,
    queue_points: usize,
    queue_capacity_points: usize,
) -> Vec<OwnFamily<'static>> {
    use OwnKind::{Counter, Gauge};
    let one = |name, help, kind, v: f64| OwnFamily {
        name,
        help,
        kind,
        samples: vec![(Vec::new(), v)],
    };
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
    ];
    for (figure, value) in stats.figures() {
        let labels = match figure.label {
            Some((name, v)) => vec![(name, v.to_string())],
            None => Vec::new(),
        };
        match f.last_mut() {
            Some(last) if last.name == figure.family => last.samples.push((labels, value as f64)),
            _ => f.push(OwnFamily {
                name: figure.family,
                help: figure.help,
                kind: figure.kind,
                samples: vec![(labels, value as f64)],
            }),
        }
    }
    f.push(OwnFamily {
        name: "metricstream_responses_total",
        help: "HTTP responses sent, by status code.",
        kind: Counter,
        samples: stats
            .responses_by_status()
            .into_iter()
            .map(|(s, n)| (vec![("status", s.to_string())], n as f64))
            .collect(),
    });
    f.push(one(
        "metricstream_queue_points",
        "Points admitted and not yet aggregated.",
        Gauge,
        queue_points as f64,
    ));
    f.push(one(
        "metricstream_queue_capacity_points",
        "Capacity of the ingestion queue in points (--queue-capacity).",
        Gauge,
        queue_capacity_points as f64,
    ));
    if let Some(depth) = accept_queue_depth {
        f.push(one(
            "metricstream_accept_queue_depth",
            "Connections waiting in the listener's accept queue (TCP_INFO).",
            Gauge,
            depth as f64,
        ));
    }
    if let Some(targets) = stats.forward.get().filter(|t| !t.is_empty()) {
        forward_families(targets, &mut f);
    }
    f
}

/// `metricstream_forward_*`: one sample per target (labelled by its redacted URL), the
/// drops also by reason.
fn forward_families(targets: &[Arc<ForwardStats>], f: &mut Vec<OwnFamily<'static>>) {
    use OwnKind::{Counter, Gauge};
    let per_target = |name, help, kind, value: &dyn Fn(&ForwardStats) -> u64| OwnFamily {
        name,
        help,
        kind,
        samples: targets
            .iter()
            .map(|t| (vec![("url", t.url.clone())], value(t) as f64))
            .collect(),
    };
    f.push(per_target(
        "metricstream_forward_points_sent_total",
        "Points delivered to the forward target (requests answered 2xx).",
        Counter,
        &|t| t.points_sent.load(Relaxed),
    ));
    f.push(OwnFamily {
        name: "metricstream_forward_points_dropped_total",
        help: "Points (string values for unsupported) not delivered to the forward target, by reason.",
        kind: Counter,
        samples: targets
            .iter()
            .flat_map(|t| {
                [
                    ("rejected", &t.dropped_rejected),
                    ("backlog", &t.dropped_backlog),
                    ("unsupported", &t.dropped_unsupported),
                ]
                .map(|(reason, c)| {
                    (
                        vec![("url", t.url.clone()), ("reason", reason.to_string())],
                        c.load(Relaxed) as f64,
                    )
                })
            })
            .collect(),
    });
    f.push(per_target(
        "metricstream_forward_backlog_bytes",
        "Write log bytes not yet sent to the forward target.",
        Gauge,
        &|t| t.backlog_bytes.load(Relaxed),
    ));
    f.push(per_target(
        "metricstream_forward_retries_total",
        "Requests to the forward target sent again after a network error, 5xx or 429.",
        Counter,
        &|t| t.retries.load(Relaxed),
    ));
    f.push(per_target(
        "metricstream_forward_last_success_unix_seconds",
        "Wall-clock time of the last 2xx from the forward target (0: none yet).",
        Gauge,
        &|t| t.last_success_unix.load(Relaxed),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ServerInfo {
        ServerInfo {
            io_model: "reactor",
            listen_addr: "127.0.0.1:1".into(),
            backlog_configured: 1024,
            backlog_effective: 1024,
            workers: 2,
            listener_fd: None,
        }
    }

    fn json(stats: &Stats, readings: &Readings) -> serde_json::Value {
        let mut out = Vec::new();
        render_json_with(stats, &info(), readings, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn stats_json_has_every_spec_field() {
        let stats = Stats::default();
        stats.count_response(204);
        stats.count_response(204);
        stats.count_response(418);
        let mut out = Vec::new();
        render_json(&stats, &info(), &mut out);
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
            "log_bytes",
            "log_segments",
            "log_fsyncs",
            "log_corrupt_records",
            "snapshot_last_unix",
            "recovered_points",
            "series_expired",
            "series_deleted",
        ] {
            assert!(v.get(field).is_some(), "missing {}", field);
        }
        assert_eq!(v["responses_by_status"]["204"], 2);
        assert_eq!(v["responses_by_status"]["other"], 1);
    }

    #[test]
    fn stats_json_keys_are_exactly_these() {
        let v = json(&Stats::default(), &Readings::default());
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "accept_batch_max",
            "accept_batches",
            "accept_errors",
            "accept_queue_depth",
            "backlog_configured",
            "backlog_effective",
            "bytes_read",
            "bytes_written",
            "connections_accepted",
            "connections_active",
            "connections_rejected_over_limit",
            "forward",
            "io_model",
            "label_collisions",
            "listen_addr",
            "log_bytes",
            "log_corrupt_records",
            "log_fsyncs",
            "log_segments",
            "recovered_points",
            "snapshot_last_unix",
            "listen_drops",
            "listen_overflows",
            "points_accepted",
            "points_aggregated",
            "points_dropped_series_limit",
            "points_queued",
            "process_rss_bytes",
            "requests_total",
            "responses_by_status",
            "series",
            "series_deleted",
            "series_expired",
            "timeouts_body",
            "timeouts_header",
            "timeouts_idle",
            "timeouts_write",
            "uptime_seconds",
            "version",
            "waker_wakes",
            "worker_jobs",
            "worker_queue_depth",
            "workers",
            "writes_refused_queue_full",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn forward_targets_in_both_outputs() {
        let stats = Stats::default();
        let t = Arc::new(ForwardStats::new(
            "http://u:***@h/api/v1/write",
            "remote_write",
        ));
        t.points_sent.store(7, Relaxed);
        t.dropped_backlog.store(3, Relaxed);
        t.set_last_error(Some("503 Service Unavailable".into()));
        assert!(stats.forward.set(vec![t]).is_ok());
        let v = json(&stats, &Readings::default());
        let f = &v["forward"][0];
        assert_eq!(f["url"], "http://u:***@h/api/v1/write");
        assert_eq!(f["format"], "remote_write");
        assert_eq!(f["points_sent"], 7);
        assert_eq!(f["points_dropped"]["backlog"], 3);
        assert_eq!(f["points_dropped"]["rejected"], 0);
        assert_eq!(f["last_error"], "503 Service Unavailable");
        let fams = own_families_with(&stats, &info(), None, 0, 0);
        let dropped = fams
            .iter()
            .find(|f| f.name == "metricstream_forward_points_dropped_total")
            .expect("dropped family");
        assert_eq!(dropped.samples.len(), 3);
        assert!(
            dropped
                .samples
                .iter()
                .any(|(l, v)| *v == 3.0 && l.contains(&("reason", "backlog".to_string())))
        );
        // No target: no forward families, an empty list in /stats.
        let none = Stats::default();
        assert_eq!(
            json(&none, &Readings::default())["forward"],
            serde_json::json!([])
        );
        assert!(
            !own_families_with(&none, &info(), None, 0, 0)
                .iter()
                .any(|f| f.name.starts_with("metricstream_forward_"))
        );
    }

    /// Gives every declared figure a distinct value and finds exactly that value under its
    /// key in `/stats` and as its sample in the `metricstream_*` families.
    #[test]
    fn every_declared_figure_appears_in_both_outputs() {
        let stats = Stats::default();
        for (i, cell) in stats.figure_cells().into_iter().enumerate() {
            cell.store(1000 + i as u64, Relaxed);
        }
        let readings = Readings {
            accept_queue_depth: Some(3),
            ..Readings::default()
        };
        let v = json(&stats, &readings);
        let families = own_families_with(&stats, &info(), readings.accept_queue_depth, 5, 10);
        for (i, figure) in FIGURES.iter().enumerate() {
            let want = 1000 + i as u64;
            assert_eq!(v[figure.key], want, "/stats {}", figure.key);
            let family = families
                .iter()
                .find(|f| f.name == figure.family)
                .unwrap_or_else(|| panic!("no family {} for {}", figure.family, figure.key));
            assert_eq!(family.kind, figure.kind, "{}", figure.family);
            assert_eq!(family.help, figure.help, "{}", figure.family);
            let labels: Vec<(&str, String)> = figure
                .label
                .iter()
                .map(|&(n, v)| (n, v.to_string()))
                .collect();
            let samples: Vec<f64> = family
                .samples
                .iter()
                .filter(|(l, _)| *l == labels)
                .map(|&(_, x)| x)
                .collect();
            assert_eq!(samples, [want as f64], "{} {:?}", figure.family, labels);
        }
        let names: Vec<&str> = families.iter().map(|f| f.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "a family rendered twice: {names:?}"
        );
        for extra in [
            "metricstream_build_info",
            "metricstream_uptime_seconds",
            "metricstream_responses_total",
            "metricstream_queue_points",
            "metricstream_queue_capacity_points",
            "metricstream_accept_queue_depth",
        ] {
            assert!(names.contains(&extra), "missing {extra}");
        }
    }

    #[test]
    fn figure_table_is_well_formed() {
        let mut keys: Vec<&str> = FIGURES.iter().map(|f| f.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), FIGURES.len(), "a /stats key declared twice");
        for (i, f) in FIGURES.iter().enumerate() {
            let name_ok = f.family.starts_with("metricstream_")
                && f.family
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            assert!(name_ok, "family name {}", f.family);
            assert_eq!(
                f.kind == OwnKind::Counter,
                f.family.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                f.family
            );
            assert!(
                !f.help.is_empty() && f.help.ends_with('.'),
                "help of {}",
                f.key
            );
            // Figures of one family are consecutive, agree on kind and help, and are all
            // told apart by a label.
            let same: Vec<usize> = (0..FIGURES.len())
                .filter(|&j| FIGURES[j].family == f.family)
                .collect();
            if same.len() > 1 {
                assert_eq!(
                    same.last().unwrap() - same[0] + 1,
                    same.len(),
                    "{}",
                    f.family
                );
                assert!(f.label.is_some(), "{} needs a label", f.key);
                let first = &FIGURES[same[0]];
                assert_eq!((f.kind, f.help), (first.kind, first.help), "{}", f.family);
                let label_dups = same
                    .iter()
                    .filter(|&&j| j != i && FIGURES[j].label == f.label)
                    .count();
                assert_eq!(label_dups, 0, "{} label repeated", f.key);
            }
        }
    }
}
