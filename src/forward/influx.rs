//! Line protocol out: logged batches -> gzip line-protocol bodies a forwarder POSTs to an
//! InfluxDB-compatible `--influx-write-url` (`/write`, `/api/v2/write`).
//!
//! Each point is written with the timestamp it got on arrival (nanoseconds, never
//! re-stamped), so the URL must not ask for another `precision`. Series keys and field
//! names are stored escaped as received, so they are copied as they are; string values
//! are stored unescaped and escaped again here. Unsigned values go out as integers (`i`)
//! when they fit in i64, else as floats: InfluxDB 1.x refuses `u`. Pure: bytes in, bytes
//! out, no I/O.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{Encoded, Request, Sharded};
use crate::ingest::batch::{Batch, PointRec, Value};

/// Appends one point as a line (with its `\n`).
pub fn write_point(out: &mut Vec<u8>, batch: &Batch, point: &PointRec) {
    out.extend_from_slice(batch.bytes(point.key));
    for (n, field) in batch.fields_of(point).iter().enumerate() {
        out.push(if n == 0 { b' ' } else { b',' });
        out.extend_from_slice(batch.bytes(field.name));
        out.push(b'=');
        // Writing into a Vec cannot fail, so the io::Results below carry nothing.
        let _ = match field.value {
            // `{:?}` is the shortest text that reads back to the same f64 and always has a
            // '.' or an exponent, so it never reads back as an integer.
            Value::Float(f) => write!(out, "{f:?}"),
            Value::Int(i) => write!(out, "{i}i"),
            Value::UInt(u) => match i64::try_from(u) {
                Ok(i) => write!(out, "{i}i"),
                Err(_) => write!(out, "{:?}", u as f64),
            },
            Value::Bool(b) => {
                out.extend_from_slice(if b { b"true" } else { b"false" });
                Ok(())
            }
            Value::Str(s) => {
                out.push(b'"');
                for &c in batch.bytes(s) {
                    if c == b'"' || c == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
                Ok(())
            }
        };
    }
    let _ = writeln!(out, " {}", point.timestamp_ns);
}

/// Builds the requests: points in log order, at most `max_values` field values per
/// request (split between points). Every value has a line-protocol form, so nothing is
/// counted as unsupported.
pub fn encode(batches: &[&Batch], max_values: usize) -> Encoded {
    let mut sharded = encode_sharded(batches, max_values, 1);
    Encoded {
        requests: sharded.requests.pop().unwrap_or_default(),
        unsupported: 0,
    }
}

/// [`encode`] with the points spread over `shards` by series key (a series always goes to
/// the same shard, so its points stay in log order within it).
pub fn encode_sharded(batches: &[&Batch], max_values: usize, shards: usize) -> Sharded {
    let max_values = max_values.max(1);
    let shards = shards.max(1);
    let mut out = Sharded {
        requests: (0..shards).map(|_| Vec::new()).collect(),
        unsupported: 0,
    };
    let mut open: Vec<(Vec<u8>, usize, usize)> = (0..shards).map(|_| (Vec::new(), 0, 0)).collect();
    for batch in batches {
        for point in &batch.points {
            let n = point.fields_len as usize;
            if n == 0 {
                // A point needs a field to be a line; the parser never makes one without.
                continue;
            }
            let shard = if shards > 1 {
                (super::remote_write::fnv(batch.bytes(point.key)) % shards as u64) as usize
            } else {
                0
            };
            let (text, points, values) = &mut open[shard];
            if *values > 0 && *values + n > max_values {
                out.requests[shard].push(finish(text, points, values));
            }
            write_point(text, batch, point);
            *points += 1;
            *values += n;
        }
    }
    for (shard, (text, points, values)) in open.iter_mut().enumerate() {
        if *values > 0 {
            out.requests[shard].push(finish(text, points, values));
        }
    }
    out
}

fn finish(text: &mut Vec<u8>, points: &mut usize, values: &mut usize) -> Request {
    let request = Request {
        body: gzip(text),
        points: *points,
        values: *values,
    };
    text.clear();
    *points = 0;
    *values = 0;
    request
}

/// Gzip at the fastest level: line protocol compresses about tenfold even so, and the
/// forwarder's CPU per point is what it competes on.
fn gzip(text: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::ingest::batch::FieldRec;
    use crate::ingest::line_protocol::Precision;
    use crate::ingest::write::{IngestScratch, WriteParams, batch_for_bench};

    fn batch_of(body: &[u8], db: Option<&str>) -> Batch {
        let params = WriteParams {
            db: db.map(str::to_string),
            precision: Precision::Ns,
        };
        batch_for_bench(&mut IngestScratch::default(), body, &params).expect("valid")
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    }

    /// (key, timestamp, fields) with values comparable across batches.
    type Points = Vec<(Vec<u8>, i64, Vec<(Vec<u8>, String)>)>;

    fn points(b: &Batch) -> Points {
        let value = |f: &FieldRec| match f.value {
            Value::Str(s) => format!("str {:?}", String::from_utf8_lossy(b.bytes(s))),
            // Sent as `i` when it fits.
            Value::UInt(u) if i64::try_from(u).is_ok() => format!("{:?}", Value::Int(u as i64)),
            v => format!("{v:?}"),
        };
        b.points
            .iter()
            .map(|p| {
                let fields = b
                    .fields_of(p)
                    .iter()
                    .map(|f| (b.bytes(f.name).to_vec(), value(f)))
                    .collect();
                (b.bytes(p.key).to_vec(), p.timestamp_ns, fields)
            })
            .collect()
    }

    #[test]
    fn round_trips_through_our_parser() {
        let body: &[u8] = b"cpu,host=a,region=eu usage=1.5,idle=2i,up=true 1000000000\n\
            my\\ meas\\,x,k\\=1=v\\ 2,z=a\\b f\\,g=3u,s=\"a \\\"q\\\" b\\\\c\nline\" -5\n\
            tiny v=1e-7,big=1.5e300,neg=-0.0,f=false 7\n\
            m,b=2,a=1 v=1 9\n";
        let batch = batch_of(body, Some("my db"));
        let enc = encode(&[&batch], 10_000);
        assert_eq!(enc.requests.len(), 1);
        assert_eq!(enc.unsupported, 0);
        assert_eq!(enc.requests[0].points, 4);
        assert_eq!(enc.requests[0].values, 10);
        let text = gunzip(&enc.requests[0].body);
        // Timestamps as received, in ns; no `db` given now, the tag is in the key already.
        let again = batch_of(&text, None);
        assert_eq!(points(&again), points(&batch));
    }

    #[test]
    fn unsigned_as_integer_when_it_fits() {
        let batch = batch_of(b"m a=9223372036854775807u,b=9223372036854775808u 1\n", None);
        let text = gunzip(&encode(&[&batch], 10).requests[0].body);
        assert_eq!(
            text,
            b"m a=9223372036854775807i,b=9.223372036854776e18 1\n".to_vec()
        );
        let again = batch_of(&text, None);
        let values: Vec<Value> = again.fields.iter().map(|f| f.value).collect();
        assert_eq!(
            values,
            [
                Value::Int(i64::MAX),
                Value::Float(9_223_372_036_854_775_808.0)
            ]
        );
    }

    #[test]
    fn splits_between_points() {
        let mut body = String::new();
        for i in 0..7 {
            body.push_str(&format!("m a={i}i,b=\"s\" {i}\n"));
        }
        let enc = encode(&[&batch_of(body.as_bytes(), None)], 4);
        let sizes: Vec<(usize, usize)> =
            enc.requests.iter().map(|r| (r.points, r.values)).collect();
        assert_eq!(sizes, [(2, 4), (2, 4), (2, 4), (1, 2)]);
        let all: Vec<u8> = enc.requests.iter().flat_map(|r| gunzip(&r.body)).collect();
        assert_eq!(all, body.as_bytes());
    }
}
