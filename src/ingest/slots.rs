//! The two containers the series store is built from, kept apart from what they hold:
//! [`Slots`], a chunked arena whose entries never move and are named by a `u32`, and
//! [`Interner`], a reference-counted table of byte strings (field names) named the same way.
//!
//! Why not one hash table of series: a hash table keeps a quarter to a half of its buckets
//! empty, and each empty bucket costs as much as a full one. Holding `u32`s in the hash
//! table and the series themselves here makes an empty bucket cost 4 bytes instead of a
//! whole series, and lets a reader walk the series in slices without caring whether the
//! hash table was resized in between. Pure data structures: no locking, no I/O.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Entries per chunk: growth allocates one chunk at a time, so at most this many slots
/// are ever allocated and unused, and no entry is ever copied to grow.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// An arena of `T` named by `u32` slot numbers. A slot keeps its entry until it is
/// removed; a removed slot is reused by a later insert.
pub(crate) struct Slots<T> {
    chunks: Vec<Vec<Option<T>>>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Slots ever allocated (live or free): one past the highest slot number.
    pub(crate) fn len(&self) -> usize {
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
            None => 0,
        }
    }

    /// Entries held.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    #[inline]
    pub(crate) fn get(&self, slot: u32) -> Option<&T> {
        let s = slot as usize;
        self.chunks
            .get(s >> CHUNK_BITS)?
            .get(s & (CHUNK - 1))?
            .as_ref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let s = slot as usize;
        self.chunks
            .get_mut(s >> CHUNK_BITS)?
            .get_mut(s & (CHUNK - 1))?
            .as_mut()
    }

    /// Stores `value`; returns its slot number.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        self.live += 1;
        if let Some(slot) = self.free.pop() {
            let s = slot as usize;
            self.chunks[s >> CHUNK_BITS][s & (CHUNK - 1)] = Some(value);
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let slot = self.len();
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(Some(value));
        }
        slot as u32
    }

    /// Takes the entry out of `slot` (if any); the slot is reused later.
    pub(crate) fn remove(&mut self, slot: u32) -> Option<T> {
        let s = slot as usize;
        let taken = self
            .chunks
            .get_mut(s >> CHUNK_BITS)?
            .get_mut(s & (CHUNK - 1))?
            .take()?;
        self.live -= 1;
        self.free.push(slot);
        Some(taken)
    }

    /// Every entry with its slot number, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| Some((i as u32, e.as_ref()?)))
    }
}

/// One interned string and how many users it has.
struct Interned {
    bytes: Box<[u8]>,
    refs: u32,
}

/// Byte strings named by `u32`, shared by reference count: [`Interner::acquire`] finds or
/// adds one, [`Interner::release`] drops a reference, and the last release removes it
/// (unless removal is [`Interner::hold`]ing: then it waits for [`Interner::reclaim`]).
/// A flat vector, not [`Slots`]: names are few and looked up for every field value
/// applied, so one indirection fewer counts.
#[derive(Default)]
pub(crate) struct Interner {
    entries: Vec<Option<Interned>>,
    free: Vec<u32>,
    ids: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Ids whose count fell to zero while held.
    pending: Vec<u32>,
    held: bool,
}

impl Interner {
    /// The string named `id` (empty for an id not in use).
    #[inline]
    pub(crate) fn get(&self, id: u32) -> &[u8] {
        match self.entries.get(id as usize) {
            Some(Some(e)) => &e.bytes,
            _ => &[],
        }
    }

    fn entry_mut(&mut self, id: u32) -> Option<&mut Interned> {
        self.entries.get_mut(id as usize)?.as_mut()
    }

    /// The id of `bytes`, if interned.
    pub(crate) fn find(&self, bytes: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(bytes);
        self.ids.find(hash, |&id| self.get(id) == bytes).copied()
    }

    /// The id of `bytes`, added if new, with one more reference.
    pub(crate) fn acquire(&mut self, bytes: &[u8]) -> u32 {
        let id = match self.find(bytes) {
            Some(id) => id,
            None => {
                let entry = Some(Interned {
                    bytes: bytes.into(),
                    refs: 0,
                });
                let id = match self.free.pop() {
                    Some(id) => {
                        self.entries[id as usize] = entry;
                        id
                    }
                    None => {
                        self.entries.push(entry);
                        (self.entries.len() - 1) as u32
                    }
                };
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.ids.insert_unique(hasher.hash_one(bytes), id, |&i| {
                    match entries.get(i as usize) {
                        Some(Some(e)) => hasher.hash_one(&e.bytes),
                        _ => hasher.hash_one(&[][..] as &[u8]),
                    }
                });
                id
            }
        };
        if let Some(e) = self.entry_mut(id) {
            e.refs += 1;
        }
        id
    }

    /// Drops one reference to `id`; removes the string with its last one (or marks it for
    /// [`Interner::reclaim`] while held).
    pub(crate) fn release(&mut self, id: u32) {
        let held = self.held;
        let Some(e) = self.entry_mut(id) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            if held {
                self.pending.push(id);
            } else {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: u32) {
        let hash = self.hasher.hash_one(self.get(id));
        if let Ok(entry) = self.ids.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        if let Some(slot) = self.entries.get_mut(id as usize)
            && slot.take().is_some()
        {
            self.free.push(id);
        }
    }

    /// While held, no id is removed or reused, so a reader that noted ids earlier may
    /// still look them up.
    pub(crate) fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// Removes the strings whose last reference went while held (and that no one took
    /// again since).
    pub(crate) fn reclaim(&mut self) {
        for id in std::mem::take(&mut self.pending) {
            if self.entry_mut(id).is_some_and(|e| e.refs == 0) {
                self.remove(id);
            }
        }
    }

    /// Strings held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_reuse_removed_numbers_and_never_move_entries() {
        let mut s: Slots<u64> = Slots::default();
        let ids: Vec<u32> = (0..10_000u64).map(|i| s.insert(i)).collect();
        assert_eq!(ids, (0..10_000u32).collect::<Vec<_>>());
        assert_eq!((s.len(), s.live()), (10_000, 10_000));
        assert_eq!(s.remove(5000), Some(5000));
        assert_eq!(s.remove(5000), None);
        assert_eq!(s.get(5000), None);
        assert_eq!(s.live(), 9_999);
        assert_eq!(s.insert(7), 5000);
        assert_eq!(s.get(5000), Some(&7));
        assert_eq!(s.get(4097), Some(&4097));
        assert_eq!(s.get(10_000), None);
        assert_eq!(s.iter().count(), 10_000);
        *s.get_mut(1).expect("slot 1") = 99;
        assert_eq!(s.iter().nth(1), Some((1, &99)));
    }

    #[test]
    fn interned_strings_live_while_referenced() {
        let mut n = Interner::default();
        let a = n.acquire(b"usage");
        let b = n.acquire(b"idle");
        assert_eq!(n.acquire(b"usage"), a);
        assert_eq!((n.get(a), n.get(b)), (&b"usage"[..], &b"idle"[..]));
        n.release(a);
        assert_eq!(n.find(b"usage"), Some(a));
        n.release(a);
        assert_eq!(n.find(b"usage"), None);
        assert_eq!(n.len(), 1);
        // Held: the last release keeps the id until reclaimed, and a new acquire revives it.
        n.hold(true);
        n.release(b);
        assert_eq!(n.get(b), b"idle");
        let c = n.acquire(b"x");
        assert_ne!(c, b);
        n.hold(false);
        n.reclaim();
        assert_eq!(n.find(b"idle"), None);
        assert_eq!(n.find(b"x"), Some(c));
        let d = n.acquire(b"y");
        n.hold(true);
        n.release(d);
        assert_eq!(n.acquire(b"y"), d);
        n.hold(false);
        n.reclaim();
        assert_eq!(n.get(d), b"y");
    }
}
