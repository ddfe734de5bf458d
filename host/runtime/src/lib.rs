//! The plugin runtime: runs per-merchant loyalty plugins (WebAssembly components of the
//! `loyalty:plugin` WIT worlds) in wasmtime, sandboxed and limited.
//!
//! * [`Runtime`] owns the engine (pooling allocator, fuel, epoch deadlines) and loads
//!   components into [`Plugin`]s: validated, compiled once per sha256 (in memory and in an
//!   optional on-disk cache), pre-instantiated.
//! * Each [`Plugin`] call runs on a fresh store with [`Limits`] and returns a [`CallReport`]:
//!   the plugin's answer or a [`CallFailure`], plus fuel, time and the plugin's log lines.
//! * Plugins see no clock, randomness, file, environment or network of the host: WASI is
//!   linked deny-all, with fixed clocks and seeded randomness, so a call is a pure function of
//!   its arguments.
//! * The host-side [`types`] do not depend on a WIT version; each supported version has its
//!   own generated bindings (`bindings::since_v0_1_0`), converted at the call.
//!
//! No database and no HTTP here: the server and a local plugin runner both use this crate.

mod bindings;
mod cache;
mod call;
mod engine;
mod error;
mod limits;
mod runtime;
mod stderr;
pub mod types;
mod validate;
mod world;

pub use call::{CallReport, LogLine};
pub use engine::{EPOCH_TICK_MS, INSTANCES_CONCURRENT_MAX, MEMORY_KEEP_RESIDENT_BYTES_DEFAULT};
pub use error::{CallFailure, LoadError, RuntimeError};
pub use limits::{Limits, COMPONENT_BYTES_MAX_DEFAULT};
pub use runtime::{LoadedFrom, Plugin, Runtime, RuntimeConfig};
pub use types::{
    Action, Award, Candidate, Context, Date, Event, HistoryLine, LogLevel, Member, MemberStats,
    Message, PointsAward, Purchase, PurchaseLine, Scored, TierChange, TierDecision, TierDef,
    TierMove, Timestamp,
};
pub use world::{UnknownWorld, World};

/// The `loyalty:plugin` WIT versions this runtime links, oldest first.
pub fn wit_versions() -> &'static [&'static str] {
    bindings::VERSIONS
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_and_plugin_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Runtime>();
        send_sync::<super::Plugin>();
    }
}
