//! The background checkpointer of a state file: copies the write-ahead log
//! into the database file and restarts the log past a size, so that no run
//! waits for a checkpoint and the log stays bounded. It may not write runs.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{RESTART_AT, WAL_BOUND, gate};

/// Copies the write-ahead log into the database file in the background, so
/// that no run waits for a checkpoint (and its disk flush).
pub(super) struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = super::wal_writes::open(path).ok()?;
        conn.pragma_update(None, "journal_size_limit", WAL_BOUND as i64)
            .ok()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasaga-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    let rang = gate::wait(Duration::from_millis(250));
                    checkpoint(&conn, rang);
                }
            })
            .ok()?;
        Some(Checkpointer { stop })
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
fn checkpoint(conn: &Connection, rang: bool) {
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
        // Shared, like any use: a restart by another checkpointer of this
        // process is not raced by this one's passive copy.
        let _gate = gate::shared();
        let _ = conn.busy_timeout(Duration::from_millis(100));
        let (log, copied) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .unwrap_or((0, 0));
        frames = log.max(0);
        if log - copied <= LEFT_FOR_RESTART || !(rang || (frames * page_size) as u64 > RESTART_AT) {
            break;
        }
    }
    // Rung by a commit past the restart size: restart whatever the log's
    // size now (another connection may have reset it meanwhile: cheap then).
    if rang || (frames * page_size) as u64 > RESTART_AT {
        // This process's writers and readers wait at the gate meanwhile;
        // another process's get the busy handler's second.
        let _alone = gate::alone();
        let _ = conn.busy_timeout(Duration::from_secs(1));
        let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
    }
}

/// Frames a restart may find still to copy before the passive copies stop
/// (a few dozen commits' worth).
const LEFT_FOR_RESTART: i64 = 64;

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
