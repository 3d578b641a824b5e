//! A write request's body -> one [`Batch`] -> the queue, all or nothing.
//!
//! Runs on a worker. The body (gunzipped first when `Content-Encoding: gzip`, with the size
//! limit applied to the decompressed bytes too) is parsed by `line_protocol`; every point
//! becomes a record whose byte strings are spans into one copy of the body, so a write of
//! a thousand points costs one memcpy and three vectors, not thousands of allocations. Only
//! series keys that are not already canonical (tags out of order, or a `db` tag to add)
//! and escaped string values are built afresh, appended to the same arena. Nothing is
//! queued unless every line parsed, and then the queue admits the whole batch or none.
//!
//! The write log keeps a write as its [`WriteSource`] (parameters, receive time) and its
//! decoded body (LZ4-compressed by the log), not as the batch: [`rebuild`] and
//! [`rebuild_lz4`] run the same [`build_batch`] again at replay, which gives back the same
//! batch, because building one is deterministic and reads no clock.

use std::io::Read;

use super::batch::{Batch, DecodeError, FieldRec, PointRec, Span, Value};
use super::{Pipeline, Refused};
use crate::ingest::line_protocol::{self, FieldValue, Parser, Precision};
use crate::stats::{Stats, bump};

/// Per-worker scratch, reused across requests.
#[derive(Default)]
pub struct IngestScratch {
    parser: Parser,
    inflated: Vec<u8>,
    order: Vec<usize>,
    /// A logged body, decompressed at replay.
    unpacked: Vec<u8>,
}

/// Query parameters of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteParams {
    /// `db` (v1) or `bucket` (v2): becomes tag `db=<value>` on points without one.
    pub db: Option<String>,
    pub precision: Precision,
}

/// What a write's [`Batch`] was built from, besides the decoded body: what the write log
/// keeps (record kinds 2 and 3) to rebuild the batch exactly at replay. The decoded body
/// is the first `body_len` bytes of the batch's arena ([`build_batch`] copies it there
/// first), so the log takes it from the batch, with no copy of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteSource {
    pub params: WriteParams,
    /// The receive time, given to points without a timestamp.
    pub now_ns: i64,
    /// Bytes of the decoded (gunzipped) body.
    pub body_len: usize,
}

/// Precisions by their byte in a logged write. Only ever appended to.
const PRECISIONS: [Precision; 6] = [
    Precision::Ns,
    Precision::Us,
    Precision::Ms,
    Precision::S,
    Precision::M,
    Precision::H,
];

/// `now_ns i64 | precision u8 | has_db u8 | db_len u32`, then the `db` bytes.
const SOURCE_FIXED: usize = 8 + 1 + 1 + 4;

impl WriteSource {
    /// Bytes [`WriteSource::encode_head`] appends.
    pub fn head_len(&self) -> usize {
        SOURCE_FIXED + self.params.db.as_ref().map_or(0, String::len)
    }

    /// Appends the head of a logged write's payload, which the decoded body follows:
    /// `now_ns i64 | precision u8 | has_db u8 (0 or 1) | db_len u32 | db bytes`
    /// (little-endian).
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.now_ns.to_le_bytes());
        let precision = PRECISIONS
            .iter()
            .position(|&p| p == self.params.precision)
            .unwrap_or(0);
        out.push(precision as u8);
        let db = self.params.db.as_deref().unwrap_or("");
        out.push(u8::from(self.params.db.is_some()));
        out.extend_from_slice(&(db.len() as u32).to_le_bytes());
        out.extend_from_slice(db.as_bytes());
    }

    /// Splits a logged write's payload into its source and its decoded body.
    pub fn decode(payload: &[u8]) -> Result<(WriteSource, &[u8]), DecodeError> {
        let fixed = payload
            .get(..SOURCE_FIXED)
            .ok_or(DecodeError("logged write shorter than its head"))?;
        let mut now = [0u8; 8];
        now.copy_from_slice(&fixed[0..8]);
        let precision = *PRECISIONS
            .get(fixed[8] as usize)
            .ok_or(DecodeError("logged write with an unknown precision"))?;
        let has_db = match fixed[9] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("logged write with an invalid db flag")),
        };
        let db_len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]) as usize;
        let rest = &payload[SOURCE_FIXED..];
        let db = rest
            .get(..db_len)
            .ok_or(DecodeError("logged write's db runs past its end"))?;
        let db =
            std::str::from_utf8(db).map_err(|_| DecodeError("logged write's db is not UTF-8"))?;
        if !has_db && !db.is_empty() {
            return Err(DecodeError("logged write with a db but no db flag"));
        }
        let body = &rest[db_len..];
        let source = WriteSource {
            params: WriteParams {
                db: has_db.then(|| db.to_string()),
                precision,
            },
            now_ns: i64::from_le_bytes(now),
            body_len: body.len(),
        };
        Ok((source, body))
    }
}

/// Rebuilds the batch of a logged write (a [`WriteSource::encode_head`] head followed by
/// the decoded body) with the same [`build_batch`] the worker ran: the same keys,
/// timestamps and values. Counts nothing.
pub fn rebuild(scratch: &mut IngestScratch, payload: &[u8]) -> Result<Batch, String> {
    let (source, body) = WriteSource::decode(payload).map_err(|e| e.to_string())?;
    build_batch(
        &mut scratch.parser,
        &mut scratch.order,
        body,
        &source.params,
        source.now_ns,
    )
    .map_err(replay_error)
}

fn replay_error(e: WriteError) -> String {
    match e {
        WriteError::Invalid { message, line } => {
            format!("logged write does not parse: {message} (line {line:?})")
        }
        WriteError::TooLarge(m) | WriteError::Unavailable(m) => m,
    }
}

/// Most bytes a compressed logged body may declare: a record is at most
/// `storage::record::MAX_LEN`, and no body is larger than the record that logged it
/// uncompressed could hold.
const MAX_UNPACKED: usize = 1 << 30;

/// LZ4 never expands more than 255 times (one token byte and one length byte per 255
/// repeated bytes), so a declared size beyond that is a lie, refused before allocating.
const LZ4_MAX_RATIO: usize = 255;

/// [`rebuild`] for a record whose body is one LZ4 block after its decompressed length
/// (`WriteSource` head | `body_len u32` | block). The declared length is checked against
/// [`MAX_UNPACKED`] and against what the block could possibly produce before any
/// allocation, and the block must produce exactly that many bytes: a bomb or a damaged
/// stream is an error, never a panic or an outsized buffer.
pub fn rebuild_lz4(scratch: &mut IngestScratch, payload: &[u8]) -> Result<Batch, String> {
    let (source, rest) = WriteSource::decode(payload).map_err(|e| e.to_string())?;
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or("compressed logged write shorter than its body length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_UNPACKED || len > block.len().saturating_mul(LZ4_MAX_RATIO) + 16 {
        return Err(format!(
            "compressed logged write declares {len} bytes from a {} byte block",
            block.len()
        ));
    }
    scratch.unpacked.clear();
    scratch.unpacked.resize(len, 0);
    match lz4_flex::block::decompress_into(block, &mut scratch.unpacked) {
        Ok(n) if n == len => {}
        Ok(n) => {
            return Err(format!(
                "compressed logged write gives {n} bytes, not {len}"
            ));
        }
        Err(e) => return Err(format!("compressed logged write does not decompress: {e}")),
    }
    build_batch(
        &mut scratch.parser,
        &mut scratch.order,
        &scratch.unpacked,
        &source.params,
        source.now_ns,
    )
    .map_err(replay_error)
}

/// A parsed write: the batch, and the length of the decoded body that starts its arena.
#[derive(Debug)]
pub struct Parsed {
    pub batch: Batch,
    pub body_len: usize,
}

/// Why a write was refused; each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// 400, with the 1-based line for line-protocol errors.
    Invalid {
        message: String,
        line: Option<usize>,
    },
    /// 413.
    TooLarge(String),
    /// 503 + `Retry-After`.
    Unavailable(String),
}

impl WriteError {
    pub fn status(&self) -> u16 {
        match self {
            WriteError::Invalid { .. } => 400,
            WriteError::TooLarge(_) => 413,
            WriteError::Unavailable(_) => 503,
        }
    }
}

/// Reads `db`/`bucket` and `precision` from a write's query string.
pub fn parse_params(query: &str, v2: bool) -> Result<WriteParams, WriteError> {
    let mut db = None;
    let mut precision = Precision::Ns;
    let db_key = if v2 { "bucket" } else { "db" };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == db_key {
            if !v.is_empty() {
                db = Some(v.into_owned());
            }
        } else if k == "precision" {
            let p = if v2 {
                Precision::from_v2(&v)
            } else {
                Precision::from_v1(&v)
            };
            precision = p.ok_or_else(|| WriteError::Invalid {
                message: format!(
                    "invalid precision {:?}: expected one of {}",
                    v,
                    if v2 {
                        "ns, us, ms, s"
                    } else {
                        "ns, us, u, ms, s, m, h"
                    }
                ),
                line: None,
            })?;
        }
    }
    Ok(WriteParams { db, precision })
}

/// Parses `body` and queues its points. Returns how many points were queued.
#[allow(clippy::too_many_arguments)]
pub fn write(
    pipeline: &Pipeline,
    stats: &Stats,
    scratch: &mut IngestScratch,
    body: &[u8],
    gzip: bool,
    params: &WriteParams,
    now_ns: i64,
    max_body: usize,
) -> Result<usize, WriteError> {
    let batch = parse(stats, scratch, body, gzip, params, now_ns, max_body)?.batch;
    let n = batch.len();
    if n == 0 {
        return Ok(0);
    }
    pipeline
        .offer(batch)
        .map_err(|why| unavailable(pipeline, why))?;
    Ok(n)
}

/// Parses `body` (gunzipped first when `gzip`) into the batch a write queues, counting its
/// points as accepted. Nothing is queued. The decoded body is the first `body_len` bytes
/// of the batch's arena.
pub fn parse(
    stats: &Stats,
    scratch: &mut IngestScratch,
    body: &[u8],
    gzip: bool,
    params: &WriteParams,
    now_ns: i64,
    max_body: usize,
) -> Result<Parsed, WriteError> {
    let IngestScratch {
        parser,
        inflated,
        order,
        ..
    } = scratch;
    let body: &[u8] = if gzip && !body.is_empty() {
        inflate(body, inflated, max_body)?;
        inflated
    } else {
        body
    };
    let batch = build_batch(parser, order, body, params, now_ns)?;
    bump(&stats.pipeline.points_accepted, batch.len() as u64);
    Ok(Parsed {
        batch,
        body_len: body.len(),
    })
}

/// The `503` for a write the queue refused (full, or shutting down).
pub fn unavailable(pipeline: &Pipeline, why: Refused) -> WriteError {
    match why {
        Refused::Full => WriteError::Unavailable(format!(
            "ingestion queue full ({} points queued of {}); retry later",
            pipeline.queue_depth(),
            pipeline.queue_capacity()
        )),
        Refused::Closed => {
            WriteError::Unavailable("server is shutting down; retry later".to_string())
        }
    }
}

/// The batch `write` would queue for `body`, without queueing it: for the ingest bench.
#[doc(hidden)]
pub fn batch_for_bench(
    scratch: &mut IngestScratch,
    body: &[u8],
    params: &WriteParams,
) -> Result<Batch, WriteError> {
    build_batch(&mut scratch.parser, &mut scratch.order, body, params, 0)
}

/// Gunzips `body` into `out`, refusing more than `max` decompressed bytes (a small gzip
/// bomb is a 413, not an out-of-memory).
pub fn inflate(body: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), WriteError> {
    out.clear();
    let decoder = flate2::bufread::MultiGzDecoder::new(body);
    let mut limited = decoder.take(max as u64 + 1);
    match limited.read_to_end(out) {
        Ok(_) if out.len() > max => Err(WriteError::TooLarge(format!(
            "decompressed request body too large (limit {} bytes)",
            max
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(WriteError::Invalid {
            message: format!("invalid gzip body: {}", e),
            line: None,
        }),
    }
}

/// Where `part` lies inside `body`, if it is a sub-slice of it.
fn span_in(body: &[u8], part: &[u8]) -> Option<Span> {
    let base = body.as_ptr() as usize;
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    if start + part.len() > body.len() {
        return None;
    }
    Some(Span {
        start: start as u32,
        len: part.len() as u32,
    })
}

/// A span of `part`: in place when it lies in the body copy, appended otherwise.
fn place(batch: &mut Batch, body: &[u8], part: &[u8]) -> Span {
    match span_in(body, part) {
        Some(s) => s,
        None => batch.push_bytes(part),
    }
}

fn escape_tag_value(v: &str, out: &mut Vec<u8>) {
    for &b in v.as_bytes() {
        if matches!(b, b',' | b'=' | b' ') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The batch of `body`. Deterministic (the receive time is passed in), which the write
/// log relies on: [`rebuild`] calls it again at replay. The arena starts with a copy of
/// `body`.
fn build_batch(
    parser: &mut Parser,
    order: &mut Vec<usize>,
    body: &[u8],
    params: &WriteParams,
    now_ns: i64,
) -> Result<Batch, WriteError> {
    if body.len() > u32::MAX as usize / 2 {
        return Err(WriteError::TooLarge("request body too large".to_string()));
    }
    let mut batch = Batch {
        arena: Vec::with_capacity(body.len() + body.len() / 4),
        points: Vec::with_capacity(body.len() / 64),
        fields: Vec::with_capacity(body.len() / 24),
        received_s: super::lifecycle::unix_s_of_ns(now_ns),
    };
    batch.arena.extend_from_slice(body);
    let mut escaped_db = Vec::new();
    if let Some(db) = &params.db {
        escape_tag_value(db, &mut escaped_db);
    }
    let body_copy_len = body.len();
    let result = parser.parse(body, params.precision, now_ns, |p| {
        let has_db_tag = p.tags.iter().any(|(k, _)| *k == b"db");
        let add_db = params.db.is_some() && !has_db_tag;
        let sorted = p.tags.windows(2).all(|w| w[0].0 < w[1].0);
        // Where the key as written lies in the body: measurement up to the last tag value.
        let end_part = p.tags.last().map(|(_, v)| *v).unwrap_or(p.measurement);
        let region = match (span_in(body, p.measurement), span_in(body, end_part)) {
            (Some(m), Some(e)) if sorted => Some(Span {
                start: m.start,
                len: e.start + e.len - m.start,
            }),
            _ => None,
        };
        let key = match region {
            // Already canonical: a span of the body copy, nothing built.
            Some(r) if !add_db => r,
            // Sorted, but `db` must go in: copy the key around it (the first tag whose key
            // sorts after `db` starts right after a comma).
            Some(r) => {
                let split = p
                    .tags
                    .iter()
                    .find(|(k, _)| *k > &b"db"[..])
                    .and_then(|(k, _)| span_in(body, k))
                    .map_or(r.start + r.len, |k| k.start - 1);
                let start = batch.arena.len();
                batch
                    .arena
                    .extend_from_slice(&body[r.start as usize..split as usize]);
                batch.arena.extend_from_slice(b",db=");
                batch.arena.extend_from_slice(&escaped_db);
                batch
                    .arena
                    .extend_from_slice(&body[split as usize..(r.start + r.len) as usize]);
                Span {
                    start: start as u32,
                    len: (batch.arena.len() - start) as u32,
                }
            }
            None => build_key(&mut batch, order, p, add_db.then_some(&escaped_db[..])),
        };
        let fields_start = batch.fields.len() as u32;
        for (name, value) in p.fields {
            let name = place(&mut batch, body, name);
            let value = match *value {
                FieldValue::Float(f) => Value::Float(f),
                FieldValue::Int(i) => Value::Int(i),
                FieldValue::UInt(u) => Value::UInt(u),
                FieldValue::Bool(b) => Value::Bool(b),
                FieldValue::Str(raw) => {
                    let unescaped = line_protocol::unescape_string(raw);
                    match unescaped {
                        std::borrow::Cow::Borrowed(s) => Value::Str(place(&mut batch, body, s)),
                        std::borrow::Cow::Owned(s) => Value::Str(batch.push_bytes(&s)),
                    }
                }
            };
            batch.fields.push(FieldRec { name, value });
        }
        batch.points.push(PointRec {
            key,
            timestamp_ns: p.timestamp_ns,
            fields_start,
            fields_len: p.fields.len() as u32,
        });
    });
    debug_assert!(batch.arena.len() >= body_copy_len);
    match result {
        Ok(_) => Ok(batch),
        Err(e) => Err(WriteError::Invalid {
            message: e.message,
            line: Some(e.line),
        }),
    }
}

/// Appends the canonical key (measurement, then tags sorted by escaped key, with `db`
/// inserted when asked) to the arena.
fn build_key(
    batch: &mut Batch,
    order: &mut Vec<usize>,
    p: &line_protocol::Point<'_, '_>,
    db: Option<&[u8]>,
) -> Span {
    order.clear();
    order.extend(0..p.tags.len());
    order.sort_unstable_by(|&a, &b| p.tags[a].0.cmp(p.tags[b].0));
    let start = batch.arena.len();
    batch.arena.extend_from_slice(p.measurement);
    let mut db_pending = db;
    for &i in order.iter() {
        let (k, v) = p.tags[i];
        if let Some(dbv) = db_pending {
            if &b"db"[..] < k {
                push_tag(&mut batch.arena, b"db", dbv);
                db_pending = None;
            }
        }
        push_tag(&mut batch.arena, k, v);
    }
    if let Some(dbv) = db_pending {
        push_tag(&mut batch.arena, b"db", dbv);
    }
    Span {
        start: start as u32,
        len: (batch.arena.len() - start) as u32,
    }
}

fn push_tag(arena: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    arena.push(b',');
    arena.extend_from_slice(k);
    arena.push(b'=');
    arena.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(body: &str, db: Option<&str>) -> Batch {
        let mut parser = Parser::new();
        let mut order = Vec::new();
        let params = WriteParams {
            db: db.map(str::to_string),
            precision: Precision::Ns,
        };
        build_batch(&mut parser, &mut order, body.as_bytes(), &params, 42).unwrap()
    }

    fn keys(b: &Batch) -> Vec<String> {
        b.points
            .iter()
            .map(|p| String::from_utf8_lossy(b.bytes(p.key)).into_owned())
            .collect()
    }

    #[test]
    fn canonical_keys() {
        let b = batch_of(
            "cpu,a=1,b=2 v=1 10\ncpu,b=2,a=1 v=2 20\ncpu v=3\nm\\ x,t\\,k=v\\ 1 f=1i",
            None,
        );
        assert_eq!(
            keys(&b),
            ["cpu,a=1,b=2", "cpu,a=1,b=2", "cpu", "m\\ x,t\\,k=v\\ 1"]
        );
        assert_eq!(
            b.points[2].timestamp_ns, 42,
            "missing timestamp = receive time"
        );
        assert_eq!(b.points[1].timestamp_ns, 20);
    }

    #[test]
    fn db_tag_is_added_in_order_unless_present() {
        let b = batch_of(
            "cpu,host=a v=1\ncpu,a=1 v=1\ncpu v=1\ncpu,db=mine v=1\ncpu,zone=z,a=1 v=1",
            Some("tele graf"),
        );
        assert_eq!(
            keys(&b),
            [
                "cpu,db=tele\\ graf,host=a",
                "cpu,a=1,db=tele\\ graf",
                "cpu,db=tele\\ graf",
                "cpu,db=mine",
                "cpu,a=1,db=tele\\ graf,zone=z",
            ]
        );
    }

    #[test]
    fn fields_and_strings() {
        let b = batch_of(r#"m s="a\"b",i=-3i,u=7u,t=true,f=1.5,s2="plain" 1"#, None);
        let p = &b.points[0];
        let fields = b.fields_of(p);
        let names: Vec<&[u8]> = fields.iter().map(|f| b.bytes(f.name)).collect();
        assert_eq!(names, [&b"s"[..], b"i", b"u", b"t", b"f", b"s2"]);
        match fields[0].value {
            Value::Str(s) => assert_eq!(b.bytes(s), b"a\"b"),
            ref v => panic!("{:?}", v),
        }
        assert_eq!(fields[1].value, Value::Int(-3));
        assert_eq!(fields[2].value, Value::UInt(7));
        assert_eq!(fields[3].value, Value::Bool(true));
        assert_eq!(fields[4].value, Value::Float(1.5));
        match fields[5].value {
            Value::Str(s) => assert_eq!(b.bytes(s), b"plain"),
            ref v => panic!("{:?}", v),
        }
    }

    fn gzip(body: &[u8]) -> Vec<u8> {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).unwrap();
        enc.finish().unwrap()
    }

    /// What the log writes for a parsed write: the source's head, then the decoded body
    /// from the batch's arena.
    fn logged(parsed: &Parsed, source: &WriteSource) -> Vec<u8> {
        let mut payload = Vec::new();
        source.encode_head(&mut payload);
        assert_eq!(payload.len(), source.head_len());
        payload.extend_from_slice(&parsed.batch.arena[..parsed.body_len]);
        payload
    }

    /// What the log writes for a parsed write as a compressed record (kind 3).
    fn logged_lz4(parsed: &Parsed, source: &WriteSource) -> Vec<u8> {
        use crate::storage::record::{Encoded, HEADER, Kind};
        let e = Encoded::with_lz4_body(
            Kind::WriteBodyLz4,
            source.head_len(),
            |b| source.encode_head(b),
            &parsed.batch.arena[..parsed.body_len],
        );
        e.bytes()[HEADER..].to_vec()
    }

    #[test]
    fn a_write_source_round_trips() {
        for db in [None, Some(""), Some("telegraf"), Some("tele graf,=ü")] {
            for (i, &precision) in PRECISIONS.iter().enumerate() {
                let source = WriteSource {
                    params: WriteParams {
                        db: db.map(str::to_string),
                        precision,
                    },
                    now_ns: -5 + i as i64 * (i64::MAX / 7),
                    body_len: 3,
                };
                let mut payload = Vec::new();
                source.encode_head(&mut payload);
                payload.extend_from_slice(b"a\nb");
                let (back, body) = WriteSource::decode(&payload).unwrap();
                assert_eq!(body, b"a\nb");
                assert_eq!(back, source);
            }
        }
    }

    #[test]
    fn a_damaged_write_source_is_an_error_not_a_panic() {
        let source = WriteSource {
            params: WriteParams {
                db: Some("db".to_string()),
                precision: Precision::S,
            },
            now_ns: 1,
            body_len: 0,
        };
        let mut payload = Vec::new();
        source.encode_head(&mut payload);
        for cut in 0..payload.len() {
            assert!(
                WriteSource::decode(&payload[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for (at, byte) in [(8, 6), (9, 2), (10, 0xff)] {
            let mut bad = payload.clone();
            bad[at] = byte;
            assert!(WriteSource::decode(&bad).is_err(), "byte {at} = {byte}");
        }
        let mut no_flag = payload.clone();
        no_flag[9] = 0;
        assert!(WriteSource::decode(&no_flag).is_err());
        let mut scratch = IngestScratch::default();
        let mut invalid = payload.clone();
        invalid.extend_from_slice(b"cpu novalue\n");
        assert!(rebuild(&mut scratch, &invalid).is_err());
    }

    /// Replay rebuilds exactly the batch the worker built: same arena, keys, timestamps
    /// (the receive time for lines without one) and values, for `db` or none, every
    /// precision, and gzip bodies (the log keeps the decoded body), from a kind-2 and a
    /// kind-3 (compressed) payload alike.
    #[test]
    fn rebuilding_a_logged_write_gives_the_same_batch() {
        let body: &[u8] = b"cpu,zone=z,host=h u=1.5,i=-2i,n=3u,b=t,s=\"a\\\"b\" 1700\n\
            # a comment\n\
            \n\
            cpu,host=h u=2\n\
            m\\ x,t\\,k=v\\ 1,db=own f=1 17\r\n\
            mem,b=1,a=2 free=7i";
        let stats = Stats::default();
        let mut scratch = IngestScratch::default();
        let mut again = IngestScratch::default();
        for db in [None, Some("tele graf")] {
            for &precision in &PRECISIONS {
                for gz in [false, true] {
                    let params = WriteParams {
                        db: db.map(str::to_string),
                        precision,
                    };
                    let now_ns = 1_700_000_000_123_456_789;
                    let sent = if gz { gzip(body) } else { body.to_vec() };
                    let parsed =
                        parse(&stats, &mut scratch, &sent, gz, &params, now_ns, 1 << 20).unwrap();
                    assert_eq!(parsed.body_len, body.len());
                    assert_eq!(parsed.batch.len(), 4);
                    let source = WriteSource {
                        params,
                        now_ns,
                        body_len: parsed.body_len,
                    };
                    for replayed in [
                        rebuild(&mut again, &logged(&parsed, &source)).unwrap(),
                        rebuild_lz4(&mut again, &logged_lz4(&parsed, &source)).unwrap(),
                    ] {
                        let original = &parsed.batch;
                        assert_eq!(replayed.arena, original.arena);
                        assert_eq!(replayed.points, original.points);
                        assert_eq!(replayed.fields, original.fields);
                        assert_eq!(replayed.points[1].timestamp_ns, now_ns, "receive time");
                        let scale = precision.nanos_per_unit();
                        assert_eq!(replayed.points[0].timestamp_ns, 1700 * scale);
                    }
                }
            }
        }
    }

    /// A compressed body that claims more than its block can give (a bomb) is refused
    /// before anything is allocated; one that gives fewer or more bytes than it claims is
    /// refused too.
    #[test]
    fn a_compressed_body_must_give_exactly_its_declared_size() {
        let source = WriteSource {
            params: WriteParams {
                db: None,
                precision: Precision::Ns,
            },
            now_ns: 1,
            body_len: 0,
        };
        let body = b"cpu,host=a u=1 1\n".repeat(50);
        let block = lz4_flex::block::compress(&body);
        let payload = |declared: u32, block: &[u8]| {
            let mut p = Vec::new();
            source.encode_head(&mut p);
            p.extend_from_slice(&declared.to_le_bytes());
            p.extend_from_slice(block);
            p
        };
        let mut scratch = IngestScratch::default();
        let ok = rebuild_lz4(&mut scratch, &payload(body.len() as u32, &block)).unwrap();
        assert_eq!(ok.len(), 50);
        for declared in [u32::MAX, 1 << 30, (block.len() * 255 + 17) as u32] {
            let err = rebuild_lz4(&mut scratch, &payload(declared, &block)).unwrap_err();
            assert!(err.contains("declares"), "{err}");
            assert!(
                scratch.unpacked.capacity() < 1 << 20,
                "allocated for a bomb"
            );
        }
        for declared in [0, body.len() as u32 - 1, body.len() as u32 + 1] {
            assert!(rebuild_lz4(&mut scratch, &payload(declared, &block)).is_err());
        }
        let mut head_only = Vec::new();
        source.encode_head(&mut head_only);
        assert!(rebuild_lz4(&mut scratch, &head_only).is_err());
    }

    #[test]
    fn precision_params() {
        assert_eq!(
            parse_params("db=x&precision=s", false).unwrap().precision,
            Precision::S
        );
        assert_eq!(
            parse_params("precision=u", false).unwrap().precision,
            Precision::Us
        );
        assert!(parse_params("precision=u", true).is_err());
        assert!(parse_params("precision=m", true).is_err());
        assert!(parse_params("precision=fortnight", false).is_err());
        assert_eq!(
            parse_params("bucket=b", true).unwrap().db.as_deref(),
            Some("b")
        );
        assert_eq!(parse_params("db=b", true).unwrap().db, None);
    }

    #[test]
    fn gzip_limits_apply_to_decompressed_size() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'a'; 100_000]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1000);
        let mut out = Vec::new();
        assert!(matches!(
            inflate(&bomb, &mut out, 10_000),
            Err(WriteError::TooLarge(_))
        ));
        assert!(inflate(&bomb, &mut out, 100_000).is_ok());
        assert_eq!(out.len(), 100_000);
        assert!(matches!(
            inflate(b"not gzip", &mut out, 100),
            Err(WriteError::Invalid { .. })
        ));
    }

    /// What the proptests do to bytes under test: cut them short at `keep` (when `cut`),
    /// then flip one byte at `flip`'s index by its non-zero mask.
    fn damage(
        bytes: &mut Vec<u8>,
        cut: bool,
        keep: proptest::sample::Index,
        flip: Option<(proptest::sample::Index, u8)>,
    ) {
        if cut {
            bytes.truncate(keep.index(bytes.len() + 1));
        }
        if let Some((at, x)) = flip {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= x.max(1);
            }
        }
    }

    proptest::proptest! {
        /// A logged write's payload as arbitrary bytes (damage a checksum did not catch, or
        /// a record of another version) is rebuilt or refused, never a panic.
        #[test]
        fn any_logged_payload_rebuilds_or_is_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            head in proptest::option::of((0usize..6, proptest::option::of("[a-z ,=]{0,8}"))),
        ) {
            let mut payload = Vec::new();
            if let Some((precision, db)) = head {
                WriteSource {
                    params: WriteParams { db, precision: PRECISIONS[precision] },
                    now_ns: 7,
                    body_len: bytes.len(),
                }
                .encode_head(&mut payload);
            }
            payload.extend_from_slice(&bytes);
            let mut scratch = IngestScratch::default();
            let _ = rebuild(&mut scratch, &payload);
        }

        /// A compressed logged write whose checksum matched but whose LZ4 stream is bad
        /// (arbitrary bytes, or a real block cut short or with a byte changed, under any
        /// declared size) is rebuilt or refused, never a panic, and never decompressed
        /// past what a block of its size can give.
        #[test]
        fn any_compressed_payload_rebuilds_or_is_refused(
            lines in 1usize..40,
            keep in proptest::prelude::any::<proptest::sample::Index>(),
            flip in proptest::option::of(proptest::prelude::any::<(proptest::sample::Index, u8)>()),
            junk in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
            declared in proptest::option::of(proptest::prelude::any::<u32>()),
        ) {
            let body: Vec<u8> = (0..lines)
                .flat_map(|i| format!("cpu,host=h{i} u={i}.5,n={i}i {i}\n").into_bytes())
                .collect();
            let intact = junk.is_none() && flip.is_none() && declared.is_none() && keep.index(4) > 0;
            let mut block = match junk {
                Some(j) => j,
                None => lz4_flex::block::compress(&body),
            };
            damage(&mut block, !intact, keep, flip);
            let mut payload = Vec::new();
            WriteSource {
                params: WriteParams { db: None, precision: Precision::Ns },
                now_ns: 7,
                body_len: 0,
            }
            .encode_head(&mut payload);
            let size = declared.unwrap_or(body.len() as u32);
            payload.extend_from_slice(&size.to_le_bytes());
            payload.extend_from_slice(&block);
            let mut scratch = IngestScratch::default();
            let result = rebuild_lz4(&mut scratch, &payload);
            proptest::prop_assert!(scratch.unpacked.len() <= block.len() * 255 + 16);
            if let Ok(batch) = &result {
                proptest::prop_assert_eq!(scratch.unpacked.len(), size as usize);
                proptest::prop_assert!(batch.len() <= scratch.unpacked.len());
            }
            if intact {
                proptest::prop_assert_eq!(result.map(|b| b.len()), Ok(lines));
            }
        }

        /// What the fuzz target `gzip_ingest` checks: whatever the bytes (gzip of a small or
        /// large body, cut short or with a byte changed, or not gzip at all), no panic and
        /// never more than the limit; an intact body comes back whole or is refused as too
        /// large.
        #[test]
        fn inflate_never_exceeds_the_limit(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500),
            repeat in 1usize..5,
            keep in proptest::prelude::any::<proptest::sample::Index>(),
            flip in proptest::option::of(proptest::prelude::any::<(proptest::sample::Index, u8)>()),
            raw in proptest::prelude::any::<bool>(),
        ) {
            use flate2::write::GzEncoder;
            use std::io::Write;
            const LIMIT: usize = 2048;
            let plain = body.repeat(repeat);
            let mut input = if raw {
                body.clone()
            } else {
                let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&plain).unwrap();
                enc.finish().unwrap()
            };
            let intact = !raw && flip.is_none() && keep.index(4) > 0;
            damage(&mut input, !intact, keep, flip);
            let mut out = Vec::new();
            let result = inflate(&input, &mut out, LIMIT);
            proptest::prop_assert!(out.len() <= LIMIT + 1);
            if result.is_ok() {
                proptest::prop_assert!(out.len() <= LIMIT);
            }
            if intact {
                if plain.len() <= LIMIT {
                    proptest::prop_assert!(result.is_ok());
                    proptest::prop_assert_eq!(&out, &plain);
                } else {
                    proptest::prop_assert!(matches!(result, Err(WriteError::TooLarge(_))));
                }
            }
        }
    }
}
