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
//!   control, a lock, the close) writes the batch first;
//! - and the database file's release of the log's write lock writes its log's
//!   batch first: frames a transaction spilled before its commit are gathered
//!   too, and if it rolls back, they must reach the file (as SQLite would
//!   have written them) before another writer may write at those offsets,
//!   never after. The database file's methods are the `unix` ones, with
//!   that one step in front of the lock's release.
//!
//! Logs of a file whose writes are not power-safe (SQLite then pads commits
//! to a sector and splits a frame's write around a sync) are not gathered.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::ffi::{
    SQLITE_IOCAP_POWERSAFE_OVERWRITE, SQLITE_OK, SQLITE_OPEN_MAIN_DB, SQLITE_OPEN_WAL,
    SQLITE_SHM_UNLOCK, sqlite3_database_file_object, sqlite3_file, sqlite3_int64,
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
                let unix_size = (*unix).szOsFile as usize;
                ours.szOsFile = (file_offset() + unix_size)
                    .max(tail_offset(unix_size) + std::mem::size_of::<DbTail>())
                    as c_int;
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
    /// Its database file (whose write-lock release writes the batch), if
    /// opened through this VFS.
    db: *mut sqlite3_file,
    batch: Batch,
}

/// What a database file keeps after the unix file's own bytes.
#[repr(C)]
struct DbTail {
    /// The unix file's methods (ours stand in front of them).
    unix_methods: *const sqlite3_io_methods,
    /// Its open log, if any.
    log: *mut LogFile,
}

/// Where a database file's tail starts (after a unix file of `unix_size`).
const fn tail_offset(unix_size: usize) -> usize {
    unix_size.next_multiple_of(16)
}

/// A database file's tail.
///
/// # Safety
/// `db` is a database file `x_open` opened.
unsafe fn tail<'a>(db: *mut sqlite3_file) -> &'a mut DbTail {
    let Some(Some(Inner(unix))) = INNER.get() else {
        unreachable!("a file of this VFS exists only once it is registered")
    };
    // SAFETY: the caller's promise; the tail lies within our szOsFile.
    unsafe {
        let at = tail_offset((**unix).szOsFile as usize);
        &mut *((db as *mut u8).add(at) as *mut DbTail)
    }
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
    /// Nothing is gathered (the file's writes are not power-safe).
    through: bool,
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
        if flags & SQLITE_OPEN_MAIN_DB != 0 {
            // A database: the unix file, with our methods in front.
            let rc = open(*unix, name, file, flags, out_flags);
            if rc == SQLITE_OK {
                let tail = std::ptr::addr_of_mut!(*tail(file));
                tail.write(DbTail {
                    unix_methods: (*file).pMethods,
                    log: std::ptr::null_mut(),
                });
                (*file).pMethods = &DB_METHODS;
            }
            return rc;
        }
        if flags & SQLITE_OPEN_WAL == 0 {
            // Neither: the unix file, unchanged.
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
        let characteristics = methods(inner)
            .xDeviceCharacteristics
            .map_or(0, |f| f(inner));
        let db = sqlite3_database_file_object(name);
        let db = if !db.is_null() && std::ptr::eq((*db).pMethods, &DB_METHODS) {
            tail(db).log = log;
            db
        } else {
            std::ptr::null_mut()
        };
        std::ptr::addr_of_mut!((*log).inner).write(inner);
        std::ptr::addr_of_mut!((*log).db).write(db);
        std::ptr::addr_of_mut!((*log).batch).write(Batch {
            bytes: Vec::new(),
            offset: 0,
            commit_next: false,
            last_read: None,
            // Without its database file, nothing would write a rolled-back
            // transaction's frames before the write lock goes.
            through: characteristics & SQLITE_IOCAP_POWERSAFE_OVERWRITE == 0 || db.is_null(),
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
        && !batch.through
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
        // No memory for it: what was gathered goes now, and this write too.
        let rc = unsafe { flush(batch, inner) };
        if rc != SQLITE_OK {
            return rc;
        }
        let write = unsafe { methods(inner) }.xWrite.expect("unix files write");
        return unsafe { write(inner, data, amount, offset) };
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
        let log = file as *mut LogFile;
        let db = (*log).db;
        if !db.is_null() && tail(db).log == log {
            tail(db).log = std::ptr::null_mut();
        }
        std::ptr::drop_in_place(std::ptr::addr_of_mut!((*(file as *mut LogFile)).batch));
        (*file).pMethods = std::ptr::null();
        if flushed != SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// A method that writes the batch first, then is the unix file's.
macro_rules! forwarded {
    ($name:ident, $method:ident $(, $arg:ident: $ty:ty)*) => {
        unsafe extern "C" fn $name(file: *mut sqlite3_file $(, $arg: $ty)*) -> c_int {
            after_flush!(file, |inner| (methods(inner)
                .$method
                .expect("unix files have every method"))(
                inner $(, $arg)*
            ))
        }
    };
}

forwarded!(x_truncate, xTruncate, size: sqlite3_int64);
forwarded!(x_sync, xSync, flags: c_int);
forwarded!(x_file_size, xFileSize, size: *mut sqlite3_int64);
forwarded!(x_lock, xLock, lock: c_int);
forwarded!(x_unlock, xUnlock, lock: c_int);
forwarded!(x_check_reserved_lock, xCheckReservedLock, out: *mut c_int);
forwarded!(x_file_control, xFileControl, op: c_int, arg: *mut c_void);

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

forwarded!(x_shm_map, xShmMap, page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void);
forwarded!(x_shm_lock, xShmLock, offset: c_int, n: c_int, flags: c_int);

unsafe extern "C" fn x_shm_barrier(file: *mut sqlite3_file) {
    // SAFETY: as in after_flush.
    unsafe {
        let (batch, inner) = parts(file);
        let _ = flush(batch, inner);
        (methods(inner).xShmBarrier.expect("unix"))(inner)
    }
}

forwarded!(x_shm_unmap, xShmUnmap, delete: c_int);
forwarded!(x_fetch, xFetch, offset: sqlite3_int64, amount: c_int, out: *mut *mut c_void);
forwarded!(x_unfetch, xUnfetch, offset: sqlite3_int64, page: *mut c_void);

static DB_METHODS: sqlite3_io_methods = sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(db_close),
    xRead: Some(db_read),
    xWrite: Some(db_write),
    xTruncate: Some(db_truncate),
    xSync: Some(db_sync),
    xFileSize: Some(db_file_size),
    xLock: Some(db_lock),
    xUnlock: Some(db_unlock),
    xCheckReservedLock: Some(db_check_reserved_lock),
    xFileControl: Some(db_file_control),
    xSectorSize: Some(db_sector_size),
    xDeviceCharacteristics: Some(db_device_characteristics),
    xShmMap: Some(db_shm_map),
    xShmLock: Some(db_shm_lock),
    xShmBarrier: Some(db_shm_barrier),
    xShmUnmap: Some(db_shm_unmap),
    xFetch: Some(db_fetch),
    xUnfetch: Some(db_unfetch),
};

/// A database file's method that is the unix file's (the unix file is the
/// start of ours).
macro_rules! unix_db {
    ($name:ident, $method:ident $(, $arg:ident: $ty:ty)* => $ret:ty) => {
        unsafe extern "C" fn $name(file: *mut sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls a database file's methods only on a file
            // `x_open` opened.
            unsafe {
                ((*tail(file).unix_methods)
                    .$method
                    .expect("unix files have every method"))(file $(, $arg)*)
            }
        }
    };
}

unix_db!(db_close, xClose => c_int);
unix_db!(db_read, xRead, data: *mut c_void, amount: c_int, offset: sqlite3_int64 => c_int);
unix_db!(db_write, xWrite, data: *const c_void, amount: c_int, offset: sqlite3_int64 => c_int);
unix_db!(db_truncate, xTruncate, size: sqlite3_int64 => c_int);
unix_db!(db_sync, xSync, flags: c_int => c_int);
unix_db!(db_file_size, xFileSize, size: *mut sqlite3_int64 => c_int);
unix_db!(db_lock, xLock, lock: c_int => c_int);
unix_db!(db_unlock, xUnlock, lock: c_int => c_int);
unix_db!(db_check_reserved_lock, xCheckReservedLock, out: *mut c_int => c_int);
unix_db!(db_file_control, xFileControl, op: c_int, arg: *mut c_void => c_int);
unix_db!(db_sector_size, xSectorSize => c_int);
unix_db!(db_device_characteristics, xDeviceCharacteristics => c_int);
unix_db!(db_shm_map, xShmMap, page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void => c_int);
unix_db!(db_unix_shm_lock, xShmLock, offset: c_int, n: c_int, flags: c_int => c_int);
unix_db!(db_shm_barrier, xShmBarrier => ());
unix_db!(db_shm_unmap, xShmUnmap, delete: c_int => c_int);
unix_db!(db_fetch, xFetch, offset: sqlite3_int64, amount: c_int, out: *mut *mut c_void => c_int);
unix_db!(db_unfetch, xUnfetch, offset: sqlite3_int64, page: *mut c_void => c_int);

/// The wal-index's locks: releasing the log's write lock (slot 0) writes
/// what the log gathered first.
unsafe extern "C" fn db_shm_lock(
    file: *mut sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: as in unix_db; the log is open while linked.
    unsafe {
        let log = tail(file).log;
        if offset == 0 && flags & SQLITE_SHM_UNLOCK != 0 && !log.is_null() {
            let rc = flush(&mut (*log).batch, (*log).inner);
            if rc != SQLITE_OK {
                // The frames were a rolled-back transaction's (a commit's
                // were written at its commit frame): the lock goes anyway.
                tracing::warn!(
                    code = rc,
                    "writing a rolled-back transaction's log frames failed"
                );
            }
        }
        db_unix_shm_lock(file, offset, n, flags)
    }
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

    #[test]
    fn a_rolled_back_transactions_frames_never_land_on_another_writers() {
        let dir = tempfile::tempdir().unwrap();
        let conn = opened(dir.path());
        conn.execute("INSERT INTO t (id, body) VALUES (0, randomblob(100))", [])
            .unwrap();
        // Spilled frames, gathered; then the transaction rolls back.
        conn.pragma_update(None, "cache_size", 5).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        // One statement, so that its last spill is its last use of the log.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO t (id, body) SELECT i, randomblob(1500) FROM n",
            [],
        )
        .unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        // Another writer (SQLite's own VFS) commits at the same offsets...
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        for i in 1000..1040_i64 {
            other
                .execute(
                    "INSERT INTO t (id, body) VALUES (?1, randomblob(700))",
                    params![i],
                )
                .unwrap();
        }
        // ...and the first connection goes on (a read, then its close).
        let seen = sum_and_count(&conn);
        drop(conn);
        let expected = sum_and_count(&other);
        assert_eq!(seen, expected);
        assert_eq!(expected.1, 41);
        let recovered = as_after_a_crash(dir.path());
        let check: String = recovered
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        assert_eq!(sum_and_count(&recovered), expected);
    }
}
