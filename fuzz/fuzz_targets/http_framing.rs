//! HTTP/1.1 request framing: the exchange engine, `parse_head` and `ChunkedDecoder`.
//!
//! Input: byte 0's low nibble is a count `n` of read lengths, the next `n` bytes are those
//! lengths (0..=255 each, 0 being an empty read), and the rest is the request stream. The
//! stream is fed once whole and once split into those reads (the remainder is the last read).
//!
//! Properties:
//! - nothing panics;
//! - output, when non-empty, starts with `HTTP/1.1 ` and is a sequence of well-formed
//!   responses;
//! - the stream answered in one read equals the stream answered in the chosen reads, once
//!   `Date`, `Request-Id` and interim `100 Continue` responses are taken out, except where the
//!   engine decides from what has arrived so far (see `split_may_differ`). Streams that name
//!   `/stats`, `/metrics` or `/series` are not compared: those answers show server state that
//!   the previous inputs changed (counters, aggregated series);
//! - `parse_head` of exactly the head bytes gives the same head (the engine parses the head
//!   again from those bytes once the body is in), and a shorter prefix is incomplete;
//! - `ChunkedDecoder` gives the same outcome whether the bytes come at once or in the reads.

#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use metricstream::config::Config;
use metricstream::http::exchange::replay;
use metricstream::http::{ChunkError, ChunkedDecoder, parse_head};
use metricstream::app::App;

/// The limits the engine's unit tests use: small, so the fuzzer reaches them.
const MAX_HEADER: usize = 1024;
const MAX_BODY: usize = 4096;

/// One app for the whole run (it owns the aggregator thread).
fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        // A queue far larger than any input can fill, so no write is refused with 503
        // because the aggregator thread has not caught up yet: the answers depend on the
        // input alone. The series limit bounds the memory the run accumulates.
        App::standalone(Config {
            max_header_bytes: MAX_HEADER,
            max_body_bytes: MAX_BODY,
            queue_capacity: 1 << 22,
            max_series: 1000,
            ..Config::default()
        })
        .expect("app")
    })
}

/// Feeds `reads` the way the reactor does; all output and whether the engine closed.
fn drive(app: &App, reads: &[&[u8]]) -> (Vec<u8>, bool) {
    replay(app, reads, SystemTime::UNIX_EPOCH)
}

/// One response, `Date` and `Request-Id` left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn connection(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "Connection")
            .map(|(_, v)| v.as_str())
    }

    fn without_connection(&self) -> Response {
        let mut r = self.clone();
        r.headers.retain(|(n, _)| n != "Connection");
        r
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits the engine's output into responses, dropping interim `100 Continue`s. A response
/// with `Content-Length` but followed directly by the next status line (or by nothing)
/// answered a `HEAD`: no body bytes were sent. No body this server sends starts with
/// `HTTP/1.1 `, so that reading is unambiguous.
fn responses(out: &[u8]) -> Vec<Response> {
    let mut list = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 "),
            "expected a status line at {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(120)])
        );
        let head_end = find(rest, b"\r\n\r\n").expect("response head without its blank line");
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status: u16 = status_line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        let mut length = 0usize;
        for line in lines {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            if name == "Content-Length" {
                length = value.parse().expect("Content-Length is a number");
            }
            if name != "Date" && name != "Request-Id" {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        let head_only = rest.is_empty() || rest.starts_with(b"HTTP/1.1 ");
        let body_len = if head_only { 0 } else { length };
        assert!(body_len <= rest.len(), "response body cut short");
        let body = rest[..body_len].to_vec();
        rest = &rest[body_len..];
        if status != 100 {
            list.push(Response {
                status,
                status_line,
                headers,
                body,
            });
        }
    }
    list
}

/// Where the engine's answer rightly depends on how much of the stream has arrived. `k` is
/// the first response that differs; the split run must have stopped right there.
///
/// 1. A request refused from its head (404, 405, 415, 417) whose `Content-Length` body is
///    all in the buffer is skipped and the connection kept; when the body has not all
///    arrived, the connection is closed instead (`Connection: close`), and the rest of the
///    stream is never read.
/// 2. An incomplete head already longer than `--max-header-bytes` is refused with 431; with
///    the whole stream in, the same over-long head can instead end in a syntax error (400),
///    another version (505) or be complete and too long (431). Either way the connection
///    closes there.
fn split_may_differ(whole: &[Response], split: &[Response], k: usize, closed: bool) -> bool {
    if !closed || split.len() != k + 1 || k >= whole.len() {
        return false;
    }
    let (w, s) = (&whole[k], &split[k]);
    let refused_early = matches!(w.status, 404 | 405 | 415 | 417)
        && s.connection() == Some("close")
        && w.connection() != Some("close")
        && s.without_connection() == w.without_connection();
    let head_too_long =
        s.status == 431 && matches!(w.status, 400 | 431 | 505) && whole.len() == k + 1;
    refused_early || head_too_long
}

/// Names a route whose answer shows state earlier inputs changed.
fn names_stateful_route(stream: &[u8]) -> bool {
    [&b"/stats"[..], b"/metrics", b"/series"]
        .iter()
        .any(|p| find(stream, p).is_some())
}

fn check_engine(stream: &[u8], reads: &[&[u8]]) {
    let app = app();
    let (whole_out, whole_closed) = drive(app, &[stream]);
    let (split_out, split_closed) = drive(app, reads);
    for out in [&whole_out, &split_out] {
        assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
    }
    let whole = responses(&whole_out);
    let split = responses(&split_out);
    if names_stateful_route(stream) {
        return;
    }
    let k = whole
        .iter()
        .zip(&split)
        .position(|(w, s)| w != s)
        .unwrap_or(whole.len().min(split.len()));
    if k == whole.len() && k == split.len() {
        assert_eq!(
            whole_closed, split_closed,
            "same responses, different close"
        );
        return;
    }
    assert!(
        split_may_differ(&whole, &split, k, split_closed),
        "split reads changed the answers from response {k}:\nwhole ({} responses, closed {whole_closed}): {:#?}\nsplit ({} responses, closed {split_closed}): {:#?}",
        whole.len(),
        &whole[k.min(whole.len())..],
        split.len(),
        &split[k.min(split.len())..],
    );
}

fn check_head(stream: &[u8], cuts: &[usize]) {
    for max in [MAX_HEADER, 16 * 1024] {
        match parse_head(stream, max) {
            Ok(Some(head)) => {
                assert!(head.head_len <= stream.len() && head.head_len <= max);
                let again = parse_head(&stream[..head.head_len], max);
                assert!(
                    matches!(&again, Ok(Some(h)) if format!("{h:?}") == format!("{head:?}")),
                    "the head alone parses differently: {again:?} vs {head:?}"
                );
                for &cut in cuts.iter().filter(|&&c| c < head.head_len) {
                    let prefix = parse_head(&stream[..cut], max);
                    assert!(
                        matches!(prefix, Ok(None)),
                        "prefix {cut} of a complete head gave {prefix:?}"
                    );
                }
            }
            Ok(None) => assert!(
                stream.len() <= max,
                "an over-long partial head was accepted"
            ),
            Err(_) => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Chunked {
    Done { body: Vec<u8>, consumed: usize },
    Incomplete { decoded: usize },
    Failed(ChunkError),
}

fn decode(reads: &[&[u8]], max: usize) -> Chunked {
    let mut buf = Vec::new();
    let mut d = ChunkedDecoder::new(0);
    for read in reads {
        buf.extend_from_slice(read);
        match d.decode(&mut buf, max) {
            Ok(true) => {
                assert!(d.is_done() && d.consumed() <= buf.len() && d.decoded_len() <= max);
                return Chunked::Done {
                    body: buf[d.body_range()].to_vec(),
                    consumed: d.consumed(),
                };
            }
            Ok(false) => assert!(d.decoded_len() <= max && d.consumed() <= buf.len()),
            Err(e) => return Chunked::Failed(e),
        }
    }
    Chunked::Incomplete {
        decoded: d.decoded_len(),
    }
}

fn check_chunked(stream: &[u8], reads: &[&[u8]]) {
    let whole = decode(&[stream], MAX_BODY);
    let split = decode(reads, MAX_BODY);
    assert_eq!(whole, split, "chunked decoding depends on the reads");
}

/// (read lengths, stream) from the fuzzer's bytes; see the module docs.
fn reads(data: &[u8]) -> (Vec<&[u8]>, Vec<usize>, &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (vec![data], Vec::new(), data);
    };
    let n = usize::from(first & 0x0f).min(rest.len());
    let (lens, stream) = rest.split_at(n);
    let mut reads = Vec::with_capacity(n + 1);
    let mut cuts = Vec::with_capacity(n);
    let mut at = 0;
    for &len in lens {
        let end = (at + usize::from(len)).min(stream.len());
        reads.push(&stream[at..end]);
        cuts.push(end);
        at = end;
    }
    reads.push(&stream[at..]);
    (reads, cuts, stream)
}

fuzz_target!(|data: &[u8]| {
    let (reads, cuts, stream) = reads(data);
    check_engine(stream, &reads);
    check_head(stream, &cuts);
    check_chunked(stream, &reads);
});
