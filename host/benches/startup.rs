//! Start-up: `host run` of a 3-step workflow of Rust steps (validate-brand,
//! create-brand, and the probe echoing the brand) as a whole process, with
//! its state file and a warm component cache, against `host --version` (the
//! process's own floor: loading the binary, no workflow) in the same sitting.
//!
//!     cargo bench -p wasaga-host --bench startup
//!
//! Each is run `STARTUP_BENCH_RUNS` times (40), alternating; it prints the
//! minimum, median and maximum of the wall time and of the peak RSS (the
//! kernel's `ru_maxrss` of the child, from `wait4`). `STARTUP_BENCH_HOST`
//! measures another build of `host` (a baseline copied aside).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn main() {
    let runs: usize = std::env::var("STARTUP_BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("STARTUP_BENCH_RUNS: a number"))
        .unwrap_or(40);
    let host = std::env::var_os("STARTUP_BENCH_HOST")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_host")), PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    let state = dir.path().join("state.db");
    let cache = common::repo().join("target/bench-cache");

    let run = || {
        let mut command = Command::new(&host);
        command
            .arg("run")
            .arg(&manifest)
            .args(["--input", r#"{"name": "Acme"}"#, "--compact", "-q"])
            .env("WASAGA_STATE", &state)
            .env("WASAGA_CACHE_DIR", &cache);
        command
    };
    let version = || {
        let mut command = Command::new(&host);
        command.arg("--version");
        command
    };

    // The first run compiles the components into the cache; the host trusts
    // a file's remembered hash only once its times are 2 s old, so wait for
    // the freshly built components to settle, then warm the cache's
    // remembered hashes too.
    measure(&mut run());
    std::thread::sleep(Duration::from_millis(2100));
    measure(&mut run());

    let (mut workflow, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        workflow.push(measure(&mut run()));
        floor.push(measure(&mut version()));
    }
    report("host run, 3 Rust steps, warm cache", workflow);
    report("host --version (the process's floor)", floor);
}

/// A 3-step workflow of the example's Rust steps and the probe.
fn manifest(dir: &Path) -> PathBuf {
    let validate = common::guest("validate-brand");
    let create = common::guest("create-brand");
    let probe = common::guest("probe");
    let path = dir.join("three-steps.toml");
    std::fs::write(
        &path,
        format!(
            "[workflow]\nname = \"three-steps\"\n\
             [steps.validate-brand]\ncomponent = \"{}\"\n\
             [steps.create-brand]\ncomponent = \"{}\"\ngrants = {{ entities = [\"brand\"] }}\n\
             [steps.echo]\ncomponent = \"{}\"\nconfig = {{ echo-input = true }}\n\
             [[flow]]\nrun = \"validate-brand\"\ninput = \"input\"\n\
             [[flow]]\nrun = \"create-brand\"\ninput = \"input\"\nas = \"brand\"\n\
             [[flow]]\nrun = \"echo\"\ninput = \"brand\"\nas = \"echoed\"\n\
             [output]\nvalue = \"echoed\"\n",
            validate.display(),
            create.display(),
            probe.display()
        ),
    )
    .unwrap();
    path
}

/// Runs `command` to its end: its wall time and its peak RSS in MB.
// The child is reaped by `wait4` (which also gives its rusage), not `wait`.
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command) -> (Duration, f64) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own child's, not yet waited for.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "{command:?} failed: {status}");
    (wall, usage.ru_maxrss as f64 / 1024.0)
}

fn report(what: &str, mut samples: Vec<(Duration, f64)>) {
    let n = samples.len();
    samples.sort_by_key(|s| s.0);
    let (min, median, max) = (samples[0].0, samples[n / 2].0, samples[n - 1].0);
    let mut rss: Vec<f64> = samples.iter().map(|s| s.1).collect();
    rss.sort_by(f64::total_cmp);
    println!(
        "{what}: {n} runs; wall min {:.2} ms, median {:.2} ms, max {:.2} ms; peak RSS min {:.1} MB, median {:.1} MB, max {:.1} MB",
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        rss[0],
        rss[n / 2],
        rss[n - 1],
    );
}
