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

use std::borrow::Cow;
use std::fmt;

#[cfg(test)]
mod tests;

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

/// An owned field value with strings unescaped: the input of [`write_line`].
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedFieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(Vec<u8>),
}

impl From<FieldValue<'_>> for OwnedFieldValue {
    /// Copies the value out of the body; a string is unescaped on the way.
    fn from(v: FieldValue<'_>) -> Self {
        match v {
            FieldValue::Float(f) => OwnedFieldValue::Float(f),
            FieldValue::Int(i) => OwnedFieldValue::Int(i),
            FieldValue::UInt(u) => OwnedFieldValue::UInt(u),
            FieldValue::Bool(b) => OwnedFieldValue::Bool(b),
            FieldValue::Str(s) => OwnedFieldValue::Str(unescape_string(s).into_owned()),
        }
    }
}

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
    fn scratch_capacity(&self) -> (usize, usize) {
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

// ---------------------------------------------------------------------------------------------
// Byte classes

const STOP_MEASUREMENT: u8 = 1; // , space \ \n \r
const STOP_KEY: u8 = 2; // , space = \ \n \r   (tag keys, tag values, field keys)
const STOP_VALUE: u8 = 4; // , space \n \r     (unquoted field values)
const WHITESPACE: u8 = 8; // space \t \0       (InfluxDB's skipWhitespace set)

static CLASS: [u8; 256] = build_class();

const fn build_class() -> [u8; 256] {
    let mut t = [0u8; 256];
    t[b',' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b' ' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE | WHITESPACE;
    t[b'\\' as usize] = STOP_MEASUREMENT | STOP_KEY;
    t[b'\n' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b'\r' as usize] = STOP_MEASUREMENT | STOP_KEY | STOP_VALUE;
    t[b'=' as usize] = STOP_KEY;
    t[b'\t' as usize] = WHITESPACE;
    t[0] = WHITESPACE;
    t
}

/// Index of the first byte at or after `from` whose class intersects `mask`, or `b.len()`.
#[inline(always)]
fn find_class(b: &[u8], from: usize, mask: u8) -> usize {
    match b.get(from..) {
        Some(rest) => match rest.iter().position(|&c| CLASS[usize::from(c)] & mask != 0) {
            Some(p) => from + p,
            None => b.len(),
        },
        None => b.len(),
    }
}

#[inline(always)]
fn skip_whitespace(b: &[u8], from: usize) -> usize {
    // Nearly always there is nothing to skip.
    if let Some(&c) = b.get(from)
        && CLASS[usize::from(c)] & WHITESPACE == 0
    {
        return from;
    }
    match b.get(from..) {
        Some(rest) => match rest
            .iter()
            .position(|&c| CLASS[usize::from(c)] & WHITESPACE == 0)
        {
            Some(p) => from + p,
            None => b.len(),
        },
        None => b.len(),
    }
}

/// A `\r` ends the line only when it is the last byte before `\n` or before the end of the
/// body; elsewhere it is an ordinary byte.
#[inline(always)]
fn cr_ends_line(b: &[u8], i: usize) -> bool {
    b.get(i + 1).is_none_or(|&c| c == b'\n')
}

#[inline(always)]
fn is_line_end(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None => true,
        Some(b'\n') => true,
        Some(b'\r') => cr_ends_line(b, i),
        Some(_) => false,
    }
}

/// True at the end of an unquoted value: `,`, space, line end or end of body.
#[inline(always)]
fn is_value_end(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None | Some(b',') | Some(b' ') | Some(b'\n') => true,
        Some(b'\r') => cr_ends_line(b, i),
        Some(_) => false,
    }
}

// SWAR ("SIMD within a register") helpers: eight bytes per step in plain integer arithmetic,
// since `unsafe` (and so explicit SIMD) is off the table. Names are short, but even a 4-byte
// key is found in one step instead of five table lookups.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `x` equal to `c`. Borrows can set bits above a real match,
/// never below one, so the lowest set bit is exact.
#[inline(always)]
fn bytes_equal(x: u64, c: u8) -> u64 {
    let t = x ^ (ONES * u64::from(c));
    t.wrapping_sub(ONES) & !t & HIGHS
}

/// High bit set in every byte of `x` below `n` (n <= 0x80); lowest set bit exact as above.
#[inline(always)]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// Index of the first byte at or after `i` in the stop set of `mask` (STOP_MEASUREMENT or
/// STOP_KEY), or `b.len()`. The word test flags every byte below 0x21 (space, `\n`, `\r`, but
/// also tabs and other control bytes) plus `,`, `\` and, for keys, `=`; the table then rules
/// out the rare false candidates.
#[inline(always)]
fn find_stop(b: &[u8], mut i: usize, mask: u8) -> usize {
    while let Some(chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let mut hits = bytes_below(x, 0x21) | bytes_equal(x, b',') | bytes_equal(x, b'\\');
        if mask & STOP_MEASUREMENT == 0 {
            hits |= bytes_equal(x, b'=');
        }
        if hits == 0 {
            i += 8;
            continue;
        }
        let j = i + (hits.trailing_zeros() / 8) as usize;
        if b.get(j).is_some_and(|&c| CLASS[usize::from(c)] & mask != 0) {
            return j;
        }
        i = j + 1;
    }
    find_class(b, i, mask)
}

/// Value of eight ASCII digits, the first in the lowest byte (three multiplies instead of
/// eight multiply-adds).
#[inline(always)]
fn eight_digits_value(x: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let x = x.wrapping_sub(0x3030_3030_3030_3030);
    let x = x.wrapping_mul(10).wrapping_add(x >> 8);
    (x & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((x >> 16) & MASK).wrapping_mul(MUL2))
        >> 32
}

/// Powers of ten for folding a partial word of digits into an accumulator.
const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Scans ASCII digits from `i`, folding them into `acc` (wrapping: callers only trust the
/// value when at most 19 digits went in). Returns the end of the digits and the value.
/// Works a word at a time: the lowest non-digit byte of a word is found exactly (carries and
/// borrows only travel upwards from it), and a partial run of digits is shifted to the top of
/// the word and padded with '0's so the eight-digit conversion applies.
#[inline(always)]
fn scan_digits(b: &[u8], mut i: usize, mut acc: u64) -> (usize, u64) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    while let Some(chunk) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let non_digits = (x.wrapping_add(0x4646_4646_4646_4646) | x.wrapping_sub(ZEROS)) & HIGHS;
        if non_digits == 0 {
            acc = acc
                .wrapping_mul(100_000_000)
                .wrapping_add(eight_digits_value(x));
            i += 8;
            continue;
        }
        let n = (non_digits.trailing_zeros() / 8) as usize;
        if n > 0 {
            let shift = 8 * (8 - n as u32);
            let padded = (x << shift) | (ZEROS >> (64 - shift));
            acc = acc
                .wrapping_mul(POW10_U64[n])
                .wrapping_add(eight_digits_value(padded));
        }
        return (i + n, acc);
    }
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (i, acc)
}

/// End of a measurement or key starting at `i`: the first byte of `mask`'s stop set that is
/// not preceded by a backslash, or the line end. InfluxDB 1.x decides "escaped" by looking at
/// the previous byte only (`buf[i-1] != '\\'`), so after any run of backslashes the next byte
/// is ordinary: `a\\,b` is one name. `\n` is the exception: it always ends the line.
#[inline(always)]
fn token_end(b: &[u8], mut i: usize, mask: u8) -> usize {
    let n = b.len();
    loop {
        i = find_stop(b, i, mask);
        match b.get(i) {
            None => return n,
            Some(b'\\') => {
                let mut j = i + 1;
                while b.get(j) == Some(&b'\\') {
                    j += 1;
                }
                i = match b.get(j) {
                    Some(&c) if c != b'\n' => j + 1,
                    _ => j,
                };
            }
            Some(b'\r') if !cr_ends_line(b, i) => i += 1,
            Some(_) => return i,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors (built only on the failure path)

/// What went wrong, with the offending slices of the body for the message.
#[derive(Debug)]
enum Fail<'a> {
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
struct Failure<'a> {
    at: usize,
    what: Fail<'a>,
}

// Cold so the optimiser lays out every error branch away from the hot path.
#[cold]
#[inline(never)]
fn fail(at: usize, what: Fail<'_>) -> Failure<'_> {
    Failure { at, what }
}

/// InfluxDB's limit on the series key (measurement + tags, escaped), and on that key plus
/// the 4-byte field separator plus the field key.
const MAX_KEY_LENGTH: usize = 65535;
/// InfluxDB reserves the lowest two and the highest nanosecond values as sentinels.
const MIN_NANO_TIME: i64 = i64::MIN + 2;
const MAX_NANO_TIME: i64 = i64::MAX - 1;

/// Bytes of a line quoted in an error message.
const QUOTE_LIMIT: usize = 64;

/// Lossy UTF-8 of at most `QUOTE_LIMIT` bytes of `s` (cut on a character boundary, `...` when
/// cut), with line breaks shown as `\n` / `\r` so the message stays on one line.
fn quote(s: &[u8]) -> String {
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

fn make_error(body: &[u8], start: usize, line: usize, failure: &Failure<'_>) -> ParseError {
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

// ---------------------------------------------------------------------------------------------
// The parser

type Tags<'a> = Vec<(&'a [u8], &'a [u8])>;
type Fields<'a> = Vec<(&'a [u8], FieldValue<'a>)>;

/// Vectors of at most this many entries are checked for repeated keys pairwise; longer ones
/// are sorted through `order` so a hostile line cannot cost quadratic time.
const PAIRWISE_LIMIT: usize = 16;

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
    i = skip_whitespace(b, i + 1);
    if is_line_end(b, i) {
        return Ok(Parsed {
            measurement,
            timestamp_ns: None,
            end: i,
            newlines,
        });
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
    Ok(Parsed {
        measurement,
        timestamp_ns: Some(timestamp_ns),
        end: i,
        newlines,
    })
}

/// Offset of the `"` closing a string whose contents start at `from`, and the number of raw
/// newlines inside. Inside strings a backslash pairs with the byte after it (so `\"` and `\\`
/// never end the string), as in InfluxDB's scanFields.
#[inline]
fn find_closing_quote(b: &[u8], from: usize) -> Option<(usize, usize)> {
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

fn parse_bool<'a>(
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

/// `find_class(.., STOP_VALUE)` stops at every `\r`; one that does not end the line belongs
/// to the (then invalid) value, so include it and whatever follows up to the real end.
#[inline(always)]
fn extend_over_inner_cr(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b'\r') && !cr_ends_line(b, i) {
        i = find_class(b, i + 1, STOP_VALUE);
    }
    i
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
fn parse_number<'a>(
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
fn digits_to_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

#[inline(always)]
fn apply_sign(magnitude: u64, negative: bool) -> Option<i64> {
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

/// Key equality with cheap rejections first: keys of one line often share a length and a
/// prefix (`usage_user`, `usage_idle`), rarely a last byte.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.last() == b.last() && a == b
}

/// Index of the first entry whose key repeats an earlier one, checking pairwise (for short
/// vectors only).
#[inline(always)]
fn first_repeat<T>(items: &[(&[u8], T)]) -> Option<usize> {
    for j in 1..items.len() {
        let key = items[j].0;
        for earlier in &items[..j] {
            if key_eq(earlier.0, key) {
                return Some(j);
            }
        }
    }
    None
}

/// The first repeated tag key, if any. InfluxDB rejects such lines ("duplicate tags").
#[inline(always)]
fn check_tags<'a>(tags: &[(&'a [u8], &'a [u8])], order: &mut Vec<u32>) -> Result<(), &'a [u8]> {
    if tags.len() <= PAIRWISE_LIMIT {
        return match first_repeat(tags) {
            Some(j) => Err(tags[j].0),
            None => Ok(()),
        };
    }
    check_many_tags(tags, order)
}

#[inline(never)]
fn check_many_tags<'a>(
    tags: &[(&'a [u8], &'a [u8])],
    order: &mut Vec<u32>,
) -> Result<(), &'a [u8]> {
    let n = tags.len();
    fill_order(order, n);
    order.sort_unstable_by(|&x, &y| tags[x as usize].0.cmp(tags[y as usize].0));
    match order
        .windows(2)
        .find(|w| tags[w[0] as usize].0 == tags[w[1] as usize].0)
    {
        Some(w) => Err(tags[w[0] as usize].0),
        None => Ok(()),
    }
}

fn fill_order(order: &mut Vec<u32>, n: usize) {
    order.clear();
    // n is bounded by the body length, which the server caps far below 4 GiB.
    order.extend((0..n).map(|x| x as u32));
}

/// Makes field keys unique: a repeated key keeps its last value, at the place where the key
/// first appeared (InfluxDB builds a map from the fields, so the last value wins there too).
#[inline(always)]
fn dedup_fields(fields: &mut Fields<'_>, order: &mut Vec<u32>) {
    let n = fields.len();
    if n < 2 || (n <= PAIRWISE_LIMIT && first_repeat(fields).is_none()) {
        return;
    }
    dedup_repeated_fields(fields, order);
}

#[inline(never)]
fn dedup_repeated_fields(fields: &mut Fields<'_>, order: &mut Vec<u32>) {
    let n = fields.len();
    if n <= PAIRWISE_LIMIT {
        let mut kept = 1;
        for r in 1..n {
            let (key, value) = fields[r];
            match fields[..kept].iter().position(|f| key_eq(f.0, key)) {
                Some(p) => fields[p].1 = value,
                None => {
                    fields[kept] = (key, value);
                    kept += 1;
                }
            }
        }
        fields.truncate(kept);
        return;
    }
    // Sort indices by (key, position); within each run of equal keys the first index is
    // where the key stays and the last holds the value to keep. Field keys are never empty,
    // so an emptied key marks an entry to drop.
    fill_order(order, n);
    order.sort_unstable_by(|&x, &y| {
        fields[x as usize]
            .0
            .cmp(fields[y as usize].0)
            .then(x.cmp(&y))
    });
    let mut run_start = 0;
    while run_start < n {
        let first = order[run_start] as usize;
        let mut run_end = run_start + 1;
        while run_end < n && fields[order[run_end] as usize].0 == fields[first].0 {
            run_end += 1;
        }
        if run_end - run_start > 1 {
            let last = order[run_end - 1] as usize;
            fields[first].1 = fields[last].1;
            for &dup in &order[run_start + 1..run_end] {
                fields[dup as usize].0 = &[];
            }
        }
        run_start = run_end;
    }
    fields.retain(|f| !f.0.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Unescaping and serialising

/// Removes the backslash in front of any byte of `special`; every other backslash is literal.
/// This mirrors the scanner: a byte right after a backslash is never a delimiter.
fn unescape_with<'a>(s: &'a [u8], special: &[u8]) -> Cow<'a, [u8]> {
    let Some(first) = memchr::memchr(b'\\', s) else {
        return Cow::Borrowed(s);
    };
    let mut out = Vec::with_capacity(s.len());
    out.extend_from_slice(&s[..first]);
    let mut i = first;
    while i < s.len() {
        let c = s[i];
        if c == b'\\'
            && let Some(&next) = s.get(i + 1).filter(|c| special.contains(c))
        {
            out.push(next);
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Cow::Owned(out)
}

/// Measurement names: `\,` and `\ ` are unescaped; any other backslash is kept.
pub fn unescape_measurement(s: &[u8]) -> Cow<'_, [u8]> {
    unescape_with(s, b", ")
}

/// Tag keys, tag values and field keys: `\,`, `\=` and `\ ` are unescaped; any other
/// backslash is kept (so `a\\=b` is `a\=b`, as in InfluxDB 1.x).
pub fn unescape_key(s: &[u8]) -> Cow<'_, [u8]> {
    unescape_with(s, b",= ")
}

/// String field values: `\"` and `\\` are unescaped; any other backslash is kept.
pub fn unescape_string(s: &[u8]) -> Cow<'_, [u8]> {
    unescape_with(s, b"\"\\")
}

fn escape_into(out: &mut Vec<u8>, s: &[u8], special: &[u8]) {
    for &c in s {
        if special.contains(&c) {
            out.push(b'\\');
        }
        out.push(c);
    }
}

/// Serialiser used by the round-trip proptest and by the bench tool: takes UNESCAPED parts and
/// writes one line (no trailing newline), escaping as needed.
///
/// Line protocol cannot express everything, so these inputs do not read back as written:
/// empty names, no fields, names containing `\n`, a name ending in a backslash (the backslash
/// would escape the delimiter after it; InfluxDB 1.x has the same hole), a measurement
/// starting with `#` (a comment) or with a tab or NUL (skipped as leading whitespace), a first
/// field key starting with a tab or NUL, and NaN or infinite floats. Everything else
/// round-trips through [`parse`] and the `unescape_*` functions.
pub fn write_line(
    out: &mut Vec<u8>,
    measurement: &[u8],
    tags: &[(&[u8], &[u8])],
    fields: &[(&[u8], OwnedFieldValue)],
    timestamp: Option<i64>,
) {
    use std::io::Write as _;
    escape_into(out, measurement, b", ");
    for (key, value) in tags {
        out.push(b',');
        escape_into(out, key, b",= ");
        out.push(b'=');
        escape_into(out, value, b",= ");
    }
    for (n, (key, value)) in fields.iter().enumerate() {
        out.push(if n == 0 { b' ' } else { b',' });
        escape_into(out, key, b",= ");
        out.push(b'=');
        // Writing into a Vec cannot fail, so the io::Results below carry nothing.
        match value {
            // `{:?}` is the shortest text that reads back to the same f64 and always has a
            // '.' or an exponent, e.g. `1.0`, `1e-7`, `1.5e300`.
            OwnedFieldValue::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            OwnedFieldValue::Int(v) => {
                let _ = write!(out, "{v}i");
            }
            OwnedFieldValue::UInt(v) => {
                let _ = write!(out, "{v}u");
            }
            OwnedFieldValue::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
            OwnedFieldValue::Str(s) => {
                out.push(b'"');
                escape_into(out, s, b"\"\\");
                out.push(b'"');
            }
        }
    }
    if let Some(ts) = timestamp {
        let _ = write!(out, " {ts}");
    }
}
