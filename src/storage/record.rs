//! The write log's record codec: pure functions over byte slices, no files.
//!
//! A record is `len u32 | crc u32 | kind u8 | lsn u64 | payload`, little-endian, where
//! `len` counts `kind..end` (9 + payload) and `crc` is CRC-32 (IEEE) of the `len` bytes
//! followed by `kind..end`. Covering `len` means a damaged length is caught like any
//! other damaged byte; covering `lsn` means a record cannot be replayed under another
//! sequence number. A worker encodes the payload and its checksum ([`Encoded::write`],
//! [`Encoded::with_tail`]); the log thread only stamps the sequence number
//! ([`Encoded::seal`]), which costs a 13-byte checksum and a combine, so the single log
//! thread never reads a payload. A record may end in a *tail* its owner keeps (a logged
//! write's body, which is already in its batch): the log writes it from there with
//! `writev`, so the body is never copied for the log. This module must never accept bytes
//! whose checksum does not match.

use crate::ingest::Batch;

/// Log sequence number: 1 for the first record ever written, +1 per record.
pub type Lsn = u64;

/// `len` + `crc` + `kind` + `lsn`.
pub const HEADER: usize = 4 + 4 + 1 + 8;

/// Largest `len` a reader accepts. A write is at most `--max-body-bytes` of line protocol,
/// whose batch encoding is a few times larger; anything past 1 GiB is damage.
pub const MAX_LEN: u32 = 1 << 30;

/// What a record holds. New kinds get new numbers; a reader skips a kind it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One accepted write: a [`Batch`] in [`Batch::encode_into`]'s format. Written by
    /// older versions; still replayed.
    Write = 1,
    /// One accepted write as received: a `WriteSource` head (parameters, receive time)
    /// and the decoded body, from which replay rebuilds the same [`Batch`]. About half the
    /// size of kind 1.
    WriteBody = 2,
    /// Kind 2 with its body LZ4-compressed on the worker: the `WriteSource` head, the
    /// body's length (u32), then the body as one LZ4 block.
    WriteBodyLz4 = 3,
    /// A `DELETE /series`: the encoded `ingest::lifecycle::Selector`. Replay removes the
    /// matching series at this point of the log, so a series deleted here never comes back
    /// from the writes before it; writes after it start fresh series.
    Delete = 4,
}

impl Kind {
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Write),
            2 => Some(Kind::WriteBody),
            3 => Some(Kind::WriteBodyLz4),
            4 => Some(Kind::Delete),
            _ => None,
        }
    }
}

/// A record encoded except for its sequence number, ready to hand to the log thread.
#[derive(Debug)]
pub struct Encoded {
    /// `HEADER` bytes (filled by [`Encoded::seal`]) then the payload, or the payload's
    /// head when the record has a tail.
    buf: Vec<u8>,
    /// Bytes of payload after `buf`, kept by the record's owner and written from there.
    tail: usize,
    kind: Kind,
    payload_crc: crc32fast::Hasher,
}

impl Encoded {
    /// Encodes a write record's payload and checksums it (on the caller's thread).
    pub fn write(batch: &Batch) -> Encoded {
        let mut buf = Vec::with_capacity(HEADER + batch.encoded_len());
        buf.resize(HEADER, 0);
        batch.encode_into(&mut buf);
        Encoded::from_parts(Kind::Write, buf)
    }

    /// A record of `kind` with `payload`.
    pub fn new(kind: Kind, payload: &[u8]) -> Encoded {
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.resize(HEADER, 0);
        buf.extend_from_slice(payload);
        Encoded::from_parts(kind, buf)
    }

    /// A record of `kind` whose payload is what `head` appends followed by `tail`. The
    /// checksum covers both; only the head is copied: the caller keeps `tail` and writes
    /// it right after [`Encoded::bytes`] (same bytes, [`Encoded::tail_len`] of them).
    pub fn with_tail(
        kind: Kind,
        head_len: usize,
        head: impl FnOnce(&mut Vec<u8>),
        tail: &[u8],
    ) -> Encoded {
        let mut buf = Vec::with_capacity(HEADER + head_len);
        buf.resize(HEADER, 0);
        head(&mut buf);
        let mut e = Encoded::from_parts(kind, buf);
        e.payload_crc.update(tail);
        e.tail = tail.len();
        e
    }

    /// A record of `kind` whose payload is what `head` appends, `body`'s length (u32),
    /// then `body` as one LZ4 block, compressed here (on the caller's thread).
    pub fn with_lz4_body(
        kind: Kind,
        head_len: usize,
        head: impl FnOnce(&mut Vec<u8>),
        body: &[u8],
    ) -> Encoded {
        let max = lz4_flex::block::get_maximum_output_size(body.len());
        let mut buf = Vec::with_capacity(HEADER + head_len + 4 + max);
        buf.resize(HEADER, 0);
        head(&mut buf);
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let start = buf.len();
        buf.resize(start + max, 0);
        // The output has the block format's worst-case size, so this cannot fail.
        let n = lz4_flex::block::compress_into(body, &mut buf[start..]).unwrap_or(0);
        buf.truncate(start + n);
        Encoded::from_parts(kind, buf)
    }

    fn from_parts(kind: Kind, buf: Vec<u8>) -> Encoded {
        let mut payload_crc = crc32fast::Hasher::new();
        payload_crc.update(&buf[HEADER..]);
        Encoded {
            buf,
            tail: 0,
            kind,
            payload_crc,
        }
    }

    /// Encoded size in the log, tail included.
    pub fn len(&self) -> usize {
        self.buf.len() + self.tail
    }

    /// Bytes of the tail the owner writes after [`Encoded::bytes`] (0 for most records).
    pub fn tail_len(&self) -> usize {
        self.tail
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Stamps the sequence number and the checksum; returns the record's bytes (up to
    /// its tail, if it has one).
    pub fn seal(&mut self, lsn: Lsn) -> &[u8] {
        let len = (self.len() - 8) as u32;
        let mut head = [0u8; 13];
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[4] = self.kind as u8;
        head[5..13].copy_from_slice(&lsn.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.combine(&self.payload_crc);
        let crc = crc.finalize();
        self.buf[0..4].copy_from_slice(&head[0..4]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf[8..HEADER].copy_from_slice(&head[4..13]);
        &self.buf
    }

    /// The bytes as last sealed (up to the tail).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// One record read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The raw kind byte (see [`Kind::from_byte`]); unknown kinds still decode, so a
    /// reader can skip them knowing they were intact.
    pub kind: u8,
    pub lsn: Lsn,
    pub payload: &'a [u8],
    /// Bytes the record occupies, header included.
    pub size: usize,
}

/// What [`decode`] found at the start of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Ok(Record<'a>),
    /// The slice ends before the record its header announces (a torn tail, or damage).
    Incomplete,
    /// Not a record: impossible length or a checksum mismatch.
    Corrupt,
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(head) = bytes.get(..HEADER) else {
        return Decoded::Incomplete;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if !(9..=MAX_LEN).contains(&len) {
        return Decoded::Corrupt;
    }
    let size = 8 + len as usize;
    let Some(rec) = bytes.get(..size) else {
        return Decoded::Incomplete;
    };
    let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&rec[0..4]);
    crc.update(&rec[8..]);
    if crc.finalize() != stored {
        return Decoded::Corrupt;
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&rec[9..HEADER]);
    Decoded::Ok(Record {
        kind: rec[8],
        lsn: u64::from_le_bytes(lsn),
        payload: &rec[HEADER..],
        size,
    })
}

/// Cheap test run before [`decode`] while searching for the next record after damage:
/// a known kind and a sequence number in `(after, after + limit]`. Random bytes pass it
/// rarely, so the search rarely pays for a checksum.
pub fn plausible_at(bytes: &[u8], after: Lsn, limit: u64) -> bool {
    let Some(head) = bytes.get(..HEADER) else {
        return false;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if !(9..=MAX_LEN).contains(&len) || Kind::from_byte(head[8]).is_none() {
        return false;
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&head[9..HEADER]);
    let lsn = u64::from_le_bytes(lsn);
    lsn > after && lsn - after <= limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(payload: &[u8], lsn: Lsn) -> Vec<u8> {
        let mut e = Encoded::new(Kind::Write, payload);
        e.seal(lsn).to_vec()
    }

    #[test]
    fn round_trip() {
        let bytes = sealed(b"hello", 42);
        assert_eq!(
            decode(&bytes),
            Decoded::Ok(Record {
                kind: 1,
                lsn: 42,
                payload: b"hello",
                size: HEADER + 5
            })
        );
        // Followed by more bytes: only the first record is taken.
        let mut two = bytes.clone();
        two.extend_from_slice(&sealed(b"", 43));
        match decode(&two) {
            Decoded::Ok(r) => assert_eq!(r.size, bytes.len()),
            other => panic!("{other:?}"),
        }
        assert!(plausible_at(&bytes, 41, 1));
        assert!(!plausible_at(&bytes, 42, 10));
    }

    #[test]
    fn resealing_changes_only_the_header() {
        let mut e = Encoded::new(Kind::Write, b"payload");
        let a = e.seal(1).to_vec();
        let b = e.seal(2).to_vec();
        assert_eq!(a[HEADER..], b[HEADER..]);
        assert!(matches!(decode(&b), Decoded::Ok(r) if r.lsn == 2));
    }

    /// A record with a tail, written as its bytes followed by the tail, reads back as one
    /// record whose payload is head + tail, under any sequence number.
    #[test]
    fn a_tail_is_part_of_the_record() {
        let mut e = Encoded::with_tail(
            Kind::WriteBody,
            4,
            |b| b.extend_from_slice(b"head"),
            b" and tail",
        );
        assert_eq!(e.len(), HEADER + 13);
        assert_eq!(e.tail_len(), 9);
        for lsn in [1, 99] {
            let mut bytes = e.seal(lsn).to_vec();
            bytes.extend_from_slice(b" and tail");
            assert_eq!(
                decode(&bytes),
                Decoded::Ok(Record {
                    kind: 2,
                    lsn,
                    payload: b"head and tail",
                    size: HEADER + 13
                })
            );
            // The same payload in one buffer is the same record, byte for byte.
            assert_eq!(
                bytes,
                Encoded::new(Kind::WriteBody, b"head and tail").seal(lsn)
            );
            assert!(plausible_at(&bytes, lsn - 1, 1));
        }
    }

    /// A kind-3 record holds the head, the body's length and an LZ4 block of the body;
    /// any damaged byte of it, compressed payload included, fails the checksum.
    #[test]
    fn a_compressed_body_round_trips_and_damage_is_detected() {
        let body = b"cpu,host=a,region=r usage_user=1.5,uptime=3i 1700000000\n".repeat(100);
        let mut e = Encoded::with_lz4_body(
            Kind::WriteBodyLz4,
            4,
            |b| b.extend_from_slice(b"head"),
            &body,
        );
        assert_eq!(e.tail_len(), 0);
        assert!(e.len() < HEADER + 4 + body.len() / 4, "{} bytes", e.len());
        let bytes = e.seal(9).to_vec();
        let Decoded::Ok(r) = decode(&bytes) else {
            panic!("not a record")
        };
        assert_eq!((r.kind, r.lsn, r.size), (3, 9, bytes.len()));
        assert_eq!(&r.payload[..4], b"head");
        assert_eq!(r.payload[4..8], (body.len() as u32).to_le_bytes());
        assert_eq!(
            lz4_flex::block::decompress(&r.payload[8..], body.len()).unwrap(),
            body
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(decode(&bad), Decoded::Ok(_)), "byte {i}");
        }
    }

    #[test]
    fn zeros_and_short_input_are_not_records() {
        assert_eq!(decode(&[]), Decoded::Incomplete);
        assert_eq!(decode(&[0; 64]), Decoded::Corrupt);
        assert_eq!(decode(&[0xff; 64]), Decoded::Corrupt);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any single damaged byte is detected: the damaged bytes never decode as a
        /// record (neither the original nor a different one).
        #[test]
        fn any_byte_corruption_detected(
            payload in prop::collection::vec(any::<u8>(), 0..300),
            lsn in any::<u64>(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut bytes = sealed(&payload, lsn);
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
            prop_assert!(!matches!(decode(&bytes), Decoded::Ok(_)));
        }

        /// Any truncation is detected as incomplete, never as a shorter record.
        #[test]
        fn any_truncation_detected(
            payload in prop::collection::vec(any::<u8>(), 0..300),
            lsn in any::<u64>(),
            at in any::<prop::sample::Index>(),
        ) {
            let bytes = sealed(&payload, lsn);
            let cut = at.index(bytes.len());
            prop_assert_eq!(decode(&bytes[..cut]), Decoded::Incomplete);
        }

        /// Two damaged bytes anywhere are detected too (CRC-32 catches every error burst
        /// up to 32 bits and all but 2^-32 of the rest).
        #[test]
        fn two_byte_corruption_detected(
            payload in prop::collection::vec(any::<u8>(), 0..100),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            xa in 1u8..=255,
            xb in 1u8..=255,
        ) {
            let mut bytes = sealed(&payload, 7);
            let (i, j) = (a.index(bytes.len()), b.index(bytes.len()));
            bytes[i] ^= xa;
            bytes[j] ^= xb;
            if bytes != sealed(&payload, 7) {
                prop_assert!(!matches!(decode(&bytes), Decoded::Ok(_)));
            }
        }
    }
}
