//! The HTTP/1.1 exchange engine: received bytes in, response bytes out.
//!
//! A worker (or a thread of the comparison I/O models) calls [`process`] with the bytes a
//! connection has received so far. It answers every complete request in order (pipelining),
//! appending responses to `output`, and says what the I/O layer should do next
//! ([`Progress`]): read more (and which timeout applies), write first, or close. It keeps
//! the little state a half-received request needs in [`Exchange`], which travels with the
//! connection by value, together with its input.
//!
//! A route may answer with a streamed body ([`Reply::stream`], `stream.rs`): the engine
//! writes the head and the first part, keeps the body's source in the [`Exchange`] and
//! reports [`Progress::Streaming`]; each later call (made once that output is written)
//! appends the next part, until the last one, after which pipelined requests are answered
//! as usual. So the next part is always produced by whoever runs the engine (a worker),
//! never by the I/O layer, and only once the previous part left.
//!
//! What a request *means* is the [`Service`]'s business (`routes.rs` implements it for the
//! app): the engine frames, the service admits, answers, shapes errors and counts. The
//! engine owns no socket, reads no clock (the caller sets the time on its scratch) and
//! never blocks; it imports nothing from the routes, the app, ingestion or the counters.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::SystemTime;

use crate::http::request::{BodyFraming, HeadError, Method, RequestHead, Version, parse_head};
use crate::http::response::ResponseWriter;
use crate::http::service::{Limits, Reply, RouteId, Service};
use crate::http::stream::{BodySource, PendingHead, Streaming};
use crate::http::{ChunkError, ChunkedDecoder};
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
    /// it, then call again without reading (appending newly read bytes to the input is
    /// fine). The input may still start with bytes already answered, which the
    /// [`Exchange`] remembers: hand the two back together, or reset both.
    WriteFirst,
    /// `output` ends with a part of a streamed body and more is to come: write it, then call
    /// again without reading (newly read bytes may be appended to the input) for the next
    /// part. The [`Exchange`] holds the body's source; dropping it drops the source.
    Streaming,
    /// Write `output`, then close. `linger` when the client may still be sending (a refused
    /// body): half-close and drain briefly instead of resetting the connection, so the
    /// client gets to read the error.
    Close { linger: bool },
    /// The last response in `output` is a deferred one ([`Reply::defer`]) and the only
    /// response there: hold it (and the connection: nothing read, nothing dispatched) until
    /// the deferred work completes, then write it, or replace it with an error. It is not
    /// counted yet. `close` is what keep-alive decided for it; the input holds only what
    /// follows the request (any pipelined requests, unanswered).
    AwaitDurable { close: bool },
}

/// Per-connection HTTP state between two calls. Boxed, so an idle connection holds one
/// null pointer (the connection slab stays small).
#[derive(Default, Debug)]
pub struct Exchange {
    held: Option<Box<Held>>,
}

#[derive(Debug)]
enum Held {
    /// A request whose head is parsed but whose body has not fully arrived.
    Request(Pending),
    /// Answered bytes left at the front of the input after [`Progress::WriteFirst`]: moving
    /// the rest down on every such stop would cost a deep pipeline a copy of all its
    /// remaining bytes each time (see [`finish`]). Never together with a request: a call
    /// stops at the high-water mark only between requests.
    Answered(usize),
    /// A streamed body with parts still to come; the input holds only what follows its
    /// request.
    Stream(Streaming),
}

impl Exchange {
    /// No request half received.
    pub fn is_idle(&self) -> bool {
        !matches!(self.held.as_deref(), Some(Held::Request(_)))
    }

    /// A streamed body is under way: the engine must be called again (without waiting
    /// for input) once the output is written.
    pub fn is_streaming(&self) -> bool {
        matches!(self.held.as_deref(), Some(Held::Stream(_)))
    }

    /// Takes the answered prefix left by the last call (0 if none).
    fn take_answered(&mut self) -> usize {
        match self.held.as_deref() {
            Some(&Held::Answered(n)) => {
                self.held = None;
                n
            }
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct Pending {
    head_len: usize,
    body: PendingBody,
    route: RouteId,
    method: Method,
}

#[derive(Debug)]
enum PendingBody {
    Length(usize),
    Chunked(ChunkedDecoder),
}

/// Feeds `reads` through [`process`] the way the I/O models do — calling it only once the
/// input holds `min_len` bytes, and "writing" (setting the output aside) when asked to
/// write first — and returns all output and whether the engine closed the connection. No
/// sockets: for tests, benches and fuzzing.
pub fn replay<S: Service>(svc: &S, reads: &[&[u8]], now: SystemTime) -> (Vec<u8>, bool) {
    let mut local = svc.new_local(1, now);
    let mut ex = Exchange::default();
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut written = Vec::new();
    let mut min_len = 1;
    for read in reads {
        input.extend_from_slice(read);
        while ex.is_streaming() || (input.len() >= min_len && !input.is_empty()) {
            let progress = process(svc, &mut local, &mut ex, &mut input, &mut output, false);
            written.append(&mut output);
            match progress {
                Progress::NeedMore { min_len: m, .. } => {
                    min_len = m;
                    break;
                }
                Progress::WriteFirst | Progress::Streaming => continue,
                // No durable work in a socketless replay: the held answer stands as is.
                Progress::AwaitDurable { close: false } => continue,
                Progress::Close { .. } | Progress::AwaitDurable { close: true } => {
                    return (written, true);
                }
            }
        }
    }
    (written, false)
}

/// Answers every complete request at the front of `input`; see the module docs.
/// `closing` asks for `Connection: close` on the next response (graceful shutdown).
pub fn process<S: Service>(
    svc: &S,
    local: &mut S::Local,
    ex: &mut Exchange,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    closing: bool,
) -> Progress {
    let mut complete = output.len();
    run(svc, local, ex, input, output, closing, &mut complete)
}

/// [`process`], with a panic anywhere below it (a handler bug) caught: the connection gets
/// a `500` with `Connection: close` after the responses completed before the panic, an
/// error line naming `conn` is logged, and the thread lives on to serve other connections.
/// Costs nothing until something panics.
pub fn process_catching<S: Service, C: fmt::Display>(
    svc: &S,
    local: &mut S::Local,
    ex: &mut Exchange,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    closing: bool,
    conn: C,
) -> Progress {
    let mut complete = output.len();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        run(svc, local, ex, input, output, closing, &mut complete)
    }));
    match caught {
        Ok(progress) => progress,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-text panic payload");
            log::error!(
                "{}: panicked while answering a request ({}); answered 500 and closing",
                conn,
                what
            );
            // Whatever the panic interrupted is dropped: a half-encoded response, the
            // request it was for, and everything pipelined after it.
            output.truncate(complete);
            input.clear();
            let mid_body = ex.is_streaming();
            *ex = Exchange::default();
            if mid_body {
                // The head of a streamed answer is out: a 500 now would read as part of
                // its body. Closing without the last chunk tells the client it is cut short.
                return Progress::Close { linger: false };
            }
            let shape = svc.path_error_shape(None);
            respond_error(svc, local, output, shape, 500, "internal server error");
            Progress::Close { linger: true }
        }
    }
}

/// One call: answer from the cursor on, then tidy the input for the caller.
fn run<S: Service>(
    svc: &S,
    local: &mut S::Local,
    ex: &mut Exchange,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    closing: bool,
    complete: &mut usize,
) -> Progress {
    let mut cursor = ex.take_answered().min(input.len());
    let progress = serve(
        svc,
        local,
        ex,
        input,
        &mut cursor,
        output,
        closing,
        complete,
    );
    finish(ex, input, cursor, progress);
    progress
}

/// Drops the answered prefix of `input` (`..cursor`), once per call rather than once per
/// request, so a request costs the same however deep the pipeline behind it. After
/// `WriteFirst` the prefix stays (remembered in `ex`) until it is at least as long as what
/// follows it: every byte is then moved at most about once in total.
fn finish(ex: &mut Exchange, input: &mut Vec<u8>, cursor: usize, progress: Progress) {
    match progress {
        Progress::Close { .. } => input.clear(),
        // A held request (stopped before a deferring route) keeps `ex` for itself.
        Progress::WriteFirst if ex.held.is_none() && cursor < input.len() - cursor => {
            ex.held = Some(Box::new(Held::Answered(cursor)));
        }
        Progress::WriteFirst
        | Progress::Streaming
        | Progress::NeedMore { .. }
        | Progress::AwaitDurable { .. } => {
            input.drain(..cursor);
        }
    }
}

/// Answers requests starting at `input[*cursor]`, advancing the cursor past each one
/// answered. Offsets kept in `ex` and `min_len`s returned are relative to the cursor (which
/// [`finish`] makes the start of the input).
#[allow(clippy::too_many_arguments)]
fn serve<S: Service>(
    svc: &S,
    local: &mut S::Local,
    ex: &mut Exchange,
    input: &mut [u8],
    cursor: &mut usize,
    output: &mut Vec<u8>,
    closing: bool,
    complete: &mut usize,
) -> Progress {
    let limits = svc.limits();
    loop {
        if let Some(Held::Stream(stream)) = ex.held.as_deref_mut() {
            if output.len() >= OUTPUT_HIGH_WATER {
                // Responses pipelined before it filled the output: write them first.
                return Progress::Streaming;
            }
            match stream_part(svc, local, output, stream) {
                Ok(false) => return Progress::Streaming,
                Ok(true) => {
                    let close = stream.close;
                    ex.held = None;
                    *complete = output.len();
                    if close {
                        return Progress::Close { linger: false };
                    }
                    // The body is complete: on to what was pipelined behind it.
                    continue;
                }
                Err(e) => {
                    log::warn!("a streamed response body failed ({e}); closing its connection");
                    ex.held = None;
                    return Progress::Close { linger: false };
                }
            }
        }
        let rest = &mut input[*cursor..];
        let Some(mut held) = ex.held.take() else {
            // A new request starts at rest[0].
            if rest.is_empty() {
                return Progress::NeedMore {
                    phase: Phase::Idle,
                    min_len: 1,
                };
            }
            if output.len() >= OUTPUT_HIGH_WATER {
                return Progress::WriteFirst;
            }
            match start_request(svc, local, rest, output, closing, limits) {
                Step::Answered(len) => {
                    *cursor += len;
                    *complete = output.len();
                    continue;
                }
                Step::Wait(p, progress) => {
                    ex.held = p;
                    *complete = output.len();
                    return progress;
                }
                Step::Stop(progress) => return progress,
                Step::Defer(len, progress) => {
                    *cursor += len;
                    *complete = output.len();
                    return progress;
                }
                Step::Stream(len, stream) => {
                    // Its head and first part are in the output: write them first.
                    *cursor += len;
                    *complete = output.len();
                    ex.held = Some(Box::new(Held::Stream(stream)));
                    return Progress::Streaming;
                }
                Step::Resume(p) => {
                    ex.held = Some(p);
                    *complete = output.len();
                    continue;
                }
            }
        };
        // A request whose head we already accepted: is its body complete now?
        let Held::Request(pending) = &mut *held else {
            // An answered prefix is taken before the loop and a stream at its top;
            // nothing to resume.
            continue;
        };
        let (body_range, consumed) = match &mut pending.body {
            PendingBody::Length(n) => {
                let end = pending.head_len + *n;
                if rest.len() < end {
                    ex.held = Some(held);
                    return Progress::NeedMore {
                        phase: Phase::Body,
                        min_len: end,
                    };
                }
                (pending.head_len..end, end)
            }
            PendingBody::Chunked(dec) => match dec.decode(rest, limits.max_body_bytes) {
                Ok(true) => (dec.body_range(), dec.consumed()),
                Ok(false) => {
                    let min_len = rest.len() + 1;
                    ex.held = Some(held);
                    return Progress::NeedMore {
                        phase: Phase::Body,
                        min_len,
                    };
                }
                Err(e) => {
                    let (status, msg) = match e {
                        ChunkError::TooLarge => (413, too_large_message(limits.max_body_bytes)),
                        ChunkError::Malformed(m) => (400, m.to_string()),
                    };
                    let shape = svc.route_error_shape(pending.route);
                    respond_error(svc, local, output, shape, status, &msg);
                    return Progress::Close { linger: true };
                }
            },
        };
        if svc.defers(pending.route, pending.method) && !output.is_empty() {
            // A deferred answer must be alone in the output: write what is there first.
            ex.held = Some(held);
            return Progress::WriteFirst;
        }
        // The head is still at the front, untouched by the body decoding.
        let head = match parse_head(&rest[..pending.head_len], limits.max_header_bytes) {
            Ok(Some(h)) => h,
            _ => {
                // Cannot happen: these bytes parsed before. Refuse rather than guess.
                let shape = svc.route_error_shape(pending.route);
                respond_error(svc, local, output, shape, 500, "internal framing error");
                return Progress::Close { linger: false };
            }
        };
        let answered = answer(
            svc,
            local,
            output,
            pending.route,
            &head,
            &rest[body_range],
            closing,
        );
        *cursor += consumed;
        *complete = output.len();
        match answered {
            Answer::Keep => {}
            Answer::Close => return Progress::Close { linger: false },
            Answer::Defer { close } => return Progress::AwaitDurable { close },
            Answer::Stream(stream) => {
                ex.held = Some(Box::new(Held::Stream(stream)));
                return Progress::Streaming;
            }
        }
    }
}

enum Step {
    /// A request of this many bytes was answered; look at the next.
    Answered(usize),
    /// Waiting for more bytes (state to keep, progress to report).
    Wait(Option<Box<Held>>, Progress),
    /// Stop with this progress (close).
    Stop(Progress),
    /// Body bytes came with the head: go straight on to decoding them.
    Resume(Box<Held>),
    /// A request of this many bytes got a deferred answer: stop with this progress.
    Defer(usize, Progress),
    /// A request of this many bytes is answered with a streamed body, its head written.
    Stream(usize, Streaming),
}

/// Looks at a new request at the start of `input`.
fn start_request<S: Service>(
    svc: &S,
    local: &mut S::Local,
    input: &[u8],
    output: &mut Vec<u8>,
    closing: bool,
    limits: Limits,
) -> Step {
    let head = match parse_head(input, limits.max_header_bytes) {
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
            svc.count_request();
            let shape = svc.path_error_shape(crate::http::request::path_hint(input));
            respond_head_error(svc, local, output, shape, e);
            return Step::Stop(Progress::Close { linger: true });
        }
    };
    svc.count_request();
    let head_len = head.head_len;
    let body_len = match head.framing {
        BodyFraming::None => Some(0),
        BodyFraming::Length(n) => Some(n),
        BodyFraming::Chunked => None,
    };
    if let Some(n) = body_len {
        if n > limits.max_body_bytes as u64 {
            let shape = svc.path_error_shape(Some(head.path));
            let message = too_large_message(limits.max_body_bytes);
            respond_error(svc, local, output, shape, 413, &message);
            return Step::Stop(Progress::Close { linger: true });
        }
    }
    // Decide from the head alone: auth, route, method, whether a body is welcome.
    let route = match svc.admit(local, &head) {
        Ok(route) => route,
        Err(reply) => {
            // The body (if any) will not be read. When it is already all here, skip it and
            // keep the connection; otherwise the connection cannot be reused.
            let whole = body_len.is_some_and(|n| input.len() as u64 >= head_len as u64 + n);
            let keep = whole && head.keep_alive && !closing && !reply.close;
            let head_only = head.method == Method::Head;
            write_reply(svc, local, output, &reply, keep, head.version, head_only);
            if keep {
                return Step::Answered(head_len + body_len.unwrap_or(0) as usize);
            }
            return Step::Stop(Progress::Close {
                linger: body_len != Some(0),
            });
        }
    };
    match body_len {
        Some(n) => {
            let n = n as usize;
            let end = head_len + n;
            let method = head.method;
            let pending = |body| {
                Box::new(Held::Request(Pending {
                    head_len,
                    body,
                    route,
                    method,
                }))
            };
            if input.len() >= end {
                if svc.defers(route, head.method) && !output.is_empty() {
                    // A deferred answer must be alone in the output: write what is there
                    // first, then answer this request (held, so it is not counted twice).
                    return Step::Wait(Some(pending(PendingBody::Length(n))), Progress::WriteFirst);
                }
                let body = &input[head_len..end];
                return match answer(svc, local, output, route, &head, body, closing) {
                    Answer::Keep => Step::Answered(end),
                    Answer::Close => Step::Stop(Progress::Close { linger: false }),
                    Answer::Defer { close } => Step::Defer(end, Progress::AwaitDurable { close }),
                    Answer::Stream(stream) => Step::Stream(end, stream),
                };
            }
            if head.expect_continue && input.len() == head_len {
                ResponseWriter::write_continue(output);
                svc.count_response(100);
            }
            Step::Wait(
                Some(pending(PendingBody::Length(n))),
                Progress::NeedMore {
                    phase: Phase::Body,
                    min_len: end,
                },
            )
        }
        None => {
            if head.expect_continue && input.len() == head_len {
                ResponseWriter::write_continue(output);
                svc.count_response(100);
            }
            let pending = Box::new(Held::Request(Pending {
                head_len,
                body: PendingBody::Chunked(ChunkedDecoder::new(head_len)),
                route,
                method: head.method,
            }));
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

/// How an answered request leaves the connection.
enum Answer {
    Keep,
    Close,
    /// A deferred reply (encoded, not counted); `close` is the keep-alive decision.
    Defer {
        close: bool,
    },
    /// A streamed reply whose head is written (and counted); its parts are to come.
    Stream(Streaming),
}

/// Runs the service for a complete request and writes its response.
fn answer<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    route: RouteId,
    head: &RequestHead<'_>,
    body: &[u8],
    closing: bool,
) -> Answer {
    let mut reply = svc.handle(local, route, head, body);
    let keep = head.keep_alive && !closing && !reply.close;
    let head_only = head.method == Method::Head;
    if let Some(source) = reply.stream.take() {
        return answer_streamed(svc, local, output, reply, source, keep, head, head_only);
    }
    if reply.defer {
        // Counted when the deferred work completes (or replaced by an error then).
        encode_reply::<S>(local, output, &reply, keep, head.version, head_only);
        return Answer::Defer { close: !keep };
    }
    write_reply(svc, local, output, &reply, keep, head.version, head_only);
    if keep { Answer::Keep } else { Answer::Close }
}

/// Answers a reply whose body comes from a source. No head is written before the body's
/// first bytes exist: a body complete by then — every small one, and one a source
/// gathers before it writes anything, like `/series` — goes out with its
/// `Content-Length` like any other reply, and so does any body for an HTTP/1.0 client,
/// which cannot take chunks (made whole on this call). A longer one gets a head with
/// `Transfer-Encoding: chunked`, its first bytes as the first chunk, and the rest a part
/// per call (see [`stream_part`]). A `HEAD` gets the head a long body would (chunked, no
/// length) and the source is dropped unread.
#[allow(clippy::too_many_arguments)]
fn answer_streamed<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    reply: Reply,
    source: Box<dyn BodySource>,
    keep: bool,
    head: &RequestHead<'_>,
    head_only: bool,
) -> Answer {
    if head_only {
        write_stream_head(svc, local, output, &reply, keep, head.version);
        drop(source);
        return if keep { Answer::Keep } else { Answer::Close };
    }
    let mut stream = Streaming::new(source, head.version == Version::Http11, !keep);
    stream.pending = Some(PendingHead {
        reply,
        keep,
        version: head.version,
    });
    match stream_part(svc, local, output, &mut stream) {
        Ok(false) => Answer::Stream(stream),
        Ok(true) if !stream.close => Answer::Keep,
        _ => Answer::Close,
    }
}

/// Writes and counts the head of a chunked reply.
fn write_stream_head<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    reply: &Reply,
    keep: bool,
    version: Version,
) {
    let headers: Vec<(&str, &[u8])> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_slice()))
        .collect();
    let (writer, _) = S::buffers(local);
    writer.write_stream_head(
        output,
        reply.status,
        connection(keep, version),
        reply.content_type,
        &headers,
        version == Version::Http11,
    );
    svc.count_response(reply.status);
}

/// One call's worth of a streamed body: `Ok(true)` once it is complete. While its head is
/// pending, the part is made in the body buffer first: complete, it is sent whole with
/// its length; empty, the head waits for the next call; otherwise the chunked head goes
/// out with it as the first chunk. A source failing before the head is answered `500`
/// (and the connection closed); after it, the caller closes the connection mid-body.
fn stream_part<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    stream: &mut Streaming,
) -> std::io::Result<bool> {
    let Some(mut head) = stream.pending.take() else {
        return stream.next_part(output);
    };
    let (_, body) = S::buffers(local);
    body.clear();
    let mut done = stream.fill(body);
    // HTTP/1.0: the whole body, so it can be announced.
    while head.version != Version::Http11 && matches!(done, Ok(false)) {
        done = stream.fill(body);
    }
    match done {
        Ok(true) => {
            head.reply.has_body = true;
            write_reply(
                svc,
                local,
                output,
                &head.reply,
                head.keep,
                head.version,
                false,
            );
            S::buffers(local).1.clear();
            Ok(true)
        }
        Ok(false) if body.is_empty() => {
            stream.pending = Some(head);
            Ok(false)
        }
        Ok(false) => {
            write_stream_head(svc, local, output, &head.reply, head.keep, head.version);
            let (_, body) = S::buffers(local);
            crate::http::stream::push_chunk(output, body);
            body.clear();
            Ok(false)
        }
        Err(e) => {
            log::warn!("a response body failed before it was sent ({e})");
            S::buffers(local).1.clear();
            stream.close = true;
            write_reply(
                svc,
                local,
                output,
                &Reply::empty(500),
                false,
                head.version,
                false,
            );
            Ok(true)
        }
    }
}

/// Encodes `reply` (its body is in the service's body buffer) and counts it.
fn write_reply<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    reply: &Reply,
    keep: bool,
    version: Version,
    head_only: bool,
) {
    encode_reply::<S>(local, output, reply, keep, version, head_only);
    svc.count_response(reply.status);
}

/// Encodes `reply` with the `Connection` header keep-alive calls for.
fn encode_reply<S: Service>(
    local: &mut S::Local,
    output: &mut Vec<u8>,
    reply: &Reply,
    keep: bool,
    version: Version,
    head_only: bool,
) {
    let (writer, body) = S::buffers(local);
    encode(
        writer,
        output,
        reply,
        connection(keep, version),
        &[],
        body,
        head_only,
    );
}

/// The `Connection` header a response carries.
fn connection(keep: bool, version: Version) -> Option<&'static str> {
    match (keep, version) {
        (false, _) => Some("close"),
        (true, Version::Http10) => Some("keep-alive"),
        (true, Version::Http11) => None,
    }
}

/// The final answer of a deferred request whose body is only known once its work is done
/// (a delete's count), written by whoever completed the work in place of the held reply:
/// encoded with the `Connection` header keep-alive decided for it (`close`) in the
/// request's `version`, and counted. The caller has set `writer`'s time.
pub fn write_completed<S: Service>(
    svc: &S,
    writer: &mut ResponseWriter,
    reply: &Reply,
    body: &[u8],
    close: bool,
    version: Version,
    out: &mut Vec<u8>,
) {
    encode(
        writer,
        out,
        reply,
        connection(!close, version),
        &[],
        body,
        false,
    );
    svc.count_response(reply.status);
}

/// The status line, common headers, `reply`'s headers and `extra`, and the body.
fn encode(
    writer: &mut ResponseWriter,
    output: &mut Vec<u8>,
    reply: &Reply,
    connection: Option<&str>,
    extra: &[(&'static str, &'static [u8])],
    body: &[u8],
    head_only: bool,
) {
    // Collecting an empty iterator allocates nothing: a plain 204 or 200 costs no heap.
    let headers: Vec<(&str, &[u8])> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_slice()))
        .chain(extra.iter().copied())
        .collect();
    let body = reply.has_body.then_some(body);
    writer.write(
        output,
        reply.status,
        connection,
        reply.content_type,
        &headers,
        body,
        head_only,
    );
}

/// An error response the I/O layer sends on its own, with no request parsed: `408` when a
/// deadline expires, `503` over `--max-connections`. Always `Connection: close`;
/// `retry_after` adds `Retry-After: 1`. The caller has set `writer`'s time.
pub fn write_io_error<S: Service>(
    svc: &S,
    writer: &mut ResponseWriter,
    status: u16,
    message: &str,
    retry_after: bool,
    out: &mut Vec<u8>,
) {
    let shape = svc.path_error_shape(None);
    write_io_error_shaped(svc, shape, writer, status, message, retry_after, out);
}

/// [`write_io_error`] with the error body in `shape` (the request's, when the I/O layer
/// answers for a request it knows: a write the log could not take).
pub fn write_io_error_shaped<S: Service>(
    svc: &S,
    shape: S::ErrorShape,
    writer: &mut ResponseWriter,
    status: u16,
    message: &str,
    retry_after: bool,
    out: &mut Vec<u8>,
) {
    let mut body = Vec::with_capacity(96);
    let reply = svc.error(shape, status, message, &mut body);
    let extra: &[(&'static str, &'static [u8])] = if retry_after {
        &[("Retry-After", b"1")]
    } else {
        &[]
    };
    encode(writer, out, &reply, Some("close"), extra, &body, false);
    svc.count_response(status);
}

fn too_large_message(max_body: usize) -> String {
    format!("request body too large (limit {} bytes)", max_body)
}

fn respond_head_error<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    shape: S::ErrorShape,
    e: HeadError,
) {
    respond_error(svc, local, output, shape, e.status(), e.message());
}

/// Writes an error response that closes the connection.
fn respond_error<S: Service>(
    svc: &S,
    local: &mut S::Local,
    output: &mut Vec<u8>,
    shape: S::ErrorShape,
    status: u16,
    message: &str,
) {
    let reply = {
        let (_, body) = S::buffers(local);
        svc.error(shape, status, message, body)
    };
    write_reply(svc, local, output, &reply, false, Version::Http11, false);
}

#[cfg(test)]
mod tests {
    //! The engine alone, against a stand-in service (`tests/exchange.rs` drives it through
    //! the real routes).
    use super::*;
    use crate::http::stream::tests::Parts;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    /// `/ping` answers 204, `/panic` panics in its handler, `/durable` is deferred,
    /// `/stream` streams `abc` then `defg` (its drops counted in [`STREAM_DROPS`]),
    /// anything else is 404.
    struct Fake;

    thread_local! {
        static STREAM_DROPS: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
    }

    fn stream_drops() -> usize {
        STREAM_DROPS.with(|d| d.load(Ordering::SeqCst))
    }

    struct FakeLocal {
        writer: ResponseWriter,
        body: Vec<u8>,
    }

    impl Service for Fake {
        type Local = FakeLocal;
        type ErrorShape = ();

        fn limits(&self) -> Limits {
            Limits {
                max_header_bytes: 1024,
                max_body_bytes: 4096,
            }
        }
        fn new_local(&self, instance: u32, now: SystemTime) -> FakeLocal {
            let mut writer = ResponseWriter::new(instance);
            writer.set_time(now);
            FakeLocal {
                writer,
                body: Vec::new(),
            }
        }
        fn buffers(local: &mut FakeLocal) -> (&mut ResponseWriter, &mut Vec<u8>) {
            (&mut local.writer, &mut local.body)
        }
        fn admit(&self, _: &mut FakeLocal, head: &RequestHead<'_>) -> Result<RouteId, Reply> {
            match head.path {
                "/ping" => Ok(RouteId(0)),
                "/panic" => Ok(RouteId(1)),
                "/durable" => Ok(RouteId(2)),
                "/stream" => Ok(RouteId(3)),
                "/small" => Ok(RouteId(4)),
                "/gathered" => Ok(RouteId(5)),
                _ => Err(Reply::empty(404)),
            }
        }
        fn handle(
            &self,
            local: &mut FakeLocal,
            route: RouteId,
            _: &RequestHead<'_>,
            _: &[u8],
        ) -> Reply {
            local.body.clear();
            match route.0 {
                0 => Reply::empty(204),
                2 => Reply::empty(204).deferred(),
                3 => {
                    let source = Parts {
                        parts: vec![b"abc".to_vec(), b"defg".to_vec()],
                        dropped: Some(STREAM_DROPS.with(Arc::clone)),
                    };
                    let mut reply = Reply::stream(200, "text/plain", Box::new(source));
                    reply.headers.push(("Vary", b"Accept-Encoding".to_vec()));
                    reply
                }
                4 => {
                    let source = Parts {
                        parts: vec![b"small".to_vec()],
                        dropped: None,
                    };
                    Reply::stream(200, "text/plain", Box::new(source))
                }
                5 => {
                    // Gathers over two calls, then writes it all (like `/series`).
                    let source = Parts {
                        parts: vec![Vec::new(), Vec::new(), b"gathered".to_vec()],
                        dropped: None,
                    };
                    Reply::stream(200, "application/json", Box::new(source))
                }
                _ => panic!("the stand-in handler panics"),
            }
        }
        fn path_error_shape(&self, _: Option<&str>) {}
        fn route_error_shape(&self, _: RouteId) {}
        fn defers(&self, route: RouteId, _: Method) -> bool {
            route.0 == 2
        }
        fn error(&self, _: (), status: u16, message: &str, body: &mut Vec<u8>) -> Reply {
            body.clear();
            body.extend_from_slice(message.as_bytes());
            Reply::with_body(status, "text/plain")
        }
        fn count_request(&self) {}
        fn count_response(&self, _: u16) {}
    }

    const PING: &[u8] = b"GET /ping HTTP/1.1\r\n\r\n";

    fn pings(n: usize) -> Vec<u8> {
        PING.repeat(n)
    }

    fn statuses(out: &[u8]) -> Vec<u16> {
        let text = String::from_utf8_lossy(out);
        text.match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }

    #[test]
    fn replay_sets_output_aside_instead_of_spinning_past_the_high_water_mark() {
        // 5,000 pings answer far more than OUTPUT_HIGH_WATER; replay used to spin for ever
        // on WriteFirst. Run it on a thread so a regression fails instead of hanging.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let stream = pings(5_000);
            let _ = tx.send(replay(&Fake, &[&stream], SystemTime::UNIX_EPOCH));
        });
        let (out, closed) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("replay of 5,000 pipelined pings finished");
        assert!(out.len() > OUTPUT_HIGH_WATER);
        let got = statuses(&out);
        assert_eq!(got.len(), 5_000);
        assert!(got.iter().all(|&s| s == 204));
        assert!(!closed);
    }

    #[test]
    fn a_deep_pipeline_stops_at_the_high_water_mark_and_resumes_in_order() {
        const N: usize = 40_000;
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let mut input = pings(N);
        let mut output = Vec::new();
        let mut answered = 0;
        let mut stops = 0;
        for _ in 0..N {
            let progress = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
            assert!(output.len() < OUTPUT_HIGH_WATER + 1024);
            answered += statuses(&output).len();
            output.clear();
            // What is kept of the input is never more than twice what is left to answer.
            assert!(input.len() <= 2 * (N - answered) * PING.len() + PING.len());
            match progress {
                Progress::WriteFirst => stops += 1,
                Progress::NeedMore { phase, min_len } => {
                    assert_eq!((phase, min_len), (Phase::Idle, 1));
                    break;
                }
                Progress::Close { .. } | Progress::AwaitDurable { .. } | Progress::Streaming => {
                    panic!("{progress:?}")
                }
            }
        }
        assert_eq!(answered, N);
        assert!(stops > 1);
        assert!(input.is_empty() && ex.is_idle());
    }

    #[test]
    fn a_request_split_across_a_write_first_stop_completes() {
        // The stop leaves answered bytes in front; the next read lands after them.
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let mut input = pings(5_000);
        input.extend_from_slice(&PING[..7]);
        let mut output = Vec::new();
        let mut answered = 0;
        for _ in 0..1_000 {
            let progress = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
            answered += statuses(&output).len();
            output.clear();
            if let Progress::NeedMore { phase, min_len } = progress {
                assert_eq!(phase, Phase::Head);
                assert_eq!(input, &PING[..7]);
                assert_eq!(min_len, 8);
                break;
            }
            // Arrives while the connection waits to write.
            if answered > 0 && input.ends_with(&PING[..7]) && answered < 4_000 {
                input.extend_from_slice(&PING[7..]);
                input.extend_from_slice(&PING[..7]);
            }
        }
        assert!(answered > 5_000);
    }

    const DURABLE: &[u8] = b"POST /durable HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn a_deferred_answer_is_alone_in_the_output_and_stops_the_pipeline() {
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let mut input = [PING, DURABLE, PING].concat();
        let mut output = Vec::new();
        // The ping is answered; the deferring request waits until that is written.
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::WriteFirst);
        assert_eq!(statuses(&output), [204]);
        output.clear();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::AwaitDurable { close: false });
        assert_eq!(statuses(&output), [204]);
        // Only what follows it is left, unanswered.
        assert_eq!(input, PING);
        assert!(ex.is_idle());
        output.clear();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(
            p,
            Progress::NeedMore {
                phase: Phase::Idle,
                min_len: 1
            }
        );
        assert_eq!(statuses(&output), [204]);
    }

    #[test]
    fn a_deferred_answer_carries_the_keep_alive_decision() {
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let mut input =
            b"POST /durable HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx".to_vec();
        let mut output = Vec::new();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::AwaitDurable { close: true });
        assert!(String::from_utf8_lossy(&output).contains("Connection: close"));
        // Under shutdown too.
        let mut input = DURABLE.to_vec();
        output.clear();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, true);
        assert_eq!(p, Progress::AwaitDurable { close: true });
        assert!(input.is_empty());
    }

    #[test]
    fn a_chunked_deferring_request_behind_a_response_waits_and_is_answered_once() {
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let chunked: &[u8] =
            b"POST /durable HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut input = [PING, chunked].concat();
        let mut output = Vec::new();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::WriteFirst);
        assert_eq!(statuses(&output), [204]);
        output.clear();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::AwaitDurable { close: false });
        assert_eq!(statuses(&output), [204]);
        assert!(input.is_empty() && ex.is_idle());
    }

    const STREAM: &[u8] = b"GET /stream HTTP/1.1\r\n\r\n";

    /// Calls the engine until it stops asking to be called again; returns every output
    /// and the last progress.
    fn drive(ex: &mut Exchange, input: &mut Vec<u8>) -> (Vec<Vec<u8>>, Progress) {
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut outputs = Vec::new();
        for _ in 0..100 {
            let mut output = Vec::new();
            let p = process(&Fake, &mut local, ex, input, &mut output, false);
            outputs.push(output);
            if !matches!(p, Progress::Streaming | Progress::WriteFirst) {
                return (outputs, p);
            }
        }
        panic!("the engine never stopped")
    }

    /// [`drive`], expecting the connection idle at the end (every request answered).
    fn drive_to_idle(ex: &mut Exchange, input: &mut Vec<u8>) -> Vec<Vec<u8>> {
        let (outputs, p) = drive(ex, input);
        assert_eq!(
            p,
            Progress::NeedMore {
                phase: Phase::Idle,
                min_len: 1
            }
        );
        outputs
    }

    #[test]
    fn a_streamed_body_goes_out_a_chunk_per_call_then_the_pipeline_goes_on() {
        let mut ex = Exchange::default();
        let mut input = [PING, STREAM, PING].concat();
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut output = Vec::new();
        // The ping, the stream's head and its first part, in one output.
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::Streaming);
        assert!(ex.is_streaming() && ex.is_idle());
        // Only what follows the streamed request is left, unanswered.
        assert_eq!(input, PING);
        let text = String::from_utf8(output).unwrap();
        assert_eq!(statuses(text.as_bytes()), [204, 200]);
        let (_, body) = text.rsplit_once("\r\n\r\n").unwrap();
        assert_eq!(body, "00000003\r\nabc\r\n");
        assert!(text.contains("Vary: Accept-Encoding\r\n"));
        assert!(text.contains("Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"));
        assert!(!text.contains("Content-Length"));
        // The last part, the last chunk, then the pipelined ping.
        let before = stream_drops();
        let outputs = drive_to_idle(&mut ex, &mut input);
        assert_eq!(outputs.len(), 1);
        let text = String::from_utf8(outputs[0].clone()).unwrap();
        assert!(
            text.starts_with("00000004\r\ndefg\r\n0\r\n\r\nHTTP/1.1 204 "),
            "{text}"
        );
        assert_eq!(stream_drops(), before + 1);
        assert!(!ex.is_streaming() && input.is_empty());
    }

    #[test]
    fn head_of_a_streamed_answer_is_the_head_alone_and_drops_the_source() {
        let before = stream_drops();
        let mut ex = Exchange::default();
        let mut input = [b"HEAD /stream HTTP/1.1\r\n\r\n".as_slice(), PING].concat();
        let outputs = drive_to_idle(&mut ex, &mut input);
        let text = String::from_utf8(outputs.concat()).unwrap();
        assert_eq!(statuses(text.as_bytes()), [200, 204]);
        assert!(
            text.contains("Transfer-Encoding: chunked\r\n\r\nHTTP/1.1 204"),
            "{text}"
        );
        assert!(!text.contains("abc"));
        assert_eq!(stream_drops(), before + 1);
    }

    #[test]
    fn http_1_0_gets_the_whole_body_with_its_length_and_keeps_alive() {
        let before = stream_drops();
        let mut ex = Exchange::default();
        let mut input = [
            b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".as_slice(),
            PING,
        ]
        .concat();
        let outputs = drive_to_idle(&mut ex, &mut input);
        let text = String::from_utf8(outputs.concat()).unwrap();
        assert_eq!(statuses(text.as_bytes()), [200, 204]);
        assert!(text.contains("Connection: keep-alive\r\n"), "{text}");
        assert!(!text.contains("Transfer-Encoding"), "{text}");
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert!(text.contains("\r\n\r\nabcdefgHTTP/1.1 204"), "{text}");
        assert!(input.is_empty());
        assert_eq!(stream_drops(), before + 1);
        // Replay (socketless) gives the same.
        let (out, _) = replay(
            &Fake,
            &[b"GET /stream HTTP/1.0\r\n\r\n"],
            SystemTime::UNIX_EPOCH,
        );
        assert!(out.ends_with(b"\r\n\r\nabcdefg"));
    }

    #[test]
    fn a_body_complete_in_its_first_part_keeps_its_content_length() {
        let mut ex = Exchange::default();
        let mut input = b"GET /small HTTP/1.1\r\n\r\n".to_vec();
        let (outputs, _) = drive(&mut ex, &mut input);
        let text = String::from_utf8(outputs.concat()).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert!(!text.contains("Transfer-Encoding"), "{text}");
        assert!(text.ends_with("\r\n\r\nsmall"), "{text}");
    }

    #[test]
    fn a_source_that_gathers_first_is_sent_whole_with_its_length_once_it_is_done() {
        let mut ex = Exchange::default();
        let mut input = [b"GET /gathered HTTP/1.1\r\n\r\n".as_slice(), PING].concat();
        let outputs = drive_to_idle(&mut ex, &mut input);
        // Nothing at all while it gathers: not even the head.
        assert_eq!(outputs.len(), 3, "{outputs:?}");
        assert!(outputs[0].is_empty() && outputs[1].is_empty());
        let text = String::from_utf8(outputs[2].clone()).unwrap();
        assert_eq!(statuses(text.as_bytes()), [200, 204]);
        assert!(text.contains("Content-Length: 8\r\n"), "{text}");
        assert!(!text.contains("Transfer-Encoding"), "{text}");
        assert!(text.contains("\r\n\r\ngatheredHTTP/1.1 204"), "{text}");
    }

    #[test]
    fn a_connection_dropped_mid_stream_drops_its_source() {
        let before = stream_drops();
        let mut ex = Exchange::default();
        let mut input = STREAM.to_vec();
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut output = Vec::new();
        let p = process(&Fake, &mut local, &mut ex, &mut input, &mut output, false);
        assert_eq!(p, Progress::Streaming);
        assert_eq!(stream_drops(), before);
        // The I/O layer closes the connection (client gone, write timeout, shutdown).
        drop(ex);
        assert_eq!(stream_drops(), before + 1);
    }

    #[test]
    fn a_panicking_handler_answers_500_after_the_completed_responses_and_closes() {
        let mut local = Fake.new_local(1, SystemTime::UNIX_EPOCH);
        let mut ex = Exchange::default();
        let mut input = PING.repeat(2);
        input.extend_from_slice(b"GET /panic HTTP/1.1\r\n\r\n");
        input.extend_from_slice(PING);
        let mut output = Vec::new();
        let progress = process_catching(
            &Fake,
            &mut local,
            &mut ex,
            &mut input,
            &mut output,
            false,
            "conn=test",
        );
        assert_eq!(progress, Progress::Close { linger: true });
        assert_eq!(statuses(&output), [204, 204, 500]);
        let text = String::from_utf8_lossy(&output);
        assert!(text.ends_with("internal server error"), "{}", text);
        assert_eq!(text.matches("Connection: close").count(), 1);
        assert!(input.is_empty() && ex.is_idle());
        // The same scratch serves the next connection.
        let mut input = PING.to_vec();
        let mut output = Vec::new();
        let mut ex = Exchange::default();
        let progress = process_catching(
            &Fake,
            &mut local,
            &mut ex,
            &mut input,
            &mut output,
            false,
            "conn=test",
        );
        assert_eq!(
            progress,
            Progress::NeedMore {
                phase: Phase::Idle,
                min_len: 1
            }
        );
        assert_eq!(statuses(&output), [204]);
    }
}
