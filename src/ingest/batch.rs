//! One validated write, owned and ready for the queue.
//!
//! A worker parses a request body into a [`Batch`]; the bounded queue admits it whole or
//! not at all; the aggregator thread consumes it. Every byte string a record needs lives
//! in one `arena`, so a batch of a thousand points is three allocations, not thousands,
//! and it owns nothing that points back into the connection's read buffer.

/// A byte range inside [`Batch::arena`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }
}

/// A field value as parsed from line protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    /// Unescaped string content (the bytes between the quotes, with `\"` and `\\` resolved).
    Str(Span),
}

/// One field of one point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldRec {
    /// The field key, escaped exactly as it appeared in the line.
    pub name: Span,
    pub value: Value,
}

/// One point (one line of line protocol).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointRec {
    /// Canonical series key: the escaped measurement, then `,key=value` for every tag
    /// (escaped as received, plus `db=<name>` from the query string when the line has no
    /// `db` tag), sorted by escaped key bytes. Two points of the same series always have
    /// byte-identical keys.
    pub key: Span,
    pub timestamp_ns: i64,
    /// `fields[fields_start .. fields_start + fields_len]`; field keys are unique within a
    /// point (a repeated key kept its last value).
    pub fields_start: u32,
    pub fields_len: u32,
}

/// The points of one write request.
#[derive(Debug, Default)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub points: Vec<PointRec>,
    pub fields: Vec<FieldRec>,
    /// When the write was received (wall clock, seconds since the Unix epoch): the
    /// last-write time of every series it touches, for `--series-ttl`. Not part of
    /// [`Batch::encode_into`]'s format; set by whoever builds or decodes the batch.
    pub received_s: u32,
}

impl Batch {
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.arena[span.range()]
    }

    pub fn fields_of(&self, point: &PointRec) -> &[FieldRec] {
        let start = point.fields_start as usize;
        &self.fields[start..start + point.fields_len as usize]
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Appends `bytes` to the arena and returns where they went.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }
}

/// Why bytes could not be decoded into a [`Batch`] (a record written by another version,
/// or damaged in a way its checksum did not catch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encoded sizes: a point is key span + timestamp + field range, a field is name span +
/// value tag + 8 value bytes.
const POINT_BYTES: usize = 4 + 4 + 8 + 4 + 4;
const FIELD_BYTES: usize = 4 + 4 + 1 + 8;

const TAG_FLOAT: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_UINT: u8 = 3;
const TAG_BOOL: u8 = 4;
const TAG_STR: u8 = 5;

impl Batch {
    /// Bytes [`Batch::encode_into`] appends.
    pub fn encoded_len(&self) -> usize {
        12 + self.arena.len() + self.points.len() * POINT_BYTES + self.fields.len() * FIELD_BYTES
    }

    /// Appends the batch in the write log's payload format (little-endian, fixed width):
    /// `arena_len u32, arena, n_points u32, points, n_fields u32, fields`. Exact: decoding
    /// gives back an equal batch, floats bit for bit.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&(self.arena.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.arena);
        out.extend_from_slice(&(self.points.len() as u32).to_le_bytes());
        for p in &self.points {
            let mut b = [0u8; POINT_BYTES];
            b[0..4].copy_from_slice(&p.key.start.to_le_bytes());
            b[4..8].copy_from_slice(&p.key.len.to_le_bytes());
            b[8..16].copy_from_slice(&p.timestamp_ns.to_le_bytes());
            b[16..20].copy_from_slice(&p.fields_start.to_le_bytes());
            b[20..24].copy_from_slice(&p.fields_len.to_le_bytes());
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for f in &self.fields {
            let (tag, v) = match f.value {
                Value::Float(x) => (TAG_FLOAT, x.to_bits()),
                Value::Int(i) => (TAG_INT, i as u64),
                Value::UInt(u) => (TAG_UINT, u),
                Value::Bool(b) => (TAG_BOOL, u64::from(b)),
                Value::Str(s) => (TAG_STR, u64::from(s.start) | (u64::from(s.len) << 32)),
            };
            let mut b = [0u8; FIELD_BYTES];
            b[0..4].copy_from_slice(&f.name.start.to_le_bytes());
            b[4..8].copy_from_slice(&f.name.len.to_le_bytes());
            b[8] = tag;
            b[9..17].copy_from_slice(&v.to_le_bytes());
            out.extend_from_slice(&b);
        }
    }

    /// Decodes what [`Batch::encode_into`] wrote. Every span and field range is checked,
    /// so a batch that decodes can be applied without a panic, whatever the bytes were.
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let arena_len = r.u32()? as usize;
        let arena = r.take(arena_len)?.to_vec();
        let n_points = r.u32()? as usize;
        let point_bytes = r.take(n_points.checked_mul(POINT_BYTES).ok_or(TOO_SHORT)?)?;
        let n_fields = r.u32()? as usize;
        let field_bytes = r.take(n_fields.checked_mul(FIELD_BYTES).ok_or(TOO_SHORT)?)?;
        if r.pos != bytes.len() {
            return Err(DecodeError("trailing bytes after the batch"));
        }
        let span_ok = |s: Span| s.start as usize + s.len as usize <= arena.len();
        let mut fields = Vec::with_capacity(n_fields);
        for b in field_bytes.chunks_exact(FIELD_BYTES) {
            let name = span_at(b, 0);
            let v = u64::from_le_bytes(b[9..17].try_into().map_err(|_| TOO_SHORT)?);
            let value = match b[8] {
                TAG_FLOAT => Value::Float(f64::from_bits(v)),
                TAG_INT => Value::Int(v as i64),
                TAG_UINT => Value::UInt(v),
                TAG_BOOL if v <= 1 => Value::Bool(v == 1),
                TAG_STR => {
                    let s = Span {
                        start: v as u32,
                        len: (v >> 32) as u32,
                    };
                    if !span_ok(s) {
                        return Err(DecodeError("string value outside the arena"));
                    }
                    Value::Str(s)
                }
                _ => return Err(DecodeError("unknown field value type")),
            };
            if !span_ok(name) {
                return Err(DecodeError("field name outside the arena"));
            }
            fields.push(FieldRec { name, value });
        }
        let mut points = Vec::with_capacity(n_points);
        for b in point_bytes.chunks_exact(POINT_BYTES) {
            let key = span_at(b, 0);
            let p = PointRec {
                key,
                timestamp_ns: i64::from_le_bytes(b[8..16].try_into().map_err(|_| TOO_SHORT)?),
                fields_start: u32_at(b, 16),
                fields_len: u32_at(b, 20),
            };
            if !span_ok(key) {
                return Err(DecodeError("series key outside the arena"));
            }
            if p.fields_start as usize + p.fields_len as usize > fields.len() {
                return Err(DecodeError("field range outside the batch"));
            }
            points.push(p);
        }
        // Kind-1 records do not hold the receive time: the caller sets it.
        Ok(Batch {
            arena,
            points,
            fields,
            received_s: 0,
        })
    }
}

const TOO_SHORT: DecodeError = DecodeError("batch shorter than its counts say");

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn span_at(b: &[u8], at: usize) -> Span {
    Span {
        start: u32_at(b, at),
        len: u32_at(b, at + 4),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(TOO_SHORT)?;
        let s = self.bytes.get(self.pos..end).ok_or(TOO_SHORT)?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32_at(b, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::aggregator::test_support::{V, batch};

    fn sample() -> Batch {
        batch(&[
            ("cpu,host=a", 1, &[("v", V::F(-0.0)), ("n", V::I(i64::MIN))]),
            ("m", -5, &[("u", V::U(u64::MAX)), ("b", V::B(true))]),
            (
                "m",
                7,
                &[("s", V::S("a\"b\\c\nd")), ("nan", V::F(f64::NAN))],
            ),
            ("empty", 9, &[]),
        ])
    }

    fn same(a: &Batch, b: &Batch) -> bool {
        // Field values compared bitwise so NaN and -0.0 count as exact.
        let bits = |f: &FieldRec| match f.value {
            Value::Float(x) => (f.name, 1, x.to_bits()),
            Value::Int(i) => (f.name, 2, i as u64),
            Value::UInt(u) => (f.name, 3, u),
            Value::Bool(b) => (f.name, 4, u64::from(b)),
            Value::Str(s) => (f.name, 5, u64::from(s.start) | (u64::from(s.len) << 32)),
        };
        a.arena == b.arena
            && a.points == b.points
            && a.fields.iter().map(bits).eq(b.fields.iter().map(bits))
    }

    #[test]
    fn round_trip_is_exact() {
        let b = sample();
        let mut out = Vec::new();
        b.encode_into(&mut out);
        assert_eq!(out.len(), b.encoded_len());
        let d = Batch::decode(&out).expect("decodes");
        assert!(same(&b, &d));
        let mut empty = Vec::new();
        Batch::default().encode_into(&mut empty);
        assert!(Batch::decode(&empty).expect("empty").is_empty());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, and whatever decodes only references its own arena.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(b) = Batch::decode(&bytes) {
                for p in &b.points {
                    let _ = b.bytes(p.key);
                    for f in b.fields_of(p) {
                        let _ = b.bytes(f.name);
                    }
                }
            }
        }

        /// Any truncation of a valid encoding is refused.
        #[test]
        fn truncation_refused(cut in 0usize..1000) {
            let mut out = Vec::new();
            sample().encode_into(&mut out);
            let cut = cut % out.len();
            proptest::prop_assert!(Batch::decode(&out[..cut]).is_err());
        }
    }
}
