//! Out of file descriptors: the server runs under `prlimit --nofile=64` and is flooded with
//! connections. It must keep serving the connections it has, not spin on `EMFILE`, warn at
//! a limited rate, not crash, and serve new connections again once the flood goes away.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const FLOOD: usize = 300;
const WINDOW: Duration = Duration::from_secs(2);

fn have_prlimit() -> bool {
    std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn out_of_descriptors_pauses_accepts_without_spinning_and_recovers() {
    if !have_prlimit() {
        eprintln!("skipping: prlimit (util-linux) is not installed");
        return;
    }
    let mut s = start_wrapped(&["prlimit", "--nofile=64", "--"], &[], &[]);
    assert!(
        s.log_text().contains("RLIMIT_NOFILE soft 64 hard 64"),
        "log: {}",
        s.log_text()
    );
    let fds0 = quiet_fds(&s);
    // An established keep-alive connection: it must be served throughout.
    let mut keep = Reader::new(s.connect());
    assert_eq!(keep.get("/ping").status, 204);

    // The flood: far more connections than descriptors, each with a request. The kernel
    // completes the handshakes; the server can take only as many as it has fds for.
    let cpu0 = cpu_time(s.pid());
    let t0 = Instant::now();
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| {
            let mut st = TcpStream::connect_timeout(&s.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("flood connect {}: {}", i, e));
            st.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            st
        })
        .collect();
    // Hold the flood for the window while the established connection keeps asking.
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    while t0.elapsed() < WINDOW {
        let t = Instant::now();
        assert_eq!(
            keep.get("/ping").status,
            204,
            "established connection during the flood"
        );
        worst = worst.max(t.elapsed());
        asked += 1;
        // Pacing: the established client asks about 20 times a second.
        std::thread::sleep(Duration::from_millis(50));
    }
    let window = t0.elapsed();
    let cpu = cpu_time(s.pid()) - cpu0;
    let fds_during = s.fd_count();
    let mid = keep.stats();
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "server exited during the flood: {}",
        s.log_text()
    );

    // The clients go; the server must come back on its own.
    let t_gone = Instant::now();
    flood.clear();
    let mut recovered = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let Ok(st) = TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)) else {
            return false;
        };
        st.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut r = Reader::new(st);
        r.send(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let ok = r.try_response_to(false).is_some_and(|r| r.status == 204);
        if ok {
            recovered = Some(t_gone.elapsed());
        }
        ok
    });
    // try_response_to panics on a read timeout; reaching here means answered or closed.
    assert!(
        ok,
        "no new connection served within 10 s after the flood went away"
    );

    // The warning was written during the flood; it reaches us through a pipe.
    s.wait_for_log("accept failed", Duration::from_secs(2));
    let log = s.log_text();
    let fd_warns: Vec<&str> = log
        .lines()
        .filter(|l| log_level(l) == Some("WARN") && l.contains("accept failed"))
        .collect();
    let cpu_share = cpu.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "fd exhaustion: {} connections flooded at a 64-fd server; over {:?} it used {:?} CPU \
         ({:.1}% of a core), held {} fds, accept_errors {}; established connection: {} \
         requests, worst {:?}; {} accept warning line(s); new connections served again {:?} \
         after the flood closed",
        FLOOD,
        window,
        cpu,
        cpu_share * 100.0,
        fds_during,
        mid["accept_errors"],
        asked,
        worst,
        fd_warns.len(),
        recovered.unwrap()
    );
    assert!(
        cpu_share < 0.25,
        "server used {:.0}% of a core while out of descriptors",
        cpu_share * 100.0
    );
    assert!(
        (1..=2).contains(&fd_warns.len()),
        "expected one rate-limited warning for running out of descriptors, got: {:#?}",
        fd_warns
    );
    assert!(counter(&mid, "accept_errors") >= 1);
    assert!(
        worst < Duration::from_secs(1),
        "established connection waited {:?}",
        worst
    );

    // Every connection is gone; the established one is the last.
    drop(keep);
    settles_to(&s, 0, fds0, Duration::from_secs(10)).unwrap();
    assert_eq!(
        s.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        s.log_text()
    );
}
