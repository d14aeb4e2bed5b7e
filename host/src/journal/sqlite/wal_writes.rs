//! One write per commit to the state file's write-ahead log: a SQLite VFS
//! over the default `unix` one whose log files gather a transaction's frames
//! and hand them to the kernel in one `pwrite` when its commit frame is
//! complete. It owns only how log writes reach the file; every other file,
//! and every other operation on the log, is the `unix` VFS's unchanged.
//!
//! Why: SQLite writes each frame of the log as two writes (its 24-byte
//! header, then the page), so a commit of four pages was eight system calls,
//! each touching one or two page-cache pages (frames are not page-aligned);
//! a profile of a durable run had 17 % of its samples under `pwrite`.
//!
//! What it must not change: when `sqlite3WalFrames` returns for a commit,
//! every byte of it is in the file (SQLite then publishes the frames in the
//! shared wal-index, where any connection may read them; a process that dies
//! afterwards must not lose them). So:
//! - only appends are gathered: a frame's header (or the log's header at
//!   offset 0) starts a batch, and writes that continue it exactly join it;
//! - the batch is written when the page of a commit frame (a header whose
//!   "database size" field is not 0) joins it;
//! - any other write (an overwrite in place, a checksum rewrite, which
//!   SQLite always precedes by a read of that frame) writes the batch first
//!   and then goes straight through;
//! - every other operation (a read, a sync, a truncate, the size, a file
//!   control, a lock, the close) writes the batch first.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::ffi::{
    SQLITE_IOERR_NOMEM, SQLITE_OK, SQLITE_OPEN_WAL, sqlite3_file, sqlite3_int64,
    sqlite3_io_methods, sqlite3_vfs, sqlite3_vfs_find, sqlite3_vfs_register,
};
use rusqlite::{Connection, OpenFlags};

/// The VFS's registered name.
const NAME: &CStr = c"wasaga-wal";
/// The log's header, and a frame's.
const LOG_HEADER: c_int = 32;
const FRAME_HEADER: c_int = 24;
/// The most one batch holds: the unix VFS writes at most 128 KiB - 1 in one
/// call (it masks larger sizes, and reports a short write as a full disk);
/// a transaction of more pages is written in several.
const MAX_BATCH: usize = 0x1ffff;

/// Opens the state file at `path` through this VFS (registered on first use;
/// if it cannot be, or with `WASAGA_WAL_WRITES=0`, the benchmarks' baseline,
/// through SQLite's default one).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("WASAGA_WAL_WRITES").map_or(true, |v| v != "0"));
    match registered().filter(|_| on) {
        Some(name) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), name),
        None => Connection::open(path),
    }
}

/// How many batches this thread handed to the kernel (for tests).
#[cfg(test)]
fn writes() -> u64 {
    WRITES.with(|w| w.get())
}

thread_local! {
    static WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The `unix` VFS this one wraps, once registered.
struct Inner(*mut sqlite3_vfs);
// SAFETY: a registered VFS is immutable and lives as long as the process;
// SQLite calls it from any thread.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Option<Inner>> = OnceLock::new();

fn registered() -> Option<&'static CStr> {
    INNER
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find and _register are thread-safe; the
            // new VFS is leaked, so it outlives every connection using it.
            unsafe {
                rusqlite::ffi::sqlite3_initialize();
                let unix = sqlite3_vfs_find(c"unix".as_ptr());
                if unix.is_null() {
                    return None;
                }
                let mut ours: sqlite3_vfs = *unix;
                ours.zName = NAME.as_ptr();
                ours.pNext = std::ptr::null_mut();
                ours.szOsFile = (file_offset() + (*unix).szOsFile as usize) as c_int;
                ours.xOpen = Some(x_open);
                let ours = Box::leak(Box::new(ours));
                if sqlite3_vfs_register(ours, 0) != SQLITE_OK {
                    return None;
                }
                Some(Inner(unix))
            }
        })
        .as_ref()
        .map(|_| NAME)
}

/// A log file: our methods first (SQLite sees this as its `sqlite3_file`),
/// then the batch, then the `unix` VFS's file.
#[repr(C)]
struct LogFile {
    base: sqlite3_file,
    inner: *mut sqlite3_file,
    batch: Batch,
}

/// Frames written by SQLite, not yet handed to the kernel.
struct Batch {
    bytes: Vec<u8>,
    /// Where `bytes` go in the file.
    offset: i64,
    /// The last write was a commit frame's header: its page ends the batch.
    commit_next: bool,
    /// Where the last read was: a write there is a rewrite of that frame.
    last_read: Option<i64>,
}

/// Where the `unix` file starts inside ours (aligned for any of its fields).
const fn file_offset() -> usize {
    std::mem::size_of::<LogFile>().next_multiple_of(16)
}

unsafe extern "C" fn x_open(
    vfs: *mut sqlite3_vfs,
    name: *const c_char,
    file: *mut sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Some(Inner(unix))) = INNER.get() else {
        return rusqlite::ffi::SQLITE_CANTOPEN;
    };
    let _ = vfs;
    // SAFETY: `file` has our szOsFile bytes; the `unix` VFS gets a part of
    // them at least its own szOsFile long, and its own VFS pointer.
    unsafe {
        let open = (**unix).xOpen.expect("the unix VFS opens files");
        if flags & SQLITE_OPEN_WAL == 0 {
            // Not a log: the unix file is the whole of it, unchanged.
            return open(*unix, name, file, flags, out_flags);
        }
        let inner = (file as *mut u8).add(file_offset()) as *mut sqlite3_file;
        (*file).pMethods = std::ptr::null();
        let rc = open(*unix, name, inner, flags, out_flags);
        if rc != SQLITE_OK {
            // Whatever the unix VFS left open is closed by it if it set
            // its methods (SQLite closes only what pMethods names: ours).
            if !(*inner).pMethods.is_null()
                && let Some(close) = (*(*inner).pMethods).xClose
            {
                close(inner);
            }
            return rc;
        }
        let log = file as *mut LogFile;
        std::ptr::addr_of_mut!((*log).inner).write(inner);
        std::ptr::addr_of_mut!((*log).batch).write(Batch {
            bytes: Vec::new(),
            offset: 0,
            commit_next: false,
            last_read: None,
        });
        (*file).pMethods = &LOG_METHODS;
        SQLITE_OK
    }
}

static LOG_METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// Our file and the unix one inside it.
///
/// # Safety
/// `file` is a log file opened by `x_open`.
unsafe fn parts<'a>(file: *mut sqlite3_file) -> (&'a mut Batch, *mut sqlite3_file) {
    // SAFETY: the caller's promise; SQLite uses a file from one thread at a
    // time.
    unsafe {
        let log = file as *mut LogFile;
        (&mut (*log).batch, (*log).inner)
    }
}

/// The unix file's methods.
///
/// # Safety
/// `inner` is an open unix file.
unsafe fn methods<'a>(inner: *mut sqlite3_file) -> &'a sqlite3_io_methods {
    // SAFETY: the caller's promise.
    unsafe { &*(*inner).pMethods }
}

/// Writes the batch, if any, in one call; a failure drops it (the
/// transaction it belonged to fails with that error).
///
/// # Safety
/// `inner` is an open unix file.
unsafe fn flush(batch: &mut Batch, inner: *mut sqlite3_file) -> c_int {
    batch.commit_next = false;
    if batch.bytes.is_empty() {
        return SQLITE_OK;
    }
    let write = unsafe { methods(inner) }.xWrite.expect("unix files write");
    // The batch is at most MAX_BATCH: it fits a c_int.
    let rc = unsafe {
        write(
            inner,
            batch.bytes.as_ptr() as *const c_void,
            batch.bytes.len() as c_int,
            batch.offset,
        )
    };
    WRITES.with(|w| w.set(w.get() + 1));
    batch.bytes.clear();
    rc
}

/// Writes the batch first, then calls `then` on the unix file.
macro_rules! after_flush {
    ($file:ident, |$inner:ident| $then:expr) => {{
        // SAFETY: SQLite calls a log file's methods only on a file `x_open`
        // opened, from one thread at a time.
        let (batch, $inner) = unsafe { parts($file) };
        let rc = unsafe { flush(batch, $inner) };
        if rc != SQLITE_OK {
            return rc;
        }
        #[allow(unused_unsafe)]
        unsafe {
            $then
        }
    }};
}

unsafe extern "C" fn x_write(
    file: *mut sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: sqlite3_int64,
) -> c_int {
    // SAFETY: as in after_flush; `data` holds `amount` bytes.
    let (batch, inner) = unsafe { parts(file) };
    let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, amount.max(0) as usize) };
    let rewrite = batch.last_read == Some(offset);
    batch.last_read = None;
    let continues = !batch.bytes.is_empty()
        && offset == batch.offset + batch.bytes.len() as i64
        && batch.bytes.len() + bytes.len() <= MAX_BATCH;
    let starts = batch.bytes.is_empty()
        && !rewrite
        && (amount == FRAME_HEADER || (amount == LOG_HEADER && offset == 0));
    if !(continues || starts) {
        // Not an append: what was gathered goes first, then this write.
        let rc = unsafe { flush(batch, inner) };
        if rc != SQLITE_OK {
            return rc;
        }
        let write = unsafe { methods(inner) }.xWrite.expect("unix files write");
        return unsafe { write(inner, data, amount, offset) };
    }
    if starts {
        batch.offset = offset;
    }
    let ends_commit = batch.commit_next && amount != FRAME_HEADER;
    batch.commit_next = amount == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
    if batch.bytes.try_reserve(bytes.len()).is_err() {
        batch.bytes.clear();
        return SQLITE_IOERR_NOMEM;
    }
    batch.bytes.extend_from_slice(bytes);
    if ends_commit {
        return unsafe { flush(batch, inner) };
    }
    SQLITE_OK
}

unsafe extern "C" fn x_read(
    file: *mut sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: sqlite3_int64,
) -> c_int {
    // SAFETY: as in after_flush.
    let (batch, inner) = unsafe { parts(file) };
    let rc = unsafe { flush(batch, inner) };
    if rc != SQLITE_OK {
        return rc;
    }
    batch.last_read = Some(offset);
    unsafe { (methods(inner).xRead.expect("unix files read"))(inner, data, amount, offset) }
}

unsafe extern "C" fn x_close(file: *mut sqlite3_file) -> c_int {
    // SAFETY: as in after_flush; the batch is dropped once, here.
    unsafe {
        let (batch, inner) = parts(file);
        let flushed = flush(batch, inner);
        let closed = (methods(inner).xClose.expect("unix files close"))(inner);
        std::ptr::drop_in_place(std::ptr::addr_of_mut!((*(file as *mut LogFile)).batch));
        (*file).pMethods = std::ptr::null();
        if flushed != SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_truncate(file: *mut sqlite3_file, size: sqlite3_int64) -> c_int {
    after_flush!(file, |inner| (methods(inner).xTruncate.expect("unix"))(
        inner, size
    ))
}

unsafe extern "C" fn x_sync(file: *mut sqlite3_file, flags: c_int) -> c_int {
    after_flush!(file, |inner| (methods(inner).xSync.expect("unix"))(
        inner, flags
    ))
}

unsafe extern "C" fn x_file_size(file: *mut sqlite3_file, size: *mut sqlite3_int64) -> c_int {
    after_flush!(file, |inner| (methods(inner).xFileSize.expect("unix"))(
        inner, size
    ))
}

unsafe extern "C" fn x_lock(file: *mut sqlite3_file, lock: c_int) -> c_int {
    after_flush!(file, |inner| (methods(inner).xLock.expect("unix"))(
        inner, lock
    ))
}

unsafe extern "C" fn x_unlock(file: *mut sqlite3_file, lock: c_int) -> c_int {
    after_flush!(file, |inner| (methods(inner).xUnlock.expect("unix"))(
        inner, lock
    ))
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut sqlite3_file, out: *mut c_int) -> c_int {
    after_flush!(file, |inner| (methods(inner)
        .xCheckReservedLock
        .expect("unix"))(inner, out))
}

unsafe extern "C" fn x_file_control(file: *mut sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    after_flush!(file, |inner| (methods(inner).xFileControl.expect("unix"))(
        inner, op, arg
    ))
}

unsafe extern "C" fn x_sector_size(file: *mut sqlite3_file) -> c_int {
    // SAFETY: as in after_flush; no data moves.
    unsafe {
        let (_, inner) = parts(file);
        (methods(inner).xSectorSize.expect("unix"))(inner)
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut sqlite3_file) -> c_int {
    // SAFETY: as in after_flush; no data moves.
    unsafe {
        let (_, inner) = parts(file);
        (methods(inner).xDeviceCharacteristics.expect("unix"))(inner)
    }
}

// The wal-index is the database file's, never the log's: these forward for
// completeness.

unsafe extern "C" fn x_shm_map(
    file: *mut sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    after_flush!(file, |inner| (methods(inner).xShmMap.expect("unix"))(
        inner, page, size, extend, out
    ))
}

unsafe extern "C" fn x_shm_lock(
    file: *mut sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    after_flush!(file, |inner| (methods(inner).xShmLock.expect("unix"))(
        inner, offset, n, flags
    ))
}

unsafe extern "C" fn x_shm_barrier(file: *mut sqlite3_file) {
    // SAFETY: as in after_flush.
    unsafe {
        let (batch, inner) = parts(file);
        let _ = flush(batch, inner);
        (methods(inner).xShmBarrier.expect("unix"))(inner)
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut sqlite3_file, delete: c_int) -> c_int {
    after_flush!(file, |inner| (methods(inner).xShmUnmap.expect("unix"))(
        inner, delete
    ))
}

unsafe extern "C" fn x_fetch(
    file: *mut sqlite3_file,
    offset: sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    after_flush!(file, |inner| (methods(inner).xFetch.expect("unix"))(
        inner, offset, amount, out
    ))
}

unsafe extern "C" fn x_unfetch(
    file: *mut sqlite3_file,
    offset: sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    after_flush!(file, |inner| (methods(inner).xUnfetch.expect("unix"))(
        inner, offset, page
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    /// What a crash would leave: the database and log files as the kernel
    /// has them (not the wal-index), opened afresh, so SQLite recovers from
    /// the log alone and checks every frame's checksum.
    fn as_after_a_crash(dir: &Path) -> Connection {
        let copy = dir.join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for name in ["state.db", "state.db-wal"] {
            let _ = std::fs::remove_file(copy.join(name));
            std::fs::copy(dir.join(name), copy.join(name)).unwrap();
        }
        let _ = std::fs::remove_file(copy.join("state.db-shm"));
        Connection::open(copy.join("state.db")).unwrap()
    }

    fn opened(dir: &Path) -> Connection {
        let conn = open(&dir.join("state.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "synchronous", "normal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .unwrap();
        conn
    }

    fn sum_and_count(conn: &Connection) -> (i64, i64) {
        conn.query_row("SELECT total(length(body)), count(*) FROM t", [], |r| {
            Ok((r.get::<_, f64>(0)? as i64, r.get(1)?))
        })
        .unwrap()
    }

    #[test]
    fn a_commit_is_one_write_and_is_in_the_file_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let conn = opened(dir.path());
        // The default VFS, in the same process: it shares the wal-index, so
        // it reads the new frames at once, from the file.
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        for i in 0..20_i64 {
            let before = writes();
            // Several pages a commit: a row bigger than a page, and its index.
            conn.execute(
                "INSERT INTO t (id, body) VALUES (?1, zeroblob(6000 + ?1))",
                params![i],
            )
            .unwrap();
            // Its frames (the row's page, two overflow pages, the table's
            // root) in one write.
            let made = writes() - before;
            assert_eq!(made, 1, "commit {i} wrote its frames in {made} batches");
            assert_eq!(sum_and_count(&other).1, i + 1);
        }
        // Not closed: nothing is written at the close that a crash would lose.
        let recovered = as_after_a_crash(dir.path());
        let expected = sum_and_count(&conn);
        assert_eq!(sum_and_count(&recovered), expected);
        drop(conn);
    }

    #[test]
    fn a_transaction_that_spills_and_rewrites_its_pages_recovers_whole() {
        let dir = tempfile::tempdir().unwrap();
        let conn = opened(dir.path());
        // A tiny page cache: the transaction writes frames before its commit,
        // then overwrites some of them in place (and rewrites checksums).
        conn.pragma_update(None, "cache_size", 5).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..300_i64 {
            conn.execute(
                "INSERT INTO t (id, body) VALUES (?1, randomblob(1500))",
                params![i],
            )
            .unwrap();
        }
        for round in 0..3_i64 {
            conn.execute(
                "UPDATE t SET body = randomblob(1000 + ?1 * 300) WHERE id % 7 = ?1",
                params![round],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        // Checked at once (the rewritten checksums are the commit's last
        // writes), then after a second, small transaction, as a run's next step.
        for then in [None, Some("UPDATE t SET body = x'00' WHERE id = 1")] {
            if let Some(sql) = then {
                conn.execute(sql, []).unwrap();
            }
            // The crash comes first: a read through `conn` would write
            // whatever it still held.
            let recovered = as_after_a_crash(dir.path());
            let expected = sum_and_count(&conn);
            let content: Vec<u8> = conn
                .query_row("SELECT body FROM t WHERE id = 14", [], |r| r.get(0))
                .unwrap();
            let check: String = recovered
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            assert_eq!(sum_and_count(&recovered), expected);
            let recovered_content: Vec<u8> = recovered
                .query_row("SELECT body FROM t WHERE id = 14", [], |r| r.get(0))
                .unwrap();
            assert_eq!(recovered_content, content);
        }
        drop(conn);
    }

    #[test]
    fn the_log_restarts_and_is_reused_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let conn = opened(dir.path());
        let checkpointer = open(&dir.path().join("state.db")).unwrap();
        for i in 0..200_i64 {
            conn.execute(
                "INSERT INTO t (id, body) VALUES (?1, randomblob(900))",
                params![i],
            )
            .unwrap();
            if i % 50 == 49 {
                // The log starts again from its header, over old frames.
                let _: (i64, i64, i64) = checkpointer
                    .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .unwrap();
            }
        }
        let recovered = as_after_a_crash(dir.path());
        let expected = sum_and_count(&conn);
        assert_eq!(expected.1, 200);
        assert_eq!(sum_and_count(&recovered), expected);
        drop(conn);
    }
}
