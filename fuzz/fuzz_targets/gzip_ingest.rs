//! Arbitrary bytes as a gzip write body through `pipeline::ingest::inflate`, the step a
//! `Content-Encoding: gzip` write goes through before parsing.
//!
//! Properties: nothing panics; a success never holds more than the limit; a failure is a 400
//! (not gzip) or a 413 (too large) and never buffered more than one byte past the limit; a
//! bigger limit agrees (same bytes when the small one succeeded, more than the small limit
//! when it refused them as too large). What inflated is then parsed as line protocol.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricstream::ingest::line_protocol::{Precision, parse};
use metricstream::ingest::write::{WriteError, inflate};

/// Small, so bombs and near-limit bodies are cheap to reach.
const LIMIT: usize = 2048;

fuzz_target!(|body: &[u8]| {
    let mut out = Vec::new();
    let small = inflate(body, &mut out, LIMIT);
    assert!(out.len() <= LIMIT + 1, "inflated {} bytes", out.len());
    match &small {
        Ok(()) => assert!(out.len() <= LIMIT),
        Err(e) => assert!(matches!(e.status(), 400 | 413), "{e:?}"),
    }
    let mut wide = Vec::new();
    let big = inflate(body, &mut wide, LIMIT * 4);
    match (&small, &big) {
        (Ok(()), Ok(())) => assert_eq!(out, wide, "a bigger limit inflates other bytes"),
        (Ok(()), Err(e)) => panic!("fits {LIMIT} bytes but fails with {}: {e:?}", LIMIT * 4),
        (Err(WriteError::TooLarge(_)), Ok(())) => assert!(wide.len() > LIMIT),
        (Err(WriteError::Invalid { .. }), Ok(())) => {
            panic!("invalid under {LIMIT} bytes but valid under {}", LIMIT * 4)
        }
        _ => {}
    }
    if small.is_ok() {
        let _ = parse(&out, Precision::Ns, 0, |_| {});
    }
});
