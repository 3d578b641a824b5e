//! The series store: the aggregator thread's map from canonical series key to the running
//! aggregates of every field seen under that key, and the read-side views of it.
//!
//! It owns the product's series contract (what `count`/`sum`/`min`/`max`/`last` mean, the
//! `--max-series` limit, counting of tag labels lost to sanitisation collisions) and the
//! line-protocol unescaping of stored names.
//!
//! Layout (docs/architecture.md, "The series store"): a series *group* (one canonical key,
//! with the aggregates of each of its fields) lives in a slot of a chunked arena
//! ([`Slots`]) and never moves; the hash table maps the key's hash to the slot number (4
//! bytes a bucket, so the table's empty buckets cost little). A group keeps its key as one
//! boxed byte string and its first field inline (more spill to the heap); a field's name
//! is a `u32` into an [`Interner`] shared by every series. Each *measurement* keeps the
//! slot numbers of its groups and which fields occur under it, so `/metrics` can write one
//! family after another by walking them, without sorting or copying the store. Applying a
//! point is one hash lookup plus a few comparisons and never allocates unless it creates
//! a series (or replaces a string `last` value with one of a different length). Each
//! series also keeps the wall-clock second of its last accepted write, which the
//! `--series-ttl` sweep ([`SeriesStore::expire_step`], a bounded slice of the arena per
//! call) and `DELETE /series` ([`SeriesStore::delete`]) remove series by.
//!
//! Readers that release the store's lock between slices register themselves
//! ([`SeriesStore::begin_read`]); while one is registered, ids they may have noted (field
//! names, measurements, positions in a measurement's list) are not reused or moved.

use std::borrow::Cow;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use crate::ingest::batch::{Batch, FieldRec, Value};
use crate::ingest::lifecycle::Selector;
use crate::ingest::slots::{Interner, Slots};

/// Bytes a backslash escapes inside a measurement name.
const MEASUREMENT_ESCAPES: &[u8] = b", ";
/// Bytes a backslash escapes inside a tag key, tag value or field key.
const KEY_ESCAPES: &[u8] = b",= ";

/// Counts returned by [`SeriesStore::apply`] for the server's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Every point taken from the batch, whether or not any of its fields was kept.
    pub points_applied: u64,
    /// Points that lost at least one field value because it would have created a series
    /// past `--max-series`.
    pub points_dropped_series_limit: u64,
}

/// The most recent value of a series, in the type it arrived with.
#[derive(Clone, Debug, PartialEq)]
pub enum LastValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    /// Raw (unescaped) string content; may not be valid UTF-8. Boxed twice so the enum
    /// stays two words: strings are the rare case.
    Str(Box<Box<[u8]>>),
}

impl LastValue {
    /// The value as a Prometheus gauge would hold it: `None` for strings.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            LastValue::Float(f) => Some(f),
            LastValue::Int(i) => Some(i as f64),
            LastValue::UInt(u) => Some(u as f64),
            LastValue::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            LastValue::Str(_) => None,
        }
    }
}

/// Aggregates of one series (one field under one series key). 64 bytes.
#[derive(Clone, Debug)]
pub struct FieldAgg {
    count: u64,
    sum: f64,
    /// `+inf` / `-inf` until a numeric value arrives; `min <= max` means "has numeric".
    min: f64,
    max: f64,
    last_timestamp_ns: i64,
    last: LastValue,
    /// Field key (escaped as received), as an id of the store's name table.
    name: u32,
    /// Wall-clock second of the last write applied to it (receive time, not the point's
    /// timestamp): what `--series-ttl` measures.
    last_write_s: u32,
}

impl FieldAgg {
    fn new(name: u32) -> Self {
        FieldAgg {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last_timestamp_ns: i64::MIN,
            last: LastValue::Bool(false),
            name,
            last_write_s: 0,
        }
    }

    #[inline]
    fn update(&mut self, value: Value, batch: &Batch, timestamp_ns: i64) {
        self.count += 1;
        self.last_write_s = batch.received_s;
        let numeric = match value {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        };
        if let Some(x) = numeric {
            self.sum += x;
            if x < self.min {
                self.min = x;
            }
            if x > self.max {
                self.max = x;
            }
        }
        // Equal timestamps: the later-applied value wins, as in InfluxDB.
        if timestamp_ns >= self.last_timestamp_ns {
            self.last_timestamp_ns = timestamp_ns;
            self.last = match value {
                Value::Float(f) => LastValue::Float(f),
                Value::Int(i) => LastValue::Int(i),
                Value::UInt(u) => LastValue::UInt(u),
                Value::Bool(b) => LastValue::Bool(b),
                Value::Str(span) => {
                    let s = batch.bytes(span);
                    if let LastValue::Str(old) = &mut self.last
                        && old.len() == s.len()
                    {
                        old.copy_from_slice(s);
                        return;
                    }
                    LastValue::Str(Box::new(s.into()))
                }
            };
        }
    }

    /// The id of its name in the store's name table (see [`FieldRef::escaped_name`]).
    pub fn name_id(&self) -> u32 {
        self.name
    }

    /// Values applied, of any type.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether any numeric (float, integer, unsigned, boolean) value was applied.
    pub fn has_numeric(&self) -> bool {
        self.min <= self.max
    }

    /// Sum of the numeric values (booleans as 0/1); `None` if there were none.
    pub fn sum(&self) -> Option<f64> {
        self.has_numeric().then_some(self.sum)
    }

    pub fn min(&self) -> Option<f64> {
        self.has_numeric().then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        self.has_numeric().then_some(self.max)
    }

    /// The value with the greatest timestamp (ties: the later-applied one).
    pub fn last(&self) -> &LastValue {
        &self.last
    }

    pub fn last_timestamp_ns(&self) -> i64 {
        self.last_timestamp_ns
    }

    /// Wall-clock second (Unix) of the last write applied.
    pub fn last_write_unix(&self) -> u32 {
        self.last_write_s
    }

    /// Not written for more than `ttl_s` seconds at `now_s`. Strictly more: last-write
    /// times are whole seconds rounded down, so a series never goes early.
    fn expired(&self, now_s: u32, ttl_s: u32) -> bool {
        now_s.saturating_sub(self.last_write_s) > ttl_s
    }
}

/// One field of a group as readers see it: its aggregates (through `Deref`) and its name.
#[derive(Clone, Copy)]
pub struct FieldRef<'a> {
    agg: &'a FieldAgg,
    escaped: &'a [u8],
}

impl<'a> FieldRef<'a> {
    /// Field key as received (escaped).
    pub fn escaped_name(&self) -> &'a [u8] {
        self.escaped
    }

    /// Field key with line-protocol escapes resolved.
    pub fn name(&self) -> Cow<'a, [u8]> {
        unescape_key(self.escaped)
    }

    /// The aggregates, borrowed from the store.
    pub fn agg(&self) -> &'a FieldAgg {
        self.agg
    }
}

impl std::ops::Deref for FieldRef<'_> {
    type Target = FieldAgg;
    fn deref(&self) -> &FieldAgg {
        self.agg
    }
}

/// The fields of one group, in the order they were first seen.
#[derive(Clone, Copy)]
pub struct FieldList<'a> {
    aggs: &'a [FieldAgg],
    names: &'a Interner,
}

impl<'a> FieldList<'a> {
    pub fn iter(self) -> impl Iterator<Item = FieldRef<'a>> + 'a {
        let names = self.names;
        self.aggs.iter().map(move |agg| FieldRef {
            agg,
            escaped: names.get(agg.name),
        })
    }

    pub fn len(&self) -> usize {
        self.aggs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aggs.is_empty()
    }

    /// The field with this name id, if the group has it.
    pub fn by_id(&self, name: u32) -> Option<&'a FieldAgg> {
        self.aggs.iter().find(|f| f.name == name)
    }
}

impl<'a> IntoIterator for FieldList<'a> {
    type Item = FieldRef<'a>;
    type IntoIter = Box<dyn Iterator<Item = FieldRef<'a>> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<usize> for FieldList<'_> {
    type Output = FieldAgg;
    fn index(&self, i: usize) -> &FieldAgg {
        &self.aggs[i]
    }
}

/// A group's fields: the first inline (most series have one field), more on the heap.
type Fields = SmallVec<[FieldAgg; 1]>;

/// All series sharing one canonical key.
struct Group {
    key: Box<[u8]>,
    fields: Fields,
    /// Its measurement, and its position in that measurement's member list.
    meas: u32,
    pos: u32,
    /// Tags of this key that lose their label to a sanitisation collision (fixed per key).
    dropped_labels: u32,
    /// Its tags are their own labels: see [`plain_labels`].
    plain: bool,
}

/// A member list entry whose group left (see [`SeriesStore::begin_read`]).
const HOLE: u32 = u32::MAX;

/// The groups of one measurement (escaped name, as in the keys), by slot number, and the
/// fields that occur among them.
struct Measurement {
    name: Box<[u8]>,
    /// Slots of its groups, in the order they were created; [`HOLE`] where one left.
    members: Vec<u32>,
    live: u32,
    holes: u32,
    /// `(field name id, groups that have it)`.
    fields: Vec<(u32, u32)>,
    /// Groups that are not [`Group::plain`].
    unplain: u32,
}

/// An unescaped `(tag key, tag value)` pair.
pub use crate::names::Tag;

/// One series group as the renderers see it.
pub struct GroupView<'a> {
    /// The canonical key as received (escaped measurement, `,k=v` tags).
    pub key: &'a [u8],
    /// Measurement, unescaped.
    pub measurement: Cow<'a, [u8]>,
    /// Tags, unescaped, sorted by unescaped key bytes.
    pub tags: Vec<Tag<'a>>,
    pub fields: FieldList<'a>,
}

/// A group reached through its measurement ([`SeriesStore::visit_members`]), before its
/// key is parsed.
#[derive(Clone, Copy)]
pub struct MemberRef<'a> {
    group: &'a Group,
    names: &'a Interner,
}

impl<'a> MemberRef<'a> {
    /// The canonical key as received.
    pub fn key(&self) -> &'a [u8] {
        &self.group.key
    }

    /// Whether its tags are their own labels, as [`plain_labels`] says of its key.
    pub fn plain(&self) -> bool {
        self.group.plain
    }

    pub fn fields(&self) -> FieldList<'a> {
        FieldList {
            aggs: &self.group.fields,
            names: self.names,
        }
    }

    pub fn view(&self) -> GroupView<'a> {
        view_of(self.group, self.names)
    }
}

/// A `(measurement, field)` that occurs in the store: what `/metrics` renders a family
/// from ([`SeriesStore::pairs`]).
#[derive(Clone, Copy, Debug)]
pub struct PairRef<'a> {
    /// Measurement id ([`SeriesStore::visit_members`]) and field name id.
    pub meas: u32,
    pub field: u32,
    /// Escaped names, as in the keys.
    pub measurement: &'a [u8],
    pub field_name: &'a [u8],
    /// Every group of the measurement is [`plain_labels`].
    pub plain: bool,
    /// Distinct fields under the measurement.
    pub width: usize,
}

/// The series map. Not internally synchronised: the server wraps it in a `Mutex` and the
/// aggregator applies a whole batch per lock acquisition.
pub struct SeriesStore {
    /// Group slots, by the hash of their key.
    table: HashTable<u32>,
    groups: Slots<Group>,
    measurements: Slots<Measurement>,
    /// Measurement slots, by the hash of their name.
    meas_ids: HashTable<u32>,
    names: Interner,
    hasher: DefaultHashBuilder,
    max_series: usize,
    series_count: usize,
    label_collisions: u64,
    /// Readers registered by [`SeriesStore::begin_read`].
    readers: u32,
    /// Measurements that lost members while read: removed or compacted at the last
    /// reader's end.
    touched_while_read: Vec<u32>,
}

impl SeriesStore {
    pub fn new(max_series: usize) -> Self {
        SeriesStore {
            table: HashTable::new(),
            groups: Slots::default(),
            measurements: Slots::default(),
            meas_ids: HashTable::new(),
            names: Interner::default(),
            hasher: DefaultHashBuilder::default(),
            max_series,
            series_count: 0,
            label_collisions: 0,
            readers: 0,
            touched_while_read: Vec::new(),
        }
    }

    /// Applies every point of the batch. Returns counts for the server's stats.
    pub fn apply(&mut self, batch: &Batch) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        for point in &batch.points {
            outcome.points_applied += 1;
            let fields = batch.fields_of(point);
            if fields.is_empty() {
                continue;
            }
            let key = batch.bytes(point.key);
            let ts = point.timestamp_ns;
            let hash = self.hasher.hash_one(key);
            let groups = &self.groups;
            let found = self
                .table
                .find(hash, |&s| groups.get(s).is_some_and(|g| *g.key == *key))
                .copied();
            let mut limits = Limits {
                series_count: &mut self.series_count,
                max_series: self.max_series,
                label_collisions: &mut self.label_collisions,
            };
            let dropped = match found {
                Some(slot) => match self.groups.get_mut(slot) {
                    Some(group) => apply_fields(
                        group,
                        &mut self.measurements,
                        &mut self.names,
                        (fields, batch, ts),
                        &mut limits,
                    ),
                    None => false,
                },
                None if *limits.series_count >= limits.max_series => true,
                None => self.create(hash, key, fields, batch, ts),
            };
            if dropped {
                outcome.points_dropped_series_limit += 1;
            }
        }
        outcome
    }

    /// A new group for `key` with the point's fields (as many as the limit lets in).
    #[cold]
    fn create(
        &mut self,
        hash: u64,
        key: &[u8],
        fields: &[FieldRec],
        batch: &Batch,
        ts: i64,
    ) -> bool {
        let (_, tags) = parse_key(key);
        let dropped_labels = crate::names::resolve_labels(&tags).1.min(u32::MAX as usize) as u32;
        drop(tags);
        let meas = self.measurement_id(escaped_measurement(key));
        let mut group = Group {
            key: key.into(),
            fields: Fields::new(),
            meas,
            pos: 0,
            dropped_labels,
            plain: plain_labels(key),
        };
        let mut limits = Limits {
            series_count: &mut self.series_count,
            max_series: self.max_series,
            label_collisions: &mut self.label_collisions,
        };
        let dropped = apply_fields(
            &mut group,
            &mut self.measurements,
            &mut self.names,
            (fields, batch, ts),
            &mut limits,
        );
        if group.fields.is_empty() {
            self.leave_measurement(meas, None);
        } else {
            self.insert_group(hash, group);
        }
        dropped
    }

    /// The id of the measurement named `name` (escaped), added if new.
    fn measurement_id(&mut self, name: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(name);
        let ms = &self.measurements;
        if let Some(&id) = self
            .meas_ids
            .find(hash, |&m| ms.get(m).is_some_and(|m| *m.name == *name))
        {
            return id;
        }
        let id = self.measurements.insert(Measurement {
            name: name.into(),
            members: Vec::new(),
            live: 0,
            holes: 0,
            fields: Vec::new(),
            unplain: 0,
        });
        let (ms, hasher) = (&self.measurements, &self.hasher);
        self.meas_ids.insert_unique(hash, id, |&m| {
            hasher.hash_one(ms.get(m).map_or(&[][..], |m| &m.name))
        });
        id
    }

    /// Puts a group (its fields' names acquired and noted in its measurement already) in
    /// the arena, the hash table and its measurement's member list.
    fn insert_group(&mut self, hash: u64, mut group: Group) {
        let meas = group.meas;
        let plain = group.plain;
        let Some(m) = self.measurements.get_mut(meas) else {
            return;
        };
        group.pos = m.members.len() as u32;
        let slot = self.groups.insert(group);
        m.members.push(slot);
        m.live += 1;
        if !plain {
            m.unplain += 1;
        }
        let (groups, hasher) = (&self.groups, &self.hasher);
        self.table.insert_unique(hash, slot, |&s| {
            hasher.hash_one(groups.get(s).map_or(&[][..], |g| &g.key))
        });
    }

    /// A group left its measurement (`pos` in the member list, `None` if it never joined).
    fn leave_measurement(&mut self, meas: u32, left: Option<(u32, bool)>) {
        let Some(m) = self.measurements.get_mut(meas) else {
            return;
        };
        if let Some((pos, plain)) = left {
            if let Some(entry) = m.members.get_mut(pos as usize) {
                *entry = HOLE;
            }
            m.holes += 1;
            m.live -= 1;
            if !plain {
                m.unplain -= 1;
            }
        }
        if self.readers > 0 {
            self.touched_while_read.push(meas);
            return;
        }
        self.tidy_measurement(meas);
    }

    /// With no reader registered: removes an empty measurement, or compacts a member list
    /// that is more than half holes.
    fn tidy_measurement(&mut self, meas: u32) {
        let Some(m) = self.measurements.get_mut(meas) else {
            return;
        };
        if m.live == 0 {
            let hash = self.hasher.hash_one(&m.name);
            if let Ok(entry) = self.meas_ids.find_entry(hash, |&id| id == meas) {
                entry.remove();
            }
            self.measurements.remove(meas);
            return;
        }
        if m.holes > 0 && m.holes as usize * 2 >= m.members.len() {
            let mut kept = 0usize;
            for read in 0..m.members.len() {
                let slot = m.members[read];
                if slot == HOLE {
                    continue;
                }
                m.members[kept] = slot;
                if let Some(g) = self.groups.get_mut(slot) {
                    g.pos = kept as u32;
                }
                kept += 1;
            }
            m.members.truncate(kept);
            if m.members.capacity() > 2 * kept + 16 {
                m.members.shrink_to_fit();
            }
            m.holes = 0;
        }
    }

    /// Registers a reader that will release the store's lock between slices: until
    /// [`SeriesStore::end_read`], name and measurement ids stay valid and member lists
    /// keep their positions (a group that leaves leaves a hole).
    pub fn begin_read(&mut self) {
        self.readers += 1;
        self.names.hold(true);
    }

    /// The end of a read begun with [`SeriesStore::begin_read`]; the last one tidies up
    /// what was kept for the readers.
    pub fn end_read(&mut self) {
        self.readers = self.readers.saturating_sub(1);
        if self.readers > 0 {
            return;
        }
        self.names.hold(false);
        self.names.reclaim();
        let mut touched = std::mem::take(&mut self.touched_while_read);
        touched.sort_unstable();
        touched.dedup();
        for meas in touched {
            self.tidy_measurement(meas);
        }
    }

    /// Removes the group in `slot` from the table, its measurement and the arena; returns
    /// how many series (fields) it held.
    fn remove_group(&mut self, slot: u32) -> u64 {
        let Some(g) = self.groups.remove(slot) else {
            return 0;
        };
        let hash = self.hasher.hash_one(&g.key);
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        for f in &g.fields {
            forget_field(&mut self.measurements, &mut self.names, g.meas, f.name);
        }
        self.leave_measurement(g.meas, Some((g.pos, g.plain)));
        g.fields.len() as u64
    }

    /// Removes the fields of the group in `slot` for which `gone` says so (and the group,
    /// if none is left); returns how many.
    fn remove_fields(&mut self, slot: u32, mut gone: impl FnMut(&FieldAgg, &[u8]) -> bool) -> u64 {
        let Some(g) = self.groups.get_mut(slot) else {
            return 0;
        };
        let names = &self.names;
        let mut removed: SmallVec<[u32; 4]> = SmallVec::new();
        g.fields.retain(|f| {
            let go = gone(f, names.get(f.name));
            if go {
                removed.push(f.name);
            }
            !go
        });
        let (meas, empty) = (g.meas, g.fields.is_empty());
        for &name in &removed {
            forget_field(&mut self.measurements, &mut self.names, meas, name);
        }
        if empty {
            self.remove_group(slot);
        }
        removed.len() as u64
    }

    /// Number of (series key, field) pairs held.
    pub fn series_count(&self) -> usize {
        self.series_count
    }

    /// Number of distinct series keys held.
    pub fn group_count(&self) -> usize {
        self.groups.live()
    }

    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// Tag labels left out of the exposition because another tag of the same series
    /// sanitised to the same label name; counted once per series ((key, field) pair) when
    /// the series is created, so the figure does not depend on how often `/metrics` is read.
    pub fn label_collisions(&self) -> u64 {
        self.label_collisions
    }

    /// Removes every series matching `selector` (nothing for a selector without a
    /// condition); returns how many. Visits the whole store: deletes are rare requests.
    pub fn delete(&mut self, selector: &Selector) -> u64 {
        if selector.is_empty() {
            return 0;
        }
        let mut removed = 0u64;
        for slot in 0..self.groups.len() as u32 {
            let Some(g) = self.groups.get(slot) else {
                continue;
            };
            let (measurement, tags) = parse_key(&g.key);
            if !selector.matches_group(&measurement, &tags) {
                continue;
            }
            removed +=
                self.remove_fields(slot, |_, name| selector.matches_field(&unescape_key(name)));
        }
        self.series_count -= removed as usize;
        removed
    }

    /// Removes every series not written for more than `ttl_s` seconds at `now_s` (one
    /// whole pass: at start-up, before the server listens); returns how many.
    pub fn expire_all(&mut self, now_s: u32, ttl_s: u32) -> u64 {
        let mut cursor = 0;
        self.expire_step(now_s, ttl_s, &mut cursor, usize::MAX)
    }

    /// One slice of the expiry sweep: visits up to `visit` slots of the arena from
    /// `*cursor`, removes the series not written for more than `ttl_s` seconds at `now_s`,
    /// and moves the cursor on (back to 0 after the last slot). Returns how many series
    /// went. Groups never move, so one pass sees every group that was there throughout.
    pub fn expire_step(&mut self, now_s: u32, ttl_s: u32, cursor: &mut usize, visit: usize) -> u64 {
        let slots = self.groups.len();
        let start = if *cursor >= slots { 0 } else { *cursor };
        let end = start.saturating_add(visit).min(slots);
        let mut removed = 0u64;
        for slot in start..end {
            let slot = slot as u32;
            if self
                .groups
                .get(slot)
                .is_some_and(|g| g.fields.iter().any(|f| f.expired(now_s, ttl_s)))
            {
                removed += self.remove_fields(slot, |f, _| f.expired(now_s, ttl_s));
            }
        }
        *cursor = if end >= slots { 0 } else { end };
        self.series_count -= removed as usize;
        removed
    }

    /// Slots of the arena (what [`SeriesStore::expire_step`] walks).
    pub fn slots(&self) -> usize {
        self.groups.len()
    }

    /// Every group, in slot order, with names unescaped for rendering.
    pub fn groups(&self) -> impl Iterator<Item = GroupView<'_>> + '_ {
        self.groups.iter().map(|(_, g)| view_of(g, &self.names))
    }

    /// Visits the groups of the next slots after `*cursor`, stopping after `max_groups`
    /// groups, so a reader can release the lock between slices; returns whether every
    /// slot was visited. Groups never move: between two slices, a group present for the
    /// whole read is visited exactly once.
    pub fn read_slice(
        &self,
        cursor: &mut usize,
        max_groups: usize,
        mut visit: impl FnMut(GroupView<'_>),
    ) -> bool {
        let slots = self.groups.len();
        let mut visited = 0;
        while *cursor < slots {
            if visited == max_groups {
                return false;
            }
            if let Some(g) = self.groups.get(*cursor as u32) {
                visit(view_of(g, &self.names));
                visited += 1;
            }
            *cursor += 1;
        }
        true
    }

    /// Every `(measurement, field)` that occurs, in no particular order.
    pub fn pairs(&self) -> impl Iterator<Item = PairRef<'_>> + '_ {
        self.measurements.iter().flat_map(move |(meas, m)| {
            m.fields.iter().map(move |&(field, _)| PairRef {
                meas,
                field,
                measurement: &m.name,
                field_name: self.names.get(field),
                plain: m.unplain == 0,
                width: m.fields.len(),
            })
        })
    }

    /// Visits the groups of measurement `meas` in its member order from position `*pos`,
    /// up to `max_groups` of them; returns whether the list was walked to its end. Under
    /// [`SeriesStore::begin_read`] positions stay put between calls, so a group present
    /// for the whole read is visited exactly once.
    pub fn visit_members(
        &self,
        meas: u32,
        pos: &mut usize,
        max_groups: usize,
        mut visit: impl FnMut(MemberRef<'_>),
    ) -> bool {
        let Some(m) = self.measurements.get(meas) else {
            return true;
        };
        let mut visited = 0;
        while let Some(&slot) = m.members.get(*pos) {
            if visited == max_groups {
                return false;
            }
            *pos += 1;
            if let Some(group) = self.groups.get(slot) {
                visit(MemberRef {
                    group,
                    names: &self.names,
                });
                visited += 1;
            }
        }
        true
    }
}

fn view_of<'a>(g: &'a Group, names: &'a Interner) -> GroupView<'a> {
    let (measurement, tags) = parse_key(&g.key);
    GroupView {
        key: &g.key,
        measurement,
        tags,
        fields: FieldList {
            aggs: &g.fields,
            names,
        },
    }
}

/// Whether the tags of a canonical key are their own Prometheus labels: no escapes, valid
/// UTF-8, every tag `key=value` with a non-empty value, keys strictly ascending and
/// already valid label names (so nothing is renamed, dropped or merged). Two plain keys of
/// one measurement then always have different label sets, so `/metrics` can write their
/// samples straight from the keys, without collecting and comparing them.
pub fn plain_labels(key: &[u8]) -> bool {
    if key.contains(&b'\\') || std::str::from_utf8(key).is_err() {
        return false;
    }
    let mut prev: Option<&[u8]> = None;
    for pair in key.split(|&b| b == b',').skip(1) {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        if v.is_empty()
            || prev.is_some_and(|p| p >= k)
            || !matches!(crate::names::label_name(k), Cow::Borrowed(_))
        {
            return false;
        }
        prev = Some(k);
    }
    true
}

/// One field fewer under `meas` (its count of groups with `name`), and one reference
/// fewer to the name.
fn forget_field(measurements: &mut Slots<Measurement>, names: &mut Interner, meas: u32, name: u32) {
    if let Some(m) = measurements.get_mut(meas)
        && let Some(i) = m.fields.iter().position(|&(n, _)| n == name)
    {
        m.fields[i].1 -= 1;
        if m.fields[i].1 == 0 {
            m.fields.swap_remove(i);
        }
    }
    names.release(name);
}

/// One more group with field `name` under `meas`.
fn note_field(measurements: &mut Slots<Measurement>, meas: u32, name: u32) {
    if let Some(m) = measurements.get_mut(meas) {
        match m.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => m.fields.push((name, 1)),
        }
    }
}
/// Why snapshot bytes could not be decoded into a [`SeriesStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDecodeError(pub &'static str);

impl std::fmt::Display for StoreDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StoreDecodeError {}

/// The two layouts of [`SeriesStore::encode_into`]: 2 adds each series' last-write time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreFormat {
    V1,
    V2,
}

const LAST_FLOAT: u8 = 1;
const LAST_INT: u8 = 2;
const LAST_UINT: u8 = 3;
const LAST_BOOL: u8 = 4;
const LAST_STR: u8 = 5;

impl SeriesStore {
    /// Appends every aggregate, exactly (floats bit for bit), for a snapshot (format 2):
    /// `label_collisions u64, groups u64`, then per group `key_len u32, key,
    /// dropped_labels u32, n_fields u32` and per field `name_len u32, name, count u64,
    /// sum f64, min f64, max f64, last_timestamp_ns i64, last_write_unix u32, last tag u8,
    /// last value` (8 bytes, or `len u32` + bytes for a string). Little-endian.
    /// `max_series` is configuration, not data, and is not written. Format 1 is the same
    /// without `last_write_unix`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_format(out, StoreFormat::V2);
    }

    /// Format 1, as versions before last-write times wrote it (for tests of the loader).
    #[cfg(test)]
    pub(crate) fn encode_v1_into(&self, out: &mut Vec<u8>) {
        self.encode_format(out, StoreFormat::V1);
    }

    fn encode_format(&self, out: &mut Vec<u8>, format: StoreFormat) {
        out.extend_from_slice(&self.label_collisions.to_le_bytes());
        out.extend_from_slice(&(self.groups.live() as u64).to_le_bytes());
        for (_, g) in self.groups.iter() {
            out.extend_from_slice(&(g.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&g.key);
            out.extend_from_slice(&g.dropped_labels.to_le_bytes());
            out.extend_from_slice(&(g.fields.len() as u32).to_le_bytes());
            for f in &g.fields {
                let name = self.names.get(f.name);
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name);
                out.extend_from_slice(&f.count.to_le_bytes());
                out.extend_from_slice(&f.sum.to_bits().to_le_bytes());
                out.extend_from_slice(&f.min.to_bits().to_le_bytes());
                out.extend_from_slice(&f.max.to_bits().to_le_bytes());
                out.extend_from_slice(&f.last_timestamp_ns.to_le_bytes());
                if format == StoreFormat::V2 {
                    out.extend_from_slice(&f.last_write_s.to_le_bytes());
                }
                let (tag, v) = match &f.last {
                    LastValue::Float(x) => (LAST_FLOAT, x.to_bits()),
                    LastValue::Int(i) => (LAST_INT, *i as u64),
                    LastValue::UInt(u) => (LAST_UINT, *u),
                    LastValue::Bool(b) => (LAST_BOOL, u64::from(*b)),
                    LastValue::Str(s) => {
                        out.push(LAST_STR);
                        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        out.extend_from_slice(s);
                        continue;
                    }
                };
                out.push(tag);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Rebuilds a store from [`SeriesStore::encode_into`]'s bytes. Every series in the
    /// snapshot is kept even past `max_series` (they were admitted when written); the limit
    /// applies to series created afterwards. Never panics on any input.
    pub fn decode(bytes: &[u8], max_series: usize) -> Result<SeriesStore, StoreDecodeError> {
        Self::decode_format(bytes, max_series, StoreFormat::V2, 0)
    }

    /// [`SeriesStore::decode`] of format 1 (snapshots written before last-write times
    /// were kept): every series gets `load_s` as its last write, so it lives one more TTL.
    pub fn decode_v1(
        bytes: &[u8],
        max_series: usize,
        load_s: u32,
    ) -> Result<SeriesStore, StoreDecodeError> {
        Self::decode_format(bytes, max_series, StoreFormat::V1, load_s)
    }

    fn decode_format(
        bytes: &[u8],
        max_series: usize,
        format: StoreFormat,
        load_s: u32,
    ) -> Result<SeriesStore, StoreDecodeError> {
        let mut r = SnapReader { bytes, pos: 0 };
        let mut store = SeriesStore::new(max_series);
        store.label_collisions = r.u64()?;
        let groups = r.u64()?;
        for _ in 0..groups {
            let key_len = r.u32()? as usize;
            let key: Box<[u8]> = r.take(key_len)?.into();
            let dropped_labels = r.u32()?;
            let n_fields = r.u32()? as usize;
            // Bounded by what the bytes can hold, so a damaged count cannot reserve gigabytes.
            let mut fields: Vec<(&[u8], FieldAgg)> =
                Vec::with_capacity(n_fields.min(r.remaining() / 45));
            for _ in 0..n_fields {
                let name_len = r.u32()? as usize;
                let name = r.take(name_len)?;
                let count = r.u64()?;
                let sum = f64::from_bits(r.u64()?);
                let min = f64::from_bits(r.u64()?);
                let max = f64::from_bits(r.u64()?);
                let last_timestamp_ns = r.u64()? as i64;
                let last_write_s = match format {
                    StoreFormat::V2 => r.u32()?,
                    StoreFormat::V1 => load_s,
                };
                let tag = r.take(1)?[0];
                let last = match tag {
                    LAST_STR => {
                        let n = r.u32()? as usize;
                        LastValue::Str(Box::new(r.take(n)?.into()))
                    }
                    _ => {
                        let v = r.u64()?;
                        match tag {
                            LAST_FLOAT => LastValue::Float(f64::from_bits(v)),
                            LAST_INT => LastValue::Int(v as i64),
                            LAST_UINT => LastValue::UInt(v),
                            LAST_BOOL if v <= 1 => LastValue::Bool(v == 1),
                            _ => return Err(StoreDecodeError("unknown last-value type")),
                        }
                    }
                };
                if fields.iter().any(|(n, _)| *n == name) {
                    return Err(StoreDecodeError("a field listed twice in one series"));
                }
                fields.push((
                    name,
                    FieldAgg {
                        name: 0,
                        count,
                        sum,
                        min,
                        max,
                        last_timestamp_ns,
                        last,
                        last_write_s,
                    },
                ));
            }
            let hash = store.hasher.hash_one(&*key);
            let groups = &store.groups;
            if store
                .table
                .find(hash, |&s| groups.get(s).is_some_and(|g| g.key == key))
                .is_some()
            {
                return Err(StoreDecodeError("a series key listed twice"));
            }
            if fields.is_empty() {
                continue;
            }
            store.series_count += fields.len();
            let meas = store.measurement_id(escaped_measurement(&key));
            let mut group = Group {
                plain: plain_labels(&key),
                key,
                fields: Fields::with_capacity(fields.len()),
                meas,
                pos: 0,
                dropped_labels,
            };
            for (name, mut agg) in fields {
                agg.name = store.names.acquire(name);
                note_field(&mut store.measurements, meas, agg.name);
                group.fields.push(agg);
            }
            store.insert_group(hash, group);
        }
        if r.remaining() != 0 {
            return Err(StoreDecodeError("trailing bytes after the last series"));
        }
        Ok(store)
    }
}

struct SnapReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> SnapReader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreDecodeError> {
        const SHORT: StoreDecodeError = StoreDecodeError("snapshot shorter than its counts say");
        let end = self.pos.checked_add(n).ok_or(SHORT)?;
        let s = self.bytes.get(self.pos..end).ok_or(SHORT)?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, StoreDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, StoreDecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

struct Limits<'a> {
    series_count: &'a mut usize,
    max_series: usize,
    label_collisions: &'a mut u64,
}

/// Applies one point's fields (`(fields, batch, timestamp)`) to its group; returns whether
/// a field was lost to the limit. A new field takes a reference to its name and is noted
/// in the group's measurement.
#[inline(always)]
fn apply_fields(
    group: &mut Group,
    measurements: &mut Slots<Measurement>,
    names: &mut Interner,
    (fields, batch, ts): (&[FieldRec], &Batch, i64),
    limits: &mut Limits<'_>,
) -> bool {
    let mut dropped = false;
    for (i, f) in fields.iter().enumerate() {
        let name = batch.bytes(f.name);
        // Points of one series usually list their fields in the same order: try the same
        // position first, then search.
        let slot = match group.fields.get(i) {
            Some(agg) if *names.get(agg.name) == *name => Some(i),
            _ => group
                .fields
                .iter()
                .position(|agg| *names.get(agg.name) == *name),
        };
        match slot {
            Some(j) => group.fields[j].update(f.value, batch, ts),
            None if *limits.series_count < limits.max_series => {
                *limits.series_count += 1;
                *limits.label_collisions += u64::from(group.dropped_labels);
                let id = names.acquire(name);
                note_field(measurements, group.meas, id);
                let mut agg = FieldAgg::new(id);
                agg.update(f.value, batch, ts);
                group.fields.push(agg);
            }
            None => dropped = true,
        }
    }
    dropped
}

fn unescape<'a>(bytes: &'a [u8], escapable: &[u8]) -> Cow<'a, [u8]> {
    if !bytes.contains(&b'\\') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\'
            && let Some(&next) = bytes.get(i + 1)
            && escapable.contains(&next)
        {
            out.push(next);
            i += 2;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

/// Resolves `\,` and `\ ` in a measurement name; any other backslash is literal.
pub(crate) fn unescape_measurement(bytes: &[u8]) -> Cow<'_, [u8]> {
    unescape(bytes, MEASUREMENT_ESCAPES)
}

/// Resolves `\,`, `\=` and `\ ` in a tag key, tag value or field key.
pub(crate) fn unescape_key(bytes: &[u8]) -> Cow<'_, [u8]> {
    unescape(bytes, KEY_ESCAPES)
}

/// Position of the first `stop` byte in `bytes` not escaped under `escapable`.
fn find_unescaped(bytes: &[u8], stop: u8, escapable: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && bytes.get(i + 1).is_some_and(|n| escapable.contains(n)) {
            i += 2;
            continue;
        }
        if b == stop {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The escaped measurement at the start of a canonical series key.
pub(crate) fn escaped_measurement(key: &[u8]) -> &[u8] {
    match find_unescaped(key, b',', MEASUREMENT_ESCAPES) {
        Some(p) => &key[..p],
        None => key,
    }
}

/// Splits a canonical series key into its unescaped measurement and tags (sorted by
/// unescaped key; stable, so duplicates keep key order).
pub(crate) fn parse_key(key: &[u8]) -> (Cow<'_, [u8]>, Vec<Tag<'_>>) {
    let mut tags = Vec::new();
    if !key.contains(&b'\\') {
        // Common case: nothing escaped, so plain splits and borrowed names.
        let mut parts = key.split(|&b| b == b',');
        let measurement = parts.next().unwrap_or_default();
        for pair in parts.filter(|p| !p.is_empty()) {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(p) => (&pair[..p], &pair[p + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            tags.push((Cow::Borrowed(k), Cow::Borrowed(v)));
        }
        sort_tags(&mut tags);
        return (Cow::Borrowed(measurement), tags);
    }
    parse_escaped_key(key, tags)
}

/// [`parse_key`] for keys that contain a backslash.
fn parse_escaped_key<'k>(key: &'k [u8], mut tags: Vec<Tag<'k>>) -> (Cow<'k, [u8]>, Vec<Tag<'k>>) {
    let measurement = escaped_measurement(key);
    let mut rest = key.get(measurement.len() + 1..).unwrap_or_default();
    while !rest.is_empty() {
        let (pair, next) = match find_unescaped(rest, b',', KEY_ESCAPES) {
            Some(p) => (&rest[..p], &rest[p + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match find_unescaped(pair, b'=', KEY_ESCAPES) {
            Some(p) => (&pair[..p], &pair[p + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        tags.push((unescape_key(k), unescape_key(v)));
    }
    sort_tags(&mut tags);
    (unescape_measurement(measurement), tags)
}

/// Sorts tags by unescaped key (stable, so repeated keys keep their order in the key).
fn sort_tags(tags: &mut [Tag<'_>]) {
    if !tags.is_sorted_by(|a, b| a.0 <= b.0) {
        tags.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::ingest::batch::{Batch, FieldRec, PointRec, Value};
    use proptest::prelude::*;

    /// A field value for building test batches.
    #[derive(Clone, Copy, Debug)]
    pub enum V<'a> {
        F(f64),
        I(i64),
        U(u64),
        B(bool),
        S(&'a str),
    }

    /// Appends a point; `key` is the canonical (escaped, sorted) key, field names escaped.
    pub fn push(batch: &mut Batch, key: &str, ts: i64, fields: &[(&str, V<'_>)]) {
        let key = batch.push_bytes(key.as_bytes());
        let fields_start = batch.fields.len() as u32;
        for (name, v) in fields {
            let name = batch.push_bytes(name.as_bytes());
            let value = match *v {
                V::F(f) => Value::Float(f),
                V::I(i) => Value::Int(i),
                V::U(u) => Value::UInt(u),
                V::B(b) => Value::Bool(b),
                V::S(s) => Value::Str(batch.push_bytes(s.as_bytes())),
            };
            batch.fields.push(FieldRec { name, value });
        }
        batch.points.push(PointRec {
            key,
            timestamp_ns: ts,
            fields_start,
            fields_len: fields.len() as u32,
        });
    }

    /// `(canonical key, timestamp, fields)`.
    pub type TestPoint<'a> = (&'a str, i64, &'a [(&'a str, V<'a>)]);

    pub fn batch(points: &[TestPoint<'_>]) -> Batch {
        let mut b = Batch::default();
        for (key, ts, fields) in points {
            push(&mut b, key, *ts, fields);
        }
        b
    }

    /// Names over an alphabet of separators, escapes, unicode, digits and reserved prefixes.
    pub fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "b",
                "_",
                "-",
                ".",
                ":",
                "1",
                " ",
                "\\",
                ",",
                "=",
                "\"",
                "\n",
                "é",
                "€",
                "__",
                "metricstream_",
                "\u{fffd}",
            ]),
            0..5,
        )
        .prop_map(|parts| parts.concat())
    }

    pub fn value() -> impl Strategy<Value = V<'static>> {
        prop_oneof![
            any::<f64>().prop_map(V::F),
            any::<i64>().prop_map(V::I),
            any::<u64>().prop_map(V::U),
            any::<bool>().prop_map(V::B),
            prop::sample::select(vec!["", "x", "a\"b\\c\nd"]).prop_map(V::S),
        ]
    }

    pub type RawPoint = (
        String,
        Vec<(String, String)>,
        i64,
        Vec<(String, V<'static>)>,
    );

    pub fn raw_point() -> impl Strategy<Value = RawPoint> {
        (
            name(),
            prop::collection::vec((name(), name()), 0..4),
            -3i64..3,
            prop::collection::vec((name(), value()), 1..4),
        )
    }

    /// Builds a store from arbitrary keys: measurement, then `,k=v` per tag, unchecked, so
    /// the renderers also see keys no parser would produce.
    pub fn arbitrary_store(
        points: &[RawPoint],
        max_series: usize,
    ) -> crate::ingest::aggregator::SeriesStore {
        let mut s = crate::ingest::aggregator::SeriesStore::new(max_series);
        let mut b = Batch::default();
        for (m, tags, ts, fields) in points {
            let mut key = m.clone();
            for (k, v) in tags {
                key.push(',');
                key.push_str(k);
                key.push('=');
                key.push_str(v);
            }
            let fields: Vec<(&str, V<'_>)> = fields.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            push(&mut b, &key, *ts, &fields);
        }
        s.apply(&b);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{V, batch};
    use super::*;

    fn field<'a>(store: &'a SeriesStore, key: &str, name: &str) -> &'a FieldAgg {
        let g = store
            .groups()
            .find(|g| g.key == key.as_bytes())
            .expect("group");
        g.fields
            .iter()
            .find(|f| f.escaped_name() == name.as_bytes())
            .map(|f| f.agg())
            .expect("field")
    }

    #[test]
    fn numeric_aggregates() {
        let mut s = SeriesStore::new(100);
        let out = s.apply(&batch(&[
            ("cpu,host=a", 10, &[("v", V::F(1.5)), ("n", V::I(-3))]),
            ("cpu,host=a", 20, &[("v", V::F(-2.5)), ("n", V::I(7))]),
            ("cpu,host=a", 15, &[("v", V::F(4.0)), ("n", V::I(1))]),
        ]));
        assert_eq!(
            out,
            ApplyOutcome {
                points_applied: 3,
                points_dropped_series_limit: 0
            }
        );
        assert_eq!(s.series_count(), 2);
        assert_eq!(s.group_count(), 1);
        let v = field(&s, "cpu,host=a", "v");
        assert_eq!(v.count(), 3);
        assert_eq!(v.sum(), Some(3.0));
        assert_eq!(v.min(), Some(-2.5));
        assert_eq!(v.max(), Some(4.0));
        assert_eq!(v.last(), &LastValue::Float(-2.5));
        assert_eq!(v.last_timestamp_ns(), 20);
        let n = field(&s, "cpu,host=a", "n");
        assert_eq!(n.last(), &LastValue::Int(7));
        assert_eq!(n.sum(), Some(5.0));
    }

    #[test]
    fn last_keeps_native_type_exactly() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[(
            "m",
            1,
            &[
                ("u", V::U(u64::MAX)),
                ("i", V::I(i64::MIN)),
                ("b", V::B(true)),
            ],
        )]));
        assert_eq!(field(&s, "m", "u").last(), &LastValue::UInt(u64::MAX));
        assert_eq!(field(&s, "m", "i").last(), &LastValue::Int(i64::MIN));
        assert_eq!(field(&s, "m", "b").last(), &LastValue::Bool(true));
    }

    #[test]
    fn booleans_count_as_zero_one() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[
            ("m", 1, &[("b", V::B(true))]),
            ("m", 2, &[("b", V::B(false))]),
            ("m", 3, &[("b", V::B(true))]),
        ]));
        let b = field(&s, "m", "b");
        assert_eq!(
            (b.sum(), b.min(), b.max()),
            (Some(2.0), Some(0.0), Some(1.0))
        );
        assert_eq!(b.count(), 3);
    }

    #[test]
    fn strings_keep_only_count_and_last() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[
            ("m", 5, &[("s", V::S("hello"))]),
            ("m", 4, &[("s", V::S("older"))]),
            ("m", 6, &[("s", V::S("world"))]),
            ("m", 7, &[("s", V::S("longer string"))]),
        ]));
        let f = field(&s, "m", "s");
        assert_eq!(f.count(), 4);
        assert_eq!(f.sum(), None);
        assert_eq!(f.min(), None);
        assert_eq!(f.max(), None);
        assert_eq!(
            f.last(),
            &LastValue::Str(b"longer string".to_vec().into_boxed_slice().into())
        );
        assert_eq!(f.last_timestamp_ns(), 7);
    }

    fn add_series(s: &mut SeriesStore, i: usize) {
        let key = format!("m,h={i}");
        s.apply(&batch(&[(&key, 1, &[("v", V::F(1.0))])]));
    }

    /// Reads in slices of `slice` groups, adding `grow` series and removing the oldest
    /// added one between slices, as a stepped read (`SteppedReader`) does; returns the keys seen.
    fn sliced_read(s: &mut SeriesStore, slice: usize, grow: usize) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut next = 1_000_000;
        s.begin_read();
        for _ in 0..10_000 {
            if s.read_slice(&mut cursor, slice, |g| seen.push(g.key.to_vec())) {
                s.end_read();
                return seen;
            }
            for _ in 0..grow {
                add_series(s, next);
                next += 1;
            }
            if grow > 0 {
                // One series added during the read leaves again (a hole in the lists).
                s.delete(&selector_of_key(next - grow));
            }
        }
        panic!("a sliced read did not finish");
    }

    /// A selector that matches the series `add_series(_, i)` made.
    fn selector_of_key(i: usize) -> Selector {
        Selector {
            measurement: None,
            field: None,
            tags: vec![("h".into(), i.to_string())],
        }
    }

    #[test]
    fn sliced_reads_see_every_group_once_while_the_store_changes() {
        for (slice, grow) in [(1, 0), (7, 0), (7, 1), (3, 2), (50, 40), (1000, 0)] {
            let mut s = SeriesStore::new(usize::MAX);
            for i in 0..300 {
                add_series(&mut s, i);
            }
            let seen = sliced_read(&mut s, slice, grow);
            let unique: std::collections::BTreeSet<&Vec<u8>> = seen.iter().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "a group seen twice ({slice}, {grow})"
            );
            for i in 0..300 {
                assert!(
                    unique.contains(&format!("m,h={i}").into_bytes()),
                    "series {i} missed ({slice}, {grow})"
                );
            }
            if grow == 0 {
                assert_eq!(seen.len(), 300);
            }
        }
    }

    #[test]
    fn equal_timestamp_later_applied_wins() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[("m", 5, &[("v", V::F(1.0))])]));
        s.apply(&batch(&[("m", 5, &[("v", V::F(2.0))])]));
        assert_eq!(field(&s, "m", "v").last(), &LastValue::Float(2.0));
        s.apply(&batch(&[("m", 4, &[("v", V::F(3.0))])]));
        assert_eq!(field(&s, "m", "v").last(), &LastValue::Float(2.0));
        assert_eq!(field(&s, "m", "v").count(), 3);
    }

    #[test]
    fn mixed_types() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[
            ("m", 1, &[("x", V::I(10))]),
            ("m", 2, &[("x", V::F(0.5))]),
            ("m", 3, &[("x", V::S("oops"))]),
            ("m", 4, &[("x", V::U(2))]),
            ("m", 5, &[("x", V::B(true))]),
            ("m", 6, &[("x", V::S("str"))]),
        ]));
        let f = field(&s, "m", "x");
        assert_eq!(f.count(), 6);
        assert_eq!(f.sum(), Some(13.5));
        assert_eq!(f.min(), Some(0.5));
        assert_eq!(f.max(), Some(10.0));
        assert_eq!(
            f.last(),
            &LastValue::Str(b"str".to_vec().into_boxed_slice().into())
        );
        s.apply(&batch(&[("m", 7, &[("x", V::I(-1))])]));
        assert_eq!(field(&s, "m", "x").last(), &LastValue::Int(-1));
        // A string that arrives first and numerics after.
        s.apply(&batch(&[
            ("n", 1, &[("x", V::S("a"))]),
            ("n", 0, &[("x", V::F(2.0))]),
        ]));
        let f = field(&s, "n", "x");
        assert_eq!(
            (f.sum(), f.min(), f.max()),
            (Some(2.0), Some(2.0), Some(2.0))
        );
        assert_eq!(
            f.last(),
            &LastValue::Str(b"a".to_vec().into_boxed_slice().into())
        );
    }

    #[test]
    fn max_series_limit() {
        let mut s = SeriesStore::new(3);
        let out = s.apply(&batch(&[
            ("a", 1, &[("x", V::F(1.0)), ("y", V::F(1.0))]),
            // new group: x admitted (3rd series), y dropped
            ("b", 1, &[("x", V::F(1.0)), ("y", V::F(1.0))]),
            // new group entirely past the limit
            ("c", 1, &[("x", V::F(1.0))]),
            // existing series still updated, new field of an existing group dropped
            ("a", 2, &[("x", V::F(5.0)), ("z", V::F(1.0))]),
            ("b", 2, &[("x", V::F(6.0))]),
        ]));
        assert_eq!(
            out,
            ApplyOutcome {
                points_applied: 5,
                points_dropped_series_limit: 3
            }
        );
        assert_eq!(s.series_count(), 3);
        assert_eq!(s.group_count(), 2);
        assert_eq!(field(&s, "a", "x").last(), &LastValue::Float(5.0));
        assert_eq!(field(&s, "b", "x").count(), 2);
        assert!(s.groups().all(|g| g.key != b"c"));
    }

    #[test]
    fn zero_limit_and_empty_points() {
        let mut s = SeriesStore::new(0);
        let out = s.apply(&batch(&[("a", 1, &[("x", V::F(1.0))]), ("b", 1, &[])]));
        assert_eq!(out.points_applied, 2);
        assert_eq!(out.points_dropped_series_limit, 1);
        assert_eq!(s.series_count(), 0);
        assert_eq!(s.group_count(), 0);
    }

    #[test]
    fn fields_matched_in_any_order() {
        let mut s = SeriesStore::new(100);
        s.apply(&batch(&[
            ("m", 1, &[("a", V::I(1)), ("b", V::I(2)), ("c", V::I(3))]),
            ("m", 2, &[("c", V::I(30)), ("a", V::I(10))]),
            ("m", 3, &[("b", V::I(20)), ("d", V::I(4))]),
        ]));
        assert_eq!(s.series_count(), 4);
        assert_eq!(field(&s, "m", "a").last(), &LastValue::Int(10));
        assert_eq!(field(&s, "m", "b").last(), &LastValue::Int(20));
        assert_eq!(field(&s, "m", "c").last(), &LastValue::Int(30));
        assert_eq!(field(&s, "m", "d").count(), 1);
    }

    #[test]
    fn unescape_rules() {
        assert_eq!(&*unescape_measurement(br"a\,b\ c\=d\x"), br"a,b c\=d\x");
        assert_eq!(&*unescape_key(br"a\,b\ c\=d\x"), br"a,b c=d\x");
        assert_eq!(&*unescape_key(br"trailing\"), br"trailing\");
        assert_eq!(&*unescape_key(br"a\\,b"), br"a\,b");
        assert!(matches!(unescape_key(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn parse_key_splits_on_unescaped_separators() {
        let (m, tags) = parse_key(br"my\ meas\,x,a\,b=c\=d,k\ 2=v\ 2,z=");
        assert_eq!(&*m, b"my meas,x");
        let tags: Vec<(&[u8], &[u8])> = tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            tags,
            vec![
                (&b"a,b"[..], &b"c=d"[..]),
                (&b"k 2"[..], &b"v 2"[..]),
                (&b"z"[..], &b""[..])
            ]
        );
        let (m, tags) = parse_key(b"solo");
        assert_eq!(&*m, b"solo");
        assert!(tags.is_empty());
        // `\=` is not an escape in a measurement; the tag split still happens at `,`.
        let (m, tags) = parse_key(br"m\=,t=1");
        assert_eq!(&*m, br"m\=");
        assert_eq!(tags.len(), 1);
    }

    #[test]
    fn tags_sorted_by_unescaped_key() {
        // Escaped order: `a\=b` (0x5C) > `a>b`; unescaped `a=b` (0x3D) < `a>b`.
        let (_, tags) = parse_key(br"m,a>b=1,a\=b=2");
        assert_eq!(&*tags[0].0, b"a=b");
        assert_eq!(&*tags[1].0, b"a>b");
    }

    #[test]
    fn label_collisions_counted_once_per_series() {
        let mut s = SeriesStore::new(100);
        let b = batch(&[
            (
                "m,a-b=1,a.b=2,a_b=3,x=1",
                1,
                &[("f", V::F(1.0)), ("g", V::F(1.0))],
            ),
            ("m,ok=1", 1, &[("f", V::F(1.0))]),
        ]);
        s.apply(&b);
        // two labels lost, two series of that key
        assert_eq!(s.label_collisions(), 4);
        s.apply(&b);
        s.apply(&b);
        assert_eq!(s.label_collisions(), 4);
        s.apply(&batch(&[("m,a-b=1,a.b=2,a_b=3,x=1", 2, &[("h", V::I(1))])]));
        assert_eq!(s.label_collisions(), 6);
    }

    /// A batch received at `received_s`.
    fn at(received_s: u32, points: &[super::test_support::TestPoint<'_>]) -> Batch {
        let mut b = batch(points);
        b.received_s = received_s;
        b
    }

    fn keys_and_fields(s: &SeriesStore) -> Vec<String> {
        let mut v: Vec<String> = s
            .groups()
            .flat_map(|g| {
                g.fields.iter().map(move |f| {
                    format!(
                        "{} {}",
                        String::from_utf8_lossy(g.key),
                        String::from_utf8_lossy(f.escaped_name())
                    )
                })
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn last_write_is_the_receive_time_not_the_timestamp() {
        let mut s = SeriesStore::new(100);
        s.apply(&at(
            1000,
            &[("m", 5, &[("a", V::F(1.0)), ("b", V::F(1.0))])],
        ));
        s.apply(&at(1010, &[("m", 1, &[("a", V::F(2.0))])]));
        assert_eq!(field(&s, "m", "a").last_write_unix(), 1010);
        assert_eq!(field(&s, "m", "b").last_write_unix(), 1000);
        // An old timestamp still counts as a write now.
        assert_eq!(field(&s, "m", "a").last_timestamp_ns(), 5);
    }

    #[test]
    fn expiry_removes_series_not_written_for_longer_than_the_ttl() {
        let mut s = SeriesStore::new(100);
        s.apply(&at(1000, &[("old", 1, &[("v", V::F(1.0))])]));
        s.apply(&at(
            1000,
            &[("mixed", 1, &[("stale", V::F(1.0)), ("live", V::F(1.0))])],
        ));
        s.apply(&at(1050, &[("mixed", 2, &[("live", V::F(1.0))])]));
        s.apply(&at(1060, &[("new", 1, &[("v", V::F(1.0))])]));
        assert_eq!(s.series_count(), 4);
        // Exactly the TTL old: kept (times are rounded down, never early).
        assert_eq!(s.expire_all(1030, 30), 0);
        assert_eq!(s.expire_all(1031, 30), 2);
        assert_eq!(keys_and_fields(&s), ["mixed live", "new v"]);
        assert_eq!((s.series_count(), s.group_count()), (2, 2));
        // A later write starts a fresh series.
        s.apply(&at(1100, &[("old", 9, &[("v", V::F(7.0))])]));
        assert_eq!(field(&s, "old", "v").count(), 1);
        assert_eq!(s.series_count(), 3);
    }

    #[test]
    fn the_incremental_sweep_covers_the_table_in_slices() {
        let mut s = SeriesStore::new(10_000);
        for i in 0..1000 {
            let key = format!("m,host=h{i}");
            let t = if i % 3 == 0 { 100 } else { 200 };
            s.apply(&at(t, &[(&key, 1, &[("v", V::F(1.0))])]));
        }
        let buckets = s.slots();
        assert!(buckets >= 1000);
        let mut cursor = 0;
        let mut removed = 0;
        let mut calls = 0;
        // A slice of 64 buckets per call: a whole pass ends with the cursor back at 0.
        loop {
            removed += s.expire_step(250, 100, &mut cursor, 64);
            calls += 1;
            if cursor == 0 {
                break;
            }
            assert!(calls < 10_000, "the sweep never wrapped");
        }
        assert_eq!(calls, buckets.div_ceil(64));
        assert_eq!(removed, 334);
        assert_eq!(s.series_count(), 666);
        assert_eq!(s.group_count(), 666);
        // Nothing left to expire at that time; the limit admits new series again.
        assert_eq!(s.expire_all(250, 100), 0);
        // A cursor past the end (the table shrank or was rebuilt) starts over.
        let mut cursor = usize::MAX;
        s.expire_step(250, 100, &mut cursor, 8);
        assert_eq!(cursor, 8);
    }

    #[test]
    fn delete_matches_like_the_series_filters() {
        let mut s = SeriesStore::new(100);
        s.apply(&at(
            1,
            &[
                (
                    "cpu,dc=x,host=a",
                    1,
                    &[("idle", V::F(1.0)), ("user", V::F(1.0))],
                ),
                ("cpu,dc=y,host=b", 1, &[("idle", V::F(1.0))]),
                (r"mem\ x,host=a", 1, &[(r"fr\ ee", V::F(1.0))]),
            ],
        ));
        let sel = |m: Option<&str>, f: Option<&str>, tags: &[(&str, &str)]| Selector {
            measurement: m.map(str::to_owned),
            field: f.map(str::to_owned),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            s.delete(&Selector::default()),
            0,
            "no condition deletes nothing"
        );
        assert_eq!(s.delete(&sel(Some("nope"), None, &[])), 0);
        assert_eq!(
            s.delete(&sel(Some("cpu"), Some("user"), &[("host", "a")])),
            1
        );
        assert_eq!(s.series_count(), 3);
        // Unescaped names, as /series shows them.
        assert_eq!(s.delete(&sel(Some("mem x"), Some("fr ee"), &[])), 1);
        assert_eq!(s.delete(&sel(None, None, &[("host", "a"), ("dc", "y")])), 0);
        assert_eq!(s.delete(&sel(None, Some("idle"), &[])), 2);
        assert_eq!((s.series_count(), s.group_count()), (0, 0));
    }

    #[test]
    fn snapshots_keep_last_write_times_and_old_ones_load_at_load_time() {
        let mut s = SeriesStore::new(100);
        s.apply(&at(
            1000,
            &[("a", 1, &[("x", V::F(1.0)), ("y", V::S("s"))])],
        ));
        s.apply(&at(2000, &[("b", 2, &[("x", V::I(3))])]));
        let mut v2 = Vec::new();
        s.encode_into(&mut v2);
        let d = SeriesStore::decode(&v2, 100).expect("format 2");
        assert_eq!(dump(&s), dump(&d));
        assert_eq!(field(&d, "a", "y").last_write_unix(), 1000);
        assert_eq!(field(&d, "b", "x").last_write_unix(), 2000);
        // Format 1: no last-write times; every series counts as written at load.
        let mut v1 = Vec::new();
        s.encode_format(&mut v1, StoreFormat::V1);
        assert_eq!(v1.len() + 3 * 4, v2.len());
        let d = SeriesStore::decode_v1(&v1, 100, 5000).expect("format 1");
        assert_eq!(field(&d, "a", "x").last_write_unix(), 5000);
        assert_eq!(field(&d, "b", "x").count(), 1);
        assert_eq!(d.series_count(), 3);
        assert!(
            SeriesStore::decode(&v1, 100).is_err(),
            "formats are not confused"
        );
    }

    /// Every aggregate of a store, bitwise, in key order (for exactness checks).
    type Dumped = (Vec<u8>, Vec<u8>, u64, [u64; 3], i64, String, u32);

    fn dump(s: &SeriesStore) -> Vec<Dumped> {
        let mut out: Vec<_> = s
            .groups()
            .flat_map(|g| {
                g.fields.iter().map(move |f| {
                    (
                        g.key.to_vec(),
                        f.escaped_name().to_vec(),
                        f.count(),
                        [f.sum, f.min, f.max].map(f64::to_bits),
                        f.last_timestamp_ns(),
                        format!("{:?}", f.last()),
                        f.last_write_unix(),
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    proptest::proptest! {
        /// A snapshot round trip gives back every aggregate bit for bit, and the counters.
        #[test]
        fn snapshot_encoding_round_trips(
            points in proptest::collection::vec(super::test_support::raw_point(), 0..20),
            max_series in 0usize..30,
        ) {
            let s = super::test_support::arbitrary_store(&points, max_series);
            let mut bytes = Vec::new();
            s.encode_into(&mut bytes);
            let d = SeriesStore::decode(&bytes, max_series).expect("decodes");
            proptest::prop_assert_eq!(dump(&s), dump(&d));
            proptest::prop_assert_eq!(s.series_count(), d.series_count());
            proptest::prop_assert_eq!(s.label_collisions(), d.label_collisions());
            for cut in 0..bytes.len() {
                proptest::prop_assert!(SeriesStore::decode(&bytes[..cut], max_series).is_err());
            }
        }

        /// Arbitrary bytes never panic the snapshot decoder.
        #[test]
        fn snapshot_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = SeriesStore::decode(&bytes, 10);
        }
    }

    proptest::proptest! {
        /// The unescaped fast path of `parse_key` agrees with the general one.
        #[test]
        fn parse_key_fast_path_agrees(key in "[a=,é_.]{0,12}") {
            let fast = parse_key(key.as_bytes());
            let slow = parse_escaped_key(key.as_bytes(), Vec::new());
            proptest::prop_assert_eq!(fast, slow);
        }
    }

    mod model {
        use super::super::test_support::{V, push};
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::{BTreeMap, BTreeSet};

        #[derive(Debug)]
        struct M {
            count: u64,
            sum: f64,
            min: f64,
            max: f64,
            num: bool,
            last: LastValue,
            ts: i64,
        }

        fn same(a: Option<f64>, b: Option<f64>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
                (None, None) => true,
                _ => false,
            }
        }

        fn val() -> impl Strategy<Value = V<'static>> {
            prop_oneof![
                (-5i32..5).prop_map(|x| V::F(f64::from(x) * 0.5)),
                any::<i64>().prop_map(V::I),
                any::<u64>().prop_map(V::U),
                any::<bool>().prop_map(V::B),
                prop::sample::select(vec!["", "ab", "cd", "longer"]).prop_map(V::S),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The store agrees with a naive model on every aggregate, the limit and the
            /// outcome counters, whatever the batch boundaries.
            #[test]
            fn matches_naive_model(
                points in prop::collection::vec(
                    (0usize..4, 0i64..4, prop::collection::vec((0usize..4, val()), 0..4)),
                    0..60,
                ),
                max_series in 0usize..12,
                batch_size in 1usize..8,
            ) {
                const KEYS: [&str; 4] = ["cpu,host=a", "cpu,host=b", "mem", r"m\ x,t=1"];
                const FIELDS: [&str; 4] = ["x", "y", r"z\ z", "w"];
                let mut store = SeriesStore::new(max_series);
                let mut model: BTreeMap<(usize, usize), M> = BTreeMap::new();
                let (mut applied, mut dropped) = (0u64, 0u64);
                let mut out = ApplyOutcome::default();
                for chunk in points.chunks(batch_size) {
                    let mut b = Batch::default();
                    for (k, ts, fields) in chunk {
                        // field keys are unique within a point
                        let mut seen = BTreeSet::new();
                        let fields: Vec<(usize, V<'_>)> =
                            fields.iter().filter(|(f, _)| seen.insert(*f)).copied().collect();
                        let named: Vec<(&str, V<'_>)> =
                            fields.iter().map(|(f, v)| (FIELDS[*f], *v)).collect();
                        push(&mut b, KEYS[*k], *ts, &named);
                        applied += 1;
                        let mut lost = false;
                        for &(f, v) in &fields {
                            let id = (*k, f);
                            if !model.contains_key(&id) {
                                if model.len() >= max_series {
                                    lost = true;
                                    continue;
                                }
                                model.insert(id, M {
                                    count: 0, sum: 0.0, min: f64::INFINITY,
                                    max: f64::NEG_INFINITY, num: false,
                                    last: LastValue::Bool(false), ts: i64::MIN,
                                });
                            }
                            let m = model.get_mut(&id).expect("inserted");
                            m.count += 1;
                            let x = match v {
                                V::F(x) => Some(x),
                                V::I(i) => Some(i as f64),
                                V::U(u) => Some(u as f64),
                                V::B(b) => Some(if b { 1.0 } else { 0.0 }),
                                V::S(_) => None,
                            };
                            if let Some(x) = x {
                                m.num = true;
                                m.sum += x;
                                m.min = m.min.min(x);
                                m.max = m.max.max(x);
                            }
                            if *ts >= m.ts {
                                m.ts = *ts;
                                m.last = match v {
                                    V::F(x) => LastValue::Float(x),
                                    V::I(i) => LastValue::Int(i),
                                    V::U(u) => LastValue::UInt(u),
                                    V::B(b) => LastValue::Bool(b),
                                    V::S(s) => LastValue::Str(Box::<[u8]>::from(s.as_bytes()).into()),
                                };
                            }
                        }
                        if lost {
                            dropped += 1;
                        }
                    }
                    let o = store.apply(&b);
                    out.points_applied += o.points_applied;
                    out.points_dropped_series_limit += o.points_dropped_series_limit;
                }
                prop_assert_eq!(out, ApplyOutcome {
                    points_applied: applied,
                    points_dropped_series_limit: dropped,
                });
                prop_assert_eq!(store.series_count(), model.len());
                prop_assert!(store.series_count() <= max_series);
                let mut seen = 0;
                for g in store.groups() {
                    let k = KEYS.iter().position(|k| k.as_bytes() == g.key).expect("known key");
                    for f in g.fields {
                        let fi = FIELDS.iter().position(|n| n.as_bytes() == f.escaped_name()).expect("known field");
                        let m = &model[&(k, fi)];
                        seen += 1;
                        prop_assert_eq!(f.count(), m.count);
                        prop_assert!(same(f.sum(), m.num.then_some(m.sum)));
                        prop_assert!(same(f.min(), m.num.then_some(m.min)));
                        prop_assert!(same(f.max(), m.num.then_some(m.max)));
                        prop_assert_eq!(f.last(), &m.last);
                        prop_assert_eq!(f.last_timestamp_ns(), m.ts);
                    }
                }
                prop_assert_eq!(seen, model.len());
            }
        }
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    /// What a series costs is set by these sizes (docs/architecture.md, "The series
    /// store"): a bigger one is a deliberate change, made here and in the docs together.
    #[test]
    fn series_layout_sizes() {
        assert_eq!(std::mem::size_of::<LastValue>(), 16);
        assert_eq!(std::mem::size_of::<FieldAgg>(), 64);
        assert_eq!(std::mem::size_of::<Option<Group>>(), 104);
        assert_eq!(std::mem::size_of::<Group>(), 104);
    }
}
