//! Response encoding: status line and the headers every response carries.
//!
//! Every response has `Date`, `Server: metricstream`, the InfluxDB identification headers
//! client libraries check (`X-Influxdb-Version`, `X-Influxdb-Build`, a unique `Request-Id`),
//! and either `Content-Length`, no body at all (1xx, 204, 304), or — a streamed body —
//! `Transfer-Encoding: chunked` (HTTP/1.1) or nothing and `Connection: close` (HTTP/1.0). The `Date` text is cached
//! per second and request ids come from a per-thread counter, so encoding a response is a
//! handful of `extend_from_slice` calls and no allocation.

use std::time::{SystemTime, UNIX_EPOCH};

pub const SERVER: &str = "metricstream";
pub const INFLUX_VERSION: &str = concat!("metricstream-", env!("CARGO_PKG_VERSION"));

/// The reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Statuses that never carry a body (and so no `Content-Length`).
pub fn is_bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Per-thread state for response headers: the cached `Date` and the request-id counter.
pub struct ResponseWriter {
    date_secs: u64,
    date: [u8; 29],
    id_prefix: [u8; 14],
    id_counter: u64,
}

impl ResponseWriter {
    /// `instance` distinguishes threads (and processes, mixed with a start-up nonce) so ids
    /// stay unique without any shared counter.
    pub fn new(instance: u32) -> Self {
        let nonce = process_nonce();
        let mut id_prefix = [0u8; 14];
        hex_into(&mut id_prefix[0..8], u64::from(nonce), 8);
        id_prefix[8] = b'-';
        hex_into(&mut id_prefix[9..13], u64::from(instance & 0xffff), 4);
        id_prefix[13] = b'-';
        ResponseWriter {
            date_secs: u64::MAX,
            date: [b' '; 29],
            id_prefix,
            id_counter: 0,
        }
    }

    /// Refreshes the cached `Date` text when the second changed.
    pub fn set_time(&mut self, now: SystemTime) {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.date_secs {
            self.date_secs = secs;
            let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
            let bytes = text.as_bytes();
            let n = bytes.len().min(29);
            self.date[..n].copy_from_slice(&bytes[..n]);
        }
    }

    /// Writes the status line and common headers, then `extra` headers, `Content-Type` and
    /// `Content-Length` when `body` is `Some`, the blank line, and the body unless `head_only`.
    /// `connection` is the value of a `Connection` header to send, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        connection: Option<&str>,
        content_type: Option<&str>,
        extra: &[(&str, &[u8])],
        body: Option<&[u8]>,
        head_only: bool,
    ) {
        // One allocation for the whole response, sized for the common headers.
        out.reserve(320 + extra.len() * 64 + body.map_or(0, <[u8]>::len));
        self.write_common(out, status, connection, extra);
        match body {
            Some(body) if !is_bodiless(status) => {
                push_content_type(out, content_type);
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, body.len() as u64);
                out.extend_from_slice(b"\r\n\r\n");
                if !head_only {
                    out.extend_from_slice(body);
                }
            }
            _ => out.extend_from_slice(b"\r\n"),
        }
    }

    /// Writes the head of a streamed answer (its body follows in parts, see
    /// `http/stream.rs`): like [`ResponseWriter::write`], but with `Transfer-Encoding:
    /// chunked` when `chunked` and no length at all otherwise (the body then ends with the
    /// connection, which `connection` must say).
    pub fn write_stream_head(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        connection: Option<&str>,
        content_type: Option<&str>,
        extra: &[(&str, &[u8])],
        chunked: bool,
    ) {
        out.reserve(320 + extra.len() * 64);
        self.write_common(out, status, connection, extra);
        push_content_type(out, content_type);
        if chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The status line, the headers every response carries, `Connection` and `extra`.
    fn write_common(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        connection: Option<&str>,
        extra: &[(&str, &[u8])],
    ) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_status(out, status);
        out.push(b' ');
        out.extend_from_slice(reason(status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(&self.date);
        out.extend_from_slice(b"\r\nServer: metricstream\r\nX-Influxdb-Version: ");
        out.extend_from_slice(INFLUX_VERSION.as_bytes());
        out.extend_from_slice(b"\r\nX-Influxdb-Build: OSS\r\nRequest-Id: ");
        self.push_request_id(out);
        out.extend_from_slice(b"\r\n");
        if let Some(c) = connection {
            out.extend_from_slice(b"Connection: ");
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in extra {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The interim `100 Continue`.
    pub fn write_continue(out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    fn push_request_id(&mut self, out: &mut Vec<u8>) {
        // UUID-shaped: nonce(8)-instance(4)-counter(4)-counter(4)-counter(12).
        self.id_counter = self.id_counter.wrapping_add(1);
        let c = self.id_counter;
        let mut buf = [0u8; 36];
        buf[..14].copy_from_slice(&self.id_prefix);
        hex_into(&mut buf[14..18], c >> 48, 4);
        buf[18] = b'-';
        hex_into(&mut buf[19..23], c >> 32, 4);
        buf[23] = b'-';
        hex_into(&mut buf[24..36], c & 0xffff_ffff_ffff, 12);
        out.extend_from_slice(&buf);
    }
}

fn push_content_type(out: &mut Vec<u8>, content_type: Option<&str>) {
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn process_nonce() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (t ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as u32
}

fn hex_into(dst: &mut [u8], mut v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        dst[i] = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    let s = status.min(999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Makes `text` safe as a header value: printable ASCII only (others become `?`), at most
/// 1024 bytes.
pub fn header_safe(text: &str) -> Vec<u8> {
    text.bytes()
        .take(1024)
        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> ResponseWriter {
        let mut w = ResponseWriter::new(7);
        w.set_time(UNIX_EPOCH + std::time::Duration::from_secs(784111777));
        w
    }

    #[test]
    fn no_content_has_no_length() {
        let mut out = Vec::new();
        writer().write(&mut out, 204, None, None, &[], None, false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(s.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert!(s.contains("\r\nServer: metricstream\r\n"));
        assert!(s.contains("\r\nX-Influxdb-Build: OSS\r\n"));
        assert!(s.contains("\r\nX-Influxdb-Version: metricstream-"));
        assert!(!s.contains("Content-Length"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn body_gets_length_and_head_omits_body() {
        let mut w = writer();
        let mut out = Vec::new();
        w.write(
            &mut out,
            200,
            Some("close"),
            Some("text/plain"),
            &[],
            Some(b"ok"),
            false,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.contains("Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"));
        let mut out = Vec::new();
        w.write(
            &mut out,
            200,
            None,
            Some("text/plain"),
            &[],
            Some(b"ok"),
            true,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Content-Length: 2\r\n\r\n"));
    }

    #[test]
    fn a_streamed_head_says_chunked_or_nothing() {
        let mut w = writer();
        let mut out = Vec::new();
        let vary: &[(&str, &[u8])] = &[("Vary", b"Accept-Encoding")];
        w.write_stream_head(&mut out, 200, None, Some("text/plain"), vary, true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with(
            "Vary: Accept-Encoding\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!s.contains("Content-Length"));
        let mut out = Vec::new();
        w.write_stream_head(&mut out, 200, Some("close"), Some("text/plain"), &[], false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("Content-Type: text/plain\r\n\r\n"));
        assert!(!s.contains("Transfer-Encoding") && !s.contains("Content-Length"));
    }

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let mut w = writer();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut out = Vec::new();
            w.write(&mut out, 204, None, None, &[], None, false);
            let s = String::from_utf8(out).unwrap();
            let id = s
                .lines()
                .find_map(|l| l.strip_prefix("Request-Id: "))
                .unwrap()
                .to_string();
            assert_eq!(id.len(), 36);
            assert_eq!(id.matches('-').count(), 4);
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn header_values_are_sanitised() {
        assert_eq!(header_safe("a\nb\u{e9}"), b"a?b??".to_vec());
        assert_eq!(header_safe(&"x".repeat(5000)).len(), 1024);
    }

    #[test]
    fn decimals() {
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        v.push(b' ');
        push_decimal(&mut v, u64::MAX);
        assert_eq!(v, b"0 18446744073709551615");
    }
}
