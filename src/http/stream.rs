//! Streamed response bodies: the [`BodySource`] a route answers with when its body is too
//! big to hold (a `/metrics` scrape of a million series), and the framing of its parts.
//!
//! The engine asks for the first part before it writes the head: a body complete with it,
//! or any body for an HTTP/1.0 client (which cannot take chunks; made whole), is sent with
//! its `Content-Length` like any answer. Otherwise the head says `Transfer-Encoding:
//! chunked` and the engine asks the source for one part per call, each sent as one chunk,
//! and the last chunk once the source is done. A part is produced only
//! after the previous one was written (the I/O layer calls the engine again once its
//! output is out), so a connection holds about one part whatever the body's size, and a
//! client that reads slowly makes the source wait. Dropping the source (a client gone, a
//! write timeout, a shutdown) must release whatever it holds.
//!
//! Pure like the rest of `http/`: no socket, no clock; the source does its work when asked.

use std::fmt;
use std::io;
/// The rest of a body, produced a part at a time on whichever thread runs the engine.
pub trait BodySource: Send {
    /// Appends the next part of the body to `out` (aim for `tuning::STREAM_PART` bytes;
    /// an empty part is fine) and returns `Ok(true)` when the body is complete with it.
    /// An error ends the body early: the connection is closed without the last chunk, so
    /// the client sees a truncated body, never a complete-looking wrong one.
    fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
}

impl fmt::Debug for dyn BodySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodySource")
    }
}

/// A streamed body in progress on one connection (kept in its `Exchange`).
#[derive(Debug)]
pub struct Streaming {
    source: Box<dyn BodySource>,
    /// The head is not written yet: every part so far was empty (a source still gathering,
    /// like `/series`). The reply it will be written from, and how.
    pub pending: Option<PendingHead>,
    /// Each part is a chunk (so for every answer the engine streams: HTTP/1.0 bodies are
    /// sent whole); otherwise raw bytes.
    chunked: bool,
    /// Close the connection after the body (HTTP/1.0, `Connection: close`, shutdown).
    pub close: bool,
}

/// The placeholder of a chunk-size line: eight hex digits (leading zeros are valid chunk
/// sizes), so the part is appended in place and its size written in front afterwards.
const SIZE_LINE: &[u8] = b"00000000\r\n";

/// Appends `part` as one chunk (nothing for an empty part: a zero-size chunk would end
/// the body).
pub fn push_chunk(out: &mut Vec<u8>, part: &[u8]) {
    if part.is_empty() {
        return;
    }
    out.reserve(part.len() + SIZE_LINE.len() + 2);
    let start = out.len();
    out.extend_from_slice(SIZE_LINE);
    write_hex8(&mut out[start..start + 8], part.len() as u32);
    out.extend_from_slice(part);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The head of a streamed reply, written once its first bytes exist: with the whole body
/// and its `Content-Length` if the source finished by then, chunked otherwise.
pub struct PendingHead {
    pub reply: crate::http::service::Reply,
    /// The keep-alive decision and the request's version.
    pub keep: bool,
    pub version: crate::http::request::Version,
}

impl fmt::Debug for PendingHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingHead({})", self.reply.status)
    }
}

impl Streaming {
    pub fn new(source: Box<dyn BodySource>, chunked: bool, close: bool) -> Streaming {
        Streaming {
            source,
            pending: None,
            chunked,
            close,
        }
    }

    /// The source's next part, unframed (for a head still pending).
    pub fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        self.source.fill(out)
    }

    /// Appends the next part, framed; `Ok(true)` when the body is complete (the last chunk
    /// is written too).
    pub fn next_part(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if !self.chunked {
            return self.source.fill(out);
        }
        let start = out.len();
        out.extend_from_slice(SIZE_LINE);
        let done = self.source.fill(out);
        let len = out.len() - start - SIZE_LINE.len();
        if len == 0 {
            out.truncate(start);
        } else {
            let Ok(len) = u32::try_from(len) else {
                out.truncate(start);
                return Err(io::Error::other("a streamed part of 4 GiB or more"));
            };
            write_hex8(&mut out[start..start + 8], len);
            out.extend_from_slice(b"\r\n");
        }
        let done = done?;
        if done {
            out.extend_from_slice(LAST_CHUNK);
        }
        Ok(done)
    }
}

fn write_hex8(dst: &mut [u8], v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in dst.iter_mut().enumerate() {
        *d = HEX[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Hands out `parts` one per call (for the engine's tests too); counts its drop.
    pub struct Parts {
        pub parts: Vec<Vec<u8>>,
        pub dropped: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    }

    impl BodySource for Parts {
        fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
            if !self.parts.is_empty() {
                out.extend_from_slice(&self.parts.remove(0));
            }
            Ok(self.parts.is_empty())
        }
    }

    impl Drop for Parts {
        fn drop(&mut self) {
            if let Some(d) = &self.dropped {
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    fn parts(p: &[&[u8]]) -> Box<dyn BodySource> {
        Box::new(Parts {
            parts: p.iter().map(|b| b.to_vec()).collect(),
            dropped: None,
        })
    }

    #[test]
    fn parts_become_chunks_and_the_last_chunk_follows_the_last_part() {
        let mut s = Streaming::new(parts(&[b"hello", b"", b"world!"]), true, false);
        let mut out = Vec::new();
        assert!(!s.next_part(&mut out).unwrap());
        assert_eq!(out, b"00000005\r\nhello\r\n");
        out.clear();
        // An empty part is no chunk (a zero-size chunk would end the body).
        assert!(!s.next_part(&mut out).unwrap());
        assert!(out.is_empty());
        assert!(s.next_part(&mut out).unwrap());
        assert_eq!(out, b"00000006\r\nworld!\r\n0\r\n\r\n");
        let mut big = Streaming::new(parts(&[&[b'x'; 0x1_2345]]), true, false);
        out.clear();
        assert!(big.next_part(&mut out).unwrap());
        assert!(out.starts_with(b"00012345\r\nxxx"));
    }

    #[test]
    fn without_chunking_parts_are_raw_bytes() {
        let mut s = Streaming::new(parts(&[b"ab", b"cd"]), false, true);
        let mut out = Vec::new();
        assert!(!s.next_part(&mut out).unwrap());
        assert!(s.next_part(&mut out).unwrap());
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn a_failing_source_leaves_its_part_framed_and_reports_the_error() {
        struct Fails;
        impl BodySource for Fails {
            fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
                out.extend_from_slice(b"abc");
                Err(io::Error::other("boom"))
            }
        }
        let mut s = Streaming::new(Box::new(Fails), true, false);
        let mut out = Vec::new();
        assert!(s.next_part(&mut out).is_err());
        // No last chunk: the client sees the body cut short.
        assert_eq!(out, b"00000003\r\nabc\r\n");
    }
}
