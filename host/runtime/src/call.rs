//! Running one call: a fresh store with fuel, a deadline, a memory limiter, a log sink and a
//! deny-all WASI context; then classifying how it ended.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use crate::engine::EPOCH_TICK_MS;
use crate::error::CallFailure;
use crate::limits::Limits;
use crate::stderr::StderrHead;
use crate::types::{EncodedSize, LogLevel, Timestamp};

/// A line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// How loud.
    pub level: LogLevel,
    /// What the plugin wrote.
    pub message: String,
}

/// What a call did: its result (or how it failed) and what it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReport<T> {
    /// The plugin's answer, or how the call failed.
    pub result: Result<T, CallFailure>,
    /// Fuel used by instantiation and the call (0 when nothing ran).
    pub fuel_consumed: u64,
    /// Wall time of instantiation and the call, in microseconds (0 when nothing ran).
    pub elapsed_us: u64,
    /// Log lines kept, in the order written.
    pub logs: Vec<LogLine>,
    /// Log lines dropped because of the per-call caps.
    pub logs_dropped: u32,
}

impl<T> CallReport<T> {
    /// A report of a call that did not run.
    pub(crate) fn refused(failure: CallFailure) -> CallReport<T> {
        CallReport {
            result: Err(failure),
            fuel_consumed: 0,
            elapsed_us: 0,
            logs: Vec::new(),
            logs_dropped: 0,
        }
    }
}

/// A plugin's WIT `error`, lifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestError {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// How instantiating and calling a plugin ended: `Err` is a trap (or another wasmtime error),
/// `Ok(Err)` the plugin's own WIT `error`.
pub(crate) type CallOutcome<T> = wasmtime::Result<Result<T, GuestError>>;

/// The data of a call's store.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    log: LogSink,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StoreState {
    /// Records a `host.log` call.
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        self.log.push(level, message);
    }
}

/// Keeps log lines up to the per-call caps and counts the rest.
struct LogSink {
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: u32,
    lines_max: u32,
    bytes_max: usize,
}

impl LogSink {
    fn push(&mut self, level: LogLevel, message: String) {
        let fits_lines = self.lines.len() < self.lines_max as usize;
        let fits_bytes = self.bytes.saturating_add(message.len()) <= self.bytes_max;
        if fits_lines && fits_bytes {
            self.bytes += message.len();
            self.lines.push(LogLine { level, message });
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

/// Caps the instance's memories (all together) and tables, remembering a denial so a trap
/// that follows it is reported as [`CallFailure::Memory`].
struct CallLimiter {
    memory_bytes: usize,
    memory_bytes_max: usize,
    denied: bool,
}

/// Table elements one table may hold.
const TABLE_ELEMENTS_MAX: usize = 100_000;

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_bytes
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes_max {
            self.denied = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS_MAX {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }
}

/// The plugin's wall clock: always the call's `ctx.now`.
struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// The plugin's monotonic clock: always 0.
struct FixedMonotonicClock;

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The bytes both WASI random generators cycle through, so "random" data is the same on
/// every call.
const RANDOM_SEED: [u8; 32] = [
    0x6c, 0x6f, 0x79, 0x61, 0x6c, 0x74, 0x79, 0x2d, 0x9e, 0x37, 0x79, 0xb9, 0x7f, 0x4a, 0x7c, 0x15,
    0xbf, 0x58, 0x47, 0x6d, 0x1c, 0xe4, 0xe5, 0xb9, 0x94, 0xd0, 0x49, 0xbb, 0x13, 0x31, 0x11, 0xeb,
];
const INSECURE_RANDOM_SEED: u128 = 0x6c6f_7961_6c74_792d_9e37_79b9_7f4a_7c15;
/// Largest `get-random-bytes` request, in bytes (beyond it the call traps).
const RANDOM_BYTES_MAX: u64 = 64 << 10;

/// A WASI context that lets nothing in or out: no files, environment, arguments or
/// network; stdin is empty, stdout goes nowhere, the head of stderr is kept in `stderr` (for
/// a trap's message); the clocks are fixed and random data is seeded.
fn deny_all_wasi(now: Timestamp, stderr: StderrHead) -> WasiCtx {
    let now = Duration::from_micros(u64::try_from(now).unwrap_or(0));
    WasiCtxBuilder::new()
        .stderr(stderr)
        .wall_clock(FixedWallClock(now))
        .monotonic_clock(FixedMonotonicClock)
        .secure_random(Deterministic::new(RANDOM_SEED.to_vec()))
        .insecure_random(Deterministic::new(
            RANDOM_SEED.iter().rev().copied().collect(),
        ))
        .insecure_random_seed(INSECURE_RANDOM_SEED)
        .max_random_size(RANDOM_BYTES_MAX)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// Runs one call on a fresh store and classifies how it ended. `call` instantiates and calls
/// the plugin: its outer `Err` is a trap or another wasmtime error (a guest that returns
/// invalid UTF-8, say), its inner `Err` the plugin's own WIT `error`. `now` is `ctx.now`;
/// `input_bytes` is the arguments' estimated encoded size.
///
/// The host's own failures are designed out rather than reported: the engine always enables
/// fuel, and the caller holds a pool slot (see `engine::Slots`), so instantiation does not
/// fail for want of one. A wasmtime error that is not a trap is reported as
/// [`CallFailure::Trap`] with its message.
pub(crate) fn run<T: EncodedSize>(
    engine: &Engine,
    limits: &Limits,
    now: Timestamp,
    input_bytes: usize,
    call: impl FnOnce(&mut Store<StoreState>) -> CallOutcome<T>,
) -> CallReport<T> {
    if input_bytes > limits.input_bytes_max {
        return CallReport::refused(CallFailure::Input {
            bytes: input_bytes,
            max: limits.input_bytes_max,
        });
    }
    let stderr = StderrHead::default();
    let state = StoreState {
        wasi: deny_all_wasi(now, stderr.clone()),
        table: ResourceTable::new(),
        limiter: CallLimiter {
            memory_bytes: 0,
            memory_bytes_max: limits.memory_bytes_max,
            denied: false,
        },
        log: LogSink {
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
            lines_max: limits.log_lines_max,
            bytes_max: limits.log_bytes_max,
        },
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
        .set_fuel(limits.fuel_per_call_max)
        .expect("the engine is configured with consume_fuel");
    // The epoch only says when to look at the clock: a tick may be partly over, or the
    // ticker may be catching up, so at each epoch deadline the callback compares the real
    // time with the deadline and either interrupts or waits for the ticks still missing.
    let started = Instant::now();
    let deadline = started + Duration::from_millis(limits.deadline_ms);
    store.set_epoch_deadline(ticks_until(deadline));
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(ticks_until(deadline))
        })
    });

    let outcome = call(&mut store);
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let fuel_left = store
        .get_fuel()
        .expect("the engine is configured with consume_fuel");
    let state = store.into_data();

    let result = match outcome {
        Ok(Ok(value)) => {
            let bytes = value.encoded_bytes();
            if bytes > limits.output_bytes_max {
                Err(CallFailure::Output {
                    bytes,
                    max: limits.output_bytes_max,
                })
            } else {
                Ok(value)
            }
        }
        Ok(Err(GuestError { code, message })) => Err(CallFailure::Guest { code, message }),
        Err(error) => Err(classify(&error, state.limiter.denied, &stderr.text())),
    };
    CallReport {
        result,
        fuel_consumed: limits.fuel_per_call_max.saturating_sub(fuel_left),
        elapsed_us,
        logs: state.log.lines,
        logs_dropped: state.log.dropped,
    }
}

/// Epoch ticks from now until `deadline` (at least 1).
fn ticks_until(deadline: Instant) -> u64 {
    let remaining_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u64::try_from(remaining_ms.div_ceil(u128::from(EPOCH_TICK_MS)))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Out of fuel → Fuel, epoch interrupt → Deadline, after a denied growth → Memory, any other
/// trap → Trap with wasmtime's description, followed by what the guest wrote to stderr (a
/// Rust panic's message) if anything.
fn classify(error: &wasmtime::Error, memory_denied: bool, stderr: &str) -> CallFailure {
    let description = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return CallFailure::Fuel,
        Some(Trap::Interrupt) => return CallFailure::Deadline,
        _ if memory_denied => return CallFailure::Memory,
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    CallFailure::Trap(if stderr.is_empty() {
        description
    } else {
        format!("{description}; stderr: {stderr}")
    })
}
