//! HTTP/1.1 on the client side: building the request bytes the scenarios
//! send, and a small incremental response parser that tells where one
//! response ends on a keep-alive connection. The head is parsed with
//! `httparse`; the body is framed here (Content-Length, chunked, bodiless
//! statuses, HEAD, read-until-close) and counted but never stored.

use std::fmt;

/// Largest response head accepted before the response is declared bad.
const MAX_HEAD: usize = 64 * 1024;
/// Headers httparse may see in one response head.
const MAX_HEADERS: usize = 64;

/// Builds a bodiless request (`GET`, `HEAD`, ...).
pub fn build_request(method: &str, path: &str, host: &str, close: bool) -> Vec<u8> {
    let conn = if close { "close" } else { "keep-alive" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: metricstream-bench\r\nConnection: {conn}\r\n\r\n"
    )
    .into_bytes()
}

/// Builds a `POST` request carrying `body`; `gzip` adds `Content-Encoding: gzip`.
pub fn build_post(path: &str, host: &str, body: &[u8], gzip: bool) -> Vec<u8> {
    let encoding = if gzip {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: metricstream-bench\r\nConnection: keep-alive\r\nContent-Type: text/plain; charset=utf-8\r\n{encoding}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// What the scenarios need to know about one complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    pub status: u16,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// Body bytes after de-chunking framing (chunk payloads only).
    pub body_len: u64,
}

/// Why a byte stream is not an HTTP/1.x response we can frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Head(String),
    HeadTooLarge,
    BadContentLength,
    BadChunk,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Head(e) => write!(f, "bad response head: {e}"),
            ParseError::HeadTooLarge => write!(f, "response head over {MAX_HEAD} bytes"),
            ParseError::BadContentLength => write!(f, "bad Content-Length"),
            ParseError::BadChunk => write!(f, "bad chunked encoding"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `saw_digit` guards against empty sizes.
    Size {
        size: u64,
        saw_digit: bool,
    },
    /// Skipping a chunk extension up to LF.
    Ext {
        size: u64,
    },
    /// Expecting LF after CR of the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section; `line_len` counts bytes of the current line (sans CR).
    Trailer {
        line_len: u64,
    },
    TrailerLf {
        line_len: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed { remaining: u64 },
    Chunked(Chunk),
    UntilClose,
}

/// Incremental parser for a sequence of responses on one connection.
#[derive(Debug)]
pub struct ResponseParser {
    head: Vec<u8>,
    state: State,
    head_request: bool,
    current: ResponseInfo,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        ResponseParser {
            head: Vec::with_capacity(512),
            state: State::Head,
            head_request: false,
            current: ResponseInfo {
                status: 0,
                keep_alive: true,
                body_len: 0,
            },
        }
    }

    /// Declares whether the request being answered was `HEAD` (no body follows).
    pub fn set_head_request(&mut self, head: bool) {
        self.head_request = head;
    }

    /// True when no byte of a response has been seen yet.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.head.is_empty()
    }

    /// Feeds received bytes. Returns how many were consumed and, when a
    /// response ended within them, its summary (the parser is then ready for
    /// the next response; unconsumed bytes belong to it).
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<ResponseInfo>), ParseError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Head => {
                    let before = self.head.len();
                    self.head.extend_from_slice(&data[pos..]);
                    match self.parse_head()? {
                        None => {
                            if self.head.len() > MAX_HEAD {
                                return Err(ParseError::HeadTooLarge);
                            }
                            return Ok((data.len(), None));
                        }
                        Some(head_len) => {
                            // Bytes of `data` that belonged to the head.
                            pos += head_len - before;
                            self.head.clear();
                            if let Some(done) = self.finish_if_complete() {
                                return Ok((pos, Some(done)));
                            }
                            if self.state == State::Head {
                                // A 1xx interim response: keep parsing.
                                continue;
                            }
                        }
                    }
                }
                State::Fixed { remaining } => {
                    let take = remaining.min((data.len() - pos) as u64);
                    pos += take as usize;
                    self.current.body_len += take;
                    self.state = State::Fixed {
                        remaining: remaining - take,
                    };
                    if let Some(done) = self.finish_if_complete() {
                        return Ok((pos, Some(done)));
                    }
                    return Ok((pos, None));
                }
                State::UntilClose => {
                    self.current.body_len += (data.len() - pos) as u64;
                    return Ok((data.len(), None));
                }
                State::Chunked(_) => {
                    let (used, done) = self.feed_chunked(&data[pos..])?;
                    pos += used;
                    if done {
                        return Ok((pos, Some(self.complete())));
                    }
                    return Ok((pos, None));
                }
            }
        }
    }

    /// The peer closed the connection. A body framed by close ends here;
    /// otherwise a partial response is an error (`Ok(None)` when idle).
    pub fn eof(&mut self) -> Result<Option<ResponseInfo>, ParseError> {
        match self.state {
            State::UntilClose => Ok(Some(self.complete())),
            _ => Ok(None),
        }
    }

    /// Parses the buffered head. On success sets up body framing and
    /// returns the head length; 1xx responses leave the state at `Head`.
    fn parse_head(&mut self) -> Result<Option<usize>, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&self.head) {
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(n)) => n,
            Err(e) => return Err(ParseError::Head(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let version = resp.version.unwrap_or(1);
        let mut keep_alive = version >= 1;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(ParseError::BadContentLength)?;
                if content_length.is_some_and(|old| old != v) {
                    return Err(ParseError::BadContentLength);
                }
                content_length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                chunked = v
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim() == "chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                for token in v.split(',').map(str::trim) {
                    if token == "close" {
                        keep_alive = false;
                    } else if token == "keep-alive" {
                        keep_alive = true;
                    }
                }
            }
        }
        if (100..200).contains(&status) {
            // Interim response (e.g. 100 Continue): the real one follows.
            self.state = State::Head;
            return Ok(Some(head_len));
        }
        self.current = ResponseInfo {
            status,
            keep_alive,
            body_len: 0,
        };
        let bodiless = self.head_request || status == 204 || status == 304;
        self.state = if bodiless {
            State::Fixed { remaining: 0 }
        } else if chunked {
            State::Chunked(Chunk::Size {
                size: 0,
                saw_digit: false,
            })
        } else if let Some(n) = content_length {
            State::Fixed { remaining: n }
        } else {
            // No framing: the body runs to the end of the connection.
            self.current.keep_alive = false;
            State::UntilClose
        };
        Ok(Some(head_len))
    }

    fn finish_if_complete(&mut self) -> Option<ResponseInfo> {
        if self.state == (State::Fixed { remaining: 0 }) {
            Some(self.complete())
        } else {
            None
        }
    }

    fn complete(&mut self) -> ResponseInfo {
        self.state = State::Head;
        self.current
    }

    /// Runs the chunk state machine; returns bytes used and whether the
    /// terminating chunk and trailers have been read.
    fn feed_chunked(&mut self, data: &[u8]) -> Result<(usize, bool), ParseError> {
        let State::Chunked(mut st) = self.state else {
            return Ok((0, false));
        };
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            st = match st {
                Chunk::Size { size, saw_digit } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or(ParseError::BadChunk)?;
                        Chunk::Size {
                            size,
                            saw_digit: true,
                        }
                    }
                    b';' | b' ' | b'\t' if saw_digit => Chunk::Ext { size },
                    b'\r' if saw_digit => Chunk::SizeLf { size },
                    b'\n' if saw_digit => end_of_size_line(size),
                    _ => return Err(ParseError::BadChunk),
                },
                Chunk::Ext { size } => match b {
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => end_of_size_line(size),
                    _ => Chunk::Ext { size },
                },
                Chunk::SizeLf { size } => match b {
                    b'\n' => end_of_size_line(size),
                    _ => return Err(ParseError::BadChunk),
                },
                Chunk::Data { remaining } => {
                    let take = remaining.min((data.len() - i) as u64);
                    self.current.body_len += take;
                    i += take as usize;
                    let remaining = remaining - take;
                    st = if remaining == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { remaining }
                    };
                    continue;
                }
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size {
                        size: 0,
                        saw_digit: false,
                    },
                    _ => return Err(ParseError::BadChunk),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size {
                        size: 0,
                        saw_digit: false,
                    },
                    _ => return Err(ParseError::BadChunk),
                },
                Chunk::Trailer { line_len } => match b {
                    b'\r' => Chunk::TrailerLf { line_len },
                    b'\n' if line_len == 0 => {
                        self.state = State::Head;
                        return Ok((i + 1, true));
                    }
                    b'\n' => Chunk::Trailer { line_len: 0 },
                    _ if line_len > MAX_HEAD as u64 => return Err(ParseError::HeadTooLarge),
                    _ => Chunk::Trailer {
                        line_len: line_len + 1,
                    },
                },
                Chunk::TrailerLf { line_len } => match b {
                    b'\n' if line_len == 0 => {
                        self.state = State::Head;
                        return Ok((i + 1, true));
                    }
                    b'\n' => Chunk::Trailer { line_len: 0 },
                    _ => return Err(ParseError::BadChunk),
                },
            };
            i += 1;
        }
        self.state = State::Chunked(st);
        Ok((i, false))
    }
}

fn end_of_size_line(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Trailer { line_len: 0 }
    } else {
        Chunk::Data { remaining: size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, collecting every response.
    fn run(p: &mut ResponseParser, input: &[u8], step: usize) -> Vec<ResponseInfo> {
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut off = 0;
            while off < piece.len() {
                let (used, done) = p.feed(&piece[off..]).expect("parse");
                off += used;
                if let Some(r) = done {
                    out.push(r);
                } else {
                    assert_eq!(off, piece.len(), "partial feed must consume all");
                }
            }
        }
        out
    }

    fn all_steps(input: &[u8], expect: &[ResponseInfo]) {
        for step in [1, 2, 3, 7, 16, input.len().max(1)] {
            let mut p = ResponseParser::new();
            assert_eq!(run(&mut p, input, step), expect, "step {step}");
            assert!(p.is_idle(), "step {step}");
        }
    }

    fn info(status: u16, keep_alive: bool, body_len: u64) -> ResponseInfo {
        ResponseInfo {
            status,
            keep_alive,
            body_len,
        }
    }

    #[test]
    fn no_content_without_length() {
        all_steps(
            b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
            &[info(204, true, 0)],
        );
    }

    #[test]
    fn content_length_and_keep_alive_sequence() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 503 Busy\r\ncontent-length: 0\r\nConnection: close\r\n\r\n";
        all_steps(input, &[info(200, true, 5), info(503, false, 0)]);
    }

    #[test]
    fn chunked_with_extension_and_trailer() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        all_steps(input, &[info(200, true, 23), info(204, true, 0)]);
    }

    #[test]
    fn chunked_without_trailer() {
        all_steps(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            &[info(200, true, 1)],
        );
    }

    #[test]
    fn interim_100_is_skipped() {
        all_steps(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            &[info(204, true, 0)],
        );
    }

    #[test]
    fn not_modified_ignores_content_length() {
        all_steps(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            &[info(304, true, 0)],
        );
    }

    #[test]
    fn head_request_has_no_body() {
        let mut p = ResponseParser::new();
        p.set_head_request(true);
        let got = run(&mut p, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 4);
        assert_eq!(got, vec![info(200, true, 0)]);
    }

    #[test]
    fn http10_defaults_to_close_and_keep_alive_token() {
        all_steps(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            &[info(200, false, 0)],
        );
        all_steps(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            &[info(200, true, 0)],
        );
    }

    #[test]
    fn body_until_close() {
        let mut p = ResponseParser::new();
        let got = run(&mut p, b"HTTP/1.1 200 OK\r\n\r\nsome body", 3);
        assert!(got.is_empty());
        assert_eq!(p.eof(), Ok(Some(info(200, false, 9))));
    }

    #[test]
    fn eof_mid_response_is_not_a_response() {
        let mut p = ResponseParser::new();
        let (_, done) = p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .expect("parse");
        assert!(done.is_none());
        assert_eq!(p.eof(), Ok(None));
    }

    #[test]
    fn leftover_bytes_are_not_consumed() {
        let mut p = ResponseParser::new();
        let input = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 2";
        let (used, done) = p.feed(input).expect("parse");
        assert_eq!(done, Some(info(204, true, 0)));
        assert_eq!(used, input.len() - b"HTTP/1.1 2".len());
    }

    #[test]
    fn errors() {
        let mut p = ResponseParser::new();
        assert!(matches!(
            p.feed(b"garbage\r\n\r\n"),
            Err(ParseError::Head(_))
        ));
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ParseError::BadContentLength)
        );
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ParseError::BadContentLength)
        );
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ParseError::BadChunk)
        );
        let mut p = ResponseParser::new();
        let big = vec![b'a'; MAX_HEAD + 10];
        let mut input = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        input.extend_from_slice(&big);
        assert!(p.feed(&input).is_err());
    }

    #[test]
    fn requests_are_well_formed() {
        let r = build_request("GET", "/ping", "127.0.0.1:8080", true);
        let s = String::from_utf8(r).expect("utf8");
        assert!(s.starts_with("GET /ping HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
        let p = build_post("/write", "h", b"abc", true);
        let s = String::from_utf8(p).expect("utf8");
        assert!(s.contains("Content-Length: 3\r\n"));
        assert!(s.contains("Content-Encoding: gzip\r\n"));
        assert!(s.ends_with("\r\n\r\nabc"));
    }
}
