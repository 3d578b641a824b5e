//! Request heads: `httparse` over a byte slice, then the framing decisions RFC 9112 asks for.
//!
//! Every way a head can make the body's length ambiguous is a hard error here (400 and close
//! upstream): both `Content-Length` and `Transfer-Encoding`, differing or malformed
//! `Content-Length` values, a transfer coding other than a single `chunked`, any
//! `Transfer-Encoding` on HTTP/1.0. Those are the request-smuggling vectors; being strict
//! costs well-behaved clients nothing.

use std::mem::MaybeUninit;

/// Headers beyond this count are refused with 431, like a head that is too long.
pub const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    fn from_str(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The method's name as sent on the wire (`Other` has none: `"?"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other => "?",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    /// Anything else (`br`, `deflate`, a list): the write route answers 415.
    Unsupported,
}

/// What the request's `Accept-Encoding` headers say about gzip and identity (RFC 9110
/// §12.5.3), as q-values in thousandths: `None` when a coding is not listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptEncoding {
    gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

impl AcceptEncoding {
    /// Adds one header's list (`gzip;q=0.8, identity`); every header of a request adds to
    /// the same set. An element whose `q` does not parse is ignored.
    pub fn add(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let coding = trim(parts.next().unwrap_or_default());
            let mut q = Some(1000);
            for param in parts {
                let param = trim(param);
                if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
                    q = parse_qvalue(trim(&param[2..]));
                }
            }
            let Some(q) = q else { continue };
            let slot =
                if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                    &mut self.gzip
                } else if coding.eq_ignore_ascii_case(b"identity") {
                    &mut self.identity
                } else if coding == b"*" {
                    &mut self.any
                } else {
                    continue;
                };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }

    /// Whether a response should be gzip-encoded: gzip is acceptable (listed, or covered by
    /// `*`, with `q > 0`) and not less preferred than an identity the client listed (itself
    /// or through `*`). No header, or gzip absent or at `q=0`, means no gzip.
    pub fn prefers_gzip(&self) -> bool {
        let gzip = self.gzip.or(self.any).unwrap_or(0);
        let identity = self.identity.or(self.any).unwrap_or(0);
        gzip > 0 && gzip >= identity
    }
}

/// `0`, `0.5`, `1`, `1.000` (at most three decimals) as thousandths; `None` otherwise.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A parsed request head, borrowing from the receive buffer.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    pub method: Method,
    pub method_str: &'a str,
    /// The request target as sent: path plus optional `?query`.
    pub target: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub version: Version,
    pub framing: BodyFraming,
    /// Keep the connection open after the response (version default and `Connection`).
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// An `Expect` other than `100-continue`: answered 417.
    pub expect_unsupported: bool,
    pub content_encoding: ContentEncoding,
    pub content_type: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    /// The `Accept-Encoding` headers, combined.
    pub accept_encoding: AcceptEncoding,
    /// Bytes of request line + headers, including the blank line.
    pub head_len: usize,
}

/// Why a head was refused. Each maps to one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400: malformed or ambiguous; the message says which.
    Bad(&'static str),
    /// 431: longer than `--max-header-bytes` or more than [`MAX_HEADERS`] headers.
    TooLarge,
    /// 505: an HTTP version other than 1.0 / 1.1.
    Version,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::Version => 505,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HeadError::Bad(m) => m,
            HeadError::TooLarge => "request header fields too large",
            HeadError::Version => "HTTP version not supported",
        }
    }
}

/// The path of the request line at the start of `buf`, read without parsing the head: for
/// choosing the error shape of a head that was refused (too long, malformed). `None` when
/// the request line is not `METHOD SP TARGET SP` with an origin-form target.
pub fn path_hint(buf: &[u8]) -> Option<&str> {
    let line = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next()?;
    if method.is_empty() || !target.starts_with(b"/") {
        return None;
    }
    let path = &target[..memchr::memchr(b'?', target).unwrap_or(target.len())];
    std::str::from_utf8(path).ok()
}

/// Parses the head at the start of `buf`. `Ok(None)` means incomplete (read more), unless
/// `buf` is already longer than `max_header_bytes`, which is `TooLarge`.
pub fn parse_head(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut headers);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_header_bytes {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(e) => {
            return Err(match e {
                httparse::Error::TooManyHeaders => HeadError::TooLarge,
                httparse::Error::Version => {
                    // Judge the version only once the request line is complete, so the
                    // answer (505 or 400) cannot depend on where the reads split it.
                    if memchr::memchr(b'\n', buf).is_none() {
                        if buf.len() > max_header_bytes {
                            return Err(HeadError::TooLarge);
                        }
                        return Ok(None);
                    }
                    if looks_like_other_version(buf) {
                        HeadError::Version
                    } else {
                        HeadError::Bad("malformed request line")
                    }
                }
                httparse::Error::HeaderName => HeadError::Bad("invalid header name"),
                httparse::Error::HeaderValue => HeadError::Bad("invalid header value"),
                httparse::Error::NewLine => HeadError::Bad("invalid line ending"),
                httparse::Error::Token => HeadError::Bad("malformed request line"),
                _ => HeadError::Bad("malformed request head"),
            });
        }
    };
    if head_len > max_header_bytes {
        return Err(HeadError::TooLarge);
    }
    // httparse fills these on Complete.
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("malformed request line"));
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, ""),
    };

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut te_tokens = 0usize;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut expect_unsupported = false;
    let mut content_encoding = ContentEncoding::Identity;
    let mut content_type = None;
    let mut authorization = None;
    let mut accept_encoding = AcceptEncoding::default();
    let mut hosts = 0;

    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let n = parse_content_length(trim(part))?;
                match content_length {
                    Some(prev) if prev != n => {
                        return Err(HeadError::Bad("conflicting Content-Length values"));
                    }
                    _ => content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                te_tokens += 1;
                if token.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(HeadError::Bad("unsupported transfer coding (only chunked)"));
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                expect_unsupported = true;
            }
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            content_encoding = if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
                content_encoding
            } else if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
                ContentEncoding::Gzip
            } else {
                ContentEncoding::Unsupported
            };
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            authorization = Some(value);
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            accept_encoding.add(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err(HeadError::Bad("more than one Host header"));
            }
        }
    }

    let framing = if transfer_encoding {
        if content_length.is_some() {
            return Err(HeadError::Bad(
                "both Content-Length and Transfer-Encoding present",
            ));
        }
        if version == Version::Http10 {
            return Err(HeadError::Bad(
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ));
        }
        if !chunked || te_tokens != 1 {
            return Err(HeadError::Bad("unsupported transfer coding (only chunked)"));
        }
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };

    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };

    Ok(Some(RequestHead {
        method: Method::from_str(method_str),
        method_str,
        target,
        path,
        query,
        version,
        framing,
        keep_alive,
        expect_continue,
        expect_unsupported,
        content_encoding,
        content_type,
        authorization,
        accept_encoding,
        head_len,
    }))
}

/// `HTTP/2.0`, `HTTP/1.2`, `HTTP/3` in the request line: a version we do not speak (505),
/// as opposed to garbage (400).
fn looks_like_other_version(buf: &[u8]) -> bool {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Only a well-formed `METHOD TARGET VERSION` line can be about the version.
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return false;
    }
    match line.iter().rposition(|&b| b == b' ') {
        Some(sp) => {
            let v = &line[sp + 1..];
            v.len() >= 6
                && v.starts_with(b"HTTP/")
                && v[5..].iter().all(|b| b.is_ascii_digit() || *b == b'.')
        }
        None => false,
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Bad("invalid Content-Length"));
    }
    let mut n: u64 = 0;
    for &b in v {
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_head(s.as_bytes(), 16384)
    }

    fn ok(s: &str) -> RequestHead<'_> {
        head(s).unwrap().unwrap()
    }

    fn bad(s: &str) -> HeadError {
        head(s).unwrap_err()
    }

    fn gzip_for(values: &[&str]) -> bool {
        let mut a = AcceptEncoding::default();
        for v in values {
            a.add(v.as_bytes());
        }
        a.prefers_gzip()
    }

    #[test]
    fn accept_encoding_q_values() {
        for yes in [
            &["gzip"][..],
            &["GZIP"],
            &["x-gzip"],
            &["gzip, deflate, br"],
            &["deflate, gzip;q=1.0, *;q=0.5"],
            &["gzip;q=0.5"],
            &["*"],
            &["identity;q=0.5, gzip"],
            &["gzip;q=0.8, identity;q=0.8"],
            &["br", "gzip"],
            &["gzip ; q=0.001"],
        ] {
            assert!(gzip_for(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &[""],
            &["identity"],
            &["br, deflate"],
            &["gzip;q=0"],
            &["gzip;q=0.000"],
            &["*;q=0"],
            &["gzip;q=0, *"],
            &["gzip;q=0.5, identity"],
            &["gzip;q=0.5, *"],
            &["gzip;q=2"],
            &["gzip;q=0.1234"],
            &["gzip;q=x"],
            &["gzipx"],
        ] {
            assert!(!gzip_for(no), "{no:?}");
        }
        let h = ok("GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n");
        assert!(h.accept_encoding.prefers_gzip());
        let h = ok("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!h.accept_encoding.prefers_gzip());
    }

    #[test]
    fn simple_get() {
        let h = ok("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/ping");
        assert_eq!(h.query, "");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert_eq!(h.head_len, 31);
    }

    #[test]
    fn query_split() {
        let h = ok("POST /write?db=x&precision=s HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(h.path, "/write");
        assert_eq!(h.query, "db=x&precision=s");
        assert_eq!(h.framing, BodyFraming::Length(3));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn partial_and_too_large() {
        assert!(head("GET /ping HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(head("").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        assert_eq!(
            parse_head(long.as_bytes(), 256).unwrap_err(),
            HeadError::TooLarge
        );
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300));
        assert_eq!(
            parse_head(partial.as_bytes(), 256).unwrap_err(),
            HeadError::TooLarge
        );
        let many: String = (0..70).map(|i| format!("X{}: y\r\n", i)).collect();
        let req = format!("GET / HTTP/1.1\r\n{}\r\n", many);
        assert_eq!(bad(&req), HeadError::TooLarge);
    }

    #[test]
    fn smuggling_vectors_are_400() {
        let cases = [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            "POST / HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "POST / HTTP/1.1\r\nX\x01: a\r\n\r\n",
            "POST / HTTP/1.1\r\n Content-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        ];
        for c in cases {
            match head(c) {
                Err(HeadError::Bad(_)) => {}
                other => panic!("{:?} gave {:?}", c, other),
            }
        }
    }

    #[test]
    fn same_content_length_repeated_is_fine() {
        let h = ok("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
        let h = ok("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
    }

    #[test]
    fn chunked_and_case_insensitivity() {
        let h = ok("POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
    }

    #[test]
    fn other_versions_are_505() {
        // Undecided until the request line is complete.
        assert_eq!(head("GET / HTTP/2.0").unwrap().map(|h| h.head_len), None);
        assert_eq!(bad("GET / HTTP/2.0\r\n\r\n"), HeadError::Version);
        assert_eq!(bad("GET / HTTP/1.2\r\n\r\n"), HeadError::Version);
        assert!(matches!(bad("GET / FOO/1.1\r\n\r\n"), HeadError::Bad(_)));
    }

    #[test]
    fn expect_and_encoding_headers() {
        let h = ok(
            "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(h.expect_continue);
        assert_eq!(h.content_encoding, ContentEncoding::Gzip);
        let h = ok("POST / HTTP/1.1\r\nExpect: something\r\nContent-Encoding: br\r\n\r\n");
        assert!(h.expect_unsupported);
        assert_eq!(h.content_encoding, ContentEncoding::Unsupported);
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let h = ok("\r\nGET /ping HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/ping");
        assert_eq!(h.head_len, 24);
    }

    #[test]
    fn every_prefix_of_a_head_is_partial() {
        let req = b"POST /write?db=a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nAuthorization: Token x\r\n\r\n";
        for cut in 0..req.len() {
            assert!(
                parse_head(&req[..cut], 16384).unwrap().is_none(),
                "prefix {} of the head must be partial",
                cut
            );
        }
        let h = parse_head(req, 16384).unwrap().unwrap();
        assert_eq!(h.head_len, req.len());
        assert_eq!(h.authorization, Some(&b"Token x"[..]));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes, 256);
            let _ = parse_head(&bytes, 16384);
        }

        #[test]
        fn header_lines_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..12)) {
            let mut req = String::from("POST /write HTTP/1.1\r\n");
            for l in &lines {
                req.push_str(l);
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            let _ = parse_head(req.as_bytes(), 16384);
        }

        /// The engine parses a head again from exactly its bytes once the body is in: that
        /// must give the same head, and no shorter prefix may look complete.
        #[test]
        fn a_head_reparses_alike_from_its_own_bytes_and_its_prefixes_are_partial(
            method in prop::sample::select(vec!["GET", "POST", "HEAD", "PUT"]),
            version in prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
            headers in proptest::collection::vec((
                prop::sample::select(vec![
                    "Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect",
                    "Content-Encoding", "Content-Type", "Authorization", "X-Other",
                ]),
                "[ -~\t]{0,20}",
            ), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut req = format!("{method} /write?db=x {version}\r\n");
            for (name, value) in &headers {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
            req.push_str("\r\n");
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(&tail);
            if let Ok(Some(h)) = parse_head(&bytes, 16384) {
                let again = parse_head(&bytes[..h.head_len], 16384);
                prop_assert!(
                    matches!(&again, Ok(Some(a)) if format!("{a:?}") == format!("{h:?}")),
                    "{:?} vs {:?}", again, h
                );
                for cut in 0..h.head_len {
                    let prefix = parse_head(&bytes[..cut], 16384);
                    prop_assert!(matches!(prefix, Ok(None)), "prefix {}: {:?}", cut, prefix);
                }
            }
        }
    }
}
