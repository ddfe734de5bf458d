//! Campaign: a coupon and a tag for members who stopped buying.
//! Configuration and exact behaviour: README.md.

use loyalty_sdk::{Action, CampaignTrigger, Context, Event, Member, PluginError, MICROS_PER_DAY};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_days")]
    days: u32,
    #[serde(default = "default_coupon")]
    coupon_template: String,
}

fn default_days() -> u32 {
    60
}

fn default_coupon() -> String {
    "WINBACK".to_owned()
}

/// The `campaign-trigger` implementation.
pub struct Winback;

impl CampaignTrigger for Winback {
    fn on_event(ctx: &Context, member: &Member, event: &Event) -> Result<Vec<Action>, PluginError> {
        let config: Config = ctx.config()?;
        if config.days == 0 {
            return Err(PluginError::bad_config("days must be at least 1"));
        }
        if !matches!(event, Event::DailyTick) {
            return Ok(Vec::new());
        }
        let Some(last) = member.stats.last_purchase_at else {
            return Ok(Vec::new());
        };
        let Some(elapsed) = ctx.now.checked_sub(last).filter(|e| *e >= 0) else {
            return Ok(Vec::new());
        };
        // Whole days since the last purchase. Acting only on exact multiples of `days` gives
        // at most one win-back per `days` days with one tick a day, and no state in the host.
        let idle_days = elapsed / MICROS_PER_DAY;
        let days = i64::from(config.days);
        if idle_days >= days && idle_days % days == 0 {
            return Ok(vec![
                Action::IssueCoupon(config.coupon_template),
                Action::TagMember("winback".to_owned()),
            ]);
        }
        Ok(Vec::new())
    }
}

loyalty_sdk::export_campaign_trigger!(Winback);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, DEFAULT_NOW};
    use serde_json::json;

    fn tick(config: serde_json::Value, idle: i64) -> Vec<Action> {
        let ctx = ContextBuilder::new().config(config).build();
        let member = MemberBuilder::new()
            .last_purchase_at(DEFAULT_NOW - idle)
            .build();
        Winback::on_event(&ctx, &member, &Event::DailyTick).expect("valid config")
    }

    fn winback(coupon: &str) -> Vec<Action> {
        vec![
            Action::IssueCoupon(coupon.into()),
            Action::TagMember("winback".into()),
        ]
    }

    #[test]
    fn fires_on_multiples_of_days() {
        assert_eq!(tick(json!({}), 60 * MICROS_PER_DAY), winback("WINBACK"));
        assert_eq!(
            tick(json!({}), 60 * MICROS_PER_DAY + 86_399_999_999),
            winback("WINBACK")
        );
        assert_eq!(
            tick(json!({}), 120 * MICROS_PER_DAY + 5),
            winback("WINBACK")
        );
        assert!(tick(json!({}), 60 * MICROS_PER_DAY - 1).is_empty());
        assert!(tick(json!({}), 61 * MICROS_PER_DAY).is_empty());
        assert!(
            tick(json!({}), 0).is_empty(),
            "0 days is a multiple but below `days`"
        );
        assert_eq!(
            tick(
                json!({"days": 7, "coupon_template": "MISSYOU"}),
                14 * MICROS_PER_DAY
            ),
            winback("MISSYOU")
        );
    }

    #[test]
    fn at_most_once_per_period_over_a_year_of_ticks() {
        let last = DEFAULT_NOW;
        let member = MemberBuilder::new().last_purchase_at(last).build();
        let fired: Vec<i64> = (0..365)
            .filter(|day| {
                let ctx = ContextBuilder::new()
                    .now(last + day * MICROS_PER_DAY + 3_600_000_000)
                    .build();
                !Winback::on_event(&ctx, &member, &Event::DailyTick)
                    .expect("ok")
                    .is_empty()
            })
            .collect();
        assert_eq!(fired, [60, 120, 180, 240, 300, 360]);
    }

    #[test]
    fn nothing_without_a_purchase_in_the_past_or_on_other_events() {
        let ctx = ContextBuilder::new().build();
        let never = MemberBuilder::new().build();
        assert_eq!(
            Winback::on_event(&ctx, &never, &Event::DailyTick),
            Ok(vec![])
        );
        assert!(
            tick(json!({}), -60 * MICROS_PER_DAY).is_empty(),
            "future purchase"
        );
        let idle = MemberBuilder::new()
            .last_purchase_at(DEFAULT_NOW - 60 * MICROS_PER_DAY)
            .build();
        assert_eq!(
            Winback::on_event(&ctx, &idle, &Event::MemberJoined),
            Ok(vec![])
        );
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({"days": 0}),
            json!({"days": -3}),
            json!({"coupon_template": 5}),
        ] {
            let ctx = ContextBuilder::new().config(config.clone()).build();
            let e = Winback::on_event(&ctx, &MemberBuilder::new().build(), &Event::DailyTick)
                .expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
    }
}
