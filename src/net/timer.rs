//! Connection deadlines: a hashed timing wheel threaded through the connection slab.
//!
//! Each connection carries a [`TimerLink`] (two slab keys and a tick: 12 bytes, no
//! allocation); the wheel holds one list head per slot and a bitmap of non-empty slots.
//! Arming, re-arming and disarming are O(1); each tick visits only the connections filed
//! in that slot (those due now, plus any due a whole rotation later), never the whole slab.
//! So the cost of keeping 10,000 idle keep-alive connections is nothing per tick.

use std::time::{Duration, Instant};

use slab::Slab;

const NIL: u32 = u32::MAX;
const SLOTS: usize = 2048;
const WORDS: usize = SLOTS / 64;

/// Intrusive list links, embedded in whatever the slab holds.
#[derive(Clone, Copy, Debug)]
pub struct TimerLink {
    prev: u32,
    next: u32,
    /// Tick at which the entry is due; `NIL` when not armed.
    due: u32,
}

impl Default for TimerLink {
    fn default() -> Self {
        TimerLink {
            prev: NIL,
            next: NIL,
            due: NIL,
        }
    }
}

impl TimerLink {
    pub fn is_armed(&self) -> bool {
        self.due != NIL
    }
}

/// Anything stored in the slab that can be put on the wheel.
pub trait Timed {
    fn link(&mut self) -> &mut TimerLink;
}

pub struct TimerWheel {
    heads: Box<[u32]>,
    occupied: [u64; WORDS],
    epoch: Instant,
    tick: Duration,
    /// Every tick up to and including this one has been processed.
    processed: u32,
    armed: usize,
}

impl TimerWheel {
    pub fn new(tick: Duration, now: Instant) -> Self {
        TimerWheel {
            heads: vec![NIL; SLOTS].into_boxed_slice(),
            occupied: [0; WORDS],
            epoch: now,
            tick,
            processed: 0,
            armed: 0,
        }
    }

    /// Number of armed entries.
    pub fn len(&self) -> usize {
        self.armed
    }

    pub fn is_empty(&self) -> bool {
        self.armed == 0
    }

    fn tick_at(&self, t: Instant) -> u32 {
        let d = t.saturating_duration_since(self.epoch);
        let ticks = d.as_nanos() / self.tick.as_nanos().max(1);
        u32::try_from(ticks).unwrap_or(NIL - 1)
    }

    /// First tick that is due at or after `t` (deadlines round up, never fire early).
    fn tick_ceil(&self, t: Instant) -> u32 {
        let d = t.saturating_duration_since(self.epoch);
        let tick = self.tick.as_nanos().max(1);
        let ticks = d.as_nanos().div_ceil(tick);
        u32::try_from(ticks).unwrap_or(NIL - 1).min(NIL - 1)
    }

    /// Arms (or re-arms) `key` to expire at `deadline`.
    pub fn arm<T: Timed>(&mut self, slab: &mut Slab<T>, key: usize, deadline: Instant) {
        self.disarm(slab, key);
        // Never file into an already-processed tick: it would wait a whole rotation.
        let due = self.tick_ceil(deadline).max(self.processed + 1);
        let slot = due as usize % SLOTS;
        let head = self.heads[slot];
        let k = key as u32;
        if let Some(entry) = slab.get_mut(key) {
            *entry.link() = TimerLink {
                prev: NIL,
                next: head,
                due,
            };
        } else {
            return;
        }
        if head != NIL {
            if let Some(h) = slab.get_mut(head as usize) {
                h.link().prev = k;
            }
        }
        self.heads[slot] = k;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.armed += 1;
    }

    /// Takes `key` off the wheel if it is on it. Must be called before a slab slot is freed.
    pub fn disarm<T: Timed>(&mut self, slab: &mut Slab<T>, key: usize) {
        let Some(entry) = slab.get_mut(key) else {
            return;
        };
        let link = *entry.link();
        if link.due == NIL {
            return;
        }
        *entry.link() = TimerLink::default();
        let slot = link.due as usize % SLOTS;
        if link.prev == NIL {
            self.heads[slot] = link.next;
            if link.next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        } else if let Some(p) = slab.get_mut(link.prev as usize) {
            p.link().next = link.next;
        }
        if link.next != NIL {
            if let Some(n) = slab.get_mut(link.next as usize) {
                n.link().prev = link.prev;
            }
        }
        self.armed -= 1;
    }

    /// Disarms every entry due at or before `now` and pushes its key to `expired`.
    pub fn expire<T: Timed>(&mut self, slab: &mut Slab<T>, now: Instant, expired: &mut Vec<usize>) {
        let current = self.tick_at(now);
        // After a long stall, one rotation covers every slot.
        let start = self.processed + 1;
        let end = current.min(self.processed.saturating_add(SLOTS as u32));
        let mut t = start;
        while t <= end {
            let slot = t as usize % SLOTS;
            let mut k = self.heads[slot];
            while k != NIL {
                let Some(entry) = slab.get_mut(k as usize) else {
                    break;
                };
                let link = *entry.link();
                if link.due <= current {
                    self.disarm(slab, k as usize);
                    expired.push(k as usize);
                }
                k = link.next;
            }
            t += 1;
        }
        if current > self.processed {
            self.processed = current;
        }
    }

    /// When the next non-empty slot comes due, for the poll timeout. `None` when nothing
    /// is armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.armed == 0 {
            return None;
        }
        let from = (self.processed as usize + 1) % SLOTS;
        let offset = self.next_occupied_offset(from)?;
        let due = self.processed as u64 + 1 + offset as u64;
        Some(self.epoch + self.tick * (due as u32))
    }

    /// Distance (in slots) from `from` to the next occupied slot, wrapping around.
    fn next_occupied_offset(&self, from: usize) -> Option<usize> {
        for step in 0..=WORDS {
            let word_index = (from / 64 + step) % WORDS;
            let mut word = self.occupied[word_index];
            if step == 0 {
                word &= !0u64 << (from % 64);
            }
            if step == WORDS {
                // Wrapped back to the first word: only bits before `from`.
                word = self.occupied[word_index] & !(!0u64 << (from % 64));
            }
            if word != 0 {
                let slot = word_index * 64 + word.trailing_zeros() as usize;
                return Some((slot + SLOTS - from) % SLOTS);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Item {
        link: TimerLink,
    }

    impl Timed for Item {
        fn link(&mut self) -> &mut TimerLink {
            &mut self.link
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_after_deadline_never_before() {
        let t0 = Instant::now();
        let mut slab: Slab<Item> = Slab::new();
        let mut w = TimerWheel::new(ms(50), t0);
        let a = slab.insert(Item::default());
        let b = slab.insert(Item::default());
        w.arm(&mut slab, a, t0 + ms(120));
        w.arm(&mut slab, b, t0 + ms(1000));
        assert_eq!(w.len(), 2);
        let mut out = Vec::new();
        w.expire(&mut slab, t0 + ms(100), &mut out);
        assert!(out.is_empty());
        w.expire(&mut slab, t0 + ms(150), &mut out);
        assert_eq!(out, vec![a]);
        out.clear();
        w.expire(&mut slab, t0 + ms(999), &mut out);
        assert!(out.is_empty());
        w.expire(&mut slab, t0 + ms(1000), &mut out);
        assert_eq!(out, vec![b]);
        assert!(w.is_empty());
    }

    #[test]
    fn rearm_and_disarm() {
        let t0 = Instant::now();
        let mut slab: Slab<Item> = Slab::new();
        let mut w = TimerWheel::new(ms(50), t0);
        let keys: Vec<usize> = (0..10).map(|_| slab.insert(Item::default())).collect();
        for &k in &keys {
            w.arm(&mut slab, k, t0 + ms(100));
        }
        w.arm(&mut slab, keys[3], t0 + ms(500));
        w.disarm(&mut slab, keys[5]);
        w.disarm(&mut slab, keys[5]);
        assert_eq!(w.len(), 9);
        let mut out = Vec::new();
        w.expire(&mut slab, t0 + ms(100), &mut out);
        out.sort();
        let expected: Vec<usize> = keys
            .iter()
            .copied()
            .filter(|&k| k != keys[3] && k != keys[5])
            .collect();
        assert_eq!(out, expected);
        out.clear();
        w.expire(&mut slab, t0 + ms(500), &mut out);
        assert_eq!(out, vec![keys[3]]);
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_their_turn() {
        let t0 = Instant::now();
        let mut slab: Slab<Item> = Slab::new();
        let mut w = TimerWheel::new(ms(10), t0);
        let a = slab.insert(Item::default());
        let far = ms(10 * SLOTS as u64 + 30);
        w.arm(&mut slab, a, t0 + far);
        let mut out = Vec::new();
        let mut t = t0;
        while t < t0 + far - ms(10) {
            t += ms(7);
            w.expire(&mut slab, t, &mut out);
            assert!(out.is_empty(), "fired early at {:?}", t - t0);
        }
        w.expire(&mut slab, t0 + far, &mut out);
        assert_eq!(out, vec![a]);
    }

    #[test]
    fn next_deadline_points_at_the_first_occupied_slot() {
        let t0 = Instant::now();
        let mut slab: Slab<Item> = Slab::new();
        let mut w = TimerWheel::new(ms(50), t0);
        assert_eq!(w.next_deadline(), None);
        let a = slab.insert(Item::default());
        w.arm(&mut slab, a, t0 + ms(240));
        assert_eq!(w.next_deadline(), Some(t0 + ms(250)));
        let b = slab.insert(Item::default());
        w.arm(&mut slab, b, t0 + ms(60));
        assert_eq!(w.next_deadline(), Some(t0 + ms(100)));
        w.disarm(&mut slab, b);
        assert_eq!(w.next_deadline(), Some(t0 + ms(250)));
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_pass() {
        let t0 = Instant::now();
        let mut slab: Slab<Item> = Slab::new();
        let mut w = TimerWheel::new(ms(50), t0);
        let mut out = Vec::new();
        w.expire(&mut slab, t0 + ms(500), &mut out);
        let a = slab.insert(Item::default());
        w.arm(&mut slab, a, t0);
        w.expire(&mut slab, t0 + ms(550), &mut out);
        assert_eq!(out, vec![a]);
    }
}
