//! Request -> response for every endpoint, shared by all three I/O models.
//!
//! [`ROUTES`] is the one table of endpoints: path, methods (and from them the `Allow`
//! header of a `405`), whether `--auth-token` applies, which methods carry a body, the
//! error body shape (InfluxDB v1 or v2) and the handler. [`App`] implements the HTTP
//! engine's [`Service`] from it: `admit` decides from the head alone (authentication, path,
//! method, whether a body is welcome) so a refused request is answered before its body is
//! read; `handle` runs the handler of a complete request. Handlers write their body into a
//! reused per-thread buffer and return a [`Reply`]; the engine encodes it. Nothing here
//! does I/O.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::{App, Local};
use crate::durable::{Deferred, DeferredDelete, DeferredWrite};
use crate::http::request::{BodyFraming, ContentEncoding, Method, RequestHead};
use crate::http::response::ResponseWriter;
pub use crate::http::service::Reply;
use crate::http::service::{Limits, RouteId, Service};
use crate::ingest::write::{self, WriteError, WriteSource};
use crate::log_limit::SharedLogLimiter;
use crate::read::series::SeriesFilter;
use crate::stats::bump;
use crate::tuning::KEEP_BODY_CAPACITY;

/// A complete request as handlers see it.
pub struct Request<'a> {
    pub head: &'a RequestHead<'a>,
    /// The body after chunked decoding (content encoding still applied).
    pub body: &'a [u8],
}

pub const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The shape of error bodies: InfluxDB 1.x `{"error":..}` or 2.x `{"code":..,"message":..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    V1,
    V2,
}

/// Answers a complete, admitted request; the body goes into `Local::body` (cleared).
pub type Handler = fn(&App, &mut Local, &Request<'_>) -> Reply;

/// One endpoint.
pub struct Route {
    pub path: &'static str,
    /// Methods answered; any other gets `405` with these in `Allow`.
    pub methods: &'static [Method],
    /// Needs the `--auth-token` when one is set.
    pub needs_auth: bool,
    /// Methods whose body carries data; on the others only a small body is tolerated.
    pub takes_body: &'static [Method],
    pub shape: Shape,
    /// Whether the handler may hold its answer ([`Reply::defer`]).
    pub defers: Defers,
    pub handler: Handler,
}

/// Which requests of a route may be answered with a held reply ([`Reply::defer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defers {
    Never,
    /// With the write log on: a write's `204` waits until the log holds it.
    WithLog,
    /// Requests with this method, with or without the log: a delete's answer waits until
    /// the aggregator applied it.
    Always(Method),
}

const READ: &[Method] = &[Method::Get, Method::Head];
const POST: &[Method] = &[Method::Post];
const NONE: &[Method] = &[];

/// Every endpoint. Lookup is a linear scan: a handful of string compares, no hashing.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/ping",
        methods: READ,
        needs_auth: false,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: ping,
    },
    Route {
        path: "/health",
        methods: READ,
        needs_auth: false,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: health,
    },
    Route {
        path: "/write",
        methods: POST,
        needs_auth: true,
        takes_body: POST,
        shape: Shape::V1,
        defers: Defers::WithLog,
        handler: write_v1,
    },
    Route {
        path: "/api/v2/write",
        methods: POST,
        needs_auth: true,
        takes_body: POST,
        shape: Shape::V2,
        defers: Defers::WithLog,
        handler: write_v2,
    },
    Route {
        path: "/query",
        methods: &[Method::Get, Method::Post],
        needs_auth: true,
        takes_body: POST,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: query,
    },
    Route {
        path: "/metrics",
        methods: READ,
        needs_auth: true,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: metrics,
    },
    Route {
        path: "/series",
        methods: &[Method::Get, Method::Head, Method::Delete],
        needs_auth: true,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Always(Method::Delete),
        handler: series,
    },
    Route {
        path: "/stats",
        methods: READ,
        needs_auth: true,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: stats,
    },
];

/// Endpoints that exist only in debug builds (what the integration tests run), to reach
/// code paths no valid request should: `GET /debug/panic` panics in its handler;
/// `POST /debug/hold-aggregator?ms=N` stops the aggregator before its next batch for up to
/// N ms (at most a minute; `ms=0` lets it go on), so a test can keep deletes unanswered.
#[cfg(debug_assertions)]
const DEBUG_ROUTES: &[Route] = &[
    Route {
        path: "/debug/panic",
        methods: READ,
        needs_auth: true,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: debug_panic,
    },
    Route {
        path: "/debug/hold-aggregator",
        methods: POST,
        needs_auth: true,
        takes_body: NONE,
        shape: Shape::V1,
        defers: Defers::Never,
        handler: debug_hold_aggregator,
    },
];
#[cfg(not(debug_assertions))]
const DEBUG_ROUTES: &[Route] = &[];

/// Unknown paths under this prefix still get v2-shaped errors: v2 clients parse them.
const V2_PREFIX: &str = "/api/v2/";

fn routes() -> impl Iterator<Item = &'static Route> {
    ROUTES.iter().chain(DEBUG_ROUTES)
}

fn find(path: &str) -> Option<(RouteId, &'static Route)> {
    routes()
        .enumerate()
        .find(|(_, r)| r.path == path)
        .map(|(i, r)| (RouteId(i as u16), r))
}

fn route(id: RouteId) -> &'static Route {
    // Ids come from `find` only; an unknown one would be an engine bug, answered as /ping
    // would be rather than by a panic.
    routes().nth(usize::from(id.0)).unwrap_or(&ROUTES[0])
}

fn shape_for_path(path: &str) -> Shape {
    match find(path) {
        Some((_, r)) => r.shape,
        None if path.starts_with(V2_PREFIX) => Shape::V2,
        None => Shape::V1,
    }
}

/// `GET, HEAD` for the methods of a route.
fn allow_header(methods: &[Method]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    for (i, m) in methods.iter().enumerate() {
        if i > 0 {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(m.as_str().as_bytes());
    }
    v
}

impl Service for App {
    type Local = Local;
    type ErrorShape = Shape;

    fn limits(&self) -> Limits {
        Limits {
            max_header_bytes: self.config.max_header_bytes,
            max_body_bytes: self.config.max_body_bytes,
        }
    }

    fn new_local(&self, instance: u32, now: SystemTime) -> Local {
        let mut local = Local::new(instance);
        local.set_time(now);
        local
    }

    fn buffers(local: &mut Local) -> (&mut ResponseWriter, &mut Vec<u8>) {
        (&mut local.writer, &mut local.body)
    }

    fn admit(&self, local: &mut Local, head: &RequestHead<'_>) -> Result<RouteId, Reply> {
        admit(self, head, &mut local.body)
    }

    fn handle(
        &self,
        local: &mut Local,
        route_id: RouteId,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Reply {
        if local.body.capacity() > KEEP_BODY_CAPACITY {
            // The last answer was a big read: give its buffer back rather than pin it to
            // this thread for good.
            local.body = Vec::new();
        }
        local.body.clear();
        (route(route_id).handler)(self, local, &Request { head, body })
    }

    fn path_error_shape(&self, path: Option<&str>) -> Shape {
        path.map_or(Shape::V1, shape_for_path)
    }

    fn route_error_shape(&self, route_id: RouteId) -> Shape {
        route(route_id).shape
    }

    fn defers(&self, route_id: RouteId, method: Method) -> bool {
        match route(route_id).defers {
            Defers::Never => false,
            Defers::WithLog => self.durable.is_some(),
            Defers::Always(m) => m == method,
        }
    }

    fn error(&self, shape: Shape, status: u16, message: &str, body: &mut Vec<u8>) -> Reply {
        error_reply(shape, status, message, None, body)
    }

    fn count_request(&self) {
        bump(&self.stats.requests.requests_total, 1);
    }

    fn count_response(&self, status: u16) {
        self.stats.count_response(status);
        if status == 413 || status == 431 {
            self.warn_limit_hit(status);
        }
    }
}

/// A limit hit is worth a warning (a client misconfigured, or probing), but a flood of them
/// must not become a flood of lines: one per limit per interval, with the count suppressed.
static WARN_HEADER_LIMIT: LazyLock<SharedLogLimiter> =
    LazyLock::new(|| SharedLogLimiter::new(Duration::from_secs(10)));
static WARN_BODY_LIMIT: LazyLock<SharedLogLimiter> =
    LazyLock::new(|| SharedLogLimiter::new(Duration::from_secs(10)));

impl App {
    fn warn_limit_hit(&self, status: u16) {
        let (limiter, flag, limit) = if status == 431 {
            (
                &WARN_HEADER_LIMIT,
                "--max-header-bytes",
                self.config.max_header_bytes,
            )
        } else {
            (
                &WARN_BODY_LIMIT,
                "--max-body-bytes",
                self.config.max_body_bytes,
            )
        };
        if let Some(suppressed) = limiter.check(Instant::now()) {
            log::warn!(
                "limit hit: a request passed {} ({} bytes), answered {}; {} more since the last warning",
                flag,
                limit,
                status,
                suppressed
            );
        }
    }
}

/// Decides on a request from its head: `Ok(route)` to go on and read the body, or the reply
/// that refuses it (its body, if any, written to `body_out`).
fn admit(app: &App, head: &RequestHead<'_>, body_out: &mut Vec<u8>) -> Result<RouteId, Reply> {
    body_out.clear();
    let found = find(head.path);
    let shape = match found {
        Some((_, r)) => r.shape,
        None => shape_for_path(head.path),
    };
    let needs_auth = found.is_none_or(|(_, r)| r.needs_auth);
    if let Some(token) = &app.config.auth_token {
        if needs_auth && !crate::auth::authorized(token, head.authorization, head.query) {
            let mut reply = error_reply(shape, 401, "authorization failed", None, body_out);
            reply.headers.push(("WWW-Authenticate", b"Bearer".to_vec()));
            // Nothing past the head is read for an unauthenticated client: if it announced
            // a body, the connection goes (even when the body already arrived with the head).
            reply.close = head.framing != BodyFraming::None;
            return Err(reply);
        }
    }
    let Some((id, route)) = found else {
        return Err(error_reply(shape, 404, "not found", None, body_out));
    };
    if !route.methods.contains(&head.method) {
        let message = format!("method {} not allowed", head.method_str);
        let mut reply = error_reply(shape, 405, &message, None, body_out);
        reply.headers.push(("Allow", allow_header(route.methods)));
        return Err(reply);
    }
    if head.expect_unsupported {
        let message = "unsupported Expect value";
        return Err(error_reply(shape, 417, message, None, body_out));
    }
    let declared = match head.framing {
        BodyFraming::None => 0,
        BodyFraming::Length(n) => n,
        BodyFraming::Chunked => u64::MAX,
    };
    let takes_body = route.takes_body.contains(&head.method);
    if !takes_body && declared > app.config.max_header_bytes as u64 {
        let message = "request body not allowed on this endpoint";
        let mut reply = error_reply(shape, 400, message, None, body_out);
        reply.close = true;
        return Err(reply);
    }
    if takes_body && head.content_encoding == ContentEncoding::Unsupported {
        let message = "unsupported Content-Encoding (gzip and identity are supported)";
        return Err(error_reply(shape, 415, message, None, body_out));
    }
    Ok(id)
}

// ----- handlers ---------------------------------------------------------------------------

fn ping(_: &App, _: &mut Local, _: &Request<'_>) -> Reply {
    Reply::empty(204)
}

fn health(_: &App, local: &mut Local, _: &Request<'_>) -> Reply {
    local.body.extend_from_slice(b"ok");
    Reply::with_body(200, TEXT)
}

fn stats(app: &App, local: &mut Local, _: &Request<'_>) -> Reply {
    crate::stats::render_json(&app.stats, &app.info, &mut local.body);
    Reply::with_body(200, JSON)
}

/// `GET /metrics`: the exposition, gzip-encoded when `Accept-Encoding` prefers it (as
/// Prometheus always asks), with `Vary: Accept-Encoding` either way. The body is streamed
/// (`read/scrape.rs`): rendered a part at a time, each part once the previous one was
/// written, from a read of the store in slices (writes go on meanwhile), so neither the
/// text nor its gzip encoding is ever held whole.
fn metrics(app: &App, _: &mut Local, req: &Request<'_>) -> Reply {
    let families = crate::stats::own_families(&app.stats, &app.info, &app.pipeline);
    let gzip = req.head.accept_encoding.prefers_gzip();
    let body = crate::read::scrape::metrics_body(Arc::clone(&app.pipeline), families, gzip);
    let mut reply = Reply::stream(200, PROMETHEUS, body);
    reply.headers.push(("Vary", b"Accept-Encoding".to_vec()));
    if gzip {
        reply.headers.push(("Content-Encoding", b"gzip".to_vec()));
    }
    reply
}

fn series(app: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    if req.head.method == Method::Delete {
        return delete_series(app, local, req);
    }
    match SeriesFilter::from_query(req.head.query) {
        Ok(filter) => {
            let body = crate::read::scrape::series_body(Arc::clone(&app.pipeline), filter);
            Reply::stream(200, JSON, body)
        }
        Err(message) => error_reply(Shape::V1, 400, &message, None, &mut local.body),
    }
}

/// `DELETE /series`: removes the series matching the filters, in order with the writes:
/// through the write log as its own record (after every write acknowledged so far), or
/// under `--memory-only` through the queue; answered `200 {"deleted":N}` once the
/// aggregator applied it, so a read after the answer never shows them. The answer is held
/// (the selector is left on `Local::deferred` for the serving thread to send on): no
/// serving thread waits for the log or the aggregator, and the final answer (or a `503`
/// with `Retry-After` if the delete cannot be applied) reaches the connection later.
fn delete_series(_: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    match crate::read::series::delete_selector(req.head.query) {
        Ok(selector) => {
            local.deferred = Some(Deferred::Delete(DeferredDelete {
                selector,
                version: req.head.version,
            }));
            // A stand-in, replaced by the final answer when the delete is done.
            Reply::with_body(200, JSON).deferred()
        }
        Err(message) => error_reply(Shape::V1, 400, &message, None, &mut local.body),
    }
}

fn write_v1(app: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    write(app, local, req, false)
}

fn write_v2(app: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    write(app, local, req, true)
}

#[cfg(debug_assertions)]
fn debug_panic(_: &App, _: &mut Local, _: &Request<'_>) -> Reply {
    panic!("GET /debug/panic asked for a panic");
}

#[cfg(debug_assertions)]
fn debug_hold_aggregator(app: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    let ms = req
        .head
        .query
        .split('&')
        .find_map(|p| p.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok());
    match ms {
        Some(ms) => {
            let hold = Duration::from_millis(ms.min(60_000));
            app.pipeline.debug_hold_aggregator(hold);
            Reply::empty(204)
        }
        None => error_reply(
            Shape::V1,
            400,
            "expected ms=<milliseconds>",
            None,
            &mut local.body,
        ),
    }
}

/// `POST /write` and `POST /api/v2/write`: parse the whole body, then take all of it or
/// none. With the write log: reserve queue room for it (or `503`), leave the batch on
/// `Local::deferred` and answer a deferred `204`, which leaves once the log holds the
/// write (the serving thread appends it). Under `--memory-only`: queue it and answer.
fn write(app: &App, local: &mut Local, req: &Request<'_>, v2: bool) -> Reply {
    let Local {
        body: out,
        ingest: scratch,
        now,
        deferred,
        ..
    } = local;
    let result = crate::ingest::write::parse_params(req.head.query, v2).and_then(|params| {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let gzip = req.head.content_encoding == ContentEncoding::Gzip;
        let max_body = app.config.max_body_bytes;
        if app.durable.is_none() {
            let (pipeline, stats) = (&app.pipeline, &app.stats);
            return write::write(
                pipeline, stats, scratch, req.body, gzip, &params, now_ns, max_body,
            )
            .map(|_| None);
        }
        let write::Parsed { batch, body_len } = write::parse(
            &app.stats, scratch, req.body, gzip, &params, now_ns, max_body,
        )?;
        if batch.is_empty() {
            // Nothing to log (a body of comments): answered at once.
            return Ok(None);
        }
        app.pipeline
            .reserve(batch.len())
            .map_err(|why| write::unavailable(&app.pipeline, why))?;
        let source = WriteSource {
            params,
            now_ns,
            body_len,
        };
        Ok(Some((batch, source)))
    });
    match result {
        Ok(None) => Reply::empty(204),
        Ok(Some((batch, source))) => {
            *deferred = Some(Deferred::Write(DeferredWrite { batch, source, v2 }));
            Reply::empty(204).deferred()
        }
        Err(e) => {
            let status = e.status();
            let (message, line) = match e {
                WriteError::Invalid { message, line } => (message, line),
                WriteError::TooLarge(m) | WriteError::Unavailable(m) => (m, None),
            };
            let shape = if v2 { Shape::V2 } else { Shape::V1 };
            let mut reply = error_reply(shape, status, &message, line, out);
            if status == 503 {
                reply.headers.push(("Retry-After", b"1".to_vec()));
            }
            if status == 413 {
                reply.close = true;
            }
            reply
        }
    }
}

/// `/query`: the InfluxDB 1.x compatibility stub. Clients send `CREATE DATABASE` before
/// writing; that succeeds (databases are just a `db` tag here), anything else is refused.
fn query(_: &App, local: &mut Local, req: &Request<'_>) -> Reply {
    let out = &mut local.body;
    let mut q: Option<String> = None;
    let is_form = req.head.content_type.is_some_and(|ct| {
        ct.len() >= 33 && ct[..33].eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    });
    if req.head.method == Method::Post && (is_form || req.head.content_type.is_none()) {
        q = form_value(req.body, "q");
    }
    if q.is_none() {
        q = form_value(req.head.query.as_bytes(), "q");
    }
    let Some(q) = q else {
        return error_reply(
            Shape::V1,
            400,
            "missing required parameter \"q\"",
            None,
            out,
        );
    };
    match parse_create_database(&q) {
        Some(_name) => {
            out.extend_from_slice(br#"{"results":[{"statement_id":0}]}"#);
            Reply::with_body(200, JSON)
        }
        None => error_reply(
            Shape::V1,
            400,
            "metricstream's /query supports only CREATE DATABASE <name>; query data with GET /series or GET /metrics",
            None,
            out,
        ),
    }
}

fn form_value(bytes: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(bytes)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `CREATE DATABASE <name>` with the name bare or double-quoted (with `\"` escapes), any
/// case, optional trailing `;`. Returns the database name.
pub fn parse_create_database(q: &str) -> Option<String> {
    let s = q.trim();
    let s = s.strip_suffix(';').unwrap_or(s).trim_end();
    let (kw1, rest) = split_word(s)?;
    let (kw2, rest) = split_word(rest)?;
    if !kw1.eq_ignore_ascii_case("create") || !kw2.eq_ignore_ascii_case("database") {
        return None;
    }
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    c @ ('"' | '\\') => name.push(c),
                    c => {
                        name.push('\\');
                        name.push(c);
                    }
                },
                '"' => break,
                c => name.push(c),
            }
        }
        (chars.as_str().trim().is_empty() && !name.is_empty()).then_some(name)
    } else {
        let valid = !rest.is_empty()
            && !rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_alphanumeric() || c == '_');
        valid.then(|| rest.to_string())
    }
}

fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace)?;
    Some((&s[..end], &s[end..]))
}

/// The error body every endpoint uses: `{"error":..}` (v1) or `{"code":..,"message":..}` on
/// `/api/v2/*`, with `"line"` for line-protocol errors, and the message in
/// `X-Influxdb-Error`.
pub fn error_reply(
    shape: Shape,
    status: u16,
    message: &str,
    line: Option<usize>,
    out: &mut Vec<u8>,
) -> Reply {
    use serde_json::{Map, Value};
    out.clear();
    let mut obj = Map::new();
    if shape == Shape::V2 {
        let code = match status {
            401 => "unauthorized",
            413 => "request too large",
            500 | 503 => "unavailable",
            _ => "invalid",
        };
        obj.insert("code".into(), Value::from(code));
        obj.insert("message".into(), Value::from(message));
    } else {
        obj.insert("error".into(), Value::from(message));
    }
    if let Some(line) = line {
        obj.insert("line".into(), Value::from(line));
    }
    let _ = serde_json::to_writer(&mut *out, &Value::Object(obj));
    let mut reply = Reply::with_body(status, JSON);
    reply.headers.push((
        "X-Influxdb-Error",
        crate::http::response::header_safe(message),
    ));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_database_forms() {
        assert_eq!(
            parse_create_database("CREATE DATABASE mydb").as_deref(),
            Some("mydb")
        );
        assert_eq!(
            parse_create_database("create database mydb;").as_deref(),
            Some("mydb")
        );
        assert_eq!(
            parse_create_database("  Create   Database\tx_1 ; ").as_deref(),
            Some("x_1")
        );
        assert_eq!(
            parse_create_database(r#"CREATE DATABASE "my db""#).as_deref(),
            Some("my db")
        );
        assert_eq!(
            parse_create_database(r#"CREATE DATABASE "a\"b";"#).as_deref(),
            Some("a\"b")
        );
    }

    #[test]
    fn other_statements_are_refused() {
        for q in [
            "",
            "SHOW DATABASES",
            "CREATE DATABASE",
            "CREATE DATABASE a b",
            "CREATE DATABASE 1abc",
            "CREATE DATABASE a; DROP DATABASE b",
            "DROP DATABASE x",
            "CREATE DATABASE \"unterminated",
            "CREATE DATABASE \"\"",
            "CREATE RETENTION POLICY x",
            "SELECT * FROM cpu",
        ] {
            assert_eq!(parse_create_database(q), None, "{:?}", q);
        }
    }

    #[test]
    fn v1_and_v2_error_shapes() {
        let mut out = Vec::new();
        let r = error_reply(Shape::V1, 400, "bad \"thing\"", Some(3), &mut out);
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
        assert_eq!(v["line"], 3);
        let r = error_reply(Shape::V2, 413, "too big", None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["code"], "request too large");
        assert_eq!(v["message"], "too big");
        assert!(r.headers.iter().any(|(n, _)| *n == "X-Influxdb-Error"));
    }
}
