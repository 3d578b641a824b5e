//! Log segments on disk: their names, listing them, and scanning one segment's bytes
//! into records, damage located and measured.
//!
//! A segment is `DIR/wal/<first LSN, 20 digits>.wal`: records back to back, nothing else.
//! The name sorts like the LSN, so listing the directory gives log order. Scanning is pure
//! (bytes in, records and damage reports out); deciding whether damage is a torn tail or
//! corruption in the middle is the caller's, since only it knows which segment is last.
//! Nothing here panics on any bytes or any file name.

use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, HEADER, Lsn, Record};

pub const SUFFIX: &str = ".wal";

/// File name of the segment whose first record is `first`.
pub fn name(first: Lsn) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The first LSN encoded in a segment's file name; `None` for any other file.
pub fn parse_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment file found in the log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFileInfo {
    pub first: Lsn,
    pub path: PathBuf,
    pub len: u64,
}

/// The segments in `wal_dir`, in log order. Other entries (junk, directories, names not
/// ours) are skipped and logged at `debug`.
pub fn list(wal_dir: &Path) -> io::Result<Vec<SegmentFileInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(wal_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let first = name.to_str().and_then(parse_name);
        let meta = entry.metadata();
        match (first, meta) {
            (Some(first), Ok(meta)) if meta.is_file() => out.push(SegmentFileInfo {
                first,
                path: entry.path(),
                len: meta.len(),
            }),
            _ => log::debug!("ignoring {} in the log directory", entry.path().display()),
        }
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// A stretch of a segment that holds no readable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub bytes: u64,
}

/// What scanning one segment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Damaged stretches followed by a good record: corruption in the middle.
    pub skipped: Vec<Damage>,
    /// Damage running to the end of the bytes (a torn write, or damage at the end).
    pub tail: Option<Damage>,
    /// Offset just past the last good record: where the segment can be cut back to.
    pub good_end: u64,
    /// Highest LSN seen (the `after` passed in if none).
    pub last_lsn: Lsn,
}

/// Walks `bytes` record by record, calling `each` for every intact record whose LSN is
/// above the previous one (starting `after`), in order. After damage it searches forward
/// for the next intact record with a higher LSN, which is where reading resumes.
pub fn scan(bytes: &[u8], after: Lsn, mut each: impl FnMut(u64, Record<'_>)) -> Scan {
    let mut scan = Scan {
        last_lsn: after,
        ..Scan::default()
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Decoded::Ok(rec) if rec.lsn > scan.last_lsn => {
                each(pos as u64, rec);
                scan.last_lsn = rec.lsn;
                pos += rec.size;
                scan.good_end = pos as u64;
            }
            _ => match resync(bytes, pos + 1, scan.last_lsn) {
                Some(next) => {
                    scan.skipped.push(Damage {
                        offset: pos as u64,
                        bytes: (next - pos) as u64,
                    });
                    pos = next;
                }
                None => {
                    scan.tail = Some(Damage {
                        offset: pos as u64,
                        bytes: (bytes.len() - pos) as u64,
                    });
                    break;
                }
            },
        }
    }
    scan
}

/// The first offset at or after `from` holding an intact record with an LSN above
/// `after`. The LSN may be at most one per possible record higher than `after` (records
/// lost to the damage cannot number more), which keeps the checksum work rare.
pub(crate) fn resync(bytes: &[u8], from: usize, after: Lsn) -> Option<usize> {
    let limit = (bytes.len() / HEADER) as u64 + 1;
    (from..bytes.len().saturating_sub(HEADER - 1)).find(|&p| {
        record::plausible_at(&bytes[p..], after, limit)
            && matches!(record::decode(&bytes[p..]), Decoded::Ok(r) if r.lsn > after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::{Encoded, Kind};

    fn log_of(lsns: &[Lsn]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for &l in lsns {
            offsets.push(out.len());
            let mut e = Encoded::new(Kind::Write, format!("payload {l}").as_bytes());
            out.extend_from_slice(e.seal(l));
        }
        (out, offsets)
    }

    fn lsns_of(bytes: &[u8], after: Lsn) -> (Vec<Lsn>, Scan) {
        let mut seen = Vec::new();
        let scan = scan(bytes, after, |_, r| seen.push(r.lsn));
        (seen, scan)
    }

    #[test]
    fn names() {
        assert_eq!(name(7), "00000000000000000007.wal");
        assert_eq!(parse_name(&name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("00000000000000000007.wal.tmp"), None);
        assert_eq!(parse_name("0000000000000000007.wal"), None);
        assert_eq!(parse_name("+0000000000000000007.wal"), None);
        assert_eq!(parse_name("99999999999999999999.wal"), None);
    }

    #[test]
    fn clean_segment() {
        let (bytes, _) = log_of(&[1, 2, 3]);
        let (seen, s) = lsns_of(&bytes, 0);
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(
            (s.skipped.len(), s.tail, s.good_end),
            (0, None, bytes.len() as u64)
        );
        let (seen, _) = lsns_of(&bytes, 2);
        assert_eq!(seen, [3], "records at or below `after` are not handed out");
        assert_eq!(lsns_of(&[], 0).1, Scan::default());
    }

    #[test]
    fn torn_tail() {
        let (bytes, offsets) = log_of(&[1, 2, 3]);
        for cut in offsets[2] + 1..bytes.len() {
            let (seen, s) = lsns_of(&bytes[..cut], 0);
            assert_eq!(seen, [1, 2]);
            assert_eq!(s.good_end, offsets[2] as u64);
            assert_eq!(
                s.tail,
                Some(Damage {
                    offset: offsets[2] as u64,
                    bytes: (cut - offsets[2]) as u64
                })
            );
        }
        // Zeros after the last record (preallocated or never written) are a tail too.
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 100]);
        let (seen, s) = lsns_of(&zeros, 0);
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(s.tail.map(|d| d.bytes), Some(100));
    }

    #[test]
    fn damage_in_the_middle_is_skipped() {
        let (bytes, offsets) = log_of(&[1, 2, 3, 4]);
        for at in offsets[1]..offsets[2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5a;
            let (seen, s) = lsns_of(&bad, 0);
            assert_eq!(seen, [1, 3, 4], "byte {at}");
            assert_eq!(
                s.skipped,
                [Damage {
                    offset: offsets[1] as u64,
                    bytes: (offsets[2] - offsets[1]) as u64
                }]
            );
            assert_eq!(s.tail, None);
        }
    }

    #[test]
    fn replayed_or_reordered_lsns_are_not_handed_out_twice() {
        let (mut bytes, _) = log_of(&[1, 2]);
        bytes.extend_from_slice(&log_of(&[2, 3]).0);
        let (seen, s) = lsns_of(&bytes, 0);
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(s.skipped.len(), 1);
    }

    #[test]
    fn junk_never_panics() {
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let (seen, s) = lsns_of(&junk, 0);
        assert!(seen.is_empty());
        assert_eq!(s.tail.map(|d| d.bytes), Some(5000));
    }
}
