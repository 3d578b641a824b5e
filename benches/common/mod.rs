//! Inputs shared by the criterion benches: the write benchmark's line-protocol body, so
//! every bench that parses, logs or forwards points measures the same bytes.

/// 1000 lines of `cpu,host=host_N,region=R usage_user=F,usage_system=F,uptime=Ni TS`
/// (100 hosts x 4 regions), timestamps `TS = 1.7e18 + (offset * 1000 + i) * step_ns`.
pub fn cpu_body(offset: u64, step_ns: u64) -> Vec<u8> {
    let regions = ["us-east", "us-west", "eu-central", "ap-south"];
    let mut body = String::new();
    for i in 0..1000u64 {
        body.push_str(&format!(
            "cpu,host=host_{},region={} usage_user={}.{:02},usage_system={}.{:02},uptime={}i {}\n",
            i % 100,
            regions[(i / 100 % 4) as usize],
            i * 7 % 100,
            i % 97,
            i * 13 % 100,
            i % 89,
            1_000_000 + i * 7919,
            1_700_000_000_000_000_000u64 + (offset * 1000 + i) * step_ns
        ));
    }
    body.into_bytes()
}
