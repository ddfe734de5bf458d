//! Coupons: the merchant's templates (amount off or percent off, minimum spend, validity,
//! stores), coupons issued to members (by an admin or a campaign, exactly once per issue key)
//! and their redemption with a purchase, in the purchase's own transaction.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{format_micros, from_unix_micros, new_id, Script};
use crate::error::{CoreError, FieldError};
use crate::events::{queue_event, NewEvent, COUPON_ISSUED};
use crate::merchants::{validate_name, Merchant};
use crate::money::{format_money, parse_money};
use crate::points::MICROS_PER_DAY;
use crate::session::{self, Session};
use crate::stores::validate_code;

pub const COUPON_VALID_DAYS_MAX: i64 = 3_650;
pub const COUPON_STORES_MAX: usize = 100;
/// Coupons one purchase may use.
pub const COUPONS_PER_PURCHASE_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponKind {
    AmountOff,
    PercentOff,
}

impl CouponKind {
    fn as_str(self) -> &'static str {
        match self {
            CouponKind::AmountOff => "amount_off",
            CouponKind::PercentOff => "percent_off",
        }
    }
    fn parse(text: &str) -> Result<CouponKind, CoreError> {
        match text {
            "amount_off" => Ok(CouponKind::AmountOff),
            "percent_off" => Ok(CouponKind::PercentOff),
            other => Err(CoreError::Internal(format!("a stored coupon kind {other}"))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCouponTemplate {
    /// The merchant's code, unique; campaigns issue by it.
    pub code: String,
    pub name: String,
    pub kind: CouponKind,
    /// amount_off: money ("20.00"); percent_off: a percentage ("15" or "12.5"), above 0 and at
    /// most 100.
    pub value: String,
    /// The smallest purchase total it applies to (default "0").
    pub min_spend: Option<String>,
    /// Days a coupon stays valid from its issue.
    pub valid_days: i64,
    /// Stores where it may be used; empty or absent: every store.
    #[serde(default)]
    pub store_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct CouponTemplate {
    pub id: String,
    pub code: String,
    pub name: String,
    pub kind: CouponKind,
    /// Money for amount_off, a percentage for percent_off.
    pub value: String,
    pub min_spend: String,
    pub valid_days: i64,
    pub store_ids: Vec<String>,
}

/// A percentage text → hundredths of a percent.
fn parse_percent(text: &str) -> Option<i64> {
    let value: Decimal = text.parse().ok()?;
    if value <= Decimal::ZERO || value > Decimal::from(100) || value.scale() > 2 {
        return None;
    }
    (value * Decimal::from(100))
        .trunc()
        .to_string()
        .parse()
        .ok()
}

fn format_percent(hundredths: i64) -> String {
    Decimal::new(hundredths, 2).normalize().to_string()
}

pub async fn create_template(
    pool: &AnyPool,
    merchant: &Merchant,
    input: &NewCouponTemplate,
    now: i64,
) -> Result<CouponTemplate, CoreError> {
    let exponent = merchant.currency_exponent;
    let mut errors = Vec::new();
    validate_code("code", &input.code, &mut errors);
    validate_name("name", &input.name, &mut errors);
    let value = match input.kind {
        CouponKind::AmountOff => match parse_money("value", &input.value, exponent) {
            Ok(value) if value > 0 => value,
            Ok(_) => {
                errors.push(FieldError::new("value", "must be greater than zero"));
                0
            }
            Err(error) => {
                errors.push(error);
                0
            }
        },
        CouponKind::PercentOff => parse_percent(&input.value).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "value",
                "a percentage above 0 and at most 100, with at most 2 decimals",
            ));
            0
        }),
    };
    let min_spend = match &input.min_spend {
        None => 0,
        Some(text) => match parse_money("min_spend", text, exponent) {
            Ok(value) if value >= 0 => value,
            Ok(_) => {
                errors.push(FieldError::new("min_spend", "must not be negative"));
                0
            }
            Err(error) => {
                errors.push(error);
                0
            }
        },
    };
    if !(1..=COUPON_VALID_DAYS_MAX).contains(&input.valid_days) {
        errors.push(FieldError::new(
            "valid_days",
            format!("must be between 1 and {COUPON_VALID_DAYS_MAX}"),
        ));
    }
    if input.store_ids.len() > COUPON_STORES_MAX {
        errors.push(FieldError::new(
            "store_ids",
            format!("at most {COUPON_STORES_MAX} stores"),
        ));
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    for (index, store_id) in input.store_ids.iter().enumerate() {
        if crate::stores::get_store(pool, &merchant.id, store_id)
            .await
            .is_err()
        {
            return Err(CoreError::field(
                format!("store_ids[{index}]"),
                "no such store",
            ));
        }
    }
    let id = new_id("cpt");
    sqlx::query(
        "INSERT INTO coupon_templates (merchant_id, id, code, name, kind, value, min_spend, \
         valid_days, store_ids, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&merchant.id)
    .bind(&id)
    .bind(&input.code)
    .bind(input.name.trim())
    .bind(input.kind.as_str())
    .bind(value)
    .bind(min_spend)
    .bind(input.valid_days)
    .bind(serde_json::to_string(&input.store_ids).expect("strings serialize"))
    .bind(now)
    .execute(pool)
    .await
    .map_err(|error| {
        crate::stores::conflict_on(
            error.into(),
            "coupon_templates_code",
            "code",
            "a coupon template with this code exists",
        )
    })?;
    get_template(pool, merchant, &id).await
}

const TEMPLATE_COLUMNS: &str = "id, code, name, kind, value, min_spend, valid_days, store_ids";

fn template_from_row(row: &sqlx::any::AnyRow, exponent: u32) -> Result<CouponTemplate, CoreError> {
    let kind = CouponKind::parse(&row.try_get::<String, _>("kind")?)?;
    let value: i64 = row.try_get("value")?;
    let stores: String = row.try_get("store_ids")?;
    Ok(CouponTemplate {
        id: row.try_get("id")?,
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        kind,
        value: match kind {
            CouponKind::AmountOff => format_money(value, exponent),
            CouponKind::PercentOff => format_percent(value),
        },
        min_spend: format_money(row.try_get("min_spend")?, exponent),
        valid_days: row.try_get("valid_days")?,
        store_ids: serde_json::from_str(&stores)
            .map_err(|_| CoreError::Internal("stored template stores".into()))?,
    })
}

pub async fn get_template(
    pool: &AnyPool,
    merchant: &Merchant,
    id: &str,
) -> Result<CouponTemplate, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM coupon_templates WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(&merchant.id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("coupon template"))?;
    template_from_row(&row, merchant.currency_exponent)
}

pub async fn list_templates(
    pool: &AnyPool,
    merchant: &Merchant,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<CouponTemplate>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM coupon_templates WHERE merchant_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    ))
    .bind(&merchant.id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| template_from_row(row, merchant.currency_exponent))
        .collect()
}

/// The template with `code`, as (id, valid_days), if the merchant has one.
pub async fn template_by_code(
    connection: &mut Session<'_>,
    merchant_id: &str,
    code: &str,
) -> Result<Option<(String, i64)>, CoreError> {
    session::query_as(
        "SELECT id, valid_days FROM coupon_templates WHERE merchant_id = $1 AND code = $2",
    )
    .bind(merchant_id)
    .bind(code)
    .fetch_optional(&mut *connection)
    .await
}

/// Who issues a coupon.
#[derive(Debug, Clone)]
pub struct Issue {
    pub template_id: String,
    pub valid_days: i64,
    pub member_id: String,
    pub source: &'static str,
    pub campaign_id: Option<String>,
    /// Issues at most once per key (a campaign action); `None`: every call issues.
    pub issue_key: Option<String>,
}

/// Queues a coupon's issue and its `coupon.issued` event in the caller's script (inside the
/// writer's transaction, or flushed by the caller). Returns the coupon id.
pub fn queue_issue(script: &mut Script, merchant_id: &str, issue: &Issue, now: i64) -> String {
    let id = new_id("cpn");
    let expires_at = now + issue.valid_days * MICROS_PER_DAY;
    script.push(
        "INSERT INTO coupons (merchant_id, id, template_id, member_id, state, issued_at, \
         expires_at, source, campaign_id, issue_key) \
         VALUES ($1, $2, $3, $4, 'issued', $5, $6, $7, $8, $9)",
        vec![
            merchant_id.into(),
            (&id).into(),
            (&issue.template_id).into(),
            (&issue.member_id).into(),
            now.into(),
            expires_at.into(),
            issue.source.into(),
            (&issue.campaign_id).into(),
            (&issue.issue_key).into(),
        ],
    );
    queue_event(
        script,
        merchant_id,
        NewEvent::member(
            COUPON_ISSUED,
            &issue.member_id,
            serde_json::json!({
                "coupon_id": id,
                "member_id": issue.member_id,
                "template_id": issue.template_id,
                "campaign_id": issue.campaign_id,
                "expires_at": format_micros(expires_at),
            }),
        ),
        now,
    );
    id
}

/// Issues a coupon of template `template_id` to a member, by an admin. Returns the coupon.
pub async fn issue_by_admin(
    database: &crate::Database,
    merchant: &Merchant,
    member_id: &str,
    template_id: &str,
    now: i64,
) -> Result<Coupon, CoreError> {
    let pool = &database.pool;
    if !crate::members::member_exists(&mut Session::Pool(pool), &merchant.id, member_id).await? {
        return Err(CoreError::NotFound("member"));
    }
    let template: Option<i64> = sqlx::query_scalar(
        "SELECT valid_days FROM coupon_templates WHERE merchant_id = $1 AND id = $2",
    )
    .bind(&merchant.id)
    .bind(template_id)
    .fetch_optional(pool)
    .await?;
    let valid_days = template.ok_or(CoreError::field("template_id", "no such coupon template"))?;
    let mut script = Script::new(database.backend);
    let id = queue_issue(
        &mut script,
        &merchant.id,
        &Issue {
            template_id: template_id.to_string(),
            valid_days,
            member_id: member_id.to_string(),
            source: "admin",
            campaign_id: None,
            issue_key: None,
        },
        now,
    );
    // The coupon and its event commit together.
    let mut transaction = pool.begin().await?;
    script.flush(&mut Session::Pooled(&mut transaction)).await?;
    transaction.commit().await?;
    get_coupon(pool, merchant, &id, now).await
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Coupon {
    pub id: String,
    pub member_id: String,
    pub template_id: String,
    pub code: String,
    pub name: String,
    pub kind: CouponKind,
    pub value: String,
    pub min_spend: String,
    pub store_ids: Vec<String>,
    /// issued | redeemed | expired
    pub state: String,
    pub source: String,
    pub campaign_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
    pub purchase_id: Option<String>,
    /// What it took off the purchase it was used on.
    pub discount: Option<String>,
}

const COUPON_SELECT: &str = "SELECT c.id, c.member_id, c.template_id, c.state, c.source, \
     c.campaign_id, c.issued_at, c.expires_at, c.purchase_id, c.discount, t.code, t.name, \
     t.kind, t.value, t.min_spend, t.valid_days, t.store_ids FROM coupons c JOIN coupon_templates t \
     ON t.merchant_id = c.merchant_id AND t.id = c.template_id";

fn coupon_from_row(row: &sqlx::any::AnyRow, exponent: u32, now: i64) -> Result<Coupon, CoreError> {
    let template = template_from_row(row, exponent)?;
    let state: String = row.try_get("state")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let state = if state == "issued" && expires_at <= now {
        "expired".to_string()
    } else {
        state
    };
    Ok(Coupon {
        id: row.try_get("id")?,
        member_id: row.try_get("member_id")?,
        template_id: row.try_get("template_id")?,
        code: template.code,
        name: template.name,
        kind: template.kind,
        value: template.value,
        min_spend: template.min_spend,
        store_ids: template.store_ids,
        state,
        source: row.try_get("source")?,
        campaign_id: row.try_get("campaign_id")?,
        issued_at: from_unix_micros(row.try_get("issued_at")?),
        expires_at: from_unix_micros(expires_at),
        purchase_id: row.try_get("purchase_id")?,
        discount: row
            .try_get::<Option<i64>, _>("discount")?
            .map(|discount| format_money(discount, exponent)),
    })
}

pub async fn get_coupon(
    pool: &AnyPool,
    merchant: &Merchant,
    id: &str,
    now: i64,
) -> Result<Coupon, CoreError> {
    let row = sqlx::query(&format!(
        "{COUPON_SELECT} WHERE c.merchant_id = $1 AND c.id = $2"
    ))
    .bind(&merchant.id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("coupon"))?;
    coupon_from_row(&row, merchant.currency_exponent, now)
}

/// A member's coupons, newest first, before `cursor` (a coupon id).
pub async fn member_coupons(
    pool: &AnyPool,
    merchant: &Merchant,
    member_id: &str,
    cursor: Option<&str>,
    limit: i64,
    now: i64,
) -> Result<Vec<Coupon>, CoreError> {
    if !crate::members::member_exists(&mut Session::Pool(pool), &merchant.id, member_id).await? {
        return Err(CoreError::NotFound("member"));
    }
    let rows = sqlx::query(&format!(
        "{COUPON_SELECT} WHERE c.merchant_id = $1 AND c.member_id = $2 \
         AND ($3 IS NULL OR c.id < $3) ORDER BY c.id DESC LIMIT $4"
    ))
    .bind(&merchant.id)
    .bind(member_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| coupon_from_row(row, merchant.currency_exponent, now))
        .collect()
}

/// A coupon used by a purchase, with what it took off.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct UsedCoupon {
    pub id: String,
    pub discount: String,
}

/// Checks and consumes the purchase's coupons in the writer's transaction: each must be the
/// member's, unused, unexpired at `at`, valid at `store_id`, its minimum spend reached by
/// `total`. Discounts apply in the order given, never beyond the total. Errors name the
/// coupon's position (`coupons[i]`); nothing is written then (the savepoint rolls back).
#[allow(clippy::too_many_arguments)]
pub async fn redeem(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant: &Merchant,
    member_id: &str,
    store_id: &str,
    purchase_id: &str,
    total: i64,
    coupon_ids: &[String],
    at: i64,
) -> Result<(Vec<UsedCoupon>, i64), CoreError> {
    let mut used = Vec::with_capacity(coupon_ids.len());
    let mut discounted = 0_i64;
    for (index, id) in coupon_ids.iter().enumerate() {
        let field = format!("coupons[{index}]");
        let row = session::query(&format!(
            "{COUPON_SELECT} WHERE c.merchant_id = $1 AND c.id = $2"
        ))
        .bind(&merchant.id)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
        let Some(row) = row else {
            return Err(CoreError::field(field, "no such coupon"));
        };
        let owner: String = row.try_get("member_id")?;
        if owner != member_id {
            // Another member's coupon reads as missing: ids never tell who holds what.
            return Err(CoreError::field(field, "no such coupon"));
        }
        let state: String = row.try_get("state")?;
        if state != "issued" {
            return Err(CoreError::field(field, "already used"));
        }
        if row.try_get::<i64, _>("expires_at")? <= at {
            return Err(CoreError::field(field, "expired"));
        }
        let stores: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("store_ids")?)
            .map_err(|_| CoreError::Internal("stored template stores".into()))?;
        if !stores.is_empty() && !stores.iter().any(|store| store == store_id) {
            return Err(CoreError::field(field, "not valid at this store"));
        }
        let min_spend: i64 = row.try_get("min_spend")?;
        if total < min_spend {
            return Err(CoreError::field(
                field,
                format!(
                    "needs a purchase of at least {}",
                    format_money(min_spend, merchant.currency_exponent)
                ),
            ));
        }
        let value: i64 = row.try_get("value")?;
        let discount = match CouponKind::parse(&row.try_get::<String, _>("kind")?)? {
            CouponKind::AmountOff => value,
            // hundredths of a percent, rounded down: the member never gets more than the rate
            CouponKind::PercentOff => i64::try_from(i128::from(total) * i128::from(value) / 10_000)
                .expect("below the total"),
        }
        .min(total - discounted);
        discounted += discount;
        script.push(
            "UPDATE coupons SET state = 'redeemed', purchase_id = $3, redeemed_at = $4, \
             discount = $5 WHERE merchant_id = $1 AND id = $2 AND state = 'issued'",
            vec![
                (&merchant.id).into(),
                id.into(),
                purchase_id.into(),
                at.into(),
                discount.into(),
            ],
        );
        used.push(UsedCoupon {
            id: id.clone(),
            discount: format_money(discount, merchant.currency_exponent),
        });
    }
    debug_assert!(discounted <= total, "discounts never exceed the total");
    Ok((used, discounted))
}

/// Puts a fully refunded purchase's coupons back, if they are still within their validity.
pub fn queue_restore(script: &mut Script, merchant_id: &str, coupon_ids: &[String], now: i64) {
    for id in coupon_ids {
        script.push(
            "UPDATE coupons SET state = 'issued', purchase_id = NULL, redeemed_at = NULL, \
             discount = NULL WHERE merchant_id = $1 AND id = $2 AND state = 'redeemed' \
             AND expires_at > $3",
            vec![merchant_id.into(), id.into(), now.into()],
        );
    }
}
