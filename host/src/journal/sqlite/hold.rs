//! The write-ahead log's hard bound: each state file's log size as its
//! commits leave it, and the hold that keeps this process's uses of its
//! state files waiting while a log is past the hold line, until that file's
//! checkpointer restarts it. It owns no SQL and no connection.
//!
//! The hold is the process's, not a file's, as the checkpoint gate is: a
//! host has one state file; in tests, a file's hold pauses the others'.
//!
//! Why a hold: the checkpointer restarts the log past a quarter of the
//! bound, but first flushes the database file with the writers going on,
//! so that they do not wait for the disk. However long the disk takes, the
//! writers went on: under `host serve`'s load the log once reached 108 MB
//! of its 64 MB bound. Past the hold line they wait for the restart
//! instead, trading a stall for the bound.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::WAL_BOUND;

/// The log's size past which this process's uses of its state files wait
/// for the restart: three quarters of the bound, leaving the last quarter
/// to the commit that crossed the line (a batch of runs' records).
pub const HOLD_AT: u64 = WAL_BOUND / 4 * 3;

/// How long a use waits for a restart before it goes on past the bound
/// (another process reading the state file can keep the checkpointer
/// from restarting the log; the host must not stop for it).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// State files of this process whose log is past the hold line and has a
/// checkpointer to restart it.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Set when a use waited `GIVE_UP_AFTER` in vain; cleared when no file is
/// held any more. Meanwhile nothing waits (one stall, not one per use).
static GAVE_UP: AtomicBool = AtomicBool::new(false);

/// Times a log of this process reached the hold line, and the µs its uses
/// waited there, summed over the uses (for `/metrics`).
static HOLDS_TOTAL: AtomicU64 = AtomicU64::new(0);
static WAITED_US_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Times a log of this process reached the hold line, and the seconds its
/// uses of the state files waited there (summed over the uses).
pub fn totals() -> (u64, f64) {
    (
        HOLDS_TOTAL.load(Ordering::Relaxed),
        WAITED_US_TOTAL.load(Ordering::Relaxed) as f64 / 1e6,
    )
}

/// Where the waiting uses sleep; notified whenever a file is released.
static RELEASE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// Every state file's log size, by path: every journal of a file in this
/// process shares it (their commits all grow the same log, and any of
/// their checkpointers may restart it).
static FILES: Mutex<Option<HashMap<PathBuf, Weak<LogSize>>>> = Mutex::new(None);

/// Whether a use of a state file must wait now (one relaxed load: the
/// path every use takes).
pub fn holding() -> bool {
    HELD.load(Ordering::Relaxed) != 0 && !GAVE_UP.load(Ordering::Relaxed)
}

/// Waits until no log is held, or gives up after `GIVE_UP_AFTER`.
pub fn wait_for_room() {
    let began = Instant::now();
    let (lock, release) = &RELEASE;
    let waiting = lock_ignoring_poison(lock);
    let (_waiting, result) = release
        .wait_timeout_while(waiting, GIVE_UP_AFTER, |_| holding())
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if result.timed_out() && holding() && !GAVE_UP.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            bound_mib = WAL_BOUND >> 20,
            waited_s = GIVE_UP_AFTER.as_secs(),
            "the state file's write-ahead log is past its hold line and was not restarted in time (another process reading the state file?): writes go on past the bound until it is"
        );
        // The others waiting go on too, not each after its own wait.
        release.notify_all();
    }
    let waited_us = began.elapsed().as_micros() as u64;
    WAITED_US_TOTAL.fetch_add(waited_us, Ordering::Relaxed);
    tracing::debug!(
        waited_us,
        "a use of the state file waited for the write-ahead log's restart"
    );
}

/// One state file's write-ahead log, as this process's commits left it.
#[derive(Default)]
pub struct LogSize {
    state: Mutex<State>,
    /// A pause before each flush of the database file: a slow disk, for
    /// the tests.
    #[cfg(test)]
    pub slow_flush: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    /// The log's size in bytes after the last commit (0 once restarted).
    bytes: u64,
    /// Running checkpointers of this file: without one, nothing would
    /// ever restart the log, and nothing is held.
    checkpointers: usize,
    /// Whether this file counts in `HELD`.
    held: bool,
    /// How many times this file's log reached the hold line.
    holds: u64,
    /// The largest size a commit left the log at.
    largest: u64,
    /// Commits of this process to the file.
    commits: u64,
}

impl LogSize {
    /// The log of the state file at `path` (shared by every journal of it
    /// in this process).
    pub fn of(path: &Path) -> Arc<LogSize> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut files = lock_ignoring_poison(&FILES);
        let files = files.get_or_insert_with(HashMap::new);
        if let Some(log) = files.get(&key).and_then(Weak::upgrade) {
            return log;
        }
        files.retain(|_, log| log.strong_count() > 0);
        let log = Arc::new(LogSize::default());
        files.insert(key, Arc::downgrade(&log));
        log
    }

    /// A commit left `frames` frames of `page_size` in the log (from the
    /// connection's commit hook).
    pub fn committed(&self, frames: u64, page_size: u64) {
        // A frame is a page and its 24-byte header, after the log's own
        // 32-byte header: the file's size, not the pages'.
        let bytes = 32 + frames * (page_size + 24);
        self.update(|state| {
            state.bytes = bytes;
            state.largest = state.largest.max(bytes);
            state.commits += 1;
        });
    }

    /// The log was restarted: the next commit begins it anew.
    pub fn restarted(&self) {
        self.update(|state| state.bytes = 0);
    }

    /// How many commits this process made to the file so far: a
    /// checkpoint's count of the log is news only if none came meanwhile.
    pub fn commits(&self) -> u64 {
        lock_ignoring_poison(&self.state).commits
    }

    /// A checkpoint that began after `commits` commits found `frames`
    /// frames in the log. Only a log at or under the restart size (the
    /// checkpointer's own test, so that a larger one is restarted instead)
    /// lowers the size, and only if no commit of this process came since:
    /// then another process restarted the log, and this one, held, makes no
    /// commit to say so. (SQLite counts the frames when the copy begins; a
    /// count from before this process's last commits is left to their hook.)
    pub fn observed(&self, commits: u64, frames: u64, page_size: u64) {
        if frames * page_size > super::RESTART_AT {
            return;
        }
        let bytes = 32 + frames * (page_size + 24);
        self.update(|state| {
            if state.commits == commits {
                state.bytes = state.bytes.min(bytes);
            }
        });
    }

    pub fn checkpointer_started(&self) {
        self.update(|state| state.checkpointers += 1);
    }

    pub fn checkpointer_stopped(&self) {
        self.update(|state| state.checkpointers = state.checkpointers.saturating_sub(1));
    }

    /// How many times this file's log reached the hold line.
    #[cfg(test)]
    pub fn holds(&self) -> u64 {
        lock_ignoring_poison(&self.state).holds
    }

    /// The largest size a commit left the log at.
    #[cfg(test)]
    pub fn largest(&self) -> u64 {
        lock_ignoring_poison(&self.state).largest
    }

    #[cfg(test)]
    pub fn flush_pause(&self) -> Duration {
        Duration::from_millis(self.slow_flush.load(Ordering::Relaxed))
    }

    /// Applies `change`, then counts this file in `HELD` or not.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = lock_ignoring_poison(&self.state);
        change(&mut state);
        let held = state.bytes > HOLD_AT && state.checkpointers > 0;
        if held == state.held {
            return;
        }
        state.held = held;
        if held {
            state.holds += 1;
            HOLDS_TOTAL.fetch_add(1, Ordering::Relaxed);
            // Under the waiters' lock, as every change of `HELD` and
            // `GAVE_UP`: a waiter giving up decides from both at once.
            let _waiting = lock_ignoring_poison(&RELEASE.0);
            HELD.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                bytes = state.bytes,
                "the write-ahead log reached its hold line: uses of the state file wait for its restart"
            );
        } else {
            release_one();
        }
    }
}

impl Drop for LogSize {
    fn drop(&mut self) {
        if lock_ignoring_poison(&self.state).held {
            release_one();
        }
    }
}

/// One file is no longer held: wakes the waiting uses.
fn release_one() {
    // Under the waiters' lock: none checks `holding` before the change and
    // sleeps after the notification, and none gives up (setting `GAVE_UP`)
    // on a hold released meanwhile, which would leave the next hold off.
    let _waiting = lock_ignoring_poison(&RELEASE.0);
    if HELD.fetch_sub(1, Ordering::Relaxed) == 1 {
        GAVE_UP.store(false, Ordering::Relaxed);
    }
    RELEASE.1.notify_all();
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
