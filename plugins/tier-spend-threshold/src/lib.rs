//! Tier policy: upgrade on 12-month spend, downgrade one rank below a keep amount.
//! Configuration and exact behaviour: README.md.

use std::collections::BTreeMap;

use loyalty_sdk::{money, Context, Member, PluginError, TierDecision, TierDef, TierPolicy};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tiers: BTreeMap<String, Thresholds>,
}

/// One tier's amounts, in minor units.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    upgrade_at: i64,
    keep_at: i64,
}

/// The `tier-policy` implementation.
pub struct SpendThreshold;

impl TierPolicy for SpendThreshold {
    fn evaluate(
        ctx: &Context,
        member: &Member,
        tiers: &[TierDef],
    ) -> Result<TierDecision, PluginError> {
        let config: Config = ctx.config()?;
        let spend = member.stats.spend_12_months;
        let spend_text = format!(
            "12-month spend {} {}",
            ctx.currency,
            money::format_amount(spend, ctx.currency_exponent)
        );

        // The host passes tiers by rank; sorting (stably) keeps that promise local.
        let mut ranked: Vec<&TierDef> = tiers.iter().collect();
        ranked.sort_by_key(|tier| tier.rank);
        let current = member
            .tier
            .as_deref()
            .and_then(|code| ranked.iter().position(|tier| tier.code == code));

        // The highest tier whose upgrade amount is reached; unconfigured tiers are never one.
        let target = ranked.iter().rposition(|tier| {
            config
                .tiers
                .get(&tier.code)
                .is_some_and(|t| t.upgrade_at <= spend)
        });
        let above_current = match (target, current) {
            (Some(t), Some(c)) => ranked[t].rank > ranked[c].rank,
            (Some(_), None) => true, // no tier is below the lowest rank
            (None, _) => false,
        };
        if above_current {
            let tier = ranked[target.expect("above_current implies a target")];
            return Ok(TierDecision::move_to(
                tier.code.clone(),
                format!("{spend_text} reached {}", tier.code),
            ));
        }

        let Some(current) = current else {
            return Ok(TierDecision::stay(format!("{spend_text} reaches no tier")));
        };
        let keep_at = config
            .tiers
            .get(&ranked[current].code)
            .map_or(i64::MIN, |t| t.keep_at);
        if keep_at > spend {
            // Exactly one rank down: the nearest tier of a lower rank, if any.
            let rank = ranked[current].rank;
            if let Some(lower) = ranked[..current].iter().rev().find(|t| t.rank < rank) {
                return Ok(TierDecision::move_to(
                    lower.code.clone(),
                    "below keep amount",
                ));
            }
            return Ok(TierDecision::stay(format!(
                "{spend_text} below keep amount, no lower tier"
            )));
        }
        Ok(TierDecision::stay(format!(
            "{spend_text} keeps {}",
            ranked[current].code
        )))
    }
}

loyalty_sdk::export_tier_policy!(SpendThreshold);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder};
    use serde_json::json;

    fn tiers() -> Vec<TierDef> {
        ["silver", "gold", "platinum"]
            .iter()
            .zip(0u32..)
            .map(|(code, rank)| TierDef {
                code: (*code).into(),
                name: code.to_uppercase(),
                rank,
                attributes: "{}".into(),
            })
            .collect()
    }

    fn decide(tier: Option<&str>, spend: i64) -> Result<TierDecision, PluginError> {
        let ctx = ContextBuilder::new()
            .config(json!({"tiers": {
                "silver": {"upgrade_at": 0, "keep_at": 0},
                "gold": {"upgrade_at": 500_000, "keep_at": 300_000},
                "platinum": {"upgrade_at": 2_000_000, "keep_at": 1_500_000},
            }}))
            .build();
        let mut member = MemberBuilder::new().spend_12_months(spend);
        if let Some(tier) = tier {
            member = member.tier(tier);
        }
        SpendThreshold::evaluate(&ctx, &member.build(), &tiers())
    }

    #[test]
    fn upgrades_to_the_highest_tier_reached() {
        assert_eq!(
            decide(Some("silver"), 2_500_000),
            Ok(TierDecision::move_to(
                "platinum",
                "12-month spend CNY 25000.00 reached platinum"
            ))
        );
        assert_eq!(
            decide(Some("silver"), 500_000),
            Ok(TierDecision::move_to(
                "gold",
                "12-month spend CNY 5000.00 reached gold"
            ))
        );
    }

    #[test]
    fn no_tier_is_below_the_lowest() {
        assert_eq!(
            decide(None, 0),
            Ok(TierDecision::move_to(
                "silver",
                "12-month spend CNY 0.00 reached silver"
            ))
        );
        assert_eq!(
            decide(Some("retired-tier"), 600_000),
            Ok(TierDecision::move_to(
                "gold",
                "12-month spend CNY 6000.00 reached gold"
            ))
        );
    }

    #[test]
    fn stays_between_keep_and_upgrade() {
        assert_eq!(
            decide(Some("gold"), 300_000),
            Ok(TierDecision::stay("12-month spend CNY 3000.00 keeps gold"))
        );
        assert_eq!(
            decide(Some("platinum"), 1_900_000),
            Ok(TierDecision::stay(
                "12-month spend CNY 19000.00 keeps platinum"
            ))
        );
    }

    #[test]
    fn moves_down_exactly_one_rank() {
        assert_eq!(
            decide(Some("platinum"), 10),
            Ok(TierDecision::move_to("gold", "below keep amount"))
        );
        assert_eq!(
            decide(Some("gold"), 299_999),
            Ok(TierDecision::move_to("silver", "below keep amount"))
        );
    }

    #[test]
    fn lowest_tier_below_keep_stays() {
        let ctx = ContextBuilder::new()
            .config(json!({"tiers": {"silver": {"upgrade_at": 100, "keep_at": 100}}}))
            .build();
        let member = MemberBuilder::new()
            .tier("silver")
            .spend_12_months(50)
            .build();
        assert_eq!(
            SpendThreshold::evaluate(&ctx, &member, &tiers()),
            Ok(TierDecision::stay(
                "12-month spend CNY 0.50 below keep amount, no lower tier"
            ))
        );
        let nobody = MemberBuilder::new().spend_12_months(50).build();
        assert_eq!(
            SpendThreshold::evaluate(&ctx, &nobody, &tiers()),
            Ok(TierDecision::stay(
                "12-month spend CNY 0.50 reaches no tier"
            ))
        );
    }

    #[test]
    fn unsorted_tiers_are_ranked() {
        let mut reversed = tiers();
        reversed.reverse();
        let ctx = ContextBuilder::new()
            .config(json!({"tiers": {"gold": {"upgrade_at": 10, "keep_at": 0}}}))
            .build();
        let member = MemberBuilder::new()
            .tier("platinum")
            .spend_12_months(20)
            .build();
        assert_eq!(
            SpendThreshold::evaluate(&ctx, &member, &reversed),
            Ok(TierDecision::stay("12-month spend CNY 0.20 keeps platinum"))
        );
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({}),
            json!({"tiers": {"gold": {"upgrade_at": 1}}}),
            json!({"tiers": {"gold": {"upgrade_at": "1", "keep_at": 0}}}),
            json!({"tiers": [], "x": 1}),
        ] {
            let ctx = ContextBuilder::new().config(config.clone()).build();
            let e = SpendThreshold::evaluate(&ctx, &MemberBuilder::new().build(), &tiers())
                .expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
    }
}
