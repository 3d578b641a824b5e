//! Configuration: command-line flags and `METRICSTREAM_*` environment variables -> [`Config`].
//!
//! Every option is a flag and an environment variable; the flag wins (clap's `env` gives
//! that). Values arrive as strings and are validated here rather than by clap's typed
//! parsers so that an error names what the user actually set — the flag *or* the variable —
//! with the bad value, on one line, and start-up stops with exit code 2. Nothing is ever
//! silently replaced by a default.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// Which I/O architecture serves connections. `Reactor` is the product; the other two exist
/// so benchmark comparisons run the same request handling under a different I/O core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub backlog: u32,
    pub workers: usize,
    pub io_model: IoModel,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub queue_capacity: usize,
    pub max_series: usize,
    pub shutdown_timeout: Duration,
    pub auth_token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backlog: 1024,
            workers: default_workers(),
            io_model: IoModel::Reactor,
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 25 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            queue_capacity: 1_000_000,
            max_series: 1_000_000,
            shutdown_timeout: Duration::from_secs(30),
            auth_token: None,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 1024)
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

/// Outcome of reading the command line: run with a config, or print something and exit.
pub enum Startup {
    Run(Config),
    /// `--help` / `--version`: print to stdout and exit 0.
    Print(String),
}

/// Raw strings as clap collects them (flag wins over env). Defaults are strings so that
/// `--help` shows them and so that every value goes through the same validation.
#[derive(Parser, Debug)]
#[command(
    name = "metricstream",
    version,
    allow_negative_numbers = true,
    about = "High-concurrency metrics ingestion server: InfluxDB line protocol over HTTP/1.1 in, Prometheus and JSON out.",
    after_help = "Every option can also be set with the environment variable shown; the flag wins.\nLogging is controlled by RUST_LOG (default: info)."
)]
struct RawArgs {
    /// Socket address to listen on, IPv4 or IPv6 ([::1]:8080); port 0 picks a free port
    #[arg(
        long,
        env = "METRICSTREAM_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: String,
    /// listen(2) backlog, 1..=65535 (capped by /proc/sys/net/core/somaxconn)
    #[arg(
        long,
        env = "METRICSTREAM_BACKLOG",
        default_value = "1024",
        value_name = "N"
    )]
    backlog: String,
    /// Worker pool threads, 1..=1024 [default: available cores]
    #[arg(long, env = "METRICSTREAM_WORKERS", value_name = "N")]
    workers: Option<String>,
    /// I/O model: reactor (the product), threadpool or blocking (for benchmark comparisons)
    #[arg(
        long = "io-model",
        env = "METRICSTREAM_IO_MODEL",
        default_value = "reactor",
        value_name = "M"
    )]
    io_model: String,
    /// Open client connections at once; past it new connections get 503 and are closed
    #[arg(
        long = "max-connections",
        env = "METRICSTREAM_MAX_CONNECTIONS",
        default_value = "10000",
        value_name = "N"
    )]
    max_connections: String,
    /// Bytes of request line + headers; past it 431 and close
    #[arg(
        long = "max-header-bytes",
        env = "METRICSTREAM_MAX_HEADER_BYTES",
        default_value = "16384",
        value_name = "N"
    )]
    max_header_bytes: String,
    /// Bytes of request body after decoding chunks (and gzip); past it 413 and close
    #[arg(
        long = "max-body-bytes",
        env = "METRICSTREAM_MAX_BODY_BYTES",
        default_value = "26214400",
        value_name = "N"
    )]
    max_body_bytes: String,
    /// Seconds to receive a complete request head once its first byte arrived; then 408
    #[arg(
        long = "header-timeout",
        env = "METRICSTREAM_HEADER_TIMEOUT",
        default_value = "10",
        value_name = "SECS"
    )]
    header_timeout: String,
    /// Seconds allowed between body bytes; then 408
    #[arg(
        long = "body-timeout",
        env = "METRICSTREAM_BODY_TIMEOUT",
        default_value = "30",
        value_name = "SECS"
    )]
    body_timeout: String,
    /// Seconds a keep-alive connection may sit with no request in progress; then closed
    #[arg(
        long = "idle-timeout",
        env = "METRICSTREAM_IDLE_TIMEOUT",
        default_value = "75",
        value_name = "SECS"
    )]
    idle_timeout: String,
    /// Points waiting between ingestion and aggregation; a write that does not fit gets 503
    #[arg(
        long = "queue-capacity",
        env = "METRICSTREAM_QUEUE_CAPACITY",
        default_value = "1000000",
        value_name = "N"
    )]
    queue_capacity: String,
    /// Distinct series held; points of new series past it are dropped and counted
    #[arg(
        long = "max-series",
        env = "METRICSTREAM_MAX_SERIES",
        default_value = "1000000",
        value_name = "N"
    )]
    max_series: String,
    /// Seconds allowed on SIGTERM/SIGINT to finish requests and drain the queue
    #[arg(
        long = "shutdown-timeout",
        env = "METRICSTREAM_SHUTDOWN_TIMEOUT",
        default_value = "30",
        value_name = "SECS"
    )]
    shutdown_timeout: String,
    /// Token required on every endpoint but /ping and /health [default: unset, open]
    #[arg(
        long = "auth-token",
        env = "METRICSTREAM_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    auth_token: Option<String>,
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
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = match RawArgs::command().try_get_matches_from(args) {
            Ok(m) => m,
            Err(e) => {
                use clap::error::ErrorKind;
                return match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        Ok(Startup::Print(e.render().to_string()))
                    }
                    _ => Err(ConfigError::Usage(first_line(&e.render().to_string()))),
                };
            }
        };
        let raw = RawArgs::from_arg_matches(&matches)
            .map_err(|e| ConfigError::Usage(first_line(&e.render().to_string())))?;
        validate(&raw, &matches).map(Startup::Run)
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command line")
        .trim()
        .to_string()
}

/// Names the place a value came from, so the error points at what the user typed.
fn origin(matches: &ArgMatches, id: &str, flag: &str, env: &str) -> String {
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => env.to_string(),
        _ => flag.to_string(),
    }
}

struct Checker<'m> {
    matches: &'m ArgMatches,
}

impl Checker<'_> {
    fn fail(&self, id: &str, flag: &str, env: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: origin(self.matches, id, flag, env),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn int(
        &self,
        id: &str,
        flag: &str,
        env: &str,
        value: &str,
        lo: u64,
        hi: u64,
    ) -> Result<u64, ConfigError> {
        match value.trim().parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(self.fail(
                id,
                flag,
                env,
                value,
                &format!("an integer in {}..={}", lo, hi),
            )),
        }
    }

    /// Seconds, integer or decimal (`0.5`), within `lo..=hi`.
    fn secs(
        &self,
        id: &str,
        flag: &str,
        env: &str,
        value: &str,
        lo: f64,
        hi: f64,
    ) -> Result<Duration, ConfigError> {
        let t = value.trim();
        let plain = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match t.parse::<f64>() {
            Ok(s) if plain && s.is_finite() && s >= lo && s <= hi => Ok(Duration::from_secs_f64(s)),
            _ => Err(self.fail(
                id,
                flag,
                env,
                value,
                &format!("a number of seconds in {}..={}", lo, hi),
            )),
        }
    }
}

const MAX_TIMEOUT_SECS: f64 = 86_400.0;

fn validate(raw: &RawArgs, matches: &ArgMatches) -> Result<Config, ConfigError> {
    let c = Checker { matches };
    let listen: SocketAddr = raw.listen.trim().parse().map_err(|_| {
        c.fail(
            "listen",
            "--listen",
            "METRICSTREAM_LISTEN",
            &raw.listen,
            "a socket address such as 127.0.0.1:8080 or [::1]:8080",
        )
    })?;
    let backlog = c.int(
        "backlog",
        "--backlog",
        "METRICSTREAM_BACKLOG",
        &raw.backlog,
        1,
        65535,
    )? as u32;
    let workers = match &raw.workers {
        Some(w) => c.int("workers", "--workers", "METRICSTREAM_WORKERS", w, 1, 1024)? as usize,
        None => default_workers(),
    };
    let io_model = match raw.io_model.trim() {
        "reactor" => IoModel::Reactor,
        "threadpool" => IoModel::Threadpool,
        "blocking" => IoModel::Blocking,
        _ => {
            return Err(c.fail(
                "io_model",
                "--io-model",
                "METRICSTREAM_IO_MODEL",
                &raw.io_model,
                "one of reactor, threadpool, blocking",
            ));
        }
    };
    let max_connections = c.int(
        "max_connections",
        "--max-connections",
        "METRICSTREAM_MAX_CONNECTIONS",
        &raw.max_connections,
        1,
        1_000_000,
    )? as usize;
    let max_header_bytes = c.int(
        "max_header_bytes",
        "--max-header-bytes",
        "METRICSTREAM_MAX_HEADER_BYTES",
        &raw.max_header_bytes,
        256,
        1 << 20,
    )? as usize;
    let max_body_bytes = c.int(
        "max_body_bytes",
        "--max-body-bytes",
        "METRICSTREAM_MAX_BODY_BYTES",
        &raw.max_body_bytes,
        1,
        1 << 31,
    )? as usize;
    let header_timeout = c.secs(
        "header_timeout",
        "--header-timeout",
        "METRICSTREAM_HEADER_TIMEOUT",
        &raw.header_timeout,
        0.05,
        MAX_TIMEOUT_SECS,
    )?;
    let body_timeout = c.secs(
        "body_timeout",
        "--body-timeout",
        "METRICSTREAM_BODY_TIMEOUT",
        &raw.body_timeout,
        0.05,
        MAX_TIMEOUT_SECS,
    )?;
    let idle_timeout = c.secs(
        "idle_timeout",
        "--idle-timeout",
        "METRICSTREAM_IDLE_TIMEOUT",
        &raw.idle_timeout,
        0.05,
        MAX_TIMEOUT_SECS,
    )?;
    let queue_capacity = c.int(
        "queue_capacity",
        "--queue-capacity",
        "METRICSTREAM_QUEUE_CAPACITY",
        &raw.queue_capacity,
        1,
        1 << 32,
    )? as usize;
    let max_series = c.int(
        "max_series",
        "--max-series",
        "METRICSTREAM_MAX_SERIES",
        &raw.max_series,
        1,
        1 << 32,
    )? as usize;
    let shutdown_timeout = c.secs(
        "shutdown_timeout",
        "--shutdown-timeout",
        "METRICSTREAM_SHUTDOWN_TIMEOUT",
        &raw.shutdown_timeout,
        0.0,
        MAX_TIMEOUT_SECS,
    )?;
    let auth_token = match &raw.auth_token {
        None => None,
        Some(t) => {
            let ok = !t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b));
            if !ok {
                // Never echo the token itself, even a bad one.
                return Err(ConfigError::Invalid {
                    origin: origin(
                        matches,
                        "auth_token",
                        "--auth-token",
                        "METRICSTREAM_AUTH_TOKEN",
                    ),
                    value: "<hidden>".to_string(),
                    expected: "a non-empty token of printable ASCII without spaces".to_string(),
                });
            }
            Some(t.clone())
        }
    };
    Ok(Config {
        listen,
        backlog,
        workers,
        io_model,
        max_connections,
        max_header_bytes,
        max_body_bytes,
        header_timeout,
        body_timeout,
        idle_timeout,
        queue_capacity,
        max_series,
        shutdown_timeout,
        auth_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["metricstream"];
        v.extend_from_slice(args);
        match Config::from_args(v)? {
            Startup::Run(c) => Ok(c),
            Startup::Print(_) => panic!("unexpected help"),
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        // The environment of the test process may carry METRICSTREAM_* only if a developer
        // set them; the assertions below use flags where that would matter.
        let c = parse(&["--listen", "127.0.0.1:8080"]).unwrap();
        assert_eq!(c.listen.port(), 8080);
        let d = Config::default();
        assert_eq!(d.backlog, 1024);
        assert_eq!(d.max_connections, 10_000);
        assert_eq!(d.max_header_bytes, 16384);
        assert_eq!(d.max_body_bytes, 26_214_400);
        assert_eq!(d.queue_capacity, 1_000_000);
        assert_eq!(d.idle_timeout, Duration::from_secs(75));
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
