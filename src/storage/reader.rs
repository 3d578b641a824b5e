//! A sequential reader of the write log for a consumer that lags behind it (a forwarder):
//! records in LSN order from a starting LSN, read from the segment files through a buffer,
//! never past the committed end the caller passes in (see [`super::tail`]): not a record
//! above its LSN, not a byte beyond its offset, so bytes of a group whose sync failed (cut
//! off later, their LSNs reused) are never even buffered.
//!
//! It follows the log across segments (a segment is named after its first LSN), skips what
//! it cannot read instead of stopping: a damaged stretch is passed over to the next intact
//! record with a higher LSN, a missing stretch (segments pruned under it, or lost) is
//! jumped. Each skip is reported once through [`LogReader::take_skipped`] so the caller can
//! count and log it. It only reads files; it never writes, cuts or deletes one, and never
//! panics on what it finds.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, HEADER, Lsn, Record};
use super::segment::{self, SegmentFileInfo};
use super::tail::Committed;

/// Bytes read from a segment at a time.
const CHUNK: usize = 1 << 20;

/// The open segment and the buffered bytes read from it.
struct Open {
    first: Lsn,
    path: PathBuf,
    file: File,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// The file returned end-of-file at `buf_offset + buf.len()`.
    eof: bool,
}

/// Something the reader passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// LSNs the reader gave up on: from the first it wanted to just below where it resumed
    /// (none when only damaged bytes were passed over between intact records).
    pub lsns: std::ops::Range<Lsn>,
    pub what: String,
}

/// Reads records from `next` on.
pub struct LogReader {
    wal_dir: PathBuf,
    next: Lsn,
    open: Option<Open>,
    buf: Vec<u8>,
    /// Consumed bytes at the start of `buf`.
    start: usize,
    skipped: Vec<Skipped>,
}

impl LogReader {
    /// A reader whose first record is the first with an LSN at or above `next`.
    pub fn new(wal_dir: &Path, next: Lsn) -> LogReader {
        LogReader {
            wal_dir: wal_dir.to_path_buf(),
            next: next.max(1),
            open: None,
            buf: Vec::new(),
            start: 0,
            skipped: Vec::new(),
        }
    }

    /// The LSN of the next record wanted (every record below it has been handed out or
    /// skipped).
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// Where the next unread byte is: the segment's first LSN and the offset in it.
    pub fn position(&self) -> Option<(Lsn, u64)> {
        self.open
            .as_ref()
            .map(|o| (o.first, o.buf_offset + self.start as u64))
    }

    /// What was skipped since the last call.
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.skipped)
    }

    /// Bytes of the log after the reader's position, given the segment listing `segments`
    /// (the whole log if the reader has not opened a segment yet).
    pub fn bytes_behind(&self, segments: &[SegmentFileInfo]) -> u64 {
        match self.position() {
            Some((first, offset)) => segments
                .iter()
                .map(|s| match s.first.cmp(&first) {
                    std::cmp::Ordering::Less => 0,
                    std::cmp::Ordering::Equal => s.len.saturating_sub(offset),
                    std::cmp::Ordering::Greater => s.len,
                })
                .sum(),
            None => segments
                .iter()
                .filter(|s| segments_may_hold(s, segments, self.next))
                .map(|s| s.len)
                .sum(),
        }
    }

    /// The next record with an LSN at or above [`LogReader::next_lsn`] and within
    /// `committed`, or `None` when there is none (yet). An `Err` is an I/O error reading
    /// the directory or a file; the reader stays where it was and may be called again.
    pub fn next_record(&mut self, committed: Committed) -> io::Result<Option<Record<'_>>> {
        // Bounded: each turn consumes a record, moves to a later segment, or returns.
        loop {
            if self.next > committed.lsn {
                return Ok(None);
            }
            if self.open.is_none() && !self.open_segment_for_next()? {
                return Ok(None);
            }
            match record::decode(&self.buf[self.start..]) {
                Decoded::Ok(rec) if rec.lsn < self.next => {
                    // Already handed out (the reader reopened a segment at its start).
                    self.start += rec.size;
                }
                Decoded::Ok(rec) if rec.lsn > committed.lsn => return Ok(None),
                Decoded::Ok(_) => break,
                Decoded::Incomplete => {
                    if !self.fill(committed)? && !self.next_segment(committed)? {
                        return Ok(None);
                    }
                }
                Decoded::Corrupt => {
                    if !self.resync(committed)? && !self.next_segment(committed)? {
                        return Ok(None);
                    }
                }
            }
        }
        // Decoded again to hand out a borrow of the buffer (the loop above needed it
        // mutably); the checksum is paid twice only for records actually returned.
        let Decoded::Ok(rec) = record::decode(&self.buf[self.start..]) else {
            return Ok(None);
        };
        if rec.lsn > self.next {
            self.skipped.push(Skipped {
                lsns: self.next..rec.lsn,
                what: format!("records missing before LSN {}", rec.lsn),
            });
        }
        self.next = rec.lsn + 1;
        self.start += rec.size;
        Ok(Some(rec))
    }

    /// Opens the segment that holds `next` (the last one named at or below it), or the
    /// first one after a gap. `false` if the log has no segment to read.
    fn open_segment_for_next(&mut self) -> io::Result<bool> {
        let segments = segment::list(&self.wal_dir)?;
        let at = segments.partition_point(|s| s.first <= self.next);
        let pick = match at {
            0 => segments.first(),
            n => segments.get(n - 1),
        };
        let Some(seg) = pick else {
            return Ok(false);
        };
        if seg.first > self.next {
            self.skipped.push(Skipped {
                lsns: self.next..seg.first,
                what: format!(
                    "records before {} are no longer in the log",
                    seg.path.display()
                ),
            });
            self.next = seg.first;
        }
        self.open(seg)?;
        Ok(true)
    }

    fn open(&mut self, seg: &SegmentFileInfo) -> io::Result<()> {
        let file = File::open(&seg.path)?;
        self.open = Some(Open {
            first: seg.first,
            path: seg.path.clone(),
            file,
            buf_offset: 0,
            eof: false,
        });
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    /// Reads more of the open segment into the buffer, never past the committed end.
    /// `false` at the end of the file or of its committed bytes.
    fn fill(&mut self, committed: Committed) -> io::Result<bool> {
        let Some(open) = self.open.as_mut() else {
            return Ok(false);
        };
        let limit = match open.first.cmp(&committed.segment) {
            std::cmp::Ordering::Less => u64::MAX,
            std::cmp::Ordering::Equal => committed.end,
            // Created by the log thread, nothing in it committed yet.
            std::cmp::Ordering::Greater => 0,
        };
        // Drop what was consumed, keep a partial record.
        if self.start > 0 {
            self.buf.drain(..self.start);
            open.buf_offset += self.start as u64;
            self.start = 0;
        }
        // Room for at least the record the header announces, and a chunk.
        let want = match self.buf.get(..4) {
            Some(len) => 8 + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
            None => HEADER,
        };
        let have = self.buf.len();
        let readable = limit.saturating_sub(open.buf_offset + have as u64);
        let room = CHUNK
            .max(want.saturating_sub(have))
            .min(usize::try_from(readable).unwrap_or(usize::MAX));
        if room == 0 {
            return Ok(false);
        }
        self.buf.resize(have + room, 0);
        let mut got = 0;
        let result = loop {
            match open.file.read(&mut self.buf[have + got..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    got += n;
                    if have + got >= want {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.truncate(have + got);
        result?;
        open.eof = got == 0;
        Ok(got > 0)
    }

    /// Moves to the segment after the open one, if there is one. Whatever the open one
    /// still held past the last intact record is skipped (reported if it is more than an
    /// empty end).
    fn next_segment(&mut self, committed: Committed) -> io::Result<bool> {
        let Some(open) = self.open.as_ref() else {
            return self.open_segment_for_next();
        };
        if open.first >= committed.segment {
            // The segment being written: the rest is not committed yet.
            return Ok(false);
        }
        let segments = segment::list(&self.wal_dir)?;
        let Some(after) = segments.iter().find(|s| s.first > open.first).cloned() else {
            return Ok(false);
        };
        let leftover = self.buf.len() - self.start;
        if leftover > 0 {
            self.skipped.push(Skipped {
                lsns: self.next..self.next,
                what: format!(
                    "{leftover} unreadable bytes at offset {} of {}",
                    open.buf_offset + self.start as u64,
                    open.path.display()
                ),
            });
        }
        if after.first > self.next {
            self.skipped.push(Skipped {
                lsns: self.next..after.first,
                what: format!("records missing before {}", after.path.display()),
            });
            self.next = after.first;
        }
        self.open(&after)?;
        Ok(true)
    }

    /// After damage at the read position: reads the rest of the segment and moves to the
    /// next intact record with an LSN at or above `next`. `false` if there is none in it.
    fn resync(&mut self, committed: Committed) -> io::Result<bool> {
        while self.fill(committed)? {}
        let Some(open) = self.open.as_ref() else {
            return Ok(false);
        };
        let rest = &self.buf[self.start..];
        let after = self.next.saturating_sub(1);
        let found = segment::resync(rest, 1, after);
        let skipped = found.unwrap_or(rest.len());
        self.skipped.push(Skipped {
            lsns: self.next..self.next,
            what: format!(
                "{skipped} corrupt bytes at offset {} of {}",
                open.buf_offset + self.start as u64,
                open.path.display()
            ),
        });
        self.start += skipped;
        Ok(found.is_some())
    }
}

/// Whether segment `s` may hold records at or above `next` (the last one named at or
/// below `next`, or any later one).
fn segments_may_hold(s: &SegmentFileInfo, all: &[SegmentFileInfo], next: Lsn) -> bool {
    let later = all.iter().find(|o| o.first > s.first);
    later.is_none_or(|l| l.first > next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::{Encoded, Kind};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("metricstream-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    fn rec(lsn: Lsn, size: usize) -> Vec<u8> {
        let payload = vec![(lsn % 251) as u8; size];
        Encoded::new(Kind::WriteBody, &payload).seal(lsn).to_vec()
    }

    fn segment(d: &Path, lsns: std::ops::RangeInclusive<Lsn>, size: usize) -> Vec<usize> {
        let first = *lsns.start();
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for l in lsns {
            offsets.push(bytes.len());
            bytes.extend_from_slice(&rec(l, size));
        }
        std::fs::write(d.join(segment::name(first)), bytes).expect("write");
        offsets
    }

    /// Everything up to `lsn` committed, in a log whose newest segment is `segment`.
    fn upto(lsn: Lsn, segment: Lsn) -> Committed {
        Committed {
            lsn,
            segment,
            end: u64::MAX,
        }
    }

    fn read_all(r: &mut LogReader, committed: Committed) -> Vec<Lsn> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match r.next_record(committed).expect("read") {
                Some(rec) => {
                    assert_eq!(rec.payload[0], (rec.lsn % 251) as u8);
                    out.push(rec.lsn);
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn reads_across_segments_up_to_committed_only() {
        let d = dir("across");
        segment(&d.0, 1..=3, 10);
        segment(&d.0, 4..=6, CHUNK + 100); // records larger than a read chunk
        let mut r = LogReader::new(&d.0, 2);
        assert_eq!(read_all(&mut r, upto(4, 4)), [2, 3, 4]);
        assert_eq!(read_all(&mut r, upto(4, 4)), Vec::<Lsn>::new());
        assert_eq!(read_all(&mut r, upto(6, 4)), [5, 6]);
        assert_eq!(r.next_lsn(), 7);
        assert!(r.take_skipped().is_empty());
        // Appended later to the newest segment: picked up where it stopped.
        let mut more = std::fs::read(d.0.join(segment::name(4))).expect("read");
        more.extend_from_slice(&rec(7, 5));
        std::fs::write(d.0.join(segment::name(4)), more).expect("write");
        assert_eq!(read_all(&mut r, upto(7, 4)), [7]);
    }

    #[test]
    fn nothing_past_the_committed_bytes_is_read_even_when_rewritten() {
        let d = dir("cap");
        let offsets = segment(&d.0, 1..=3, 40);
        let path = d.0.join(segment::name(1));
        let mut r = LogReader::new(&d.0, 1);
        // Record 2 is in the file but its group is not committed (its sync may still fail).
        let c = Committed {
            lsn: 2,
            segment: 1,
            end: offsets[1] as u64,
        };
        assert_eq!(read_all(&mut r, c), [1]);
        // The group failed: cut off, and its LSNs went to another write at the same place.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.truncate(offsets[1]);
        let mut other = Encoded::new(Kind::WriteBody, &[2u8; 7]);
        bytes.extend_from_slice(other.seal(2));
        std::fs::write(&path, &bytes).expect("write");
        let c = Committed {
            lsn: 2,
            segment: 1,
            end: bytes.len() as u64,
        };
        let rec = r.next_record(c).expect("read").expect("record 2");
        assert_eq!((rec.lsn, rec.payload), (2, &[2u8; 7][..]));
        assert!(r.next_record(c).expect("read").is_none());
    }

    #[test]
    fn pruned_records_are_skipped_and_reported() {
        let d = dir("pruned");
        segment(&d.0, 10..=12, 10);
        let mut r = LogReader::new(&d.0, 3);
        assert_eq!(read_all(&mut r, upto(12, 10)), [10, 11, 12]);
        let s = r.take_skipped();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].lsns, 3..10);
    }

    #[test]
    fn damage_is_passed_over() {
        let d = dir("damage");
        let offsets = segment(&d.0, 1..=4, 40);
        let path = d.0.join(segment::name(1));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[offsets[1] + 20] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let mut r = LogReader::new(&d.0, 1);
        assert_eq!(read_all(&mut r, upto(4, 1)), [1, 3, 4]);
        let s = r.take_skipped();
        assert!(s.iter().any(|s| s.what.contains("corrupt bytes")), "{s:?}");
        assert!(s.iter().any(|s| s.lsns == (2..3)), "{s:?}");
    }

    #[test]
    fn a_damaged_end_of_an_older_segment_moves_on() {
        let d = dir("tail");
        segment(&d.0, 1..=2, 40);
        segment(&d.0, 3..=4, 40);
        let path = d.0.join(segment::name(1));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes).expect("write");
        let mut r = LogReader::new(&d.0, 1);
        assert_eq!(read_all(&mut r, upto(4, 3)), [1, 3, 4]);
        assert!(!r.take_skipped().is_empty());
    }

    #[test]
    fn bytes_behind_counts_from_the_position() {
        let d = dir("behind");
        segment(&d.0, 1..=2, 100);
        segment(&d.0, 3..=4, 100);
        let segs = segment::list(&d.0).expect("list");
        let total: u64 = segs.iter().map(|s| s.len).sum();
        let mut r = LogReader::new(&d.0, 1);
        assert_eq!(r.bytes_behind(&segs), total);
        let mut r3 = LogReader::new(&d.0, 3);
        assert_eq!(r3.bytes_behind(&segs), segs[1].len);
        read_all(&mut r, upto(1, 3));
        assert_eq!(r.bytes_behind(&segs), total - rec(1, 100).len() as u64);
        read_all(&mut r3, upto(4, 3));
        assert_eq!(r3.bytes_behind(&segs), 0);
    }

    #[test]
    fn an_empty_log_has_nothing() {
        let d = dir("empty");
        let mut r = LogReader::new(&d.0, 1);
        assert_eq!(read_all(&mut r, upto(100, 1)), Vec::<Lsn>::new());
        assert_eq!(r.bytes_behind(&[]), 0);
    }
}
