//! The preloaded library makes a flush wait: a child process (this test binary again) times
//! `fsync` and `fdatasync` with the library preloaded and a 5 ms delay.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "LOYALTY_SYNC_DELAY_TEST_CHILD";
const FLUSHES: u32 = 10;
const DELAY_US: u64 = 5_000;

/// The library cargo built beside this test (`target/<profile>/` or its `deps/`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let deps = exe.parent().expect("the test lives in a folder");
    [
        deps,
        deps.parent().expect("deps lives in the profile's folder"),
    ]
    .iter()
    .map(|folder| folder.join("libloyalty_sync_delay.so"))
    .find(|path| path.exists())
    .expect("cargo builds the cdylib before the crate's tests")
}

/// In the child: flushes a file FLUSHES times each way and prints the milliseconds it took.
fn flush_and_time() {
    let path = std::env::temp_dir().join(format!("sync-delay-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("a temporary file");
    let started = Instant::now();
    for _ in 0..FLUSHES {
        file.write_all(b"x").expect("write");
        file.sync_all().expect("fsync");
        file.write_all(b"y").expect("write");
        file.sync_data().expect("fdatasync");
    }
    println!("elapsed_ms={}", started.elapsed().as_millis());
    std::fs::remove_file(&path).expect("remove the temporary file");
}

#[test]
fn a_preloaded_flush_waits_the_delay() {
    if std::env::var_os(CHILD).is_some() {
        flush_and_time();
        return;
    }
    let output = Command::new(std::env::current_exe().expect("the test knows its path"))
        .args([
            "--exact",
            "a_preloaded_flush_waits_the_delay",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("LD_PRELOAD", library())
        .env("LOYALTY_SYNC_DELAY_US", DELAY_US.to_string())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let elapsed_ms: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("elapsed_ms="))
        .unwrap_or_else(|| panic!("the child printed its time: {stdout}"))
        .trim()
        .parse()
        .expect("a number of milliseconds");
    // Each of the 2 × FLUSHES flushes sleeps at least the delay; a sleep never ends early.
    let floor = Duration::from_micros(DELAY_US * 2 * u64::from(FLUSHES));
    assert!(
        elapsed_ms >= floor.as_millis() as u64,
        "{elapsed_ms} ms for {} flushes, less than their delays ({} ms)",
        2 * FLUSHES,
        floor.as_millis()
    );
}
