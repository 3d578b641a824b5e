//! The forward sender: one blocking HTTP client (connection pool, TLS) that POSTs a
//! request body to a [`Target`] with the headers its format needs, and classifies the
//! answer as [`Outcome::Success`], [`Outcome::Retry`] or [`Outcome::Reject`].
//!
//! It blocks for up to [`FORWARD_REQUEST_TIMEOUT`] per call, so it belongs on forwarder
//! threads and must never be called from the reactor or a worker. `https` trusts the
//! built-in webpki roots plus the PEM certificates of `--forward-ca-file`. No error it
//! returns quotes the target URL or its credentials (a URL's query may hold a password):
//! callers name the target by [`Target::redacted`].

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Format;
use super::retry::parse_retry_after;
use super::target::Target;
use crate::tuning::{FORWARD_CONNECT_TIMEOUT, FORWARD_ERROR_BODY_MAX, FORWARD_REQUEST_TIMEOUT};

/// `User-Agent` of every forward request.
pub const USER_AGENT: &str = concat!("metricstream/", env!("CARGO_PKG_VERSION"));

/// The remote_write protocol version header value of remote_write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// The HTTP client's log target. It logs each request's full URL at `debug`, and a URL's
/// query may hold a password (`p=`), so the binary caps this target at `info` whatever
/// `RUST_LOG` says; the forwarder logs each batch itself, by the redacted URL.
pub const CLIENT_LOG_TARGET: &str = "ureq";

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `2xx`: the receiver has the batch; advance the cursor.
    Success { status: u16 },
    /// Network error, timeout, `5xx`, `429` (or an unexpected `1xx`/`3xx`): send the same
    /// batch again after a backoff that is at least `retry_after` when the receiver gave one.
    Retry {
        /// Status, or 0 for a network error or timeout.
        status: u16,
        /// What went wrong, for `/stats` `last_error` and the log (no URL, no secret).
        error: String,
        retry_after: Option<Duration>,
    },
    /// Any other `4xx`: the receiver will never take this batch; drop it (counted,
    /// reason `rejected`) and log `body` (truncated to [`FORWARD_ERROR_BODY_MAX`] bytes).
    Reject { status: u16, body: String },
}

/// Why the client could not be built (`--forward-ca-file` unreadable or without a
/// certificate); names the file.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// A blocking sender shared by the forwarders of one process (cheap to clone: the
/// connection pool is shared).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// A client trusting the built-in roots and the certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, ClientError> {
        let tls = tls_config(ca_file)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(FORWARD_CONNECT_TIMEOUT)
            .timeout(FORWARD_REQUEST_TIMEOUT)
            // A redirect is a configuration mistake to surface, not a hop to take with
            // the body (and the credentials) to another host.
            .redirects(0)
            .user_agent(USER_AGENT)
            .build();
        Ok(Client { agent })
    }

    /// POSTs `body` (an encoder's [`Request::body`](super::Request)) to `target`.
    pub fn send(&self, target: &Target, body: &[u8]) -> Outcome {
        let mut request = self.agent.post(target.request_url());
        request = match target.format() {
            Format::RemoteWrite => request
                .set("Content-Type", "application/x-protobuf")
                .set("Content-Encoding", "snappy")
                .set("X-Prometheus-Remote-Write-Version", REMOTE_WRITE_VERSION),
            Format::LineProtocol => request
                .set("Content-Type", "text/plain")
                .set("Content-Encoding", "gzip"),
        };
        if let Some(auth) = target.authorization() {
            request = request.set("Authorization", auth);
        }
        match request.send_bytes(body) {
            Ok(response) => classify(response),
            Err(ureq::Error::Status(_, response)) => classify(response),
            Err(ureq::Error::Transport(t)) => Outcome::Retry {
                status: 0,
                error: transport_error(&t),
                retry_after: None,
            },
        }
    }
}

/// A network error described by its kind, message and cause, never by its URL.
fn transport_error(t: &ureq::Transport) -> String {
    let mut text = t.kind().to_string();
    if let Some(m) = t.message() {
        text.push_str(": ");
        text.push_str(m);
    }
    if let Some(source) = std::error::Error::source(t) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

/// Sorts a response into an [`Outcome`], reading (a bounded part of) its body so the
/// connection can be reused.
fn classify(response: ureq::Response) -> Outcome {
    let status = response.status();
    let retry_after = response
        .header("Retry-After")
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = read_body(response);
    match status {
        200..=299 => Outcome::Success { status },
        429 | 500..=599 => Outcome::Retry {
            status,
            error: format!("HTTP {status}: {body}"),
            retry_after,
        },
        400..=499 => Outcome::Reject { status, body },
        _ => Outcome::Retry {
            status,
            error: format!("unexpected HTTP {status}: {body}"),
            retry_after,
        },
    }
}

/// The first [`FORWARD_ERROR_BODY_MAX`] bytes of a body as one line of text (`…` when cut);
/// the rest is drained, up to a bound, so a short answer's connection returns to the pool.
fn read_body(response: ureq::Response) -> String {
    let mut reader = response.into_reader().take(1 << 20);
    let mut head = Vec::with_capacity(256);
    let _ = (&mut reader)
        .take(FORWARD_ERROR_BODY_MAX as u64 + 1)
        .read_to_end(&mut head);
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    let cut = head.len() > FORWARD_ERROR_BODY_MAX;
    head.truncate(FORWARD_ERROR_BODY_MAX);
    let mut text: String = String::from_utf8_lossy(&head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    if cut {
        text.push('…');
    }
    text
}

/// Built-in webpki roots plus every certificate of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| ClientError(format!("--forward-ca-file {shown}: {e}")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ClientError(format!("--forward-ca-file {shown}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError(format!("--forward-ca-file {shown}: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError(format!(
                "--forward-ca-file {shown}: no PEM certificate in the file"
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = Client::new(Some(&missing))
            .err()
            .expect("missing file refused");
        assert!(e.0.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = Client::new(Some(&empty))
            .err()
            .expect("no certificate refused");
        assert!(e.0.contains("no PEM certificate"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(Client::new(Some(&broken)).is_err());
    }

    #[test]
    fn system_bundle_loads_as_extra_roots() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if !bundle.exists() {
            eprintln!("skipped: no {} on this machine", bundle.display());
            return;
        }
        assert!(Client::new(Some(bundle)).is_ok());
        assert!(Client::new(None).is_ok());
    }

    #[test]
    fn client_debug_lines_stay_off_under_rust_log_debug() {
        // What main.rs does: RUST_LOG first, then the cap on the client's target.
        let logger = env_logger::Builder::new()
            .parse_filters("debug")
            .filter_module(CLIENT_LOG_TARGET, log::LevelFilter::Info)
            .build();
        let at = |target: &str, level| {
            log::Log::enabled(
                &logger,
                &log::Metadata::builder().target(target).level(level).build(),
            )
        };
        assert!(!at("ureq::unit", log::Level::Debug));
        assert!(at("ureq::unit", log::Level::Warn));
        assert!(at("metricstream::forward", log::Level::Debug));
    }

    #[test]
    fn user_agent_names_the_version() {
        assert_eq!(
            USER_AGENT,
            format!("metricstream/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
