//! Campaign: points, a coupon and a message on the member's birthday.
//! Configuration and exact behaviour: README.md.

use loyalty_sdk::{date, Action, CampaignTrigger, Context, Event, Member, Message, PluginError};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_points")]
    points: i64,
    #[serde(default)]
    coupon_template: Option<String>,
    #[serde(default)]
    message_template: Option<String>,
    #[serde(default = "default_channel")]
    message_channel: String,
}

fn default_points() -> i64 {
    100
}

fn default_channel() -> String {
    "sms".to_owned()
}

/// The `campaign-trigger` implementation.
pub struct Birthday;

impl CampaignTrigger for Birthday {
    fn on_event(ctx: &Context, member: &Member, event: &Event) -> Result<Vec<Action>, PluginError> {
        let config: Config = ctx.config()?;
        if config.points < 0 {
            return Err(PluginError::bad_config("points must not be negative"));
        }
        // Only the daily tick: the host sends it once per member per local day, so acting on
        // the birthday's tick alone gives once a year without the plugin keeping state.
        if !matches!(event, Event::DailyTick) {
            return Ok(Vec::new());
        }
        let Some(birthday) = &member.birthday else {
            return Ok(Vec::new());
        };
        if !date::is_anniversary(birthday, &ctx.local_date()) {
            return Ok(Vec::new());
        }
        let mut actions = Vec::new();
        if config.points > 0 {
            actions.push(Action::award_points(config.points, "happy birthday"));
        }
        if let Some(template) = config.coupon_template {
            actions.push(Action::IssueCoupon(template));
        }
        if let Some(template) = config.message_template {
            actions.push(Action::SendMessage(Message {
                channel: config.message_channel,
                template,
                variables: vec![
                    ("member_id".to_owned(), member.id.clone()),
                    ("points".to_owned(), config.points.to_string()),
                ],
            }));
        }
        Ok(actions)
    }
}

loyalty_sdk::export_campaign_trigger!(Birthday);

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};
    use loyalty_sdk::TierChange;
    use serde_json::json;

    fn tick(
        config: serde_json::Value,
        today: (i32, u8, u8),
        birthday: (i32, u8, u8),
    ) -> Vec<Action> {
        // 23:00 UTC the day before is already `today` in Shanghai.
        let ctx = ContextBuilder::new()
            .config(config)
            .now(
                loyalty_sdk::date::micros_from_utc(today.0, today.1, today.2, 0, 0, 0)
                    - 3_600_000_000,
            )
            .utc_offset_seconds(8 * 3600)
            .build();
        let member = MemberBuilder::new()
            .id("mem_1")
            .birthday(birthday.0, birthday.1, birthday.2)
            .build();
        Birthday::on_event(&ctx, &member, &Event::DailyTick).expect("valid config")
    }

    #[test]
    fn birthday_tick_awards_points_coupon_and_message() {
        let config =
            json!({"points": 200, "coupon_template": "BDAY", "message_template": "bday-sms"});
        assert_eq!(
            tick(config, (2024, 5, 17), (1990, 5, 17)),
            vec![
                Action::award_points(200, "happy birthday"),
                Action::IssueCoupon("BDAY".into()),
                Action::SendMessage(Message {
                    channel: "sms".into(),
                    template: "bday-sms".into(),
                    variables: vec![
                        ("member_id".into(), "mem_1".into()),
                        ("points".into(), "200".into())
                    ],
                }),
            ]
        );
    }

    #[test]
    fn defaults_and_other_days() {
        assert_eq!(
            tick(json!({}), (2024, 5, 17), (1990, 5, 17)),
            vec![Action::award_points(100, "happy birthday")]
        );
        assert!(tick(json!({}), (2024, 5, 16), (1990, 5, 17)).is_empty());
        assert!(tick(json!({}), (2024, 6, 17), (1990, 5, 17)).is_empty());
        assert_eq!(
            tick(
                json!({"points": 0, "coupon_template": "B"}),
                (2024, 5, 17),
                (1990, 5, 17)
            ),
            vec![Action::IssueCoupon("B".into())]
        );
    }

    #[test]
    fn leap_day_birthdays() {
        assert_eq!(tick(json!({}), (2023, 2, 28), (2000, 2, 29)).len(), 1);
        assert!(tick(json!({}), (2023, 3, 1), (2000, 2, 29)).is_empty());
        assert_eq!(tick(json!({}), (2024, 2, 29), (2000, 2, 29)).len(), 1);
        assert!(tick(json!({}), (2024, 2, 28), (2000, 2, 29)).is_empty());
    }

    #[test]
    fn other_events_and_no_birthday_do_nothing() {
        let ctx = ContextBuilder::new().build(); // 15 January
        let member = MemberBuilder::new().birthday(1990, 1, 15).build();
        for event in [
            Event::MemberJoined,
            Event::PurchaseRecorded(PurchaseBuilder::new().build()),
            Event::TierChanged(TierChange {
                from: None,
                to: "gold".into(),
            }),
        ] {
            assert_eq!(Birthday::on_event(&ctx, &member, &event), Ok(vec![]));
        }
        assert_eq!(
            Birthday::on_event(&ctx, &member, &Event::DailyTick).map(|a| a.len()),
            Ok(1)
        );
        let nobody = MemberBuilder::new().build();
        assert_eq!(
            Birthday::on_event(&ctx, &nobody, &Event::DailyTick),
            Ok(vec![])
        );
    }

    #[test]
    fn bad_config() {
        for config in [
            json!({"points": -1}),
            json!({"points": "100"}),
            json!({"coupon": "X"}),
        ] {
            let ctx = ContextBuilder::new().config(config.clone()).build();
            let e = Birthday::on_event(&ctx, &MemberBuilder::new().build(), &Event::DailyTick)
                .expect_err("invalid config");
            assert_eq!(e.code, "bad-config", "{config}");
        }
    }
}
