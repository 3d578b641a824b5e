//! Reads of the real server: `GET /metrics` content negotiation (`Accept-Encoding: gzip`
//! with q-values, `Vary`) and the gzip body round-tripping to the plain exposition
//! (`tests/promtool.rs` lints a decompressed scrape).

mod common;

use std::time::Duration;

use common::*;

/// Points with awkward names, so the round trip covers escapes and sanitising.
const BODY: &[u8] = b"cpu,host=a,region=eu-1 usage=0.5,idle=99i\n\
cpu.load-avg,data.center=eu-1,host\\ name=web\\ 01 short_term=0.25\n\
temp,sensor=\"q\\\"uote\" celsius=21.5,ok=true,label=\"text\"\n";

/// Series lines and user family headers only: the server's own `metricstream_*` families
/// change between two requests (they count them).
fn user_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            !l.starts_with("metricstream_")
                && !l.starts_with("# HELP metricstream_")
                && !l.starts_with("# TYPE metricstream_")
        })
        .collect()
}

fn metrics_with(s: &Server, accept: Option<&str>, method: &str) -> Response {
    let header = accept.map_or(String::new(), |a| format!("Accept-Encoding: {a}\r\n"));
    request(
        s.addr,
        &format!("{method} /metrics HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n"),
    )
}

fn loaded_server() -> Server {
    let s = Server::start(&["--memory-only"]);
    let r = post(s.addr, "/write", BODY, "");
    assert_eq!(r.status, 204, "{}", r.text());
    let want = BODY.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(
        wait_until(Duration::from_secs(10), || {
            s.stats()["points_aggregated"].as_u64() == Some(want)
        }),
        "points not aggregated: {}",
        s.stats()
    );
    s
}

#[test]
fn metrics_gzip_round_trips_to_the_plain_exposition() {
    let s = loaded_server();
    let plain = metrics_with(&s, None, "GET");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("Content-Encoding"), None);
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));
    let plain_text = plain.text();
    assert!(plain_text.contains("cpu_usage{host=\"a\",region=\"eu-1\"} 0.5\n"));

    // What Prometheus sends, and what curl --compressed sends.
    for accept in [
        "gzip",
        "deflate, gzip, br, zstd",
        "gzip;q=1.0, identity;q=0.5, *;q=0.1",
    ] {
        let gz = metrics_with(&s, Some(accept), "GET");
        assert_eq!(gz.status, 200);
        assert_eq!(gz.header("Content-Encoding"), Some("gzip"), "{accept}");
        assert_eq!(gz.header("Vary"), Some("Accept-Encoding"));
        assert_eq!(
            gz.header("Content-Type"),
            plain.header("Content-Type"),
            "the type is the exposition's, the encoding says gzip"
        );
        assert_eq!(&gz.body[..2], &[0x1f, 0x8b], "a gzip member");
        let text = gunzip(&gz.body);
        assert_eq!(user_lines(&text), user_lines(&plain_text), "{accept}");
        assert!(text.contains("# TYPE metricstream_responses_total counter\n"));
    }
}

#[test]
fn metrics_honours_q_values_and_identity() {
    let s = loaded_server();
    for accept in [
        "gzip;q=0",
        "identity",
        "br",
        "*;q=0, identity",
        "gzip;q=0.5, identity",
        "",
    ] {
        let r = metrics_with(&s, Some(accept), "GET");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Encoding"), None, "{accept:?}");
        assert!(r.text().contains("# TYPE cpu_usage gauge\n"), "{accept:?}");
    }
    // HEAD: the headers of the gzip answer (streamed: chunked, no length), no body.
    let h = metrics_with(&s, Some("gzip"), "HEAD");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Encoding"), Some("gzip"));
    assert_eq!(h.header("Vary"), Some("Accept-Encoding"));
    assert!(
        h.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert_eq!(h.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(h.header("Content-Length"), None);
    assert!(h.body.is_empty());
}
