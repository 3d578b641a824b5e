//! Timestamps: this file owns [`Precision`], the unit of the timestamps in a write body (the
//! `precision` query parameter of `/write` and `/api/v2/write`), and the parsing of the
//! timestamp at the end of a line, scaled to nanoseconds within InfluxDB's range. It must
//! never read a clock: a point without a timestamp gets the default its caller passes in.

use super::error::{Fail, Failure, fail};
use super::scan::{STOP_VALUE, find_class, is_line_end, scan_digits, skip_whitespace};
use super::value::{apply_sign, digits_to_u64};
use super::{MAX_NANO_TIME, MIN_NANO_TIME};

/// Unit of the timestamps in a write body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
    M,
    H,
}

impl Precision {
    /// v1 `/write` words: "ns" (also the default when absent), "us", "u", "ms", "s", "m", "h".
    /// Anything else -> None.
    ///
    /// Also accepted, because InfluxDB 1.8's v1 handler accepts them: "n" (nanoseconds) and
    /// "" (`?precision=` reads the same as an absent parameter in Go's URL API).
    pub fn from_v1(s: &str) -> Option<Precision> {
        match s {
            "" | "n" | "ns" => Some(Precision::Ns),
            "u" | "us" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            "m" => Some(Precision::M),
            "h" => Some(Precision::H),
            _ => None,
        }
    }

    /// v2 `/api/v2/write` words: "ns", "us", "ms", "s". Anything else -> None.
    ///
    /// "" is also accepted as the default (nanoseconds), like InfluxDB's v2 handler does.
    pub fn from_v2(s: &str) -> Option<Precision> {
        match s {
            "" | "ns" => Some(Precision::Ns),
            "us" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            _ => None,
        }
    }

    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
            Precision::M => 60 * 1_000_000_000,
            Precision::H => 3_600 * 1_000_000_000,
        }
    }
}

/// The optional timestamp that ends a point, with `i` at the space after its fields: the
/// timestamp scaled to nanoseconds (None when the line has none) and the offset of the line
/// break that ends the point (or the end of the body). InfluxDB's scanTime and the trailing
/// check of parsePoint are the reference: an optional `-`, digits, then only spaces.
#[inline(always)]
pub(super) fn parse_timestamp(
    b: &[u8],
    mut i: usize,
    nanos_per_unit: i64,
) -> Result<(Option<i64>, usize), Failure<'_>> {
    i = skip_whitespace(b, i + 1);
    if is_line_end(b, i) {
        return Ok((None, i));
    }
    let t_start = i;
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let d_start = i;
    let (d_end, magnitude) = scan_digits(b, i, 0);
    i = d_end;
    // InfluxDB's scanTime stops only at a space or a line break.
    let t_end = match b.get(i) {
        Some(b' ') => i,
        _ if is_line_end(b, i) => i,
        _ => {
            let t_end = find_class(b, i, STOP_VALUE);
            return Err(fail(t_end, Fail::BadTimestamp(&b[t_start..t_end])));
        }
    };
    let text = &b[t_start..t_end];
    if d_start == t_end {
        return Err(fail(t_end, Fail::BadTimestamp(text)));
    }
    let magnitude = if t_end - d_start <= 19 {
        Some(magnitude)
    } else {
        digits_to_u64(&b[d_start..t_end])
    };
    let units = magnitude
        .and_then(|magnitude| apply_sign(magnitude, negative))
        .ok_or_else(|| fail(t_end, Fail::TimestampOutOfRange(text)))?;
    let timestamp_ns = units
        .checked_mul(nanos_per_unit)
        .filter(|t| (MIN_NANO_TIME..=MAX_NANO_TIME).contains(t))
        .ok_or_else(|| fail(t_end, Fail::TimestampOutOfRange(text)))?;
    // Only spaces may follow the timestamp (parsePoint's trailing check).
    i = t_end;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if !is_line_end(b, i) {
        return Err(fail(i, Fail::TextAfterTimestamp));
    }
    Ok((Some(timestamp_ns), i))
}
