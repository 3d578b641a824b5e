//! Field values: this file owns [`FieldValue`] and the parsing of the value after a field's
//! `=`: integers (`-?[0-9]+i`, within i64), unsigned (`[0-9]+u`, within u64), floats with Go
//! `ParseFloat`'s result (an exact fast path, std's correctly rounded parser otherwise),
//! booleans, and the extent of a quoted string (left escaped). It must never allocate on the
//! success path: numbers are parsed in place and strings borrow the body.

use super::error::{Fail, Failure, fail};
use super::scan::{STOP_VALUE, extend_over_inner_cr, find_class, is_value_end, scan_digits};

/// A field value as it appears in the body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    /// The raw bytes between the double quotes, still escaped (use `unescape_string`).
    Str(&'a [u8]),
}

/// Offset of the `"` closing a string whose contents start at `from`, and the number of raw
/// newlines inside. Inside strings a backslash pairs with the byte after it (so `\"` and `\\`
/// never end the string), as in InfluxDB's scanFields.
#[inline]
pub(super) fn find_closing_quote(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut j = from;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[k] == b'\\' {
            j = k + 2;
        } else {
            let inner = &b[from..k];
            let lines = match memchr::memchr(b'\n', inner) {
                Some(_) => memchr::memchr_iter(b'\n', inner).count(),
                None => 0,
            };
            return Some((k, lines));
        }
    }
}

pub(super) fn parse_bool<'a>(
    b: &'a [u8],
    v_start: usize,
    key: &'a [u8],
) -> Result<(FieldValue<'a>, usize), Failure<'a>> {
    let v_end = find_class(b, v_start, STOP_VALUE);
    let v_end = extend_over_inner_cr(b, v_end);
    let value = match &b[v_start..v_end] {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => true,
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => false,
        other => return Err(fail(v_end, Fail::InvalidBoolean(key, other))),
    };
    Ok((FieldValue::Bool(value), v_end))
}

/// Exact powers of ten: with a mantissa below 2^53 a single multiply or divide by one of
/// these is correctly rounded (Clinger's fast path).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses `-?[0-9]+i`, `[0-9]+u` or a float in the syntax InfluxDB's scanNumber lets through
/// to Go's ParseFloat: `-?(D+|D+.D*|D*.D+)([eE][+-]?D+)?`; no `+`, NaN or Inf.
#[inline(always)]
pub(super) fn parse_number<'a>(
    b: &'a [u8],
    v_start: usize,
    key: &'a [u8],
) -> Result<(FieldValue<'a>, usize), Failure<'a>> {
    let invalid = |at: usize| invalid_number(b, v_start, at, key);
    let mut i = v_start;
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let int_start = i;
    let (int_end, int_value) = scan_digits(b, i, 0);
    i = int_end;
    let int_len = int_end - int_start;

    if let Some(&suffix @ (b'i' | b'u')) = b.get(i) {
        let end = i + 1;
        if int_len == 0 || !is_value_end(b, end) {
            return Err(invalid(end));
        }
        let text = &b[v_start..end];
        let magnitude = if int_len <= 19 {
            Some(int_value)
        } else {
            digits_to_u64(&b[int_start..int_end])
        };
        let value = if suffix == b'i' {
            match magnitude.and_then(|m| apply_sign(m, negative)) {
                Some(v) => FieldValue::Int(v),
                None => return Err(fail(end, Fail::IntOutOfRange(key, text))),
            }
        } else if negative {
            return Err(fail(end, Fail::NegativeUInt(key, text)));
        } else {
            match magnitude {
                Some(v) => FieldValue::UInt(v),
                None => return Err(fail(end, Fail::UIntOutOfRange(key, text))),
            }
        };
        return Ok((value, end));
    }

    // Float: the digits before and after the '.' form one mantissa.
    let mut mantissa = int_value;
    let mut frac_len = 0;
    if b.get(i) == Some(&b'.') {
        let (frac_end, value) = scan_digits(b, i + 1, int_value);
        frac_len = frac_end - (i + 1);
        mantissa = value;
        i = frac_end;
    }
    if int_len + frac_len == 0 {
        return Err(invalid(i));
    }
    let mut exponent: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_start = i;
        while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            // Saturate: anything this large is decided by the slow path anyway.
            exponent = (exponent * 10 + i64::from(d - b'0')).min(1_000_000);
            i += 1;
        }
        if i == exp_start {
            return Err(invalid(i));
        }
        if exp_negative {
            exponent = -exponent;
        }
    }
    if !is_value_end(b, i) {
        return Err(invalid(i));
    }
    let text = &b[v_start..i];

    // With at most 19 digits the mantissa is exact (leading zeros count, harmlessly, towards
    // the 19; longer inputs take the slow path).
    let value = if int_len + frac_len > 19 {
        None
    } else if mantissa == 0 {
        // All digits are zero, whatever the exponent.
        Some(0.0)
    } else if mantissa <= (1 << 53) {
        let e10 = exponent - frac_len as i64;
        if (0..=22).contains(&e10) {
            Some(mantissa as f64 * POW10[e10 as usize])
        } else if (-22..0).contains(&e10) {
            Some(mantissa as f64 / POW10[(-e10) as usize])
        } else {
            None
        }
    } else {
        None
    };
    let value = match value {
        Some(v) => Some(if negative { -v } else { v }),
        // Slow path: std's correctly rounded parser on the validated ASCII slice.
        None => std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse::<f64>().ok()),
    };
    match value {
        Some(v) if v.is_finite() => Ok((FieldValue::Float(v), i)),
        _ => Err(fail(i, Fail::FloatOutOfRange(key, text))),
    }
}

#[cold]
#[inline(never)]
fn invalid_number<'a>(b: &'a [u8], v_start: usize, at: usize, key: &'a [u8]) -> Failure<'a> {
    let end = extend_over_inner_cr(b, find_class(b, at, STOP_VALUE));
    Failure {
        at: end,
        what: Fail::InvalidNumber(key, &b[v_start..end.max(v_start)]),
    }
}

/// Decimal digits to u64, or None on overflow: the checked path for inputs longer than the 19
/// digits `scan_digits` can fold exactly.
pub(super) fn digits_to_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

#[inline(always)]
pub(super) fn apply_sign(magnitude: u64, negative: bool) -> Option<i64> {
    if negative {
        if magnitude <= 1 << 63 {
            Some((magnitude as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}
