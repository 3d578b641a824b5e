//! A forward target's persisted position in the write log: `DIR/forward/<id>.cursor`, the
//! LSN of the last record it has delivered (or dropped), written after each `2xx`.
//!
//! The file holds two 16-byte slots, `lsn u64 | crc32(lsn) u32 | magic u32`, written in turn
//! with one `pwrite` each, the newer value over the older: a write torn by a crash damages
//! only the slot being written, and the other still holds the previous position, so the
//! reader takes the highest intact slot. It is not synced per update: after a `kill -9` the
//! page cache has it; after a power loss it may be a little behind, which resends (at least
//! once, never a gap). The id is a stable hash of the format and the redacted URL, so a
//! changed password keeps the position and two targets never share one. Nothing here
//! panics on what it finds in the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Format;
use crate::storage::Lsn;

const SLOT: usize = 16;
const MAGIC: u32 = 0x4d53_4355; // "MSCU"

/// The open cursor file of one target.
pub struct Cursor {
    file: File,
    path: PathBuf,
    /// The slot the next store writes (the one holding the older value).
    slot: u64,
    lsn: Lsn,
}

/// The file name of a target's cursor.
pub fn file_name(format: Format, redacted_url: &str) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let tag: &[u8] = match format {
        Format::RemoteWrite => b"remote_write ",
        Format::LineProtocol => b"line_protocol ",
    };
    for &b in tag.iter().chain(redacted_url.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.cursor")
}

fn encode(lsn: Lsn) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[0..8].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&s[0..8]);
    s[8..12].copy_from_slice(&crc.to_le_bytes());
    s[12..16].copy_from_slice(&MAGIC.to_le_bytes());
    s
}

fn decode(s: &[u8]) -> Option<Lsn> {
    let s: &[u8; SLOT] = s.try_into().ok()?;
    let lsn = u64::from_le_bytes(s[0..8].try_into().ok()?);
    let crc = u32::from_le_bytes(s[8..12].try_into().ok()?);
    let magic = u32::from_le_bytes(s[12..16].try_into().ok()?);
    (magic == MAGIC && crc == crc32fast::hash(&s[0..8])).then_some(lsn)
}

impl Cursor {
    /// Opens (creating if missing) the cursor `name` in `dir`. Returns it with the position
    /// it holds, or `None` if it holds none (new, or both slots unreadable).
    pub fn open(dir: &Path, name: &str) -> io::Result<(Cursor, Option<Lsn>)> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = [0u8; 2 * SLOT];
        let mut got = 0;
        while got < bytes.len() {
            match file.read_at(&mut bytes[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let a = bytes.get(..SLOT).filter(|_| got >= SLOT).and_then(decode);
        let b = bytes
            .get(SLOT..)
            .filter(|_| got >= 2 * SLOT)
            .and_then(decode);
        let (lsn, slot) = match (a, b) {
            (Some(a), Some(b)) if a >= b => (Some(a), 1),
            (Some(_), Some(b)) => (Some(b), 0),
            (Some(a), None) => (Some(a), 1),
            (None, Some(b)) => (Some(b), 0),
            (None, None) => (None, 0),
        };
        let cursor = Cursor {
            file,
            path,
            slot,
            lsn: lsn.unwrap_or(0),
        };
        Ok((cursor, lsn))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last position stored.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Stores `lsn` (one `pwrite`, no sync).
    pub fn store(&mut self, lsn: Lsn) -> io::Result<()> {
        self.file
            .write_all_at(&encode(lsn), self.slot * SLOT as u64)?;
        self.slot ^= 1;
        self.lsn = lsn;
        Ok(())
    }

    /// Syncs the file (at shutdown, so a power loss right after resends nothing).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("metricstream-cursor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        p
    }

    #[test]
    fn names_are_stable_and_per_target() {
        let a = file_name(Format::RemoteWrite, "http://h/api/v1/write");
        assert_eq!(a, file_name(Format::RemoteWrite, "http://h/api/v1/write"));
        assert_ne!(a, file_name(Format::LineProtocol, "http://h/api/v1/write"));
        assert_ne!(a, file_name(Format::RemoteWrite, "http://h2/api/v1/write"));
        assert!(a.ends_with(".cursor") && a.len() == 16 + 7);
    }

    #[test]
    fn stores_survive_reopening_and_a_torn_slot() {
        let d = dir("reopen");
        let (mut c, lsn) = Cursor::open(&d, "t.cursor").expect("open");
        assert_eq!(lsn, None);
        for l in [5, 9, 12] {
            c.store(l).expect("store");
        }
        drop(c);
        let (mut c, lsn) = Cursor::open(&d, "t.cursor").expect("open");
        assert_eq!(lsn, Some(12));
        c.store(20).expect("store");
        drop(c);
        // Tear the newest slot: the previous position is what is read.
        let path = d.join("t.cursor");
        let mut bytes = std::fs::read(&path).expect("read");
        let newest = (0..2)
            .find(|i| decode(&bytes[i * SLOT..(i + 1) * SLOT]) == Some(20))
            .expect("slot with 20");
        bytes[newest * SLOT + 3] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (mut c, lsn) = Cursor::open(&d, "t.cursor").expect("open");
        assert_eq!(lsn, Some(12));
        // And the next store goes over the damaged slot, keeping 12 until it lands.
        c.store(21).expect("store");
        drop(c);
        assert_eq!(Cursor::open(&d, "t.cursor").expect("open").1, Some(21));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn junk_and_short_files_hold_no_position() {
        let d = dir("junk");
        for junk in [&b""[..], b"abc", &[0xffu8; 40][..], &[0u8; 32][..]] {
            std::fs::write(d.join("j.cursor"), junk).expect("write");
            assert_eq!(Cursor::open(&d, "j.cursor").expect("open").1, None);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
