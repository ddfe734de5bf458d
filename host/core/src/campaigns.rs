//! Campaigns: a `campaign-trigger` plugin with configuration, stores, a schedule, a budget
//! (points, coupons) and a per-member cap that the host enforces. The server asks the plugin
//! about events and daily ticks; the writer applies its actions (`operations`), exactly once
//! per (campaign, event, member), dropping and counting what goes beyond budget or cap.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::merchants::{validate_name, Merchant};
use crate::money::format_money;
use crate::plugins::{check_config, get_plugin, EnabledPlugin};
use crate::session::Session;

pub const CAMPAIGN_STORES_MAX: usize = 100;
/// Actions one plugin answer may carry; the rest are dropped.
pub const ACTIONS_PER_EVENT_MAX: usize = 16;
pub const ACTION_TEXT_LENGTH_MAX: usize = 500;
pub const MESSAGE_VARIABLES_MAX: usize = 32;
/// Points one award action may grant.
pub const CAMPAIGN_AWARD_POINTS_MAX: i64 = 1_000_000;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Points the campaign may grant in all; absent: no limit.
    pub points: Option<i64>,
    /// Coupons the campaign may issue in all; absent: no limit.
    pub coupons: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    /// Stores whose events reach the campaign; empty: every store. Events without a store
    /// (member joined, tier changed, daily tick) reach every running campaign.
    #[serde(default)]
    pub store_ids: Vec<String>,
    /// A `campaign-trigger` plugin of the merchant's.
    pub plugin_id: String,
    /// The plugin's configuration, checked against its schema.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// RFC 3339; events at or after it count.
    pub starts_at: String,
    /// RFC 3339; events before it count.
    pub ends_at: String,
    #[serde(default)]
    pub budget: Budget,
    /// Actions one member may receive from the campaign in all; absent: no limit.
    pub per_member_cap: Option<i64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub store_ids: Vec<String>,
    pub plugin_id: String,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: time::OffsetDateTime,
    pub budget_points: Option<i64>,
    pub budget_coupons: Option<i64>,
    pub per_member_cap: Option<i64>,
}

/// What a campaign did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignStats {
    pub campaign_id: String,
    /// Members who received at least one action.
    pub members_reached: i64,
    pub points_granted: i64,
    pub coupons_issued: i64,
    pub coupons_redeemed: i64,
    /// Totals of the purchases that used the campaign's coupons (list prices).
    pub coupon_revenue: String,
    pub actions_applied: i64,
    /// Actions beyond the budget, the per-member cap, or naming an unknown coupon template.
    pub actions_dropped: i64,
}

fn parse_time(field: &str, text: &str, errors: &mut Vec<FieldError>) -> i64 {
    match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(at) => crate::db::unix_micros(at),
        Err(_) => {
            errors.push(FieldError::new(field, "an RFC 3339 timestamp"));
            0
        }
    }
}

pub async fn create_campaign(
    pool: &AnyPool,
    merchant: &Merchant,
    input: &NewCampaign,
    now: i64,
) -> Result<Campaign, CoreError> {
    let mut errors = Vec::new();
    validate_name("name", &input.name, &mut errors);
    let starts_at = parse_time("starts_at", &input.starts_at, &mut errors);
    let ends_at = parse_time("ends_at", &input.ends_at, &mut errors);
    if errors.is_empty() && ends_at <= starts_at {
        errors.push(FieldError::new("ends_at", "must be after starts_at"));
    }
    for (field, value) in [
        ("budget.points", input.budget.points),
        ("budget.coupons", input.budget.coupons),
    ] {
        if value.is_some_and(|value| value < 0) {
            errors.push(FieldError::new(field, "must not be negative"));
        }
    }
    if input.per_member_cap.is_some_and(|cap| cap < 1) {
        errors.push(FieldError::new("per_member_cap", "must be at least 1"));
    }
    if input.store_ids.len() > CAMPAIGN_STORES_MAX {
        errors.push(FieldError::new(
            "store_ids",
            format!("at most {CAMPAIGN_STORES_MAX} stores"),
        ));
    }
    for (index, store_id) in input.store_ids.iter().enumerate() {
        if crate::stores::get_store(pool, &merchant.id, store_id)
            .await
            .is_err()
        {
            errors.push(FieldError::new(
                format!("store_ids[{index}]"),
                "no such store",
            ));
        }
    }
    match get_plugin(pool, &merchant.id, &input.plugin_id).await {
        Ok(plugin) if plugin.world != "campaign-trigger" => errors.push(FieldError::new(
            "plugin_id",
            format!("is a {} plugin, not campaign-trigger", plugin.world),
        )),
        Ok(plugin) => check_config(&plugin, &input.config, "config", &mut errors)?,
        Err(CoreError::NotFound(_)) => errors.push(FieldError::new("plugin_id", "no such plugin")),
        Err(error) => return Err(error),
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let id = new_id("cmp");
    sqlx::query(
        "INSERT INTO campaigns (merchant_id, id, name, store_ids, plugin_id, config, starts_at, \
         ends_at, budget_points, budget_coupons, per_member_cap, points_granted, coupons_issued, \
         actions_applied, actions_dropped, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, 0, 0, $12)",
    )
    .bind(&merchant.id)
    .bind(&id)
    .bind(input.name.trim())
    .bind(serde_json::to_string(&input.store_ids).expect("strings serialize"))
    .bind(&input.plugin_id)
    .bind(input.config.to_string())
    .bind(starts_at)
    .bind(ends_at)
    .bind(input.budget.points)
    .bind(input.budget.coupons)
    .bind(input.per_member_cap)
    .bind(now)
    .execute(pool)
    .await?;
    get_campaign(pool, &merchant.id, &id).await
}

const CAMPAIGN_COLUMNS: &str = "id, name, store_ids, plugin_id, config, starts_at, ends_at, \
     budget_points, budget_coupons, per_member_cap";

fn campaign_from_row(row: &sqlx::any::AnyRow) -> Result<Campaign, CoreError> {
    let stores: String = row.try_get("store_ids")?;
    let config: String = row.try_get("config")?;
    Ok(Campaign {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        store_ids: serde_json::from_str(&stores)
            .map_err(|_| CoreError::Internal("stored campaign stores".into()))?,
        plugin_id: row.try_get("plugin_id")?,
        config: serde_json::from_str(&config)
            .map_err(|_| CoreError::Internal("stored campaign config".into()))?,
        starts_at: from_unix_micros(row.try_get("starts_at")?),
        ends_at: from_unix_micros(row.try_get("ends_at")?),
        budget_points: row.try_get("budget_points")?,
        budget_coupons: row.try_get("budget_coupons")?,
        per_member_cap: row.try_get("per_member_cap")?,
    })
}

pub async fn get_campaign(
    pool: &AnyPool,
    merchant_id: &str,
    id: &str,
) -> Result<Campaign, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("campaign"))?;
    campaign_from_row(&row)
}

pub async fn list_campaigns(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Campaign>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE merchant_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    ))
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(campaign_from_row).collect()
}

/// The merchant's campaigns running at `at`, with their plugins as the runtime needs them.
pub async fn running(
    pool: &AnyPool,
    merchant_id: &str,
    at: i64,
) -> Result<Vec<(Campaign, EnabledPlugin)>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE merchant_id = $1 AND starts_at <= $2 \
         AND ends_at > $2 ORDER BY id"
    ))
    .bind(merchant_id)
    .bind(at)
    .fetch_all(pool)
    .await?;
    let mut running = Vec::with_capacity(rows.len());
    for row in &rows {
        let campaign = campaign_from_row(row)?;
        let plugin = get_plugin(pool, merchant_id, &campaign.plugin_id).await?;
        let enabled = EnabledPlugin::pinned(plugin, campaign.config.clone());
        running.push((campaign, enabled));
    }
    Ok(running)
}

pub async fn campaign_stats(
    pool: &AnyPool,
    merchant: &Merchant,
    id: &str,
) -> Result<CampaignStats, CoreError> {
    let row = sqlx::query(
        "SELECT points_granted, coupons_issued, actions_applied, actions_dropped, \
         (SELECT CAST(COUNT(*) AS BIGINT) FROM campaign_members m \
          WHERE m.merchant_id = c.merchant_id AND m.campaign_id = c.id AND m.actions > 0) AS reached, \
         (SELECT CAST(COUNT(*) AS BIGINT) FROM coupons k \
          WHERE k.merchant_id = c.merchant_id AND k.campaign_id = c.id AND k.state = 'redeemed') AS redeemed, \
         (SELECT CAST(COALESCE(SUM(p.total), 0) AS BIGINT) FROM purchases p WHERE p.merchant_id = c.merchant_id \
          AND p.id IN (SELECT k.purchase_id FROM coupons k WHERE k.merchant_id = c.merchant_id \
          AND k.campaign_id = c.id AND k.state = 'redeemed')) AS revenue \
         FROM campaigns c WHERE c.merchant_id = $1 AND c.id = $2",
    )
    .bind(&merchant.id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("campaign"))?;
    Ok(CampaignStats {
        campaign_id: id.to_string(),
        members_reached: row.try_get("reached")?,
        points_granted: row.try_get("points_granted")?,
        coupons_issued: row.try_get("coupons_issued")?,
        coupons_redeemed: row.try_get("redeemed")?,
        coupon_revenue: format_money(row.try_get("revenue")?, merchant.currency_exponent),
        actions_applied: row.try_get("actions_applied")?,
        actions_dropped: row.try_get("actions_dropped")?,
    })
}

/// A plugin's action as the host will apply it (shapes checked, texts bounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CampaignAction {
    AwardPoints {
        points: i64,
        reason: String,
    },
    IssueCoupon {
        template_code: String,
    },
    TagMember {
        tag: String,
    },
    SendMessage {
        channel: String,
        template: String,
        variables: Vec<(String, String)>,
    },
}

/// The actions of one (campaign, event, member) for the writer.
#[derive(Debug, Clone)]
pub struct CampaignActionsCommand {
    pub campaign_id: String,
    pub member_id: String,
    /// What the actions answer: an event id, or `tick:<date>` for a daily tick. With the
    /// campaign and the member it keys the effect, so it applies once.
    pub cause: String,
    pub actions: Vec<CampaignAction>,
    /// Actions refused before the writer (malformed, too many): counted as dropped.
    pub refused: i64,
    /// JSON: the plugin (id, name, version, sha256) and its input digest.
    pub provenance: serde_json::Value,
}

/// What the writer did with a campaign's actions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CampaignActionsOutcome {
    /// False when this (campaign, cause, member) was applied before.
    pub first_time: bool,
    pub applied: i64,
    /// Why each dropped action was dropped.
    pub dropped: Vec<String>,
}

/// The tags campaigns put on a member, in order.
pub async fn member_tags(
    pool: &AnyPool,
    merchant_id: &str,
    member_id: &str,
) -> Result<Vec<String>, CoreError> {
    if !crate::members::member_exists(&mut Session::Pool(pool), merchant_id, member_id).await? {
        return Err(CoreError::NotFound("member"));
    }
    Ok(sqlx::query_scalar(
        "SELECT tag FROM member_tags WHERE merchant_id = $1 AND member_id = $2 ORDER BY tag",
    )
    .bind(merchant_id)
    .bind(member_id)
    .fetch_all(pool)
    .await?)
}
