//! The exchange engine driven through the real routes, without sockets: pipelining, every
//! split of a request stream into reads, limits and framing errors, arbitrary bytes.
//! (`src/http/exchange.rs` tests the engine alone, against a stand-in service.)

use std::time::SystemTime;

use metricstream::app::{App, Local};
use metricstream::config::Config;
use metricstream::http::exchange::{Exchange, Progress, process, replay};
use metricstream::tuning::OUTPUT_HIGH_WATER;
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

#[test]
fn a_chunk_size_that_overflows_64_bits_is_400_not_413() {
    let app = shared();
    for size in [
        "10000000000000000",
        "ffffffffffffffffffff",
        "fffffffffffffffff;x=y",
    ] {
        let req = format!(
            "POST /write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{}\r\nm v=1\n\r\n0\r\n\r\n",
            size
        );
        let (out, closed) = drive(app, &[req.as_bytes()]);
        let text = normalise(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{} -> {}", size, text);
        assert!(text.contains("chunk size overflows 64 bits"), "{}", text);
        assert!(closed);
    }
}

#[test]
fn errors_take_their_shape_from_the_route_table() {
    let app = shared();
    let cases: &[(&[u8], &str, bool)] = &[
        // Refused heads: the shape comes from the path on the request line.
        (
            b"POST /api/v2/write HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "400",
            true,
        ),
        (
            b"POST /write HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "400",
            false,
        ),
        (b"GET /api/v2/nothing HTTP/1.1\r\n\r\n", "404", true),
        (b"GET /api/v2/write HTTP/1.1\r\n\r\n", "405", true),
        (b"GET /write HTTP/1.1\r\n\r\n", "405", false),
        // A refused chunked body: the shape of the admitted route.
        (
            b"POST /api/v2/write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "400",
            true,
        ),
    ];
    for (req, status, v2) in cases {
        let (out, _) = drive(app, &[req]);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {}", status)),
            "{:?} -> {}",
            String::from_utf8_lossy(req),
            text
        );
        let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
        assert_eq!(json.get("code").is_some(), *v2, "{}", text);
        assert_eq!(json.get("error").is_some(), !*v2, "{}", text);
    }
}

#[test]
fn allow_lists_the_methods_of_the_route() {
    let app = shared();
    for (req, allow) in [
        (&b"POST /ping HTTP/1.1\r\n\r\n"[..], "GET, HEAD"),
        (b"PUT /query HTTP/1.1\r\n\r\n", "GET, POST"),
        (b"GET /api/v2/write HTTP/1.1\r\n\r\n", "POST"),
    ] {
        let (out, _) = drive(app, &[req]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 405"), "{}", text);
        assert!(
            text.contains(&format!("\r\nAllow: {}\r\n", allow)),
            "{}",
            text
        );
    }
}
