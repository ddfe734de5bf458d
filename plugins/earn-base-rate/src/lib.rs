//! Earn rule: a flat number of points per whole currency unit of the purchase total.
//! Configuration and exact behaviour: README.md.

use loyalty_sdk::money::{self, Rounding};
use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one")]
    points_per_currency_unit: i64,
    #[serde(default)]
    rounding: Rounding,
    /// Multiply by the member's tier earn multiplier (when the member has a tier).
    #[serde(default = "yes")]
    tier_multiplier: bool,
}

fn yes() -> bool {
    true
}

fn one() -> i64 {
    1
}

/// The `earn-rule` implementation.
pub struct BaseRate;

impl EarnRule for BaseRate {
    fn evaluate(
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> Result<Vec<Award>, PluginError> {
        let config: Config = ctx.config()?;
        let rate = config.points_per_currency_unit;
        if rate < 0 {
            return Err(PluginError::bad_config(
                "points_per_currency_unit must not be negative",
            ));
        }
        let mut points =
            money::points_for_rounded(purchase.total, rate, ctx.currency_exponent, config.rounding);
        let unit = if rate == 1 { "point" } else { "points" };
        let mut reason = format!("{rate} {unit} per {} 1", ctx.currency);
        let tier = member.tier_info().filter(|tier| {
            config.tier_multiplier && tier.earn_multiplier_ten_thousandths != 10_000
        });
        if let Some(tier) = tier {
            points = tier.multiply_points(points);
            let multiplier = tier.earn_multiplier_ten_thousandths;
            let fraction = format!("{:04}", multiplier % 10_000);
            let fraction = fraction.trim_end_matches('0');
            let shown = if fraction.is_empty() {
                format!("{}", multiplier / 10_000)
            } else {
                format!("{}.{fraction}", multiplier / 10_000)
            };
            reason = format!("{reason} × {shown} ({})", tier.name);
        }
        if points == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![Award::new(points, reason)])
    }
}

loyalty_sdk::export_earn_rule!(BaseRate);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};
    use serde_json::json;

    fn run(config: serde_json::Value, total: i64) -> Result<Vec<Award>, PluginError> {
        let ctx = ContextBuilder::new().config(config).build();
        let purchase = PurchaseBuilder::new().line("x", None, 1, total).build();
        BaseRate::evaluate(&ctx, &MemberBuilder::new().build(), &purchase)
    }

    #[test]
    fn the_tier_multiplier_applies_unless_switched_off() {
        let ctx = |config| ContextBuilder::new().config(config).build();
        let purchase = PurchaseBuilder::new().line("x", None, 1, 1_999).build();
        let gold = MemberBuilder::new()
            .tier_with("gold", "Gold", 1, "1.5")
            .build();
        assert_eq!(
            BaseRate::evaluate(&ctx(json!({})), &gold, &purchase),
            Ok(vec![Award::new(28, "1 point per CNY 1 × 1.5 (Gold)")])
        );
        assert_eq!(
            BaseRate::evaluate(&ctx(json!({"tier_multiplier": false})), &gold, &purchase),
            Ok(vec![Award::new(19, "1 point per CNY 1")])
        );
        let silver = MemberBuilder::new()
            .tier_with("silver", "Silver", 0, "1")
            .build();
        assert_eq!(
            BaseRate::evaluate(&ctx(json!({})), &silver, &purchase),
            Ok(vec![Award::new(19, "1 point per CNY 1")])
        );
    }

    #[test]
    fn defaults_are_one_point_per_unit_rounded_down() {
        assert_eq!(
            run(json!({}), 1_999),
            Ok(vec![Award::new(19, "1 point per CNY 1")])
        );
    }

    #[test]
    fn rate_and_rounding_modes() {
        let cfg = |r: &str| json!({"points_per_currency_unit": 3, "rounding": r});
        // 19.50 × 3 = 58.5
        assert_eq!(
            run(cfg("down"), 1_950),
            Ok(vec![Award::new(58, "3 points per CNY 1")])
        );
        assert_eq!(
            run(cfg("nearest"), 1_950),
            Ok(vec![Award::new(59, "3 points per CNY 1")])
        );
        assert_eq!(
            run(cfg("up"), 1_950),
            Ok(vec![Award::new(59, "3 points per CNY 1")])
        );
        // 19.49 × 3 = 58.47
        assert_eq!(
            run(cfg("nearest"), 1_949),
            Ok(vec![Award::new(58, "3 points per CNY 1")])
        );
        assert_eq!(
            run(cfg("up"), 1_949),
            Ok(vec![Award::new(59, "3 points per CNY 1")])
        );
    }

    #[test]
    fn zero_points_award_nothing() {
        assert_eq!(run(json!({}), 99), Ok(vec![]));
        assert_eq!(
            run(json!({"points_per_currency_unit": 0}), 10_000),
            Ok(vec![])
        );
        assert_eq!(
            run(json!({}), -5_000),
            Ok(vec![]),
            "a refund total earns nothing"
        );
        assert_eq!(
            run(json!({"rounding": "up"}), 1),
            Ok(vec![Award::new(1, "1 point per CNY 1")])
        );
    }

    #[test]
    fn zero_exponent_currency() {
        let ctx = ContextBuilder::new().currency("JPY", 0).build();
        let purchase = PurchaseBuilder::new().line("x", None, 1, 1_234).build();
        let awards = BaseRate::evaluate(&ctx, &MemberBuilder::new().build(), &purchase);
        assert_eq!(awards, Ok(vec![Award::new(1_234, "1 point per JPY 1")]));
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({"points_per_currency_unit": -1}),
            json!({"points_per_currency_unit": 1.5}),
            json!({"rounding": "sideways"}),
            json!({"ppcu": 2}),
        ] {
            let e = run(config.clone(), 1_000).expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
    }
}
