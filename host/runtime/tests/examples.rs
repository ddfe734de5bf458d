//! The example plugins give the results their READMEs specify, and calls are deterministic.

mod common;

use common::*;
use loyalty_runtime::{
    Action, Award, CallFailure, Candidate, Date, Event, HistoryLine, Member, PointsAward, Scored,
    TierDecision, TierDef, TierMove,
};

#[test]
fn earn_base_rate_rounds_as_configured() {
    let plugin = plugin("earn-base-rate");
    let earn = |config: &str, total: i64| {
        plugin
            .earn(
                &limits(),
                &ctx(config),
                &member(),
                &purchase(vec![line("x", None, 1, total)]),
            )
            .result
    };
    assert_eq!(
        earn("", 1_999),
        Ok(vec![Award {
            points: 19,
            reason: "1 point per CNY 1".into(),
            expires_at: None
        }])
    );
    let nearest = r#"{"points_per_currency_unit": 3, "rounding": "nearest"}"#;
    assert_eq!(
        earn(nearest, 1_950),
        Ok(vec![Award {
            points: 59,
            reason: "3 points per CNY 1".into(),
            expires_at: None
        }])
    );
    assert_eq!(earn("{}", 99), Ok(vec![]));
    match earn(r#"{"unknown": 1}"#, 1_000) {
        Err(CallFailure::Guest { code, .. }) => assert_eq!(code, "bad-config"),
        other => panic!("expected bad-config, got {other:?}"),
    }
}

#[test]
fn earn_category_multiplier_adds_category_awards() {
    let plugin = plugin("earn-category-multiplier");
    let report = plugin.earn(
        &limits(),
        &ctx(r#"{"category_percent": {"coffee": 200, "tea": 150}}"#),
        &member(),
        &purchase(vec![
            line("latte", Some("coffee"), 2, 500),
            line("oolong", Some("tea"), 1, 800),
            line("bagel", None, 1, 700),
        ]),
    );
    let award = |points, reason: &str| Award {
        points,
        reason: reason.into(),
        expires_at: None,
    };
    // total 2500 → base 25; coffee 1000 × 100 / 10000 = 10; tea 800 × 50 / 10000 = 4.
    assert_eq!(
        report.result,
        Ok(vec![
            award(25, "base: 1 point per CNY 1"),
            award(10, "2× coffee"),
            award(4, "1.5× tea"),
        ])
    );
    assert!(report.fuel_consumed > 0);
}

fn tiers() -> Vec<TierDef> {
    ["silver", "gold", "platinum"]
        .iter()
        .zip(0..)
        .map(|(code, rank)| TierDef {
            code: (*code).into(),
            name: code.to_uppercase(),
            rank,
            attributes: "{}".into(),
        })
        .collect()
}

const TIER_CONFIG: &str = r#"{"tiers": {
    "silver": {"upgrade_at": 0, "keep_at": 0},
    "gold": {"upgrade_at": 500000, "keep_at": 300000},
    "platinum": {"upgrade_at": 2000000, "keep_at": 1500000}
}}"#;

fn member_with(tier: Option<&str>, spend_12_months: i64) -> Member {
    let mut member = member();
    member.tier = tier.map(Into::into);
    member.stats.spend_12_months = spend_12_months;
    member
}

#[test]
fn tier_spend_threshold_moves_up_and_down() {
    let plugin = plugin("tier-spend-threshold");
    let decide = |member: &Member| {
        plugin
            .tier(&limits(), &ctx(TIER_CONFIG), member, &tiers())
            .result
    };
    assert_eq!(
        decide(&member_with(Some("silver"), 600_000)),
        Ok(TierDecision::MoveTo(TierMove {
            tier: "gold".into(),
            reason: "12-month spend CNY 6000.00 reached gold".into()
        }))
    );
    assert_eq!(
        decide(&member_with(Some("platinum"), 1_000_000)),
        Ok(TierDecision::MoveTo(TierMove {
            tier: "gold".into(),
            reason: "below keep amount".into()
        }))
    );
    assert_eq!(
        decide(&member_with(Some("gold"), 400_000)),
        Ok(TierDecision::Stay(
            "12-month spend CNY 4000.00 keeps gold".into()
        ))
    );
}

#[test]
fn recommend_co_purchase_ranks_and_excludes_recent_purchases() {
    let plugin = plugin("recommend-co-purchase");
    let candidate = |sku: &str, category: &str, popularity, co_purchase_count| Candidate {
        sku: sku.into(),
        name: None,
        category: Some(category.into()),
        price: 1_000,
        popularity,
        co_purchase_count,
    };
    let history = vec![HistoryLine {
        line: line("recent", Some("coffee"), 1, 1_000),
        occurred_at: NOW - 86_400_000_000,
    }];
    let candidates = vec![
        candidate("popular", "coffee", 100, 0),
        candidate("pair", "coffee", 5, 2),
        candidate("recent", "coffee", 1_000, 9),
        candidate("single", "tea", 1, 1),
    ];
    let report = plugin.recommend(&limits(), &ctx("{}"), &member(), &history, &candidates, 2);
    assert_eq!(
        report.result,
        Ok(vec![
            Scored {
                sku: "pair".into(),
                score: 2_000_005,
                reason: "bought with your items 2 times".into()
            },
            Scored {
                sku: "single".into(),
                score: 1_000_001,
                reason: "bought with your items 1 time".into()
            },
        ])
    );
}

#[test]
fn campaign_birthday_acts_on_the_birthday_tick_only() {
    let plugin = plugin("campaign-birthday");
    let mut member = member();
    member.birthday = Some(Date {
        year: 1990,
        month: 5,
        day: 17,
    });
    let config = r#"{"points": 100, "coupon_template": "BDAY"}"#;
    let on = |member: &Member, event: &Event| {
        plugin
            .on_event(&limits(), &ctx(config), member, event)
            .result
    };
    assert_eq!(
        on(&member, &Event::DailyTick),
        Ok(vec![
            Action::AwardPoints(PointsAward {
                points: 100,
                reason: "happy birthday".into()
            }),
            Action::IssueCoupon("BDAY".into()),
        ])
    );
    assert_eq!(on(&member, &Event::MemberJoined), Ok(vec![]));
    member.birthday = Some(Date {
        year: 1990,
        month: 5,
        day: 18,
    });
    assert_eq!(on(&member, &Event::DailyTick), Ok(vec![]));
}

#[test]
fn the_same_input_gives_the_same_output_and_fuel() {
    let plugin = plugin("echo-earn");
    let purchase = purchase(vec![line("a", Some("coffee"), 2, 150)]);
    let first = plugin.earn(&limits(), &ctx("{}"), &member(), &purchase);
    let second = plugin.earn(&limits(), &ctx("{}"), &member(), &purchase);
    let awards = first.result.clone().expect("echo-earn succeeds");
    assert!(
        awards[0]
            .reason
            .starts_with("lines=1 total=300 member=mem_test config_len=2 now="),
        "{}",
        awards[0].reason
    );
    assert_eq!(first.result, second.result);
    assert_eq!(first.fuel_consumed, second.fuel_consumed);
    assert_eq!(first.logs, second.logs);

    let mut other = ctx("{}");
    other.timezone = "Asia/Shanghai".into();
    let changed = plugin.earn(&limits(), &other, &member(), &purchase);
    assert_ne!(
        changed.result, first.result,
        "the output depends on the input"
    );
}

#[test]
fn reports_serialize_for_the_server() {
    let plugin = plugin("tier-stay");
    let report = plugin.tier(&limits(), &ctx("{}"), &member(), &tiers());
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["result"]["Ok"]["stay"], "always stay");
    let failure = serde_json::to_value(CallFailure::Output { bytes: 5, max: 4 }).expect("json");
    assert_eq!(failure["kind"], "output");
}
