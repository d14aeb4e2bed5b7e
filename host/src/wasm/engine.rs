//! The wasmtime engine configuration and the epoch ticker that drives deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines, and how often
/// a busy guest yields to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How much of a freed slot's dirtied memory is rewritten in place rather
/// than discarded (1, 2, 4 and 16 MiB measured alike for a Rust guest). It
/// is also the most a freed slot keeps resident.
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;

/// Engine-wide limits.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The most component instances alive at once (concurrent calls).
    pub max_instances: u32,
    /// The largest linear memory any guest may have (per-call limits are lower).
    pub max_memory_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            max_instances: 1000,
            max_memory_bytes: 1 << 30,
        }
    }
}

/// The engine: component model, async, pooling allocator, epoch interruption.
pub fn build(options: &EngineOptions) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    let instances = options.max_instances;
    pool.total_component_instances(instances)
        // Interpreted-language components hold several core instances,
        // memories and tables each.
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 2)
        .total_stacks(instances)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_memory_size(options.max_memory_bytes)
        // Measured with `cargo bench` (a fresh instance per call): resetting
        // a slot's table with memset beats page faults, but for linear memory
        // a memset of the whole stack region (1 MiB in Rust guests) costs
        // more than faulting in the few pages a call touches. Batching
        // decommits saves cross-core TLB flushes.
        .table_keep_resident(1 << 16)
        .decommit_batch_size(16);
    // `WASAGA_PAGEMAP=0` turns it off: the benchmarks' baseline.
    let pagemap_wanted = std::env::var_os("WASAGA_PAGEMAP").is_none_or(|v| v != "0");
    if pagemap_wanted && PoolingAllocationConfig::is_pagemap_scan_available() {
        // Linux 6.7+: a freed slot is reset by rewriting only the pages its
        // call dirtied (found with the PAGEMAP_SCAN ioctl), up to
        // `MEMORY_KEEP_RESIDENT`, instead of discarding them: the next call
        // in that slot takes no page faults and no cross-core TLB flushes.
        // Measured with `cargo bench --bench workflow`: the floor of a call
        // 19 -> 10 µs, 100 runs in flight 2.6x. Without the ioctl, keeping
        // memory resident would memset the whole region, which is slower
        // than faulting (see above), so it stays off. The reset is sound only
        // with vendor/wasmtime's fix (dirty pages that are not present are
        // discarded too; see vendor/README.md).
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // `WASAGA_PERFMAP=1`: name guest functions in `perf` profiles.
    if std::env::var_os("WASAGA_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }

    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread.
    pub fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasaga-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
