//! Turns a comparison's `results.json` document into `results.md` (markdown tables) and the
//! SVG plots beside it. Works on the JSON alone, so `compare --from-json` can redraw a past
//! run. Figures come from the bench's own reports (`bench` of each run) and the server CPU
//! time measured around it (`server_cpu_secs`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::plot::{self, Line, Panel};

/// One figure of a run, for a plot.
type Figure = dyn Fn(&Value) -> Option<f64>;

/// Number at `path` inside `v`.
fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn runs<'a>(doc: &'a Value, scenario: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    doc["runs"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(move |r| r["scenario"] == scenario)
}

fn target(r: &Value) -> &str {
    r["target"].as_str().unwrap_or("?")
}

fn ok(r: &Value) -> bool {
    r["ok"].as_bool().unwrap_or(false)
}

/// Milliseconds from a bench microsecond figure.
fn ms(r: &Value, key: &str, q: &str) -> Option<f64> {
    num(r, &["bench", key, q]).map(|us| us / 1000.0)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}"),
        None => "–".to_string(),
    }
}

fn count(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{}", v.round() as i64),
        None => "–".to_string(),
    }
}

/// Server CPU time per unit of work, in microseconds.
fn cpu_us_per(r: &Value, units: Option<f64>) -> Option<f64> {
    let cpu = num(r, &["server_cpu_secs"])?;
    let units = units.filter(|&u| u > 0.0)?;
    Some(cpu * 1e6 / units)
}

fn failed_row(r: &Value, leading: usize, columns: usize) -> String {
    let mut row = String::from("|");
    for _ in 0..leading {
        row.push_str(" |");
    }
    let _ = write!(
        row,
        " failed: {} |",
        r["error"]
            .as_str()
            .unwrap_or("unknown error")
            .replace('|', "/")
    );
    for _ in leading + 1..columns {
        row.push_str(" |");
    }
    row
}

/// Writes `results.md` and the plots into `out`; returns the files written.
pub fn write_all(out: &Path, doc: &Value) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    let mut md = String::new();
    header(&mut md, doc);
    burst(&mut md, doc, out, &mut files)?;
    churn(&mut md, doc, out, &mut files)?;
    keepalive(&mut md, doc, out, &mut files)?;
    write(&mut md, doc, out, &mut files)?;
    let _ = writeln!(md, "## Plots\n");
    for f in &files {
        let _ = writeln!(md, "![{f}]({f})\n");
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    files.insert(0, "results.md".to_string());
    Ok(files)
}

fn header(md: &mut String, doc: &Value) {
    let m = &doc["machine"];
    let s = &doc["settings"];
    let _ = writeln!(md, "# metricstream: I/O models compared\n");
    let _ = writeln!(
        md,
        "`{}`, {}. Machine: {} cores, Linux {}, somaxconn {}, load average {} at start and {} at the end.",
        doc["command"]
            .as_str()
            .unwrap_or("metricstream-bench compare"),
        doc["generated"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["somaxconn"],
        m["loadavg_start"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
    );
    let pinned = if s["pinned"].as_bool().unwrap_or(false) {
        "Each server pinned to core 0 and the client to core 1 (`taskset`)."
    } else {
        "No pinning (fewer than two cores, or no `taskset`)."
    };
    let _ = writeln!(
        md,
        "{pinned} metricstream runs with its defaults except `--backlog`, `--io-model` and, for threadpool, `--workers {}`. \
         nginx: one worker, `return 204`, access log off. Server CPU is utime+stime of the server's processes from \
         `/proc/PID/stat` over the run (10 ms ticks), divided by the work the client saw completed.\n",
        s["pool_threads"]
    );
    if let Some(notes) = doc["notes"].as_array().filter(|n| !n.is_empty()) {
        for n in notes {
            let _ = writeln!(md, "- {}", n.as_str().unwrap_or(""));
        }
        md.push('\n');
    }
}

/// The repeated burst runs of one (backlog, burst size, server).
struct Group<'a> {
    backlog: u64,
    size: u64,
    target: &'a str,
    runs: Vec<&'a Value>,
}

impl Group<'_> {
    fn ok_runs(&self) -> impl Iterator<Item = &Value> {
        self.runs.iter().copied().filter(|r| ok(r))
    }

    /// Median over the runs that completed (one stalled run on a busy machine does not
    /// decide the figure).
    fn median(&self, figure: &Figure) -> Option<f64> {
        median(self.ok_runs().filter_map(figure).collect())
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Burst runs grouped by configuration, in order of first appearance.
fn burst_groups(doc: &Value) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for r in runs(doc, "burst") {
        let backlog = r["backlog"].as_u64().unwrap_or(0);
        let size = r["connections"].as_u64().unwrap_or(0);
        let t = target(r);
        match groups
            .iter_mut()
            .find(|g| g.backlog == backlog && g.size == size && g.target == t)
        {
            Some(g) => g.runs.push(r),
            None => groups.push(Group {
                backlog,
                size,
                target: t,
                runs: vec![r],
            }),
        }
    }
    groups
}

fn burst(md: &mut String, doc: &Value, out: &Path, files: &mut Vec<String>) -> Result<(), String> {
    let groups = burst_groups(doc);
    if groups.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Burst: N connections opened at once, one request each\n\n\
         {}A connect that takes about 1 s (or 3 s) had its SYN dropped by a full accept \
         queue and retransmitted. Each configuration ran {} time(s); figures are medians over the runs and \
         `runs with retransmits` says in how many of them any connect took 0.9 s or more. \
         `ListenOverflows Δ` is the kernel's system-wide counter across a run (other activity \
         on the machine adds to it); `connects ≥ 0.9 s` counts this client's own retransmits.\n\n\
         | backlog | burst | server | completed | connect p50 ms | connect p99 ms | connect max ms | connects ≥ 0.9 s | ListenOverflows Δ | runs with retransmits |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        if doc["settings"]["connect_first"].as_bool().unwrap_or(false) {
            "Every connect is issued before any request is sent (`burst --connect-first`): one \
             client core alone opens about 15-20k connections/s on loopback, close to what the \
             blocking model serves when each request is already waiting, so connects must \
             arrive as one burst for the accept loops to differ. "
        } else {
            "Each request is sent as soon as its connect completes. "
        },
        doc["settings"]["repeat"].as_u64().unwrap_or(1)
    );
    for g in &groups {
        let n_ok = g.ok_runs().count();
        if n_ok == 0 {
            let _ = writeln!(
                md,
                "| {} | {} | {} {}",
                g.backlog,
                g.size,
                g.target,
                failed_row(g.runs[0], 0, 7)
            );
            continue;
        }
        let slow = g
            .ok_runs()
            .filter(|r| num(r, &["bench", "connects_over_900ms"]).is_some_and(|n| n > 0.0))
            .count();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {slow}/{n_ok} |",
            g.backlog,
            g.size,
            g.target,
            count(g.median(&|r| num(r, &["bench", "completed"]))),
            cell(g.median(&|r| ms(r, "connect_us", "p50")), 2),
            cell(g.median(&|r| ms(r, "connect_us", "p99")), 1),
            cell(g.median(&|r| ms(r, "connect_us", "max")), 1),
            count(g.median(&|r| num(r, &["bench", "connects_over_900ms"]))),
            count(g.median(&|r| num(r, &["bench", "listen_overflows_delta"]))),
        );
    }
    md.push('\n');

    let mut backlogs: Vec<u64> = groups.iter().map(|g| g.backlog).collect();
    backlogs.sort_unstable();
    backlogs.dedup();
    let mut names: Vec<&str> = Vec::new();
    for g in &groups {
        if !names.contains(&g.target) {
            names.push(g.target);
        }
    }
    let panels = |figure: &Figure| -> Vec<Panel> {
        backlogs
            .iter()
            .map(|&b| Panel {
                title: format!("backlog {b}"),
                lines: names
                    .iter()
                    .map(|&name| Line {
                        name: name.to_string(),
                        points: groups
                            .iter()
                            .filter(|g| g.target == name && g.backlog == b)
                            .filter_map(|g| Some((g.size as f64, g.median(figure)?)))
                            .collect(),
                    })
                    .filter(|l| !l.points.is_empty())
                    .collect(),
            })
            .collect()
    };
    let charts: [(&str, &str, &str, bool, &Figure); 3] = [
        (
            "burst_connect_p99.svg",
            "Connect latency p99 vs burst size (median of runs)",
            "connect p99 (ms, log)",
            true,
            &|r| ms(r, "connect_us", "p99"),
        ),
        (
            "burst_listen_overflows.svg",
            "ListenOverflows (system-wide) during the burst (median of runs)",
            "overflows",
            false,
            &|r| num(r, &["bench", "listen_overflows_delta"]),
        ),
        (
            "burst_slow_connects.svg",
            "Connects that took 0.9 s or more: SYN retransmitted (median of runs)",
            "connections",
            false,
            &|r| num(r, &["bench", "connects_over_900ms"]),
        ),
    ];
    for (file, title, y, log, figure) in charts {
        plot::lines(
            &out.join(file),
            title,
            "burst size (connections)",
            y,
            log,
            &panels(figure),
        )?;
        files.push(file.to_string());
    }
    Ok(())
}

fn settings_line(doc: &Value) -> String {
    format!(
        "{} connections, {} s",
        doc["settings"]["connections"], doc["settings"]["duration_secs"]
    )
}

fn churn(md: &mut String, doc: &Value, out: &Path, files: &mut Vec<String>) -> Result<(), String> {
    if runs(doc, "churn").next().is_none() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Churn: one request per new connection ({})\n\n\
         | server | connections/s | latency p50 ms | latency p99 ms | errors | server CPU µs / connection |\n\
         |---|---:|---:|---:|---:|---:|",
        settings_line(doc)
    );
    let mut bars = Vec::new();
    for r in runs(doc, "churn") {
        if !ok(r) {
            let _ = writeln!(md, "| {} {}", target(r), failed_row(r, 0, 5));
            continue;
        }
        let cps = num(r, &["bench", "connections_per_sec"]);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            target(r),
            count(cps),
            cell(ms(r, "latency_us", "p50"), 2),
            cell(ms(r, "latency_us", "p99"), 1),
            count(num(r, &["bench", "error_count"])),
            cell(cpu_us_per(r, num(r, &["bench", "completed"])), 1),
        );
        bars.push((target(r).to_string(), cps.unwrap_or(0.0)));
    }
    md.push('\n');
    let file = "churn_connections_per_sec.svg";
    plot::bars(
        &out.join(file),
        "Churn: connections per second",
        "connections/s",
        &bars,
    )?;
    files.push(file.to_string());
    Ok(())
}

fn keepalive(
    md: &mut String,
    doc: &Value,
    out: &Path,
    files: &mut Vec<String>,
) -> Result<(), String> {
    if runs(doc, "keepalive").next().is_none() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Keep-alive: GET /ping in a closed loop ({})\n\n\
         | server | requests/s | latency p50 ms | latency p99 ms | errors | server CPU µs / request |\n\
         |---|---:|---:|---:|---:|---:|",
        settings_line(doc)
    );
    let mut cpu_bars = Vec::new();
    let mut rps_bars = Vec::new();
    for r in runs(doc, "keepalive") {
        if !ok(r) {
            let _ = writeln!(md, "| {} {}", target(r), failed_row(r, 0, 5));
            continue;
        }
        let rps = num(r, &["bench", "requests_per_sec"]);
        let cpu = cpu_us_per(r, num(r, &["bench", "requests"]));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            target(r),
            count(rps),
            cell(ms(r, "latency_us", "p50"), 2),
            cell(ms(r, "latency_us", "p99"), 1),
            count(num(r, &["bench", "error_count"])),
            cell(cpu, 1),
        );
        cpu_bars.push((target(r).to_string(), cpu.unwrap_or(0.0)));
        rps_bars.push((target(r).to_string(), rps.unwrap_or(0.0)));
    }
    md.push_str(
        "\nThe blocking model serves one connection at a time: the other connections of the run \
         wait in the accept queue for the whole window, so its requests/s is one client's.\n\n",
    );
    for (file, title, y, bars) in [
        (
            "keepalive_cpu_per_request.svg",
            "Keep-alive: server CPU per request",
            "CPU µs / request",
            &cpu_bars,
        ),
        (
            "keepalive_requests_per_sec.svg",
            "Keep-alive: requests per second",
            "requests/s",
            &rps_bars,
        ),
    ] {
        plot::bars(&out.join(file), title, y, bars)?;
        files.push(file.to_string());
    }
    Ok(())
}

fn write(md: &mut String, doc: &Value, out: &Path, files: &mut Vec<String>) -> Result<(), String> {
    if runs(doc, "write").next().is_none() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Write: POST /write, 1000 points a body ({})\n\n\
         | server | points/s | requests/s | latency p99 ms | refused (503) | errors | server CPU µs / 1000 points |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        settings_line(doc)
    );
    let mut bars = Vec::new();
    for r in runs(doc, "write") {
        if !ok(r) {
            let _ = writeln!(md, "| {} {}", target(r), failed_row(r, 0, 6));
            continue;
        }
        let pps = num(r, &["bench", "points_per_sec"]);
        let kpoints = num(r, &["bench", "points_written"]).map(|p| p / 1000.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            target(r),
            count(pps),
            count(num(r, &["bench", "requests_per_sec"])),
            cell(ms(r, "latency_us", "p99"), 1),
            count(num(r, &["bench", "refused"])),
            count(num(r, &["bench", "error_count"])),
            cell(cpu_us_per(r, kpoints), 0),
        );
        bars.push((target(r).to_string(), pps.unwrap_or(0.0)));
    }
    md.push('\n');
    let file = "write_points_per_sec.svg";
    plot::bars(
        &out.join(file),
        "Write: points per second",
        "points/s",
        &bars,
    )?;
    files.push(file.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 1000.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 2.0]), Some(3.0));
    }

    #[test]
    fn tables_and_plots_from_a_document() {
        let doc = json!({
            "command": "metricstream-bench compare --quick",
            "generated": "now",
            "machine": {"cores": 2, "kernel": "6", "somaxconn": 4096},
            "settings": {"pool_threads": 64, "pinned": true, "connections": 64, "duration_secs": 3.0},
            "notes": ["victoria-metrics: not installed, skipped"],
            "runs": [
                {"scenario": "burst", "target": "blocking", "backlog": 64, "connections": 5000, "ok": true,
                 "server_cpu_secs": 0.5,
                 "bench": {"completed": 5000, "connect_us": {"p50": 400, "p99": 1_035_000, "max": 2_030_000},
                           "connects_over_900ms": 1800, "listen_overflows_delta": 4700}},
                {"scenario": "burst", "target": "reactor", "backlog": 64, "connections": 5000, "ok": false,
                 "error": "did not start"},
                {"scenario": "keepalive", "target": "reactor", "ok": true, "server_cpu_secs": 1.2,
                 "bench": {"requests": 100_000, "requests_per_sec": 33_333.3,
                           "latency_us": {"p50": 1800, "p99": 4000}, "error_count": 0}},
            ]
        });
        let dir = std::env::temp_dir().join(format!("ms-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let files = write_all(&dir, &doc).expect("written");
        let md = std::fs::read_to_string(dir.join("results.md")).expect("md");
        assert!(
            md.contains("| 64 | 5000 | blocking | 5000 | 0.40 | 1035.0 | 2030.0 | 1800 | 4700 |"),
            "{md}"
        );
        assert!(md.contains("failed: did not start"), "{md}");
        assert!(
            md.contains("| reactor | 33333 | 1.80 | 4.0 | 0 | 12.0 |"),
            "{md}"
        );
        assert!(files.contains(&"burst_connect_p99.svg".to_string()));
        assert!(files.contains(&"keepalive_cpu_per_request.svg".to_string()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
