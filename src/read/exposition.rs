//! Prometheus text exposition (format 0.0.4) of `GET /metrics`.
//!
//! Owns the mapping from line-protocol series to Prometheus samples: family names
//! (`<measurement>_<field>` sanitised per `char` of the lossily decoded UTF-8 name), label
//! names from tag keys (sanitised, `__`-prefixed keys renamed `tag__…`, collisions resolved by
//! original key order), label value and HELP escaping, grouping of measurements that
//! sanitise to one family, removal of duplicate label sets, and the server's own families
//! rendered after the user's.

use std::io::Write;

use hashbrown::HashMap;

use crate::ingest::SteppedRead;
use crate::ingest::aggregator::{
    GroupView, LastValue, MemberRef, PairRef, SeriesStore, unescape_key, unescape_measurement,
};
use crate::names::{metric_name, resolve_labels};
use crate::tuning::READ_SLICE_GROUPS;

/// The server's own families are declared with its counters; re-exported for callers that
/// render them.
pub use crate::stats::{OwnFamily, OwnKind};

/// Appends `text`, replacing each byte that has an entry in `escapes` by its escape.
fn push_escaped(out: &mut Vec<u8>, text: &str, escapes: &[(u8, &[u8])]) {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        if let Some((_, esc)) = escapes.iter().find(|(c, _)| c == b) {
            out.extend_from_slice(&bytes[run..i]);
            out.extend_from_slice(esc);
            run = i + 1;
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Appends a label value escaped per the text format (`\\`, `\"`, `\n`).
fn push_label_value(out: &mut Vec<u8>, value: &str) {
    push_escaped(
        out,
        value,
        &[(b'\\', b"\\\\"), (b'"', b"\\\""), (b'\n', b"\\n")],
    );
}

/// Appends HELP text escaped per the text format (`\\`, `\n`).
fn push_help(out: &mut Vec<u8>, help: &str) {
    push_escaped(out, help, &[(b'\\', b"\\\\"), (b'\n', b"\\n")]);
}

/// Appends `{name="value",…}` (nothing when there are no labels) for one group.
fn push_labels(out: &mut Vec<u8>, view: &GroupView<'_>) {
    let (labels, _) = resolve_labels(&view.tags);
    for (n, (name, idx)) in labels.iter().enumerate() {
        out.push(if n == 0 { b'{' } else { b',' });
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        push_label_value(out, &String::from_utf8_lossy(&view.tags[*idx].1));
        out.push(b'"');
    }
    if !labels.is_empty() {
        out.push(b'}');
    }
}

/// An exported sample value: `last` when numeric and finite.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

fn exported(last: &LastValue) -> Option<Num> {
    match *last {
        LastValue::Int(i) => Some(Num::Int(i)),
        LastValue::UInt(u) => Some(Num::UInt(u)),
        LastValue::Float(f) if f.is_finite() => Some(Num::Float(f)),
        LastValue::Bool(b) => Some(Num::Bool(b)),
        LastValue::Float(_) | LastValue::Str(_) => None,
    }
}

/// Writes a finite float the way Go's `ParseFloat` reads it back exactly: plain decimal for
/// ordinary magnitudes (Rust's shortest round-trip `{}`), exponent form (`1.7e308`) outside
/// `[1e-5, 1e16)` so huge or tiny values do not print hundreds of digits.
fn write_f64(out: &mut Vec<u8>, f: f64) {
    let a = f.abs();
    // Writing into a Vec cannot fail.
    let _ = if a == 0.0 || (1e-5..1e16).contains(&a) {
        write!(out, "{f}")
    } else {
        write!(out, "{f:e}")
    };
}

fn write_value(out: &mut Vec<u8>, value: Num) {
    let _ = match value {
        Num::Int(i) => write!(out, "{i}"),
        Num::UInt(u) => write!(out, "{u}"),
        Num::Bool(b) => write!(out, "{}", u8::from(b)),
        Num::Float(f) => {
            write_f64(out, f);
            Ok(())
        }
    };
}

/// One exported sample before ordering: the ranks it sorts by, then what it renders.
struct Entry {
    family_rank: u32,
    labels_rank: u32,
    /// Index into [`Collected::pairs`].
    pair: u32,
    /// Index into [`Collected::groups`].
    group: u32,
    value: Num,
}

/// One `(measurement, field)` of the store, as many series share it.
struct Pair {
    /// The family name it renders under (several pairs may share one).
    family: String,
    /// Unescaped measurement and field name: the HELP text and the tie-break of duplicates.
    measurement: Box<[u8]>,
    field: Box<[u8]>,
}

/// A group with something to export: its label text (`{a="x"}`, or nothing) and its
/// series key, one after the other in [`MetricsRender::text`].
struct GroupText {
    start: usize,
    labels_len: u32,
    key_len: u32,
}

/// Sorts `0..len` under `cmp`; returns the order and each index's rank (equal items share
/// a rank).
fn ranked(len: usize, cmp: impl Fn(usize, usize) -> std::cmp::Ordering) -> (Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..len as u32).collect();
    order.sort_unstable_by(|&a, &b| cmp(a as usize, b as usize));
    let mut ranks = vec![0u32; len];
    let mut rank = 0u32;
    for (n, &i) in order.iter().enumerate() {
        if n > 0 && cmp(order[n - 1] as usize, i as usize).is_ne() {
            rank += 1;
        }
        ranks[i as usize] = rank;
    }
    (order, ranks)
}

/// [`ranked`] for byte strings: `text(i)` for `i in 0..len` in byte order. Sorts pairs of
/// (8 bytes past the prefix every string shares, big-endian and zero-padded; index), so
/// most comparisons are one integer compare on contiguous memory instead of a `memcmp` on
/// scattered text (label texts of one store share long prefixes such as `{host="h`). The
/// padded bytes order like the strings do: a string that ends sorts before any longer one
/// with the same bytes, and equal prefixes fall back to comparing the whole strings.
fn ranked_bytes<'t>(len: usize, text: impl Fn(usize) -> &'t [u8]) -> (Vec<u32>, Vec<u32>) {
    let common = match len {
        0 => 0,
        _ => {
            let first = text(0);
            (1..len).fold(first.len(), |l, i| {
                first[..l]
                    .iter()
                    .zip(text(i))
                    .take_while(|(a, b)| a == b)
                    .count()
            })
        }
    };
    let mut keyed: Vec<(u64, u32)> = (0..len)
        .map(|i| {
            let mut word = [0u8; 8];
            if let Some(rest) = text(i).get(common..) {
                let n = rest.len().min(8);
                word[..n].copy_from_slice(&rest[..n]);
            }
            (u64::from_be_bytes(word), i as u32)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| text(a.1 as usize).cmp(text(b.1 as usize)))
    });
    let mut ranks = vec![0u32; len];
    let mut rank = 0u32;
    for n in 0..keyed.len() {
        if n > 0 {
            let (p, c) = (keyed[n - 1], keyed[n]);
            if p.0 != c.0 || text(p.1 as usize) != text(c.1 as usize) {
                rank += 1;
            }
        }
        ranks[keyed[n].1 as usize] = rank;
    }
    (keyed.into_iter().map(|(_, i)| i).collect(), ranks)
}

/// Output is handed to the writer in pieces of about this size, so a gzip encoder behind
/// it never sees the whole plain text at once.
const PIECE: usize = 64 * 1024;

/// Widest measurement (distinct fields) whose families are written by walking its groups
/// once per field; the families of a wider one are collected in one walk instead, so a
/// measurement with thousands of fields costs one walk, not thousands.
const WALK_FIELDS_MAX: usize = 16;

/// A family written straight from the store: one `(measurement, field)` whose groups are
/// all [`plain_labels`](crate::ingest::aggregator::plain_labels), so no two of them share
/// a label set and each sample is written from its key as it is visited.
struct Direct {
    family: String,
    meas: u32,
    field: u32,
    /// Unescaped names, for the HELP text.
    measurement: Box<[u8]>,
    field_name: Box<[u8]>,
}

/// A `/metrics` render, step by step with the store locked in between
/// ([`crate::ingest::SteppedReader`]), written to `W` in pieces of about [`PIECE`]
/// bytes.
///
/// User series are gauges holding `last` (booleans as 0/1, integers exactly, no sample
/// timestamps); series whose `last` is a string, or a non-finite float, are not exported.
/// Most families are *direct*: one measurement and field, every group's tags already valid
/// label names, so the samples are written from the keys while the measurement's groups
/// are walked (in the order they were created), and the render holds nothing but the
/// piece being written. The others — a family several measurements or fields sanitise to,
/// a measurement with a tag that must be renamed, escaped, or could collide, or with more
/// than [`WALK_FIELDS_MAX`] fields — are *collected*: their samples are copied out (label
/// text, key, value), sorted by label set and written after the direct ones by
/// [`MetricsRender::finish`]. When two samples of a collected family end up with the
/// same label set (measurements `a-b` and `a.b` with the same tags and field, or tag keys
/// `a.b` / `a-b` on one measurement), only the one whose original (unescaped) measurement
/// sorts first is kept; ties are broken by the original series key, then the original
/// field name. Direct families come first, sorted by name, then collected ones, sorted by
/// name; the server's own families last.
pub struct MetricsRender<W: Write> {
    planned: bool,
    direct: Vec<Direct>,
    /// The direct family being written, the member position reached in it, and whether
    /// its HELP/TYPE lines are out.
    next: usize,
    pos: usize,
    headed: bool,
    /// Measurements with collected families, and how far their walk got.
    collect_meas: Vec<u32>,
    collect_next: usize,
    collect_pos: usize,
    /// `(measurement id, field name id)` of collected families -> index in `collected.pairs`.
    collect_pairs: HashMap<(u32, u32), u32>,
    collected: Collected,
    /// Every collected sample is in `collected`; next, they are sorted (without the lock).
    collected_all: bool,
    sorted: bool,
    /// Tests: every family collected (the reference the direct path is checked against).
    #[cfg(test)]
    collect_all: bool,
    piece: Vec<u8>,
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> SteppedRead for MetricsRender<W> {
    fn step(&mut self, store: &SeriesStore) -> bool {
        MetricsRender::step(self, store)
    }

    fn unlocked(&mut self) {
        if self.collected_all && !self.sorted {
            self.collected.sort();
            self.sorted = true;
        }
        if self.piece.len() >= PIECE {
            self.flush();
        }
    }
}

impl<W: Write> MetricsRender<W> {
    pub fn new(out: W) -> MetricsRender<W> {
        MetricsRender {
            planned: false,
            direct: Vec::new(),
            next: 0,
            pos: 0,
            headed: false,
            collect_meas: Vec::new(),
            collect_next: 0,
            collect_pos: 0,
            collect_pairs: HashMap::new(),
            collected: Collected::default(),
            collected_all: false,
            sorted: false,
            #[cfg(test)]
            collect_all: false,
            piece: Vec::with_capacity(PIECE + 4096),
            out,
            error: None,
        }
    }

    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(&self.piece)
        {
            self.error = Some(e);
        }
        self.piece.clear();
    }

    /// Sorts the store's `(measurement, field)` pairs into direct and collected families.
    fn plan(&mut self, store: &SeriesStore) {
        // Family name -> its pairs, with their unescaped measurement and field names.
        type Named<'s> = (PairRef<'s>, Box<[u8]>, Box<[u8]>);
        let mut families: HashMap<String, Vec<Named<'_>>> = HashMap::new();
        for p in store.pairs() {
            let measurement: Box<[u8]> = unescape_measurement(p.measurement).as_ref().into();
            let field: Box<[u8]> = unescape_key(p.field_name).as_ref().into();
            families
                .entry(metric_name(&measurement, &field))
                .or_default()
                .push((p, measurement, field));
        }
        #[cfg(test)]
        let direct_allowed = !self.collect_all;
        #[cfg(not(test))]
        let direct_allowed = true;
        for (family, pairs) in families {
            match &pairs[..] {
                [(p, measurement, field)]
                    if direct_allowed && p.plain && p.width <= WALK_FIELDS_MAX =>
                {
                    self.direct.push(Direct {
                        family,
                        meas: p.meas,
                        field: p.field,
                        measurement: measurement.clone(),
                        field_name: field.clone(),
                    });
                }
                _ => {
                    for (p, measurement, field) in pairs {
                        let id = self.collected.pairs.len() as u32;
                        self.collected.pairs.push(Pair {
                            family: family.clone(),
                            measurement,
                            field,
                        });
                        self.collect_pairs.insert((p.meas, p.field), id);
                        self.collect_meas.push(p.meas);
                    }
                }
            }
        }
        self.direct.sort_unstable_by(|a, b| a.family.cmp(&b.family));
        self.collect_meas.sort_unstable();
        self.collect_meas.dedup();
    }

    /// One slice of the render with the store locked: up to [`READ_SLICE_GROUPS`] groups
    /// visited or samples written. First the collected families are gathered (and sorted
    /// between steps, without the lock), then every family is written in name order.
    /// Returns `true` once every user series was written.
    pub fn step(&mut self, store: &SeriesStore) -> bool {
        if !self.planned {
            self.plan(store);
            self.planned = true;
        }
        let mut left = READ_SLICE_GROUPS;
        while left > 0 && self.collect_next < self.collect_meas.len() {
            let meas = self.collect_meas[self.collect_next];
            let (pairs, collected) = (&self.collect_pairs, &mut self.collected);
            let mut seen = 0;
            let done = store.visit_members(meas, &mut self.collect_pos, left, |m| {
                seen += 1;
                collected.group(meas, pairs, m);
            });
            left -= seen.min(left);
            if done {
                self.collect_next += 1;
                self.collect_pos = 0;
            }
        }
        if !self.collected_all {
            // Once all are in, they are sorted in `unlocked`, before the next step.
            self.collected_all = self.collect_next == self.collect_meas.len();
            return false;
        }
        while left > 0 {
            let direct = self.direct.get(self.next);
            let collected = self.collected.next_family();
            match (direct, collected) {
                (None, None) => return true,
                (Some(d), Some(c)) if c < d.family.as_str() => {
                    left -= self.collected.write_family(&mut self.piece, left);
                }
                (None, Some(_)) => {
                    left -= self.collected.write_family(&mut self.piece, left);
                }
                (Some(d), _) => {
                    let (piece, headed) = (&mut self.piece, &mut self.headed);
                    let mut seen = 0;
                    let done = store.visit_members(d.meas, &mut self.pos, left, |m| {
                        seen += 1;
                        write_direct(piece, headed, d, m);
                    });
                    left -= seen.min(left);
                    if done {
                        self.next += 1;
                        self.pos = 0;
                        self.headed = false;
                    }
                }
            }
        }
        false
    }

    /// The writer (a streamed answer hands out what reached it between steps).
    pub fn out(&self) -> &W {
        &self.out
    }

    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the server's own families and hands the rest of the output to the writer.
    pub fn finish(mut self, own: &[OwnFamily<'_>]) -> std::io::Result<W> {
        for fam in own {
            render_own(fam, &mut self.piece);
        }
        self.flush();
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Writes one sample of a direct family (HELP and TYPE first, for its first sample).
#[inline]
fn write_direct(piece: &mut Vec<u8>, headed: &mut bool, d: &Direct, m: MemberRef<'_>) {
    let Some(agg) = m.fields().by_id(d.field) else {
        return;
    };
    let Some(value) = exported(agg.last()) else {
        return;
    };
    if !m.plain() {
        // Created since the render began, with tags that might collide: left out of this
        // render (a series created during a read may or may not be in it).
        return;
    }
    if !*headed {
        *headed = true;
        write_header(piece, &d.family, &d.field_name, &d.measurement);
    }
    piece.extend_from_slice(d.family.as_bytes());
    push_plain_labels(piece, m.key());
    piece.push(b' ');
    write_value(piece, value);
    piece.push(b'\n');
}

fn write_header(piece: &mut Vec<u8>, family: &str, field: &[u8], measurement: &[u8]) {
    let _ = write!(piece, "# HELP {family} Last value of field \"");
    push_help(piece, &String::from_utf8_lossy(field));
    piece.extend_from_slice(b"\" of measurement \"");
    push_help(piece, &String::from_utf8_lossy(measurement));
    piece.extend_from_slice(b"\" (line protocol).\n");
    let _ = writeln!(piece, "# TYPE {family} gauge");
}

/// `{k="v",…}` straight from a key whose tags are plain (see
/// [`plain_labels`](crate::ingest::aggregator::plain_labels)): in key order, which is
/// label order; values need only `"` and newlines escaped (a plain key has no backslash).
fn push_plain_labels(out: &mut Vec<u8>, key: &[u8]) {
    let mut first = true;
    for pair in key.split(|&b| b == b',').skip(1) {
        let eq = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(&pair[..eq]);
        out.extend_from_slice(b"=\"");
        let value = pair.get(eq + 1..).unwrap_or_default();
        if value.iter().any(|&b| b == b'"' || b == b'\n') {
            for &b in value {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    _ => out.push(b),
                }
            }
        } else {
            out.extend_from_slice(value);
        }
        out.push(b'"');
    }
    if !first {
        out.push(b'}');
    }
}

/// The samples of collected families (see [`MetricsRender`]): copied out of the store
/// (label text, key, value), then ordered and written without it.
#[derive(Default)]
struct Collected {
    pairs: Vec<Pair>,
    text: Vec<u8>,
    groups: Vec<GroupText>,
    entries: Vec<Entry>,
    /// After [`Collected::sort`]: the group whose label text stands for each label rank,
    /// and the next entry to write.
    rank_group: Vec<u32>,
    written: usize,
    /// The HELP and TYPE of the family being written are out.
    headed: bool,
}

impl Collected {
    /// Copies out of one group of measurement `meas` its samples of collected families.
    fn group(&mut self, meas: u32, pairs: &HashMap<(u32, u32), u32>, m: MemberRef<'_>) {
        let group = self.groups.len() as u32;
        let before = self.entries.len();
        for field in m.fields().iter() {
            let Some(&pair) = pairs.get(&(meas, field.name_id())) else {
                continue;
            };
            let Some(value) = exported(field.last()) else {
                continue;
            };
            self.entries.push(Entry {
                family_rank: 0,
                labels_rank: 0,
                pair,
                group,
                value,
            });
        }
        if self.entries.len() > before {
            let start = self.text.len();
            push_labels(&mut self.text, &m.view());
            let labels_len = (self.text.len() - start) as u32;
            self.text.extend_from_slice(m.key());
            self.groups.push(GroupText {
                start,
                labels_len,
                key_len: m.key().len() as u32,
            });
        }
    }

    fn labels(&self, g: usize) -> &[u8] {
        let t = &self.groups[g];
        &self.text[t.start..t.start + t.labels_len as usize]
    }

    fn key(&self, g: usize) -> &[u8] {
        let t = &self.groups[g];
        let start = t.start + t.labels_len as usize;
        &self.text[start..start + t.key_len as usize]
    }

    /// Orders the samples (family, label set, then the tie-breaks of duplicates) and
    /// keeps the first of each (family, label set).
    fn sort(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        // Order: family name, then label set (both as integer ranks so the big sort stays
        // cheap), then, only between duplicates of one (family, label set), original
        // measurement, original key and original field name.
        let (_, family_ranks) = ranked(self.pairs.len(), |a, b| {
            self.pairs[a].family.cmp(&self.pairs[b].family)
        });
        let (label_order, labels_ranks) = ranked_bytes(self.groups.len(), |g| self.labels(g));
        // One group per distinct label set, in rank order: where its text is.
        let mut rank_group: Vec<u32> = Vec::new();
        for &g in &label_order {
            if rank_group.len() as u32 == labels_ranks[g as usize] {
                rank_group.push(g);
            }
        }
        drop(label_order);
        let mut entries = std::mem::take(&mut self.entries);
        for e in &mut entries {
            e.family_rank = family_ranks[e.pair as usize];
            e.labels_rank = labels_ranks[e.group as usize];
        }
        drop(labels_ranks);
        entries.sort_unstable_by(|a, b| {
            (a.family_rank, a.labels_rank)
                .cmp(&(b.family_rank, b.labels_rank))
                .then_with(|| {
                    let (pa, pb) = (&self.pairs[a.pair as usize], &self.pairs[b.pair as usize]);
                    pa.measurement
                        .cmp(&pb.measurement)
                        .then_with(|| self.key(a.group as usize).cmp(self.key(b.group as usize)))
                        .then_with(|| pa.field.cmp(&pb.field))
                })
        });
        // Keep the first (by the order above) of every (family, label set).
        entries.dedup_by(|later, earlier| {
            later.family_rank == earlier.family_rank && later.labels_rank == earlier.labels_rank
        });
        self.entries = entries;
        self.rank_group = rank_group;
    }

    /// The name of the next family [`Collected::write_family`] writes (once sorted).
    fn next_family(&self) -> Option<&str> {
        let e = self.entries.get(self.written)?;
        Some(self.pairs[e.pair as usize].family.as_str())
    }

    /// Writes up to `max` samples of the next family (HELP and TYPE before its first);
    /// returns how many.
    fn write_family(&mut self, piece: &mut Vec<u8>, max: usize) -> usize {
        let Some(first) = self.entries.get(self.written) else {
            return 0;
        };
        let pair = &self.pairs[first.pair as usize];
        let (family, rank) = (pair.family.as_str(), first.family_rank);
        if !self.headed {
            self.headed = true;
            write_header(piece, family, &pair.field, &pair.measurement);
        }
        let mut n = 0;
        while n < max
            && let Some(e) = self.entries.get(self.written)
            && e.family_rank == rank
        {
            piece.extend_from_slice(family.as_bytes());
            piece.extend_from_slice(self.labels(self.rank_group[e.labels_rank as usize] as usize));
            piece.push(b' ');
            write_value(piece, e.value);
            piece.push(b'\n');
            self.written += 1;
            n += 1;
        }
        if self
            .entries
            .get(self.written)
            .is_none_or(|e| e.family_rank != rank)
        {
            self.headed = false;
        }
        n
    }
}

/// Renders every numeric user series of `store` and then the server's own families, as
/// [`MetricsRender`] describes, reading the store in one go.
pub fn render_metrics(store: &SeriesStore, own: &[OwnFamily<'_>], out: &mut Vec<u8>) {
    let mut render = MetricsRender::new(out);
    loop {
        let done = render.step(store);
        render.unlocked();
        if done {
            break;
        }
    }
    // Writing into a Vec cannot fail.
    let _ = render.finish(own);
}

fn render_own(fam: &OwnFamily<'_>, out: &mut Vec<u8>) {
    let _ = write!(out, "# HELP {} ", fam.name);
    push_help(out, fam.help);
    let kind = match fam.kind {
        OwnKind::Counter => "counter",
        OwnKind::Gauge => "gauge",
    };
    let _ = writeln!(out, "\n# TYPE {} {kind}", fam.name);
    for (labels, value) in &fam.samples {
        if !value.is_finite() {
            continue;
        }
        out.extend_from_slice(fam.name.as_bytes());
        if !labels.is_empty() {
            out.push(b'{');
            for (n, (name, v)) in labels.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"=\"");
                push_label_value(out, v);
                out.push(b'"');
            }
            out.push(b'}');
        }
        out.push(b' ');
        write_f64(out, *value);
        out.push(b'\n');
    }
}

/// A small validator of the text format as this module emits it, used by the tests.
#[cfg(test)]
pub(crate) mod check {
    use std::collections::{BTreeSet, HashSet};

    fn valid_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with("__")
    }

    /// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and the rest.
    type Labels = Vec<(String, String)>;

    fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
        let mut labels = Vec::new();
        s = s.strip_prefix('{').ok_or("expected {")?;
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        loop {
            let eq = s.find('=').ok_or("label without =")?;
            let name = &s[..eq];
            if !valid_label_name(name) {
                return Err(format!("bad label name {name:?}"));
            }
            s = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, '\n')) => return Err("raw newline in label value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            labels.push((name.to_owned(), value));
            s = &s[end + 1..];
            if let Some(rest) = s.strip_prefix(',') {
                s = rest;
            } else if let Some(rest) = s.strip_prefix('}') {
                return Ok((labels, rest));
            } else {
                return Err("expected , or }".into());
            }
        }
    }

    /// Checks: every line is a `# HELP`/`# TYPE` comment or `name{labels} value`; each
    /// family has one HELP and one TYPE before its samples; families are contiguous; no
    /// duplicate label names in a sample nor duplicate label sets in a family; values are
    /// finite floats; no timestamps. Returns the number of samples.
    pub(crate) fn check_exposition(text: &str) -> Result<usize, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("missing final newline".into());
        }
        let mut seen_families: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut has_help = false;
        let mut has_type = false;
        let mut label_sets: HashSet<BTreeSet<(String, String)>> = HashSet::new();
        let mut samples = 0;
        for (n, line) in text.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kw = parts.next().unwrap_or("");
                let name = parts.next().unwrap_or("").to_owned();
                let arg = parts.next().unwrap_or("");
                if kw != "HELP" && kw != "TYPE" {
                    continue;
                }
                if !valid_metric_name(&name) {
                    return Err(err("bad family name".into()));
                }
                if current.as_deref() != Some(name.as_str()) {
                    if !seen_families.insert(name.clone()) {
                        return Err(err("family not contiguous".into()));
                    }
                    current = Some(name);
                    has_help = false;
                    has_type = false;
                    label_sets.clear();
                }
                if kw == "HELP" {
                    if has_help || has_type {
                        return Err(err("HELP repeated or after TYPE".into()));
                    }
                    if arg.is_empty() {
                        return Err(err("empty HELP".into()));
                    }
                    has_help = true;
                } else {
                    if has_type {
                        return Err(err("duplicate TYPE".into()));
                    }
                    if !matches!(arg, "counter" | "gauge") {
                        return Err(err("unexpected type".into()));
                    }
                    has_type = true;
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(err("unexpected line".into()));
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| err("no value".into()))?;
            let name = &line[..name_end];
            if current.as_deref() != Some(name) || !has_help || !has_type {
                return Err(err("sample outside its family or before HELP/TYPE".into()));
            }
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if rest.starts_with('{') {
                let (l, r) = parse_labels(rest).map_err(err)?;
                labels = l;
                rest = r;
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| err("no space".into()))?;
            let v: f64 = value.parse().map_err(|_| err("bad value".into()))?;
            if !v.is_finite() {
                return Err(err("non-finite value".into()));
            }
            let set: BTreeSet<(String, String)> = labels.iter().cloned().collect();
            let names: HashSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            if names.len() != labels.len() {
                return Err(err("duplicate label name".into()));
            }
            if !label_sets.insert(set) {
                return Err(err("duplicate label set".into()));
            }
            samples += 1;
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::check::check_exposition;
    use super::*;

    #[test]
    fn ranked_bytes_agrees_with_a_plain_sort() {
        let texts: Vec<&[u8]> = vec![
            b"{host=\"h10\"}",
            b"{host=\"h1\"}",
            b"{host=\"h2\"}",
            b"{host=\"h1\"}",
            b"",
            b"{a=\"x\"}",
            b"{host=\"h\0\"}",
            b"{host=\"h\"}",
            b"{host=\"h12345678901\"}",
            b"{host=\"h12345678900\"}",
            b"{host=\"h\xff\"}",
        ];
        let slow = ranked(texts.len(), |a, b| texts[a].cmp(texts[b]));
        let fast = ranked_bytes(texts.len(), |i| texts[i]);
        assert_eq!(fast.1, slow.1, "ranks");
        let sorted = |order: &[u32]| order.iter().map(|&i| texts[i as usize]).collect::<Vec<_>>();
        assert_eq!(sorted(&fast.0), sorted(&slow.0));
        // All sharing a long prefix, and none at all.
        let same: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{{host=\"h{}\"}}", i * 7919 % 1000).into_bytes())
            .collect();
        let slow = ranked(same.len(), |a, b| same[a].cmp(&same[b]));
        let fast = ranked_bytes(same.len(), |i| &same[i]);
        assert_eq!(fast.1, slow.1);
        assert_eq!(ranked_bytes(0, |_| &b""[..]), (vec![], vec![]));
    }
    use crate::ingest::aggregator::test_support::{
        TestPoint, V, arbitrary_store, batch, raw_point,
    };
    use crate::names::label_name;
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn render(store: &SeriesStore, own: &[OwnFamily<'_>]) -> String {
        let mut out = Vec::new();
        render_metrics(store, own, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        if let Err(e) = check_exposition(&text) {
            panic!("{e}\n{text}");
        }
        text
    }

    fn store_of(points: &[TestPoint<'_>]) -> SeriesStore {
        let mut s = SeriesStore::new(usize::MAX);
        s.apply(&batch(points));
        s
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// Renders in steps with the store changing between them, as a registered read
    /// does: series added, some of them removed again, some of the first ones deleted.
    #[test]
    fn a_stepped_render_sees_every_lasting_series_once_while_the_store_changes() {
        use crate::ingest::lifecycle::Selector;
        let mut s = SeriesStore::new(usize::MAX);
        let n = 3 * READ_SLICE_GROUPS + 100;
        let mut points = Vec::new();
        for i in 0..n {
            // Plain (direct), a renamed tag key (collected), and two measurements that
            // sanitise to one family (collected).
            points.push((format!("cpu,host=h{i}"), "v"));
            points.push((format!("mem,host.name=h{i}"), "used"));
            points.push((
                format!("{},k=h{i}", if i % 2 == 0 { "a-b" } else { "a.b" }),
                "f",
            ));
        }
        let as_points: Vec<TestPoint<'_>> = points
            .iter()
            .map(|(k, f)| {
                let fields: &[(&str, V<'_>)] = match *f {
                    "v" => &[("v", V::F(1.0))],
                    "used" => &[("used", V::F(2.0))],
                    _ => &[("f", V::F(3.0))],
                };
                (k.as_str(), 1, fields)
            })
            .collect();
        s.apply(&batch(&as_points));
        let mut out = Vec::new();
        let mut r = MetricsRender::new(&mut out);
        s.begin_read();
        let mut steps = 0;
        loop {
            let done = r.step(&s);
            r.unlocked();
            if done {
                break;
            }
            steps += 1;
            assert!(steps < 1000, "the render never finished");
            // New series (seen or not), then one of them gone again, and one of the
            // first series of each kind deleted (seen once or not at all).
            let new: Vec<String> = (0..50)
                .map(|j| format!("cpu,host=new{steps}_{j}"))
                .collect();
            let fresh: Vec<TestPoint<'_>> = new
                .iter()
                .map(|k| (k.as_str(), 1, &[("v", V::F(9.0))][..]))
                .collect();
            s.apply(&batch(&fresh));
            for sel in [
                ("host", format!("new{steps}_0")),
                ("host", format!("h{steps}")),
                ("host.name", format!("h{steps}")),
                ("k", format!("h{steps}")),
            ] {
                s.delete(&Selector {
                    measurement: None,
                    field: None,
                    tags: vec![(sel.0.to_string(), sel.1)],
                });
            }
        }
        s.end_read();
        let _ = r.finish(&[]);
        let text = String::from_utf8(out).expect("utf-8");
        check_exposition(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(steps >= 3, "several steps: {steps}");
        let lines: Vec<&str> = samples(&text);
        let mut seen = std::collections::HashMap::new();
        for l in &lines {
            *seen.entry(*l).or_insert(0) += 1;
        }
        assert!(seen.values().all(|&c| c == 1), "a sample written twice");
        for i in steps + 1..n {
            for want in [
                format!("cpu_v{{host=\"h{i}\"}} 1"),
                format!("mem_used{{host_name=\"h{i}\"}} 2"),
                format!("a_b_f{{k=\"h{i}\"}} 3"),
            ] {
                assert!(seen.contains_key(want.as_str()), "missing {want}");
            }
        }
        // The store tidied up after the read: a fresh render has no holes to show.
        let after = render(&s, &[]);
        assert!(!after.contains("new1_0"));
    }

    #[test]
    fn plain_label_keys() {
        use crate::ingest::aggregator::plain_labels;
        for key in ["m", "m,a=1", "m,a=1,b=x y", "cpu,_a=1,host=h", "m,a=\"q\""] {
            assert!(plain_labels(key.as_bytes()), "{key}");
        }
        for key in [
            "m,b=1,a=2",
            "m,a=1,a=2",
            "m,a=",
            "m,a",
            "m,1a=x",
            "m,__a=x",
            "m,a.b=x",
            "m,a=x\\ y",
            "m\\ x,a=1",
            "m,=x",
        ] {
            assert!(!plain_labels(key.as_bytes()), "{key}");
        }
        assert!(!plain_labels(b"m,a=\xff"));
    }

    #[test]
    fn basic_gauges() {
        let s = store_of(&[(
            "cpu,host=a,region=eu",
            1,
            &[("usage", V::F(0.5)), ("uptime", V::I(42))],
        )]);
        assert_eq!(
            render(&s, &[]),
            "# HELP cpu_uptime Last value of field \"uptime\" of measurement \"cpu\" (line protocol).\n\
             # TYPE cpu_uptime gauge\n\
             cpu_uptime{host=\"a\",region=\"eu\"} 42\n\
             # HELP cpu_usage Last value of field \"usage\" of measurement \"cpu\" (line protocol).\n\
             # TYPE cpu_usage gauge\n\
             cpu_usage{host=\"a\",region=\"eu\"} 0.5\n"
        );
    }

    #[test]
    fn metric_name_sanitising() {
        assert_eq!(metric_name(b"my.meas-1", b"used %"), "my_meas_1_used__");
        // per char of lossy UTF-8: one `_` per non-ASCII char, not per byte
        assert_eq!(metric_name("température".as_bytes(), b"v"), "temp_rature_v");
        assert_eq!(metric_name(b"\xff\xfe", b"v"), "___v");
        assert_eq!(metric_name(b"1m", b"f"), "_1m_f");
        assert_eq!(metric_name(b"a:b", b"c"), "a:b_c");
        assert_eq!(metric_name(b"metricstream", b"x"), "_metricstream_x");
        assert_eq!(
            metric_name(b"metricstream_points", b"x"),
            "_metricstream_points_x"
        );
        assert_eq!(metric_name(b"metricstreamx", b"y"), "metricstreamx_y");
    }

    #[test]
    fn label_name_sanitising() {
        assert_eq!(label_name(b"host.name"), "host_name");
        assert_eq!(label_name(b"a:b"), "a_b");
        assert_eq!(label_name(b"1a"), "_1a");
        assert_eq!(label_name(b"__x"), "tag__x");
        assert_eq!(label_name(b"__name__"), "tag__name__");
        assert_eq!(label_name(b"._x"), "tag__x");
        assert_eq!(label_name("zoné".as_bytes()), "zon_");
        assert_eq!(label_name(b""), "_");
        assert!(matches!(label_name(b"host_1"), Cow::Borrowed("host_1")));
        assert_eq!(label_name(b"_"), "_");
    }

    #[test]
    fn label_values_escaped() {
        let s = store_of(&[("m,k=a\"b\\c\nd\\,e", 1, &[("f", V::I(1))])]);
        let text = render(&s, &[]);
        assert_eq!(samples(&text), vec![r#"m_f{k="a\"b\\c\nd,e"} 1"#]);
    }

    #[test]
    fn escaped_names_are_unescaped_before_sanitising() {
        let s = store_of(&[(r"my\ m\,x,t\ k=v\ 1", 1, &[(r"f\=g", V::I(1))])]);
        let text = render(&s, &[]);
        assert_eq!(samples(&text), vec![r#"my_m_x_f_g{t_k="v 1"} 1"#]);
        assert!(text.contains("of field \"f=g\" of measurement \"my m,x\""));
    }

    #[test]
    fn value_formats() {
        let s = store_of(&[(
            "m",
            1,
            &[
                ("b1", V::B(true)),
                ("b0", V::B(false)),
                ("i", V::I(i64::MIN)),
                ("u", V::U(u64::MAX)),
                ("neg", V::F(-0.25)),
                ("big", V::F(1e22)),
                ("small", V::F(-1.5e-7)),
                ("huge", V::F(f64::MAX)),
                ("sixteen", V::F(9999999999999998.0)),
                ("whole", V::F(3.0)),
            ],
        )]);
        let text = render(&s, &[]);
        assert_eq!(
            samples(&text),
            vec![
                "m_b0 0",
                "m_b1 1",
                "m_big 1e22",
                "m_huge 1.7976931348623157e308",
                "m_i -9223372036854775808",
                "m_neg -0.25",
                "m_sixteen 9999999999999998",
                "m_small -1.5e-7",
                "m_u 18446744073709551615",
                "m_whole 3",
            ]
        );
        assert!(!text.contains(" 1718"), "no timestamps");
    }

    #[test]
    fn strings_and_non_finite_not_exported() {
        let s = store_of(&[
            (
                "m",
                1,
                &[("s", V::S("x")), ("n", V::F(1.0)), ("nan", V::F(f64::NAN))],
            ),
            (
                "m",
                2,
                &[("n", V::S("now a string")), ("inf", V::F(f64::INFINITY))],
            ),
            ("onlystr", 1, &[("s", V::S("x"))]),
        ]);
        let text = render(&s, &[]);
        assert_eq!(text, "");
        let s = store_of(&[
            ("m", 2, &[("n", V::S("str"))]),
            ("m", 1, &[("n", V::F(1.0))]),
            ("m", 3, &[("x", V::F(1.0))]),
        ]);
        assert_eq!(samples(&render(&s, &[])), vec!["m_x 1"]);
    }

    #[test]
    fn colliding_measurements_form_one_family() {
        let s = store_of(&[
            ("a.b,h=1", 1, &[("f", V::I(2))]),
            ("zz", 1, &[("f", V::I(0))]),
            ("a-b,h=1", 1, &[("f", V::I(1))]),
            ("a-b,h=2", 1, &[("f", V::I(3))]),
            ("a.b,h=3", 1, &[("f", V::I(4))]),
            ("a,h=9", 1, &[("b_f", V::I(5))]),
        ]);
        let text = render(&s, &[]);
        assert_eq!(text.matches("# TYPE a_b_f gauge").count(), 1);
        assert_eq!(text.matches("# HELP a_b_f ").count(), 1);
        // `a-b` sorts before `a.b`, so h=1 keeps the `a-b` sample (value 1).
        assert_eq!(
            samples(&text),
            vec![
                r#"a_b_f{h="1"} 1"#,
                r#"a_b_f{h="2"} 3"#,
                r#"a_b_f{h="3"} 4"#,
                r#"a_b_f{h="9"} 5"#,
                "zz_f 0",
            ]
        );
    }

    #[test]
    fn duplicate_label_sets_from_tag_sanitising() {
        let s = store_of(&[
            ("m,a.b=1", 1, &[("f", V::I(1))]),
            ("m,a-b=1", 1, &[("f", V::I(2))]),
            ("m,a:b=1", 1, &[("f", V::I(3))]),
        ]);
        // Same measurement: ties broken by original key; `m,a-b=1` sorts first.
        assert_eq!(samples(&render(&s, &[])), vec![r#"m_f{a_b="1"} 2"#]);
    }

    #[test]
    fn colliding_tags_keep_first_original_key() {
        let s = store_of(&[(
            "m,a-b=1,a.b=2,a_b=3,z=4",
            1,
            &[("f", V::I(1)), ("g", V::I(2))],
        )]);
        let text = render(&s, &[]);
        assert_eq!(
            samples(&text),
            vec![r#"m_f{a_b="1",z="4"} 1"#, r#"m_g{a_b="1",z="4"} 2"#]
        );
        assert_eq!(s.label_collisions(), 4);
        render(&s, &[]);
        assert_eq!(s.label_collisions(), 4);
    }

    #[test]
    fn reserved_and_numeric_tag_keys() {
        let s = store_of(&[("m,1x=a,__name__=b,__x=c,tag__x=d", 1, &[("f", V::I(1))])]);
        // `__x` and `tag__x` collide on `tag__x`; `__x` sorts first and wins.
        assert_eq!(
            samples(&render(&s, &[])),
            vec![r#"m_f{_1x="a",tag__name__="b",tag__x="c"} 1"#]
        );
        assert_eq!(s.label_collisions(), 1);
    }

    #[test]
    fn empty_tag_values_are_omitted() {
        let s = store_of(&[("m,a=,b=1", 1, &[("f", V::I(1))])]);
        assert_eq!(samples(&render(&s, &[])), vec![r#"m_f{b="1"} 1"#]);
        assert_eq!(s.label_collisions(), 0);
    }

    #[test]
    fn user_family_never_shadows_own() {
        let s = store_of(&[("metricstream_points", 1, &[("total", V::I(1))])]);
        let own = [OwnFamily {
            name: "metricstream_points_total",
            help: "Points.",
            kind: OwnKind::Counter,
            samples: vec![(vec![], 7.0)],
        }];
        let text = render(&s, &own);
        assert!(text.contains("\n_metricstream_points_total 1\n"));
        assert!(text.contains("\nmetricstream_points_total 7\n"));
    }

    #[test]
    fn own_families_after_user_families() {
        let s = store_of(&[("zzz", 1, &[("f", V::I(1))])]);
        let own = [
            OwnFamily {
                name: "metricstream_label_collisions_total",
                help: "Tag labels left out\\dropped\nbecause of collisions.",
                kind: OwnKind::Counter,
                samples: vec![(vec![], s.label_collisions() as f64)],
            },
            OwnFamily {
                name: "metricstream_queue_depth",
                help: "Batches queued.",
                kind: OwnKind::Gauge,
                samples: vec![
                    (vec![("queue", "a\"b".to_owned())], 1.5),
                    (vec![("queue", "nan".to_owned())], f64::NAN),
                ],
            },
        ];
        let text = render(&s, &own);
        let tail = text.split_once("zzz_f 1\n").expect("user first").1;
        assert_eq!(
            tail,
            "# HELP metricstream_label_collisions_total Tag labels left out\\\\dropped\\nbecause of collisions.\n\
             # TYPE metricstream_label_collisions_total counter\n\
             metricstream_label_collisions_total 0\n\
             # HELP metricstream_queue_depth Batches queued.\n\
             # TYPE metricstream_queue_depth gauge\n\
             metricstream_queue_depth{queue=\"a\\\"b\"} 1.5\n"
        );
    }

    #[test]
    fn checker_rejects_bad_output() {
        let bad = [
            "m 1\n",
            "# HELP m h\n# TYPE m gauge\nm 1\n# HELP n h\n# TYPE n gauge\nn 1\n# TYPE m gauge\n",
            "# HELP m h\n# TYPE m gauge\n# TYPE m gauge\nm 1\n",
            "# HELP m h\n# TYPE m gauge\nm{a=\"1\"} 1\nm{a=\"1\"} 2\n",
            "# HELP m h\n# TYPE m gauge\nm{__a=\"1\"} 1\n",
            "# HELP m h\n# TYPE m gauge\nm NaN\n",
            "# HELP m h\n# TYPE m gauge\nm{a=\"\\x\"} 1\n",
            "# HELP m h\n# TYPE m gauge\nm 1 123\n",
        ];
        for b in bad {
            assert!(check_exposition(b).is_err(), "{b:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn floats_round_trip(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let mut out = Vec::new();
            write_f64(&mut out, f);
            let text = String::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(text.len() <= 26, "{}", text);
            prop_assert_eq!(text.parse::<f64>().ok(), Some(f));
        }

        #[test]
        fn arbitrary_stores_render_valid_exposition(
            points in prop::collection::vec(raw_point(), 0..40),
            max_series in 0usize..60,
        ) {
            let s = arbitrary_store(&points, max_series);
            let own = [OwnFamily {
                name: "metricstream_series",
                help: "Series held.",
                kind: OwnKind::Gauge,
                samples: vec![(vec![], s.series_count() as f64)],
            }];
            let mut out = Vec::new();
            render_metrics(&s, &own, &mut out);
            let text = String::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let n = check_exposition(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert!(n >= 1);
            prop_assert!(n <= s.series_count() + 1);
            // Deterministic: a second render is byte-identical.
            let mut again = Vec::new();
            render_metrics(&s, &own, &mut again);
            prop_assert_eq!(text.as_bytes(), &again[..]);
            // Families written straight from the keys say exactly what collecting,
            // sorting and de-duplicating every sample says (lines compared as sets).
            let mut reference = Vec::new();
            let mut r = MetricsRender::new(&mut reference);
            r.collect_all = true;
            loop {
                let done = r.step(&s);
                r.unlocked();
                if done {
                    break;
                }
            }
            let _ = r.finish(&own);
            let mut want: Vec<&str> = std::str::from_utf8(&reference).unwrap_or("").lines().collect();
            let mut got: Vec<&str> = text.lines().collect();
            want.sort_unstable();
            got.sort_unstable();
            prop_assert_eq!(got, want);
        }
    }
}
