//! Request -> response for every endpoint, shared by all three I/O models.
//!
//! [`admit`] decides from the head alone (authentication, path, method, whether a body is
//! welcome) so a refused request is answered before its body is read; [`handle`] answers a
//! complete request. Handlers write their body into a reused per-thread buffer and return a
//! [`Reply`] describing status and headers; `exchange` encodes it. Nothing here does I/O.

use std::time::UNIX_EPOCH;

use crate::app::{App, Local};
use crate::http::request::{ContentEncoding, Method, RequestHead};
use crate::ingest::write::WriteError;
use crate::read::series::SeriesFilter;

/// A complete request as handlers see it.
pub struct Request<'a> {
    pub head: &'a RequestHead<'a>,
    /// The body after chunked decoding (content encoding still applied).
    pub body: &'a [u8],
}

/// A response, minus its body (which is in `Local::body`) and the common headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Send `Local::body` with `Content-Length` (ignored for bodiless statuses).
    pub has_body: bool,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// Close the connection after this response.
    pub close: bool,
}

impl Reply {
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            has_body: false,
            headers: Vec::new(),
            close: false,
        }
    }

    fn with_body(status: u16, content_type: &'static str) -> Reply {
        Reply {
            status,
            content_type: Some(content_type),
            has_body: true,
            headers: Vec::new(),
            close: false,
        }
    }
}

pub const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Ping,
    Health,
    Stats,
    Query,
    Write,
    WriteV2,
    Metrics,
    Series,
}

impl Route {
    fn from_path(path: &str) -> Option<Route> {
        Some(match path {
            "/ping" => Route::Ping,
            "/health" => Route::Health,
            "/stats" => Route::Stats,
            "/query" => Route::Query,
            "/write" => Route::Write,
            "/api/v2/write" => Route::WriteV2,
            "/metrics" => Route::Metrics,
            "/series" => Route::Series,
            _ => return None,
        })
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Ping | Route::Health | Route::Stats | Route::Metrics | Route::Series => {
                "GET, HEAD"
            }
            Route::Query => "GET, POST",
            Route::Write | Route::WriteV2 => "POST",
        }
    }

    fn allows(self, m: Method) -> bool {
        match self {
            Route::Ping | Route::Health | Route::Stats | Route::Metrics | Route::Series => {
                matches!(m, Method::Get | Method::Head)
            }
            Route::Query => matches!(m, Method::Get | Method::Post),
            Route::Write | Route::WriteV2 => m == Method::Post,
        }
    }

    /// Endpoints whose request body carries data; the rest tolerate only a small one.
    fn takes_body(self, m: Method) -> bool {
        m == Method::Post && matches!(self, Route::Query | Route::Write | Route::WriteV2)
    }

    /// Endpoints open even when `--auth-token` is set.
    fn is_open(self) -> bool {
        matches!(self, Route::Ping | Route::Health)
    }

    /// Errors in the InfluxDB v2 shape (`{"code","message"}`).
    pub fn is_v2(self) -> bool {
        self == Route::WriteV2
    }
}

pub fn is_v2_path(path: &str) -> bool {
    path.starts_with("/api/v2/")
}

/// Decides on a request from its head: `Ok(route)` to go on and read the body, or the reply
/// that refuses it (its body, if any, written to `body_out`).
pub fn admit(app: &App, head: &RequestHead<'_>, body_out: &mut Vec<u8>) -> Result<Route, Reply> {
    body_out.clear();
    let v2 = is_v2_path(head.path);
    let route = Route::from_path(head.path);
    let open = route.is_some_and(Route::is_open);
    if let Some(token) = &app.config.auth_token {
        if !open && !crate::auth::authorized(token, head.authorization, head.query) {
            let mut reply = error_reply(v2, 401, "authorization failed", None, body_out);
            reply.headers.push(("WWW-Authenticate", b"Bearer".to_vec()));
            // Nothing past the head is read for an unauthenticated client: if it announced
            // a body, the connection goes (even when the body already arrived with the head).
            reply.close = head.framing != crate::http::BodyFraming::None;
            return Err(reply);
        }
    }
    let Some(route) = route else {
        return Err(error_reply(v2, 404, "not found", None, body_out));
    };
    if !route.allows(head.method) {
        let mut reply = error_reply(
            v2,
            405,
            &format!("method {} not allowed", head.method_str),
            None,
            body_out,
        );
        reply
            .headers
            .push(("Allow", route.allow().as_bytes().to_vec()));
        return Err(reply);
    }
    if head.expect_unsupported {
        return Err(error_reply(
            v2,
            417,
            "unsupported Expect value",
            None,
            body_out,
        ));
    }
    let declared = match head.framing {
        crate::http::BodyFraming::None => 0,
        crate::http::BodyFraming::Length(n) => n,
        crate::http::BodyFraming::Chunked => u64::MAX,
    };
    if !route.takes_body(head.method) && declared > app.config.max_header_bytes as u64 {
        let mut reply = error_reply(
            v2,
            400,
            "request body not allowed on this endpoint",
            None,
            body_out,
        );
        reply.close = true;
        return Err(reply);
    }
    if route.takes_body(head.method) && head.content_encoding == ContentEncoding::Unsupported {
        return Err(error_reply(
            v2,
            415,
            "unsupported Content-Encoding (gzip and identity are supported)",
            None,
            body_out,
        ));
    }
    Ok(route)
}

/// Answers a complete, admitted request.
pub fn handle(app: &App, local: &mut Local, route: Route, req: &Request<'_>) -> Reply {
    let out = &mut local.body;
    out.clear();
    match route {
        Route::Ping => Reply::empty(204),
        Route::Health => {
            out.extend_from_slice(b"ok");
            Reply::with_body(200, TEXT)
        }
        Route::Stats => {
            crate::stats::render_json(&app.stats, &app.info, out);
            Reply::with_body(200, JSON)
        }
        Route::Query => query(req, out),
        Route::Write => write(app, local, req, false),
        Route::WriteV2 => write(app, local, req, true),
        Route::Metrics => {
            let families = crate::stats::own_families(&app.stats, &app.info, &app.pipeline);
            let store = app.pipeline.store();
            crate::read::exposition::render_metrics(&store, &families, out);
            Reply::with_body(200, PROMETHEUS)
        }
        Route::Series => match SeriesFilter::from_query(req.head.query) {
            Ok(filter) => {
                let store = app.pipeline.store();
                crate::read::series::render_series(&store, &filter, out);
                Reply::with_body(200, JSON)
            }
            Err(message) => error_reply(false, 400, &message, None, out),
        },
    }
}

/// `POST /write` and `POST /api/v2/write`: parse the whole body, queue all of it or none.
fn write(app: &App, local: &mut Local, req: &Request<'_>, v2: bool) -> Reply {
    let Local {
        body: out,
        ingest: scratch,
        now,
        ..
    } = local;
    let result = crate::ingest::write::parse_params(req.head.query, v2).and_then(|params| {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        crate::ingest::write::write(
            &app.pipeline,
            &app.stats,
            scratch,
            req.body,
            req.head.content_encoding == ContentEncoding::Gzip,
            &params,
            now_ns,
            app.config.max_body_bytes,
        )
    });
    match result {
        Ok(_) => Reply::empty(204),
        Err(e) => {
            let status = e.status();
            let (message, line) = match e {
                WriteError::Invalid { message, line } => (message, line),
                WriteError::TooLarge(m) | WriteError::Unavailable(m) => (m, None),
            };
            let mut reply = error_reply(v2, status, &message, line, out);
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
fn query(req: &Request<'_>, out: &mut Vec<u8>) -> Reply {
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
        return error_reply(false, 400, "missing required parameter \"q\"", None, out);
    };
    match parse_create_database(&q) {
        Some(_name) => {
            out.extend_from_slice(br#"{"results":[{"statement_id":0}]}"#);
            Reply::with_body(200, JSON)
        }
        None => error_reply(
            false,
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
    v2: bool,
    status: u16,
    message: &str,
    line: Option<usize>,
    out: &mut Vec<u8>,
) -> Reply {
    use serde_json::{Map, Value};
    out.clear();
    let mut obj = Map::new();
    if v2 {
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
        let r = error_reply(false, 400, "bad \"thing\"", Some(3), &mut out);
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
        assert_eq!(v["line"], 3);
        let r = error_reply(true, 413, "too big", None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["code"], "request too large");
        assert_eq!(v["message"], "too big");
        assert!(r.headers.iter().any(|(n, _)| *n == "X-Influxdb-Error"));
    }
}
