//! The background checkpointer of a state file: copies the write-ahead log
//! into the database file and restarts the log past a size, so that no run
//! waits for a checkpoint and the log stays bounded. It may not write runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::hold::LogSize;
use super::{RESTART_AT, WAL_BOUND, gate};

/// Copies the write-ahead log into the database file in the background, so
/// that no run waits for a checkpoint (and its disk flush).
pub(super) struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The log it restarts: told when it stops, so that nothing waits for
    /// a restart no one will make.
    log: Arc<LogSize>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, log: Arc<LogSize>) -> Option<Checkpointer> {
        let conn = super::wal_writes::open(path).ok()?;
        conn.pragma_update(None, "journal_size_limit", WAL_BOUND as i64)
            .ok()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let its_log = log.clone();
        std::thread::Builder::new()
            .name("wasaga-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let rang = gate::wait(Duration::from_millis(250));
                    checkpoint(&conn, rang, &its_log);
                }
            })
            .ok()?;
        log.checkpointer_started();
        Some(Checkpointer { stop, log })
    }
}

/// One turn of the checkpointer. A passive checkpoint never blocks a
/// writer, but under sustained writes it never catches up either: the log
/// is only reset once every frame was copied and no reader uses it, so it
/// grew without end (6 GB over 100,000 runs in the load test). Past a
/// quarter of the bound the checkpointer restarts the log instead: it holds
/// the [`gate`] alone (no connection of this process is in use), waits up to
/// a second for other processes' writers and readers, copies what is left,
/// and the next writer begins the log anew;
/// `journal_size_limit` then cuts the file back to the bound.
///
/// The passive copy always comes first, rung or not: it copies while the
/// writers go on, so the restart, during which every writer of this process
/// waits, copies only the frames committed meanwhile. Straight to the
/// restart, a rung checkpointer copied the whole quarter of the bound with
/// every writer stopped: the `host serve` load's p99 latency was those
/// stalls (`cargo bench --bench serve`).
///
/// Before the restart, the checkpointer flushes the database file to the
/// disk itself, with the writers going on: SQLite's restart flushes the
/// log, copies the last frames and flushes the database file, and a
/// passive copy that leaves frames behind flushes only the log, so the
/// restart's flush of the database file wrote everything the passive
/// copies had copied (up to ~16 MB) while every writer waited: 2-3 ms a
/// restart, some fourteen restarts a second under `host serve`'s load, and
/// 527 of the 529 answers at or past its p99 were in flight across one
/// (matched with `SERVE_BENCH_LATENCIES` and `WASAGA_LOG=debug`).
///
/// Past the hold line ([`super::hold`]) this process's uses of the file
/// wait for this restart: a slow flush stalls them then, instead of letting
/// the log grow past its bound.
pub(super) fn checkpoint(conn: &Connection, rang: bool, log_size: &LogSize) {
    let page_size = {
        let _gate = gate::shared();
        conn.query_row("PRAGMA page_size", [], |row| row.get::<_, i64>(0))
            .unwrap_or(4096)
    };
    // The log's size in frames, after up to three passive copies: each one
    // copies what the writers committed during the one before, so what the
    // restart has left to copy (with the writers waiting) shrinks to a few
    // commits' frames.
    let mut frames = 0;
    for _ in 0..3 {
        let commits = log_size.commits();
        let (log, copied) = passive_copy(conn);
        frames = log.max(0);
        if log >= 0 {
            log_size.observed(commits, frames as u64, page_size as u64);
        }
        if log - copied <= LEFT_FOR_RESTART || !(rang || (frames * page_size) as u64 > RESTART_AT) {
            break;
        }
    }
    // Rung by a commit past the restart size: restart whatever the log's
    // size now (another connection may have reset it meanwhile: cheap then).
    if rang || (frames * page_size) as u64 > RESTART_AT {
        // What the writers would otherwise wait for (see above): the
        // database file flushed, then the frames committed meanwhile
        // copied (SQLite flushes them in the log first) and flushed in it,
        // all with the writers going on, so that the restart is left the
        // frames of a millisecond or two. The log grows meanwhile: past
        // half the bound (a slow disk), the restart comes at once instead,
        // stall or not.
        let room = |log_frames: i64| (log_frames.max(0) * page_size) as u64 <= WAL_BOUND / 2;
        if room(frames) {
            let mut flushed = flush_database(conn, log_size);
            let (log, _) = passive_copy(conn);
            frames = log.max(0);
            if flushed && room(frames) {
                flushed = flush_database(conn, log_size);
            }
            if !flushed {
                // The disk's error went to this flush, not to SQLite's: a
                // restart now could reuse the log over pages the database
                // file may not hold. As when SQLite's own flush fails, no
                // restart this turn.
                tracing::error!(
                    "flushing the state file to the disk failed: the write-ahead log is not restarted this turn"
                );
                return;
            }
        }
        // This process's writers and readers wait at the gate meanwhile;
        // another process's get the busy handler's second.
        let waited = std::time::Instant::now();
        let alone = gate::alone();
        let held = std::time::Instant::now();
        let _ = conn.busy_timeout(Duration::from_secs(1));
        // Whether another process's reader or writer kept it from
        // restarting (1), and the frames it left uncopied.
        let (busy, left) = conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)? - row.get::<_, i64>(2)?,
                ))
            })
            .unwrap_or((-1, -1));
        if busy == 0 && left == 0 {
            // Whatever waits at the hold may go on (still alone: no commit
            // of this process can tell the log's size meanwhile).
            log_size.restarted();
        }
        // Rings of commits before the restart were about the old log (no
        // writer of this process commits while the gate is held alone):
        // answered, they would restart a log just begun again. (If another
        // process kept it from restarting, the next commit past the
        // restart size rings again, and the next turn sees the size.)
        gate::silence();
        let stalled = held.elapsed();
        drop(alone);
        // What every writer of this process waited: with `WASAGA_LOG=debug`
        // a stall of `host serve`'s latency can be matched to a restart.
        tracing::debug!(
            frames,
            busy,
            left,
            gate_wait_us = (held - waited).as_micros() as u64,
            stalled_us = stalled.as_micros() as u64,
            "the write-ahead log restarted"
        );
    }
}

/// Flushes the database file to the disk through the checkpointer's
/// connection's own handle of it. Not through a descriptor of our own:
/// closing any descriptor of a file drops every POSIX lock the process
/// holds on it, SQLite's included (its shared lock on the database file
/// tells another process's last connection that this one still uses the
/// log). Says whether it succeeded: the disk reports a failed write to
/// the first flush after it, this one, and not again to SQLite's.
fn flush_database(conn: &Connection, log_size: &LogSize) -> bool {
    use rusqlite::ffi;
    #[cfg(test)]
    std::thread::sleep(log_size.flush_pause());
    #[cfg(not(test))]
    let _ = log_size;
    let began = std::time::Instant::now();
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the connection is this thread's alone (the checkpointer's),
    // open and not in use during the call; the pointer SQLite hands back
    // is its open file, valid while the connection is, and its methods
    // are called as SQLite itself calls them.
    let code = unsafe {
        let found = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        );
        if found != ffi::SQLITE_OK {
            found
        } else if file.is_null() || (*file).pMethods.is_null() {
            // Not open: nothing was flushed.
            ffi::SQLITE_MISUSE
        } else {
            match (*(*file).pMethods).xSync {
                Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
                None => ffi::SQLITE_MISUSE,
            }
        }
    };
    tracing::trace!(
        code,
        took_us = began.elapsed().as_micros() as u64,
        "the database file flushed"
    );
    code == ffi::SQLITE_OK
}

/// A passive copy of the log into the database file: the log's frames, and
/// how many of them are copied (-1 and -1 when it could not be made).
fn passive_copy(conn: &Connection) -> (i64, i64) {
    // Shared, like any use: a restart by another checkpointer of this
    // process is not raced by this one's passive copy.
    let _gate = gate::shared();
    let _ = conn.busy_timeout(Duration::from_millis(100));
    let began = std::time::Instant::now();
    let (log, copied) = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
        .unwrap_or((-1, -1));
    tracing::trace!(
        log,
        copied,
        took_us = began.elapsed().as_micros() as u64,
        "a passive copy of the write-ahead log"
    );
    (log, copied)
}

/// Frames a restart may find still to copy before the passive copies stop
/// (a few dozen commits' worth).
const LEFT_FOR_RESTART: i64 = 64;

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.log.checkpointer_stopped();
    }
}
