//! Panics on every call; with `panic = "abort"` that is a wasm trap.

use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};

/// The earn rule.
pub struct Trap;

impl EarnRule for Trap {
    fn evaluate(_: &Context, _: &Member, _: &Purchase) -> Result<Vec<Award>, PluginError> {
        panic!("hostile-trap: deliberate panic")
    }
}

loyalty_sdk::export_earn_rule!(Trap);
