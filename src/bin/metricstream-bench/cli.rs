//! The command line: clap definitions for every scenario and option, and
//! their validation into `Settings` (loopback-only target resolution,
//! per-scenario defaults, bounds on counts and times).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Longest run or wait any option may ask for, in seconds.
const MAX_SECS: f64 = 3600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N connects at once, one request each: refused/reset/timeouts, connect latency, listen overflows.
    Burst,
    /// One request per new connection, C concurrent, for D seconds: connections/s.
    Churn,
    /// GET over C keep-alive connections, closed loop, for D seconds: requests/s, latency.
    Keepalive,
    /// POST line protocol (B points a body) over C keep-alive connections: points/s.
    Write,
    /// N idle keep-alive connections held open: server RSS per connection.
    Idle,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::Churn => "churn",
            Scenario::Keepalive => "keepalive",
            Scenario::Write => "write",
            Scenario::Idle => "idle",
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
    override_usage = "metricstream-bench <SCENARIO> --target <HOST:PORT> [OPTIONS]"
)]
pub struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,

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
    pub json: bool,
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

impl Cli {
    pub fn settings(&self) -> Result<Settings, String> {
        let addr = resolve_loopback(&self.target)?;
        let connections = self.connections.unwrap_or(match self.scenario {
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
            match self.scenario {
                Scenario::Write => "/write",
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
            scenario: self.scenario,
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
            json: self.json,
        })
    }
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

    #[test]
    fn defaults_per_scenario() {
        let cli = Cli::parse_from(["b", "burst", "--target", "127.0.0.1:9"]);
        let s = cli.settings().expect("valid");
        assert_eq!(s.connections, 5000);
        assert_eq!(s.path, "/ping");
        let cli = Cli::parse_from(["b", "write", "--target", "127.0.0.1:9", "-n", "8"]);
        let s = cli.settings().expect("valid");
        assert_eq!(s.connections, 8);
        assert_eq!(s.path, "/write");
        assert_eq!(s.host, "127.0.0.1:9");
        let cli = Cli::parse_from(["b", "idle", "--target", "127.0.0.1:9", "-d", "0"]);
        assert!(cli.settings().is_err());
    }
}
