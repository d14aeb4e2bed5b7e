//! The per-call sandbox: the store's data (WASI context without ambient
//! authority, resource table, memory limiter, the call's capabilities and
//! its outbound HTTP hook).

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::stdio::Captured;
pub use crate::app::Limits;
use crate::capabilities::http::OutboundHooks;
use crate::capabilities::{CallCapabilities, CapabilityView};

/// How much of a guest's stdout/stderr is kept per call.
const STDIO_CAPACITY: usize = 64 * 1024;

/// The most resource handles (capability handles, WASI streams, HTTP fields
/// and bodies…) a call may hold at once. Each lives in host memory, so
/// wasmtime's default of a million would let one guest take gigabytes of
/// the host's memory with `wasi:http` fields alone; a step uses tens.
pub const MAX_HANDLES: usize = 10_000;

/// The data of one call's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    call: CallCapabilities,
    http: WasiHttpCtx,
    http_hooks: OutboundHooks,
    pub(super) stdout: Captured,
    pub(super) stderr: Captured,
}

impl HostState {
    /// A fresh sandbox for one call.
    pub fn new(call: CallCapabilities, limits: Limits) -> HostState {
        let stdout = Captured::new(STDIO_CAPACITY);
        let stderr = Captured::new(STDIO_CAPACITY);
        // No preopened directories, no environment, no arguments, no sockets.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        // Outbound HTTP goes through the grant-checking hook only.
        let http_hooks = OutboundHooks {
            call: call.outbound.clone(),
            grants: call.grants.clone(),
            client: call.services.http.clone(),
            node: call.node.clone(),
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        HostState {
            wasi,
            table,
            limiter: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                used: 0,
                exceeded: None,
            },
            call,
            http: WasiHttpCtx::new(),
            http_hooks,
            stdout,
            stderr,
        }
    }

    /// `text` without the values of the step's granted secrets.
    pub fn scrub(&self, text: String) -> String {
        match self.call.scrub(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(scrubbed) => scrubbed,
        }
    }

    /// The view the WIT imports are implemented on.
    pub fn capabilities(&mut self) -> CapabilityView<'_> {
        CapabilityView {
            call: &self.call,
            table: &mut self.table,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Refuses memory growth past the call's limit and remembers that it did.
/// The limit covers all of a call's memories together: a component may have
/// several (the engine allows up to 8), and each one checked alone would
/// let a call use several times its limit.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    /// The bytes of every memory of the call so far.
    used: usize,
    /// The total the guest asked for when refused.
    pub(super) exceeded: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called for each memory's first allocation too (current = 0).
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.max_bytes {
            self.exceeded = Some(total);
            // The guest's memory.grow returns -1; most guests then abort.
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The deadline passed while the guest ran.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A store for one call: memory limit, deadline, and a yield every epoch
/// tick so that a busy guest never holds a runtime thread for long.
pub fn new_store(
    engine: &Engine,
    call: CallCapabilities,
    limits: Limits,
    deadline: Option<Instant>,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(call, limits));
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(DeadlineExceeded.into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_limit_covers_all_memories_together() {
        let mut limiter = MemoryLimiter {
            max_bytes: 120 * MIB,
            used: 0,
            exceeded: None,
        };
        // Eight memories created at 1 MiB each, then each grown to 14 MiB: 112 MiB.
        for _ in 0..8 {
            assert!(limiter.memory_growing(0, MIB, None).unwrap());
        }
        for _ in 0..8 {
            assert!(limiter.memory_growing(MIB, 14 * MIB, None).unwrap());
        }
        // Any memory growing by 9 MiB more passes the call's 120 MiB.
        assert!(!limiter.memory_growing(14 * MIB, 23 * MIB, None).unwrap());
        assert_eq!(limiter.exceeded, Some(121 * MIB));
        // Growth that fits is still allowed.
        assert!(limiter.memory_growing(14 * MIB, 22 * MIB, None).unwrap());
        assert!(!limiter.memory_growing(0, MIB, None).unwrap());
    }
}
