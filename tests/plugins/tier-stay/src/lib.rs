//! A tier policy that always stays. The runtime's tests load it as an earn rule to check a
//! component of the wrong world is refused.

use loyalty_sdk::{Context, Member, PluginError, TierDecision, TierDef, TierPolicy};

/// The tier policy.
pub struct Stay;

impl TierPolicy for Stay {
    fn evaluate(_: &Context, _: &Member, _: &[TierDef]) -> Result<TierDecision, PluginError> {
        Ok(TierDecision::stay("always stay"))
    }
}

loyalty_sdk::export_tier_policy!(Stay);
