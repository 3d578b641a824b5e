//! Line-protocol payloads for the `write` scenario: a deterministic
//! generator of `cpu,host=..,region=.. usage_user=..,usage_system=..,uptime=..i ts`
//! lines (100 hosts x 4 regions), and optional gzip compression. Bodies are
//! made once before timing starts so generation cost is never measured.

use std::fmt::Write as _;
use std::io::{self, Write as _};

pub const HOSTS: u64 = 100;
pub const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-central", "ap-south"];

/// SplitMix64: small, fast, deterministic; good enough for field values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Makes body number `index` of `lines` lines. Series cycle through all
/// host/region pairs; timestamps rise by 1 ms a line from `base_ts_ns`.
pub fn make_body(index: u64, lines: u64, base_ts_ns: u64) -> String {
    let mut rng = Rng(0x6d65_7472_6963_7300 ^ index);
    let mut out = String::with_capacity((lines as usize).saturating_mul(112));
    for i in 0..lines {
        let n = index.wrapping_mul(lines).wrapping_add(i);
        let host = n % HOSTS;
        let region = REGIONS[((n / HOSTS) % REGIONS.len() as u64) as usize];
        let user = (rng.next() % 10_000) as f64 / 100.0; // 2 decimals
        let system = (rng.next() % 100_000) as f64 / 1000.0; // 3 decimals
        let uptime = 1_000_000 + rng.next() % 90_000_000;
        let ts = base_ts_ns.wrapping_add(n.wrapping_mul(1_000_000));
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "cpu,host=host_{host},region={region} usage_user={user:.2},usage_system={system:.3},uptime={uptime}i {ts}"
        );
    }
    out
}

/// Makes `count` distinct bodies of `lines` lines each.
pub fn make_bodies(count: u64, lines: u64, base_ts_ns: u64) -> Vec<String> {
    (0..count)
        .map(|k| make_body(k, lines, base_ts_ns))
        .collect()
}

/// Numeric field values per line when every line of `body` has the same
/// number (`None` otherwise). The generator writes numbers only (no string
/// fields, no escapes), so a line's values are its field-set's commas plus one.
/// These are the samples a Prometheus remote_write receiver gets per point.
pub fn values_per_line(body: &str) -> Option<u64> {
    let mut per_line = None;
    for line in body.lines() {
        let fields = line.split(' ').nth(1)?;
        let n = fields.bytes().filter(|&b| b == b',').count() as u64 + 1;
        if *per_line.get_or_insert(n) != n {
            return None;
        }
    }
    per_line
}

/// Gzip-compresses a body.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Read;

    const TS: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn lines_have_the_documented_shape() {
        let body = make_body(3, 1000, TS);
        assert!(body.ends_with('\n'));
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 1000);
        let mut series = HashSet::new();
        let mut last_ts = 0u64;
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{line}");
            let tags: Vec<&str> = parts[0].split(',').collect();
            assert_eq!(tags[0], "cpu");
            let host = tags[1].strip_prefix("host=host_").expect("host tag");
            assert!(host.parse::<u64>().expect("host number") < HOSTS);
            let region = tags[2].strip_prefix("region=").expect("region tag");
            assert!(REGIONS.contains(&region));
            series.insert(parts[0].to_string());
            let fields: Vec<&str> = parts[1].split(',').collect();
            assert_eq!(fields.len(), 3);
            let user = fields[0].strip_prefix("usage_user=").expect("user");
            assert_eq!(user.split('.').nth(1).map(str::len), Some(2));
            user.parse::<f64>().expect("float");
            let system = fields[1].strip_prefix("usage_system=").expect("system");
            assert_eq!(system.split('.').nth(1).map(str::len), Some(3));
            let uptime = fields[2].strip_prefix("uptime=").expect("uptime");
            uptime
                .strip_suffix('i')
                .expect("integer suffix")
                .parse::<u64>()
                .expect("int");
            let ts: u64 = parts[2].parse().expect("ts");
            assert!(ts > last_ts);
            last_ts = ts;
        }
        assert_eq!(series.len(), 400, "100 hosts x 4 regions");
    }

    #[test]
    fn size_is_about_109_bytes_a_line() {
        let body = make_body(0, 1000, TS);
        let per_line = body.len() as f64 / 1000.0;
        assert!((100.0..=118.0).contains(&per_line), "{per_line}");
    }

    #[test]
    fn bodies_are_distinct_and_deterministic() {
        let a = make_bodies(4, 50, TS);
        let b = make_bodies(4, 50, TS);
        assert_eq!(a, b);
        let set: HashSet<&String> = a.iter().collect();
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn three_values_a_line() {
        assert_eq!(values_per_line(&make_body(2, 500, TS)), Some(3));
        assert_eq!(values_per_line("m a=1\nm a=1,b=2\n"), None);
        assert_eq!(values_per_line(""), None);
    }

    #[test]
    fn gzip_round_trips() {
        let body = make_body(1, 200, TS);
        let packed = gzip(body.as_bytes()).expect("gzip");
        assert!(packed.len() < body.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
    }
}
