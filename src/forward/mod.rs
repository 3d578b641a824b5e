//! Forwarding: the step from logged points to the stores users already run (SPEC
//! "Forwarding"). Logged points travel: log -> one forwarder per target -> remote_write or
//! line protocol over HTTP.
//!
//! Not wired yet: this module holds the building blocks a forwarder thread puts together,
//! each usable and tested on its own, and must never be called from the reactor or a
//! worker (the client blocks):
//! - `remote_write.rs`: batches -> Prometheus remote_write 1.0 bodies (protobuf + snappy),
//!   series named and labelled exactly as `/metrics` names them (`crate::names`);
//! - `influx.rs`: batches -> line protocol bodies (gzip) with each point's arrival timestamp;
//! - `target.rs`: a forward URL, its basic auth, and a display form without the password;
//! - `client.rs`: one blocking HTTP sender for every target, classifying each answer as
//!   success, retry or reject;
//! - `retry.rs`: the backoff policy (pure, seeded, no sleeping).
//!
//! A forwarder reads `(LSN, Batch)` records from the log, gathers batches until they hold
//! [`tuning::FORWARD_MAX_VALUES`](crate::tuning::FORWARD_MAX_VALUES) field values or a
//! second passed, turns them into [`Request`]s with [`encode`], and sends each with
//! [`client::Client::send`] until it is not [`client::Outcome::Retry`] (sleeping
//! [`retry::Backoff::next_delay`] in between); only then does it persist the last LSN as
//! the target's cursor. docs/forwarding.md has the formats and the retry semantics.

pub mod client;
pub mod influx;
pub mod remote_write;
pub mod retry;
pub mod target;

use crate::ingest::batch::Batch;

/// The wire format a target receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus remote_write 1.0 (`--remote-write-url`).
    RemoteWrite,
    /// InfluxDB line protocol, gzip (`--influx-write-url`).
    LineProtocol,
}

/// One request body, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Compressed body (snappy block for remote_write, gzip for line protocol).
    pub body: Vec<u8>,
    /// Points with at least one value in this request (`points_sent` once it is `2xx`).
    pub points: usize,
    /// Field values in this request (samples for remote_write, field values for line
    /// protocol); at most the limit given to the encoder.
    pub values: usize,
}

/// What an encoder made of some batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The requests, in log order; a forwarder sends them in this order.
    pub requests: Vec<Request>,
    /// Field values not sent because the format cannot carry them (string fields in
    /// remote_write): counted as dropped, reason `unsupported`.
    pub unsupported: u64,
}

/// Encodes `batches` (in log order) for `format`, at most `max_values` field values per
/// request (a point is never split, so a point with more fields than that travels alone).
pub fn encode(format: Format, batches: &[&Batch], max_values: usize) -> Encoded {
    match format {
        Format::RemoteWrite => remote_write::encode(batches, max_values),
        Format::LineProtocol => influx::encode(batches, max_values),
    }
}
