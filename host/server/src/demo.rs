//! The demo merchant `cargo xtask run` starts with: the Online Retail slice imported through
//! the example plugins (earn rule, tier policy, recommender), tiers, coupon templates and two
//! campaigns, with today's tick run and the outbox worked off — so the README's tour finds real
//! members with points, tiers, coupons and recommendations on a fresh machine.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use loyalty_core::campaigns::{create_campaign, Budget, NewCampaign};
use loyalty_core::coupons::{create_template, issue_by_admin, CouponKind, NewCouponTemplate};
use loyalty_core::merchants::{self, Scope};
use loyalty_core::settings::SettingsPatch;
use loyalty_core::tiers::{put_tiers, TierInput, TiersInput};
use serde_json::json;

use crate::import::{self, ImportOptions};
use crate::{dispatch, scheduler, AppState};

/// The demo merchant's name; a second seed finds it by this name and imports nothing again.
pub const DEMO_MERCHANT_NAME: &str = "Demo: Online Retail (UCI slice)";

/// What the seed made, for the operator to try.
#[derive(Debug)]
pub struct Demo {
    pub merchant_id: String,
    /// A fresh admin key of the demo merchant (made on every seed: keys are shown once).
    pub api_key: String,
    /// The member who spent the most: a high tier, points, a coupon, recommendations.
    pub member_id: String,
    pub store_id: String,
    pub created: bool,
}

/// Seeds the demo merchant from `slice` (the fixture CSV) with the components in
/// `components` (`earn_base_rate.wasm`, …), or finds the one a previous seed made.
pub async fn seed(state: &AppState, slice: &Path, components: &Path) -> anyhow::Result<Demo> {
    let pool = &state.database.pool;
    let existing = merchants::merchant_by_name(pool, DEMO_MERCHANT_NAME).await?;
    let created = existing.is_none();
    let merchant = match existing {
        Some(merchant) => merchant,
        None => {
            let (merchant, _key) =
                import::create_online_retail_merchant(state, DEMO_MERCHANT_NAME).await?;
            set_up(state, &merchant, slice, components).await?;
            merchants::get_merchant(pool, &merchant.id).await?
        }
    };
    let key = merchants::rotate_named_key(
        pool,
        &merchant.id,
        "demo",
        &[Scope::Admin],
        state.clock.now(),
    )
    .await?;
    // The previous demo key is gone and the set-up may have changed the merchant: this host
    // must not remember either (the seed always ends here, so one clearing serves both).
    state.principals.forget_merchant(&merchant.id);
    let (member_id, store_id) = merchants::top_spender(pool, &merchant.id)
        .await?
        .context("the demo has no members")?;
    Ok(Demo {
        merchant_id: merchant.id,
        api_key: key.key,
        member_id,
        store_id,
        created,
    })
}

async fn set_up(
    state: &AppState,
    merchant: &loyalty_core::merchants::Merchant,
    slice: &Path,
    components: &Path,
) -> anyhow::Result<()> {
    let pool = &state.database.pool;
    let now = state.clock.now();
    // Points live two years, so the whole (shifted) year of data still shows.
    let settings = merchant.settings.patched(
        &SettingsPatch {
            points_expiry_days: Some(Some(730)),
            ..SettingsPatch::default()
        },
        merchant.currency_exponent,
    )?;
    merchants::update_merchant(pool, merchant, None, &settings).await?;
    let tier = |code: &str, name: &str, multiplier: &str, benefits: &str| TierInput {
        code: code.into(),
        name: name.into(),
        benefits: benefits.into(),
        earn_multiplier: Some(multiplier.into()),
        attributes: None,
    };
    put_tiers(
        pool,
        &merchant.id,
        &TiersInput {
            tiers: vec![
                tier("bronze", "Bronze", "1", "Member prices"),
                tier("silver", "Silver", "1.5", "1.5× points"),
                tier("gold", "Gold", "2", "Double points, free delivery"),
            ],
        },
        now,
    )
    .await?;
    for (code, name, kind, value, min_spend, days) in [
        (
            "WELCOME",
            "£5 off £20",
            CouponKind::AmountOff,
            "5.00",
            "20.00",
            90,
        ),
        ("WINBACK", "10% off", CouponKind::PercentOff, "10", "0", 30),
        (
            "BDAY",
            "Birthday £10 off",
            CouponKind::AmountOff,
            "10.00",
            "30.00",
            30,
        ),
    ] {
        create_template(
            pool,
            merchant,
            &NewCouponTemplate {
                code: code.into(),
                name: name.into(),
                kind,
                value: value.into(),
                min_spend: Some(min_spend.into()),
                valid_days: days,
                store_ids: Vec::new(),
            },
            now,
        )
        .await?;
    }
    let component = |name: &str| components.join(format!("{name}.wasm"));
    let options = ImportOptions {
        concurrency: 16,
        progress: false,
        plugins: vec![
            component("earn_base_rate"),
            component("tier_spend_threshold"),
            component("recommend_co_purchase"),
        ],
        plugin_configs: BTreeMap::from([(
            "tier-spend-threshold".to_string(),
            json!({"tiers": {
            "bronze": {"upgrade_at": 0, "keep_at": 0},
            "silver": {"upgrade_at": 50_000, "keep_at": 30_000},
            "gold": {"upgrade_at": 200_000, "keep_at": 150_000},
                    }}),
        )]),
        // The slice is from 2010–2011: moved to end yesterday, its members are recent
        // customers with live tiers and points.
        end_at: Some(now - 86_400_000_000),
    };
    let summary = import::import_online_retail(state, &merchant.id, slice, &options).await?;
    tracing::info!(
        members = summary.members_created,
        purchases = summary.purchases_imported,
        "demo data imported"
    );
    // Campaigns from today for a year: birthdays (the data has none, members added in the
    // tour may) and win-back of members away for a multiple of 60 days.
    let year = 365 * 86_400_000_000_i64;
    let format = |micros: i64| loyalty_core::db::format_micros(micros);
    for (name, plugin_name, config) in [
        (
            "Birthday",
            "campaign-birthday",
            json!({"points": 100, "coupon_template": "BDAY"}),
        ),
        (
            "Win-back",
            "campaign-winback",
            json!({"days": 60, "coupon_template": "WINBACK"}),
        ),
    ] {
        let file = component(&plugin_name.replace('-', "_"));
        let plugin = crate::import::register_component(state, merchant, &file).await?;
        create_campaign(
            pool,
            merchant,
            &NewCampaign {
                name: name.into(),
                store_ids: Vec::new(),
                plugin_id: plugin,
                config,
                starts_at: format(now - 86_400_000_000),
                ends_at: format(now + year),
                budget: Budget {
                    points: Some(1_000_000),
                    coupons: Some(10_000),
                },
                per_member_cap: Some(12),
            },
            now,
        )
        .await?;
    }
    // The outbox (item statistics for recommendations, campaign triggers), then today's tick
    // (win-back coupons), then the coupons' events.
    while dispatch::dispatch_events(state).await? > 0 {}
    while dispatch::count_items(state, loyalty_core::items::COUNT_PURCHASES_MAX).await? > 0 {}
    let today = scheduler::local_date(&merchant.timezone, now)?;
    scheduler::run_day(state, &merchant.id, today).await?;
    while dispatch::dispatch_events(state).await? > 0 {}
    if let Some((member_id, _)) = merchants::top_spender(pool, &merchant.id).await? {
        let welcome = loyalty_core::coupons::list_templates(pool, merchant, None, 10)
            .await?
            .into_iter()
            .find(|template| template.code == "WELCOME")
            .context("the WELCOME template")?;
        issue_by_admin(&state.database, merchant, &member_id, &welcome.id, now).await?;
    }
    Ok(())
}
