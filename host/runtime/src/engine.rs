//! The wasmtime engine: configuration, the pooling allocator and the epoch ticker.

use std::hash::{Hash, Hasher};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::error::RuntimeError;
use crate::limits::Limits;

/// How often the engine's epoch advances, in milliseconds. A deadline of `n` ms traps
/// between `n` and about `n + EPOCH_TICK_MS` ms after the call started (later only if the
/// machine is too busy to run the ticker or the call's thread).
pub const EPOCH_TICK_MS: u64 = 1;

/// Plugin instances alive at once; a call beyond this waits for a slot.
pub const INSTANCES_CONCURRENT_MAX: u32 = 256;

/// Core instances, memories and tables in the pool per concurrent plugin instance (a
/// `wasm32-wasip2` component has one memory and a few small shim instances; a CPython
/// component built with componentize-py has 38 core instances and 2 tables).
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

/// Linear memory bytes of a freed instance slot that are reset in place (only the pages the
/// call dirtied, found with Linux's `PAGEMAP_SCAN` where the kernel has it) rather than
/// returned to the kernel: the next instance in the slot then takes no page faults there. A
/// Rust guest's first megabyte or so holds its data, stack and heap.
pub const MEMORY_KEEP_RESIDENT_BYTES_DEFAULT: usize = 2 << 20;
/// The same for tables.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;

/// Native stack a plugin may use, in bytes.
const WASM_STACK_BYTES_MAX: usize = 512 << 10;

/// Builds the engine every plugin of a runtime is compiled for and runs in.
/// `memory_keep_resident_bytes`: see [`MEMORY_KEEP_RESIDENT_BYTES_DEFAULT`] (0: every freed
/// memory goes back to the kernel).
pub(crate) fn build_engine(
    ceiling: &Limits,
    memory_keep_resident_bytes: usize,
) -> Result<Engine, RuntimeError> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(INSTANCES_CONCURRENT_MAX)
        .total_core_instances(INSTANCES_CONCURRENT_MAX * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(INSTANCES_CONCURRENT_MAX * MEMORIES_PER_COMPONENT)
        .total_tables(INSTANCES_CONCURRENT_MAX * TABLES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(ceiling.memory_bytes_max)
        .linear_memory_keep_resident(memory_keep_resident_bytes)
        .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES_MAX)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// A short hex digest of everything that makes a compiled artefact loadable by `engine`
/// (wasmtime version, compiler settings, target). Part of the cache key, so changing any of
/// them makes old artefacts unused rather than refused.
pub(crate) fn compatibility_hash(engine: &Engine) -> String {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            unreachable!("only `write` is used; the digest is read with `finalize`")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    // The runtime's own call conventions (fuel, epochs) are in the engine config, and so in
    // the hash; the runtime's crate version is added in case its embedding changes.
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Starts the thread that advances `engine`'s epoch once per [`EPOCH_TICK_MS`] of real time:
/// a sleep that overshoots (timer slack, a busy machine) is caught up by several increments,
/// so the epoch tracks the monotonic clock rather than the count of wake-ups. It stops by
/// itself once the engine is dropped (every runtime, plugin and store is gone).
pub(crate) fn start_epoch_ticker(engine: &Engine) -> Result<(), RuntimeError> {
    let weak = engine.weak();
    let tick = Duration::from_millis(EPOCH_TICK_MS);
    std::thread::Builder::new()
        .name("loyalty-epoch".into())
        .spawn(move || {
            let started = Instant::now();
            let mut ticks: u128 = 0;
            loop {
                std::thread::sleep(tick);
                let Some(engine) = weak.upgrade() else {
                    break;
                };
                let due = started.elapsed().as_millis() / u128::from(EPOCH_TICK_MS);
                while ticks < due {
                    engine.increment_epoch();
                    ticks += 1;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| RuntimeError::Engine(format!("the epoch ticker thread did not start: {e}")))
}

/// Counts the pool's instance slots, so a call beyond [`INSTANCES_CONCURRENT_MAX`] waits
/// instead of failing.
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

/// A held slot; released on drop.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(crate) fn new(count: u32) -> Slots {
        Slots {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> Slot<'_> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .0
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}
