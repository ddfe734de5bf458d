//! The gift catalogue (礼品兑换): gifts with a points price and a stock. A redemption moves
//! points and stock in one writer transaction (`operations`), and the stock's conditional
//! update never lets it go below zero, however many tills redeem at once.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::merchants::validate_name;

pub const GIFT_POINTS_COST_MAX: i64 = 100_000_000;
pub const GIFT_STOCK_MAX: i64 = 10_000_000;
/// Units one redemption may take.
pub const GIFT_QUANTITY_MAX: i64 = 100;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGift {
    pub name: String,
    /// Points one unit costs.
    pub points_cost: i64,
    /// Units in stock.
    pub stock: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Gift {
    pub id: String,
    pub name: String,
    pub points_cost: i64,
    pub stock: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GiftRedemptionRequest {
    pub gift_id: String,
    /// Units, 1 to 100.
    pub quantity: i64,
    pub store_id: String,
}

pub fn validate_redemption(request: &GiftRedemptionRequest) -> Result<(), CoreError> {
    if !(1..=GIFT_QUANTITY_MAX).contains(&request.quantity) {
        return Err(CoreError::field(
            "quantity",
            format!("must be between 1 and {GIFT_QUANTITY_MAX}"),
        ));
    }
    Ok(())
}

pub async fn create_gift(
    pool: &AnyPool,
    merchant_id: &str,
    input: &NewGift,
    now: i64,
) -> Result<Gift, CoreError> {
    let mut errors = Vec::new();
    validate_name("name", &input.name, &mut errors);
    if !(1..=GIFT_POINTS_COST_MAX).contains(&input.points_cost) {
        errors.push(FieldError::new(
            "points_cost",
            format!("must be between 1 and {GIFT_POINTS_COST_MAX}"),
        ));
    }
    if !(0..=GIFT_STOCK_MAX).contains(&input.stock) {
        errors.push(FieldError::new(
            "stock",
            format!("must be between 0 and {GIFT_STOCK_MAX}"),
        ));
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let id = new_id("gft");
    sqlx::query(
        "INSERT INTO gifts (merchant_id, id, name, points_cost, stock, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(merchant_id)
    .bind(&id)
    .bind(input.name.trim())
    .bind(input.points_cost)
    .bind(input.stock)
    .bind(now)
    .execute(pool)
    .await?;
    get_gift(pool, merchant_id, &id).await
}

fn gift_from_row(row: &sqlx::any::AnyRow) -> Result<Gift, CoreError> {
    Ok(Gift {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        points_cost: row.try_get("points_cost")?,
        stock: row.try_get("stock")?,
        created_at: from_unix_micros(row.try_get("created_at")?),
    })
}

pub async fn get_gift(pool: &AnyPool, merchant_id: &str, id: &str) -> Result<Gift, CoreError> {
    let row = sqlx::query(
        "SELECT id, name, points_cost, stock, created_at FROM gifts \
         WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("gift"))?;
    gift_from_row(&row)
}

pub async fn list_gifts(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Gift>, CoreError> {
    let rows = sqlx::query(
        "SELECT id, name, points_cost, stock, created_at FROM gifts \
         WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(gift_from_row).collect()
}
