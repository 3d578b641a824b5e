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

use super::{Encoded, Request, Sharded};
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
    let mut sharded = Encoder::default().encode(batches, max_values, 1);
    Encoded {
        requests: sharded.requests.pop().unwrap_or_default(),
        unsupported: sharded.unsupported,
    }
}

/// Series the encoder remembers the labels of; past it the memory starts over (a fleet
/// that churns through series must not grow a forwarder without bound).
const CACHED_SERIES_MAX: usize = 1 << 20;

/// A series the encoder has met: its labels already in protobuf form.
struct Cached {
    /// The `labels` fields of its `TimeSeries` (tag, length, `Label`), in name order.
    labels: Box<[u8]>,
}

/// A remote_write encoder that keeps, across calls, every series' labels ready to copy
/// (naming a series costs a key split, sanitising and sorting: done once per series, not
/// once per request), and writes the protobuf by hand into reused buffers. A point costs
/// one hash lookup (its key); its fields are found in the key's short list.
#[derive(Default)]
pub struct Encoder {
    /// Series key -> its fields met so far, each with its index into `cached`.
    keys: HashMap<Box<[u8]>, KeyFields>,
    cached: Vec<Cached>,
    /// Series met in `cached`, for the cap.
    series: usize,
    /// Per shard, the request being filled.
    open: Vec<Open>,
    proto: Vec<u8>,
    snappy: Option<snap::raw::Encoder>,
}

/// The fields of one series key met so far.
struct KeyFields {
    shard: u32,
    fields: Vec<(Box<[u8]>, u32)>,
}

/// Not in the request being filled.
const NO_SLOT: u32 = u32::MAX;

/// The request being filled for one shard.
#[derive(Default)]
struct Open {
    /// Series ids in order of first sample; `samples[i]` holds the encoded samples of
    /// `order[i]`.
    order: Vec<u32>,
    samples: Vec<Vec<u8>>,
    /// Per slot: samples, and points whose first sample is in it.
    counts: Vec<(u32, u32)>,
    /// Series id -> slot in `order` (or [`NO_SLOT`]), indexed by id.
    slot: Vec<u32>,
}

impl Encoder {
    /// Encodes `batches` into requests of at most `max_values` samples, spread over
    /// `shards` by series key (every field of a point goes to the same shard, so a series
    /// is always in one shard). Within a shard the samples are grouped by series, each
    /// series' in log order, series in order of first appearance, and cut into requests at
    /// `max_values`: a request carries few series with many samples each, which is what a
    /// receiver ingests cheapest (one series lookup for a run of samples). A series with
    /// more samples than fit continues in the shard's next request.
    pub fn encode(&mut self, batches: &[&Batch], max_values: usize, shards: usize) -> Sharded {
        let max_values = max_values.max(1);
        let shards = shards.max(1);
        if self.series > CACHED_SERIES_MAX {
            self.keys.clear();
            self.cached.clear();
            self.series = 0;
            for open in &mut self.open {
                open.slot.clear();
            }
        }
        self.open.resize_with(shards, Open::default);
        let mut out = Sharded {
            requests: (0..shards).map(|_| Vec::new()).collect(),
            unsupported: 0,
        };
        for batch in batches {
            for point in &batch.points {
                let fields = batch.fields_of(point);
                let key = batch.bytes(point.key);
                let timestamp = timestamp_ms(point.timestamp_ns);
                let mut first = true;
                let mut shard = usize::MAX;
                for field in fields {
                    let Some(value) = sample_value(field.value) else {
                        out.unsupported += 1;
                        continue;
                    };
                    if shard == usize::MAX {
                        shard = self.key_shard(key, shards) % shards;
                    }
                    let id = self.series_id(key, batch.bytes(field.name)) as usize;
                    let open = &mut self.open[shard];
                    if open.slot.len() <= id {
                        open.slot.resize(self.cached.len().max(id + 1), NO_SLOT);
                    }
                    let slot = match open.slot[id] {
                        NO_SLOT => {
                            let s = open.order.len();
                            open.slot[id] = s as u32;
                            open.order.push(id as u32);
                            if open.samples.len() <= s {
                                open.samples.push(Vec::new());
                                open.counts.push((0, 0));
                            }
                            s
                        }
                        s => s as usize,
                    };
                    put_sample(&mut open.samples[slot], value, timestamp);
                    let c = &mut open.counts[slot];
                    c.0 += 1;
                    // A point counts in the request that carries its first sample.
                    c.1 += u32::from(std::mem::take(&mut first));
                }
            }
        }
        for shard in 0..shards {
            self.emit(shard, max_values, &mut out.requests[shard]);
        }
        out
    }

    /// Cuts the shard's gathered series into requests of at most `max_values` samples.
    fn emit(&mut self, shard: usize, max_values: usize, requests: &mut Vec<Request>) {
        let mut pieces: Vec<(u32, usize, usize)> = Vec::new(); // (slot, start, end) in bytes
        let (mut values, mut points) = (0usize, 0usize);
        for slot in 0..self.open[shard].order.len() {
            let (n, firsts) = self.open[shard].counts[slot];
            let (mut n, mut firsts, mut at) = (n as usize, firsts as usize, 0usize);
            while n > 0 {
                let take = n.min(max_values - values);
                let bytes = &self.open[shard].samples[slot];
                let end = if take == n {
                    bytes.len()
                } else {
                    skip_samples(bytes, at, take)
                };
                pieces.push((slot as u32, at, end));
                values += take;
                points += std::mem::take(&mut firsts);
                n -= take;
                at = end;
                if values == max_values {
                    let r = self.request(shard, &pieces, values, points);
                    requests.push(r);
                    pieces.clear();
                    (values, points) = (0, 0);
                }
            }
        }
        if values > 0 {
            let r = self.request(shard, &pieces, values, points);
            requests.push(r);
        }
        let open = &mut self.open[shard];
        for (slot, &id) in open.order.iter().enumerate() {
            open.samples[slot].clear();
            open.counts[slot] = (0, 0);
            open.slot[id as usize] = NO_SLOT;
        }
        open.order.clear();
    }

    /// One `WriteRequest` of the given pieces of series, compressed.
    fn request(
        &mut self,
        shard: usize,
        pieces: &[(u32, usize, usize)],
        values: usize,
        points: usize,
    ) -> Request {
        let open = &self.open[shard];
        self.proto.clear();
        for &(slot, start, end) in pieces {
            let id = open.order[slot as usize];
            let labels = &self.cached[id as usize].labels;
            let samples = &open.samples[slot as usize][start..end];
            self.proto.push(0x0a);
            put_varint(&mut self.proto, (labels.len() + samples.len()) as u64);
            self.proto.extend_from_slice(labels);
            self.proto.extend_from_slice(samples);
        }
        let snappy = self.snappy.get_or_insert_with(snap::raw::Encoder::new);
        // Snappy refuses only inputs over ~4 GiB; a request of `max_values` samples with
        // keys bounded by the parser (64 KiB) is far below, so the empty fallback (which a
        // receiver answers 400) is unreachable in practice.
        let body = snappy.compress_vec(&self.proto).unwrap_or_default();
        Request {
            body,
            points,
            values,
        }
    }

    /// The shard of a series key (remembering the key).
    fn key_shard(&mut self, key: &[u8], shards: usize) -> usize {
        if let Some(k) = self.keys.get(key) {
            return k.shard as usize;
        }
        let shard = if shards > 1 { fnv(key) as u32 } else { 0 };
        self.keys.insert(
            Box::from(key),
            KeyFields {
                shard,
                fields: Vec::new(),
            },
        );
        shard as usize
    }

    /// The id of a series whose key [`Encoder::key_shard`] has seen, naming it the first
    /// time it is met.
    fn series_id(&mut self, key: &[u8], field: &[u8]) -> u32 {
        let Some(k) = self.keys.get_mut(key) else {
            return 0; // unreachable: key_shard inserted it
        };
        if let Some((_, id)) = k.fields.iter().find(|(f, _)| **f == *field) {
            return *id;
        }
        let labels = KeyLabels::new(key).series_labels(field);
        let mut pb = Vec::new();
        for l in &labels {
            let inner = 2
                + varint_len(l.name.len())
                + l.name.len()
                + varint_len(l.value.len())
                + l.value.len();
            pb.push(0x0a);
            put_varint(&mut pb, inner as u64);
            put_bytes(&mut pb, 0x0a, l.name.as_bytes());
            put_bytes(&mut pb, 0x12, l.value.as_bytes());
        }
        let id = self.cached.len() as u32;
        self.cached.push(Cached {
            labels: pb.into_boxed_slice(),
        });
        k.fields.push((Box::from(field), id));
        self.series += 1;
        id
    }
}

/// FNV-1a: which shard a series key goes to (stable for the life of the process).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The byte offset after `count` encoded samples starting at `at` (each is `0x12`, its
/// length, then the `Sample`).
fn skip_samples(bytes: &[u8], mut at: usize, count: usize) -> usize {
    for _ in 0..count {
        let len = bytes.get(at + 1).map_or(0, |&l| l as usize);
        at = (at + 2 + len).min(bytes.len());
    }
    at
}

/// Appends one `samples` field: `Sample { value = 1 (double), timestamp = 2 (int64) }`.
fn put_sample(out: &mut Vec<u8>, value: f64, timestamp: i64) {
    let ts = timestamp as u64; // int64 is a two's-complement varint on the wire
    let ts_len = varint_len(ts as usize);
    out.push(0x12);
    out.push((1 + 8 + 1 + ts_len) as u8);
    out.push(0x09);
    out.extend_from_slice(&value.to_le_bytes());
    out.push(0x10);
    put_varint(out, ts);
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
    fn requests_are_cut_at_the_value_limit_grouped_by_series() {
        let mut body = String::new();
        for i in 0..25 {
            body.push_str(&format!("m,h=h{} a={i},b={i}i,s=\"x\" {i}000000\n", i % 3));
        }
        let batch = batch_of(&body, None);
        let enc = encode(&[&batch], 10);
        // 50 samples of 6 series, at most 10 per request.
        assert_eq!(enc.requests.len(), 5);
        assert_eq!(enc.unsupported, 25);
        assert_eq!(enc.requests.iter().map(|r| r.points).sum::<usize>(), 25);
        let mut per_series: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        let mut total = 0;
        for r in &enc.requests {
            assert_eq!(r.values, 10);
            let req = decode(&r.body).expect("decodes");
            let n: usize = req.timeseries.iter().map(|s| s.samples.len()).sum();
            assert_eq!(n, r.values);
            total += n;
            // Grouped: a series appears once per request.
            let mut names: Vec<String> = req
                .timeseries
                .iter()
                .map(|s| labels_text(&s.labels))
                .collect();
            let before = names.len();
            names.dedup();
            assert_eq!(names.len(), before);
            for ts in &req.timeseries {
                per_series
                    .entry(labels_text(&ts.labels))
                    .or_default()
                    .extend(ts.samples.iter().map(|x| x.timestamp));
            }
        }
        assert_eq!(total, 50);
        assert_eq!(per_series.len(), 6);
        for (series, stamps) in &per_series {
            assert!(stamps.is_sorted(), "{series}: {stamps:?}");
        }
        // A point with more values than the limit is split between requests, in order.
        let wide = batch_of("w a=1,b=2,c=3 1\nw a=4 2\n", None);
        let enc = encode(&[&wide], 2);
        let sizes: Vec<usize> = enc.requests.iter().map(|r| r.values).collect();
        assert_eq!(sizes, [2, 2]);
        assert_eq!(enc.requests.iter().map(|r| r.points).sum::<usize>(), 2);
    }

    #[test]
    fn nothing_to_send_makes_no_request() {
        let enc = encode(&[&batch_of("s v=\"a\",w=\"b\" 1\n", None)], 10);
        assert!(enc.requests.is_empty());
        assert_eq!(enc.unsupported, 2);
        assert_eq!(encode(&[], 10), Encoded::default());
    }

    #[test]
    fn shards_split_by_series_and_the_cache_changes_nothing() {
        let body: String = (0..300)
            .map(|i| format!("m,host=h{} a={i},b={i}i {}\n", i % 37, 1_000_000 * (i + 1)))
            .collect();
        let batch = batch_of(&body, None);
        let one = encode(&[&batch], 10_000);
        let mut enc = Encoder::default();
        for round in 0..2 {
            // The second round runs on a warm cache: the same requests.
            let sharded = enc.encode(&[&batch], 10_000, 3);
            assert_eq!(sharded.requests.len(), 3);
            let mut by_series: std::collections::BTreeMap<String, (usize, Vec<(i64, f64)>)> =
                Default::default();
            let mut points = 0;
            for (shard, reqs) in sharded.requests.iter().enumerate() {
                for r in reqs {
                    points += r.points;
                    for ts in decode(&r.body).expect("decodes").timeseries {
                        let e = by_series
                            .entry(labels_text(&ts.labels))
                            .or_insert((shard, Vec::new()));
                        assert_eq!(e.0, shard, "a series in two shards (round {round})");
                        e.1.extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
                    }
                }
            }
            assert_eq!(points, 300);
            let mut want: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
            for ts in decode(&one.requests[0].body).expect("decodes").timeseries {
                want.entry(labels_text(&ts.labels))
                    .or_default()
                    .extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
            }
            let got: std::collections::BTreeMap<_, _> =
                by_series.into_iter().map(|(k, (_, v))| (k, v)).collect();
            assert_eq!(got, want, "round {round}");
        }
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
