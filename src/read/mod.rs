//! The read side: what `GET /metrics` and `GET /series` make of the aggregates.
//!
//! `exposition.rs` renders the Prometheus text format, naming series by the rules in
//! `crate::names` (shared with the aggregator, which counts label collisions, and with
//! every exporter that must name series as `/metrics` does); `series.rs` parses `/series` filters and renders its JSON. Those
//! are pure: a store (or a view of one) in, bytes out. `scrape.rs` is the streamed body of
//! a `/metrics` answer: the exposition rendered a part at a time through a registered read
//! of the pipeline's store, gzip-encoded or not.

pub mod exposition;
pub mod scrape;
pub mod series;
