//! The command line: clap definitions for every scenario and option, and
//! their validation into `Settings` (loopback-only target resolution,
//! per-scenario defaults, bounds on counts and times), plus the `compare`
//! subcommand's options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Longest run or wait any option may ask for, in seconds.
const MAX_SECS: f64 = 3600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Burst,
    Churn,
    Keepalive,
    Write,
    Idle,
    Forward,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Churn => "churn",
            Scenario::Keepalive => "keepalive",
            Scenario::Write => "write",
            Scenario::Idle => "idle",
            Scenario::Forward => "forward",
        }
    }
}

/// Load generator for metricstream (HTTP/1.1, InfluxDB line protocol on /write).
///
/// Every run is bounded in count and time. Only loopback targets
/// (127.0.0.0/8, ::1) are accepted. Exit status: 0 when the run completed
/// (refusals by the server are data), 1 when the target could not be
/// reached at all, 2 for bad arguments or too few file descriptors.
#[derive(Debug, Parser)]
#[command(
    name = "metricstream-bench",
    version,
    override_usage = "metricstream-bench <SCENARIO> --target <HOST:PORT> [OPTIONS]\n       metricstream-bench compare [--quick] [--out DIR] [OPTIONS]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// N connects at once, one request each: refused/reset/timeouts, connect latency, listen overflows.
    Burst(ScenarioArgs),
    /// One request per new connection, C concurrent, for D seconds: connections/s.
    Churn(ScenarioArgs),
    /// GET over C keep-alive connections, closed loop, for D seconds: requests/s, latency.
    Keepalive(ScenarioArgs),
    /// POST line protocol (B points a body) over C keep-alive connections: points/s.
    Write(ScenarioArgs),
    /// N idle keep-alive connections held open: server RSS per connection.
    Idle(ScenarioArgs),
    /// Write N points through a forwarder (metricstream, vmagent) and wait until its
    /// receiver (VictoriaMetrics) counted every sample: end-to-end samples/s, CPU per sample.
    Forward(ForwardArgs),
    /// Start metricstream in each I/O model (and nginx, VictoriaMetrics when installed) on
    /// loopback, run the scenarios against each, stop them, write tables and SVG plots.
    Compare(CompareArgs),
}

impl Command {
    /// The scenario to run and its options; `None` for `forward` and `compare`,
    /// which have their own.
    pub fn scenario(&self) -> Option<(Scenario, &ScenarioArgs)> {
        match self {
            Command::Burst(a) => Some((Scenario::Burst, a)),
            Command::Churn(a) => Some((Scenario::Churn, a)),
            Command::Keepalive(a) => Some((Scenario::Keepalive, a)),
            Command::Write(a) => Some((Scenario::Write, a)),
            Command::Idle(a) => Some((Scenario::Idle, a)),
            Command::Forward(_) | Command::Compare(_) => None,
        }
    }
}

/// Options of the measuring scenarios.
#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// Server address, HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, localhost:8080); loopback only.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,

    /// Connections: opened at once (burst, default 5000; idle, default 10000)
    /// or kept concurrently (churn, keepalive, write; default 64).
    #[arg(short = 'c', long, visible_short_alias = 'n', value_name = "N")]
    pub connections: Option<usize>,

    /// Measured run time in seconds (churn, keepalive, write).
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,

    /// Warm-up before measuring, in seconds (keepalive, write).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,

    /// Give up on a connect or response after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Request path [default: /write for write, /ping otherwise].
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Host header value [default: the --target text].
    #[arg(long, value_name = "HOST")]
    pub host_header: Option<String>,

    /// Print one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Event-loop threads, each with its own share of connections (churn, keepalive, write).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Points (lines) per POST body (write).
    #[arg(short = 'b', long, value_name = "B", default_value_t = 1000)]
    pub batch: usize,

    /// Distinct pre-generated bodies to rotate through (write).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub bodies: usize,

    /// Send bodies gzip-compressed with Content-Encoding: gzip (write).
    #[arg(long)]
    pub gzip: bool,

    /// Seconds to hold the connections idle once open (idle).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub hold: f64,

    /// Seconds to wait after all are open before reading RSS (idle).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub settle: f64,

    /// Server process whose RSS to read from /proc/PID/status (idle).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Held connections re-checked with one more request at the end (idle).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub verify: usize,

    /// Issue every connect before sending any request (burst). One client core opens
    /// connections much faster alone than while also sending requests and reading
    /// responses, so the connects arrive as a burst, as from many clients at once.
    #[arg(long)]
    pub connect_first: bool,
}

/// Validated settings shared by the scenarios.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scenario: Scenario,
    pub addr: SocketAddr,
    /// The target as the user wrote it (used in reports).
    pub target: String,
    pub host: String,
    pub path: String,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub threads: usize,
    pub batch: usize,
    pub bodies: usize,
    pub gzip: bool,
    pub hold: Duration,
    pub settle: Duration,
    pub pid: Option<u32>,
    pub verify: usize,
    pub connect_first: bool,
    pub json: bool,
    /// What only the `forward` scenario needs.
    pub forward: Option<ForwardSettings>,
}

/// The receiver side of the `forward` scenario.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub receiver: SocketAddr,
    pub receiver_host: String,
    /// The counter read from the receiver's `/metrics`, as the exposition spells it.
    pub counter: String,
    /// Points to write (a whole number of bodies: rounded up to `--lines`).
    pub points: u64,
    /// Threads of `--pid` whose name starts with this are summed apart.
    pub thread_prefix: Option<String>,
    pub receiver_pid: Option<u32>,
    /// Longest wait for the receiver once the load is done.
    pub drain_timeout: Duration,
    pub poll: Duration,
}

fn secs(name: &str, v: f64, allow_zero: bool) -> Result<Duration, String> {
    let ok = v.is_finite() && v <= MAX_SECS && (v > 0.0 || (allow_zero && v == 0.0));
    if !ok {
        let lower = if allow_zero { "0" } else { "more than 0" };
        return Err(format!(
            "--{name} must be {lower} and at most {MAX_SECS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses `target` and insists that it is loopback. Only IP literals and
/// `localhost` are accepted, so no name lookup ever leaves the machine.
pub fn resolve_loopback(target: &str) -> Result<SocketAddr, String> {
    let addr = match target.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let port = target
                .rsplit_once(':')
                .filter(|(host, _)| host.eq_ignore_ascii_case("localhost"))
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .ok_or_else(|| {
                    format!(
                        "--target {target:?}: expected HOST:PORT with an IP literal or localhost \
                         (127.0.0.1:8080, [::1]:8080, localhost:8080)"
                    )
                })?;
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--target {target:?} is not a loopback address; only 127.0.0.0/8 and ::1 may be targeted"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("--target {target:?}: port 0 is not a server port"));
    }
    Ok(addr)
}

impl ScenarioArgs {
    pub fn settings(&self, scenario: Scenario) -> Result<Settings, String> {
        let addr = resolve_loopback(&self.target)?;
        let connections = self.connections.unwrap_or(match scenario {
            Scenario::Burst => 5000,
            Scenario::Idle => 10_000,
            _ => 64,
        });
        if connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 || self.threads > 64 {
            return Err("--threads must be between 1 and 64".into());
        }
        if self.threads > connections {
            return Err(format!(
                "--threads {} is more than --connections {connections}",
                self.threads
            ));
        }
        if self.batch == 0 || self.batch > 1_000_000 {
            return Err("--batch must be between 1 and 1000000".into());
        }
        if self.bodies == 0 || self.bodies > 1024 {
            return Err("--bodies must be between 1 and 1024".into());
        }
        let path = self.path.clone().unwrap_or_else(|| {
            match scenario {
                Scenario::Write | Scenario::Forward => "/write",
                _ => "/ping",
            }
            .to_string()
        });
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "--path {path:?} must start with / and contain no spaces or control characters"
            ));
        }
        let host = self
            .host_header
            .clone()
            .unwrap_or_else(|| self.target.clone());
        if host.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err("--host-header must not contain control characters".into());
        }
        Ok(Settings {
            scenario,
            addr,
            target: self.target.clone(),
            host,
            path,
            connections,
            duration: secs("duration", self.duration, false)?,
            warmup: secs("warmup", self.warmup, true)?,
            timeout: secs("timeout", self.timeout, false)?,
            threads: self.threads,
            batch: self.batch,
            bodies: self.bodies,
            gzip: self.gzip,
            hold: secs("hold", self.hold, true)?,
            settle: secs("settle", self.settle, true)?,
            pid: self.pid,
            verify: self.verify,
            connect_first: self.connect_first,
            json: self.json,
            forward: None,
        })
    }
}

/// Options of `forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Where the points are written (metricstream's or vmagent's /write), HOST:PORT; loopback only.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,

    /// The store the forwarder sends to, whose /metrics holds the arrival counter; loopback only.
    #[arg(long, value_name = "HOST:PORT")]
    pub receiver: String,

    /// Points to write, in bodies of --lines points (rounded up to a whole body).
    #[arg(long, value_name = "N")]
    pub points: u64,

    /// Keep-alive connections writing at once.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 64)]
    pub connections: usize,

    /// Points (lines) per POST body.
    #[arg(short = 'b', long, value_name = "B", default_value_t = 1000)]
    pub lines: usize,

    /// Distinct pre-generated bodies to rotate through.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub bodies: usize,

    /// Request path on the target.
    #[arg(long, value_name = "PATH", default_value = "/write")]
    pub path: String,

    /// The forwarder's process: its CPU (utime+stime, all threads, and per thread name).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Sum apart the CPU of --pid's threads whose name starts with this (e.g. `forward`).
    #[arg(long, value_name = "NAME-PREFIX", requires = "pid")]
    pub threads: Option<String>,

    /// The receiver's process, whose CPU is reported too.
    #[arg(long, value_name = "PID")]
    pub receiver_pid: Option<u32>,

    /// The receiver's counter of arrived samples, as its /metrics spells the series.
    #[arg(
        long,
        value_name = "SERIES",
        default_value = "vm_rows_inserted_total{type=\"promremotewrite\"}"
    )]
    pub counter: String,

    /// Longest the write load may run, in seconds (it stops earlier once --points are sent).
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 300.0)]
    pub duration: f64,

    /// Longest wait for the receiver to count every sample after the load, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub drain_timeout: f64,

    /// Milliseconds between two readings of the receiver's counter after the load.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub poll_ms: u64,

    /// Give up on a connect or response after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Event-loop threads of the client, each with its own share of connections.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub client_threads: usize,

    /// Print one JSON object on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl ForwardArgs {
    /// The write load as `Settings` of a `write` run bounded by a point count,
    /// with the receiver side in `forward`.
    pub fn settings(&self) -> Result<Settings, String> {
        let receiver =
            resolve_loopback(&self.receiver).map_err(|e| e.replace("--target", "--receiver"))?;
        if self.points == 0 {
            return Err("--points must be at least 1".into());
        }
        if !(1..=1000).contains(&self.poll_ms) {
            return Err("--poll-ms must be between 1 and 1000".into());
        }
        if self.counter.is_empty() || self.counter.contains(char::is_whitespace) {
            return Err(
                "--counter must be one series as the exposition spells it, without spaces".into(),
            );
        }
        let write = ScenarioArgs {
            target: self.target.clone(),
            connections: Some(self.connections),
            duration: self.duration,
            warmup: 0.0,
            timeout: self.timeout,
            path: Some(self.path.clone()),
            host_header: None,
            json: self.json,
            threads: self.client_threads,
            batch: self.lines,
            bodies: self.bodies,
            gzip: false,
            hold: 0.0,
            settle: 0.0,
            pid: self.pid,
            verify: 0,
            connect_first: false,
        };
        let mut s = write.settings(Scenario::Forward)?;
        let lines = self.lines as u64;
        s.forward = Some(ForwardSettings {
            receiver,
            receiver_host: self.receiver.clone(),
            counter: self.counter.clone(),
            points: self.points.div_ceil(lines) * lines,
            thread_prefix: self.threads.clone(),
            receiver_pid: self.receiver_pid,
            drain_timeout: secs("drain-timeout", self.drain_timeout, false)?,
            poll: Duration::from_millis(self.poll_ms),
        });
        Ok(s)
    }
}

/// Options of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Short run (about 3 minutes): bursts of 1000 and 5000, 3 s windows.
    #[arg(long)]
    pub quick: bool,

    /// Directory for results.md, results.json, the SVG plots and the servers' logs.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,

    /// The metricstream server binary [default: `metricstream` next to this program].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Pool threads of `--io-model threadpool` (its `--workers`): a thread-per-connection
    /// pool is sized for concurrency, not cores.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub pool_threads: usize,

    /// Burst sizes, comma-separated [default: 1000,2000,5000; --quick: 1000,5000].
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub bursts: Vec<usize>,

    /// Listen backlogs for the burst runs, comma-separated [default: 64,128,1024].
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub backlogs: Vec<u32>,

    /// Runs of each burst configuration; tables and plots show the median (a busy machine
    /// can stall one run).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,

    /// Burst runs send requests as soon as each connect completes, instead of after every
    /// connect was issued (`burst --connect-first`, the default here).
    #[arg(long)]
    pub interleaved: bool,

    /// Seconds of each churn, keepalive and write run [default: 10; --quick: 3].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Concurrent connections of the churn, keepalive and write runs.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 64)]
    pub connections: usize,

    /// Leave nginx and VictoriaMetrics out even when installed.
    #[arg(long)]
    pub no_external: bool,

    /// Run nothing: rebuild results.md and the plots from this results.json.
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(resolve_loopback("127.0.0.1:8080").is_ok());
        assert!(resolve_loopback("[::1]:8080").is_ok());
        assert!(resolve_loopback("127.0.0.2:80").is_ok());
        assert!(resolve_loopback("10.0.0.1:8080").is_err());
        assert!(resolve_loopback("192.168.1.1:80").is_err());
        assert!(resolve_loopback("127.0.0.1").is_err());
        assert!(resolve_loopback("localhost:8080").is_ok());
        assert!(resolve_loopback("example.com:80").is_err());
        assert!(resolve_loopback("127.0.0.1:0").is_err());
    }

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::parse_from(args);
        let (scenario, a) = cli.command.scenario().expect("a scenario");
        a.settings(scenario)
    }

    #[test]
    fn defaults_per_scenario() {
        let s = settings(&["b", "burst", "--target", "127.0.0.1:9"]).expect("valid");
        assert_eq!(s.connections, 5000);
        assert_eq!(s.path, "/ping");
        let s = settings(&["b", "write", "--target", "127.0.0.1:9", "-n", "8"]).expect("valid");
        assert_eq!(s.connections, 8);
        assert_eq!(s.path, "/write");
        assert_eq!(s.host, "127.0.0.1:9");
        assert!(settings(&["b", "idle", "--target", "127.0.0.1:9", "-d", "0"]).is_err());
    }

    #[test]
    fn forward_rounds_points_to_bodies() {
        let cli = Cli::parse_from([
            "b",
            "forward",
            "--target",
            "127.0.0.1:9",
            "--receiver",
            "127.0.0.1:8428",
            "--points",
            "2500",
            "--threads",
            "forward",
            "--pid",
            "1",
        ]);
        let Command::Forward(a) = cli.command else {
            panic!("not forward")
        };
        let s = a.settings().expect("valid");
        assert_eq!(s.scenario, Scenario::Forward);
        assert_eq!(s.connections, 64);
        assert_eq!(s.batch, 1000);
        assert_eq!(s.path, "/write");
        let f = s.forward.expect("forward settings");
        assert_eq!(f.points, 3000);
        assert_eq!(
            f.counter,
            "vm_rows_inserted_total{type=\"promremotewrite\"}"
        );
        assert_eq!(f.thread_prefix.as_deref(), Some("forward"));
        assert_eq!(f.poll, Duration::from_millis(20));
        let cli = Cli::parse_from([
            "b",
            "forward",
            "--target",
            "127.0.0.1:9",
            "--receiver",
            "10.0.0.1:8428",
            "--points",
            "10",
        ]);
        let Command::Forward(a) = cli.command else {
            panic!("not forward")
        };
        let e = a.settings().expect_err("not loopback");
        assert!(e.contains("--receiver"), "{e}");
    }

    #[test]
    fn compare_defaults_and_quick() {
        let cli = Cli::parse_from(["b", "compare"]);
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        assert_eq!(c.out, PathBuf::from("bench-results"));
        assert!(!c.quick);
        let cli = Cli::parse_from(["b", "compare", "--quick", "--bursts", "10,20", "--out", "x"]);
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        assert!(c.quick);
        assert_eq!(c.bursts, vec![10, 20]);
    }
}
