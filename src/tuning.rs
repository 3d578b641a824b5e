//! Every tuning constant of the server, each with the reason for its value.
//!
//! These are the numbers that trade memory against throughput, fairness against latency,
//! and that a benchmark might lead someone to change; the limits a user sets are flags
//! (`config.rs`), and protocol limits (header counts, chunk-size lines) stay beside the
//! parser that enforces them.

use std::time::Duration;

// ----- the reactor (net/reactor.rs) ---------------------------------------------------

/// Most bytes read from one connection per readiness pass; the rest waits for the next loop
/// turn so one fast sender cannot starve the others.
pub const READ_BUDGET: usize = 256 * 1024;

/// Most connections accepted per loop turn before serving the rest (the drain resumes on
/// the next turn without waiting for a new readiness event).
pub const ACCEPT_BUDGET: usize = 4096;

/// How long a refused or finished connection may keep sending before we close it anyway.
pub const LINGER: Duration = Duration::from_secs(2);

/// Pause before accepting again when out of file descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections over `--max-connections` still get a slot for their 503 and linger, up to
/// this many; beyond it they are closed right after the 503 is attempted.
pub const REJECT_SLACK: usize = 1024;

/// Timer wheel resolution.
pub const TICK: Duration = Duration::from_millis(50);

/// Read buffers of request bodies from this size up are "large": the reactor keeps a few
/// for reuse, so a steady stream of big writes does not allocate and fault in fresh memory
/// per request (smaller ones are exact-size and cheap, and pooling them would make the
/// pool grow with the number of connections). A connection whose last request needed one
/// reads its next request straight into one.
pub const LARGE_MIN: usize = 64 * 1024;

/// Largest buffer the pool keeps: bigger bodies are rare and would pin memory.
pub const LARGE_MAX: usize = 1 << 20;

/// Large buffers kept for reuse: about one per worker job in flight on a busy write load,
/// at most 16 MiB held.
pub const LARGE_POOLED: usize = 16;

/// First buffer for a connection known to send large bodies (a 1000-line write is ~110 KB).
pub const LARGE_START: usize = 256 * 1024;

/// Most jobs out with the workers at once. Past it, readable connections wait (their bytes
/// stay in the kernel) until completions free a slot: memory for requests in progress is
/// bounded however many connections speak at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// Reads of small requests land here before being copied into exact-size vectors.
pub const SCRATCH: usize = 64 * 1024;

// ----- the worker pool (net/worker_pool.rs) ---------------------------------------------

/// Most jobs a worker takes at once.
pub const MAX_CHUNK: usize = 64;

/// A worker publishes what it has finished at least this often, so one slow job (a large
/// write) does not hold back the answers to the quick ones taken with it.
pub const PUBLISH_EVERY: Duration = Duration::from_micros(500);

/// A worker without a job for this long hands the memory it freed back to the OS once
/// (`sys::release_idle_memory`), then sleeps until the next job: after a burst of writes,
/// mimalloc otherwise keeps the pages the burst's bodies used resident for as long as
/// the worker sleeps (45 MiB after loading 1 M series, a quarter of the store's size).
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// A job that ran this long (a big `/metrics` or `/series` read) makes its worker give the
/// rest of its share back to the queue, so requests taken with it are not held up for the
/// next slow one. Ordinary requests take microseconds; a big read, hundreds of ms.
pub const SLOW_JOB: Duration = Duration::from_millis(2);

// ----- reading into connection buffers (net/connection.rs) --------------------------------

/// Spare capacity from which reads go straight into `input` instead of through scratch.
pub const DIRECT_READ: usize = 16 * 1024;

/// Extra room reserved once a read fills the scratch buffer (a large body arriving before
/// its head has been parsed and its length is known).
pub const LARGE_BODY_START: usize = 192 * 1024;

// ----- the HTTP exchange (http/exchange.rs) ----------------------------------------------

/// Past this much pending output, stop answering pipelined requests until it is written:
/// a client that sends but never reads cannot make the server buffer without bound.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

// ----- request handlers (routes.rs) -----------------------------------------------------

/// A serving thread keeps its response-body buffer between requests up to this capacity;
/// a bigger one (a `/metrics` or `/series` of a large store) is freed before the next
/// request, so one big read does not pin its size in every worker.
pub const KEEP_BODY_CAPACITY: usize = 1 << 20;

// ----- the aggregator (ingest/mod.rs) ----------------------------------------------------

/// Batches applied per store-lock acquisition: enough to amortise the lock, few enough
/// that a `/metrics` reader waits at most a few milliseconds.
pub const APPLY_CHUNK: usize = 16;

/// How often the aggregator visits a slice of the store for `--series-ttl` expiry. Often
/// enough that each visit is a small slice (a few thousand buckets at a million series),
/// rarely enough that an idle server wakes ten times a second at most.
pub const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Shortest pass of the expiry sweep over the whole store (short TTLs: every tick visits
/// everything).
pub const EXPIRY_PASS_MIN: Duration = EXPIRY_TICK;

/// Longest pass of the expiry sweep: with the default hour-long TTL a series goes at most
/// about a minute late, and a tick touches a sixhundredth of the store.
pub const EXPIRY_PASS_MAX: Duration = Duration::from_secs(60);

/// Series groups a `/metrics` or `/series` read copies out per acquisition of the store
/// lock: a few milliseconds of work at most (about 1 µs a group), so the aggregator, and
/// the writes queued behind it, wait for one slice of a big read, never for all of it.
pub const READ_SLICE_GROUPS: usize = 4096;

/// Bytes a streamed response body (`/metrics`) aims to hand the connection per part: the
/// most a streaming connection holds in user space besides what the kernel holds, and
/// about 10 ms of plain rendering, so a part is a modest job for a worker. gzip parts are
/// counted after compression (about ten times the text).
pub const STREAM_PART: usize = 128 * 1024;

/// Most read steps (each a slice of up to `READ_SLICE_GROUPS` series groups, ~0.4 ms with
/// gzip) one job of a streamed `/metrics` answer or of a `/series` read may take: a job is
/// a worker a write may wait for when scrapers keep the workers busy. Measured at 1 M
/// series with one and two gzip scrapers in a loop (docs/benchmarks.md): four steps gave
/// a write p99 3.3-5.0 ms against 1.0-1.7 ms alone, one step 1.6-2.4 ms against 1.1-1.3 ms,
/// for a scrape ~12 % longer (more jobs).
pub const STREAM_PART_STEPS: u32 = 1;

/// Longest a sliced read waits between two slices for a waiting aggregator to take the
/// store lock (it applies a chunk in well under this); bounded so a reader always goes on.
pub const READ_YIELD_MAX: Duration = Duration::from_millis(20);

// ----- the write log (storage/) --------------------------------------------------------

/// Size at which a log segment is closed and the next one started. Segments are the unit
/// of deletion once a snapshot covers them, so smaller means disk is returned sooner; each
/// rotation costs a file creation, a directory `fsync` and a sync of the old segment, so
/// larger means fewer of those. At 64 MiB a disk writing 400 MB/s rotates about 6 times a
/// second at most, the log directory holds a few files per snapshot interval, and recovery
/// reads one segment into memory at a time.
pub const LOG_SEGMENT_BYTES: u64 = 64 << 20;

/// How often `--fsync interval` syncs the log while it holds unsynced writes: SPEC.md
/// promises "synced every second", so a power loss costs at most about this much of
/// acknowledged writes.
pub const LOG_SYNC_INTERVAL: Duration = Duration::from_secs(1);

// ----- forwarding (forward/) -----------------------------------------------------------

/// Most field values one forward request carries (SPEC "Forwarding"): large enough that a
/// request amortises its round trip, small enough that a receiver never refuses it for size
/// (VictoriaMetrics, Mimir and Prometheus accept far larger) and a resend after a lost
/// answer repeats little.
pub const FORWARD_MAX_VALUES: usize = 10_000;

/// Requests a forwarder keeps in flight to one target at a time (one sender lane each, a
/// series always in the same lane, so its samples arrive in log order). A receiver
/// handles a request on one core and spends part of it waiting (VictoriaMetrics: its own
/// flushes and merges): one at a time leaves it idle while the forwarder encodes, and the
/// forwarder idle while it works. Measured end to end into VictoriaMetrics on this 2-core
/// machine (10 M points, quiet machine): 4 lanes 2.8-3.1 M samples/s, 8 lanes 3.4-3.5 M,
/// 16 lanes 3.4 M; eight, with four requests each per round, is where it stops paying.
pub const FORWARD_LANES: usize = 8;

/// Field values a forwarder gathers from the log before encoding them into requests (at
/// most [`FORWARD_MAX_VALUES`] each): four requests per lane. Grouped by series, a request
/// then carries a quarter of the series with four times the samples each, which cuts a
/// receiver's work per sample (VictoriaMetrics: 0.34 -> 0.27 us CPU per sample measured
/// here, one lookup per run of samples); past it the gain is small (0.27 at 16 per lane)
/// while the memory held grows (about 30 bytes a value while encoding: with at most three
/// rounds per lane queued or in flight, about 30 MB for a target that is down).
pub const FORWARD_ROUND_VALUES: usize = FORWARD_MAX_VALUES * FORWARD_LANES * 4;

/// Longest a forwarder holds a partly filled batch before sending it (SPEC: batches leave
/// at least every second), so a trickle of writes is delivered within about a second.
pub const FORWARD_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long a graceful shutdown lets forwarders send what is committed before it stops
/// waiting for them (what they did not send stays in the log for the next start).
pub const FORWARD_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// First retry delay of a failing target; doubled per failure up to
/// [`FORWARD_BACKOFF_MAX`]. 100 ms rides out a receiver restart without hammering it.
pub const FORWARD_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest retry delay of our own choosing: a target that comes back is noticed within
/// 30 s, and a dead one costs one request per 30 s.
pub const FORWARD_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Longest `Retry-After` honoured. A receiver asking for more (an hour) is waited for this
/// long only, so a misconfigured proxy cannot stall a target past what its backlog holds.
pub const FORWARD_RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// Time to establish a forward connection (TCP and TLS).
pub const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for one whole forward request, sending the body to reading the answer; past it the
/// request is retried like a network error.
pub const FORWARD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a receiver's refusal kept for the log and `/stats` `last_error`.
pub const FORWARD_ERROR_BODY_MAX: usize = 512;
