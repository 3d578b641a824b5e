//! The HTTP/1.1 exchange engine: received bytes in, response bytes out.
//!
//! A worker (or a thread of the comparison I/O models) calls [`process`] with the bytes a
//! connection has received so far. It answers every complete request in order (pipelining),
//! appending responses to `output`, and says what the I/O layer should do next
//! ([`Progress`]): read more (and which timeout applies), write first, or close. It keeps
//! the little state a half-received request needs in [`Exchange`], which travels with the
//! connection by value. It owns no socket and reads no clock (the caller passes the time);
//! it never blocks.

use std::time::SystemTime;

use crate::app::{App, Local};
use crate::http::request::{BodyFraming, HeadError, RequestHead, parse_head};
use crate::http::response::ResponseWriter;
use crate::http::{ChunkError, ChunkedDecoder};
use crate::routes::{self, Reply, Request, Route};
use crate::stats::bump;
use crate::tuning::OUTPUT_HIGH_WATER;

/// Which timeout applies while waiting for more bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing of a request received: keep-alive idle.
    Idle,
    /// Part of a request head received.
    Head,
    /// Head complete, body still arriving.
    Body,
}

/// What the I/O layer does after [`process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Write `output`, then read; call again once the input holds at least `min_len` bytes.
    NeedMore { phase: Phase, min_len: usize },
    /// Output passed the high-water mark with complete requests left in the input: write
    /// it, then call again without reading.
    WriteFirst,
    /// Write `output`, then close. `linger` when the client may still be sending (a refused
    /// body): half-close and drain briefly instead of resetting the connection, so the
    /// client gets to read the error.
    Close { linger: bool },
}

/// Per-connection HTTP state between two calls: a request whose head is parsed but whose
/// body has not fully arrived. Boxed so an idle connection holds one null pointer.
#[derive(Default, Debug)]
pub struct Exchange {
    pending: Option<Box<Pending>>,
}

impl Exchange {
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }
}

#[derive(Debug)]
struct Pending {
    head_len: usize,
    body: PendingBody,
    route: Route,
}

#[derive(Debug)]
enum PendingBody {
    Length(usize),
    Chunked(ChunkedDecoder),
}

/// Feeds `reads` through [`process`] the way the I/O models do — calling it only once the
/// input holds `min_len` bytes, writing first when asked — and returns all output and
/// whether the engine closed the connection. No sockets: for tests, benches and fuzzing.
pub fn replay(app: &App, reads: &[&[u8]], now: SystemTime) -> (Vec<u8>, bool) {
    let mut local = Local::new(1);
    local.set_time(now);
    let mut ex = Exchange::default();
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut min_len = 1;
    for read in reads {
        input.extend_from_slice(read);
        while input.len() >= min_len && !input.is_empty() {
            match process(app, &mut local, &mut ex, &mut input, &mut output, false) {
                Progress::NeedMore { min_len: m, .. } => {
                    min_len = m;
                    break;
                }
                Progress::WriteFirst => continue,
                Progress::Close { .. } => return (output, true),
            }
        }
    }
    (output, false)
}

/// Answers every complete request at the front of `input`; see the module docs.
/// `closing` asks for `Connection: close` on the next response (graceful shutdown).
pub fn process(
    app: &App,
    local: &mut Local,
    ex: &mut Exchange,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    closing: bool,
) -> Progress {
    let limits = (app.config.max_header_bytes, app.config.max_body_bytes);
    loop {
        let Some(mut pending) = ex.pending.take() else {
            // A new request starts at input[0].
            if input.is_empty() {
                return Progress::NeedMore {
                    phase: Phase::Idle,
                    min_len: 1,
                };
            }
            if output.len() >= OUTPUT_HIGH_WATER {
                return Progress::WriteFirst;
            }
            match start_request(app, local, input, output, closing, limits) {
                Step::Continue => continue,
                Step::Wait(p, progress) => {
                    ex.pending = p;
                    return progress;
                }
                Step::Stop(progress) => return progress,
                Step::Resume(p) => {
                    ex.pending = Some(p);
                    continue;
                }
            }
        };
        // A request whose head we already accepted: is its body complete now?
        let (body_range, consumed) = match &mut pending.body {
            PendingBody::Length(n) => {
                let end = pending.head_len + *n;
                if input.len() < end {
                    let min_len = end;
                    ex.pending = Some(pending);
                    return Progress::NeedMore {
                        phase: Phase::Body,
                        min_len,
                    };
                }
                (pending.head_len..end, end)
            }
            PendingBody::Chunked(dec) => match dec.decode(input, limits.1) {
                Ok(true) => (dec.body_range(), dec.consumed()),
                Ok(false) => {
                    let min_len = input.len() + 1;
                    ex.pending = Some(pending);
                    return Progress::NeedMore {
                        phase: Phase::Body,
                        min_len,
                    };
                }
                Err(e) => {
                    let (status, msg) = match e {
                        ChunkError::TooLarge => (413, too_large_message(limits.1)),
                        ChunkError::Malformed(m) => (400, m.to_string()),
                    };
                    let v2 = pending.route.is_v2();
                    respond_error(app, local, output, v2, status, &msg);
                    input.clear();
                    return Progress::Close { linger: true };
                }
            },
        };
        // The head is still at the front of the input, untouched by the body decoding.
        let head = match parse_head(&input[..pending.head_len], limits.0) {
            Ok(Some(h)) => h,
            _ => {
                // Cannot happen: these bytes parsed before. Refuse rather than guess.
                respond_error(app, local, output, false, 500, "internal framing error");
                input.clear();
                return Progress::Close { linger: false };
            }
        };
        let keep = answer(
            app,
            local,
            output,
            pending.route,
            &head,
            &input[body_range],
            closing,
        );
        input.drain(..consumed);
        if !keep {
            input.clear();
            return Progress::Close { linger: false };
        }
    }
}

enum Step {
    /// A request was answered; look at the next.
    Continue,
    /// Waiting for more bytes (state to keep, progress to report).
    Wait(Option<Box<Pending>>, Progress),
    /// Stop with this progress (close).
    Stop(Progress),
    /// Body bytes came with the head: go straight on to decoding them.
    Resume(Box<Pending>),
}

fn start_request(
    app: &App,
    local: &mut Local,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    closing: bool,
    (max_header, max_body): (usize, usize),
) -> Step {
    let head = match parse_head(input, max_header) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Step::Wait(
                None,
                Progress::NeedMore {
                    phase: Phase::Head,
                    min_len: input.len() + 1,
                },
            );
        }
        Err(e) => {
            bump(&app.stats.requests.requests_total, 1);
            let v2 = input.starts_with(b"POST /api/v2/");
            respond_head_error(app, local, output, v2, e);
            input.clear();
            return Step::Stop(Progress::Close { linger: true });
        }
    };
    bump(&app.stats.requests.requests_total, 1);
    let head_len = head.head_len;
    let body_len = match head.framing {
        BodyFraming::None => Some(0),
        BodyFraming::Length(n) => Some(n),
        BodyFraming::Chunked => None,
    };
    if let Some(n) = body_len {
        if n > max_body as u64 {
            let v2 = routes::is_v2_path(head.path);
            respond_error(app, local, output, v2, 413, &too_large_message(max_body));
            input.clear();
            return Step::Stop(Progress::Close { linger: true });
        }
    }
    // Decide from the head alone: auth, route, method, whether a body is welcome.
    let route = match routes::admit(app, &head, &mut local.body) {
        Ok(route) => route,
        Err(reply) => {
            // The body (if any) will not be read. When it is already all here, skip it and
            // keep the connection; otherwise the connection cannot be reused.
            let whole = body_len.is_some_and(|n| input.len() as u64 >= head_len as u64 + n);
            let keep = whole && head.keep_alive && !closing && !reply.close;
            let head_only = head.method == crate::http::Method::Head;
            write_reply(local, output, &reply, keep, head.version, head_only);
            app.stats.count_response(reply.status);
            if keep {
                let skip = head_len + body_len.unwrap_or(0) as usize;
                input.drain(..skip);
                return Step::Continue;
            }
            input.clear();
            return Step::Stop(Progress::Close {
                linger: body_len != Some(0),
            });
        }
    };
    match body_len {
        Some(0) => {
            let keep = answer(app, local, output, route, &head, &[], closing);
            input.drain(..head_len);
            if keep {
                Step::Continue
            } else {
                input.clear();
                Step::Stop(Progress::Close { linger: false })
            }
        }
        Some(n) => {
            let n = n as usize;
            let end = head_len + n;
            if input.len() >= end {
                let keep = answer(
                    app,
                    local,
                    output,
                    route,
                    &head,
                    &input[head_len..end],
                    closing,
                );
                input.drain(..end);
                if keep {
                    return Step::Continue;
                }
                input.clear();
                return Step::Stop(Progress::Close { linger: false });
            }
            if head.expect_continue && input.len() == head_len {
                ResponseWriter::write_continue(output);
                app.stats.count_response(100);
            }
            Step::Wait(
                Some(Box::new(Pending {
                    head_len,
                    body: PendingBody::Length(n),
                    route,
                })),
                Progress::NeedMore {
                    phase: Phase::Body,
                    min_len: end,
                },
            )
        }
        None => {
            if head.expect_continue && input.len() == head_len {
                ResponseWriter::write_continue(output);
                app.stats.count_response(100);
            }
            let pending = Box::new(Pending {
                head_len,
                body: PendingBody::Chunked(ChunkedDecoder::new(head_len)),
                route,
            });
            if input.len() > head_len {
                // Chunks came with the head: decode them now rather than wait for a read
                // that may never come.
                Step::Resume(pending)
            } else {
                Step::Wait(
                    Some(pending),
                    Progress::NeedMore {
                        phase: Phase::Body,
                        min_len: head_len + 1,
                    },
                )
            }
        }
    }
}

/// Runs the route for a complete request and writes its response. Returns whether the
/// connection stays open.
fn answer(
    app: &App,
    local: &mut Local,
    output: &mut Vec<u8>,
    route: Route,
    head: &RequestHead<'_>,
    body: &[u8],
    closing: bool,
) -> bool {
    local.body.clear();
    let req = Request { head, body };
    let reply = routes::handle(app, local, route, &req);
    let keep = head.keep_alive && !closing && !reply.close;
    let head_only = head.method == crate::http::Method::Head;
    write_reply(local, output, &reply, keep, head.version, head_only);
    app.stats.count_response(reply.status);
    keep
}

/// Encodes `reply` (its body is in `local.body`).
fn write_reply(
    local: &mut Local,
    output: &mut Vec<u8>,
    reply: &Reply,
    keep: bool,
    version: crate::http::Version,
    head_only: bool,
) {
    let connection = match (keep, version) {
        (false, _) => Some("close"),
        (true, crate::http::Version::Http10) => Some("keep-alive"),
        (true, crate::http::Version::Http11) => None,
    };
    let extra: Vec<(&str, &[u8])> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_slice()))
        .collect();
    let body = reply.has_body.then_some(local.body.as_slice());
    local.writer.write(
        output,
        reply.status,
        connection,
        reply.content_type,
        &extra,
        body,
        head_only,
    );
}

/// An error response the I/O layer sends on its own, with no request parsed: `408` when a
/// deadline expires, `503` over `--max-connections`. Always `Connection: close`;
/// `retry_after` adds `Retry-After: 1`. The caller has set `writer`'s time.
pub fn write_io_error(
    app: &App,
    writer: &mut ResponseWriter,
    status: u16,
    message: &str,
    retry_after: bool,
    out: &mut Vec<u8>,
) {
    let mut body = Vec::with_capacity(96);
    let reply = routes::error_reply(false, status, message, None, &mut body);
    let mut extra: Vec<(&str, &[u8])> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_slice()))
        .collect();
    if retry_after {
        extra.push(("Retry-After", b"1"));
    }
    writer.write(
        out,
        status,
        Some("close"),
        reply.content_type,
        &extra,
        Some(&body),
        false,
    );
    app.stats.count_response(status);
}

fn too_large_message(max_body: usize) -> String {
    format!("request body too large (limit {} bytes)", max_body)
}

fn respond_head_error(app: &App, local: &mut Local, output: &mut Vec<u8>, v2: bool, e: HeadError) {
    respond_error(app, local, output, v2, e.status(), e.message());
}

/// Writes an error response that closes the connection.
fn respond_error(
    app: &App,
    local: &mut Local,
    output: &mut Vec<u8>,
    v2: bool,
    status: u16,
    message: &str,
) {
    local.body.clear();
    let reply = routes::error_reply(v2, status, message, None, &mut local.body);
    write_reply(
        local,
        output,
        &reply,
        false,
        crate::http::Version::Http11,
        false,
    );
    app.stats.count_response(status);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;

    /// One shared app (and aggregator thread) for tests that do not count.
    fn shared() -> &'static App {
        static APP: std::sync::OnceLock<App> = std::sync::OnceLock::new();
        APP.get_or_init(app)
    }

    fn app() -> App {
        App::standalone(Config {
            max_header_bytes: 1024,
            max_body_bytes: 4096,
            queue_capacity: 1000,
            max_series: 1000,
            ..Config::default()
        })
        .unwrap()
    }

    fn drive(app: &App, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        replay(app, chunks, SystemTime::UNIX_EPOCH)
    }

    /// Responses with the per-response headers (Date, Request-Id) blanked out.
    fn normalise(out: &[u8]) -> String {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| !l.starts_with("Date: ") && !l.starts_with("Request-Id: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    const STREAM: &[u8] = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n\
POST /query HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\nq=CREATE+DATABASE+db1\
GET /health HTTP/1.1\r\n\r\n\
POST /query HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nq=CR\r\n11\r\nEATE+DATABASE+db2\r\n0\r\n\r\n\
HEAD /health HTTP/1.1\r\n\r\n\
GET /nope HTTP/1.1\r\n\r\n\
GET /ping HTTP/1.0\r\n\r\n";

    #[test]
    fn whole_stream_answers_every_request_in_order() {
        let app = app();
        let (out, closed) = drive(&app, &[STREAM]);
        let text = normalise(&out);
        // Bodies are not newline-terminated: find every status line wherever it starts.
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| text[i..].lines().next().unwrap_or(""))
            .collect();
        assert_eq!(
            statuses,
            [
                "HTTP/1.1 204 No Content",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 404 Not Found",
                "HTTP/1.1 204 No Content",
            ]
        );
        assert!(closed, "HTTP/1.0 without keep-alive closes");
        assert_eq!(
            app.stats
                .requests
                .requests_total
                .load(std::sync::atomic::Ordering::Relaxed),
            7
        );
    }

    #[test]
    fn every_two_way_split_gives_the_same_responses() {
        let app = shared();
        let (expected, _) = drive(app, &[STREAM]);
        let expected = normalise(&expected);
        for cut in 0..=STREAM.len() {
            let (out, closed) = drive(app, &[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(normalise(&out), expected, "split at {}", cut);
            assert!(closed);
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_responses() {
        let app = shared();
        let (expected, _) = drive(app, &[STREAM]);
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (out, _) = drive(app, &chunks);
        assert_eq!(normalise(&out), normalise(&expected));
    }

    #[test]
    fn limits_and_framing_errors_close() {
        let app = shared();
        let cases: &[(&[u8], &str)] = &[
            (
                b"POST /query HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
                "413",
            ),
            (
                b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n",
                "413",
            ),
            (
                b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
                "400",
            ),
            (
                b"GET /ping HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "400",
            ),
            (
                b"GET /ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "400",
            ),
            (b"GET /ping HTTP/1.1\r\nExpect: magic\r\n\r\n", "417"),
        ];
        for (req, status) in cases {
            let (out, closed) = drive(app, &[req]);
            let text = normalise(&out);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {}", status)),
                "{:?} -> {}",
                String::from_utf8_lossy(req),
                text
            );
            assert!(
                closed || *status == "417",
                "{:?} should close",
                String::from_utf8_lossy(req)
            );
        }
        // A head longer than the limit, complete or not.
        let long = format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        let (out, closed) = drive(app, &[long.as_bytes()]);
        assert!(normalise(&out).starts_with("HTTP/1.1 431"));
        assert!(closed);
        let (out, closed) = drive(app, &[&long.as_bytes()[..1500]]);
        assert!(normalise(&out).starts_with("HTTP/1.1 431"));
        assert!(closed);
    }

    #[test]
    fn output_high_water_asks_to_write_first() {
        let app = shared();
        let mut input = Vec::new();
        for _ in 0..20_000 {
            input.extend_from_slice(b"GET /ping HTTP/1.1\r\n\r\n");
        }
        let mut local = Local::new(1);
        let mut ex = Exchange::default();
        let mut output = Vec::new();
        let p = process(app, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::WriteFirst);
        assert!(output.len() >= OUTPUT_HIGH_WATER && output.len() < OUTPUT_HIGH_WATER + 1024);
        assert!(!input.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)) {
            let app = shared();
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let (out, _) = drive(app, &refs);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
        }

        #[test]
        fn request_like_bytes_never_panic(
            prefix in prop::sample::select(vec![
                "GET /ping HTTP/1.1\r\n", "POST /query HTTP/1.1\r\n",
                "POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
                "POST /query HTTP/1.1\r\nContent-Length: 7\r\n",
            ]),
            tail in "[ -~\r\n]{0,200}",
        ) {
            let app = shared();
            let mut bytes = prefix.as_bytes().to_vec();
            bytes.extend_from_slice(tail.as_bytes());
            let (out, _) = drive(app, &[&bytes]);
            prop_assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
        }

        #[test]
        fn random_splits_give_the_same_responses(cuts in proptest::collection::vec(0..STREAM.len(), 0..8)) {
            let app = shared();
            let (expected, _) = drive(app, &[STREAM]);
            let mut cuts = cuts;
            cuts.sort();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&STREAM[last..c]);
                last = c;
            }
            chunks.push(&STREAM[last..]);
            let (out, _) = drive(app, &chunks);
            prop_assert_eq!(normalise(&out), normalise(&expected));
        }

        /// Like `random_splits_give_the_same_responses`, for any pipelined stream of requests
        /// from a pool (no route whose answer shows server state, no refused request with a
        /// body: a split there rightly closes early, see `fuzz/README.md`).
        #[test]
        fn pooled_streams_split_anywhere_give_the_same_responses(
            picks in proptest::collection::vec(0..POOL.len(), 1..8),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let app = shared();
            let stream: Vec<u8> = picks.iter().flat_map(|&i| POOL[i].iter().copied()).collect();
            let (expected, expected_closed) = drive(app, &[&stream]);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&stream[last..c]);
                last = c;
            }
            chunks.push(&stream[last..]);
            let (out, closed) = drive(app, &chunks);
            prop_assert!(out.starts_with(b"HTTP/1.1 "));
            prop_assert_eq!(
                normalise(&without_continue(&out)),
                normalise(&without_continue(&expected))
            );
            prop_assert_eq!(closed, expected_closed);
        }
    }

    /// Requests for `pooled_streams_split_anywhere_give_the_same_responses`.
    const POOL: &[&[u8]] = &[
        b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HEAD /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /nope HTTP/1.1\r\n\r\n",
        b"DELETE /ping HTTP/1.1\r\n\r\n",
        b"GET /query?q=SHOW+DATABASES HTTP/1.1\r\n\r\n",
        b"POST /query HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 21\r\n\r\nq=CREATE+DATABASE+db1",
        b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nq=CR\r\n11\r\nEATE+DATABASE+db2\r\n0\r\nT: 1\r\n\r\n",
        b"POST /write?db=p HTTP/1.1\r\nContent-Length: 29\r\n\r\ncpu,host=a v=1 1\nmem free=2i\n",
        b"POST /write?db=p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 8\r\n\r\nm v=1 2\n",
        b"POST /api/v2/write?bucket=b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nm v=1\n\r\n0\r\n\r\n",
        b"POST /write HTTP/1.1\r\nContent-Length: 6\r\n\r\nbad\nx\n",
        b"\r\nGET /ping HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /query HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
    ];

    /// Output without interim `100 Continue` responses, which depend on whether the body came
    /// with the head.
    fn without_continue(out: &[u8]) -> Vec<u8> {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let mut v = Vec::with_capacity(out.len());
        let mut rest = out;
        while !rest.is_empty() {
            if rest.starts_with(CONTINUE) {
                rest = &rest[CONTINUE.len()..];
            } else {
                v.push(rest[0]);
                rest = &rest[1..];
            }
        }
        v
    }
}
