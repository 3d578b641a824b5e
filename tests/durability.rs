//! Durability through the real server (SPEC.md "Durability", issue 11): an acknowledged
//! write survives `kill -9` exactly once under both fsync modes, also through rounds of
//! kills under concurrent writers (some landing during snapshots); a graceful restart keeps
//! everything and leaves a snapshot; a torn, truncated or damaged log, junk files and a
//! damaged snapshot never stop start-up; a second server on the directory is refused; a
//! full disk refuses writes with 503 and recovers without a restart; `--memory-only` leaves
//! no files; `fsync` is counted and really called; start-up says what it recovered.
//!
//! Each test owns a temp directory (never the working directory) that is removed at the
//! end, and every wait is bounded. Log segments and snapshots are found by listing
//! `DIR/wal/` and `DIR/snapshots/`, never by a file name of their own.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Timestamps of generated points are offsets from here (nanoseconds).
const BASE_NS: i64 = 1_700_000_000_000_000_000;
/// Longest a graceful stop may take on a loaded 2-core machine.
const STOP_LIMIT: Duration = Duration::from_secs(30);

// ----- A server on a data directory

/// Starts the server on data directory `dir` with `extra` flags. Unless `extra` sets
/// `--snapshot-interval`, it is an hour: a `kill -9` then leaves everything in the log only,
/// and the restart must replay it.
fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", path_str(dir)];
    if !extra.contains(&"--snapshot-interval") {
        args.extend(["--snapshot-interval", "3600"]);
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn kill9(s: &mut Server) {
    assert!(s.kill9(), "the server did not die on SIGKILL");
}

/// SIGTERM; the server must exit 0.
fn stop(s: &mut Server) {
    let code = s.terminate(STOP_LIMIT);
    assert_eq!(code, Some(0), "graceful stop: {}", s.log_text());
}

// ----- Points, and the aggregates they must produce

#[derive(Clone, Debug)]
struct Point {
    measurement: &'static str,
    tags: Vec<(&'static str, String)>,
    field: &'static str,
    value: i64,
    ts: i64,
}

impl Point {
    fn line(&self) -> String {
        let tags: String = self.tags.iter().map(|(k, v)| format!(",{k}={v}")).collect();
        format!(
            "{}{} {}={}i {}\n",
            self.measurement, tags, self.field, self.value, self.ts
        )
    }

    fn key(&self) -> String {
        let mut tags: Vec<(String, String)> = self
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        tags.sort();
        series_key(self.measurement, &tags, self.field)
    }
}

/// Measurement, sorted tags and field: one series.
fn series_key(measurement: &str, tags: &[(String, String)], field: &str) -> String {
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{measurement},{} {field}", tags.join(","))
}

fn body(points: &[Point]) -> String {
    points.iter().map(Point::line).collect()
}

/// One series' aggregates as `/series` shows them (integer values: sums are exact).
#[derive(Clone, Debug, PartialEq)]
struct Agg {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_ts: i64,
}

/// Every series' aggregates, by [`series_key`].
#[derive(Clone, Debug, Default, PartialEq)]
struct Aggregates(BTreeMap<String, Agg>);

impl Aggregates {
    fn of(points: &[Point]) -> Aggregates {
        let mut a = Aggregates::default();
        a.add(points);
        a
    }

    /// Adds points in arrival order: `last` is the greatest timestamp, a tie going to the
    /// later arrival.
    fn add(&mut self, points: &[Point]) {
        for p in points {
            let v = p.value as f64;
            self.0
                .entry(p.key())
                .and_modify(|a| {
                    a.count += 1;
                    a.sum += v;
                    a.min = a.min.min(v);
                    a.max = a.max.max(v);
                    if p.ts >= a.last_ts {
                        a.last = v;
                        a.last_ts = p.ts;
                    }
                })
                .or_insert(Agg {
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    last: v,
                    last_ts: p.ts,
                });
        }
    }

    /// What the server holds now: every series of `GET /series`.
    fn read(s: &Server) -> Aggregates {
        wait_aggregated(s);
        let r = get(s.addr, "/series?limit=100000000");
        assert_eq!(r.status, 200, "/series: {}", r.text());
        let v = r.json();
        assert_eq!(v["truncated"], false);
        let list = v["series"].as_array().expect("series array");
        Aggregates(list.iter().map(agg_of).collect())
    }

    fn get(&self, measurement: &str, tags: &[(&str, String)], field: &str) -> Option<&Agg> {
        let mut tags: Vec<(String, String)> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        tags.sort();
        self.0.get(&series_key(measurement, &tags, field))
    }
}

fn agg_of(s: &Value) -> (String, Agg) {
    let mut tags: Vec<(String, String)> = s["tags"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_string()))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let num = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    let key = series_key(
        s["measurement"].as_str().unwrap_or("?"),
        &tags,
        s["field"].as_str().unwrap_or("?"),
    );
    let agg = Agg {
        count: s["count"].as_u64().unwrap_or(0),
        sum: num("sum"),
        min: num("min"),
        max: num("max"),
        last: num("last"),
        last_ts: s["last_timestamp_ns"].as_i64().unwrap_or(i64::MIN),
    };
    (key, agg)
}

/// Fails listing (at most 10 of) the series where `got` and `want` differ.
fn assert_same(got: &Aggregates, want: &Aggregates, when: &str) {
    let mut diffs = Vec::new();
    for (k, w) in &want.0 {
        match got.0.get(k) {
            Some(g) if g == w => {}
            Some(g) => diffs.push(format!("{k}: got {g:?}, want {w:?}")),
            None => diffs.push(format!("{k}: missing, want {w:?}")),
        }
    }
    for (k, g) in &got.0 {
        if !want.0.contains_key(k) {
            diffs.push(format!("{k}: unexpected {g:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{when}: {} of {} series differ, e.g.\n{}",
        diffs.len(),
        want.0.len(),
        diffs[..diffs.len().min(10)].join("\n")
    );
}

/// `writes` writes of `lines` points over `series` series of `measurement`, values and
/// timestamps from `rng`: timestamps repeat and go back in time, so `last` is checked
/// for "greatest timestamp, later arrival on a tie".
fn mixed_writes(
    measurement: &'static str,
    writes: usize,
    lines: usize,
    series: usize,
    rng: &mut Rng,
) -> Vec<Vec<Point>> {
    (0..writes)
        .map(|k| {
            (0..lines)
                .map(|i| Point {
                    measurement,
                    tags: vec![("s", ((k * lines + i) % series).to_string())],
                    field: "v",
                    value: rng.below(2001) as i64 - 1000,
                    ts: BASE_NS + rng.below(500) as i64,
                })
                .collect()
        })
        .collect()
}

/// `writes` writes of `lines` points, each write its own series (`w=<k>`), so a write can be
/// told whole, missing, or (a bug) partly there.
fn one_series_per_write(measurement: &'static str, writes: usize, lines: usize) -> Vec<Vec<Point>> {
    (0..writes)
        .map(|k| {
            (0..lines)
                .map(|i| Point {
                    measurement,
                    tags: vec![("w", k.to_string())],
                    field: "v",
                    value: (k * 1000 + i) as i64,
                    ts: BASE_NS + i as i64,
                })
                .collect()
        })
        .collect()
}

/// Posts every write (one connection each); each must be acknowledged.
fn post_all(s: &Server, writes: &[Vec<Point>], acked: &mut Aggregates) {
    for (k, w) in writes.iter().enumerate() {
        let r = post(s.addr, "/write", body(w).as_bytes(), "");
        assert_eq!(r.status, 204, "write {k}: {}", r.text());
        acked.add(w);
    }
}

/// For writes made by [`one_series_per_write`]: which of them `got` holds. A write that is
/// there must be there whole and once.
fn writes_present(got: &Aggregates, writes: &[Vec<Point>]) -> Vec<bool> {
    writes
        .iter()
        .enumerate()
        .map(|(k, w)| {
            let want = Aggregates::of(w);
            let (key, agg) = want.0.iter().next().expect("a write has points");
            match got.0.get(key) {
                None => false,
                Some(g) => {
                    assert_eq!(g, agg, "write {k} is there, but not whole and once");
                    true
                }
            }
        })
        .collect()
}

// ----- The data directory on disk

/// Regular files directly in `dir`, sorted by name.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The newest file in `dir`: names sort in log order (segments and snapshots are numbered).
fn newest_in(dir: &Path) -> PathBuf {
    files_in(dir)
        .pop()
        .unwrap_or_else(|| panic!("no file in {}", dir.display()))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("?")
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn append_bytes(p: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

/// Inverts `n` bytes in the middle of the file.
fn flip_middle(p: &Path, n: usize) {
    let mut bytes = std::fs::read(p).expect("read");
    let mid = bytes.len() / 2;
    for b in bytes.iter_mut().skip(mid).take(n) {
        *b ^= 0xFF;
    }
    std::fs::write(p, bytes).expect("write back");
}

/// `name` with its last run of digits incremented (width kept): the name the file after it
/// would have, for numbered segments.
fn next_name(name: &str) -> String {
    let end = name
        .rfind(|c: char| c.is_ascii_digit())
        .expect("segment names carry their number")
        + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let n: u128 = name[start..end].parse().expect("digits");
    let width = end - start;
    format!("{}{:0width$}{}", &name[..start], n + 1, &name[end..])
}

/// Starts a server on a fresh `DIR = tmp/data`, has it acknowledge `writes`, and kills it
/// with SIGKILL: everything is in the log, nothing in a snapshot.
fn crashed_with(tmp: &TempDir, writes: &[Vec<Point>]) -> PathBuf {
    let dir = tmp.join("data");
    let mut s = start(&dir, &[]);
    post_all(&s, writes, &mut Aggregates::default());
    kill9(&mut s);
    dir
}

// ----- Log lines

/// The message of the first log line at `level` that contains `needle`.
fn log_line(s: &Server, level: &str, needle: &str) -> Option<String> {
    s.log
        .lock()
        .unwrap()
        .iter()
        .find(|l| log_level(l) == Some(level) && l.contains(needle))
        .map(|l| message(l).to_string())
}

/// The text after an `env_logger` line's `[time LEVEL target]` prefix.
fn message(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, m)| m)
}

/// Every maximal run of digits in `text`, as numbers.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// Whether `text` states a duration: `0.012 s`, `12ms`, `1.5 seconds`, `3.2µs`...
fn states_duration(text: &str) -> bool {
    const UNITS: [&str; 8] = ["s", "ms", "us", "µs", "ns", "sec", "secs", "seconds"];
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| ",;:.()[]".contains(c)))
        .collect();
    words.iter().enumerate().any(|(i, w)| {
        let is_num = |t: &str| !t.is_empty() && t.parse::<f64>().is_ok();
        (is_num(w) && words.get(i + 1).is_some_and(|u| UNITS.contains(u)))
            || UNITS.iter().any(|u| w.strip_suffix(u).is_some_and(is_num))
    })
}

// ===== 1. Acknowledged means kept

fn acknowledged_writes_survive_kill9(fsync: &str) {
    let tmp = TempDir::new(&format!("ack-{fsync}"));
    let dir = tmp.join("data");
    let writes = mixed_writes("ack", 60, 25, 7, &mut Rng::new(1));
    let mut want = Aggregates::default();
    let mut s = start(&dir, &["--fsync", fsync]);
    post_all(&s, &writes, &mut want);
    assert_same(&Aggregates::read(&s), &want, "before the kill");
    kill9(&mut s);

    let s = start(&dir, &["--fsync", fsync]);
    let when = format!("after kill -9 and a restart (--fsync {fsync})");
    assert_same(&Aggregates::read(&s), &want, &when);
    let points = writes.iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(
        counter(&s.stats(), "recovered_points"),
        points,
        "no snapshot was due, so the whole log is replayed"
    );
}

#[test]
fn acknowledged_writes_survive_kill9_fsync_always() {
    acknowledged_writes_survive_kill9("always");
}

/// A process crash loses nothing acknowledged under `interval` either: the log is written
/// (to the page cache) before the 204; only a power loss differs between the modes.
#[test]
fn acknowledged_writes_survive_kill9_fsync_interval() {
    acknowledged_writes_survive_kill9("interval");
}

// ===== 2. kill -9 rounds under concurrent writers

const WRITERS: usize = 4;
const POINTS_PER_WRITE: u64 = 50;
/// Pause between a writer's acknowledged write and its next one.
const WRITE_PACING: Duration = Duration::from_millis(2);
/// `--fsync` and `--snapshot-interval` of each round; an interval of 1 s puts snapshots
/// under way when some of the kills land.
const ROUNDS: [(&str, &str); 4] = [
    ("always", "3600"),
    ("interval", "1"),
    ("always", "1"),
    ("interval", "3600"),
];

/// Writer `w`'s write whose first point has sequence number `first`: points `seq = first..`,
/// each at `BASE_NS + seq µs`, so a writer's points are ordered in time as in sequence.
fn seq_body(w: usize, first: u64) -> String {
    (first..first + POINTS_PER_WRITE)
        .map(|q| format!("k9,w={w} seq={q}i {}\n", BASE_NS + q as i64 * 1000))
        .collect()
}

/// What one writer did in a round, in points.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    acked: u64,
    /// The write sent but never answered (the kill came first): in the log whole or not at
    /// all.
    in_flight: u64,
}

/// Writes continuously on one keep-alive connection, starting at sequence number `seq`,
/// until the connection dies (the kill), `stop`, or 40 s.
fn write_until_killed(
    addr: SocketAddr,
    w: usize,
    mut seq: u64,
    acked: &AtomicU64,
    stop: &AtomicBool,
) -> Written {
    let mut out = Written::default();
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return out;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    let mut r = Reader::new(stream);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let b = seq_body(w, seq);
        let raw = format!(
            "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
            b.len(),
            b
        );
        let answer = match r.stream.write_all(raw.as_bytes()) {
            Ok(()) => r.try_response_quiet(),
            Err(_) => None,
        };
        match answer.map(|a| a.status) {
            Some(204) => {
                seq += POINTS_PER_WRITE;
                out.acked += POINTS_PER_WRITE;
                acked.fetch_add(POINTS_PER_WRITE, Ordering::Relaxed);
                // Pacing, standing for no condition: keeps the log (and the replay after
                // each kill, in a debug build) to tens of thousands of points per round.
                std::thread::sleep(WRITE_PACING);
            }
            // Refused whole (queue full): sent again with the same sequence numbers.
            Some(503) => {}
            Some(other) => panic!("writer {w}: unexpected status {other}"),
            None => {
                out.in_flight = POINTS_PER_WRITE;
                break;
            }
        }
    }
    out
}

/// Checks writer `w`'s series holds whole writes, each once, from sequence number 0 on,
/// `lo..=hi` points; returns how many points it holds.
fn check_writer(got: &Aggregates, w: usize, lo: u64, hi: u64) -> u64 {
    let agg = got.get("k9", &[("w", w.to_string())], "seq");
    let c = agg.map_or(0, |a| a.count);
    assert!(
        (lo..=hi).contains(&c) && c % POINTS_PER_WRITE == 0,
        "writer {w}: {c} points; acknowledged {lo}, at most {hi} with the write in flight"
    );
    if let Some(a) = agg {
        let last = (c - 1) as f64;
        let want = Agg {
            count: c,
            sum: (c * (c - 1) / 2) as f64,
            min: 0.0,
            max: last,
            last,
            last_ts: BASE_NS + (c as i64 - 1) * 1000,
        };
        assert_eq!(
            a, &want,
            "writer {w}: not a prefix of whole writes, each once"
        );
    }
    c
}

/// Runs the writers against `s` until a SIGKILL at a random moment; what each wrote.
fn kill_round(s: &mut Server, next: &[u64; WRITERS], rng: &mut Rng) -> Vec<Written> {
    let acked: Vec<AtomicU64> = (0..WRITERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let addr = s.addr;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (acked, stop) = (&acked[w], &stop);
                scope.spawn(move || write_until_killed(addr, w, next[w], acked, stop))
            })
            .collect();
        let started = wait_until(Duration::from_secs(20), || {
            acked.iter().all(|a| a.load(Ordering::Relaxed) > 0)
        });
        if started {
            // The kill moment is what is random: this pause stands for no condition.
            std::thread::sleep(Duration::from_millis(rng.below(1500)));
        }
        kill9(s);
        stop.store(true, Ordering::Relaxed);
        let written: Vec<Written> = handles
            .into_iter()
            .map(|h| h.join().expect("writer panicked"))
            .collect();
        assert!(
            started,
            "not every writer got a write acknowledged within 20 s"
        );
        written
    })
}

#[test]
fn kill9_rounds_keep_every_acknowledged_point_once() {
    let mut rng = Rng::from_env_or_clock("kill9_rounds");
    let tmp = TempDir::new("rounds");
    let dir = tmp.join("data");
    let flags = |round: usize| {
        let (fsync, interval) = ROUNDS[round % ROUNDS.len()];
        ["--fsync", fsync, "--snapshot-interval", interval]
    };
    // Points each writer's series holds, verified: the next round continues from there.
    let mut next = [0u64; WRITERS];
    let mut s = start(&dir, &flags(0));
    for (round, config) in ROUNDS.iter().enumerate() {
        let written = kill_round(&mut s, &next, &mut rng);
        s = start(&dir, &flags(round + 1));
        let got = Aggregates::read(&s);
        for (w, done) in written.iter().enumerate() {
            let lo = next[w] + done.acked;
            next[w] = check_writer(&got, w, lo, lo + done.in_flight);
        }
        eprintln!("round {round} {config:?}: {written:?}; held now {next:?}");
    }
    // A graceful stop and restart keep exactly what the rounds left.
    stop(&mut s);
    let s = start(&dir, &[]);
    let got = Aggregates::read(&s);
    for (w, &n) in next.iter().enumerate() {
        check_writer(&got, w, n, n);
    }
}

// ===== 3. Graceful restart

#[test]
fn graceful_restart_keeps_everything_and_writes_a_snapshot() {
    let tmp = TempDir::new("graceful");
    let dir = tmp.join("data");
    let writes = mixed_writes("grace", 40, 25, 5, &mut Rng::new(3));
    let mut want = Aggregates::default();
    let mut s = start(&dir, &[]);
    post_all(&s, &writes, &mut want);
    stop(&mut s);
    let snapshots = files_in(&dir.join("snapshots"));
    assert!(
        !snapshots.is_empty(),
        "no snapshot under {} after a graceful stop",
        dir.display()
    );

    let s = start(&dir, &[]);
    assert_same(&Aggregates::read(&s), &want, "after a graceful restart");
    let st = s.stats();
    assert!(counter(&st, "snapshot_last_unix") > 0, "stats: {st}");
    assert_eq!(
        counter(&st, "recovered_points"),
        0,
        "the shutdown snapshot covers the whole log: nothing is left to replay"
    );
}

// ===== 4. Damage in the data directory

const DAMAGE_WRITES: usize = 30;
const DAMAGE_LINES: usize = 20;

/// Restarts on `dir` and checks no write is partly there, and that the server started
/// with no panic; returns which writes are there.
fn restart_after_damage(dir: &Path, writes: &[Vec<Point>]) -> (Server, Vec<bool>) {
    let s = start(dir, &[]);
    let present = writes_present(&Aggregates::read(&s), writes);
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
    (s, present)
}

#[test]
fn junk_appended_to_the_newest_segment_is_cut_with_a_warning() {
    let tmp = TempDir::new("torn");
    let writes = one_series_per_write("torn", DAMAGE_WRITES, DAMAGE_LINES);
    let dir = crashed_with(&tmp, &writes);
    let segment = newest_in(&dir.join("wal"));
    let good_len = file_len(&segment);
    append_bytes(&segment, &Rng::new(7).bytes(100));

    let (mut s, present) = restart_after_damage(&dir, &writes);
    assert!(
        present.iter().all(|&p| p),
        "lost acknowledged writes: {present:?}"
    );
    let warning = log_line(&s, "WARN", file_name(&segment))
        .unwrap_or_else(|| panic!("no warning naming {}: {}", segment.display(), s.log_text()));
    let numbers = numbers_in(&warning);
    assert!(
        numbers.contains(&good_len) && numbers.contains(&100),
        "the warning names offset {good_len} and 100 bytes dropped: {warning}"
    );

    // The tail was cut, so what is appended next is readable after another crash.
    let more = one_series_per_write("torn2", 1, DAMAGE_LINES);
    post_all(&s, &more, &mut Aggregates::default());
    kill9(&mut s);
    let (s, present) = restart_after_damage(&dir, &writes);
    assert!(
        present.iter().all(|&p| p),
        "lost acknowledged writes: {present:?}"
    );
    assert_eq!(writes_present(&Aggregates::read(&s), &more), [true]);
    assert_eq!(counter(&s.stats(), "log_corrupt_records"), 0);
}

#[test]
fn truncated_newest_segment_loses_only_its_torn_record() {
    let tmp = TempDir::new("trunc");
    let writes = one_series_per_write("trunc", DAMAGE_WRITES, DAMAGE_LINES);
    let dir = crashed_with(&tmp, &writes);
    let segment = newest_in(&dir.join("wal"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    f.set_len(file_len(&segment) - 3).expect("truncate");
    drop(f);

    let (s, present) = restart_after_damage(&dir, &writes);
    // The last write's record lost its end: that write is gone whole (or, if the log ends
    // with a record of another kind, still there whole); every earlier one is kept.
    assert!(
        present[..DAMAGE_WRITES - 1].iter().all(|&p| p),
        "lost writes before the torn record: {present:?}"
    );
    assert!(
        log_line(&s, "WARN", file_name(&segment)).is_some(),
        "no warning naming {}: {}",
        segment.display(),
        s.log_text()
    );
}

#[test]
fn flipped_bytes_mid_segment_skip_one_record_and_replay_the_rest() {
    let tmp = TempDir::new("flip");
    let writes = one_series_per_write("flip", DAMAGE_WRITES, DAMAGE_LINES);
    let dir = crashed_with(&tmp, &writes);
    let segment = newest_in(&dir.join("wal"));
    flip_middle(&segment, 8);

    let (s, present) = restart_after_damage(&dir, &writes);
    let quarter = DAMAGE_WRITES / 4;
    assert!(
        present[..quarter].iter().all(|&p| p)
            && present[DAMAGE_WRITES - quarter..].iter().all(|&p| p),
        "writes far from the damage must be kept, those after it replayed: {present:?}"
    );
    assert!(
        present.iter().any(|&p| !p),
        "a damaged record was replayed: {present:?}"
    );
    assert!(
        counter(&s.stats(), "log_corrupt_records") >= 1,
        "stats: {}",
        s.stats()
    );
    assert!(
        log_line(&s, "ERROR", file_name(&segment)).is_some(),
        "no error naming {}: {}",
        segment.display(),
        s.log_text()
    );
}

#[test]
fn junk_files_and_an_empty_segment_are_ignored() {
    let tmp = TempDir::new("junk");
    let writes = one_series_per_write("junk", DAMAGE_WRITES, DAMAGE_LINES);
    let dir = crashed_with(&tmp, &writes);
    let mut rng = Rng::new(11);
    let (wal, snapshots) = (dir.join("wal"), dir.join("snapshots"));
    // An empty segment numbered after the newest (a crash just after creating it).
    let segment = newest_in(&wal);
    std::fs::write(wal.join(next_name(file_name(&segment))), b"").expect("empty segment");
    for d in [&wal, &snapshots] {
        std::fs::write(d.join("junk.bin"), rng.bytes(4096)).expect("junk");
        std::fs::write(d.join("notes.txt"), b"not metricstream's\n").expect("junk");
        std::fs::write(d.join("empty"), b"").expect("junk");
        std::fs::create_dir_all(d.join("subdir")).expect("junk dir");
    }
    std::fs::write(dir.join("stray.txt"), rng.bytes(100)).expect("junk");

    let (mut s, present) = restart_after_damage(&dir, &writes);
    assert!(
        present.iter().all(|&p| p),
        "lost acknowledged writes: {present:?}"
    );
    // It goes on logging and snapshotting among the junk, and starts from that again.
    let more = one_series_per_write("junk2", 3, DAMAGE_LINES);
    post_all(&s, &more, &mut Aggregates::default());
    stop(&mut s);
    let (s, present) = restart_after_damage(&dir, &writes);
    assert!(
        present.iter().all(|&p| p),
        "lost acknowledged writes: {present:?}"
    );
    assert_eq!(
        writes_present(&Aggregates::read(&s), &more),
        [true, true, true]
    );
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_previous_one() {
    let tmp = TempDir::new("snapfall");
    let dir = tmp.join("data");
    let writes = one_series_per_write("snap", 20, DAMAGE_LINES);
    let (before, after) = writes.split_at(10);
    let mut s = start(&dir, &["--snapshot-interval", "1"]);
    post_all(&s, before, &mut Aggregates::default());
    assert!(
        wait_until(Duration::from_secs(15), || counter(
            &s.stats(),
            "snapshot_last_unix"
        ) > 0),
        "no snapshot within 15 s at --snapshot-interval 1"
    );
    post_all(&s, after, &mut Aggregates::default());
    stop(&mut s);
    let snapshots = files_in(&dir.join("snapshots"));
    assert!(
        snapshots.len() >= 2,
        "the two newest snapshots are kept: {snapshots:?}"
    );
    flip_middle(&newest_in(&dir.join("snapshots")), 8);

    let (_s, present) = restart_after_damage(&dir, &writes);
    assert!(
        present.iter().all(|&p| p),
        "lost acknowledged writes: {present:?}"
    );
}

// ===== 5. One server per data directory

#[test]
fn second_server_on_the_same_directory_exits_1_naming_it() {
    let tmp = TempDir::new("lock");
    let dir = tmp.join("data");
    let first = start(&dir, &[]);
    let (code, err) = run_expecting_exit(
        &["--listen", "127.0.0.1:0", "--data-dir", path_str(&dir)],
        &[("RUST_LOG", "error")],
    );
    assert_eq!(code, Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains(path_str(&dir)),
        "names the directory: {err}"
    );
    assert!(
        numbers_in(lines[0]).contains(&(first.pid() as u64)),
        "names the holder (its pid): {err}"
    );

    // The first keeps serving.
    assert_eq!(get(first.addr, "/ping").status, 204);
    let w = one_series_per_write("lock", 1, 5);
    let mut want = Aggregates::default();
    post_all(&first, &w, &mut want);
    assert_same(&Aggregates::read(&first), &want, "the first server");
}

// ===== 6. --memory-only

/// Writes, reads back exactly, and stops gracefully.
fn serve_in_memory(mut s: Server) {
    let w = mixed_writes("mem", 5, 10, 3, &mut Rng::new(5));
    let mut want = Aggregates::default();
    post_all(&s, &w, &mut want);
    assert_same(&Aggregates::read(&s), &want, "--memory-only");
    stop(&mut s);
}

#[test]
fn memory_only_creates_no_files() {
    let tmp = TempDir::new("memonly");
    // The flag, with a data directory that must not appear.
    let dir = tmp.join("data");
    serve_in_memory(Server::start(&[
        "--memory-only",
        "--data-dir",
        path_str(&dir),
    ]));
    assert!(!dir.exists(), "{} was created", dir.display());
    // The variable, with the default data directory (relative to the working directory).
    let env = [("METRICSTREAM_MEMORY_ONLY", "true")];
    serve_in_memory(Server::spawn_in(Some(tmp.path()), &[], &[], &env));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(
        left.is_empty(),
        "created in the working directory: {left:?}"
    );
}

/// Forwarding reads the write log, which `--memory-only` turns off: exit 2 with one line
/// (not clap's "unexpected argument", which would exit 2 as well, for the wrong reason).
#[test]
fn memory_only_with_a_forward_target_is_a_config_error() {
    let (code, err) = run_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--memory-only",
            "--remote-write-url",
            "http://127.0.0.1:9/api/v1/write",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "stderr: {err}");
    assert!(
        err.contains("memory-only") && !err.contains("unexpected argument"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

// ===== 7. Disk full

/// A tmpfs mounted on a directory for the test, unmounted on drop (also on failure).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Write `k` of the full-disk test: its own series, 1000 points.
fn big_write(k: usize, tags: &[(&'static str, &str)]) -> Vec<Point> {
    (0..1000)
        .map(|i| {
            let mut t = vec![("w", k.to_string())];
            t.extend(tags.iter().map(|(a, b)| (*a, b.to_string())));
            Point {
                measurement: "full",
                tags: t,
                field: "v",
                value: i,
                ts: BASE_NS + i,
            }
        })
        .collect()
}

#[test]
fn full_disk_refuses_writes_with_503_and_recovers_without_restart() {
    let tmp = TempDir::new("full");
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    // Dropped after the server (declared before it): unmounted once nothing uses it.
    let _tmpfs = match Tmpfs::mount(&mnt, "4m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipping the full-disk test: {why}");
            return;
        }
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 1 << 20]).expect("filler");
    let dir = mnt.join("data");
    let mut s = start(&dir, &[]);
    let mut want = Aggregates::default();

    let mut refused = None;
    for k in 0..2000 {
        let w = big_write(k, &[]);
        let r = post(s.addr, "/write", body(&w).as_bytes(), "");
        match r.status {
            204 => want.add(&w),
            503 => {
                refused = Some((k, r));
                break;
            }
            other => panic!("write {k}: {other} {}", r.text()),
        }
    }
    let (k, r) = refused.expect("a 4 MiB disk never filled up");
    assert!(r.header("Retry-After").is_some(), "{r:?}");
    let v2 = big_write(k + 1, &[]);
    let r = post(s.addr, "/api/v2/write?bucket=b", body(&v2).as_bytes(), "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some(), "{r:?}");
    assert_eq!(r.json()["code"], "unavailable", "{}", r.text());

    // Reads go on, and nothing of either refused write is there.
    assert_same(&Aggregates::read(&s), &want, "with the disk full");
    assert_eq!(get(s.addr, "/metrics").status, 200);

    // Space comes back: writes succeed again, without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let again = big_write(k + 2, &[]);
    let accepted = wait_until(Duration::from_secs(10), || {
        let r = post(s.addr, "/write", body(&again).as_bytes(), "");
        assert!(matches!(r.status, 204 | 503), "{r:?}");
        r.status == 204
    });
    assert!(accepted, "writes still refused after space came back");
    want.add(&again);
    let v2 = big_write(k + 3, &[("db", "b")]);
    let r = post(s.addr, "/api/v2/write?bucket=b", body(&v2).as_bytes(), "");
    assert_eq!(r.status, 204, "{}", r.text());
    want.add(&v2);
    assert_same(&Aggregates::read(&s), &want, "after space came back");

    // The refused writes do not come back from the log either.
    kill9(&mut s);
    let s = start(&dir, &[]);
    assert_same(&Aggregates::read(&s), &want, "after a restart");
}

// ===== 8. fsync really happens

/// Posts `n` one-point writes on one keep-alive connection; each must be acknowledged.
fn keepalive_writes(addr: SocketAddr, tag: usize, n: usize) {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut r = Reader::new(stream);
    for i in 0..n {
        let b = format!("sync,t={tag} v={i}i\n");
        r.send(
            format!(
                "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
                b.len(),
                b
            )
            .as_bytes(),
        );
        assert_eq!(r.response().status, 204);
    }
}

#[test]
fn log_fsyncs_cover_every_acknowledged_write() {
    let tmp = TempDir::new("fsyncs");
    let s = start(&tmp.join("data"), &["--fsync", "always"]);
    let fsyncs = || counter(&s.stats(), "log_fsyncs");
    // One write at a time: each arrives after the previous sync, so each needs its own.
    let before = fsyncs();
    keepalive_writes(s.addr, 0, 20);
    let sequential = fsyncs() - before;
    assert!(
        sequential >= 20,
        "{sequential} fsyncs for 20 sequential writes"
    );
    // Concurrent writes: one sync may cover several (group commit), never less than one.
    let before = fsyncs();
    std::thread::scope(|scope| {
        for t in 1..=4 {
            scope.spawn(move || keepalive_writes(s.addr, t, 20));
        }
    });
    let concurrent = fsyncs() - before;
    assert!(
        (1..=80).contains(&concurrent),
        "{concurrent} fsyncs for 80 concurrent writes"
    );
}

#[test]
fn fsync_interval_syncs_within_seconds() {
    let tmp = TempDir::new("fsync-interval");
    let s = start(&tmp.join("data"), &["--fsync", "interval"]);
    let before = counter(&s.stats(), "log_fsyncs");
    keepalive_writes(s.addr, 0, 5);
    assert!(
        wait_until(Duration::from_secs(5), || counter(&s.stats(), "log_fsyncs")
            > before),
        "no fsync within 5 s of unsynced writes under --fsync interval"
    );
}

/// SIGKILLs a process on drop unless disarmed (for the server under strace, whose PID is
/// not the one the harness holds).
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn fsync_calls_are_seen_by_strace() {
    if !tool_available("strace", "METRICSTREAM_REQUIRE_STRACE") {
        return;
    }
    let probe = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: strace cannot trace here (ptrace not permitted?): {probe:?}");
        return;
    }
    let tmp = TempDir::new("strace");
    let dir = tmp.join("data");
    let trace = tmp.join("trace.txt");
    let strace = [
        "strace",
        "-f",
        "-e",
        "trace=fdatasync,fsync",
        "-o",
        path_str(&trace),
    ];
    let args = [
        "--data-dir",
        path_str(&dir),
        "--fsync",
        "always",
        "--snapshot-interval",
        "3600",
    ];
    let mut s = Server::spawn(&strace, &args, &[]);
    // The harness holds strace's PID; the server is its only child.
    let server = child_pids(s.pid());
    assert_eq!(server.len(), 1, "children of strace: {server:?}");
    let mut guard = KillOnDrop(Some(server[0]));
    keepalive_writes(s.addr, 0, 5);
    signal(server[0], libc::SIGTERM);
    assert!(
        wait_until(STOP_LIMIT, || !s.running()),
        "the server under strace did not stop"
    );
    guard.0 = None;
    let text = std::fs::read_to_string(&trace).expect("trace file");
    assert!(
        text.contains("fdatasync(") || text.contains("fsync("),
        "no fsync or fdatasync in the trace:\n{text}"
    );
}

/// A write whose body came in a later read (here: after `100 Continue`) had the engine ask
/// for the whole body; once its 204 is acknowledged the connection must be ready for the
/// next request at once, not wait for that many bytes (found by the write benchmark:
/// keep-alive writers stalled until the header timeout answered 408).
#[test]
fn keepalive_after_a_body_that_came_in_a_later_read_answers_the_next_request() {
    let tmp = TempDir::new("continue");
    let s = start(&tmp.join("data"), &["--header-timeout", "2"]);
    let mut r = Reader::new(s.connect());
    for i in 0..3 {
        let b = one_series_per_write("cont", 1, 200)
            .pop()
            .map(|w| body(&w))
            .unwrap_or_default();
        r.send(
            format!(
                "POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.response().status, 100, "round {i}");
        r.send(b.as_bytes());
        assert_eq!(r.response().status, 204, "round {i}");
        r.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            r.response().status,
            204,
            "round {i}: the ping after the write"
        );
    }
}

// ===== 9. Start-up says what it recovered

#[test]
fn startup_logs_what_it_recovered() {
    let tmp = TempDir::new("boot");
    let writes = mixed_writes("boot", 12, 10, 3, &mut Rng::new(9));
    let dir = crashed_with(&tmp, &writes);
    let s = start(&dir, &[]);
    let line = log_line(&s, "INFO", "recovered")
        .unwrap_or_else(|| panic!("no info line saying what was recovered: {}", s.log_text()));
    let numbers = numbers_in(&line);
    assert!(
        numbers.contains(&3) && numbers.contains(&120),
        "3 series and 120 points: {line}"
    );
    assert!(line.contains("segment"), "how many segments: {line}");
    assert!(states_duration(&line), "how long it took: {line}");
}

#[test]
fn helpers_parse_what_they_should() {
    assert_eq!(
        next_name("00000000000000000007.wal"),
        "00000000000000000008.wal"
    );
    assert_eq!(next_name("seg-0099.log"), "seg-0100.log");
    assert!(states_duration("replayed 3 points in 0.012 s"));
    assert!(states_duration("in 12ms."));
    assert!(states_duration("took 1.5 seconds"));
    assert!(!states_duration("recovered 3 series"));
    assert_eq!(numbers_in("a 12 b,300;x7"), [12, 300, 7]);
}
