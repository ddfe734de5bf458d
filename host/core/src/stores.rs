//! Stores of a merchant, and the count-card packages it sells.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::merchants::{validate_name, Merchant};
use crate::money::{format_money, parse_money};

pub const CODE_LENGTH_MAX: usize = 64;
pub const COUNT_CARD_USES_MAX: i64 = 10_000;
pub const COUNT_CARD_VALID_DAYS_MAX: i64 = 3_650;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStore {
    /// The merchant's own code for the store, unique per merchant.
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Store {
    pub id: String,
    pub code: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

pub fn validate_code(field: &str, code: &str, errors: &mut Vec<FieldError>) {
    if code.is_empty() || code.len() > CODE_LENGTH_MAX || code.trim() != code {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {CODE_LENGTH_MAX} characters without surrounding spaces"),
        ));
    }
}

/// Maps a unique violation on `index` (SQLite names columns, PostgreSQL the index) to a 409.
pub fn conflict_on(error: CoreError, index: &str, column: &str, message: &str) -> CoreError {
    match error.unique_violation() {
        Some(name) if name.contains(index) || name.contains(&format!(".{column}")) => {
            CoreError::Conflict(message.to_string())
        }
        _ => error,
    }
}

pub async fn create_store(
    pool: &AnyPool,
    merchant_id: &str,
    input: &NewStore,
    now: i64,
) -> Result<Store, CoreError> {
    let mut errors = Vec::new();
    validate_code("code", &input.code, &mut errors);
    validate_name("name", &input.name, &mut errors);
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let id = new_id("sto");
    sqlx::query(
        "INSERT INTO stores (merchant_id, id, code, name, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(merchant_id)
    .bind(&id)
    .bind(&input.code)
    .bind(input.name.trim())
    .bind(now)
    .execute(pool)
    .await
    .map_err(|error| {
        conflict_on(
            error.into(),
            "stores_code",
            "code",
            "a store with this code already exists",
        )
    })?;
    get_store(pool, merchant_id, &id).await
}

fn store_from_row(row: &sqlx::any::AnyRow) -> Result<Store, CoreError> {
    Ok(Store {
        id: row.try_get("id")?,
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        created_at: from_unix_micros(row.try_get("created_at")?),
    })
}

pub async fn get_store(pool: &AnyPool, merchant_id: &str, id: &str) -> Result<Store, CoreError> {
    let row = sqlx::query(
        "SELECT id, code, name, created_at FROM stores WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("store"))?;
    store_from_row(&row)
}

pub async fn list_stores(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Store>, CoreError> {
    let rows = sqlx::query(
        "SELECT id, code, name, created_at FROM stores WHERE merchant_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3",
    )
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(store_from_row).collect()
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCountCardPackage {
    pub name: String,
    /// The merchant's SKU for the package, unique per merchant.
    pub sku: String,
    /// Service uses the card carries.
    pub uses: i64,
    /// Price as a decimal string in the merchant's currency.
    pub price: String,
    /// Days the card is valid after it is sold.
    pub valid_days: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountCardPackage {
    pub id: String,
    pub name: String,
    pub sku: String,
    pub uses: i64,
    pub price: String,
    pub valid_days: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

/// A package as the ledger needs it: price in minor units.
#[derive(Debug, Clone)]
pub struct PackageTerms {
    pub id: String,
    pub name: String,
    pub uses: i64,
    pub price: i64,
    pub valid_days: i64,
}

pub async fn create_package(
    pool: &AnyPool,
    merchant: &Merchant,
    input: &NewCountCardPackage,
    now: i64,
) -> Result<CountCardPackage, CoreError> {
    let mut errors = Vec::new();
    validate_name("name", &input.name, &mut errors);
    validate_code("sku", &input.sku, &mut errors);
    if !(1..=COUNT_CARD_USES_MAX).contains(&input.uses) {
        errors.push(FieldError::new(
            "uses",
            format!("must be between 1 and {COUNT_CARD_USES_MAX}"),
        ));
    }
    if !(1..=COUNT_CARD_VALID_DAYS_MAX).contains(&input.valid_days) {
        errors.push(FieldError::new(
            "valid_days",
            format!("must be between 1 and {COUNT_CARD_VALID_DAYS_MAX}"),
        ));
    }
    let price = match parse_money("price", &input.price, merchant.currency_exponent) {
        Ok(price) if price < 0 => {
            errors.push(FieldError::new("price", "must not be negative"));
            0
        }
        Ok(price) => price,
        Err(error) => {
            errors.push(error);
            0
        }
    };
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let id = new_id("pkg");
    sqlx::query(
        "INSERT INTO count_card_packages (merchant_id, id, name, sku, uses, price, valid_days, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&merchant.id)
    .bind(&id)
    .bind(input.name.trim())
    .bind(&input.sku)
    .bind(input.uses)
    .bind(price)
    .bind(input.valid_days)
    .bind(now)
    .execute(pool)
    .await
    .map_err(|error| {
        conflict_on(
            error.into(),
            "count_card_packages_sku",
            "sku",
            "a count-card package with this sku already exists",
        )
    })?;
    get_package(pool, merchant, &id).await
}

fn package_terms_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<(PackageTerms, String, i64), CoreError> {
    Ok((
        PackageTerms {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            uses: row.try_get("uses")?,
            price: row.try_get("price")?,
            valid_days: row.try_get("valid_days")?,
        },
        row.try_get("sku")?,
        row.try_get("created_at")?,
    ))
}

const PACKAGE_COLUMNS: &str = "id, name, sku, uses, price, valid_days, created_at";

fn package_view(
    terms: PackageTerms,
    sku: String,
    created_at: i64,
    exponent: u32,
) -> CountCardPackage {
    CountCardPackage {
        id: terms.id,
        name: terms.name,
        sku,
        uses: terms.uses,
        price: format_money(terms.price, exponent),
        valid_days: terms.valid_days,
        created_at: from_unix_micros(created_at),
    }
}

pub async fn package_terms(
    pool: &AnyPool,
    merchant_id: &str,
    id: &str,
) -> Result<PackageTerms, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {PACKAGE_COLUMNS} FROM count_card_packages WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("count-card package"))?;
    Ok(package_terms_from_row(&row)?.0)
}

pub async fn get_package(
    pool: &AnyPool,
    merchant: &Merchant,
    id: &str,
) -> Result<CountCardPackage, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {PACKAGE_COLUMNS} FROM count_card_packages WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(&merchant.id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("count-card package"))?;
    let (terms, sku, created_at) = package_terms_from_row(&row)?;
    Ok(package_view(
        terms,
        sku,
        created_at,
        merchant.currency_exponent,
    ))
}

pub async fn list_packages(
    pool: &AnyPool,
    merchant: &Merchant,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<CountCardPackage>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {PACKAGE_COLUMNS} FROM count_card_packages WHERE merchant_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    ))
    .bind(&merchant.id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let (terms, sku, created_at) = package_terms_from_row(row)?;
            Ok(package_view(
                terms,
                sku,
                created_at,
                merchant.currency_exponent,
            ))
        })
        .collect()
}
