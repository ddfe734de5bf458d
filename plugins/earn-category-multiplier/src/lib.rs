//! Earn rule: base points plus extra points for categories, a weekly member day and the
//! member's birthday month. The exact rules (a port must match them byte for byte) are in
//! README.md.

use std::collections::BTreeMap;

use loyalty_sdk::money::{self, Rounding};
use loyalty_sdk::{Award, Context, EarnRule, Member, PluginError, Purchase};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one")]
    points_per_currency_unit: i64,
    // A BTreeMap iterates in byte order of the UTF-8 names, the documented award order.
    #[serde(default)]
    category_percent: BTreeMap<String, i64>,
    // Object only: serde alone would also read `[1, 200]` as a member day.
    #[serde(default, deserialize_with = "loyalty_sdk::json::optional_object")]
    member_day: Option<MemberDay>,
    #[serde(default)]
    birthday_month_percent: Option<i64>,
}

/// A weekly day with a multiplier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDay {
    /// ISO weekday, 1 = Monday … 7 = Sunday.
    weekday: u8,
    percent: i64,
}

fn one() -> i64 {
    1
}

impl Config {
    fn validate(&self) -> Result<(), PluginError> {
        if self.points_per_currency_unit < 0 {
            return Err(PluginError::bad_config(
                "points_per_currency_unit must not be negative",
            ));
        }
        if let Some((name, _)) = self.category_percent.iter().find(|(_, p)| **p < 0) {
            return Err(PluginError::bad_config(format!(
                "category_percent.{name} must not be negative"
            )));
        }
        if let Some(day) = &self.member_day {
            if !(1..=7).contains(&day.weekday) {
                return Err(PluginError::bad_config(
                    "member_day.weekday must be 1 (Monday) to 7 (Sunday)",
                ));
            }
            if day.percent < 0 {
                return Err(PluginError::bad_config(
                    "member_day.percent must not be negative",
                ));
            }
        }
        if self.birthday_month_percent.is_some_and(|p| p < 0) {
            return Err(PluginError::bad_config(
                "birthday_month_percent must not be negative",
            ));
        }
        Ok(())
    }
}

/// `percent` as a multiplier: 200 → "2×", 150 → "1.5×", 125 → "1.25×".
fn multiplier_text(percent: i64) -> String {
    let (whole, hundredths) = (percent / 100, percent % 100);
    if hundredths == 0 {
        format!("{whole}×")
    } else if hundredths % 10 == 0 {
        format!("{whole}.{}×", hundredths / 10)
    } else {
        format!("{whole}.{hundredths:02}×")
    }
}

/// The extra points of a `percent` multiplier on `amount`:
/// floor(amount × rate × (percent − 100) / (100 × 10^exp)); 0 when that is not positive.
fn extra(amount: i64, rate: i64, percent: i64, exponent: u8) -> i64 {
    // Both factors are within i64, so the product fits i128.
    let numerator = i128::from(rate) * (i128::from(percent) - 100);
    let Some(denominator) = money::minor_per_unit(exponent).checked_mul(100) else {
        // 100 × 10^exp beyond i128 (exponent ≥ 37) exceeds every product that fits i128, so
        // the quotient is 0 — unless the product itself overflows, which `mul_div` (and the
        // README) count as the i64 maximum; a divisor of 1 reproduces exactly that.
        let product_overflows = i128::from(amount).checked_mul(numerator).is_none();
        return if product_overflows {
            money::mul_div(amount, numerator, 1, Rounding::Down)
        } else {
            0
        };
    };
    money::mul_div(amount, numerator, denominator, Rounding::Down)
}

/// The `earn-rule` implementation.
pub struct CategoryMultiplier;

impl EarnRule for CategoryMultiplier {
    fn evaluate(
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> Result<Vec<Award>, PluginError> {
        let config: Config = ctx.config()?;
        config.validate()?;
        let rate = config.points_per_currency_unit;
        let exp = ctx.currency_exponent;
        let total = purchase.total;
        let mut awards = Vec::new();
        let mut push = |points: i64, reason: String| {
            if points > 0 {
                awards.push(Award::new(points, reason));
            }
        };

        let unit = if rate == 1 { "point" } else { "points" };
        push(
            money::points_for(total, rate, exp),
            format!("base: {rate} {unit} per {} 1", ctx.currency),
        );

        for (category, &percent) in &config.category_percent {
            if percent <= 100 {
                continue;
            }
            // Saturating: a sum beyond i64 is no real purchase, and must not panic.
            let in_category = purchase
                .lines
                .iter()
                .filter(|line| line.category.as_deref() == Some(category.as_str()))
                .fold(0i64, |sum, line| sum.saturating_add(line.total));
            push(
                extra(in_category, rate, percent, exp),
                format!("{} {category}", multiplier_text(percent)),
            );
        }

        if let Some(day) = &config.member_day {
            if ctx.local_weekday() == day.weekday {
                push(
                    extra(total, rate, day.percent, exp),
                    "member day".to_owned(),
                );
            }
        }

        if let (Some(percent), Some(birthday)) = (config.birthday_month_percent, &member.birthday) {
            if ctx.local_month() == birthday.month {
                push(
                    extra(total, rate, percent, exp),
                    "birthday month".to_owned(),
                );
            }
        }

        Ok(awards)
    }
}

loyalty_sdk::export_earn_rule!(CategoryMultiplier);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};
    use serde_json::json;

    fn purchase() -> Purchase {
        PurchaseBuilder::new()
            .line("latte", Some("coffee"), 2, 1_550) // 31.00
            .line("tea", Some("tea"), 1, 1_275) // 12.75
            .line("bagel", Some("food"), 1, 999) // 9.99
            .line("gift", None, 1, 500) // 5.00
            .build() // 58.74
    }

    fn award(points: i64, reason: &str) -> Award {
        Award::new(points, reason)
    }

    #[test]
    fn base_only_by_default() {
        let ctx = ContextBuilder::new().build();
        let awards = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase());
        assert_eq!(awards, Ok(vec![award(58, "base: 1 point per CNY 1")]));
    }

    #[test]
    fn categories_in_name_order_and_multiplier_text() {
        let ctx = ContextBuilder::new()
            .config(json!({
                "points_per_currency_unit": 2,
                "category_percent": {"tea": 150, "coffee": 200, "food": 100, "gift": 300, "none": 500}
            }))
            .build();
        let awards = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase());
        assert_eq!(
            awards,
            Ok(vec![
                award(117, "base: 2 points per CNY 1"), // floor(5874 × 2 / 100)
                award(62, "2× coffee"),                 // floor(3100 × 2 × 100 / 10000)
                // "food" at 100 % and "gift"/"none" without matching lines award nothing;
                award(12, "1.5× tea"), // floor(1275 × 2 × 50 / 10000) = 12.75 → 12
            ])
        );
    }

    #[test]
    fn huge_exponents_do_not_overflow() {
        let config = json!({"member_day": {"weekday": 1, "percent": 200}});
        for exp in [36, 37, 38, 255] {
            let ctx = ContextBuilder::new()
                .config(config.clone())
                .currency("XXX", exp)
                .build();
            let awards =
                CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase());
            assert_eq!(awards, Ok(vec![]), "exponent {exp}");
        }
        assert_eq!(
            extra(i64::MAX, i64::MAX, i64::MAX, 37),
            i64::MAX,
            "product beyond i128"
        );
        assert_eq!(extra(-5, i64::MAX, i64::MAX, 37), 0);
        assert_eq!(extra(1, 1, 200, 37), 0);
        let null_day = ContextBuilder::new()
            .config(json!({"member_day": null}))
            .build();
        let awards =
            CategoryMultiplier::evaluate(&null_day, &MemberBuilder::new().build(), &purchase());
        assert_eq!(awards, Ok(vec![award(58, "base: 1 point per CNY 1")]));
    }

    #[test]
    fn multiplier_texts() {
        assert_eq!(multiplier_text(200), "2×");
        assert_eq!(multiplier_text(150), "1.5×");
        assert_eq!(multiplier_text(125), "1.25×");
        assert_eq!(multiplier_text(205), "2.05×");
        assert_eq!(multiplier_text(1000), "10×");
    }

    #[test]
    fn member_day_uses_the_merchant_local_weekday() {
        // 2024-01-14T20:00:00Z: Sunday (7) in UTC, Monday (1) in Shanghai.
        let config = json!({"member_day": {"weekday": 1, "percent": 300}});
        let at = |offset| {
            ContextBuilder::new()
                .config(config.clone())
                .now_utc(2024, 1, 14, 20, 0, 0)
                .utc_offset_seconds(offset)
                .build()
        };
        let member = MemberBuilder::new().build();
        assert_eq!(
            CategoryMultiplier::evaluate(&at(8 * 3600), &member, &purchase()),
            Ok(vec![
                award(58, "base: 1 point per CNY 1"),
                award(117, "member day")
            ])
        );
        assert_eq!(
            CategoryMultiplier::evaluate(&at(0), &member, &purchase()),
            Ok(vec![award(58, "base: 1 point per CNY 1")])
        );
    }

    #[test]
    fn birthday_month_needs_a_birthday_in_the_local_month() {
        let ctx = ContextBuilder::new()
            .config(json!({"birthday_month_percent": 200}))
            .now_utc(2024, 5, 31, 18, 0, 0) // 1 June in Shanghai
            .build();
        let may = MemberBuilder::new().birthday(1990, 5, 2).build();
        assert_eq!(
            CategoryMultiplier::evaluate(&ctx, &may, &purchase()),
            Ok(vec![
                award(58, "base: 1 point per CNY 1"),
                award(58, "birthday month")
            ])
        );
        let shanghai = ContextBuilder::new()
            .config(json!({"birthday_month_percent": 200}))
            .now_utc(2024, 5, 31, 18, 0, 0)
            .utc_offset_seconds(8 * 3600)
            .build();
        assert_eq!(
            CategoryMultiplier::evaluate(&shanghai, &may, &purchase()),
            Ok(vec![award(58, "base: 1 point per CNY 1")])
        );
        let nobody = MemberBuilder::new().build();
        assert_eq!(
            CategoryMultiplier::evaluate(&ctx, &nobody, &purchase()),
            Ok(vec![award(58, "base: 1 point per CNY 1")])
        );
    }

    #[test]
    fn all_awards_in_order() {
        let ctx = ContextBuilder::new()
            .config(json!({
                "category_percent": {"coffee": 200},
                "member_day": {"weekday": 1, "percent": 200},
                "birthday_month_percent": 150
            }))
            .build(); // DEFAULT_NOW: Monday 15 January
        let member = MemberBuilder::new().birthday(2000, 1, 31).build();
        let reasons: Vec<String> = CategoryMultiplier::evaluate(&ctx, &member, &purchase())
            .expect("valid config")
            .into_iter()
            .map(|a| format!("{} {}", a.points, a.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "58 base: 1 point per CNY 1",
                "31 2× coffee",
                "58 member day",
                "29 birthday month"
            ]
        );
    }

    #[test]
    fn zero_point_awards_are_left_out() {
        let ctx = ContextBuilder::new()
            .config(json!({"points_per_currency_unit": 0, "category_percent": {"coffee": 200}}))
            .build();
        let awards = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase());
        assert_eq!(awards, Ok(vec![]));
        let small = PurchaseBuilder::new()
            .line("x", Some("coffee"), 1, 99)
            .build();
        let ctx = ContextBuilder::new()
            .config(json!({"category_percent": {"coffee": 200}}))
            .build();
        let awards = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &small);
        assert_eq!(awards, Ok(vec![]));
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({"points_per_currency_unit": -1}),
            json!({"category_percent": {"coffee": -5}}),
            json!({"category_percent": {"coffee": "200"}}),
            json!({"member_day": {"weekday": 0, "percent": 200}}),
            json!({"member_day": {"weekday": 8, "percent": 200}}),
            json!({"member_day": {"weekday": 1}}),
            json!({"member_day": [1, 200]}),
            json!([2]),
            json!({"birthday_month_percent": -1}),
            json!({"unknown": true}),
        ] {
            let ctx = ContextBuilder::new().config(config.clone()).build();
            let e = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase())
                .expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
        let ctx = ContextBuilder::new().config_text("not json").build();
        let e = CategoryMultiplier::evaluate(&ctx, &MemberBuilder::new().build(), &purchase());
        assert_eq!(e.expect_err("not JSON").code, "bad-config");
    }
}
