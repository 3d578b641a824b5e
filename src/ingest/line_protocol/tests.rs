//! Unit tests and property tests of the line protocol parser. Cases settled against InfluxDB
//! 1.x (`models/points.go`, 1.8 branch) name the behaviour they pin.

use super::scan::{CLASS, STOP_KEY, STOP_MEASUREMENT, find_stop, scan_digits};
use super::*;
use proptest::prelude::*;
use std::borrow::Cow;

const DEFAULT_TS: i64 = 1_234_567_890;

/// A field value copied out of a point; strings stay escaped.
#[derive(Clone, Debug, PartialEq)]
enum V {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

/// A point copied out of the parser (names stay escaped, as the parser hands them out).
#[derive(Clone, Debug, PartialEq)]
struct P {
    m: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, V)>,
    ts: i64,
    line: usize,
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn own(p: &Point<'_, '_>) -> P {
    P {
        m: s(p.measurement),
        tags: p.tags.iter().map(|(k, v)| (s(k), s(v))).collect(),
        fields: p
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match *v {
                    FieldValue::Float(f) => V::F(f),
                    FieldValue::Int(i) => V::I(i),
                    FieldValue::UInt(u) => V::U(u),
                    FieldValue::Bool(b) => V::B(b),
                    FieldValue::Str(x) => V::S(s(x)),
                };
                (s(k), v)
            })
            .collect(),
        ts: p.timestamp_ns,
        line: p.line,
    }
}

fn parse_with(body: &[u8], precision: Precision) -> Result<Vec<P>, ParseError> {
    let mut out = Vec::new();
    let n = parse(body, precision, DEFAULT_TS, |p| out.push(own(p)))?;
    assert_eq!(n, out.len(), "returned count must match the callbacks");
    Ok(out)
}

fn ok(body: &str) -> Vec<P> {
    match parse_with(body.as_bytes(), Precision::Ns) {
        Ok(points) => points,
        Err(e) => panic!("expected {body:?} to parse, got {e}"),
    }
}

fn one(body: &str) -> P {
    let mut points = ok(body);
    assert_eq!(points.len(), 1, "expected one point from {body:?}");
    points.remove(0)
}

fn err(body: &str) -> ParseError {
    match parse_with(body.as_bytes(), Precision::Ns) {
        Ok(points) => panic!("expected {body:?} to fail, got {points:?}"),
        Err(e) => e,
    }
}

/// Asserts that `body` fails on `line` with a message containing `needle`.
fn fails(body: &str, line: usize, needle: &str) {
    let e = err(body);
    assert_eq!(e.line, line, "wrong line for {body:?}: {e}");
    assert!(
        e.message.contains(needle),
        "message for {body:?} should contain {needle:?}, got {:?}",
        e.message
    );
    assert!(
        e.message.starts_with("unable to parse '"),
        "message should quote the line: {:?}",
        e.message
    );
}

fn tags(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fields(list: &[(&str, V)]) -> Vec<(String, V)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn field(body: &str, key: &str) -> V {
    let p = one(body);
    match p.fields.iter().find(|(k, _)| k == key) {
        Some((_, v)) => v.clone(),
        None => panic!("no field {key} in {p:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Real-world input (Telegraf output and friends)

#[test]
fn telegraf_cpu() {
    let p = one("cpu,cpu=cpu-total,host=web01 usage_idle=98.2,usage_user=1.1 1700000000000000000");
    assert_eq!(
        p,
        P {
            m: "cpu".into(),
            tags: tags(&[("cpu", "cpu-total"), ("host", "web01")]),
            fields: fields(&[("usage_idle", V::F(98.2)), ("usage_user", V::F(1.1))]),
            ts: 1_700_000_000_000_000_000,
            line: 1,
        }
    );
}

#[test]
fn telegraf_disk() {
    let p = one(
        "disk,device=sda1,fstype=ext4,host=h,mode=rw,path=/ free=1234i,used_percent=12.5,inodes_free=100u 1700000000000000000",
    );
    assert_eq!(p.tags.len(), 5);
    assert_eq!(p.tags[4], ("path".to_string(), "/".to_string()));
    assert_eq!(
        p.fields,
        fields(&[
            ("free", V::I(1234)),
            ("used_percent", V::F(12.5)),
            ("inodes_free", V::U(100))
        ])
    );
}

#[test]
fn telegraf_system_uptime_format_string_with_comma_and_spaces() {
    let p = one(
        r#"system,host=h uptime_format="3 days,  2:01",uptime=266460u,load1=0.05 1700000000000000000"#,
    );
    assert_eq!(
        p.fields,
        fields(&[
            ("uptime_format", V::S("3 days,  2:01".into())),
            ("uptime", V::U(266_460)),
            ("load1", V::F(0.05)),
        ])
    );
}

#[test]
fn telegraf_net_unsigned_counters() {
    let p = one(
        "net,host=h,interface=eth0 bytes_recv=123u,bytes_sent=18446744073709551615u,drop_in=0u 1700000000000000000",
    );
    assert_eq!(p.fields[0], ("bytes_recv".into(), V::U(123)));
    assert_eq!(p.fields[1], ("bytes_sent".into(), V::U(u64::MAX)));
}

#[test]
fn telegraf_mem_without_timestamp_gets_default() {
    let p = one("mem,host=h active=123i,available_percent=45.5,total=8000000000i");
    assert_eq!(p.ts, DEFAULT_TS);
    assert_eq!(p.fields[2], ("total".into(), V::I(8_000_000_000)));
}

#[test]
fn telegraf_docker_mixed_types() {
    let p = one(
        r#"docker_container_status,container_image=nginx,container_name=web,engine_host=h oomkilled=false,pid=1234i,exitcode=0i,container_id="4f3c2a",started_at=1700000000000000000i 1700000000000000000"#,
    );
    assert_eq!(p.fields[0], ("oomkilled".into(), V::B(false)));
    assert_eq!(p.fields[3], ("container_id".into(), V::S("4f3c2a".into())));
    assert_eq!(
        p.fields[4],
        ("started_at".into(), V::I(1_700_000_000_000_000_000))
    );
}

#[test]
fn telegraf_multi_line_body_with_comments_blank_lines_and_crlf() {
    let body = "# Telegraf output\r\n\
                cpu,host=a usage_user=1 1\r\n\
                \r\n\
                   \t \r\n\
                mem,host=a used=2i 2\r\n\
                  # indented comment\n\
                swap,host=a free=3u 3";
    let points = ok(body);
    assert_eq!(points.len(), 3);
    assert_eq!((points[0].line, points[1].line, points[2].line), (2, 5, 7));
    assert_eq!(points[1].fields, fields(&[("used", V::I(2))]));
    assert_eq!(points[2].ts, 3);
}

#[test]
fn http_response_url_tag_with_escaped_equals() {
    let p = one(
        r"http_response,method=GET,result=success,server=https://example.com/?a\=b response_time=0.123,http_response_code=200i 1700000000000000000",
    );
    assert_eq!(p.tags[2].1, r"https://example.com/?a\=b");
    assert_eq!(
        &*unescape_key(p.tags[2].1.as_bytes()),
        b"https://example.com/?a=b"
    );
}

#[test]
fn windows_path_backslashes_are_literal() {
    // InfluxDB: a backslash before anything but `,`, `=` or space is kept.
    let p = one(r"win_disk,instance=C:\Program\ Files\App,host=w Percent_Free_Space=40.5");
    let v = p.tags[0].1.as_bytes();
    assert_eq!(&*unescape_key(v), br"C:\Program Files\App");
}

#[test]
fn unicode_names_and_values() {
    let p = one("温度,城市=北京 值=23.5,备注=\"晴天 ☀\" 1");
    assert_eq!(p.m, "温度");
    assert_eq!(p.tags, tags(&[("城市", "北京")]));
    assert_eq!(p.fields[1], ("备注".into(), V::S("晴天 ☀".into())));
}

#[test]
fn escaped_measurement_tags_and_field_keys() {
    let p = one(r#"my\ meas\,urement,tag\ key=tag\,val\=ue field\ key="x",f\=k=1i"#);
    assert_eq!(&*unescape_measurement(p.m.as_bytes()), b"my meas,urement");
    assert_eq!(&*unescape_key(p.tags[0].0.as_bytes()), b"tag key");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), b"tag,val=ue");
    assert_eq!(&*unescape_key(p.fields[0].0.as_bytes()), b"field key");
    assert_eq!(&*unescape_key(p.fields[1].0.as_bytes()), b"f=k");
}

#[test]
fn influx_cli_style_line() {
    let p = one(
        "h2o_feet,location=coyote_creek water_level=8.12,level\\ description=\"between 6 and 9 feet\" 1566000000",
    );
    assert_eq!(p.fields.len(), 2);
    assert_eq!(p.ts, 1_566_000_000);
}

// ---------------------------------------------------------------------------------------------
// Whitespace, comments, line ends

#[test]
fn empty_and_whitespace_only_bodies() {
    assert!(ok("").is_empty());
    assert!(ok(" ").is_empty());
    assert!(ok("\n\n\r\n \t\n").is_empty());
    assert!(ok("# only a comment").is_empty());
}

#[test]
fn leading_whitespace_before_measurement_is_skipped() {
    // InfluxDB 1.x ParsePointsWithPrecision: skipWhitespace (space, tab, NUL) before the
    // measurement.
    for body in ["   cpu value=1 5", "\tcpu value=1 5", "\0 cpu value=1 5"] {
        let p = one(body);
        assert_eq!((p.m.as_str(), p.ts), ("cpu", 5), "{body:?}");
    }
}

#[test]
fn extra_whitespace_between_sections() {
    // InfluxDB TestParsePointWhitespace: runs of spaces between sections and trailing spaces.
    for body in [
        "cpu    value=1.0 1257894000000000000",
        "cpu value=1.0     1257894000000000000",
        "cpu value=1.0 1257894000000000000   ",
        "cpu value=1.0 1257894000000000000\n",
        "cpu \tvalue=1.0 \t1257894000000000000",
    ] {
        let p = one(body);
        assert_eq!(p.fields, fields(&[("value", V::F(1.0))]), "{body:?}");
        assert_eq!(p.ts, 1_257_894_000_000_000_000, "{body:?}");
    }
}

#[test]
fn trailing_spaces_without_timestamp() {
    assert_eq!(one("cpu value=1   ").ts, DEFAULT_TS);
}

#[test]
fn comment_with_quote_does_not_swallow_next_line() {
    // Deviation: InfluxDB's scanLine is quote-aware even in comments; a comment here always
    // ends at the newline.
    let points = ok("# note x=\"unclosed\ncpu value=1 1");
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].line, 2);
}

#[test]
fn hash_inside_measurement_is_not_a_comment() {
    assert_eq!(one("cpu#1 value=1").m, "cpu#1");
}

#[test]
fn crlf_line_ends_are_dropped() {
    let points = ok("a v=1i 1\r\nb v=\"x\"\r\nc v=t\r");
    assert_eq!(points.len(), 3);
    assert_eq!(points[1].fields[0].1, V::S("x".into()));
    assert_eq!(points[2].fields[0].1, V::B(true));
}

#[test]
fn cr_in_the_middle_of_a_name_is_a_byte() {
    let p = one("c\rpu,t=a\rb v=1");
    assert_eq!(p.m, "c\rpu");
    assert_eq!(p.tags[0].1, "a\rb");
}

#[test]
fn quoted_string_with_raw_newlines_spans_lines() {
    // InfluxDB TestParsePointWithStringWithNewline: raw newlines inside a string value.
    let body = "log msg=\"line one\nline two\r\nline three\",n=1i 10\ncpu value=2 20";
    let points = ok(body);
    assert_eq!(points.len(), 2);
    assert_eq!(
        points[0].fields[0].1,
        V::S("line one\nline two\r\nline three".into())
    );
    assert_eq!(points[0].line, 1);
    assert_eq!(points[1].line, 4);
}

#[test]
fn line_numbers_count_newlines_inside_earlier_strings() {
    let body = "a s=\"1\n2\n3\" 1\nb v=1 2\nc v= 3";
    let e = err(body);
    assert_eq!(e.line, 5);
    assert!(e.message.contains("missing field value"), "{e}");
}

#[test]
fn backslash_newline_still_ends_the_line() {
    // Deviation: InfluxDB's scanLine lets `\` + newline continue the line; here a newline
    // outside quotes always ends it, so the error stays on the line that has it.
    let e = err("cpu,host=a\\\nb value=1");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("missing fields"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Quotes and escapes

#[test]
fn quotes_in_measurement_and_tags_are_plain_bytes() {
    // InfluxDB TestParsePointQuotedMeasurement / TestParsePointQuotedTags.
    let p = one(r#""cpu",host="serverA" value=1.0 1000000000"#);
    assert_eq!(p.m, r#""cpu""#);
    assert_eq!(p.tags, tags(&[("host", r#""serverA""#)]));
}

#[test]
fn unbalanced_quote_in_tag_does_not_join_lines() {
    // InfluxDB TestParsePointsUnbalancedQuotedTags.
    let points = ok("baz,mytag=\"a x=1 1441103862125\nbaz,mytag=a z=1 1441103862126");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].tags, tags(&[("mytag", "\"a")]));
    assert_eq!(points[1].ts, 1_441_103_862_126);
}

#[test]
fn quotes_in_field_keys_are_plain_bytes() {
    // InfluxDB TestParsePointsQuotesInFieldKey.
    let p = one(r#"cpu "a=1,b"c=2i"#);
    assert_eq!(
        p.fields,
        fields(&[(r#""a"#, V::F(1.0)), (r#"b"c"#, V::I(2))])
    );
}

#[test]
fn string_escapes() {
    // InfluxDB TestParsePointWithStringWithBackslash / TestParsePointEscapedStringsAndCommas.
    let cases: [(&str, &[u8]); 5] = [
        (r#"cpu value="test\\\"" 1"#, br#"test\""#),
        (r#"cpu value="test\\" 1"#, br"test\"),
        (r#"cpu value="test\"" 1"#, br#"test""#),
        (
            r#"cpu value="{Hello\"{\,}\" World}" 1"#,
            br#"{Hello"{\,}" World}"#,
        ),
        (r#"cpu value="a\nb" 1"#, br"a\nb"),
    ];
    for (body, want) in cases {
        let V::S(raw) = field(body, "value") else {
            panic!("{body}: not a string")
        };
        assert_eq!(&*unescape_string(raw.as_bytes()), want, "{body}");
    }
}

#[test]
fn string_with_equals_and_commas() {
    // InfluxDB TestParsePointWithStringWithEquals.
    let p = one(r#"cpu,host=serverA str="foo=bar",value=1.0 1000000000"#);
    assert_eq!(
        p.fields,
        fields(&[("str", V::S("foo=bar".into())), ("value", V::F(1.0))])
    );
}

#[test]
fn empty_string_value() {
    assert_eq!(field(r#"cpu s="" 1"#, "s"), V::S(String::new()));
}

#[test]
fn double_backslash_before_delimiter_in_tags() {
    // InfluxDB TestParsePointUnescape: the scanner treats a byte as escaped when the byte
    // before it is a backslash, so `\\` + space/comma/equals is an escaped delimiter and the
    // first backslash is literal: `regions=\\ east` is `\ east`, `reg\\=ion` is `reg\=ion`.
    let p = one(r"cpu,reg\\=ion=east value=1.0");
    assert_eq!(&*unescape_key(p.tags[0].0.as_bytes()), br"reg\=ion");
    let p = one(r"cpu,regions=\\ east value=1.0");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), br"\ east");
    let p = one(r"cpu,regions=east\\  value=1.0");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), br"east\ ");
    let p = one(r"cpu,regions=\\,\,\=east value=1.0");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), br"\,,=east");
}

#[test]
fn unknown_escapes_are_kept() {
    // InfluxDB: `cpu \a=1i` has field key `\a`; `cpu\=load` keeps the backslash (`=` is not
    // escapable in a measurement); `eas\t` keeps it too.
    assert_eq!(one(r"cpu \a=1i").fields[0].0, r"\a");
    let p = one(r"cpu\=load,regions=eas\t value=1.0");
    assert_eq!(&*unescape_measurement(p.m.as_bytes()), br"cpu\=load");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), br"eas\t");
}

#[test]
fn equals_in_measurement_is_plain() {
    // InfluxDB: `cpu=load,equals\=foo=tag\=value value=1i`.
    let p = one(r"cpu=load,equals\=foo=tag\=value value=1i");
    assert_eq!(p.m, "cpu=load");
    assert_eq!(&*unescape_key(p.tags[0].0.as_bytes()), b"equals=foo");
    assert_eq!(&*unescape_key(p.tags[0].1.as_bytes()), b"tag=value");
}

#[test]
fn escaped_space_as_tag_key() {
    // InfluxDB: `cpu,\ =east` is a tag key of a single space.
    let p = one(r"cpu,\ =east value=1.0");
    assert_eq!(&*unescape_key(p.tags[0].0.as_bytes()), b" ");
}

#[test]
fn trailing_backslash_in_key_escapes_the_delimiter() {
    // InfluxDB: a key cannot end in a backslash; `a\=1` has no unescaped '='.
    fails(r"cpu a\=1", 1, "has no '=value'");
    fails(r"cpu,t\=1 v=1", 1, "has no '=value'");
}

#[test]
fn unescape_functions() {
    assert!(matches!(unescape_key(b"plain"), Cow::Borrowed(_)));
    assert_eq!(
        &*unescape_key(br#"a\ b\,c\=d\\e\"f\"#),
        br#"a b,c=d\\e\"f\"#
    );
    assert_eq!(&*unescape_measurement(br"a\ b\,c\=d"), br"a b,c\=d");
    assert_eq!(&*unescape_string(br#"a\"b\\c\d\"#), br#"a"b\c\d\"#);
}

// ---------------------------------------------------------------------------------------------
// Values

#[test]
fn booleans() {
    // InfluxDB TestParsePointWithBoolField: exactly these ten spellings.
    let p = one("cpu a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 1");
    let got: Vec<V> = p.fields.into_iter().map(|(_, v)| v).collect();
    let want: Vec<V> = [
        true, true, true, true, true, false, false, false, false, false,
    ]
    .into_iter()
    .map(V::B)
    .collect();
    assert_eq!(got, want);
    for bad in ["tru", "tRUE", "yes", "falsey", "F0", "t1"] {
        let body = format!("cpu v={bad}");
        fails(&body, 1, "invalid");
    }
}

#[test]
fn integers() {
    assert_eq!(field("cpu v=1i", "v"), V::I(1));
    assert_eq!(field("cpu v=-1i", "v"), V::I(-1));
    assert_eq!(field("cpu v=-0i", "v"), V::I(0));
    assert_eq!(field("cpu v=007i", "v"), V::I(7));
    // InfluxDB TestParsePointMaxInt64 / MinInt64.
    assert_eq!(field("cpu v=9223372036854775807i", "v"), V::I(i64::MAX));
    assert_eq!(field("cpu v=-9223372036854775808i", "v"), V::I(i64::MIN));
    assert_eq!(field("cpu v=00000000000000000000042i", "v"), V::I(42));
    fails("cpu v=9223372036854775808i", 1, "out of range");
    fails("cpu v=-9223372036854775809i", 1, "out of range");
    fails("cpu v=99999999999999999999999i", 1, "out of range");
}

#[test]
fn unsigned_integers() {
    // InfluxDB TestParsePointMaxUint64 / MinUint64.
    assert_eq!(field("cpu v=0u", "v"), V::U(0));
    assert_eq!(field("cpu v=18446744073709551615u", "v"), V::U(u64::MAX));
    fails("cpu v=18446744073709551616u", 1, "out of range");
    fails("cpu v=-1u", 1, "cannot be negative");
    fails("cpu v=-0u", 1, "cannot be negative");
}

#[test]
fn floats() {
    let cases: [(&str, f64); 16] = [
        ("1", 1.0),
        ("-1.5", -1.5),
        ("1.", 1.0),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1e10", 1e10),
        ("1.5E-3", 1.5e-3),
        ("1e+2", 100.0),
        ("0.1", 0.1),
        ("98.2", 98.2),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("0.000000000000000000000000001", 1e-27),
        ("1.7976931348623157e308", f64::MAX),
        ("4.9e-324", 5e-324),
        ("1e-400", 0.0),
        ("9007199254740993", 9007199254740992.0),
    ];
    for (text, want) in cases {
        let body = format!("cpu v={text}");
        assert_eq!(field(&body, "v"), V::F(want), "{text}");
    }
    match field("cpu v=-0.0", "v") {
        V::F(f) => assert!(f == 0.0 && f.is_sign_negative()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn floats_match_std_parse() {
    // The fast path must be bit-identical to a correctly rounded parse.
    for text in [
        "3.141592653589793",
        "2.718281828459045e-5",
        "1234567890123456789",
        "0.30000000000000004",
        "8.98846567431158e307",
        "123.456e20",
        "9.999999999999999e22",
        "1e23",
        "4503599627370497.5",
        "0.1e-22",
    ] {
        let body = format!("m v={text}");
        let want: f64 = text.parse().unwrap();
        match field(&body, "v") {
            V::F(f) => assert_eq!(f.to_bits(), want.to_bits(), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn invalid_numbers() {
    // InfluxDB TestParsePointBadNumber, TestParsePointNumberNonNumeric, TestParsePointNaN,
    // TestParsePointScientificIntInvalid, TestParsePointFloatMultipleDecimals.
    for bad in [
        "-", "-i", "-.", ".", "1.0i", "1ii", "1a", "-e-e-e", "42+3", "1.2.3", "1e", "1e+", "1e5i",
        "9e10i", "1i0", "0x10", "1_000", "-NaN", "-Inf", "1.5u", "--1", "1e5.5", "1ee5",
    ] {
        let body = format!("cpu v={bad}");
        fails(&body, 1, "invalid number");
    }
    for bad in ["+1", "NaN", "nan", "inf", "Inf", "abc", "'1'"] {
        let body = format!("cpu v={bad}");
        fails(&body, 1, "invalid value");
    }
}

#[test]
fn float_overflow_is_an_error() {
    // InfluxDB scanNumber: ParseFloat's range error -> "invalid float".
    fails("cpu v=1e309", 1, "out of range");
    fails("cpu v=-1.8e308", 1, "out of range");
    let huge = format!("cpu v=1{}", "0".repeat(400));
    fails(&huge, 1, "out of range");
}

#[test]
fn repeated_field_key_keeps_last_value() {
    // InfluxDB turns the fields into a map, so the last value wins.
    let p = one("cpu a=1,b=2i,a=3,c=t,b=4i");
    assert_eq!(
        p.fields,
        fields(&[("a", V::F(3.0)), ("b", V::I(4)), ("c", V::B(true))])
    );
}

#[test]
fn repeated_field_keys_in_a_wide_line() {
    let mut line = String::from("wide ");
    for i in 0..40 {
        line.push_str(&format!("f{}={}i,", i % 25, i));
    }
    line.pop();
    let p = one(&line);
    assert_eq!(p.fields.len(), 25);
    for (n, (k, v)) in p.fields.iter().enumerate() {
        assert_eq!(k, &format!("f{n}"));
        let last = if n < 15 { n + 25 } else { n };
        assert_eq!(v, &V::I(last as i64));
    }
}

// ---------------------------------------------------------------------------------------------
// Structure errors

#[test]
fn missing_fields() {
    // InfluxDB TestParsePointNoFields.
    fails(
        "cpu_load_short,host=server01,region=us-west",
        1,
        "missing fields",
    );
    fails("cpu", 1, "missing fields");
    fails("cpu ", 1, "missing fields");
    fails("cpu,host=a \t ", 1, "missing fields");
}

#[test]
fn missing_measurement() {
    fails(",host=a value=1", 1, "missing measurement");
}

#[test]
fn missing_tag_key() {
    // InfluxDB TestParsePointMissingTagKey.
    for body in [
        "cpu, value=1",
        "cpu,",
        "cpu,,,",
        "cpu,host=serverA,=us-east value=1i",
        r"cpu,host=serverAa\,,=us-east value=1i",
        "cpu, =serverA value=1i",
    ] {
        fails(body, 1, "missing tag key");
    }
    // ... while an escaped space is a valid key.
    assert_eq!(one(r"cpu,host=serverA,\ =us-east value=1i").tags.len(), 2);
}

#[test]
fn missing_tag_value() {
    // InfluxDB TestParsePointMissingTagValue: `t=` is "missing tag value", and so is a tag
    // key without '='.
    for body in [
        "cpu,host",
        "cpu,host,",
        "cpu,host=",
        "cpu,host value=1i",
        "cpu,host=serverA,region value=1i",
        "cpu,host=serverA,region= value=1i",
        "cpu,host=serverA,region=,zone=us-west value=1i",
    ] {
        fails(body, 1, "missing tag value");
    }
}

#[test]
fn invalid_tag_format() {
    // InfluxDB TestParsePointInvalidTagFormat: unescaped '=' inside a tag value.
    fails("cpu,host=f=o,", 1, "invalid tag format");
    fails(r"cpu,host=f\==o, value=1", 1, "invalid tag format");
    // Deviation: InfluxDB lets a tag value *start* with '=' (`host==x`); that is the same
    // mistake, so it is rejected here too.
    fails("cpu,host==x value=1", 1, "invalid tag format");
}

#[test]
fn duplicate_tags() {
    // InfluxDB TestParsePointWithDuplicateTags.
    fails(
        "cpu,host=serverA,host=serverB value=1i 1000000000",
        1,
        "duplicate tags",
    );
    fails("cpu,b=2,b=1,c=3 value=1i", 1, "duplicate tags");
    // Escaping is part of the key: `a\ b` and `a b`-as-two-tokens never collide, but the same
    // escaped bytes do.
    fails(r"cpu,a\ b=1,a\ b=2 v=1", 1, "'a\\ b' appears twice");
    let mut wide = String::from("cpu");
    for i in 0..40 {
        wide.push_str(&format!(",t{i}=v"));
    }
    assert_eq!(one(&format!("{wide} v=1")).tags.len(), 40);
    fails(&format!("{wide},t17=x v=1"), 1, "'t17' appears twice");
}

#[test]
fn tags_keep_line_order() {
    let p = one("cpu,zone=1,alpha=2,mid=3 v=1");
    assert_eq!(p.tags, tags(&[("zone", "1"), ("alpha", "2"), ("mid", "3")]));
}

#[test]
fn missing_field_key() {
    // InfluxDB TestParsePointMissingFieldName.
    fails("cpu,host=serverA,region=us-west =", 1, "missing field key");
    fails(
        "cpu,host=serverA,region=us-west =123i",
        1,
        "missing field key",
    );
    fails(
        "cpu,host=serverA,region=us-west value=123i,=456i",
        1,
        "missing field key",
    );
    fails("cpu value=1,", 1, "missing field key");
    fails("cpu value=1, other=2", 1, "missing field key");
    assert_eq!(one(r"cpu,host=serverA a\ =123i").fields[0].0, r"a\ ");
}

#[test]
fn missing_field_value() {
    // InfluxDB TestParsePointMissingFieldValue.
    fails(
        "cpu,host=serverA,region=us-west value=",
        1,
        "missing field value",
    );
    fails(
        "cpu,host=serverA,region=us-west value= 1000000000i",
        1,
        "missing field value",
    );
    fails(
        "cpu,host=serverA,region=us-west value=,value2=1i",
        1,
        "missing field value",
    );
    fails("cpu value=\r\n", 1, "missing field value");
}

#[test]
fn field_without_equals() {
    fails(
        "cpu,host=server01,region=us-west 1434055562000000000i",
        1,
        "has no '=value'",
    );
    fails(
        "cpu,host=server01,region=us-west value=1i,b",
        1,
        "field 'b' has no '=value'",
    );
    fails("cpu value", 1, "has no '=value'");
}

#[test]
fn unbalanced_quotes() {
    // InfluxDB TestParsePointMissingQuote.
    fails(r#"cpu,host=serverA value="test"#, 1, "unbalanced quotes");
    fails(r#"cpu value="test\" 1"#, 1, "unbalanced quotes");
    fails("a v=1\nb s=\"never closed\nc v=2\n", 2, "unbalanced quotes");
}

#[test]
fn text_after_closing_quote() {
    // InfluxDB: `value="test""` is unbalanced; `f="blah"=123` is invalid.
    fails(r#"cpu,host=serverA value="test"""#, 1, "after the closing");
    fails(
        r#"m f="blah"=123,r 1531703600000000000"#,
        1,
        "after the closing",
    );
    fails(r#"m f="a"b 1"#, 1, "after the closing");
}

// ---------------------------------------------------------------------------------------------
// Timestamps and precision

#[test]
fn negative_and_zero_timestamps() {
    // InfluxDB TestParsePointNegativeTimestamp.
    assert_eq!(one("cpu value=1 -1").ts, -1);
    assert_eq!(one("cpu value=1 0").ts, 0);
    assert_eq!(one("cpu value=1 -0").ts, 0);
}

#[test]
fn timestamp_range_follows_influxdb() {
    // InfluxDB models/time.go: MinNanoTime = MinInt64 + 2, MaxNanoTime = MaxInt64 - 1.
    assert_eq!(one("cpu value=1 9223372036854775806").ts, i64::MAX - 1);
    assert_eq!(one("cpu value=1 -9223372036854775806").ts, i64::MIN + 2);
    fails("cpu value=1 9223372036854775807", 1, "is out of range");
    fails("cpu value=1 -9223372036854775807", 1, "is out of range");
    fails("cpu value=1 -9223372036854775808", 1, "is out of range");
    fails("cpu value=1 9223372036854775808", 1, "is out of range");
    fails(
        "cpu value=1 123456789012345678901234567890",
        1,
        "is out of range",
    );
}

#[test]
fn bad_timestamps() {
    // InfluxDB TestParsePointInvalidTimestamp / TestParsePoint_TrailingSlash.
    for body in [
        "cpu value=1 1.5",
        "cpu value=1 1e9",
        "cpu value=1 +5",
        "cpu value=1 -",
        "cpu value=1 12a",
        r"a v=1 0\",
        "cpu value=1 123\t",
        "cpu value=1 0x10",
    ] {
        fails(body, 1, "bad timestamp");
    }
}

#[test]
fn text_after_timestamp() {
    // InfluxDB parsePoint: only spaces may follow the timestamp ("point is invalid").
    fails("cpu value=1 1 2", 1, "after the timestamp");
    fails("cpu value=1 1 x", 1, "after the timestamp");
}

#[test]
fn precision_scaling() {
    let cases = [
        (Precision::Ns, 1),
        (Precision::Us, 1_000),
        (Precision::Ms, 1_000_000),
        (Precision::S, 1_000_000_000),
        (Precision::M, 60_000_000_000),
        (Precision::H, 3_600_000_000_000),
    ];
    for (precision, mult) in cases {
        let points = parse_with(b"cpu v=1 7\ncpu v=1", precision).unwrap();
        assert_eq!(points[0].ts, 7 * mult, "{precision:?}");
        // The default is used as given, whatever the precision.
        assert_eq!(points[1].ts, DEFAULT_TS, "{precision:?}");
    }
}

#[test]
fn precision_overflow_is_an_error() {
    let e = parse_with(b"cpu v=1 9223372036854775", Precision::S).unwrap_err();
    assert!(e.message.contains("is out of range"), "{e}");
    assert_eq!(
        parse_with(b"cpu v=1 9223372036", Precision::S).unwrap()[0].ts,
        9_223_372_036_000_000_000
    );
    assert!(parse_with(b"cpu v=1 2562048", Precision::H).is_err());
    assert!(parse_with(b"cpu v=1 -2562047", Precision::H).is_ok());
}

#[test]
fn precision_words() {
    for (w, p) in [
        ("ns", Precision::Ns),
        ("n", Precision::Ns),
        ("", Precision::Ns),
        ("us", Precision::Us),
        ("u", Precision::Us),
        ("ms", Precision::Ms),
        ("s", Precision::S),
        ("m", Precision::M),
        ("h", Precision::H),
    ] {
        assert_eq!(Precision::from_v1(w), Some(p), "{w}");
    }
    for w in ["NS", "µs", "sec", "d", "mn", " ns"] {
        assert_eq!(Precision::from_v1(w), None, "{w}");
    }
    for (w, p) in [
        ("ns", Precision::Ns),
        ("", Precision::Ns),
        ("us", Precision::Us),
        ("ms", Precision::Ms),
        ("s", Precision::S),
    ] {
        assert_eq!(Precision::from_v2(w), Some(p), "{w}");
    }
    for w in ["n", "u", "m", "h", "MS"] {
        assert_eq!(Precision::from_v2(w), None, "{w}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limits, errors, API behaviour

#[test]
fn max_key_length() {
    // InfluxDB parsePoint: "max key length exceeded" over 65535 bytes of key, or of key plus
    // 4 plus the field key.
    let long = "x".repeat(65_530);
    fails(&format!("cpu,t={long} v=1"), 1, "max key length exceeded");
    let ok_key = "x".repeat(65_500);
    assert_eq!(one(&format!("{ok_key} v=1")).fields.len(), 1);
    fails(
        &format!("{ok_key} {}=1", "f".repeat(40)),
        1,
        "max key length exceeded",
    );
}

#[test]
fn error_stops_at_first_bad_line_and_reports_it() {
    let mut seen = 0;
    let e = parse(
        b"cpu v=1\ncpu v=2\ncpu,host=a value=\ncpu v=4",
        Precision::Ns,
        0,
        |_| seen += 1,
    )
    .unwrap_err();
    assert_eq!(seen, 2);
    assert_eq!(e.line, 3);
    assert_eq!(
        e.message,
        "unable to parse 'cpu,host=a value=': missing field value for field 'value'"
    );
    assert_eq!(
        e.to_string(),
        "line 3: unable to parse 'cpu,host=a value=': missing field value for field 'value'"
    );
}

#[test]
fn error_quote_is_truncated_and_one_line() {
    let long = format!("cpu,host={} value=", "é".repeat(60));
    let e = err(&long);
    let quoted = e
        .message
        .strip_prefix("unable to parse '")
        .and_then(|m| m.split("': ").next())
        .unwrap();
    assert!(quoted.ends_with("..."), "{quoted}");
    assert!(quoted.len() <= 64 + 3, "{quoted}");
    assert!(
        !quoted.contains('\u{FFFD}'),
        "cut inside a character: {quoted}"
    );

    let e = err("bad s=\"a\nb\" x");
    assert!(e.message.contains(r#"'bad s="a\nb" x'"#), "{e}");
    assert!(!e.message.contains('\n'), "{e}");
}

#[test]
fn error_quote_is_lossy_utf8() {
    let e = parse(b"cpu\xff v=", Precision::Ns, 0, |_| {}).unwrap_err();
    assert!(e.message.contains("cpu\u{FFFD} v="), "{e}");
}

#[test]
fn parser_reuse_keeps_scratch_allocation() {
    let mut parser = Parser::new();
    let body = b"cpu,a=1,b=2,c=3 x=1,y=2,z=3,w=4 1\n".repeat(3);
    assert_eq!(parser.parse(&body, Precision::Ns, 0, |_| {}), Ok(3));
    let (tags_cap, fields_cap) = parser.scratch_capacity();
    assert!(tags_cap >= 3 && fields_cap >= 4);
    for _ in 0..3 {
        let other = body.clone();
        assert_eq!(parser.parse(&other, Precision::Ns, 0, |_| {}), Ok(3));
        assert_eq!(parser.scratch_capacity(), (tags_cap, fields_cap));
    }
    // An error leaves the parser usable.
    assert!(parser.parse(b"bad", Precision::Ns, 0, |_| {}).is_err());
    assert_eq!(parser.parse(&body, Precision::Ns, 0, |_| {}), Ok(3));
    assert_eq!(parser.scratch_capacity(), (tags_cap, fields_cap));
}

#[test]
fn owned_field_value_from_unescapes_strings() {
    assert_eq!(
        OwnedFieldValue::from(FieldValue::Str(br#"a\"b"#)),
        OwnedFieldValue::Str(b"a\"b".to_vec())
    );
    assert_eq!(
        OwnedFieldValue::from(FieldValue::UInt(3)),
        OwnedFieldValue::UInt(3)
    );
}

#[test]
fn write_line_escapes() {
    let mut out = Vec::new();
    write_line(
        &mut out,
        b"my meas,=x",
        &[(b"k ,=", b"v ,=\\")],
        &[
            (b"f", OwnedFieldValue::Str(b"q\"b\\n\nl".to_vec())),
            (b"g h", OwnedFieldValue::Float(1.0)),
            (b"i", OwnedFieldValue::Int(-3)),
            (b"u", OwnedFieldValue::UInt(3)),
            (b"b", OwnedFieldValue::Bool(false)),
            (b"e", OwnedFieldValue::Float(1e-7)),
        ],
        Some(-5),
    );
    assert_eq!(
        s(&out),
        "my\\ meas\\,=x,k\\ \\,\\==v\\ \\,\\=\\ f=\"q\\\"b\\\\n\nl\",g\\ h=1.0,i=-3i,u=3u,b=false,e=1e-7 -5"
    );
}

#[test]
fn invalid_tag_format_quotes_the_whole_value() {
    let e = err("cpu,a=b=c v=1");
    assert!(e.message.contains("tag value 'b=c'"), "{e}");
}

#[test]
fn wide_line_without_repeats_keeps_every_field_in_order() {
    let keys: Vec<String> = (0..30).map(|i| format!("k{:02}", 29 - i)).collect();
    let line = format!(
        "wide {}",
        keys.iter()
            .map(|k| format!("{k}=1u"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let p = one(&line);
    let got: Vec<&str> = p.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, keys.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn nul_and_tab_are_whitespace_before_fields_and_timestamp() {
    // InfluxDB skipWhitespace treats space, tab and NUL alike after the separating space.
    let p = one("cpu \t\0v=1 \t\x005");
    assert_eq!((p.fields[0].0.as_str(), p.ts), ("v", 5));
}

#[test]
fn tab_is_part_of_a_name() {
    // Only an unescaped space separates sections; InfluxDB reads `cpu\tvalue=1` as a
    // measurement with no fields.
    fails("cpu\tvalue=1", 1, "missing fields");
    assert_eq!(one("c\tpu,t\tk=v\tv f\tk=1").tags[0].0, "t\tk");
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// Bytes that matter to the grammar, to steer random input into deep paths.
fn grammar_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"ab01-.eiuTtf\"\\ ,=#\n\r\t\x00\xff9".to_vec();
    prop::collection::vec(prop::sample::select(alphabet), 0..200)
}

/// A name line protocol can carry: no `\n`, not ending in a backslash, no leading tab/NUL
/// (skipped as whitespace) and, for measurements, no leading `#` (a comment).
fn name(measurement: bool) -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<&'static str> = vec![
        "a", "b", "z", "0", "9", "_", "-", ".", " ", ",", "=", "\"", "\\", "#", "\t", "\r", "é",
        "☀", "i", "u", "t",
    ];
    // Repair rather than filter, so no case is rejected.
    prop::collection::vec(prop::sample::select(alphabet), 1..12).prop_map(move |parts| {
        let mut v: Vec<u8> = parts.concat().into_bytes();
        if v.last() == Some(&b'\\') {
            v.push(b'x');
        }
        if matches!(v.first(), Some(b'\t' | b'\r')) || (measurement && v.first() == Some(&b'#')) {
            v.insert(0, b'm');
        }
        v
    })
}

fn field_value() -> impl Strategy<Value = OwnedFieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(OwnedFieldValue::Float),
        (-1000.0f64..1000.0).prop_map(OwnedFieldValue::Float),
        any::<i64>().prop_map(OwnedFieldValue::Int),
        any::<u64>().prop_map(OwnedFieldValue::UInt),
        any::<bool>().prop_map(OwnedFieldValue::Bool),
        prop::collection::vec(prop::sample::select(b"ab \"\\,=\n\r\t#x".to_vec()), 0..16)
            .prop_map(OwnedFieldValue::Str),
    ]
}

#[derive(Clone, Debug)]
struct GenPoint {
    measurement: Vec<u8>,
    tags: Vec<(Vec<u8>, Vec<u8>)>,
    fields: Vec<(Vec<u8>, OwnedFieldValue)>,
    timestamp: Option<i64>,
}

impl GenPoint {
    fn line(&self) -> Vec<u8> {
        let tags: Vec<(&[u8], &[u8])> = self
            .tags
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let fields: Vec<(&[u8], OwnedFieldValue)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_slice(), v.clone()))
            .collect();
        let mut out = Vec::new();
        write_line(&mut out, &self.measurement, &tags, &fields, self.timestamp);
        out
    }
}

fn point() -> impl Strategy<Value = GenPoint> {
    (
        name(true),
        prop::collection::btree_map(name(false), name(false), 0..5),
        prop::collection::btree_map(name(false), field_value(), 1..6),
        prop::option::of(MIN_NANO_TIME..=MAX_NANO_TIME),
    )
        .prop_map(|(measurement, tags, fields, timestamp)| GenPoint {
            measurement,
            tags: tags.into_iter().collect(),
            fields: fields.into_iter().collect(),
            timestamp,
        })
}

/// A parsed point with names unescaped, comparable with a `GenPoint`.
#[derive(Clone, Debug, PartialEq)]
struct Decoded {
    measurement: Vec<u8>,
    tags: Vec<(Vec<u8>, Vec<u8>)>,
    fields: Vec<(Vec<u8>, OwnedFieldValue)>,
    timestamp: i64,
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
            .map(|(k, v)| (unescape_key(k).into_owned(), OwnedFieldValue::from(*v)))
            .collect(),
        timestamp: p.timestamp_ns,
    }
}

fn expected(g: &GenPoint) -> Decoded {
    Decoded {
        measurement: g.measurement.clone(),
        tags: g.tags.clone(),
        fields: g.fields.clone(),
        timestamp: g.timestamp.unwrap_or(DEFAULT_TS),
    }
}

/// What `write_line`'s doc comment says it can express.
fn expressible(p: &Decoded) -> bool {
    let name_ok = |n: &[u8]| !n.is_empty() && !n.contains(&b'\n') && n.last() != Some(&b'\\');
    name_ok(&p.measurement)
        && !matches!(p.measurement.first(), Some(b'#' | b'\t' | b'\0'))
        && p.tags.iter().all(|(k, v)| name_ok(k) && name_ok(v))
        && p.fields
            .first()
            .is_some_and(|(k, _)| !matches!(k.first(), Some(b'\t' | b'\0')))
        && p.fields
            .iter()
            .all(|(k, v)| name_ok(k) && !matches!(v, OwnedFieldValue::Float(f) if !f.is_finite()))
}

fn parse_decoded(body: &[u8]) -> Result<Vec<(usize, Decoded)>, ParseError> {
    let mut out = Vec::new();
    parse(body, Precision::Ns, DEFAULT_TS, |p| {
        out.push((p.line, decode(p)))
    })?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut count = 0;
        if let Ok(n) = parse(&body, Precision::H, 0, |_| count += 1) {
            prop_assert_eq!(n, count);
        }
    }

    #[test]
    fn grammar_shaped_bytes_never_panic(body in grammar_bytes()) {
        for precision in [Precision::Ns, Precision::H] {
            let mut count = 0;
            match parse(&body, precision, 0, |p| {
                count += 1;
                // Every point that comes out satisfies the contract.
                assert!(!p.measurement.is_empty() && !p.fields.is_empty());
                assert!(p.tags.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()));
            }) {
                Ok(n) => prop_assert_eq!(n, count),
                Err(e) => prop_assert!(e.line >= 1 && e.message.starts_with("unable to parse '")),
            }
        }
    }

    /// What the fuzz target `line_protocol` checks, on grammar-shaped bytes: line numbers
    /// increase and stay within the body, an error comes after every point, a reused parser
    /// agrees with a fresh one, and every point `write_line` can express reads back as itself.
    #[test]
    fn parsed_points_reserialise_and_keep_their_lines(body in grammar_bytes()) {
        let lines = 1 + body.iter().filter(|&&c| c == b'\n').count();
        let mut reused = Parser::new();
        for precision in [Precision::Ns, Precision::H] {
            let mut points = Vec::new();
            let result = parse(&body, precision, DEFAULT_TS, |p| points.push((p.line, decode(p))));
            let mut again = Vec::new();
            let reused_result = reused.parse(&body, precision, DEFAULT_TS, |p| again.push((p.line, decode(p))));
            prop_assert_eq!(&reused_result, &result);
            prop_assert_eq!(&again, &points);
            let mut last = 0;
            for (line, _) in &points {
                prop_assert!(*line > last && *line <= lines, "line {} after {} of {}", line, last, lines);
                last = *line;
            }
            if let Err(e) = &result {
                prop_assert!(e.line > last && e.line <= lines, "error line {} after {} of {}", e.line, last, lines);
            }
            for (_, p) in points.iter().filter(|(_, p)| expressible(p)) {
                let g = GenPoint {
                    measurement: p.measurement.clone(),
                    tags: p.tags.clone(),
                    fields: p.fields.clone(),
                    timestamp: Some(p.timestamp),
                };
                let line = g.line();
                let back = parse_decoded(&line);
                prop_assert_eq!(
                    back.as_ref().map(|v| v.iter().map(|(_, d)| d).collect::<Vec<_>>()),
                    Ok(vec![p]),
                    "through {:?}", String::from_utf8_lossy(&line)
                );
            }
        }
    }

    #[test]
    fn valid_point_round_trips(g in point()) {
        let line = g.line();
        let parsed = parse_decoded(&line);
        prop_assert!(parsed.is_ok(), "{:?} -> {:?}", String::from_utf8_lossy(&line), parsed);
        let parsed = parsed.unwrap_or_default();
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(&parsed[0].1, &expected(&g), "line {:?}", String::from_utf8_lossy(&line));
    }

    #[test]
    fn splitting_is_irrelevant(points in prop::collection::vec(point(), 1..8), crlf in any::<bool>()) {
        let sep: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let lines: Vec<Vec<u8>> = points.iter().map(GenPoint::line).collect();
        let body = lines.join(sep);
        let whole = parse_decoded(&body);
        prop_assert!(whole.is_ok(), "{:?}", whole);
        let whole = whole.unwrap_or_default();
        prop_assert_eq!(whole.len(), lines.len());
        let mut line_no = 1;
        for (n, line) in lines.iter().enumerate() {
            let alone = parse_decoded(line).unwrap_or_default();
            prop_assert_eq!(alone.len(), 1);
            prop_assert_eq!(whole[n].0, line_no);
            prop_assert_eq!(&whole[n].1, &alone[0].1);
            prop_assert_eq!(&whole[n].1, &expected(&points[n]));
            // Raw newlines inside strings move the following points down.
            line_no += 1 + line.iter().filter(|&&c| c == b'\n').count();
        }
    }

    #[test]
    fn repeated_field_keys_keep_last(values in prop::collection::vec((0u8..30, any::<i64>()), 1..60)) {
        let mut line = b"m ".to_vec();
        for (n, (k, v)) in values.iter().enumerate() {
            if n > 0 {
                line.push(b',');
            }
            line.extend_from_slice(format!("k{k}={v}i").as_bytes());
        }
        let parsed = parse_decoded(&line).unwrap_or_default();
        prop_assert_eq!(parsed.len(), 1);
        let mut want: Vec<(Vec<u8>, OwnedFieldValue)> = Vec::new();
        for (k, v) in &values {
            let key = format!("k{k}").into_bytes();
            match want.iter_mut().find(|(wk, _)| *wk == key) {
                Some(slot) => slot.1 = OwnedFieldValue::Int(*v),
                None => want.push((key, OwnedFieldValue::Int(*v))),
            }
        }
        prop_assert_eq!(&parsed[0].1.fields, &want);
    }

    #[test]
    fn find_stop_matches_a_plain_scan(body in grammar_bytes(), from in 0usize..40, key in any::<bool>()) {
        let mask = if key { STOP_KEY } else { STOP_MEASUREMENT };
        let from = from.min(body.len());
        let naive = body[from..]
            .iter()
            .position(|&c| CLASS[usize::from(c)] & mask != 0)
            .map_or(body.len(), |p| from + p);
        prop_assert_eq!(find_stop(&body, from, mask), naive);
    }

    #[test]
    fn scan_digits_matches_a_plain_scan(prefix in "[0-9]{0,30}", rest in prop::collection::vec(any::<u8>(), 0..10), acc in 0u64..1000) {
        let mut body = prefix.clone().into_bytes();
        body.extend_from_slice(&rest);
        let mut end = 0;
        let mut want = acc;
        while end < body.len() && body[end].is_ascii_digit() {
            want = want.wrapping_mul(10).wrapping_add(u64::from(body[end] - b'0'));
            end += 1;
        }
        prop_assert_eq!(scan_digits(&body, 0, acc), (end, want));
    }

    #[test]
    fn floats_agree_with_std(f in any::<f64>().prop_filter("finite", |f| f.is_finite()), exp in -30i32..30) {
        for text in [format!("{f:?}"), format!("{f:e}"), format!("{:.3}e{exp}", f % 1e6)] {
            let body = format!("m v={text}");
            let want: f64 = text.parse().unwrap_or(f64::NAN);
            let mut got = None;
            let r = parse(body.as_bytes(), Precision::Ns, 0, |p| got = Some(p.fields[0].1));
            if want.is_finite() {
                prop_assert!(r.is_ok(), "{}: {:?}", text, r);
                prop_assert_eq!(got.map(|v| match v { FieldValue::Float(x) => x.to_bits(), _ => 0 }), Some(want.to_bits()), "{}", text);
            }
        }
    }
}
