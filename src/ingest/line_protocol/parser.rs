//! The line protocol parser proper: this file owns [`parse`], the reusable [`Parser`] and the
//! [`Point`]s it hands out, the loop over the lines of a body (blank lines, comments, line
//! numbers) and the grammar of one point: measurement, tags, fields, timestamp. Scanning,
//! values, duplicate keys and error messages are delegated to the sibling files. It must
//! never allocate per line or per field (points borrow the body and the parser's scratch
//! vectors) and never panic, whatever the bytes.

use super::MAX_KEY_LENGTH;
use super::duplicates::{check_tags, dedup_fields};
use super::error::{Fail, Failure, ParseError, fail, make_error};
use super::scan::{
    STOP_KEY, STOP_MEASUREMENT, STOP_VALUE, cr_ends_line, extend_over_inner_cr, find_class,
    is_line_end, is_value_end, skip_whitespace, token_end,
};
use super::timestamp::{Precision, parse_timestamp};
use super::value::{FieldValue, find_closing_quote, parse_bool, parse_number};

/// One parsed point, borrowed from the body and from the parser's scratch vectors.
#[derive(Clone, Copy, Debug)]
pub struct Point<'s, 'a> {
    /// Escaped, exactly as in the body.
    pub measurement: &'a [u8],
    /// (escaped key, escaped value) in line order; keys unique (checked).
    pub tags: &'s [(&'a [u8], &'a [u8])],
    /// Escaped key; keys unique: a repeated key kept its LAST value (at the place of its
    /// first occurrence).
    pub fields: &'s [(&'a [u8], FieldValue<'a>)],
    /// Scaled by precision, or the default when the line had none.
    pub timestamp_ns: i64,
    /// 1-based line number where the point starts.
    pub line: usize,
}

/// Parses every line of `body`, calling `on_point` for each point in order. Stops at the first
/// invalid line and returns its error (callers discard the whole body then: writes are
/// all-or-nothing). Returns the number of points on success. Never panics, whatever the bytes.
///
/// Allocates scratch space on each call; hot paths keep a [`Parser`] instead.
pub fn parse<'a>(
    body: &'a [u8],
    precision: Precision,
    default_timestamp_ns: i64,
    on_point: impl FnMut(&Point<'_, 'a>),
) -> Result<usize, ParseError> {
    Parser::new().parse(body, precision, default_timestamp_ns, on_point)
}

/// A line protocol parser whose scratch vectors survive between calls, so a steady-state
/// parse allocates nothing.
#[derive(Debug, Default)]
pub struct Parser {
    // Stored with 'static lifetimes only while empty between calls; `recycle` turns them back
    // into vectors of the body's lifetime without giving up their allocation.
    tags: Vec<(&'static [u8], &'static [u8])>,
    fields: Vec<(&'static [u8], FieldValue<'static>)>,
    // Index scratch for the sort-based duplicate checks of lines with many tags or fields.
    order: Vec<u32>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Same contract as [`parse`].
    pub fn parse<'a>(
        &mut self,
        body: &'a [u8],
        precision: Precision,
        default_timestamp_ns: i64,
        mut on_point: impl FnMut(&Point<'_, 'a>),
    ) -> Result<usize, ParseError> {
        let mut tags = recycle(std::mem::take(&mut self.tags));
        let mut fields = recycle(std::mem::take(&mut self.fields));
        let result = parse_body(
            body,
            precision.nanos_per_unit(),
            default_timestamp_ns,
            &mut tags,
            &mut fields,
            &mut self.order,
            &mut on_point,
        );
        self.tags = recycle(tags);
        self.fields = recycle(fields);
        result
    }

    #[cfg(test)]
    pub(super) fn scratch_capacity(&self) -> (usize, usize) {
        (self.tags.capacity(), self.fields.capacity())
    }
}

/// Re-types an emptied vector to another lifetime of the same element type. The standard
/// library collects `into_iter()` back into the source allocation when the layouts match (and
/// they do: only lifetimes differ), which is what keeps `Parser` allocation-free in steady state
/// without `unsafe`. A test pins that the capacity survives.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

type Tags<'a> = Vec<(&'a [u8], &'a [u8])>;
type Fields<'a> = Vec<(&'a [u8], FieldValue<'a>)>;

fn parse_body<'a>(
    body: &'a [u8],
    nanos_per_unit: i64,
    default_timestamp_ns: i64,
    tags: &mut Tags<'a>,
    fields: &mut Fields<'a>,
    order: &mut Vec<u32>,
    on_point: &mut impl FnMut(&Point<'_, 'a>),
) -> Result<usize, ParseError> {
    let n = body.len();
    let mut pos = 0;
    let mut line = 1;
    let mut count = 0;
    while pos < n {
        // InfluxDB skips spaces, tabs and NULs before the measurement (skipWhitespace).
        let start = skip_whitespace(body, pos);
        match body.get(start) {
            None => break,
            Some(b'\n') => {
                line += 1;
                pos = start + 1;
                continue;
            }
            Some(b'\r') if cr_ends_line(body, start) => {
                pos = start + 1;
                continue;
            }
            Some(b'#') => {
                // A comment runs to the next newline, quotes or not.
                match memchr::memchr(b'\n', &body[start..]) {
                    Some(p) => {
                        pos = start + p + 1;
                        line += 1;
                    }
                    None => pos = n,
                }
                continue;
            }
            Some(_) => {}
        }
        tags.clear();
        fields.clear();
        match parse_point(body, start, nanos_per_unit, tags, fields, order) {
            Ok(done) => {
                let point = Point {
                    measurement: done.measurement,
                    tags,
                    fields,
                    timestamp_ns: done.timestamp_ns.unwrap_or(default_timestamp_ns),
                    line,
                };
                on_point(&point);
                count += 1;
                line += done.newlines;
                // `end` is at the line break (handled by the next turn) or at the end.
                pos = done.end;
            }
            Err(failure) => return Err(make_error(body, start, line, &failure)),
        }
    }
    tags.clear();
    fields.clear();
    Ok(count)
}

struct Parsed<'a> {
    measurement: &'a [u8],
    timestamp_ns: Option<i64>,
    /// Offset of the line break that ends the point, or `body.len()`.
    end: usize,
    /// Raw newlines inside quoted strings of this point.
    newlines: usize,
}

#[inline(always)]
fn parse_point<'a>(
    b: &'a [u8],
    start: usize,
    nanos_per_unit: i64,
    tags: &mut Tags<'a>,
    fields: &mut Fields<'a>,
    order: &mut Vec<u32>,
) -> Result<Parsed<'a>, Failure<'a>> {
    let n = b.len();

    // Measurement. The caller skipped leading whitespace, so the first byte is not a space.
    if b.get(start) == Some(&b',') {
        return Err(fail(start, Fail::MissingMeasurement));
    }
    let m_end = token_end(b, start, STOP_MEASUREMENT);
    let measurement = &b[start..m_end];
    let mut i = m_end;
    if b.get(i) == Some(&b',') {
        // Tags.
        loop {
            let k_start = i + 1;
            let k_end = token_end(b, k_start, STOP_KEY);
            if k_end == k_start {
                return Err(fail(k_end, Fail::MissingTagKey));
            }
            let key = &b[k_start..k_end];
            if b.get(k_end) != Some(&b'=') {
                return Err(fail(k_end, Fail::TagKeyWithoutEquals(key)));
            }
            let v_start = k_end + 1;
            let v_end = token_end(b, v_start, STOP_KEY);
            let value = &b[v_start..v_end];
            match b.get(v_end) {
                // InfluxDB: "invalid tag format" for an unescaped '=' in a tag value.
                Some(b'=') => {
                    // Quote the whole would-be value, not just the part before the '='.
                    let mut end = v_end;
                    while b.get(end) == Some(&b'=') {
                        end = token_end(b, end + 1, STOP_KEY);
                    }
                    return Err(fail(end, Fail::InvalidTagFormat(&b[v_start..end])));
                }
                _ if v_end == v_start => return Err(fail(v_end, Fail::MissingTagValue(key))),
                _ => {}
            }
            tags.push((key, value));
            i = v_end;
            match b.get(i) {
                Some(b',') => continue,
                Some(b' ') => break,
                _ => return Err(fail(i, Fail::MissingFields)),
            }
        }
        check_tags(tags, order).map_err(|key| fail(i, Fail::DuplicateTag(key)))?;
    } else if b.get(i) != Some(&b' ') {
        return Err(fail(i, Fail::MissingFields));
    }
    let key_len = i - start;
    if key_len > MAX_KEY_LENGTH {
        return Err(fail(i, Fail::KeyTooLong(key_len)));
    }

    // Fields. InfluxDB's scanFields skips whitespace (spaces, tabs, NULs) first; `i` is at
    // the separating space.
    i = skip_whitespace(b, i + 1);
    if is_line_end(b, i) {
        return Err(fail(i, Fail::MissingFields));
    }
    let mut newlines = 0;
    loop {
        let k_start = i;
        let k_end = token_end(b, k_start, STOP_KEY);
        if k_end == k_start {
            return Err(fail(k_end, Fail::MissingFieldKey));
        }
        let key = &b[k_start..k_end];
        if b.get(k_end) != Some(&b'=') {
            return Err(fail(k_end, Fail::FieldWithoutEquals(key)));
        }
        if key_len + 4 + key.len() > MAX_KEY_LENGTH {
            return Err(fail(k_end, Fail::KeyTooLong(key_len + 4 + key.len())));
        }
        let v_start = k_end + 1;
        let (value, v_end) = match b.get(v_start) {
            Some(b'"') => {
                let (close, lines) = find_closing_quote(b, v_start + 1)
                    .ok_or_else(|| fail(n, Fail::UnbalancedQuotes(key)))?;
                newlines += lines;
                if !is_value_end(b, close + 1) {
                    return Err(fail(close + 1, Fail::TextAfterString(key)));
                }
                (FieldValue::Str(&b[v_start + 1..close]), close + 1)
            }
            Some(b'0'..=b'9' | b'-' | b'.') => parse_number(b, v_start, key)?,
            Some(b't' | b'T' | b'f' | b'F') => parse_bool(b, v_start, key)?,
            _ if is_value_end(b, v_start) => {
                return Err(fail(v_start, Fail::MissingFieldValue(key)));
            }
            _ => {
                let v_end = extend_over_inner_cr(b, find_class(b, v_start, STOP_VALUE));
                return Err(fail(v_end, Fail::InvalidValue(key, &b[v_start..v_end])));
            }
        };
        fields.push((key, value));
        i = v_end;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            // Line end: no timestamp.
            _ => {
                dedup_fields(fields, order);
                return Ok(Parsed {
                    measurement,
                    timestamp_ns: None,
                    end: i,
                    newlines,
                });
            }
        }
    }
    dedup_fields(fields, order);

    // Timestamp (`i` is at the separating space).
    let (timestamp_ns, end) = parse_timestamp(b, i, nanos_per_unit)?;
    Ok(Parsed {
        measurement,
        timestamp_ns,
        end,
        newlines,
    })
}
