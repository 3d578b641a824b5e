//! Configuration: command-line flags and `METRICSTREAM_*` environment variables -> [`Config`].
//!
//! [`Config`] is the one table of options: each field declares its flag, variable,
//! default and typed parser, so the help text, the defaults (`Config::default()` parses an
//! empty command line) and validation cannot drift apart. The flag wins over the variable
//! (clap's `env`). A bad value stops start-up with one line naming what the user actually
//! set — the flag *or* the variable — and the value (never the auth token), exit code 2.
//! Nothing is ever silently replaced by a default. This module must never read anything
//! but the command line and the environment.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::forward::Format;
use crate::forward::target::Target;

/// Which I/O architecture serves connections. `Reactor` is the product; the other two exist
/// so benchmark comparisons run the same request handling under a different I/O core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoModel {
    Reactor,
    Threadpool,
    Blocking,
}

impl IoModel {
    pub fn as_str(self) -> &'static str {
        match self {
            IoModel::Reactor => "reactor",
            IoModel::Threadpool => "threadpool",
            IoModel::Blocking => "blocking",
        }
    }
}

/// When the write log is `fdatasync`ed (SPEC.md "Durability").
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// A write is acknowledged only after the sync that covers it (group commit).
    Always,
    /// Acknowledged once written to the log; the log is synced every second.
    Interval,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
        }
    }
}

/// Longest accepted timeout: a day. Longer is a typo, not a policy.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Shortest phase timeout: below it a request could not even arrive on a loaded machine.
const MIN_TIMEOUT_SECS: f64 = 0.05;

/// The validated configuration the server runs with, and the declaration of every option.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "metricstream",
    version,
    allow_negative_numbers = true,
    about = "High-concurrency metrics ingestion server: InfluxDB line protocol over HTTP/1.1 in, Prometheus and JSON out.",
    after_help = "Every option can also be set with the environment variable shown; the flag wins.\nLogging is controlled by RUST_LOG (default: info)."
)]
pub struct Config {
    /// Socket address to listen on, IPv4 or IPv6 (`[::1]:8080`); port 0 picks a free port
    #[arg(long, env = "METRICSTREAM_LISTEN", value_name = "ADDR",
        default_value = "127.0.0.1:8080", value_parser = socket_addr)]
    pub listen: SocketAddr,

    /// listen(2) backlog, 1..=65535 (capped by /proc/sys/net/core/somaxconn)
    #[arg(long, env = "METRICSTREAM_BACKLOG", value_name = "N",
        default_value = "1024", value_parser = int::<u32>(1..=65535))]
    pub backlog: u32,

    /// Worker pool threads, 1..=1024 [default: available cores]
    #[arg(long, env = "METRICSTREAM_WORKERS", value_name = "N",
        default_value_t = default_workers(), hide_default_value = true,
        value_parser = int::<usize>(1..=1024))]
    pub workers: usize,

    /// I/O model: reactor (the product), threadpool or blocking (for benchmark comparisons)
    #[arg(
        long = "io-model",
        env = "METRICSTREAM_IO_MODEL",
        value_name = "M",
        default_value = "reactor",
        value_enum
    )]
    pub io_model: IoModel,

    /// Open client connections at once; past it new connections get 503 and are closed
    #[arg(long = "max-connections", env = "METRICSTREAM_MAX_CONNECTIONS", value_name = "N",
        default_value = "10000", value_parser = int::<usize>(1..=1_000_000))]
    pub max_connections: usize,

    /// Bytes of request line + headers; past it 431 and close
    #[arg(long = "max-header-bytes", env = "METRICSTREAM_MAX_HEADER_BYTES", value_name = "N",
        default_value = "16384", value_parser = int::<usize>(256..=1 << 20))]
    pub max_header_bytes: usize,

    /// Bytes of request body after decoding chunks (and gzip); past it 413 and close
    #[arg(long = "max-body-bytes", env = "METRICSTREAM_MAX_BODY_BYTES", value_name = "N",
        default_value = "26214400", value_parser = int::<usize>(1..=1 << 31))]
    pub max_body_bytes: usize,

    /// Seconds to receive a complete request head once its first byte arrived; then 408
    #[arg(long = "header-timeout", env = "METRICSTREAM_HEADER_TIMEOUT", value_name = "SECS",
        default_value = "10", value_parser = secs(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS))]
    pub header_timeout: Duration,

    /// Seconds allowed between body bytes; then 408
    #[arg(long = "body-timeout", env = "METRICSTREAM_BODY_TIMEOUT", value_name = "SECS",
        default_value = "30", value_parser = secs(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS))]
    pub body_timeout: Duration,

    /// Seconds a keep-alive connection may sit with no request in progress; then closed
    #[arg(long = "idle-timeout", env = "METRICSTREAM_IDLE_TIMEOUT", value_name = "SECS",
        default_value = "75", value_parser = secs(MIN_TIMEOUT_SECS, MAX_TIMEOUT_SECS))]
    pub idle_timeout: Duration,

    /// Points waiting between ingestion and aggregation; a write that does not fit gets 503
    #[arg(long = "queue-capacity", env = "METRICSTREAM_QUEUE_CAPACITY", value_name = "N",
        default_value = "1000000", value_parser = int::<usize>(1..=1 << 32))]
    pub queue_capacity: usize,

    /// Distinct series held; points of new series past it are dropped and counted
    #[arg(long = "max-series", env = "METRICSTREAM_MAX_SERIES", value_name = "N",
        default_value = "1000000", value_parser = int::<usize>(1..=1 << 32))]
    pub max_series: usize,

    /// Seconds without a write after which a series is dropped from reads and snapshots (counted in series_expired); 0 keeps series until deleted
    #[arg(long = "series-ttl", env = "METRICSTREAM_SERIES_TTL", value_name = "SECS",
        default_value = "3600", value_parser = whole_secs(0..=u64::from(u32::MAX)))]
    pub series_ttl: Duration,

    /// Seconds allowed on SIGTERM/SIGINT to finish requests and drain the queue
    #[arg(long = "shutdown-timeout", env = "METRICSTREAM_SHUTDOWN_TIMEOUT", value_name = "SECS",
        default_value = "30", value_parser = secs(0.0, MAX_TIMEOUT_SECS))]
    pub shutdown_timeout: Duration,

    /// Token required on every endpoint but /ping and /health [default: unset, open]
    #[arg(long = "auth-token", env = "METRICSTREAM_AUTH_TOKEN", value_name = "TOKEN",
        hide_env_values = true, value_parser = token)]
    pub auth_token: Option<String>,

    /// Directory of the write log and snapshots (created if missing; one server at a time)
    #[arg(long = "data-dir", env = "METRICSTREAM_DATA_DIR", value_name = "DIR",
        default_value = "metricstream-data", value_parser = path)]
    pub data_dir: PathBuf,

    /// When the write log is synced: always (before each 204, group commit) or interval (every second)
    #[arg(
        long,
        env = "METRICSTREAM_FSYNC",
        value_name = "MODE",
        default_value = "always",
        value_enum
    )]
    pub fsync: Fsync,

    /// No write log and no snapshots: series live in memory only (to measure the I/O core)
    #[arg(long = "memory-only", env = "METRICSTREAM_MEMORY_ONLY",
        action = clap::ArgAction::SetTrue, value_parser = boolean)]
    pub memory_only: bool,

    /// Seconds between snapshots of the aggregates, 1..=86400 (bounds how much log a restart replays)
    #[arg(long = "snapshot-interval", env = "METRICSTREAM_SNAPSHOT_INTERVAL", value_name = "SECS",
        default_value = "60", value_parser = whole_secs(1..=86_400))]
    pub snapshot_interval: Duration,

    /// Forward every accepted point to this Prometheus remote_write URL (repeatable; env: comma-separated)
    #[arg(long = "remote-write-url", env = "METRICSTREAM_REMOTE_WRITE_URL", value_name = "URL",
        value_delimiter = ',', hide_env_values = true, value_parser = remote_write_url)]
    pub remote_write_urls: Vec<Target>,

    /// Forward every accepted point as line protocol to this InfluxDB /write or /api/v2/write URL (repeatable; env: comma-separated)
    #[arg(long = "influx-write-url", env = "METRICSTREAM_INFLUX_WRITE_URL", value_name = "URL",
        value_delimiter = ',', hide_env_values = true, value_parser = influx_write_url)]
    pub influx_write_urls: Vec<Target>,

    /// How far (log bytes) one forward target may fall behind before its oldest unsent points are dropped
    #[arg(long = "forward-max-backlog-bytes", env = "METRICSTREAM_FORWARD_MAX_BACKLOG_BYTES",
        value_name = "BYTES", default_value = "1073741824", value_parser = int::<u64>(1..=1 << 50))]
    pub forward_max_backlog_bytes: u64,

    /// PEM CA certificates trusted for https forward URLs, besides the built-in roots [default: unset]
    #[arg(long = "forward-ca-file", env = "METRICSTREAM_FORWARD_CA_FILE", value_name = "PATH",
        value_parser = path)]
    pub forward_ca_file: Option<PathBuf>,
}

impl Config {
    /// Every forward target, remote_write ones first, in the order given.
    pub fn forward_targets(&self) -> impl Iterator<Item = &Target> {
        self.remote_write_urls
            .iter()
            .chain(self.influx_write_urls.iter())
    }
}

impl Default for Config {
    /// The declared defaults: an empty command line with the environment ignored.
    fn default() -> Self {
        let matches = Config::command()
            .mut_args(|a| a.env(None::<&str>))
            .try_get_matches_from(["metricstream"]);
        // The defaults are constants checked by `defaults_parse_and_match_the_spec`.
        let parsed = matches.and_then(|m| Config::from_arg_matches(&m));
        parsed.expect("the declared defaults parse")
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 1024)
}

/// A socket address such as `127.0.0.1:8080` or `[::1]:8080`.
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| "a socket address such as 127.0.0.1:8080 or [::1]:8080".to_string())
}

/// An integer within `range`, as a `T` (every bound used fits `T` on 64-bit targets).
fn int<T>(range: RangeInclusive<u64>) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let expected = || format!("an integer in {}..={}", range.start(), range.end());
        let n: u64 = s.trim().parse().map_err(|_| expected())?;
        if !range.contains(&n) {
            return Err(expected());
        }
        T::try_from(n).map_err(|_| expected())
    }
}

/// Seconds, integer or decimal (`0.5`), within `lo..=hi`; no sign, exponent or `inf`.
fn secs(lo: f64, hi: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |s: &str| {
        let t = s.trim();
        let plain = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match t.parse::<f64>() {
            Ok(x) if plain && (lo..=hi).contains(&x) => Ok(Duration::from_secs_f64(x)),
            _ => Err(format!("a number of seconds in {}..={}", lo, hi)),
        }
    }
}

/// Whole seconds within `range`.
fn whole_secs(
    range: RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    let n = int::<u64>(range);
    move |s: &str| n(s).map(Duration::from_secs)
}

/// A non-empty path.
fn path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("a directory path".to_string());
    }
    Ok(PathBuf::from(s))
}

/// A switch's value from the environment: exactly `true`, `false`, `1` or `0`.
fn boolean(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("one of true, false, 1, 0".to_string()),
    }
}

/// A forward URL (its error never quotes the URL, which may hold a password).
fn remote_write_url(s: &str) -> Result<Target, String> {
    Target::parse(Format::RemoteWrite, s).map_err(|e| format!("an http(s) URL: {e}"))
}

fn influx_write_url(s: &str) -> Result<Target, String> {
    let target =
        Target::parse(Format::LineProtocol, s).map_err(|e| format!("an http(s) URL: {e}"))?;
    // Points go out with nanosecond timestamps: another precision would mis-stamp them all.
    if let Some(p) = target.query_value("precision")
        && !matches!(p.as_str(), "n" | "ns")
    {
        return Err(format!(
            "an http(s) URL without precision={p}: forwarded points carry nanosecond timestamps (leave precision out, or use ns)"
        ));
    }
    Ok(target)
}

/// The auth token: printable ASCII without spaces, as every header form can carry it.
fn token(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(s.to_string())
    } else {
        Err("a non-empty token of printable ASCII without spaces".to_string())
    }
}

/// What went wrong with the configuration. `Display` is the one line printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A value that did not validate: `origin` is `--flag` or `METRICSTREAM_X`.
    Invalid {
        origin: String,
        value: String,
        expected: String,
    },
    /// clap refused the command line itself (unknown flag, missing value).
    Usage(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                origin,
                value,
                expected,
            } => write!(
                f,
                "invalid value {:?} for {}: expected {}",
                value, origin, expected
            ),
            ConfigError::Usage(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// Turns clap's error into one line. A bad value names the flag when it is on the
    /// command line, else the variable that supplied it (the flag wins, so that is exact).
    fn from_clap(e: &clap::Error, args: &[OsString]) -> ConfigError {
        let usage = || ConfigError::Usage(first_line(&e.render().to_string()));
        let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
            e.get(ContextKind::InvalidArg),
            e.get(ContextKind::InvalidValue),
        ) else {
            return usage();
        };
        let expected = match e.kind() {
            // Our value parsers' messages say what was expected.
            ErrorKind::ValueValidation => std::error::Error::source(e).map(|s| s.to_string()),
            ErrorKind::InvalidValue => match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(words)) if !words.is_empty() => {
                    Some(format!("one of {}", words.join(", ")))
                }
                _ => None,
            },
            _ => None,
        };
        let long = arg.split(' ').next().unwrap_or(arg).trim_start_matches('-');
        let cmd = Config::command();
        let def = cmd.get_arguments().find(|a| a.get_long() == Some(long));
        let (Some(expected), Some(def)) = (expected, def) else {
            return usage();
        };
        let flag = format!("--{long}");
        let on_command_line = args.iter().skip(1).any(|a| {
            a.to_str().is_some_and(|a| {
                a == flag || a.strip_prefix(&flag).is_some_and(|r| r.starts_with('='))
            })
        });
        let origin = match def.get_env() {
            Some(env) if !on_command_line => env.to_string_lossy().into_owned(),
            _ => flag,
        };
        // The token's value is never echoed, even a bad one.
        let value = if def.is_hide_env_values_set() {
            "<hidden>".to_string()
        } else {
            value.clone()
        };
        ConfigError::Invalid {
            origin,
            value,
            expected,
        }
    }
}

/// Outcome of reading the command line: run with a config, or print something and exit.
pub enum Startup {
    /// Boxed: a `Config` is large and this is returned once.
    Run(Box<Config>),
    /// `--help` / `--version`: print to stdout and exit 0.
    Print(String),
}

impl Config {
    /// Reads `std::env::args()` and the environment.
    pub fn from_env_and_args() -> Result<Startup, ConfigError> {
        Self::from_args(std::env::args_os())
    }

    /// Parses the given arguments (the first is the program name) plus the environment.
    pub fn from_args<I, T>(args: I) -> Result<Startup, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        match Config::try_parse_from(&args) {
            Ok(config) if config.memory_only && config.forward_targets().next().is_some() => {
                Err(ConfigError::Usage(
                    "--memory-only cannot be combined with --remote-write-url or --influx-write-url: forwarding reads the write log, which --memory-only turns off".to_string(),
                ))
            }
            Ok(config) => Ok(Startup::Run(Box::new(config))),
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                Ok(Startup::Print(e.render().to_string()))
            }
            Err(e) => Err(ConfigError::from_clap(&e, &args)),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["metricstream"];
        v.extend_from_slice(args);
        match Config::from_args(v)? {
            Startup::Run(c) => Ok(*c),
            Startup::Print(_) => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let d = Config::default();
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(d.backlog, 1024);
        assert_eq!(d.workers, default_workers());
        assert_eq!(d.io_model, IoModel::Reactor);
        assert_eq!(d.max_connections, 10_000);
        assert_eq!(d.max_header_bytes, 16384);
        assert_eq!(d.max_body_bytes, 26_214_400);
        assert_eq!(d.header_timeout, Duration::from_secs(10));
        assert_eq!(d.body_timeout, Duration::from_secs(30));
        assert_eq!(d.idle_timeout, Duration::from_secs(75));
        assert_eq!(d.queue_capacity, 1_000_000);
        assert_eq!(d.max_series, 1_000_000);
        assert_eq!(d.series_ttl, Duration::from_secs(3600));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(d.auth_token, None);
        assert_eq!(d.data_dir, PathBuf::from("metricstream-data"));
        assert_eq!(d.fsync, Fsync::Always);
        assert!(!d.memory_only);
        assert_eq!(d.snapshot_interval, Duration::from_secs(60));
        assert!(d.forward_targets().next().is_none());
        assert_eq!(d.forward_max_backlog_bytes, 1 << 30);
        assert_eq!(d.forward_ca_file, None);
    }

    #[test]
    fn durability_flags_parse_and_bad_values_name_the_flag() {
        let c = parse(&[
            "--data-dir",
            "/tmp/x",
            "--fsync",
            "interval",
            "--memory-only",
            "--snapshot-interval",
            "5",
        ])
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.fsync, Fsync::Interval);
        assert!(c.memory_only);
        assert_eq!(c.snapshot_interval, Duration::from_secs(5));
        let e = parse(&["--fsync", "sometimes"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"sometimes\" for --fsync: expected one of always, interval"
        );
        let e = parse(&["--snapshot-interval", "0"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"0\" for --snapshot-interval: expected an integer in 1..=86400"
        );
        let e = parse(&["--data-dir", ""]).unwrap_err();
        assert!(e.to_string().contains("--data-dir"), "{e}");
    }

    #[test]
    fn series_ttl_is_whole_seconds_and_zero_turns_it_off() {
        assert_eq!(
            parse(&["--series-ttl", "0"]).unwrap().series_ttl,
            Duration::ZERO
        );
        assert_eq!(
            parse(&["--series-ttl", "90"]).unwrap().series_ttl,
            Duration::from_secs(90)
        );
        let e = parse(&["--series-ttl", "1.5"]).unwrap_err();
        assert!(e.to_string().contains("--series-ttl"), "{e}");
        let e = parse(&["--series-ttl", "-1"]).unwrap_err();
        assert!(e.to_string().contains("--series-ttl"), "{e}");
    }

    #[test]
    fn forward_flags_parse_repeat_and_never_echo_a_url() {
        let c = parse(&[
            "--remote-write-url",
            "http://u:secret@127.0.0.1:8428/api/v1/write",
            "--remote-write-url=https://vm.example/api/v1/write",
            "--influx-write-url",
            "http://127.0.0.1:8086/write?db=x&p=pw",
            "--forward-max-backlog-bytes",
            "65536",
            "--forward-ca-file",
            "/etc/ca.pem",
        ])
        .expect("parses");
        let shown: Vec<&str> = c.forward_targets().map(|t| t.redacted()).collect();
        assert_eq!(
            shown,
            [
                "http://u:***@127.0.0.1:8428/api/v1/write",
                "https://vm.example/api/v1/write",
                "http://127.0.0.1:8086/write?db=x&p=***",
            ]
        );
        assert_eq!(c.forward_max_backlog_bytes, 65536);
        assert_eq!(c.forward_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        // The variable takes a comma-separated list.
        let c = parse(&["--influx-write-url", "http://a/write,http://b/write"]).expect("parses");
        assert_eq!(c.influx_write_urls.len(), 2);
        let e = parse(&["--remote-write-url", "ftp://u:secret@h/x"]).expect_err("refused");
        let line = e.to_string();
        assert!(line.contains("--remote-write-url"), "{line}");
        assert!(!line.contains("secret"), "{line}");
        let e =
            parse(&["--influx-write-url", "http://h/write?db=x&precision=s"]).expect_err("refused");
        assert!(e.to_string().contains("precision=s"), "{e}");
        assert!(parse(&["--influx-write-url", "http://h/write?db=x&precision=ns"]).is_ok());
        let e = parse(&["--forward-max-backlog-bytes", "0"]).expect_err("refused");
        assert!(e.to_string().contains("--forward-max-backlog-bytes"));
    }

    #[test]
    fn memory_only_and_forwarding_exclude_each_other() {
        let e = parse(&[
            "--memory-only",
            "--remote-write-url",
            "http://h/api/v1/write",
        ])
        .expect_err("refused");
        assert!(e.to_string().contains("--memory-only"), "{e}");
        assert!(parse(&["--memory-only"]).is_ok());
    }

    #[test]
    fn memory_only_switch_values() {
        for (v, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            assert_eq!(boolean(v), Ok(want));
        }
        for v in ["yes", "on", "", "TRUE2"] {
            assert!(boolean(v).is_err(), "{v}");
        }
    }

    #[test]
    fn default_is_what_the_command_line_declares() {
        // Every option on the command line with the value `--help` shows as its default
        // (flags win over any METRICSTREAM_* a developer may have set).
        let cmd = Config::command();
        let mut args = vec!["metricstream".to_string()];
        for arg in cmd.get_arguments() {
            if let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) {
                args.push(format!("--{long}={}", default.to_string_lossy()));
            }
        }
        assert!(args.len() > 10, "{args:?}");
        let from_flags = match Config::from_args(&args).unwrap() {
            Startup::Run(c) => *c,
            Startup::Print(_) => panic!("unexpected help"),
        };
        assert_eq!(from_flags, Config::default());
    }

    #[test]
    fn flags_parse() {
        let c = parse(&[
            "--listen",
            "[::1]:0",
            "--backlog",
            "64",
            "--workers",
            "3",
            "--io-model",
            "blocking",
            "--header-timeout",
            "0.5",
            "--auth-token",
            "s3cret",
        ])
        .unwrap();
        assert!(c.listen.is_ipv6());
        assert_eq!(c.backlog, 64);
        assert_eq!(c.workers, 3);
        assert_eq!(c.io_model, IoModel::Blocking);
        assert_eq!(c.header_timeout, Duration::from_millis(500));
        assert_eq!(c.auth_token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_values_name_the_flag_and_value() {
        let e = parse(&["--backlog", "0"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"0\" for --backlog: expected an integer in 1..=65535"
        );
        let e = parse(&["--backlog", "abc"]).unwrap_err();
        assert!(e.to_string().contains("--backlog"));
        let e = parse(&["--io-model", "epoll"]).unwrap_err();
        assert!(e.to_string().contains("\"epoll\""), "{}", e);
        let e = parse(&["--listen", "localhost"]).unwrap_err();
        assert!(e.to_string().contains("--listen"));
        let e = parse(&["--workers", "1025"]).unwrap_err();
        assert!(e.to_string().contains("1..=1024"));
        let e = parse(&["--idle-timeout", "-1"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"));
        let e = parse(&["--idle-timeout", "inf"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"));
    }

    #[test]
    fn bad_token_is_not_echoed() {
        let e = parse(&["--auth-token", "has space"]).unwrap_err();
        assert!(!e.to_string().contains("has space"));
        assert!(e.to_string().contains("--auth-token"), "{e}");
        let e = parse(&["--auth-token=also bad"]).unwrap_err();
        assert!(!e.to_string().contains("also bad"), "{e}");
    }

    #[test]
    fn out_of_range_and_unknown_words_name_flag_value_and_what_was_expected() {
        let e = parse(&["--max-header-bytes", "255"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"255\" for --max-header-bytes: expected an integer in 256..=1048576"
        );
        let e = parse(&["--max-connections=1000001"]).unwrap_err();
        assert!(
            e.to_string().contains("\"1000001\" for --max-connections"),
            "{e}"
        );
        let e = parse(&["--io-model", "Reactor"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value \"Reactor\" for --io-model: expected one of reactor, threadpool, blocking"
        );
        let e = parse(&["--shutdown-timeout", "86401"]).unwrap_err();
        assert!(e.to_string().contains("0..=86400"), "{e}");
        let e = parse(&["--header-timeout", "1e3"]).unwrap_err();
        assert!(e.to_string().contains("--header-timeout"), "{e}");
        // The bounds themselves are accepted.
        let c = parse(&[
            "--backlog",
            "65535",
            "--shutdown-timeout",
            "0",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!((c.backlog, c.workers), (65535, 1));
        assert_eq!(c.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn unknown_flag_is_a_usage_error_on_one_line() {
        let e = parse(&["--bogus"]).unwrap_err();
        assert!(matches!(e, ConfigError::Usage(_)));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn help_lists_env_vars_and_defaults() {
        let out = match Config::from_args(["metricstream", "--help"]).unwrap() {
            Startup::Print(s) => s,
            Startup::Run(_) => panic!("help expected"),
        };
        assert!(out.contains("METRICSTREAM_BACKLOG"));
        assert!(out.contains("[default: 1024]"));
        assert!(out.contains("--max-body-bytes"));
    }
}
