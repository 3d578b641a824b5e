//! The read side: what `GET /metrics` and `GET /series` make of the aggregates.
//!
//! `names.rs` holds the naming rules (Prometheus family and label names from measurements,
//! fields and tag keys) that every exporter of series shares; `exposition.rs` renders the
//! Prometheus text format; `series.rs` parses `/series` filters and renders its JSON. All of
//! it is pure: a store (or a view of one) in, bytes out.

pub mod exposition;
pub mod names;
pub mod series;
