//! What only the SQLite journal does (the behaviour both backends share is
//! tested on both in `journal::tests`): old state files, the schema
//! version, the bounded write-ahead log.

use super::*;
use crate::journal::tests::{new_run, report};
use crate::json::Json;
use crate::saga::{Action, CallRecord};
use serde_json::json;
use std::sync::Arc;

#[test]
fn a_state_file_from_before_pinned_components_gains_the_column_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // The runs table as it was before the `components` column.
        conn.execute_batch(&schema::VERSION_1_TABLES.replace(",\n    components TEXT\n", "\n"))
            .unwrap();
        conn.execute(
            "INSERT INTO runs (id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, status, created_at, updated_at)
             VALUES ('old', 'old', 'w', '/m.toml', 'h', '[]', '{}', '{}', 'done', 1, 1)",
            [],
        )
        .unwrap();
    }
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    let old = journal.run("old").unwrap();
    assert!(old.components.is_empty());
    journal
        .begin(
            &new_run("new", "t2"),
            &Owner::current(),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(journal.run("new").unwrap().components.len(), 1);
}

/// One run as the load tests write it: begun, three call records (two
/// with `payload` as input, two as output), finished.
fn write_a_run(journal: &SqliteJournal, me: &Owner, id: &str, payload: &Json) {
    journal
        .begin(&new_run(id, id), me, Duration::from_secs(30))
        .unwrap();
    let started = |seq: u64, node: &str| {
        (
            seq,
            RecordKind::Started {
                node: node.into(),
                step: node.into(),
                action: Action::Invoke,
                attempt: 1,
                input: Some(payload.clone()),
            },
        )
    };
    let finished = |seq: u64, node: &str| {
        (
            seq,
            RecordKind::Finished {
                node: node.into(),
                action: Action::Invoke,
                attempt: 1,
                record: CallRecord::Done {
                    output: payload.clone(),
                    compensation: None,
                },
            },
        )
    };
    journal.append(id, 1, &[started(1, "a")]).unwrap();
    journal
        .append(id, 1, &[finished(2, "a"), started(3, "b")])
        .unwrap();
    journal.append(id, 1, &[finished(4, "b")]).unwrap();
    journal.finish(id, 1, &report(id, RunStatus::Done)).unwrap();
}

/// A load test's state file in `dir`: its path, a journal of it, its log's
/// record, and a sampler of its log file's size every `every`.
fn a_loaded_state_file(
    dir: &std::path::Path,
    every: Duration,
) -> (
    std::path::PathBuf,
    SqliteJournal,
    Arc<super::hold::LogSize>,
    LargestSize,
) {
    let path = dir.join("state.db");
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    let log = super::hold::LogSize::of(&path);
    let sampler = LargestSize::sample(dir.join("state.db-wal"), every);
    (path, journal, log, sampler)
}

/// Samples a file's size on a thread of its own until stopped.
struct LargestSize {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl LargestSize {
    fn sample(path: std::path::PathBuf, every: Duration) -> LargestSize {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&path).map_or(0, |m| m.len()));
                std::thread::sleep(every);
            }
            largest
        });
        LargestSize { stop, thread }
    }

    /// Stops sampling: the largest size seen.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The write-ahead log stays bounded under sustained load: 100,000 runs
/// (each begun, three call records, finished) from two writers on one state
/// file while a reader keeps reading, as `host serve` does. Under this load
/// the background's passive checkpoints never caught up and the log only
/// grew (669 MB after 10,000 runs of `host serve`). Also says how many bytes
/// of state file a finished run takes, and that pruning gives them back.
#[test]
fn the_wal_stays_bounded_under_sustained_load_and_pruning_gives_space_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const RUNS: usize = 100_000;
    const WRITERS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let (path, first, log, sampler) = a_loaded_state_file(dir.path(), Duration::from_millis(20));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let _ = journal.list(&RunFilter {
                    limit: Some(20),
                    ..RunFilter::default()
                });
                reads += 1;
            }
            reads
        })
    };
    let payload = Json::from_value(
        json!({"order": "o-1", "items": [{"sku": "a", "qty": 2}], "note": "x".repeat(200)}),
    );
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (path, payload) = (path.clone(), payload.clone());
            std::thread::spawn(move || {
                let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
                let me = Owner::current();
                for i in 0..RUNS / WRITERS {
                    write_a_run(&journal, &me, &format!("r{w}-{i}"), &payload);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let largest = sampler.stop();
    let reads = reader.join().unwrap();
    drop(first);
    let database = std::fs::metadata(&path).unwrap().len();
    // Whether the checkpointer kept up alone, or the hold had to stop the
    // writers (a disk too slow for this load: not a failure, but said).
    eprintln!(
        "{RUNS} runs, {reads} reads meanwhile: largest WAL {:.1} MiB (bound {} MiB, held {} times); state file {:.1} MiB, {} bytes per finished run",
        largest as f64 / 1048576.0,
        WAL_BOUND >> 20,
        log.holds(),
        database as f64 / 1048576.0,
        database / RUNS as u64
    );
    assert!(largest <= WAL_BOUND, "the WAL reached {largest} bytes");

    // Pruning every run gives the file's pages back.
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    let pruned = journal.prune(i64::MAX, None).unwrap();
    assert_eq!(pruned, RUNS);
    // The file shrinks when the checkpointer copies the vacuum's pages in
    // (within its 250 ms turn).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = std::fs::metadata(&path).unwrap().len();
    while after >= database / 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = std::fs::metadata(&path).unwrap().len();
    }
    drop(journal);
    eprintln!("after pruning: {:.1} MiB", after as f64 / 1048576.0);
    assert!(after < database / 10, "{after} bytes left of {database}");
}

/// The log's bound holds on a slow disk: the checkpointer's flushes of the
/// database file, made with the writers going on, here take 400 ms each
/// (the disk stalled), during which two writers add log at full speed.
/// Past the hold line they wait for the restart instead, so the log never
/// passes its bound. The writers go on until the log reached the hold line
/// ten times (however fast this machine writes). Without the hold, this
/// load took the log to 684 MiB (checked by turning it off).
#[test]
fn on_a_stalled_disk_the_writers_wait_for_the_restart_and_the_log_keeps_its_bound() {
    use std::sync::atomic::Ordering;
    const HOLDS: u64 = 10;
    const MOST_RUNS: usize = 400_000;
    const WRITERS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let (path, first, log, sampler) = a_loaded_state_file(dir.path(), Duration::from_millis(5));
    log.slow_flush.store(400, Ordering::Relaxed);
    // Inputs and outputs of 4 KB: a run adds some 60 KB of log.
    let payload = Json::from_value(json!({"order": "o-1", "note": "x".repeat(4000)}));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (path, payload, log) = (path.clone(), payload.clone(), log.clone());
            std::thread::spawn(move || {
                let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
                let me = Owner::current();
                let mut runs = 0;
                while log.holds() < HOLDS && runs < MOST_RUNS / WRITERS {
                    write_a_run(&journal, &me, &format!("r{w}-{runs}"), &payload);
                    runs += 1;
                }
                runs
            })
        })
        .collect();
    let runs: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let (largest_file, largest_log) = (sampler.stop(), log.largest());
    eprintln!(
        "{runs} runs on a stalled disk: the log reached its hold line {} times; largest log {:.1} MiB (file {:.1} MiB, bound {} MiB)",
        log.holds(),
        largest_log as f64 / 1048576.0,
        largest_file as f64 / 1048576.0,
        WAL_BOUND >> 20
    );
    assert!(
        log.holds() >= HOLDS,
        "the stalled disk let the log reach the hold line only {} times in {runs} runs: the test proves little",
        log.holds()
    );
    // Past the line, only the commit that crossed it (tens of KB here).
    assert!(
        largest_log <= super::hold::HOLD_AT + (1 << 20),
        "the log reached {largest_log} bytes"
    );
    assert!(
        largest_file <= WAL_BOUND,
        "the log's file reached {largest_file} bytes"
    );
    // Every run was written: the hold delays writes, it loses none.
    assert_eq!(first.count_status(RunStatus::Done).unwrap(), runs as u64);
}

/// A state file from a newer Wasaga is refused with the reason, untouched.
#[test]
fn a_state_file_from_a_newer_wasaga_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::VERSION + 1)
            .unwrap();
    }
    let Err(err) = SqliteJournal::open(&path, SyncMode::Normal) else {
        panic!("a newer schema opened");
    };
    assert!(err.to_string().contains("newer Wasaga"), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION + 1);
}

/// A state file from before versioning (user_version 0, no lease epoch)
/// is migrated in place: its runs keep their data and get epoch 0.
#[test]
fn a_state_file_from_before_versioning_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::VERSION_1_TABLES).unwrap();
        conn.execute(
            "INSERT INTO runs (id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, status, created_at, updated_at)
             VALUES ('old', 'old', 'w', '/m.toml', 'h', '[]', '{}', '{}', 'running', 1, 1)",
            [],
        )
        .unwrap();
    }
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    let old = journal.run("old").unwrap();
    assert_eq!(old.lease_epoch, 0);
    assert_eq!(
        journal
            .claim("old", &Owner::current(), Duration::from_secs(5))
            .unwrap(),
        Some(1)
    );
    let version: i64 = journal
        .conn()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
}

/// Appends of concurrent runs share commits (group commit) and stay apart:
/// eight threads append to eight runs of one state file at once, one of
/// which another host took over meanwhile; every other run has all its
/// records, in order, and the taken run none after the take-over.
#[test]
fn concurrent_appends_are_committed_together_and_a_fenced_one_writes_nothing() {
    use crate::journal::tests::started;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(SqliteJournal::open(&dir.path().join("s.db"), SyncMode::Normal).unwrap());
    let lease = Duration::from_secs(60);
    let runs: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
    for run in &runs {
        journal
            .begin(&new_run(run, run), &Owner::current(), lease)
            .unwrap();
    }
    // Another host claims run-0 (as after an expired lease): epoch 2.
    let other = Owner::from_id("other-host:1:x");
    journal
        .conn()
        .execute("UPDATE runs SET lease_until = 0 WHERE id = 'run-0'", [])
        .unwrap();
    assert_eq!(journal.claim("run-0", &other, lease).unwrap(), Some(2));
    let barrier = Arc::new(std::sync::Barrier::new(runs.len()));
    let threads: Vec<_> = runs
        .iter()
        .cloned()
        .map(|run| {
            let (journal, barrier) = (journal.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (1..=100u64)
                    .map(|seq| journal.append(&run, 1, &[(seq, started(&format!("n{seq}")))]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (run, thread) in runs.iter().zip(threads) {
        let results = thread.join().unwrap();
        let records = journal.records(run).unwrap();
        if run == "run-0" {
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Err(JournalError::LeaseLost(_))))
            );
            assert!(records.is_empty(), "{run}: {} records", records.len());
        } else {
            assert!(results.iter().all(|r| matches!(r, Ok(false))), "{run}");
            let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "{run}");
        }
    }
}

/// A state file in `dir` with `runs` begun (each its own transaction id).
fn open_with_runs(dir: &std::path::Path, runs: &[&str]) -> Arc<SqliteJournal> {
    let journal = Arc::new(SqliteJournal::open(&dir.join("s.db"), SyncMode::Normal).unwrap());
    for run in runs {
        journal
            .begin(
                &new_run(run, run),
                &Owner::current(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
    }
    journal
}

/// A commit under way: run "busy"'s append, on a thread of its own, waits
/// for the state file's connection, held until the guard is dropped;
/// returns once the commit has begun (a condition, not a time).
fn commit_held_under_way<'a>(
    journal: &Arc<SqliteJournal>,
    connection: &'a Mutex<rusqlite::Connection>,
) -> (
    std::sync::MutexGuard<'a, rusqlite::Connection>,
    std::thread::JoinHandle<Result<bool, JournalError>>,
) {
    use crate::journal::tests::started;
    let held = connection.lock().unwrap();
    let committing = {
        let journal = journal.clone();
        std::thread::spawn(move || journal.append("busy", 1, &[(1, started("x"))]))
    };
    while !journal.writes.committing() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (held, committing)
}

/// A run's start waiting as a task for a commit under way, dropped before
/// it is answered (its task aborted): the start is not written, and the
/// recorder writes nothing more to the run (as if the host had died there)
/// instead of going on without its held-back records.
#[test]
fn a_start_dropped_while_it_waits_for_a_commit_stops_its_run_here() {
    use crate::saga::{CallStart, Recorder};
    use std::time::Duration;
    if !super::group::enabled() {
        // Each write then commits alone, on its caller's thread: no start
        // waits as a task for another's commit.
        eprintln!("skipped: group commit is off (WASAGA_GROUP_COMMIT=0)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = open_with_runs(dir.path(), &["busy", "r1"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let recorder = crate::journal::JournalRecorder::new(journal.clone(), "r1", 1, 0, None);
    let held = journal.connection();
    let (connection, committing) = commit_held_under_way(&journal, &held);
    rt.block_on(async {
        let start = CallStart {
            node: "a",
            step: "a",
            action: Action::Invoke,
            attempt: 1,
            input: None,
        };
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            recorder.call_started_async(&start),
        )
        .await;
        assert!(waited.is_err(), "answered while the commit was held");
    });
    assert!(recorder.lost(), "the run goes on after an unanswered start");
    drop(connection);
    committing.join().unwrap().unwrap();
    assert!(journal.records("r1").unwrap().is_empty());
    assert_eq!(journal.records("busy").unwrap().len(), 1);
}

/// Starts queued while a commit is under way share the next commit with
/// each other, each in its own savepoint: of two with one transaction id
/// the second finds the first's run (written earlier in the same
/// transaction), and one that fails (a run id already taken) fails alone.
#[test]
fn starts_queued_behind_a_commit_share_the_next_one_and_each_gets_its_answer() {
    use std::time::Duration;
    if !super::group::enabled() {
        eprintln!("skipped: group commit is off (WASAGA_GROUP_COMMIT=0)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = open_with_runs(dir.path(), &["busy"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let held = journal.connection();
    let (connection, committing) = commit_held_under_way(&journal, &held);
    // Queued one after the other, so the first of "same" is r1.
    let starts = [("r1", "same"), ("r2", "same"), ("r3", "t3"), ("busy", "t4")];
    let tasks: Vec<_> = starts
        .iter()
        .enumerate()
        .map(|(i, (id, tx))| {
            let (starter, run) = (journal.clone(), new_run(id, tx));
            let task = rt.spawn(async move {
                starter
                    .begin_queued(&run, &Owner::current(), Duration::from_secs(60))
                    .await
            });
            while journal.writes.queued() < i + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
            task
        })
        .collect();
    drop(connection);
    committing.join().unwrap().unwrap();
    let answers: Vec<_> = rt.block_on(async {
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    });
    assert!(
        matches!(answers[0], Ok(Begin::Started { epoch: 1 })),
        "{:?}",
        answers[0]
    );
    let Ok(Begin::Existing(existing)) = &answers[1] else {
        panic!("the second start of \"same\": {:?}", answers[1])
    };
    assert_eq!(existing.id, "r1");
    assert!(
        matches!(answers[2], Ok(Begin::Started { epoch: 1 })),
        "{:?}",
        answers[2]
    );
    let Err(JournalError::Storage(taken)) = &answers[3] else {
        panic!("a start with a taken run id: {:?}", answers[3])
    };
    assert!(taken.contains("UNIQUE"), "{taken}");
    assert_eq!(journal.run("r1").unwrap().status, RunStatus::Running);
    assert_eq!(journal.run("r3").unwrap().transaction_id, "t3");
    assert!(journal.find_transaction("w", "t4").unwrap().is_none());
    assert_eq!(journal.records("busy").unwrap().len(), 1);
}

/// The usual flow's payload is stored once: a call's input that is the
/// output of the call finished just before it (committed together) is a
/// reference in the file, and reads back as that output, also after the
/// file is reopened (a resume).
#[test]
fn an_input_that_is_the_previous_output_is_stored_once_and_reads_back_whole() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    journal
        .begin(
            &new_run("r", "r"),
            &Owner::current(),
            Duration::from_secs(60),
        )
        .unwrap();
    let payload = json!({"items": (0..50).map(|i| json!({"k": i, "tag": "x".repeat(10)})).collect::<Vec<_>>()});
    let output = Json::from_value(payload.clone());
    let call = |node: &str, input: Option<Json>| RecordKind::Started {
        node: node.into(),
        step: format!("{node}-step"),
        action: Action::Invoke,
        attempt: 1,
        input,
    };
    let done = RecordKind::Finished {
        node: "a".into(),
        action: Action::Invoke,
        attempt: 1,
        record: CallRecord::Done {
            output: output.clone(),
            compensation: None,
        },
    };
    let other = Json::from_value(json!({"other": true}));
    journal
        .append("r", 1, &[(1, call("a", Some(other.clone())))])
        .unwrap();
    journal
        .append("r", 1, &[(2, done), (3, call("b", Some(output.clone())))])
        .unwrap();
    // A later start with that same input, in another write: stored whole.
    journal
        .append("r", 1, &[(4, call("c", Some(output.clone())))])
        .unwrap();

    let bodies: Vec<String> = journal
        .conn()
        .prepare("SELECT body FROM records WHERE run = 'r' ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bodies[2], r#"{"step":"b-step","input_of":2}"#);
    assert!(bodies[3].len() > output.text().len(), "{}", bodies[3]);

    drop(journal);
    let reopened = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    let inputs: Vec<Option<serde_json::Value>> = reopened
        .records("r")
        .unwrap()
        .into_iter()
        .filter_map(|record| match record.kind {
            RecordKind::Started { input, .. } => Some(input.map(|i| i.value().clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        inputs,
        vec![
            Some(json!({"other": true})),
            Some(payload.clone()),
            Some(payload)
        ]
    );
}

/// The checkpointer's restarts of the log keep this process's lock on the
/// database file. It flushes that file before a restart; through a
/// descriptor of its own, the flush's close dropped every POSIX lock the
/// process held on the file (SQLite's shared lock included), so another
/// process's last connection would take the log for unused and delete it
/// under this one. Checked with an open-file-description lock, which
/// conflicts with this process's own POSIX locks (Linux).
#[cfg(target_os = "linux")]
#[test]
fn the_checkpointers_restarts_keep_this_processs_lock_on_the_state_file() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let journal = SqliteJournal::open(&path, SyncMode::Normal).unwrap();
    // Opened once, for the whole test: closing it would drop this process's
    // locks on the file, as the bug did.
    let file = std::fs::File::open(&path).unwrap();
    // Whether some lock of this process covers SQLite's shared-lock bytes.
    let locked = || {
        let mut probe: libc::flock = unsafe { std::mem::zeroed() };
        probe.l_type = libc::F_WRLCK as _;
        probe.l_whence = libc::SEEK_SET as _;
        probe.l_start = 0x4000_0002; // SQLite's SHARED_FIRST
        probe.l_len = 510; // SHARED_SIZE
        // SAFETY: a valid descriptor and a `flock` the call fills in.
        let code = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
        assert_eq!(code, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
        i32::from(probe.l_type) != libc::F_UNLCK
    };
    assert!(locked(), "an open state file is locked shared");
    // How many times the log was begun anew (its header's checkpoint
    // sequence, written by the first commit after a restart).
    let wal = dir.path().join("state.db-wal");
    let sequence = || {
        let header = std::fs::read(&wal).unwrap_or_default();
        header
            .get(12..16)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let me = Owner::current();
    let mut run = 0;
    let mut write_a_run = || {
        let id = format!("r{run}");
        run += 1;
        journal
            .begin(&new_run(&id, &id), &me, std::time::Duration::from_secs(30))
            .unwrap();
    };
    // A checkpointer's rung turn, made here (not left to the background
    // thread's timing): it flushes the database file, then restarts.
    let checkpointer = super::wal_writes::open(&path).unwrap();
    for turn in 0..2 {
        for _ in 0..50 {
            write_a_run();
        }
        let before = sequence();
        // (The background checkpointer may hold the checkpoint lock for a
        // passive copy at that moment: then the restart is tried again.)
        for _ in 0..50 {
            super::checkpoint::checkpoint(&checkpointer, true, &super::hold::LogSize::of(&path));
            write_a_run();
            if sequence() > before {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(sequence() > before, "turn {turn} restarted the log");
        assert!(locked(), "still locked after restart {turn}");
    }
    drop(file);
}

/// The entity store of a state file inserts in the journal's group
/// commits: inserts queued behind a commit under way wait beside a run's
/// append and are committed with it in the next one, each in its own
/// savepoint, so an insert whose fence no longer holds is refused alone.
#[test]
fn entity_inserts_share_the_journals_next_commit_and_a_refused_one_fails_alone() {
    use crate::capabilities::EntityStore;
    use crate::saga::Fence;
    use std::time::{Duration, Instant};
    if !super::group::enabled() {
        eprintln!("skipped: group commit is off (WASAGA_GROUP_COMMIT=0)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = open_with_runs(dir.path(), &["busy", "r1"]);
    let entities = Arc::new(EntityStore::sharing(journal.shared_commits()));
    let held = journal.connection();
    let (connection, committing) = commit_held_under_way(&journal, &held);
    let fence = |epoch| Fence {
        run: "r1".into(),
        epoch,
    };
    // Queued one after the other: r1's append, its insert, and an insert
    // fenced on an epoch r1 no longer has (as after a takeover).
    let append = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            journal.append("r1", 1, &[(1, crate::journal::tests::started("a"))])
        })
    };
    let inserts: Vec<_> = [(1, "Acme"), (2, "Stale")]
        .into_iter()
        .enumerate()
        .map(|(i, (epoch, name))| {
            while journal.writes.queued() < i + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (entities, fence) = (entities.clone(), fence(epoch));
            std::thread::spawn(move || {
                futures::executor::block_on(entities.create_once(
                    "brand",
                    json!({ "name": name }),
                    None,
                    Some(&fence),
                ))
            })
        })
        .collect();
    let waited = Instant::now();
    while journal.writes.queued() < 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the inserts did not join the journal's queue ({} queued)",
            journal.writes.queued()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(connection);
    committing.join().unwrap().unwrap();
    append.join().unwrap().unwrap();
    let mut answers = inserts.into_iter().map(|t| t.join().unwrap());
    let created = answers.next().unwrap().unwrap();
    assert_eq!(created["name"], "Acme");
    assert_eq!(
        entities
            .get("brand", created["id"].as_str().unwrap())
            .unwrap(),
        created,
        "the entity answered is the row stored"
    );
    let refused = answers.next().unwrap().unwrap_err();
    assert!(refused.to_string().contains("lost its lease"), "{refused}");
    assert_eq!(entities.count("brand").unwrap(), 1);
    assert_eq!(journal.records("r1").unwrap().len(), 1);
}

/// An entity write that finds a commit under way waits for it as a task:
/// polled, it answers "not yet" at once, its write in the queue (a guest's
/// call then yields its worker to other runs, which may join the same
/// commit), instead of spinning or blocking its thread until the commit
/// ends; once that commit is made, the next one takes the write and
/// answers it.
#[test]
fn an_entity_write_waits_for_a_commit_under_way_as_a_task() {
    use crate::capabilities::EntityStore;
    use std::time::Duration;
    if !super::group::enabled() {
        eprintln!("skipped: group commit is off (WASAGA_GROUP_COMMIT=0)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = open_with_runs(dir.path(), &["busy"]);
    let entities = Arc::new(EntityStore::sharing(journal.shared_commits()));
    let held = journal.connection();
    let (connection, committing) = commit_held_under_way(&journal, &held);
    let (tell, told) = std::sync::mpsc::channel();
    let writer = {
        let entities = entities.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut create = std::pin::pin!(entities.create("brand", json!({"name": "Acme"})));
                let first = futures::poll!(create.as_mut());
                tell.send(first.is_pending()).unwrap();
                create.await
            })
        })
    };
    let pending = told
        .recv_timeout(Duration::from_secs(10))
        .expect("the entity write held its thread while a commit was under way");
    assert!(
        pending,
        "the entity write answered before the commit under way ended"
    );
    assert_eq!(journal.writes.queued(), 1, "the write waits in the queue");
    drop(connection);
    committing.join().unwrap().unwrap();
    let created = writer.join().unwrap().unwrap();
    assert_eq!(created["name"], "Acme");
    assert_eq!(entities.count("brand").unwrap(), 1);
}
