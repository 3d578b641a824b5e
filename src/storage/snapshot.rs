//! Snapshots of the aggregates: `DIR/snapshots/snapshot-<LSN, 20 digits>.snap`, each the
//! whole [`SeriesStore`] plus the LSN of the last log record it includes.
//!
//! Format: `magic "MSSNAP\0\2" | lsn u64 | created_unix u64 | body_len u64 | body |
//! crc32 u32` (little-endian; the CRC-32 covers everything before it; the body is
//! [`SeriesStore::encode_into`], which holds each series' last-write time). Version 1
//! (`"MSSNAP\0\1"`, no last-write times) still loads: its series count as written at
//! load time. Written to a `.tmp` name, `fsync`ed, renamed into place,
//! and the directory `fsync`ed, so a crash at any moment leaves either the previous set of
//! snapshots or the new one, never a half-written file under a snapshot name. The two
//! newest are kept, so a damaged newest one still leaves one to start from. Encoding (under
//! the store lock) is split from writing (outside it), so the aggregator waits only for a
//! memory copy, never for the disk. Nothing here panics on what it finds in the directory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::ingest::SeriesStore;

use super::file::sync_dir;
use super::record::Lsn;

const MAGIC: &[u8; 8] = b"MSSNAP\x00\x02";
/// Version 1: the same without last-write times.
const MAGIC_V1: &[u8; 8] = b"MSSNAP\x00\x01";
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
const HEAD: usize = 8 + 8 + 8 + 8;

/// Snapshots kept: the newest, and one to fall back to if the newest is damaged.
pub const KEEP: usize = 2;

/// File name of the snapshot covering the log up to `lsn`.
pub fn name(lsn: Lsn) -> String {
    format!("{PREFIX}{lsn:020}{SUFFIX}")
}

/// The LSN in a snapshot's file name; `None` for any other file.
pub fn parse_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes `store` as a complete snapshot file covering the log up to `lsn`. Call it
/// with the store locked; it only copies memory.
pub fn encode(store: &SeriesStore, lsn: Lsn, created_unix: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 64 * store.series_count() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&created_unix.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    store.encode_into(&mut out);
    let body_len = (out.len() - HEAD) as u64;
    out[24..32].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A snapshot read back.
pub struct Decoded {
    pub lsn: Lsn,
    pub created_unix: u64,
    pub store: SeriesStore,
}

/// Checks and decodes a snapshot file's bytes; the error says what is wrong.
pub fn decode(bytes: &[u8], max_series: usize) -> Result<Decoded, String> {
    if bytes.len() < HEAD + 4 {
        return Err(format!(
            "{} bytes, shorter than a snapshot header",
            bytes.len()
        ));
    }
    let v1 = &bytes[..8] == MAGIC_V1;
    if &bytes[..8] != MAGIC && !v1 {
        return Err("not a snapshot (bad magic)".into());
    }
    let (data, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(data) != stored {
        return Err("checksum mismatch".into());
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let (lsn, created_unix, body_len) = (u64_at(8), u64_at(16), u64_at(24));
    if body_len != (data.len() - HEAD) as u64 {
        return Err("body length does not match the file".into());
    }
    let body = &data[HEAD..];
    let store = if v1 {
        let load_s = crate::ingest::lifecycle::unix_s(std::time::SystemTime::now());
        SeriesStore::decode_v1(body, max_series, load_s)
    } else {
        SeriesStore::decode(body, max_series)
    }
    .map_err(|e| e.to_string())?;
    Ok(Decoded {
        lsn,
        created_unix,
        store,
    })
}

/// The snapshots in `dir`, newest (highest LSN) first. Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<(Lsn, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        match entry.file_name().to_str().and_then(parse_name) {
            Some(lsn) if entry.file_type().is_ok_and(|t| t.is_file()) => {
                out.push((lsn, entry.path()))
            }
            _ => log::debug!(
                "ignoring {} in the snapshot directory",
                entry.path().display()
            ),
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// What [`persist`] left on disk.
#[derive(Debug, Clone)]
pub struct Persisted {
    pub path: PathBuf,
    pub bytes: u64,
    /// LSNs of the snapshots now kept, newest first. The last one bounds which log
    /// segments may be deleted.
    pub kept: Vec<Lsn>,
}

/// Writes an [`encode`]d snapshot durably (temp file, `fsync`, rename, directory
/// `fsync`), then removes all but the [`KEEP`] newest and any leftover temp files.
pub fn persist(dir: &Path, lsn: Lsn, bytes: &[u8]) -> io::Result<Persisted> {
    let path = dir.join(name(lsn));
    let tmp = dir.join(format!("{}.tmp", name(lsn)));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let mut kept = Vec::new();
    let mut removed = false;
    for (i, (l, p)) in list(dir)?.into_iter().enumerate() {
        if i < KEEP {
            kept.push(l);
        } else {
            fs::remove_file(&p)?;
            removed = true;
        }
    }
    remove_temp_files(dir);
    if removed {
        sync_dir(dir)?;
    }
    Ok(Persisted {
        path,
        bytes: bytes.len() as u64,
        kept,
    })
}

/// Removes `*.snap.tmp` left by a crash during a snapshot (they were never renamed into
/// place, so nothing depends on them).
pub fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_tmp = name
            .to_str()
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(parse_name)
            .is_some();
        if is_tmp && let Err(e) = fs::remove_file(entry.path()) {
            log::warn!("could not remove {}: {e}", entry.path().display());
        }
    }
}

/// The newest snapshot that reads back, and what was wrong with newer ones.
pub struct Loaded {
    pub snapshot: Option<(PathBuf, Decoded)>,
    /// Snapshots that could not be used, newest first, with the reason. Each has been
    /// renamed to `*.corrupt` so it is neither retried nor counted as kept.
    pub rejected: Vec<(PathBuf, String)>,
}

/// Loads the newest valid snapshot in `dir`, falling back to older ones.
pub fn load_newest(dir: &Path, max_series: usize) -> io::Result<Loaded> {
    let mut loaded = Loaded {
        snapshot: None,
        rejected: Vec::new(),
    };
    for (_, path) in list(dir)? {
        let why = match fs::read(&path) {
            Ok(bytes) => match decode(&bytes, max_series) {
                Ok(d) => {
                    loaded.snapshot = Some((path, d));
                    break;
                }
                Err(why) => why,
            },
            Err(e) => format!("unreadable: {e}"),
        };
        let mut aside = path.clone().into_os_string();
        aside.push(".corrupt");
        if let Err(e) = fs::rename(&path, &aside) {
            log::warn!("could not set {} aside: {e}", path.display());
        }
        loaded.rejected.push((path, why));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name(&name(5)), Some(5));
        assert_eq!(parse_name("snapshot-00000000000000000005.snap.tmp"), None);
        assert_eq!(parse_name("snapshot-5.snap"), None);
    }

    #[test]
    fn a_version_1_snapshot_still_loads_with_last_write_at_load_time() {
        let mut store = SeriesStore::new(10);
        let mut b = crate::ingest::Batch::default();
        let key = b.push_bytes(b"m,host=a");
        let name = b.push_bytes(b"v");
        b.fields.push(crate::ingest::batch::FieldRec {
            name,
            value: crate::ingest::batch::Value::Float(1.5),
        });
        b.points.push(crate::ingest::batch::PointRec {
            key,
            timestamp_ns: 7,
            fields_start: 0,
            fields_len: 1,
        });
        b.received_s = 1000;
        store.apply(&b);
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&1234u64.to_le_bytes());
        let mut body = Vec::new();
        store.encode_v1_into(&mut body);
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let before = crate::ingest::lifecycle::unix_s(std::time::SystemTime::now());
        let d = decode(&bytes, 10).expect("version 1 loads");
        assert_eq!(
            (d.lsn, d.created_unix, d.store.series_count()),
            (9, 1234, 1)
        );
        let g = d.store.groups().next().expect("the series");
        assert!(g.fields[0].last_write_unix() >= before);
        // The current version keeps the time written.
        let d = decode(&encode(&store, 9, 1234), 10).expect("version 2");
        let g = d.store.groups().next().expect("the series");
        assert_eq!(g.fields[0].last_write_unix(), 1000);
    }

    #[test]
    fn every_byte_and_cut_is_checked() {
        let store = SeriesStore::new(10);
        let bytes = encode(&store, 9, 1234);
        let d = decode(&bytes, 10).expect("valid");
        assert_eq!((d.lsn, d.created_unix), (9, 1234));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, 10).is_err(), "byte {i}");
            assert!(decode(&bytes[..i], 10).is_err(), "cut {i}");
        }
    }
}
