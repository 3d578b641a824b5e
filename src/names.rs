//! Naming rules from line-protocol series to Prometheus: family names from measurement and
//! field, label names from tag keys (sanitised, reserved `__` prefixes renamed, collisions
//! resolved by original key order).
//!
//! Pure functions over byte strings, shared by `/metrics` (`read/`), the aggregator (which
//! counts label collisions once per series) and every exporter that must name series
//! exactly as `/metrics` does. A leaf: imports nothing from the rest of the crate, so
//! neither `ingest/` nor `read/` depends on the other through it.

use std::borrow::Cow;

/// A tag as a series key holds it: (key, value), unescaped.
pub type Tag<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Prefix reserved for the server's own families; a user family starting with it gets `_`.
pub(crate) const OWN_PREFIX: &str = "metricstream_";

/// Metric name of a series: `<measurement>_<field>`, every `char` of the lossily decoded
/// UTF-8 outside `[a-zA-Z0-9_:]` replaced by `_`, `_` before a leading digit, `_` before a
/// name starting with `metricstream_`.
pub(crate) fn metric_name(measurement: &[u8], field: &[u8]) -> String {
    let m = String::from_utf8_lossy(measurement);
    let f = String::from_utf8_lossy(field);
    let mut out = String::with_capacity(m.len() + f.len() + 2);
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    out.extend(m.chars().map(|c| if keep(c) { c } else { '_' }));
    out.push('_');
    out.extend(f.chars().map(|c| if keep(c) { c } else { '_' }));
    if out.as_bytes()[0].is_ascii_digit() || out.starts_with(OWN_PREFIX) {
        out.insert(0, '_');
    }
    out
}

/// Label name of a tag key: every `char` outside `[a-zA-Z0-9_]` replaced by `_`, `_` before
/// a leading digit (an empty key becomes `_`), `tag` before a name starting with `__`.
pub(crate) fn label_name(key: &[u8]) -> Cow<'_, str> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if key
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && !key.starts_with(b"__")
        && key.iter().all(plain)
    {
        // Already a valid label name (ASCII, so this never fails).
        if let Ok(s) = std::str::from_utf8(key) {
            return Cow::Borrowed(s);
        }
    }
    let k = String::from_utf8_lossy(key);
    let mut out: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    if out.starts_with("__") {
        out.insert_str(0, "tag");
    }
    Cow::Owned(out)
}

/// The labels a series exposes: `(label name, index into tags)` sorted by label name, and
/// how many tags were left out because a tag whose original (unescaped) key sorts first
/// took the same label name. Tags with an empty value are skipped altogether (Prometheus
/// treats an empty label value as an absent label); they do not count as collisions.
pub(crate) fn resolve_labels<'t>(tags: &'t [Tag<'_>]) -> (Vec<(Cow<'t, str>, usize)>, usize) {
    let mut labels: Vec<(Cow<'t, str>, usize)> = tags
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| !v.is_empty())
        .map(|(i, (k, _))| (label_name(k), i))
        .collect();
    labels.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| tags[a.1].0.cmp(&tags[b.1].0))
            .then(a.1.cmp(&b.1))
    });
    let before = labels.len();
    labels.dedup_by(|later, earlier| later.0 == earlier.0);
    let dropped = before - labels.len();
    (labels, dropped)
}
