//! `GET /series`: parsing of its query string into a [`SeriesFilter`] and the JSON listing
//! of the matching series with their aggregates; and the stricter grammar of
//! `DELETE /series` ([`delete_selector`]).
//!
//! Owns the query grammar (`measurement=`, `field=`, repeatable `tag=KEY:VALUE`, `limit=`,
//! percent-decoding with `+` as space, unknown parameters ignored), exact matching against
//! unescaped names, the deterministic order (measurement, then tags, then field) and the
//! JSON shape including `truncated`. A delete must never select more than was meant, so its
//! grammar refuses what a read forgives: no filter, an empty one, a repeated
//! `measurement=`/`field=`, `limit=` and any unknown parameter.

use std::borrow::Cow;
use std::io::Write;

use crate::ingest::aggregator::{
    FieldAgg, FieldRef, GroupView, LastValue, SeriesStore, Tag, unescape_key,
};
use crate::ingest::lifecycle::{Selector, group_matches};
use crate::ingest::{GroupSink, SteppedRead};
use crate::tuning::READ_SLICE_GROUPS;

/// Series listed when the query has no `limit`.
pub const DEFAULT_LIMIT: usize = 1000;

/// What `/series` should list. All present conditions must hold; names are compared
/// byte-for-byte with the unescaped measurement, field and tag names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesFilter {
    pub measurement: Option<String>,
    pub field: Option<String>,
    /// `(key, value)` pairs the series must all carry.
    pub tags: Vec<(String, String)>,
    /// At most this many series are listed; `0` lists none but still reports `truncated`.
    pub limit: usize,
}

impl Default for SeriesFilter {
    fn default() -> Self {
        SeriesFilter {
            measurement: None,
            field: None,
            tags: Vec::new(),
            limit: DEFAULT_LIMIT,
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(format!("malformed percent-encoding in {s:?}")),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("percent-decoded {s:?} is not valid UTF-8"))
}

impl SeriesFilter {
    /// Parses the query string of `/series` (with or without the leading `?`).
    ///
    /// `measurement=` and `field=` with an empty value mean "no condition"; when repeated
    /// the last one counts. `tag=KEY:VALUE` is split at the first `:` and may repeat.
    /// `limit=` must be a non-negative decimal integer (digits only). Unknown parameters
    /// (including their values) are ignored; a parameter name that does not percent-decode
    /// is an error.
    pub fn from_query(query: &str) -> Result<SeriesFilter, String> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut filter = SeriesFilter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match decode(name)?.as_str() {
                "measurement" => {
                    let v = decode(value)?;
                    filter.measurement = (!v.is_empty()).then_some(v);
                }
                "field" => {
                    let v = decode(value)?;
                    filter.field = (!v.is_empty()).then_some(v);
                }
                "tag" => {
                    let v = decode(value)?;
                    let (k, v) = v
                        .split_once(':')
                        .ok_or_else(|| format!("tag filter {v:?} is not KEY:VALUE"))?;
                    filter.tags.push((k.to_owned(), v.to_owned()));
                }
                "limit" => {
                    let v = decode(value)?;
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("limit {v:?} is not a non-negative integer"));
                    }
                    filter.limit = v
                        .parse()
                        .map_err(|_| format!("limit {v:?} is out of range"))?;
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    fn matches_group(&self, view: &GroupView<'_>) -> bool {
        group_matches(
            self.measurement.as_deref(),
            &self.tags,
            &view.measurement,
            &view.tags,
        )
    }
}

/// Parses the query string of `DELETE /series` into what it deletes: the filters of
/// `GET /series` (same decoding and matching), at least one of them, none empty,
/// `measurement=` and `field=` at most once each. `limit=` is refused (a delete is never
/// partial), as is any other parameter but the v1 credentials `u=`/`p=`: a misspelt filter
/// must never widen a delete. The error is the `400` message.
pub fn delete_selector(query: &str) -> Result<Selector, String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut sel = Selector::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let once = |slot: &mut Option<String>, v: String| {
            if v.is_empty() {
                return Err(format!("empty {name}= filter: a delete needs a value"));
            }
            if slot.replace(v).is_some() {
                return Err(format!("{name}= given twice"));
            }
            Ok(())
        };
        match name.as_str() {
            "measurement" => once(&mut sel.measurement, decode(value)?)?,
            "field" => once(&mut sel.field, decode(value)?)?,
            "tag" => {
                let v = decode(value)?;
                match v.split_once(':') {
                    Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                        sel.tags.push((k.to_owned(), v.to_owned()))
                    }
                    _ => {
                        return Err(format!(
                            "tag filter {v:?} is not KEY:VALUE (both non-empty)"
                        ));
                    }
                }
            }
            "u" | "p" => {}
            "limit" => return Err(
                "limit= does not apply to DELETE /series (a delete removes every matching series)"
                    .into(),
            ),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: DELETE /series takes measurement=, field= and tag=KEY:VALUE"
                ));
            }
        }
    }
    if sel.is_empty() {
        return Err(
            "DELETE /series needs at least one filter (measurement=, field= or tag=KEY:VALUE)"
                .into(),
        );
    }
    Ok(sel)
}

fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    // Serialising a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &*String::from_utf8_lossy(bytes));
}

fn write_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(f) if f.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// A group copied out of the store: what `/series` lists of it (only its matching
/// fields).
struct OwnedGroup {
    key: Box<[u8]>,
    measurement: Box<[u8]>,
    tags: Vec<Tag<'static>>,
    /// Matching fields: escaped name, aggregates.
    fields: Vec<(Box<[u8]>, FieldAgg)>,
}

/// A `/series` read in two steps: [`GroupSink::group`] copies the matching groups out of
/// the store (so it can be read in slices, its lock released between them), keeping only
/// the first `limit` in the listing's order as it goes, so memory stays bounded by the
/// limit, not the store; [`SeriesRender::finish`] writes the JSON.
pub struct SeriesRender {
    filter: SeriesFilter,
    /// Series matching the filter, counted over every group (for `truncated`).
    matched: usize,
    groups: Vec<OwnedGroup>,
    /// After a cut to `limit` groups, the last of them in order: a group ordered after
    /// it cannot be listed, and is counted without being copied.
    last_kept: Option<usize>,
}

fn by_order(a: &OwnedGroup, b: &OwnedGroup) -> std::cmp::Ordering {
    a.measurement
        .cmp(&b.measurement)
        .then_with(|| a.tags.cmp(&b.tags))
        .then_with(|| a.key.cmp(&b.key))
}

/// [`by_order`] of a group still in the store against one copied out.
fn view_order(a: &GroupView<'_>, b: &OwnedGroup) -> std::cmp::Ordering {
    (*a.measurement)
        .cmp(&*b.measurement)
        .then_with(|| a.tags.as_slice().cmp(b.tags.as_slice()))
        .then_with(|| a.key.cmp(&b.key))
}

impl SeriesRender {
    pub fn new(filter: SeriesFilter) -> SeriesRender {
        SeriesRender {
            filter,
            matched: 0,
            groups: Vec::new(),
            last_kept: None,
        }
    }

    fn field_matches(&self, f: &FieldRef<'_>) -> bool {
        self.filter
            .field
            .as_ref()
            .is_none_or(|w| *f.name() == *w.as_bytes())
    }

    /// Keeps the first `limit` groups in the listing's order. Series of one group are
    /// contiguous in the order and every kept group contributes at least one series, so
    /// the first `limit` series lie in the first `limit` groups.
    fn keep_first(&mut self) {
        let limit = self.filter.limit;
        if self.groups.len() > limit {
            if limit > 0 {
                self.groups.select_nth_unstable_by(limit - 1, by_order);
            }
            self.groups.truncate(limit);
            self.last_kept =
                (0..self.groups.len()).max_by(|&a, &b| by_order(&self.groups[a], &self.groups[b]));
        }
    }
}

impl GroupSink for SeriesRender {
    fn group(&mut self, view: GroupView<'_>) {
        if !self.filter.matches_group(&view) {
            return;
        }
        let n = view.fields.iter().filter(|f| self.field_matches(f)).count();
        self.matched += n;
        if n == 0 {
            return;
        }
        if let Some(last) = self.last_kept
            && view_order(&view, &self.groups[last]).is_gt()
        {
            return;
        }
        let fields: Vec<(Box<[u8]>, FieldAgg)> = view
            .fields
            .iter()
            .filter(|f| self.field_matches(f))
            .map(|f| (f.escaped_name().into(), f.agg().clone()))
            .collect();
        self.groups.push(OwnedGroup {
            key: view.key.into(),
            measurement: view.measurement.as_ref().into(),
            tags: view
                .tags
                .iter()
                .map(|(k, v)| (Cow::Owned(k.to_vec()), Cow::Owned(v.to_vec())))
                .collect(),
            fields,
        });
        // Amortised: cut back to `limit` once twice as many (and a slice's worth) are held.
        if self.groups.len() >= self.filter.limit.saturating_mul(2).max(READ_SLICE_GROUPS) {
            self.keep_first();
        }
    }
}

/// Writes `{"series":[…],"truncated":…}` for the series matching `filter`, sorted by
/// measurement, then tags (as a sequence of `(key, value)` pairs), then field, all
/// compared as unescaped bytes. Names are lossy UTF-8; `sum`/`min`/`max` are `null` for a
/// series that never saw a numeric value (and for a non-finite figure, which JSON cannot
/// hold); `last` keeps its type (integer, float, boolean or string). When a key repeats a
/// tag key, the `tags` object lists the first occurrence only. Reads the store in one go.
pub fn render_series(store: &SeriesStore, filter: &SeriesFilter, out: &mut Vec<u8>) {
    let mut render = SeriesRender::new(filter.clone());
    for view in store.groups() {
        render.group(view);
    }
    render.finish(out);
}

/// A `/series` read taken a slice of [`READ_SLICE_GROUPS`] groups per step (a
/// [`SteppedRead`]), so it can be spread over several short jobs with writes applied
/// between them; [`SeriesRead::finish`] writes the listing once every slice is read.
pub struct SeriesRead {
    render: SeriesRender,
    cursor: usize,
}

impl SeriesRead {
    pub fn new(filter: SeriesFilter) -> SeriesRead {
        SeriesRead {
            render: SeriesRender::new(filter),
            cursor: 0,
        }
    }

    /// Writes the listing of what the steps gathered.
    pub fn finish(self, out: &mut Vec<u8>) {
        self.render.finish(out);
    }
}

impl SteppedRead for SeriesRead {
    fn step(&mut self, store: &SeriesStore) -> bool {
        let render = &mut self.render;
        store.read_slice(&mut self.cursor, READ_SLICE_GROUPS, |g| render.group(g))
    }
}

impl SeriesRender {
    /// Writes the listing of the groups gathered (see [`render_series`]).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let truncated = self.matched > self.filter.limit;
        self.keep_first();
        self.groups.sort_unstable_by(by_order);
        let limit = self.filter.limit;
        let mut entries: Vec<(&OwnedGroup, Cow<'_, [u8]>, &FieldAgg)> = Vec::new();
        let mut fields: Vec<(Cow<'_, [u8]>, &FieldAgg)> = Vec::new();
        'groups: for g in &self.groups {
            fields.clear();
            fields.extend(g.fields.iter().map(|(n, f)| (unescape_key(n), f)));
            fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (name, f) in fields.drain(..) {
                if entries.len() == limit {
                    break 'groups;
                }
                entries.push((g, name, f));
            }
        }
        write_listing(&entries, truncated, out);
    }
}

/// The JSON of the listed series.
fn write_listing(
    entries: &[(&OwnedGroup, Cow<'_, [u8]>, &FieldAgg)],
    truncated: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"{\"series\":[");
    for (n, (g, name, f)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"measurement\":");
        write_str(out, &g.measurement);
        out.extend_from_slice(b",\"tags\":{");
        let mut first = true;
        for (i, (k, v)) in g.tags.iter().enumerate() {
            if i > 0 && g.tags[i - 1].0 == *k {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, k);
            out.push(b':');
            write_str(out, v);
        }
        out.extend_from_slice(b"},\"field\":");
        write_str(out, name);
        let _ = write!(out, ",\"count\":{},\"sum\":", f.count());
        write_f64(out, f.sum());
        out.extend_from_slice(b",\"min\":");
        write_f64(out, f.min());
        out.extend_from_slice(b",\"max\":");
        write_f64(out, f.max());
        out.extend_from_slice(b",\"last\":");
        let _ = match f.last() {
            LastValue::Float(x) => {
                write_f64(out, Some(*x));
                Ok(())
            }
            LastValue::Int(i) => write!(out, "{i}"),
            LastValue::UInt(u) => write!(out, "{u}"),
            LastValue::Bool(b) => write!(out, "{b}"),
            LastValue::Str(s) => {
                write_str(out, s);
                Ok(())
            }
        };
        let _ = write!(out, ",\"last_timestamp_ns\":{}}}", f.last_timestamp_ns());
    }
    let _ = write!(out, "],\"truncated\":{truncated}}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::aggregator::test_support::{
        TestPoint, V, arbitrary_store, batch, raw_point,
    };
    use proptest::prelude::*;
    use serde_json::{Value as J, json};

    fn store_of(points: &[TestPoint<'_>]) -> SeriesStore {
        let mut s = SeriesStore::new(usize::MAX);
        s.apply(&batch(points));
        s
    }

    fn query(store: &SeriesStore, q: &str) -> J {
        let filter = SeriesFilter::from_query(q).expect("valid query");
        let mut out = Vec::new();
        render_series(store, &filter, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    fn idents(v: &J) -> Vec<String> {
        v["series"]
            .as_array()
            .expect("array")
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s["measurement"].as_str().unwrap_or("?"),
                    s["tags"],
                    s["field"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn from_query_defaults_and_fields() {
        assert_eq!(SeriesFilter::from_query(""), Ok(SeriesFilter::default()));
        assert_eq!(SeriesFilter::default().limit, 1000);
        let f = SeriesFilter::from_query(
            "?measurement=cpu+load&field=usage%5Fuser&tag=host:a&tag=url:http%3A%2F%2Fx:1&limit=5&x=%zz&&flag",
        )
        .expect("ok");
        assert_eq!(
            f,
            SeriesFilter {
                measurement: Some("cpu load".into()),
                field: Some("usage_user".into()),
                tags: vec![
                    ("host".into(), "a".into()),
                    ("url".into(), "http://x:1".into())
                ],
                limit: 5,
            }
        );
        let f = SeriesFilter::from_query("measurement=&field=&limit=0&tag=%C3%A9:").expect("ok");
        assert_eq!(f.measurement, None);
        assert_eq!(f.field, None);
        assert_eq!(f.limit, 0);
        assert_eq!(f.tags, vec![("é".to_owned(), String::new())]);
        let f = SeriesFilter::from_query("measurement=a&measurement=b").expect("ok");
        assert_eq!(f.measurement.as_deref(), Some("b"));
    }

    #[test]
    fn from_query_errors() {
        for q in [
            "tag=nocolon",
            "tag",
            "limit=-1",
            "limit=+1",
            "limit=",
            "limit=1.5",
            "limit=abc",
            "limit=99999999999999999999999999",
            "measurement=%4",
            "measurement=%g0",
            "field=%ff",
            "%zz=1",
        ] {
            assert!(SeriesFilter::from_query(q).is_err(), "{q}");
        }
    }

    #[test]
    fn renders_exact_json() {
        let s = store_of(&[
            (
                r"my\ cpu,host=a\ b,region=eu",
                10,
                &[("usage", V::F(1.5)), ("up", V::I(3))],
            ),
            (
                r"my\ cpu,host=a\ b,region=eu",
                20,
                &[("usage", V::F(-0.5)), ("up", V::I(-4))],
            ),
            (
                "status",
                5,
                &[
                    ("msg", V::S("ok \"fine\"")),
                    ("on", V::B(true)),
                    ("big", V::U(u64::MAX)),
                ],
            ),
        ]);
        let mut out = Vec::new();
        render_series(&s, &SeriesFilter::default(), &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            concat!(
                r#"{"series":["#,
                r#"{"measurement":"my cpu","tags":{"host":"a b","region":"eu"},"field":"up","count":2,"sum":-1.0,"min":-4.0,"max":3.0,"last":-4,"last_timestamp_ns":20},"#,
                r#"{"measurement":"my cpu","tags":{"host":"a b","region":"eu"},"field":"usage","count":2,"sum":1.0,"min":-0.5,"max":1.5,"last":-0.5,"last_timestamp_ns":20},"#,
                r#"{"measurement":"status","tags":{},"field":"big","count":1,"sum":1.8446744073709552e+19,"min":1.8446744073709552e+19,"max":1.8446744073709552e+19,"last":18446744073709551615,"last_timestamp_ns":5},"#,
                r#"{"measurement":"status","tags":{},"field":"msg","count":1,"sum":null,"min":null,"max":null,"last":"ok \"fine\"","last_timestamp_ns":5},"#,
                r#"{"measurement":"status","tags":{},"field":"on","count":1,"sum":1.0,"min":1.0,"max":1.0,"last":true,"last_timestamp_ns":5}"#,
                r#"],"truncated":false}"#
            )
        );
    }

    #[test]
    fn order_is_measurement_then_tags_then_field() {
        let s = store_of(&[
            ("b,t=1", 1, &[("f", V::I(1))]),
            ("a,t=2", 1, &[("g", V::I(1)), ("f", V::I(1))]),
            ("a,t=1,u=1", 1, &[("f", V::I(1))]),
            ("a,t=1", 1, &[("z", V::I(1))]),
            ("a", 1, &[("f", V::I(1))]),
        ]);
        assert_eq!(
            idents(&query(&s, "")),
            vec![
                "a {} f",
                r#"a {"t":"1"} z"#,
                r#"a {"t":"1","u":"1"} f"#,
                r#"a {"t":"2"} f"#,
                r#"a {"t":"2"} g"#,
                r#"b {"t":"1"} f"#,
            ]
        );
    }

    #[test]
    fn filters_match_unescaped_names_exactly() {
        let s = store_of(&[
            (
                r"cpu\ x,host=a\,1,region=eu",
                1,
                &[(r"us\=er", V::F(1.0)), ("sys", V::F(2.0))],
            ),
            ("cpu,host=a,region=eu", 1, &[("us=er", V::F(3.0))]),
            ("cpu,host=b,region=us", 1, &[("sys", V::F(4.0))]),
        ]);
        let v = query(&s, "measurement=cpu+x&field=us%3Der");
        assert_eq!(
            idents(&v),
            vec![r#"cpu x {"host":"a,1","region":"eu"} us=er"#]
        );
        let v = query(&s, "measurement=cpu&tag=region:eu&tag=host:a");
        assert_eq!(idents(&v), vec![r#"cpu {"host":"a","region":"eu"} us=er"#]);
        let v = query(&s, "tag=host:a&tag=host:b");
        assert!(idents(&v).is_empty());
        let v = query(&s, "field=sys");
        assert_eq!(v["series"].as_array().map(Vec::len), Some(2));
        let v = query(&s, "measurement=cp");
        assert_eq!(v, json!({"series": [], "truncated": false}));
    }

    /// More groups than one cut-back holds ([`READ_SLICE_GROUPS`]): the first `limit`
    /// series are the same as in a listing without a limit, whatever the limit.
    #[test]
    fn limits_on_a_store_bigger_than_a_slice() {
        let n = READ_SLICE_GROUPS * 3 + 17;
        let keys: Vec<String> = (0..n)
            .map(|i| format!("m{},i={}", i % 3, (i * 7919) % n))
            .collect();
        let mut s = SeriesStore::new(usize::MAX);
        for (i, k) in keys.iter().enumerate() {
            let fields: &[(&str, V<'_>)] = if i % 5 == 0 {
                &[("f", V::I(1)), ("g", V::I(2))]
            } else {
                &[("f", V::I(1))]
            };
            s.apply(&batch(&[(k.as_str(), 1, fields)]));
        }
        let all = idents(&query(&s, &format!("limit={}", n * 2)));
        for limit in [
            0,
            1,
            5,
            1000,
            READ_SLICE_GROUPS,
            2 * READ_SLICE_GROUPS + 1,
            n * 2,
        ] {
            let v = query(&s, &format!("limit={limit}"));
            let want = &all[..limit.min(all.len())];
            assert_eq!(idents(&v), want, "limit {limit}");
            assert_eq!(v["truncated"], json!(limit < all.len()), "limit {limit}");
        }
        let g = query(&s, "field=g&limit=10");
        assert_eq!(idents(&g).len(), 10);
        assert!(idents(&g).iter().all(|i| i.ends_with(" g")));
    }

    #[test]
    fn limit_and_truncated() {
        let points: Vec<String> = (0..10).map(|i| format!("m,i={i}")).collect();
        let mut s = SeriesStore::new(usize::MAX);
        for p in points.iter().rev() {
            s.apply(&batch(&[(p.as_str(), 1, &[("f", V::I(1))])]));
        }
        let v = query(&s, "limit=3");
        assert_eq!(v["truncated"], json!(true));
        assert_eq!(
            idents(&v),
            vec![r#"m {"i":"0"} f"#, r#"m {"i":"1"} f"#, r#"m {"i":"2"} f"#]
        );
        assert_eq!(query(&s, "limit=10")["truncated"], json!(false));
        assert_eq!(
            query(&s, "limit=0"),
            json!({"series": [], "truncated": true})
        );
        let empty = SeriesStore::new(10);
        assert_eq!(
            query(&empty, "limit=0"),
            json!({"series": [], "truncated": false})
        );
    }

    #[test]
    fn lossy_names_non_finite_and_duplicate_tag_keys() {
        let mut s = SeriesStore::new(10);
        let mut b = crate::ingest::batch::Batch::default();
        crate::ingest::aggregator::test_support::push(
            &mut b,
            "m,k=1,k=2",
            1,
            &[("nan", V::F(f64::NAN)), ("inf", V::F(f64::INFINITY))],
        );
        b.arena[0] = 0xff; // measurement is no longer UTF-8
        s.apply(&b);
        let v = query(&s, "");
        let series = v["series"].as_array().expect("array");
        assert_eq!(series.len(), 2);
        for x in series {
            assert_eq!(x["measurement"], json!("\u{fffd}"));
            assert_eq!(x["tags"], json!({"k": "1"}));
            assert_eq!(x["last"], J::Null);
        }
        assert_eq!(series[0]["sum"], J::Null); // inf
        assert_eq!(series[1]["sum"], J::Null); // nan
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_stores_render_valid_json(
            points in prop::collection::vec(raw_point(), 0..40),
            limit in 0usize..30,
            field in prop::option::of(prop::sample::select(vec!["a", "b", "_", "ab"])),
        ) {
            let s = arbitrary_store(&points, usize::MAX);
            let filter = SeriesFilter {
                limit,
                field: field.map(str::to_owned),
                ..SeriesFilter::default()
            };
            let parse = |out: &[u8]| -> Result<J, TestCaseError> {
                serde_json::from_slice(out).map_err(|e| {
                    TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(out)))
                })
            };
            let mut out = Vec::new();
            render_series(&s, &filter, &mut out);
            let v = parse(&out)?;
            let series = v["series"].as_array().cloned().unwrap_or_default();
            for x in &series {
                prop_assert!(x["measurement"].is_string() && x["field"].is_string());
                prop_assert!(x["tags"].is_object() && x["count"].is_u64());
                prop_assert!(x["last_timestamp_ns"].is_i64());
                if let Some(f) = &filter.field {
                    prop_assert_eq!(x["field"].as_str(), Some(f.as_str()));
                }
            }
            // Exactly the first `limit` of the full listing, in the same order.
            let mut all = Vec::new();
            let unlimited = SeriesFilter { limit: usize::MAX, ..filter.clone() };
            render_series(&s, &unlimited, &mut all);
            let all = parse(&all)?;
            let all = all["series"].as_array().cloned().unwrap_or_default();
            if filter.field.is_none() {
                prop_assert_eq!(all.len(), s.series_count());
            }
            prop_assert_eq!(series.len(), limit.min(all.len()));
            prop_assert_eq!(&v["truncated"], &json!(all.len() > limit));
            prop_assert_eq!(&series[..], &all[..series.len()]);
        }
    }
}
