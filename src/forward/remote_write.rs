//! Prometheus remote_write 1.0: logged batches -> `WriteRequest` protobuf in snappy block
//! format, the body a forwarder POSTs to a `--remote-write-url`.
//!
//! Series are named and labelled by the rules `/metrics` uses (`crate::names` on the series
//! key split by the aggregator's `parse_key`), so a series has one identity whether a
//! store scrapes us or we push to it: `__name__` plus the tag labels, sorted by name in
//! byte order. Each point's own timestamp goes out in milliseconds; booleans are 0/1,
//! integers and unsigned values floats; string fields cannot be carried and are only
//! counted. Pure: bytes in, bytes out, no I/O; it never panics on what a batch holds.

use std::borrow::Cow;

use hashbrown::HashMap;
use prost::Message;

use super::{Encoded, Request};
use crate::ingest::aggregator::{parse_key, unescape_key};
use crate::ingest::batch::{Batch, Value};
use crate::names::{metric_name, resolve_labels};

// The remote_write 1.0 messages (prometheus/prompb/types.proto and remote.proto), with the
// fields a sender fills; a receiver skips the ones left out (metadata, exemplars,
// histograms).

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples in timestamp (here: log) order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: a value at a time in milliseconds since the epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The label a metric name travels in.
pub const NAME_LABEL: &str = "__name__";

/// A field value as a sample value, or `None` for strings (not representable).
pub fn sample_value(value: Value) -> Option<f64> {
    match value {
        Value::Float(f) => Some(f),
        Value::Int(i) => Some(i as f64),
        Value::UInt(u) => Some(u as f64),
        Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
        Value::Str(_) => None,
    }
}

/// Nanoseconds to the millisecond they fall in (floor, so a pre-1970 timestamp is not
/// moved forward).
pub fn timestamp_ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// What a series key contributes to every series of its fields.
struct KeyLabels<'a> {
    measurement: Cow<'a, [u8]>,
    /// Tag labels as `/metrics` shows them, sorted by name.
    tags: Vec<Label>,
}

impl<'a> KeyLabels<'a> {
    fn new(key: &'a [u8]) -> Self {
        let (measurement, tags) = parse_key(key);
        let (labels, _collisions) = resolve_labels(&tags);
        let tags = labels
            .iter()
            .map(|(name, idx)| Label {
                name: name.to_string(),
                value: String::from_utf8_lossy(&tags[*idx].1).into_owned(),
            })
            .collect();
        KeyLabels { measurement, tags }
    }

    /// Every label of the field `escaped_field`'s series, `__name__` included, sorted by
    /// name in byte order (an upper-case tag label sorts before `__name__`).
    fn series_labels(&self, escaped_field: &[u8]) -> Vec<Label> {
        let name = metric_name(&self.measurement, &unescape_key(escaped_field));
        let at = self.tags.partition_point(|l| l.name.as_str() < NAME_LABEL);
        let mut labels = Vec::with_capacity(self.tags.len() + 1);
        labels.extend_from_slice(&self.tags[..at]);
        labels.push(Label {
            name: NAME_LABEL.to_string(),
            value: name,
        });
        labels.extend_from_slice(&self.tags[at..]);
        labels
    }
}

/// Builds the requests: points in log order, each series' samples in log order, at most
/// `max_values` samples per request (split between points).
pub fn encode(batches: &[&Batch], max_values: usize) -> Encoded {
    let max_values = max_values.max(1);
    let mut out = Encoded::default();
    let mut keys: HashMap<&[u8], KeyLabels<'_>> = HashMap::new();
    let mut current = Pending::default();
    let mut snappy = snap::raw::Encoder::new();
    for batch in batches {
        for point in &batch.points {
            let fields = batch.fields_of(point);
            let n = fields
                .iter()
                .filter(|f| sample_value(f.value).is_some())
                .count();
            out.unsupported += (fields.len() - n) as u64;
            if n == 0 {
                continue;
            }
            if current.values > 0 && current.values + n > max_values {
                out.requests.push(current.finish(&mut snappy));
            }
            let key = batch.bytes(point.key);
            let labels = keys.entry(key).or_insert_with(|| KeyLabels::new(key));
            let timestamp = timestamp_ms(point.timestamp_ns);
            for field in fields {
                let Some(value) = sample_value(field.value) else {
                    continue;
                };
                let name = batch.bytes(field.name);
                let series = &mut current.request.timeseries;
                let idx = *current.index.entry((key, name)).or_insert_with(|| {
                    series.push(TimeSeries {
                        labels: labels.series_labels(name),
                        samples: Vec::new(),
                    });
                    series.len() - 1
                });
                series[idx].samples.push(Sample { value, timestamp });
            }
            current.points += 1;
            current.values += n;
        }
    }
    if current.values > 0 {
        out.requests.push(current.finish(&mut snappy));
    }
    out
}

/// The request being filled: its series by (series key, escaped field name).
#[derive(Default)]
struct Pending<'a> {
    request: WriteRequest,
    index: HashMap<(&'a [u8], &'a [u8]), usize>,
    points: usize,
    values: usize,
}

impl Pending<'_> {
    /// Encodes and compresses the request and starts an empty one.
    fn finish(&mut self, snappy: &mut snap::raw::Encoder) -> Request {
        let proto = self.request.encode_to_vec();
        // Snappy refuses only inputs over ~4 GiB; a request of `max_values` samples with
        // keys bounded by the parser (64 KiB) is far below, so the empty fallback (which a
        // receiver answers 400) is unreachable in practice.
        let body = snappy.compress_vec(&proto).unwrap_or_default();
        let request = Request {
            body,
            points: self.points,
            values: self.values,
        };
        self.request.timeseries.clear();
        self.index.clear();
        self.points = 0;
        self.values = 0;
        request
    }
}

/// Decodes a body made by [`encode`]: for tests and for a stub receiver.
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let proto = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    WriteRequest::decode(proto.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::aggregator::SeriesStore;
    use crate::ingest::line_protocol::Precision;
    use crate::ingest::write::{IngestScratch, WriteParams, batch_for_bench};
    use crate::read::exposition::render_metrics;

    fn batch_of(body: &str, db: Option<&str>) -> Batch {
        let params = WriteParams {
            db: db.map(str::to_string),
            precision: Precision::Ns,
        };
        batch_for_bench(&mut IngestScratch::default(), body.as_bytes(), &params)
            .expect("valid line protocol")
    }

    fn labels_text(labels: &[Label]) -> String {
        // The exposition's rendering of a sample's name and labels (`__name__` outside).
        let name = labels
            .iter()
            .find(|l| l.name == NAME_LABEL)
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let rest: Vec<String> = labels
            .iter()
            .filter(|l| l.name != NAME_LABEL)
            .map(|l| {
                let v = l
                    .value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{}=\"{}\"", l.name, v)
            })
            .collect();
        if rest.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", rest.join(","))
        }
    }

    #[test]
    fn names_and_labels_match_the_exposition() {
        // Escapes, sanitising, reserved and numeric tag keys, an upper-case tag sorting
        // before `__name__`, colliding tag keys, an empty tag value, a `db` tag added.
        let body = "cpu,host=a,region=eu usage=1.5,idle=2i 1000000000\n\
                    my\\ meas.x,Zone=z,__x=r,1k=v,a.b=1,a-b=2 f\\,g=3u,ok=t 2000000000\n\
                    température,t=\"q\\\\x\" v=-1 3000000000\n\
                    metricstream_points,host=b value=7 4000000000\n\
                    s,t=u text=\"only a string\" 5000000000\n";
        let batch = batch_of(body, Some("mydb"));
        let enc = encode(&[&batch], 10_000);
        assert_eq!(enc.requests.len(), 1);
        assert_eq!(enc.unsupported, 1);
        let req = decode(&enc.requests[0].body).expect("decodes");
        assert_eq!(enc.requests[0].values, 6);
        assert_eq!(enc.requests[0].points, 4);

        let mut store = SeriesStore::new(1000);
        store.apply(&batch);
        let mut text = Vec::new();
        render_metrics(&store, &[], &mut text);
        let text = String::from_utf8(text).expect("utf-8");
        let mut exposed: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
            .collect();
        exposed.sort_unstable();
        let mut sent: Vec<String> = req
            .timeseries
            .iter()
            .map(|s| labels_text(&s.labels))
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, exposed);

        for s in &req.timeseries {
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            assert!(names.is_sorted(), "{names:?}");
            assert!(names.contains(&NAME_LABEL));
        }
        let zone = req
            .timeseries
            .iter()
            .find(|s| s.labels.iter().any(|l| l.name == "Zone"))
            .expect("series with Zone");
        let names: Vec<&str> = zone.labels.iter().map(|l| l.name.as_str()).collect();
        // Byte order: upper case and digits before `_`, so `__name__` is not first.
        assert_eq!(names, ["Zone", "_1k", NAME_LABEL, "a_b", "db", "tag__x"]);
        let a_b = zone
            .labels
            .iter()
            .find(|l| l.name == "a_b")
            .map(|l| &l.value);
        // `a-b` sorts before `a.b`: the colliding tag kept, as in /metrics.
        assert_eq!(a_b.map(String::as_str), Some("2"));
    }

    #[test]
    fn values_and_timestamps() {
        let body = "m b=true,f=0.25,i=-3i,u=18446744073709551615u 1500999999\n\
                    m b=false 1501000000\n\
                    n v=1 -1500000\n";
        let enc = encode(&[&batch_of(body, None)], 100);
        let req = decode(&enc.requests[0].body).expect("decodes");
        let get = |name: &str| {
            req.timeseries
                .iter()
                .find(|s| s.labels[0].value == name)
                .map(|s| {
                    s.samples
                        .iter()
                        .map(|x| (x.value, x.timestamp))
                        .collect::<Vec<_>>()
                })
                .expect(name)
        };
        assert_eq!(get("m_b"), [(1.0, 1500), (0.0, 1501)]);
        assert_eq!(get("m_f"), [(0.25, 1500)]);
        assert_eq!(get("m_i"), [(-3.0, 1500)]);
        assert_eq!(get("m_u"), [(u64::MAX as f64, 1500)]);
        assert_eq!(get("n_v"), [(1.0, -2)]);
    }

    #[test]
    fn samples_of_a_series_stay_in_log_order_across_batches() {
        let a = batch_of("m,h=x v=1 3000000\nm,h=y v=9 1000000\n", None);
        let b = batch_of("m,h=x v=2 1000000\nm,h=x v=3 2000000\n", None);
        let enc = encode(&[&a, &b], 100);
        assert_eq!(enc.requests.len(), 1);
        let req = decode(&enc.requests[0].body).expect("decodes");
        assert_eq!(req.timeseries.len(), 2);
        let x: Vec<(f64, i64)> = req.timeseries[0]
            .samples
            .iter()
            .map(|s| (s.value, s.timestamp))
            .collect();
        assert_eq!(x, [(1.0, 3), (2.0, 1), (3.0, 2)]);
    }

    #[test]
    fn requests_split_between_points_at_the_value_limit() {
        let mut body = String::new();
        for i in 0..25 {
            body.push_str(&format!("m,h=h{} a={i},b={i}i,s=\"x\" {i}000000\n", i % 3));
        }
        let batch = batch_of(&body, None);
        let enc = encode(&[&batch], 10);
        // 2 samples per point, at most 10 per request: 5 points per request.
        assert_eq!(enc.requests.len(), 5);
        assert_eq!(enc.unsupported, 25);
        let mut total = 0;
        let mut last_ts = -1;
        for r in &enc.requests {
            assert!(r.values <= 10);
            assert_eq!(r.points * 2, r.values);
            let req = decode(&r.body).expect("decodes");
            let n: usize = req.timeseries.iter().map(|s| s.samples.len()).sum();
            assert_eq!(n, r.values);
            total += n;
            let first = req.timeseries[0].samples[0].timestamp;
            assert!(first > last_ts);
            last_ts = req
                .timeseries
                .iter()
                .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
                .max()
                .unwrap_or(last_ts);
        }
        assert_eq!(total, 50);
        // A point with more values than the limit travels alone, whole.
        let wide = batch_of("w a=1,b=2,c=3 1\nw a=4 2\n", None);
        let enc = encode(&[&wide], 2);
        let sizes: Vec<usize> = enc.requests.iter().map(|r| r.values).collect();
        assert_eq!(sizes, [3, 1]);
    }

    #[test]
    fn nothing_to_send_makes_no_request() {
        let enc = encode(&[&batch_of("s v=\"a\",w=\"b\" 1\n", None)], 10);
        assert!(enc.requests.is_empty());
        assert_eq!(enc.unsupported, 2);
        assert_eq!(encode(&[], 10), Encoded::default());
    }

    #[test]
    fn decode_refuses_garbage() {
        assert!(decode(b"\xff\xff\xff\xff").is_err());
    }

    /// Every label set `/metrics` shows for a store, `name{labels}` as rendered.
    fn exposed_label_sets(batch: &Batch) -> std::collections::BTreeSet<String> {
        let mut store = SeriesStore::new(usize::MAX);
        store.apply(batch);
        let mut text = Vec::new();
        render_metrics(&store, &[], &mut text);
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect()
    }

    proptest::proptest! {
        /// Arbitrary series keys (separators, escapes, unicode, reserved prefixes, tag
        /// collisions; keys no parser would make): remote_write names and labels every
        /// series exactly as `/metrics` does, labels sorted in byte order.
        #[test]
        fn names_and_labels_match_the_exposition_for_any_key(
            points in proptest::collection::vec(
                crate::ingest::aggregator::test_support::raw_point(), 1..12)
        ) {
            use crate::ingest::aggregator::test_support::{V, push};
            let mut batch = Batch::default();
            for (m, tags, ts, fields) in &points {
                let mut key = m.clone();
                for (k, v) in tags {
                    key.push_str(&format!(",{k}={v}"));
                }
                // Numeric and finite only: /metrics leaves out series whose last value
                // is a string or not finite, remote_write sends every numeric sample.
                let fields: Vec<(&str, V<'_>)> = fields
                    .iter()
                    .map(|(n, v)| match *v {
                        V::S(_) => (n.as_str(), V::I(1)),
                        V::F(f) if !f.is_finite() => (n.as_str(), V::F(0.5)),
                        v => (n.as_str(), v),
                    })
                    .collect();
                push(&mut batch, &key, *ts, &fields);
            }
            let enc = encode(&[&batch], usize::MAX);
            let mut sent = std::collections::BTreeSet::new();
            for r in &enc.requests {
                for s in decode(&r.body).map_err(proptest::test_runner::TestCaseError::fail)?.timeseries {
                    let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
                    proptest::prop_assert!(names.is_sorted(), "{:?}", names);
                    sent.insert(labels_text(&s.labels));
                }
            }
            proptest::prop_assert_eq!(sent, exposed_label_sets(&batch));
        }
    }
}
