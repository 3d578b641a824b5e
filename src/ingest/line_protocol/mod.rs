//! InfluxDB line protocol parsing: this module owns the step from a write body (bytes) to
//! points, or to the first invalid line as a [`ParseError`] carrying its 1-based line number.
//!
//! It is the hot path of ingestion, so it must never allocate per field (nor per line):
//! points borrow the body and the scratch vectors of a reused [`Parser`], names stay escaped
//! (unescape with [`unescape_measurement`], [`unescape_key`], [`unescape_string`] only where
//! needed), and numbers and timestamps are parsed in place. It is pure: no I/O, no clocks,
//! no threads, no `unsafe`, and it never panics whatever the bytes.
//!
//! InfluxDB 1.x `models/points.go` is the reference. Where we knowingly differ (each pinned by
//! a test in `tests.rs`):
//! - a `\r` right before a line break (or the end of the body) is dropped, so CRLF bodies work;
//! - a newline outside a quoted string always ends the line, even after a backslash;
//! - a `#` comment ends at its newline even if it contains quotes;
//! - a tag value starting with `=` is rejected like any other unescaped `=` in a tag value;
//! - text after the closing quote of a string value is an error;
//! - a point without a timestamp gets the caller's default as given (InfluxDB truncates the
//!   server time to the precision; the caller can do that before calling);
//! - unsigned integers (`1u`) are always accepted.
//!
//! One job per file, in the order a line is read:
//! - `parser.rs`: [`parse`], [`Parser`] and [`Point`]: the body loop and the point grammar
//!   (measurement, tags, fields, timestamp), calling the files below;
//! - `scan.rs`: byte classes and word-at-a-time (SWAR) scanning: where names, values, lines
//!   and runs of digits end;
//! - `value.rs`: [`FieldValue`] and the value syntaxes: integers, unsigned, floats (as Go's
//!   `ParseFloat`), booleans, quoted strings;
//! - `timestamp.rs`: [`Precision`] and the timestamp at the end of a line;
//! - `duplicates.rs`: repeated tag keys (an error) and field keys (the last value wins);
//! - `error.rs`: [`ParseError`] and its messages, built only on the failure path;
//! - `escape.rs`: the `unescape_*` functions for callers, and [`write_line`], the serialiser.

mod duplicates;
mod error;
mod escape;
mod parser;
mod scan;
mod timestamp;
mod value;

#[cfg(test)]
mod tests;

pub use error::ParseError;
pub use escape::{
    OwnedFieldValue, unescape_key, unescape_measurement, unescape_string, write_line,
};
pub use parser::{Parser, Point, parse};
pub use timestamp::Precision;
pub use value::FieldValue;

// InfluxDB's limits: checked by the parser, quoted by the error messages.

/// InfluxDB's limit on the series key (measurement + tags, escaped), and on that key plus
/// the 4-byte field separator plus the field key.
const MAX_KEY_LENGTH: usize = 65535;
/// InfluxDB reserves the lowest two and the highest nanosecond values as sentinels.
const MIN_NANO_TIME: i64 = i64::MIN + 2;
const MAX_NANO_TIME: i64 = i64::MAX - 1;
