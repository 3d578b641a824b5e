//! The read side: what `GET /metrics` and `GET /series` make of the aggregates.
//!
//! `exposition.rs` renders the Prometheus text format, naming series by the rules in
//! `crate::names` (shared with the aggregator, which counts label collisions, and with
//! every exporter that must name series as `/metrics` does); `series.rs` parses `/series` filters and renders its JSON. All of
//! it is pure: a store (or a view of one) in, bytes out.

pub mod exposition;
pub mod series;
