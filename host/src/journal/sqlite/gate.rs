//! The checkpoint gate and bell: every use of a state-file connection in
//! this process holds the gate shared; the checkpointer holds it alone for
//! the moment it restarts the write-ahead log, and is woken by the bell when
//! a commit leaves the log past the restart size; holds every use while a
//! log is past its hold line; and counts commits. It owns no SQL.
//!
//! A restarting checkpoint must find no writer between two transactions and
//! no reader on an old snapshot; under sustained load SQLite's busy handler
//! alone lost that race every time (the log grew past 500 MB in the load
//! test). Uses of a connection are short and never nested, so a shared hold
//! per use costs an uncontended atomic and cannot deadlock.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::hold::{self, LogSize};

static GATE: RwLock<()> = RwLock::new(());

/// Rung when the log has grown past the restart size.
static BELL: Bell = Bell::new();

/// A flag the commits set and the checkpointer waits for.
struct Bell {
    rung: Mutex<bool>,
    wake: Condvar,
}

impl Bell {
    const fn new() -> Bell {
        Bell {
            rung: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits until rung or `timeout` passes; says whether it rang (and
    /// takes the ring).
    fn wait(&self, timeout: Duration) -> bool {
        let rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        let (mut rung, _) = self
            .wake
            .wait_timeout_while(rung, timeout, |rung| !*rung)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *rung)
    }

    fn silence(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// Rings for the checkpointer when a commit leaves `log_bytes` in the log
/// past `restart_at` (from the connection's commit hook, so a burst of writes
/// is met at once, not at the next poll: at full speed the writers add some
/// 150 MB of log a second), and tells `log` the log's size (for the hold).
pub fn watch(conn: &mut Connection, restart_at: u64, log: Arc<LogSize>) -> rusqlite::Result<()> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let page_size = page_size.max(512) as u64;
    conn.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let frames = pages.max(0) as u64;
            if frames * page_size > restart_at {
                BELL.ring();
            }
            log.committed(frames, page_size);
            Ok(())
        },
    ))
}

/// Commits of watched connections in this process (each one a disk flush
/// with `synchronous = FULL`).
static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many commits watched connections of this process made so far.
pub fn commits() -> u64 {
    COMMITS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until the bell rings or `timeout` passes; says whether it rang.
pub fn wait(timeout: Duration) -> bool {
    BELL.wait(timeout)
}

/// Forgets a ring not yet answered (the restart it asked for was just
/// made, or tried).
pub fn silence() {
    BELL.silence();
}

/// A connection in use, with the gate held shared.
pub struct Gated<'a> {
    // Fields drop in order: the connection is released before the gate.
    conn: MutexGuard<'a, Connection>,
    _gate: RwLockReadGuard<'static, ()>,
}

/// Tries to take `conn` for as long as `group::spin_budget` allows.
fn spin_for(conn: &Mutex<Connection>) -> Option<MutexGuard<'_, Connection>> {
    let budget = super::group::spin_budget();
    if budget.is_zero() {
        return None;
    }
    let until = std::time::Instant::now() + budget;
    while std::time::Instant::now() < until {
        super::group::spin_a_little();
        match conn.try_lock() {
            Ok(conn) => return Some(conn),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }
    None
}

/// Takes `conn`, holding the gate shared while it is in use; while a log
/// is past its hold line, first waits for its restart (see [`hold`]).
/// Checked once the connection is taken, so that a use that queued for it
/// before the line was crossed waits too: past the line, only the commit
/// that crossed it grows the log.
pub fn lock(conn: &Mutex<Connection>) -> Gated<'_> {
    loop {
        let gated = take(conn);
        if !hold::holding() {
            return gated;
        }
        drop(gated);
        super::group::off_the_worker(hold::wait_for_room);
    }
}

/// Takes `conn`, holding the gate shared.
fn take(conn: &Mutex<Connection>) -> Gated<'_> {
    let gate = GATE.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let conn = match conn.try_lock() {
        Ok(conn) => conn,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        // In use by another thread: spin a little (see
        // `group::spin_budget`), then wait without idling a runtime worker.
        Err(std::sync::TryLockError::WouldBlock) => spin_for(conn).unwrap_or_else(|| {
            super::group::off_the_worker(|| {
                conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
            })
        }),
    };
    Gated { conn, _gate: gate }
}

/// Holds the gate shared, with no connection (a checkpointer's passive turn).
pub fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Holds the gate alone: no connection of this process is in use until it
/// is dropped.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    GATE.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Deref for Gated<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Gated<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring is answered once; one silenced after a restart is not
    /// answered at all (it asked for the restart just made: answered, it
    /// restarted the new log a second time, a stall of every writer for
    /// nothing, as often as the first).
    #[test]
    fn a_ring_is_answered_once_and_a_silenced_one_never() {
        let bell = Bell::new();
        assert!(!bell.wait(Duration::ZERO), "nothing rang");
        bell.ring();
        bell.ring();
        assert!(bell.wait(Duration::from_secs(5)), "it rang");
        assert!(!bell.wait(Duration::ZERO), "two rings, one answer");
        bell.ring();
        bell.silence();
        assert!(!bell.wait(Duration::from_millis(10)), "silenced");
        // A ring from another thread wakes a waiter (not only its timeout).
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            });
            let waited = std::time::Instant::now();
            assert!(bell.wait(Duration::from_secs(30)));
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "woken by the ring"
            );
        });
    }
}
