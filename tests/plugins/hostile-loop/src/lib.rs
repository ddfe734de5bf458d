//! Never returns: the runtime must interrupt it (fuel or epoch deadline).

use core::hint::black_box;
use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct Loop;

impl EarnRule for Loop {
    fn evaluate(_: &Context, _: &Member, _: &Purchase) -> Result<Vec<Award>, PluginError> {
        let mut counter: u64 = 0;
        loop {
            // black_box keeps the optimiser from proving the loop pointless.
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

loyalty_sdk::export_earn_rule!(Loop);
