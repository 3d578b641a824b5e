//! `metricstream-bench compare`: one command that sets metricstream's three I/O models (and
//! nginx and VictoriaMetrics, when installed) side by side on this machine.
//!
//! For every run it starts a fresh server on loopback (`servers`), runs one scenario
//! against it as a child process of this same program, reads the server's CPU time around
//! it, and stops the server by PID; runs are strictly sequential, since `burst` reads
//! system-wide kernel counters. The plan: `burst` for every burst size x backlog x server,
//! then `churn`, `keepalive` and `write` once per server. Everything is written under
//! `--out`: `results.json` (every figure of every run), then `results.md` and SVG plots
//! rendered from it (`report`, `plot`), and the servers' logs under `logs/`. Every run and
//! wait is bounded; a failed run is recorded as failed and the comparison goes on.

mod plot;
mod report;
mod servers;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::cli::CompareArgs;
use servers::{Env, Target};

/// Pause between runs, so one run's closing connections do not overlap the next.
const SETTLE: Duration = Duration::from_millis(300);
/// Bench `--timeout` for connects and responses in the burst runs.
const BURST_TIMEOUT_SECS: u64 = 10;

pub fn main(args: &CompareArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metricstream-bench compare: {e}");
            ExitCode::from(1)
        }
    }
}

/// What to run, from the options.
#[derive(Debug)]
struct Plan {
    quick: bool,
    bursts: Vec<usize>,
    backlogs: Vec<u32>,
    secs: f64,
    connections: usize,
    /// Runs of each burst configuration (reported as medians).
    repeat: usize,
    /// Burst runs: every connect issued before any request (`burst --connect-first`).
    connect_first: bool,
}

impl Plan {
    fn new(args: &CompareArgs) -> Result<Plan, String> {
        let bursts = if !args.bursts.is_empty() {
            args.bursts.clone()
        } else if args.quick {
            vec![1000, 5000]
        } else {
            vec![1000, 2000, 5000]
        };
        let backlogs = if args.backlogs.is_empty() {
            vec![64, 128, 1024]
        } else {
            args.backlogs.clone()
        };
        let secs = args.duration.unwrap_or(if args.quick { 3.0 } else { 10.0 });
        if bursts.iter().any(|&n| n == 0 || n > 15_000) {
            return Err("--bursts: each size must be 1..=15000".into());
        }
        if backlogs.iter().any(|&b| b == 0 || b > 65_535) {
            return Err("--backlogs: each must be 1..=65535".into());
        }
        if !(secs.is_finite() && secs > 0.0 && secs <= 600.0) {
            return Err("--duration must be more than 0 and at most 600 seconds".into());
        }
        if args.connections == 0 || args.connections > 10_000 {
            return Err("--connections must be 1..=10000".into());
        }
        if args.repeat == 0 || args.repeat > 20 {
            return Err("--repeat must be 1..=20".into());
        }
        if args.pool_threads == 0 || args.pool_threads > 1024 {
            return Err("--pool-threads must be 1..=1024".into());
        }
        Ok(Plan {
            quick: args.quick,
            bursts,
            backlogs,
            secs,
            connections: args.connections,
            repeat: args.repeat,
            connect_first: !args.interleaved,
        })
    }

    /// A rough upper estimate of the wall time, for the start-up line.
    fn estimate_secs(&self, servers: usize, write_servers: usize) -> f64 {
        let bursts = (self.bursts.len() * self.backlogs.len() * servers * self.repeat) as f64 * 1.6;
        bursts + ((2 * servers + write_servers) as f64) * (self.secs + 1.5)
    }
}

fn run(args: &CompareArgs) -> Result<(), String> {
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    if let Some(path) = &args.from_json {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return render(&args.out, &doc);
    }
    let plan = Plan::new(args)?;
    let env = discover(args)?;
    let mut notes = Vec::new();
    let mut others = Vec::new();
    let mut write_others = Vec::new();
    match (&env.nginx, args.no_external) {
        (_, true) => notes.push("nginx and VictoriaMetrics left out (--no-external).".to_string()),
        (Some(_), false) => others.push(Target::Nginx),
        (None, false) => notes.push("nginx: not installed, skipped.".to_string()),
    }
    match (&env.victoria, args.no_external) {
        (_, true) => {}
        (Some(_), false) => write_others.push(Target::VictoriaMetrics),
        (None, false) => notes.push("VictoriaMetrics: not installed, skipped.".to_string()),
    }
    if !env.pin {
        notes.push("Not pinned: fewer than two cores or no taskset.".to_string());
    }
    let servers: Vec<Target> = Target::MODELS.iter().copied().chain(others).collect();
    let write_servers: Vec<Target> = Target::MODELS.iter().copied().chain(write_others).collect();
    eprintln!(
        "compare: {} servers, bursts {:?} x backlogs {:?} ({} runs each), {} s windows with {} connections; about {:.0} s; results in {}",
        servers.len(),
        plan.bursts,
        plan.backlogs,
        plan.repeat,
        plan.secs,
        plan.connections,
        plan.estimate_secs(servers.len(), write_servers.len()),
        args.out.display()
    );
    for n in &notes {
        eprintln!("compare: {n}");
    }
    let started = Instant::now();
    let loadavg_start = loadavg();
    let mut runs = Vec::new();

    for &backlog in &plan.backlogs {
        for &target in &servers {
            for &n in &plan.bursts {
                for _ in 0..plan.repeat {
                    let mut extra = vec![
                        "-c".to_string(),
                        n.to_string(),
                        "--timeout".to_string(),
                        BURST_TIMEOUT_SECS.to_string(),
                    ];
                    if plan.connect_first {
                        extra.push("--connect-first".to_string());
                    }
                    let bound = Duration::from_secs(BURST_TIMEOUT_SECS * 4 + 30);
                    runs.push(measure(&env, target, backlog, "burst", n, extra, bound));
                }
            }
        }
    }
    let default_backlog = 1024;
    let window = |scenario: &str| -> Vec<String> {
        let mut a = vec![
            "-c".to_string(),
            plan.connections.to_string(),
            "-d".to_string(),
            plan.secs.to_string(),
            "--timeout".to_string(),
            "10".to_string(),
        ];
        if scenario != "churn" {
            // CPU is metered over the whole child run, so every request must count.
            a.extend(["--warmup".to_string(), "0".to_string()]);
        }
        a
    };
    let bound = Duration::from_secs_f64(plan.secs + 60.0);
    for scenario in ["churn", "keepalive"] {
        for &target in &servers {
            runs.push(measure(
                &env,
                target,
                default_backlog,
                scenario,
                plan.connections,
                window(scenario),
                bound,
            ));
        }
    }
    for &target in &write_servers {
        runs.push(measure(
            &env,
            target,
            default_backlog,
            "write",
            plan.connections,
            window("write"),
            bound,
        ));
    }

    let _ = fs::remove_dir_all(&env.tmp);
    let doc = json!({
        "command": command_line(),
        "generated": httpdate::fmt_http_date(SystemTime::now()),
        "elapsed_secs": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "somaxconn": fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse::<u64>().ok()),
            "loadavg_start": loadavg_start,
            "loadavg_end": loadavg(),
        },
        "settings": {
            "quick": plan.quick,
            "bursts": plan.bursts,
            "backlogs": plan.backlogs,
            "duration_secs": plan.secs,
            "connections": plan.connections,
            "repeat": plan.repeat,
            "connect_first": plan.connect_first,
            "pool_threads": env.pool_threads,
            "pinned": env.pin,
            "burst_timeout_secs": BURST_TIMEOUT_SECS,
        },
        "notes": notes,
        "runs": runs,
    });
    let path = args.out.join("results.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    render(&args.out, &doc)?;
    eprintln!("compare: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn render(out: &Path, doc: &Value) -> Result<(), String> {
    let files = report::write_all(out, doc)?;
    for f in files {
        eprintln!("compare: wrote {}", out.join(f).display());
    }
    Ok(())
}

/// Finds the programs and prepares the scratch and log directories.
fn discover(args: &CompareArgs) -> Result<Env, String> {
    let bench_bin =
        std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let server_bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => bench_bin.with_file_name("metricstream"),
    };
    if !server_bin.is_file() {
        return Err(format!(
            "server binary {} not found: build it (cargo build --release) or pass --server-bin",
            server_bin.display()
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = cores >= 2 && servers::find_program("taskset").is_some();
    let tmp = std::env::temp_dir().join(format!("metricstream-compare-{}", std::process::id()));
    let logs = args.out.join("logs");
    for dir in [&tmp, &logs] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(Env {
        server_bin,
        bench_bin,
        nginx: servers::find_program("nginx"),
        victoria: servers::find_program("victoria-metrics"),
        pin,
        pool_threads: args.pool_threads,
        tmp,
        logs,
    })
}

/// One run: fresh server, one scenario, server CPU around it, server stopped.
fn measure(
    env: &Env,
    target: Target,
    backlog: u32,
    scenario: &str,
    connections: usize,
    extra: Vec<String>,
    bound: Duration,
) -> Value {
    std::thread::sleep(SETTLE);
    let label = format!("{scenario}-{}-b{backlog}-c{connections}", target.name());
    let server_log = env.logs.join(format!("{label}.server.log"));
    let bench_log = env.logs.join(format!("{label}.bench.log"));
    let mut record = json!({
        "scenario": scenario,
        "target": target.name(),
        "backlog": backlog,
        "connections": connections,
    });
    let result = (|| -> Result<(Value, f64), String> {
        let mut server = servers::start(env, target, backlog, &server_log)?;
        let mut args = vec![
            scenario.to_string(),
            "--target".to_string(),
            server.addr.to_string(),
            "--json".to_string(),
        ];
        args.extend(extra);
        let cpu_before = server.cpu_secs();
        let bench = servers::run_bench(env, &args, bound, &bench_log);
        let cpu = server.cpu_secs() - cpu_before;
        server.stop();
        Ok((bench?, cpu))
    })();
    match result {
        Ok((bench, cpu)) => {
            eprintln!("compare: {label}: {}", one_line(scenario, &bench, cpu));
            record["ok"] = json!(true);
            record["server_cpu_secs"] = json!((cpu * 1000.0).round() / 1000.0);
            record["bench"] = bench;
        }
        Err(e) => {
            eprintln!("compare: {label}: failed: {e}");
            record["ok"] = json!(false);
            record["error"] = json!(e);
        }
    }
    record
}

/// The progress line of one run.
fn one_line(scenario: &str, b: &Value, cpu: f64) -> String {
    let f = |path: &[&str]| -> String {
        path.iter()
            .try_fold(b, |v, k| v.get(k))
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    match scenario {
        "burst" => format!(
            "completed {} connect p99 {} us, {} connects >= 0.9 s, overflows +{}",
            f(&["completed"]),
            f(&["connect_us", "p99"]),
            f(&["connects_over_900ms"]),
            f(&["listen_overflows_delta"])
        ),
        "churn" => format!(
            "{} conn/s, {} errors, server CPU {cpu:.2} s",
            f(&["connections_per_sec"]),
            f(&["error_count"])
        ),
        "keepalive" => format!(
            "{} req/s, p99 {} us, {} errors, server CPU {cpu:.2} s",
            f(&["requests_per_sec"]),
            f(&["latency_us", "p99"]),
            f(&["error_count"])
        ),
        _ => format!(
            "{} points/s, {} errors, server CPU {cpu:.2} s",
            f(&["points_per_sec"]),
            f(&["error_count"])
        ),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// How this run was asked for, with the program's own path shortened.
fn command_line() -> String {
    let mut parts: Vec<String> = std::env::args().collect();
    if let Some(first) = parts.first_mut() {
        *first = PathBuf::from(first.as_str())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "metricstream-bench".into());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = crate::cli::Cli::parse_from(args);
        match cli.command {
            crate::cli::Command::Compare(c) => Plan::new(&c),
            _ => Err("not compare".into()),
        }
    }

    #[test]
    fn quick_and_full_plans() {
        let q = plan(&["b", "compare", "--quick"]).expect("quick");
        assert_eq!(q.bursts, vec![1000, 5000]);
        assert_eq!(q.backlogs, vec![64, 128, 1024]);
        assert_eq!(q.secs, 3.0);
        let f = plan(&["b", "compare"]).expect("full");
        assert_eq!(f.bursts, vec![1000, 2000, 5000]);
        assert_eq!(f.secs, 10.0);
        assert!(plan(&["b", "compare", "--bursts", "0"]).is_err());
        assert!(plan(&["b", "compare", "--duration", "0"]).is_err());
        assert_eq!(q.repeat, 3);
        // The quick plan stays within about three minutes.
        assert!(q.estimate_secs(4, 4) < 200.0, "{}", q.estimate_secs(4, 4));
    }
}
