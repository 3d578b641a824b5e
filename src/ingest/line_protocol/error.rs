//! Parse errors: this file owns [`ParseError`] (the first invalid line of a body, with its
//! 1-based line number and an InfluxDB-style message) and the internal [`Fail`] reasons the
//! parser raises. Everything here runs only on the failure path: the parser carries a cheap
//! [`Failure`] (an offset and borrowed slices), and the message, which quotes the line, is
//! formatted once at the end. It must never be called on the success path, nor allocate before
//! a line has actually failed.

use std::fmt;

use super::{MAX_KEY_LENGTH, MAX_NANO_TIME, MIN_NANO_TIME};

/// The first invalid line of a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number where the bad point starts.
    pub line: usize,
    /// `unable to parse '<line, truncated>': <what is wrong>`.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// What went wrong, with the offending slices of the body for the message.
#[derive(Debug)]
pub(super) enum Fail<'a> {
    MissingMeasurement,
    MissingFields,
    MissingTagKey,
    TagKeyWithoutEquals(&'a [u8]),
    MissingTagValue(&'a [u8]),
    InvalidTagFormat(&'a [u8]),
    DuplicateTag(&'a [u8]),
    MissingFieldKey,
    FieldWithoutEquals(&'a [u8]),
    MissingFieldValue(&'a [u8]),
    UnbalancedQuotes(&'a [u8]),
    TextAfterString(&'a [u8]),
    InvalidNumber(&'a [u8], &'a [u8]),
    IntOutOfRange(&'a [u8], &'a [u8]),
    UIntOutOfRange(&'a [u8], &'a [u8]),
    NegativeUInt(&'a [u8], &'a [u8]),
    FloatOutOfRange(&'a [u8], &'a [u8]),
    InvalidBoolean(&'a [u8], &'a [u8]),
    InvalidValue(&'a [u8], &'a [u8]),
    BadTimestamp(&'a [u8]),
    TimestampOutOfRange(&'a [u8]),
    TextAfterTimestamp,
    KeyTooLong(usize),
}

/// A failure and the byte offset where it was noticed (used to find the end of the line to
/// quote).
pub(super) struct Failure<'a> {
    pub(super) at: usize,
    pub(super) what: Fail<'a>,
}

// Cold so the optimiser lays out every error branch away from the hot path.
#[cold]
#[inline(never)]
pub(super) fn fail(at: usize, what: Fail<'_>) -> Failure<'_> {
    Failure { at, what }
}

/// Bytes of a line quoted in an error message.
const QUOTE_LIMIT: usize = 64;

/// Lossy UTF-8 of at most `QUOTE_LIMIT` bytes of `s` (cut on a character boundary, `...` when
/// cut), with line breaks shown as `\n` / `\r` so the message stays on one line.
pub(super) fn quote(s: &[u8]) -> String {
    let mut cut = s.len().min(QUOTE_LIMIT);
    // Back off over UTF-8 continuation bytes so the last character is not mangled.
    let mut back = 0;
    while cut < s.len() && cut > 0 && back < 3 && (s[cut] & 0xC0) == 0x80 {
        cut -= 1;
        back += 1;
    }
    let mut out = String::with_capacity(cut + 8);
    for c in String::from_utf8_lossy(&s[..cut]).chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    if cut < s.len() {
        out.push_str("...");
    }
    out
}

fn describe(what: &Fail<'_>) -> String {
    match *what {
        Fail::MissingMeasurement => "missing measurement".to_string(),
        Fail::MissingFields => {
            "missing fields (a point needs at least one field=value after the measurement and tags)"
                .to_string()
        }
        Fail::MissingTagKey => "missing tag key".to_string(),
        Fail::TagKeyWithoutEquals(k) => {
            format!("missing tag value: tag key '{}' has no '=value'", quote(k))
        }
        Fail::MissingTagValue(k) => format!("missing tag value for tag key '{}'", quote(k)),
        Fail::InvalidTagFormat(v) => format!(
            "invalid tag format: unescaped '=' in tag value '{}' (write it as '\\=')",
            quote(v)
        ),
        Fail::DuplicateTag(k) => format!("duplicate tags: tag key '{}' appears twice", quote(k)),
        Fail::MissingFieldKey => "missing field key".to_string(),
        Fail::FieldWithoutEquals(k) => {
            format!("invalid field format: field '{}' has no '=value'", quote(k))
        }
        Fail::MissingFieldValue(k) => format!("missing field value for field '{}'", quote(k)),
        Fail::UnbalancedQuotes(k) => format!(
            "unbalanced quotes: the string value of field '{}' has no closing '\"'",
            quote(k)
        ),
        Fail::TextAfterString(k) => format!(
            "invalid string value for field '{}': unexpected text after the closing '\"'",
            quote(k)
        ),
        Fail::InvalidNumber(k, v) => {
            format!("invalid number '{}' for field '{}'", quote(v), quote(k))
        }
        Fail::IntOutOfRange(k, v) => format!(
            "integer '{}' for field '{}' is out of range for a signed 64-bit integer",
            quote(v),
            quote(k)
        ),
        Fail::UIntOutOfRange(k, v) => format!(
            "unsigned integer '{}' for field '{}' is out of range for an unsigned 64-bit integer",
            quote(v),
            quote(k)
        ),
        Fail::NegativeUInt(k, v) => format!(
            "invalid number '{}' for field '{}': an unsigned integer cannot be negative",
            quote(v),
            quote(k)
        ),
        Fail::FloatOutOfRange(k, v) => format!(
            "invalid float '{}' for field '{}': out of range for a 64-bit float",
            quote(v),
            quote(k)
        ),
        Fail::InvalidBoolean(k, v) => format!(
            "invalid boolean '{}' for field '{}' (use t, T, true, True, TRUE, f, F, false, False or FALSE)",
            quote(v),
            quote(k)
        ),
        Fail::InvalidValue(k, v) => format!(
            "invalid value '{}' for field '{}' (expected a number, a boolean or a double-quoted string)",
            quote(v),
            quote(k)
        ),
        Fail::BadTimestamp(t) => format!(
            "bad timestamp '{}' (expected an integer count of the write precision)",
            quote(t)
        ),
        Fail::TimestampOutOfRange(t) => format!(
            "timestamp '{}' is out of range: at the write precision it must fall between \
             1677-09-21T00:12:43.145224194Z and 2262-04-11T23:47:16.854775806Z \
             ({MIN_NANO_TIME} to {MAX_NANO_TIME} ns)",
            quote(t),
        ),
        Fail::TextAfterTimestamp => {
            "invalid point: unexpected text after the timestamp".to_string()
        }
        Fail::KeyTooLong(len) => format!("max key length exceeded: {len} > {MAX_KEY_LENGTH}"),
    }
}

pub(super) fn make_error(
    body: &[u8],
    start: usize,
    line: usize,
    failure: &Failure<'_>,
) -> ParseError {
    // The line runs at least to where the failure was noticed (it may span raw newlines inside
    // an earlier quoted string); quote from its start to the next line break after that.
    let from = failure.at.clamp(start, body.len());
    let mut end = memchr::memchr(b'\n', &body[from..]).map_or(body.len(), |p| from + p);
    if end > start && body[end - 1] == b'\r' {
        end -= 1;
    }
    ParseError {
        line,
        message: format!(
            "unable to parse '{}': {}",
            quote(&body[start..end]),
            describe(&failure.what)
        ),
    }
}
