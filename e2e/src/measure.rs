//! What the benchmarks measure of the binaries they run as processes: where the release
//! build put them, and their memory as the kernel reports it.

use std::path::PathBuf;

/// A release binary next to the running bench (`target/release/<name>`); panics with the
/// build command when it is missing.
pub fn release_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    // target/release/deps/<bench>-<hash> → target/release/<name>
    let release = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = release.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p {package} --bin {name}` first",
        binary.display()
    );
    binary
}

/// A `/proc/<pid>/status` field in KiB, e.g. `VmRSS:` (now) or `VmHWM:` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// Peak resident memory of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}
