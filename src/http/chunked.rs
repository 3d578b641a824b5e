//! `Transfer-Encoding: chunked` request bodies, decoded in place.
//!
//! The decoder walks the raw bytes after the head and moves each chunk's data down over the
//! size lines that preceded it, so the decoded body ends up contiguous right after the head
//! in the same buffer: no second buffer, each byte moved at most once, and the state between
//! two reads is a few integers. It is resumable: feed it the buffer again after more bytes
//! arrived and it carries on from where it stopped.

use std::ops::Range;

/// Longest chunk-size line accepted (size plus extensions), and most trailer bytes.
const MAX_SIZE_LINE: usize = 1024;
const MAX_TRAILER_BYTES: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// 400: not valid chunked framing.
    Malformed(&'static str),
    /// 413: the decoded body would exceed the limit.
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkedDecoder {
    body_start: usize,
    decoded_end: usize,
    raw_pos: usize,
    trailer_bytes: usize,
    state: State,
}

impl ChunkedDecoder {
    /// A decoder whose raw chunked data (and decoded body) start at `body_start`.
    pub fn new(body_start: usize) -> Self {
        ChunkedDecoder {
            body_start,
            decoded_end: body_start,
            raw_pos: body_start,
            trailer_bytes: 0,
            state: State::Size,
        }
    }

    /// Decodes as much of `buf` as is there. `Ok(true)` once the terminating chunk and the
    /// trailer section are complete; `Ok(false)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut [u8], max_body: usize) -> Result<bool, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Size => {
                    let avail = &buf[self.raw_pos..];
                    let Some(nl) = memchr::memchr(b'\n', &avail[..avail.len().min(MAX_SIZE_LINE)])
                    else {
                        if avail.len() >= MAX_SIZE_LINE {
                            return Err(ChunkError::Malformed("chunk size line too long"));
                        }
                        return Ok(false);
                    };
                    let size = parse_size_line(&avail[..nl])?;
                    self.raw_pos += nl + 1;
                    let decoded = (self.decoded_end - self.body_start) as u64;
                    if decoded.saturating_add(size) > max_body as u64 {
                        return Err(ChunkError::TooLarge);
                    }
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(remaining) => {
                    let avail = buf.len() - self.raw_pos;
                    if avail == 0 {
                        return Ok(false);
                    }
                    let n = remaining.min(avail as u64) as usize;
                    buf.copy_within(self.raw_pos..self.raw_pos + n, self.decoded_end);
                    self.raw_pos += n;
                    self.decoded_end += n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    let avail = &buf[self.raw_pos..];
                    match avail {
                        [b'\r', b'\n', ..] => {
                            self.raw_pos += 2;
                            self.state = State::Size;
                        }
                        [] | [b'\r'] => return Ok(false),
                        _ => return Err(ChunkError::Malformed("chunk data not followed by CRLF")),
                    }
                }
                State::Trailer => {
                    let avail = &buf[self.raw_pos..];
                    let Some(nl) = memchr::memchr(b'\n', avail) else {
                        // +2: the pending bytes may be the CRLF that ends the trailer
                        // section, which is not counted once it is complete either.
                        if self.trailer_bytes + avail.len() > MAX_TRAILER_BYTES + 2 {
                            return Err(ChunkError::Malformed("chunked trailer too large"));
                        }
                        return Ok(false);
                    };
                    let line = &avail[..nl];
                    let Some(line) = line.strip_suffix(b"\r") else {
                        return Err(ChunkError::Malformed("bare LF in chunked trailer"));
                    };
                    self.raw_pos += nl + 1;
                    if line.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    self.trailer_bytes += nl + 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(ChunkError::Malformed("chunked trailer too large"));
                    }
                    let colon = line.iter().position(|&b| b == b':');
                    let valid_name = colon.is_some_and(|c| {
                        c > 0 && line[..c].iter().all(|&b| b.is_ascii_graphic() && b != b':')
                    });
                    if !valid_name || line.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
                        return Err(ChunkError::Malformed("invalid chunked trailer field"));
                    }
                }
            }
        }
    }

    /// Where the decoded body lies in the buffer.
    pub fn body_range(&self) -> Range<usize> {
        self.body_start..self.decoded_end
    }

    /// Decoded body bytes so far.
    pub fn decoded_len(&self) -> usize {
        self.decoded_end - self.body_start
    }

    /// The first raw byte not yet consumed; once done, where the next request starts.
    pub fn consumed(&self) -> usize {
        self.raw_pos
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// `1*HEXDIG [ BWS ";" ext ] CR` (the LF already stripped by the caller).
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(ChunkError::Malformed("bare LF in chunk size line"));
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::Malformed("invalid chunk size"));
    }
    // A size that does not fit in 64 bits is malformed (400), not merely too large: no
    // body could ever match it. One that fits is checked against the limit by the caller.
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let v = (b as char).to_digit(16).unwrap_or(0);
        if size >> 60 != 0 {
            return Err(ChunkError::Malformed("chunk size overflows 64 bits"));
        }
        size = (size << 4) | u64::from(v);
    }
    let rest = &line[digits..];
    let rest_trimmed = {
        let mut r = rest;
        while let [b' ' | b'\t', tail @ ..] = r {
            r = tail;
        }
        r
    };
    if rest.is_empty() {
        return Ok(size);
    }
    // Chunk extensions are allowed and ignored, but must be printable.
    if rest_trimmed.first() == Some(&b';')
        && rest_trimmed
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Ok(size);
    }
    Err(ChunkError::Malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `raw` (placed after a 3-byte fake head) in one call.
    fn decode_all(raw: &[u8], max: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut buf = b"HDR".to_vec();
        buf.extend_from_slice(raw);
        let mut d = ChunkedDecoder::new(3);
        if d.decode(&mut buf, max)? {
            Ok((buf[d.body_range()].to_vec(), d.consumed() - 3))
        } else {
            Err(ChunkError::Malformed("incomplete"))
        }
    }

    #[test]
    fn decodes_chunks_and_reports_the_end() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        let (body, used) = decode_all(raw, 1000).unwrap();
        assert_eq!(body, b"hello, world");
        assert_eq!(&raw[used..], b"NEXT");
    }

    #[test]
    fn trailers_are_accepted_and_ignored() {
        let raw = b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nY: 2\r\n\r\n";
        let (body, used) = decode_all(raw, 1000).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(used, raw.len());
    }

    #[test]
    fn upper_and_lower_hex() {
        let raw = format!(
            "A\r\n{}\r\na\r\n{}\r\n0\r\n\r\n",
            "x".repeat(10),
            "y".repeat(10)
        );
        let (body, _) = decode_all(raw.as_bytes(), 1000).unwrap();
        assert_eq!(body.len(), 20);
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for raw in [
            &b"g\r\n"[..],
            b"-1\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            match decode_all(raw, 1000) {
                Err(ChunkError::Malformed(m)) => assert_ne!(m, "incomplete", "{:?}", raw),
                other => panic!("{:?} gave {:?}", String::from_utf8_lossy(raw), other),
            }
        }
    }

    #[test]
    fn size_limit_is_checked_at_the_size_line() {
        assert_eq!(decode_all(b"b\r\n", 10).unwrap_err(), ChunkError::TooLarge);
        assert_eq!(
            decode_all(b"5\r\nhello\r\n6\r\n", 10).unwrap_err(),
            ChunkError::TooLarge
        );
        assert_eq!(
            decode_all(b"ffffffffffffffff\r\n", 1 << 30).unwrap_err(),
            ChunkError::TooLarge
        );
        assert!(decode_all(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 10).is_ok());
    }

    #[test]
    fn a_size_that_overflows_64_bits_is_malformed_not_too_large() {
        for raw in [
            &b"10000000000000000\r\n"[..],
            b"ffffffffffffffffff\r\n",
            b"fffffffffffffffff;ext=1\r\n",
        ] {
            assert_eq!(
                decode_all(raw, usize::MAX).unwrap_err(),
                ChunkError::Malformed("chunk size overflows 64 bits"),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Leading zeros do not overflow: the value is what counts.
        assert!(decode_all(b"00000000000000000000005\r\nhello\r\n0\r\n\r\n", 10).is_ok());
    }

    #[test]
    fn trailer_at_the_limit_does_not_depend_on_reads() {
        let field = format!("X: {}\r\n", "a".repeat(MAX_TRAILER_BYTES - 5));
        let mut raw = b"0\r\n".to_vec();
        raw.extend_from_slice(field.as_bytes());
        raw.extend_from_slice(b"\r\n");
        for cut in [raw.len() - 1, raw.len() - 2, raw.len() - 3] {
            let mut buf = raw[..cut].to_vec();
            let mut d = ChunkedDecoder::new(0);
            assert_eq!(d.decode(&mut buf, 100), Ok(false), "cut {}", cut);
            buf.extend_from_slice(&raw[cut..]);
            assert_eq!(d.decode(&mut buf, 100), Ok(true), "cut {}", cut);
        }
        // One byte more is too much, whole or split.
        let field = format!("X: {}\r\n", "a".repeat(MAX_TRAILER_BYTES - 4));
        let mut raw = b"0\r\n".to_vec();
        raw.extend_from_slice(field.as_bytes());
        raw.extend_from_slice(b"\r\n");
        let mut d = ChunkedDecoder::new(0);
        assert!(d.decode(&mut raw.clone(), 100).is_err());
    }

    #[test]
    fn endless_size_line_is_rejected() {
        let raw = vec![b'1'; MAX_SIZE_LINE + 10];
        let mut buf = raw.clone();
        let mut d = ChunkedDecoder::new(0);
        assert!(d.decode(&mut buf, usize::MAX).is_err());
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let raw =
            b"4\r\nWiki\r\n5;a=b\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nREST";
        let (expected, used) = decode_all(raw, 1000).unwrap();
        for cut in 0..raw.len() {
            let mut buf = raw[..cut].to_vec();
            let mut d = ChunkedDecoder::new(0);
            let done = d.decode(&mut buf, 1000).unwrap();
            assert!(!done || cut >= used, "done too early at cut {}", cut);
            buf.extend_from_slice(&raw[cut..]);
            assert!(d.decode(&mut buf, 1000).unwrap(), "cut {}", cut);
            assert_eq!(&buf[d.body_range()], &expected[..], "cut {}", cut);
            assert_eq!(d.consumed(), used);
        }
    }

    #[test]
    fn byte_at_a_time() {
        let raw = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut buf = Vec::new();
        let mut d = ChunkedDecoder::new(0);
        let mut done = false;
        for &b in raw.iter() {
            buf.push(b);
            done = d.decode(&mut buf, 100).unwrap();
        }
        assert!(done);
        assert_eq!(&buf[d.body_range()], b"abcde");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1000) {
            let mut buf = bytes;
            let mut d = ChunkedDecoder::new(0);
            let _ = d.decode(&mut buf, max);
        }

        #[test]
        fn encoded_bodies_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2000), sizes in proptest::collection::vec(1usize..300, 1..20)) {
            let mut raw = encode_chunks(&body, &sizes);
            raw.extend_from_slice(b"0\r\n\r\n");
            let mut d = ChunkedDecoder::new(0);
            prop_assert!(d.decode(&mut raw, usize::MAX).unwrap());
            prop_assert_eq!(&raw[d.body_range()], &body[..]);
        }

        /// Whether the bytes come at once or in pieces changes nothing: same body, same end,
        /// same error (valid or not, over the limit or not).
        #[test]
        fn any_split_of_chunk_shaped_bytes_gives_the_same_outcome(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"0123456789abcdefABCDEF;=: \t\r\n\r\nxyz\x7f".to_vec()),
                0..300,
            ),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            max in 0usize..400,
        ) {
            let whole = outcome(&[&bytes], max);
            prop_assert_eq!(outcome(&split(&bytes, &cuts), max), whole);
        }

        #[test]
        fn any_split_of_an_encoding_gives_the_same_body(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..200, 1..10),
            trailer in "([A-Za-z-]{1,8}: [ -~]{0,20}\r\n){0,3}",
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut raw = encode_chunks(&body, &sizes);
            raw.extend_from_slice(b"0\r\n");
            raw.extend_from_slice(trailer.as_bytes());
            raw.extend_from_slice(b"\r\nNEXT");
            let whole = outcome(&[&raw], usize::MAX);
            prop_assert_eq!(&whole, &Outcome::Done(body.clone(), raw.len() - 4));
            prop_assert_eq!(outcome(&split(&raw, &cuts), usize::MAX), whole);
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// Decoded body and bytes consumed.
        Done(Vec<u8>, usize),
        /// Waiting, with this much decoded.
        Incomplete(usize),
        Failed(ChunkError),
    }

    /// `body` chunk-encoded with chunk sizes taken in turn from `sizes` (no last chunk).
    fn encode_chunks(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            raw.extend_from_slice(format!("{:x}\r\n", n).as_bytes());
            raw.extend_from_slice(&rest[..n]);
            raw.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        raw
    }

    /// Feeds `reads` one after another to one decoder.
    fn outcome(reads: &[&[u8]], max: usize) -> Outcome {
        let mut buf = Vec::new();
        let mut d = ChunkedDecoder::new(0);
        for read in reads {
            buf.extend_from_slice(read);
            match d.decode(&mut buf, max) {
                Ok(true) => return Outcome::Done(buf[d.body_range()].to_vec(), d.consumed()),
                Ok(false) => {}
                Err(e) => return Outcome::Failed(e),
            }
        }
        Outcome::Incomplete(d.decoded_len())
    }

    fn split<'a>(bytes: &'a [u8], cuts: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.sort();
        let mut reads = Vec::new();
        let mut last = 0;
        for c in cuts {
            reads.push(&bytes[last..c]);
            last = c;
        }
        reads.push(&bytes[last..]);
        reads
    }
}
