//! Per-call limits and their defaults.

use serde::{Deserialize, Serialize};

/// The largest component `Runtime::load` accepts unless told otherwise: 2 MiB.
pub const COMPONENT_BYTES_MAX_DEFAULT: usize = 2 << 20;

/// What one call of a plugin may use. Every limit is enforced per call, on a fresh store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel (roughly: WebAssembly instructions) for instantiation plus the call.
    pub fuel_per_call_max: u64,
    /// Wall time for instantiation plus the call, in milliseconds (enforced by epoch
    /// interruption, accurate to about `EPOCH_TICK_MS`).
    pub deadline_ms: u64,
    /// Linear memory the instance may hold, in bytes (all its memories together).
    pub memory_bytes_max: usize,
    /// Estimated encoded size of the call's arguments, in bytes (checked before the call).
    pub input_bytes_max: usize,
    /// Estimated encoded size of the call's result, in bytes (checked before it is returned).
    pub output_bytes_max: usize,
    /// Log lines kept per call; later lines are dropped and counted.
    pub log_lines_max: u32,
    /// Log message bytes kept per call; a line that would go beyond is dropped and counted.
    pub log_bytes_max: usize,
}

impl Limits {
    /// The defaults for a plugin without overrides.
    pub const DEFAULT: Limits = Limits {
        fuel_per_call_max: 10_000_000,
        deadline_ms: 50,
        memory_bytes_max: 16 << 20,
        input_bytes_max: 128 << 10,
        output_bytes_max: 32 << 10,
        log_lines_max: 100,
        log_bytes_max: 16 << 10,
    };

    /// The default operator ceiling: no plugin may be given more than this.
    pub const CEILING_DEFAULT: Limits = Limits {
        fuel_per_call_max: 1_000_000_000,
        deadline_ms: 1_000,
        memory_bytes_max: 128 << 20,
        input_bytes_max: 1 << 20,
        output_bytes_max: 256 << 10,
        log_lines_max: 1_000,
        log_bytes_max: 256 << 10,
    };

    /// These limits with every field lowered to `ceiling`'s where it is higher (per-plugin
    /// overrides within the operator's maximums).
    pub fn clamp_to(&self, ceiling: &Limits) -> Limits {
        Limits {
            fuel_per_call_max: self.fuel_per_call_max.min(ceiling.fuel_per_call_max),
            deadline_ms: self.deadline_ms.min(ceiling.deadline_ms),
            memory_bytes_max: self.memory_bytes_max.min(ceiling.memory_bytes_max),
            input_bytes_max: self.input_bytes_max.min(ceiling.input_bytes_max),
            output_bytes_max: self.output_bytes_max.min(ceiling.output_bytes_max),
            log_lines_max: self.log_lines_max.min(ceiling.log_lines_max),
            log_bytes_max: self.log_bytes_max.min(ceiling.log_bytes_max),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_lowers_each_field_to_the_ceiling_and_keeps_lower_ones() {
        let asked = Limits {
            fuel_per_call_max: u64::MAX,
            deadline_ms: 10,
            memory_bytes_max: usize::MAX,
            input_bytes_max: 1,
            output_bytes_max: usize::MAX,
            log_lines_max: 2,
            log_bytes_max: usize::MAX,
        };
        let got = asked.clamp_to(&Limits::DEFAULT);
        assert_eq!(
            got,
            Limits {
                fuel_per_call_max: Limits::DEFAULT.fuel_per_call_max,
                deadline_ms: 10,
                memory_bytes_max: Limits::DEFAULT.memory_bytes_max,
                input_bytes_max: 1,
                output_bytes_max: Limits::DEFAULT.output_bytes_max,
                log_lines_max: 2,
                log_bytes_max: Limits::DEFAULT.log_bytes_max,
            }
        );
    }
}
