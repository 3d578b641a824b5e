//! Reading one counter from a receiver's Prometheus text exposition (the
//! `forward` scenario counts arrivals with VictoriaMetrics' own
//! `vm_rows_inserted_total{type="promremotewrite"}`): one blocking HTTP/1.0
//! GET per reading, so the answer ends at the server's close and needs no
//! chunked decoding. It only reads from loopback and never writes anything.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest exposition read; VictoriaMetrics' own is a few hundred KB.
const MAX_BYTES: u64 = 64 << 20;

/// Fetches `path` from `addr` and returns the body of a `200` answer.
pub fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: the request leaves in one segment.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: metricstream-bench\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_BYTES).read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no complete response head"))?;
    let status_line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status_line);
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!(
            "GET {path} answered {:?}",
            status.trim_end()
        )));
    }
    Ok(raw.split_off(split + 4))
}

/// The value of the sample written exactly as `series` (name and labels as
/// the exposition spells them, e.g. `up{job="x"}`) in an exposition text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        // A longer name that merely starts with `series` is another series.
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Reads `series` from `http://addr/metrics`; a series the receiver does not
/// (yet) export reads as `None`.
pub fn counter(
    addr: SocketAddr,
    host: &str,
    series: &str,
    timeout: Duration,
) -> io::Result<Option<f64>> {
    let body = get(addr, host, "/metrics", timeout)?;
    Ok(sample(&String::from_utf8_lossy(&body), series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_series_only() {
        let text = "# HELP x\nvm_rows_inserted_total{type=\"influx\"} 5\nvm_rows_inserted_total{type=\"promremotewrite\"} 1.5e+07\nvm_rows_inserted_total{type=\"promremotewrite_x\"} 9\n";
        let s = "vm_rows_inserted_total{type=\"promremotewrite\"}";
        assert_eq!(sample(text, s), Some(15_000_000.0));
        assert_eq!(sample(text, "vm_rows_inserted_total"), None);
        assert_eq!(sample("up 1 1700000000000\n", "up"), Some(1.0));
    }

    #[test]
    fn reads_a_served_exposition() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("read timeout");
            // Read the whole head so closing does not reset the connection.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nrows{t=\"a\"} 42\n")
                .expect("write");
        });
        let v = counter(addr, "x", "rows{t=\"a\"}", Duration::from_secs(5)).expect("get");
        assert_eq!(v, Some(42.0));
        server.join().expect("server thread");
    }
}
