//! The bodies of the read answers, handed to the HTTP engine as [`BodySource`]s: a
//! `GET /metrics` exposition (`exposition.rs`) rendered and sent a part at a time, plain or
//! gzip-encoded, and a `GET /series` listing (`series.rs`) gathered over several short
//! jobs and sent whole.
//!
//! Each part runs steps of the [`MetricsRender`] through a [`SteppedReader`] (the store
//! locked per step, writes applied between steps) until about [`STREAM_PART`] encoded
//! bytes are ready or [`STREAM_PART_STEPS`] steps ran (so a part keeps a worker well under
//! a millisecond, not the 10 ms 128 KiB of gzip takes), and hands them out; the next part
//! is asked for
//! only once the connection wrote this one, so the render's memory is its own small
//! buffers plus one part, whatever the store's size, and a slow client holds the render
//! (and its registration with the store, which only keeps removed series' slots from being
//! reused) rather than memory. The server's own families are rendered last, when the
//! user's series are done, and a gzip stream is finished after them.
//!
//! A `/series` body reads [`STREAM_PART_STEPS`] slices of the store per call and hands
//! out nothing until every slice is read; then it writes the listing (at most `limit`
//! series, so a small body), which the engine sends whole with its `Content-Length`. A
//! listing of a million-series store is then some 250 short jobs, not one job of 60 ms
//! that keeps a worker from the writes queued behind it.
//!
//! Dropping a body before its end (the client went away, a write timeout, a shutdown)
//! ends its registration with the store; that may happen on the reactor, so it never
//! waits for the store's lock (see [`SteppedReader`]'s `Drop`).

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::http::BodySource;
use crate::ingest::{Pipeline, SteppedRead, SteppedReader};
use crate::read::exposition::{MetricsRender, OwnFamily};
use crate::read::series::{SeriesFilter, SeriesRead};
use crate::tuning::{STREAM_PART, STREAM_PART_STEPS};

/// What the rendered text is written into: plain bytes or a gzip stream, whose output so
/// far can be handed out between steps.
pub trait Encoded: Write + Send {
    /// Encoded bytes ready to be handed out.
    fn ready(&self) -> usize;
    /// Moves the ready bytes to the end of `out`.
    fn take_into(&mut self, out: &mut Vec<u8>);
    /// Ends the encoding and moves what is left to the end of `out`.
    fn finish_into(self, out: &mut Vec<u8>) -> io::Result<()>;
}

impl Encoded for Vec<u8> {
    fn ready(&self) -> usize {
        self.len()
    }
    fn take_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
        self.clear();
    }
    fn finish_into(self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(&self);
        Ok(())
    }
}

impl Encoded for GzEncoder<Vec<u8>> {
    fn ready(&self) -> usize {
        self.get_ref().len()
    }
    fn take_into(&mut self, out: &mut Vec<u8>) {
        let done = self.get_mut();
        out.extend_from_slice(done);
        done.clear();
    }
    fn finish_into(self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(&self.finish()?);
        Ok(())
    }
}

/// A read of the store a part at a time: registered with the store on its first part
/// (a `HEAD` never asks for one), ended once the read is complete (or by its drop).
struct PartReader {
    pipeline: Arc<Pipeline>,
    reader: Option<SteppedReader>,
}

impl PartReader {
    fn new(pipeline: Arc<Pipeline>) -> PartReader {
        PartReader {
            pipeline,
            reader: None,
        }
    }

    /// Runs one part of `read`: at most [`STREAM_PART_STEPS`] steps, fewer once
    /// `enough(read)` holds after one. `true` once the read is complete (and its
    /// registration ended).
    fn part<R: SteppedRead>(&mut self, read: &mut R, enough: impl Fn(&R) -> bool) -> bool {
        let pipeline = &self.pipeline;
        let reader = self
            .reader
            .get_or_insert_with(|| SteppedReader::new(Arc::clone(pipeline)));
        let steps = Cell::new(0u32);
        let until = |r: &R| {
            steps.set(steps.get() + 1);
            steps.get() >= STREAM_PART_STEPS || enough(r)
        };
        if !reader.advance(read, until) {
            return false;
        }
        if let Some(reader) = self.reader.take() {
            reader.finish();
        }
        true
    }
}

/// The `/metrics` body: a render, the read it runs through, and the server's own families
/// (taken when the request was answered, rendered at the end).
pub struct MetricsBody<E: Encoded> {
    reader: PartReader,
    /// `None` once the body is complete.
    render: Option<MetricsRender<E>>,
    own: Vec<OwnFamily<'static>>,
}

/// The body of a `/metrics` answer over `pipeline`'s store, gzip-encoded when `gzip`.
pub fn metrics_body(
    pipeline: Arc<Pipeline>,
    own: Vec<OwnFamily<'static>>,
    gzip: bool,
) -> Box<dyn BodySource> {
    if gzip {
        // A scrape is compressed once and read once: the fast level.
        let gz = GzEncoder::new(Vec::new(), Compression::fast());
        Box::new(MetricsBody::new(pipeline, own, gz))
    } else {
        Box::new(MetricsBody::new(pipeline, own, Vec::new()))
    }
}

impl<E: Encoded> MetricsBody<E> {
    pub fn new(pipeline: Arc<Pipeline>, own: Vec<OwnFamily<'static>>, out: E) -> Self {
        MetricsBody {
            reader: PartReader::new(pipeline),
            render: Some(MetricsRender::new(out)),
            own,
        }
    }
}

impl<E: Encoded> BodySource for MetricsBody<E> {
    fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let Some(render) = self.render.as_mut() else {
            return Ok(true);
        };
        if !self.reader.part(render, |r| r.out().ready() >= STREAM_PART) {
            render.out_mut().take_into(out);
            return Ok(false);
        }
        // Every user series is written (and the store let go of): the server's own last.
        if let Some(render) = self.render.take() {
            render.finish(&self.own)?.finish_into(out)?;
        }
        Ok(true)
    }
}

/// The `/series` body: a read of the store a slice per call, then the listing.
pub struct SeriesBody {
    reader: PartReader,
    /// `None` once the listing is written.
    read: Option<SeriesRead>,
}

/// The body of a `/series` answer listing what `filter` selects of `pipeline`'s store.
pub fn series_body(pipeline: Arc<Pipeline>, filter: SeriesFilter) -> Box<dyn BodySource> {
    Box::new(SeriesBody {
        reader: PartReader::new(pipeline),
        read: Some(SeriesRead::new(filter)),
    })
}

impl BodySource for SeriesBody {
    fn fill(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let Some(read) = self.read.as_mut() else {
            return Ok(true);
        };
        if !self.reader.part(read, |_| false) {
            return Ok(false);
        }
        if let Some(read) = self.read.take() {
            read.finish(out);
        }
        Ok(true)
    }
}
