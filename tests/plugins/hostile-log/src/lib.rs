//! Logs 1,000,000 lines of 1 KiB (about 1 GiB) and then behaves: one award of 1 point. The
//! host's log cap must drop (and count) the excess without running out of memory.

use loyalty_sdk::{log, Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct LogFlood;

/// Lines logged.
const LINES: u32 = 1_000_000;

impl EarnRule for LogFlood {
    fn evaluate(_: &Context, _: &Member, _: &Purchase) -> Result<Vec<Award>, PluginError> {
        let line = "x".repeat(1024);
        for _ in 0..LINES {
            log::info(&line);
        }
        Ok(vec![Award::new(1, "survived the log flood")])
    }
}

loyalty_sdk::export_earn_rule!(LogFlood);
