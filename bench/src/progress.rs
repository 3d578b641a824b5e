//! The live one-line progress indicator on stderr. Workers bump shared
//! atomic counters; a small thread redraws the line at most four times a
//! second, and only when stderr is a terminal. The line is cleared when the
//! indicator is finished or dropped.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters the workers update; all relaxed, read only for display.
#[derive(Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    pub open: AtomicU64,
}

impl Counters {
    pub fn done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        // Never underflows: `closed` follows a matching `opened`.
        let _ = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

/// Handle to the progress line; `finish` (or drop) stops and clears it.
pub struct Progress {
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts the indicator for `label`; `done_word` names what `done` counts.
    pub fn start(label: &str, done_word: &'static str, total: Option<u64>) -> Progress {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if std::io::stderr().is_terminal() {
            let c = Arc::clone(&counters);
            let s = Arc::clone(&stop);
            let label = label.to_string();
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || draw_loop(&label, done_word, total, &c, &s))
                .ok()
        } else {
            None
        };
        Progress {
            counters,
            stop,
            thread,
        }
    }

    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn draw_loop(label: &str, done_word: &str, total: Option<u64>, c: &Counters, stop: &AtomicBool) {
    let start = Instant::now();
    let mut last_done = 0u64;
    let mut last_at = start;
    let mut err = std::io::stderr();
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(250));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let done = c.done.load(Ordering::Relaxed);
        let dt = now.duration_since(last_at).as_secs_f64();
        let rate = if dt > 0.0 {
            (done.saturating_sub(last_done)) as f64 / dt
        } else {
            0.0
        };
        last_done = done;
        last_at = now;
        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
        let _ = write!(
            err,
            "\r\x1b[2K[{label}] {:>5.1}s  {done_word} {done}{of} ({rate:.0}/s)  open {}  errors {}",
            now.duration_since(start).as_secs_f64(),
            c.open.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        );
        let _ = err.flush();
    }
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}
