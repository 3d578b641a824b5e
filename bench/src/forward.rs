//! The `forward` scenario: how fast a forwarder (metricstream with
//! `--remote-write-url`, vmagent) gets points from its `/write` into a
//! receiver (VictoriaMetrics), and what CPU that costs. It reads the
//! receiver's arrival counter, writes a fixed number of points with the
//! `write` scenario's bodies and closed loop (bounded by a request budget
//! and `--duration`), then reads the counter every `--poll-ms` (bounded by
//! `--drain-timeout`) until it grew by every numeric value acknowledged
//! with a 2xx. CPU times come from `/proc` at load start, load end and
//! arrival. It only observes the processes it is given: it never starts,
//! signals or stops them.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use serde_json::{Value, json};

use crate::cli::{ForwardSettings, Settings};
use crate::closed_loop::{self, Plan};
use crate::progress::Progress;
use crate::report::{Report, per_sec};
use crate::scrape;
use crate::stats::rate;
use crate::sys;
use crate::write;

/// CPU times (ticks) read at one moment.
struct Snapshot {
    at: Instant,
    forwarder: Option<u64>,
    threads: BTreeMap<u64, (String, f64)>,
    receiver: Option<u64>,
    bench: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl Snapshot {
    fn read(s: &Settings, f: &ForwardSettings) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            forwarder: s.pid.and_then(sys::process_cpu),
            threads: s.pid.map(sys::thread_cpu).unwrap_or_default(),
            receiver: f.receiver_pid.and_then(sys::process_cpu),
            bench: sys::process_cpu(std::process::id()),
            machine: sys::machine_cpu(),
        }
    }
}

/// CPU spent between two snapshots, in seconds.
struct Spent {
    secs: f64,
    forwarder: Option<f64>,
    /// Per thread-name group (`worker-*`), threads that started meanwhile included.
    groups: BTreeMap<String, f64>,
    prefixed: Option<f64>,
    receiver: Option<f64>,
    bench: Option<f64>,
    machine_busy: Option<f64>,
}

fn delta(a: Option<u64>, b: Option<u64>, tick: f64) -> Option<f64> {
    Some(b?.saturating_sub(a?) as f64 * tick)
}

fn spent(a: &Snapshot, b: &Snapshot, prefix: Option<&str>) -> Spent {
    let tick = sys::tick_secs();
    let mut groups = BTreeMap::new();
    let mut prefixed = prefix.map(|_| 0.0);
    for (tid, (comm, now)) in &b.threads {
        let before = a.threads.get(tid).map_or(0.0, |(_, t)| *t);
        let secs = (now - before).max(0.0);
        *groups.entry(sys::thread_group(comm)).or_insert(0.0) += secs;
        if let (Some(p), Some(sum)) = (prefix, prefixed.as_mut()) {
            if comm.starts_with(p) {
                *sum += secs;
            }
        }
    }
    Spent {
        secs: b.at.duration_since(a.at).as_secs_f64(),
        forwarder: delta(a.forwarder, b.forwarder, tick),
        groups,
        prefixed,
        receiver: delta(a.receiver, b.receiver, tick),
        bench: delta(a.bench, b.bench, tick),
        machine_busy: delta(a.machine.map(|m| m.0), b.machine.map(|m| m.0), tick),
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// Microseconds of CPU per sample.
fn us_per(cpu: Option<f64>, samples: u64) -> Option<f64> {
    let cpu = cpu?;
    (samples > 0).then(|| round(cpu * 1e6 / samples as f64, 4))
}

impl Spent {
    fn to_json(&self, samples: u64) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .groups
            .iter()
            .map(|(k, v)| (k.clone(), json!(round(*v, 3))))
            .collect();
        json!({
            "secs": round(self.secs, 3),
            "forwarder_secs": self.forwarder.map(|v| round(v, 3)),
            "forwarder_us_per_sample": us_per(self.forwarder, samples),
            "threads_secs": groups,
            "prefixed_threads_secs": self.prefixed.map(|v| round(v, 3)),
            "prefixed_threads_us_per_sample": us_per(self.prefixed, samples),
            "receiver_secs": self.receiver.map(|v| round(v, 3)),
            "receiver_us_per_sample": us_per(self.receiver, samples),
            "bench_secs": self.bench.map(|v| round(v, 3)),
            "machine_busy_secs": self.machine_busy.map(|v| round(v, 3)),
        })
    }

    /// "forwarder 1.23 s, receiver 4.56 s, bench 0.7 s, machine 1.9 of 2 cores".
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                parts.push(format!("{name} {v:.2} s"));
            }
        };
        add("forwarder", self.forwarder);
        add("prefixed threads", self.prefixed);
        add("receiver", self.receiver);
        add("bench", self.bench);
        if let Some(busy) = self.machine_busy {
            if self.secs > 0.0 {
                parts.push(format!("machine {:.2} cores busy", busy / self.secs));
            }
        }
        parts.join(", ")
    }
}

/// Reads the receiver's counter, naming the receiver in the error.
fn read_counter(s: &Settings, f: &ForwardSettings) -> io::Result<Option<f64>> {
    scrape::counter(f.receiver, &f.receiver_host, &f.counter, s.timeout)
        .map_err(|e| io::Error::other(format!("receiver {}: {e}", f.receiver_host)))
}

/// What the polling after the load found.
struct Arrival {
    /// When a reading first showed every sample (`None`: the drain timed out).
    at: Option<Instant>,
    /// When the last reading that still fell short was asked for: the samples
    /// arrived after it, so the end-to-end time lies in `(short_asked, at]`.
    short_asked: Option<Instant>,
    /// The counter's growth at the last good reading.
    seen: u64,
    readings: u64,
    failed_readings: u64,
}

fn wait_for(s: &Settings, f: &ForwardSettings, before: f64, expected: u64) -> Arrival {
    let deadline = Instant::now() + f.drain_timeout;
    let mut a = Arrival {
        at: None,
        short_asked: None,
        seen: 0,
        readings: 0,
        failed_readings: 0,
    };
    loop {
        a.readings += 1;
        let asked = Instant::now();
        match read_counter(s, f) {
            Ok(v) => {
                a.seen = (v.unwrap_or(0.0) - before).max(0.0) as u64;
                if a.seen >= expected {
                    a.at = Some(Instant::now());
                    return a;
                }
                a.short_asked = Some(asked);
            }
            Err(_) => a.failed_readings += 1,
        }
        let now = Instant::now();
        if now >= deadline {
            return a;
        }
        std::thread::sleep(f.poll.min(deadline - now));
    }
}

pub fn run(s: &Settings) -> io::Result<Report> {
    let f = s
        .forward
        .as_ref()
        .ok_or_else(|| io::Error::other("forward settings missing"))?;
    let prep = write::prepare(s)?;
    let lines = s.batch as u64;
    let budget_requests = f.points / lines;

    let before = read_counter(s, f)?;
    if before.is_none() {
        eprintln!(
            "metricstream-bench: note: receiver {} does not export {} yet; counting from 0",
            f.receiver_host, f.counter
        );
    }
    let before = before.unwrap_or(0.0);

    let budget = AtomicU64::new(budget_requests);
    let mut progress = Progress::start("forward", "requests", Some(budget_requests));
    let cpu_start = Snapshot::read(s, f);
    let start = cpu_start.at;
    let plan = Plan {
        requests: &prep.requests,
        points_per_request: lines,
        connections: s.connections,
        threads: s.threads,
        timeout: s.timeout,
        measure_from: start,
        end: start + s.duration,
        budget: Some(&budget),
    };
    let out = closed_loop::run(&plan, s.addr, &progress.counters)?;
    progress.finish();
    let cpu_loaded = Snapshot::read(s, f);

    let acked_requests = out.responses - out.statuses.non_2xx();
    let points_acked = acked_requests * lines;
    let samples = points_acked * prep.values_per_point;
    let arrival = wait_for(s, f, before, samples);
    let cpu_end = Snapshot::read(s, f);

    let ingest_secs = out
        .last_response
        .map_or(0.0, |t| t.duration_since(start).as_secs_f64());
    let e2e_secs = arrival.at.map(|t| t.duration_since(start).as_secs_f64());
    let total = spent(&cpu_start, &cpu_end, f.thread_prefix.as_deref());
    let ingest = spent(&cpu_start, &cpu_loaded, f.thread_prefix.as_deref());
    let drain = spent(&cpu_loaded, &cpu_end, f.thread_prefix.as_deref());
    let non_2xx = out.statuses.non_2xx();
    let ingest_pps = rate(points_acked, ingest_secs);
    let e2e_sps = e2e_secs.map(|t| rate(samples, t));

    let mut rep = Report::new();
    rep.reached = out.connected > 0;
    rep.set("receiver", json!(f.receiver_host));
    rep.set("counter", json!(f.counter));
    rep.set("connections", json!(s.connections));
    rep.set("lines", json!(s.batch));
    rep.set("distinct_bodies", json!(prep.requests.len()));
    rep.set("body_bytes", json!(prep.body_avg));
    rep.set("values_per_point", json!(prep.values_per_point));
    rep.set("points_requested", json!(f.points));
    rep.set("requests", json!(out.responses));
    rep.set("points_acked", json!(points_acked));
    rep.set("samples_expected", json!(samples));
    rep.set("samples_seen", json!(arrival.seen));
    rep.set("complete", json!(arrival.at.is_some()));
    rep.set("non_2xx", json!(non_2xx));
    rep.set("status_counts", out.statuses.to_json());
    rep.set("errors", out.errors.to_json());
    rep.set("error_count", json!(out.errors.total()));
    rep.set("ingest_secs", json!(round(ingest_secs, 3)));
    rep.set("ingest_points_per_sec", json!(ingest_pps));
    rep.set("ingest_samples_per_sec", json!(rate(samples, ingest_secs)));
    rep.set("e2e_secs", json!(e2e_secs.map(|t| round(t, 3))));
    rep.set(
        "e2e_after_secs",
        json!(
            arrival
                .short_asked
                .map(|t| round(t.duration_since(start).as_secs_f64(), 3))
        ),
    );
    rep.set(
        "drain_secs",
        json!(e2e_secs.map(|t| round(t - ingest_secs, 3))),
    );
    rep.set("e2e_samples_per_sec", json!(e2e_sps));
    rep.set("poll_ms", json!(f.poll.as_millis() as u64));
    rep.set("readings", json!(arrival.readings));
    rep.set("failed_readings", json!(arrival.failed_readings));
    rep.set("latency_us", out.latency.to_json());
    rep.set("cpu_total", total.to_json(samples));
    rep.set("cpu_ingest", ingest.to_json(samples));
    rep.set("cpu_drain", drain.to_json(samples));

    rep.row(
        "load",
        format!(
            "{} points in {} bodies of {} lines ({} values a line, {} bytes a body), {} connections",
            f.points,
            budget_requests,
            s.batch,
            prep.values_per_point,
            prep.body_avg,
            s.connections
        ),
    );
    rep.row(
        "ingest",
        format!(
            "{points_acked} points acknowledged in {ingest_secs:.3} s ({}, {} samples)",
            per_sec(ingest_pps),
            per_sec(rate(samples, ingest_secs))
        ),
    );
    rep.row(
        "end to end",
        match (e2e_secs, e2e_sps) {
            (Some(t), Some(r)) => format!(
                "{samples} samples in {t:.3} s ({}; the reading before, at {:.3} s, fell short)",
                per_sec(r),
                arrival
                    .short_asked
                    .map_or(0.0, |a| a.duration_since(start).as_secs_f64())
            ),
            _ => format!(
                "incomplete: {} of {samples} samples within {:.0} s after the load",
                arrival.seen,
                f.drain_timeout.as_secs_f64()
            ),
        },
    );
    rep.row("statuses", out.statuses.summary());
    rep.row("non-2xx", non_2xx.to_string());
    rep.row("errors", out.errors.summary());
    rep.row("latency", out.latency.summary());
    rep.row("cpu, whole run", total.summary());
    if let Some(us) = us_per(total.forwarder, samples) {
        rep.row("forwarder cpu/sample", format!("{us:.3} us"));
    }
    if let Some(us) = us_per(total.prefixed, samples) {
        rep.row(
            "prefixed cpu/sample",
            format!(
                "{us:.3} us (threads {}*)",
                f.thread_prefix.as_deref().unwrap_or_default()
            ),
        );
    }
    if let Some(us) = us_per(total.receiver, samples) {
        rep.row("receiver cpu/sample", format!("{us:.3} us"));
    }
    rep.row("cpu, ingest", ingest.summary());
    rep.row("cpu, drain", drain.summary());
    if !total.groups.is_empty() {
        let mut by_cpu: Vec<_> = total.groups.iter().collect();
        by_cpu.sort_by(|a, b| b.1.total_cmp(a.1));
        rep.row(
            "forwarder threads",
            by_cpu
                .iter()
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    Ok(rep)
}
