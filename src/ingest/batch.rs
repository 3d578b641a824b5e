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
