//! The file layer under the log thread: a small trait so tests can inject the errors a
//! real disk produces (`ENOSPC` half-way through a write, a failing `fdatasync`), and the
//! real implementation over `std::fs::File`.
//!
//! Only the log thread calls these, never the reactor. Nothing here retries or hides an
//! error: the caller decides what a failure means for the writes it was carrying.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::Path;

/// Most buffers handed to one `writev`: Linux refuses more than `IOV_MAX` (1024).
const IOV_MAX: usize = 1024;

/// One open log segment, written at its end.
pub trait SegmentFile: Send {
    /// Writes every byte of `bufs` at the current end, in as few `writev` calls as the
    /// kernel allows.
    fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()>;
    /// `fdatasync`: the data and the size that reaches it are on stable storage.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and continues writing there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Creating segments and making directory entries durable.
pub trait Fs: Send + 'static {
    /// Creates (or empties) the segment at `path` for writing.
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// `fsync` of a directory, so a created, renamed or removed entry survives power loss.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl Fs for StdFs {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(StdSegment { file }))
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// `fsync` of a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct StdSegment {
    file: File,
}

impl SegmentFile for StdSegment {
    fn write_all_vectored(&mut self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        write_all_vectored(&mut self.file, &mut bufs)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len)).map(drop)
    }
}

/// `write_all` over many buffers: `writev` until everything is written, at most
/// `IOV_MAX` buffers per call, retrying `Interrupted`.
pub fn write_all_vectored<W: Write>(w: &mut W, bufs: &mut &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(bufs, 0);
    while !bufs.is_empty() {
        let upto = bufs.len().min(IOV_MAX);
        match w.write_vectored(&bufs[..upto]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(n) => IoSlice::advance_slices(bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 3 bytes per call, to exercise the partial-write loop.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_are_continued() {
        let parts: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut w = Dribble(Vec::new());
        write_all_vectored(&mut w, &mut slices.as_mut_slice()).expect("writes");
        assert_eq!(w.0, parts.concat());
    }
}
