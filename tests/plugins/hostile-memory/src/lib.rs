//! Allocates and touches memory until allocation fails (which aborts, i.e. traps): the
//! runtime's memory limit must stop it, not the machine.

use core::hint::black_box;
use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct Memory;

/// Bytes per allocation.
const CHUNK: usize = 1 << 20;

impl EarnRule for Memory {
    fn evaluate(_: &Context, _: &Member, _: &Purchase) -> Result<Vec<Award>, PluginError> {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            // Touch every page so the memory is really used, not just reserved.
            for page in chunk.iter_mut().step_by(4096) {
                *page = 1;
            }
            kept.push(black_box(chunk));
            black_box(&kept);
        }
    }
}

loyalty_sdk::export_earn_rule!(Memory);
