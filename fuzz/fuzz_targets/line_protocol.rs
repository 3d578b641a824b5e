//! The line-protocol parser on arbitrary bytes (the whole input is the body).
//!
//! Properties, for every precision:
//! - nothing panics, and the returned count equals the points handed out;
//! - every point's line is within the body's line count, points come in increasing line
//!   order, and an error's line is after every point's and within the line count too;
//! - points have a measurement and at least one field, and no empty tag key or value;
//! - a reused `Parser` gives the same points as a fresh one;
//! - a point re-serialised with `write_line` (unescaped parts, explicit timestamp) parses back
//!   to the same point, unless it is one `write_line`'s doc comment lists as inexpressible.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use metricstream::ingest::line_protocol::{
    FieldValue, OwnedFieldValue, ParseError, Parser, Point, Precision, parse, unescape_key,
    unescape_measurement, unescape_string, write_line,
};

const PRECISIONS: [Precision; 6] = [
    Precision::Ns,
    Precision::Us,
    Precision::Ms,
    Precision::S,
    Precision::M,
    Precision::H,
];

const DEFAULT_TS: i64 = 1_234_567_890;

/// A field value with floats compared bit for bit (so `-0.0` must stay `-0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Float(u64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(Vec<u8>),
}

/// A parsed point with every name unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    measurement: Vec<u8>,
    tags: Vec<(Vec<u8>, Vec<u8>)>,
    fields: Vec<(Vec<u8>, Value)>,
    timestamp: i64,
    line: usize,
}

fn value(v: FieldValue<'_>) -> Value {
    match v {
        FieldValue::Float(f) => Value::Float(f.to_bits()),
        FieldValue::Int(i) => Value::Int(i),
        FieldValue::UInt(u) => Value::UInt(u),
        FieldValue::Bool(b) => Value::Bool(b),
        FieldValue::Str(s) => Value::Str(unescape_string(s).into_owned()),
    }
}

fn decode(p: &Point<'_, '_>) -> Decoded {
    Decoded {
        measurement: unescape_measurement(p.measurement).into_owned(),
        tags: p
            .tags
            .iter()
            .map(|(k, v)| (unescape_key(k).into_owned(), unescape_key(v).into_owned()))
            .collect(),
        fields: p
            .fields
            .iter()
            .map(|(k, v)| (unescape_key(k).into_owned(), value(*v)))
            .collect(),
        timestamp: p.timestamp_ns,
        line: p.line,
    }
}

fn parse_all(
    parser: Option<&mut Parser>,
    body: &[u8],
    precision: Precision,
) -> (Result<usize, ParseError>, Vec<Decoded>) {
    let mut points = Vec::new();
    let on_point = |p: &Point<'_, '_>| {
        assert!(!p.measurement.is_empty(), "empty measurement");
        assert!(!p.fields.is_empty(), "point without fields");
        assert!(
            p.tags.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()),
            "empty tag key or value"
        );
        points.push(decode(p));
    };
    let result = match parser {
        Some(parser) => parser.parse(body, precision, DEFAULT_TS, on_point),
        None => parse(body, precision, DEFAULT_TS, on_point),
    };
    (result, points)
}

/// What `write_line`'s doc comment says it cannot express.
fn expressible(p: &Decoded) -> bool {
    let name_ok = |n: &[u8]| !n.is_empty() && !n.contains(&b'\n') && n.last() != Some(&b'\\');
    let tags_ok = p.tags.iter().all(|(k, v)| name_ok(k) && name_ok(v));
    let fields_ok = p.fields.iter().all(|(k, v)| {
        name_ok(k) && !matches!(v, Value::Float(bits) if !f64::from_bits(*bits).is_finite())
    });
    let first_key_ok = p
        .fields
        .first()
        .is_some_and(|(k, _)| !matches!(k.first(), Some(b'\t' | b'\0')));
    name_ok(&p.measurement)
        && !matches!(p.measurement.first(), Some(b'#' | b'\t' | b'\0'))
        && tags_ok
        && !p.fields.is_empty()
        && fields_ok
        && first_key_ok
}

fn round_trip(p: &Decoded) {
    if !expressible(p) {
        return;
    }
    let tags: Vec<(&[u8], &[u8])> = p
        .tags
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let fields: Vec<(&[u8], OwnedFieldValue)> = p
        .fields
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Float(bits) => OwnedFieldValue::Float(f64::from_bits(*bits)),
                Value::Int(i) => OwnedFieldValue::Int(*i),
                Value::UInt(u) => OwnedFieldValue::UInt(*u),
                Value::Bool(b) => OwnedFieldValue::Bool(*b),
                Value::Str(s) => OwnedFieldValue::Str(s.clone()),
            };
            (k.as_slice(), v)
        })
        .collect();
    let mut line = Vec::new();
    write_line(&mut line, &p.measurement, &tags, &fields, Some(p.timestamp));
    let (result, again) = parse_all(None, &line, Precision::Ns);
    assert!(
        result.is_ok() && again.len() == 1,
        "re-serialised point does not parse back as one point: {:?} -> {result:?} {again:?}",
        String::from_utf8_lossy(&line)
    );
    let back = Decoded {
        line: p.line,
        ..again[0].clone()
    };
    assert_eq!(
        &back,
        p,
        "round trip through {:?} changed the point",
        String::from_utf8_lossy(&line)
    );
}

thread_local! {
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new());
}

fuzz_target!(|body: &[u8]| {
    let lines = 1 + body.iter().filter(|&&b| b == b'\n').count();
    for precision in PRECISIONS {
        let (result, points) = parse_all(None, body, precision);
        if let Ok(n) = &result {
            assert_eq!(*n, points.len(), "count differs from the points handed out");
        }
        let mut last = 0;
        for p in &points {
            assert!(
                p.line > last && p.line <= lines,
                "line {} after {last} (body has {lines} lines)",
                p.line
            );
            last = p.line;
        }
        if let Err(e) = &result {
            assert!(
                e.line > last && e.line <= lines,
                "error line {} after point line {last} (body has {lines} lines)",
                e.line
            );
        }
        let (reused_result, reused) =
            PARSER.with(|parser| parse_all(Some(&mut parser.borrow_mut()), body, precision));
        assert_eq!(reused_result, result, "a reused Parser answers differently");
        assert_eq!(reused, points, "a reused Parser gives other points");
        for p in &points {
            round_trip(p);
        }
    }
});
