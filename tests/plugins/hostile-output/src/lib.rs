//! Returns 5,000 awards with 64-byte reasons (about 320 KiB of reasons), far beyond any
//! sane output cap (e.g. 32 KiB).

use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct Output;

/// Awards returned.
const AWARDS: u32 = 5_000;

impl EarnRule for Output {
    fn evaluate(_: &Context, _: &Member, _: &Purchase) -> Result<Vec<Award>, PluginError> {
        // "reason " (7 bytes) + 57 digits = 64 bytes.
        Ok((0..AWARDS)
            .map(|i| Award::new(1, format!("reason {i:057}")))
            .collect())
    }
}

loyalty_sdk::export_earn_rule!(Output);
