//! An earn rule whose award overrides when its points expire, for the host's expiry tests.
//!
//! Config: `{"points": N, "expires_in_days": D, "default_points": M}` (all default to 0).
//! Awards N points expiring at `ctx.now` + D days (D may be negative), and, if M > 0, M points
//! on the merchant's default expiry.

use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase, MICROS_PER_DAY};
use serde::Deserialize;

/// The earn rule.
pub struct Expiring;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    points: i64,
    #[serde(default)]
    expires_in_days: i64,
    #[serde(default)]
    default_points: i64,
}

impl EarnRule for Expiring {
    fn evaluate(
        ctx: &Context,
        _member: &Member,
        _purchase: &Purchase,
    ) -> Result<Vec<Award>, PluginError> {
        let config: Config = ctx.config()?;
        let expires_at = config
            .expires_in_days
            .checked_mul(MICROS_PER_DAY)
            .and_then(|offset| ctx.now.checked_add(offset))
            .ok_or_else(|| PluginError::bad_config("expires_in_days is out of range"))?;
        let mut awards = vec![Award::expiring(
            config.points,
            format!("expires in {} days", config.expires_in_days),
            expires_at,
        )];
        if config.default_points > 0 {
            awards.push(Award::new(config.default_points, "default expiry"));
        }
        Ok(awards)
    }
}

loyalty_sdk::export_earn_rule!(Expiring);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};

    #[test]
    fn awards_the_override_and_the_default() {
        let ctx = ContextBuilder::new()
            .now(1_000)
            .config_text(r#"{"points": 30, "expires_in_days": 10, "default_points": 70}"#)
            .build();
        let awards = Expiring::evaluate(
            &ctx,
            &MemberBuilder::new().build(),
            &PurchaseBuilder::new().build(),
        )
        .expect("ok");
        assert_eq!(
            awards,
            vec![
                Award {
                    points: 30,
                    reason: "expires in 10 days".into(),
                    expires_at: Some(1_000 + 10 * MICROS_PER_DAY),
                },
                Award::new(70, "default expiry"),
            ]
        );
    }
}
