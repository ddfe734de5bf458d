//! Merchants, their settings, and their API keys.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id, Database};
use crate::error::{CoreError, FieldError};
use crate::ledger::{merchant_account_id, MERCHANT_ACCOUNTS};
use crate::money::{currency_exponent, default_region_for_currency};
use crate::settings::{MerchantSettings, SettingsView};

/// Longest merchant, store or key name.
pub const NAME_LENGTH_MAX: usize = 200;
/// Most API keys one merchant may hold (revoked ones included).
pub const API_KEYS_PER_MERCHANT_MAX: i64 = 1_000;

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub currency_exponent: u32,
    pub timezone: String,
    pub default_region: String,
    pub settings: MerchantSettings,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub timezone: String,
    /// ISO 3166 region used to read phone numbers given without a country code.
    pub default_region: String,
    pub settings: SettingsView,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

impl Merchant {
    pub fn view(&self) -> MerchantView {
        MerchantView {
            id: self.id.clone(),
            name: self.name.clone(),
            currency: self.currency.clone(),
            timezone: self.timezone.clone(),
            default_region: self.default_region.clone(),
            settings: self.settings.view(self.currency_exponent),
            created_at: from_unix_micros(self.created_at),
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMerchant {
    pub name: String,
    /// ISO 4217 code, e.g. "CNY".
    pub currency: String,
    /// IANA time zone, e.g. "Asia/Shanghai". Default "UTC".
    pub timezone: Option<String>,
    /// ISO 3166 alpha-2 region for phone numbers; default from the currency.
    pub default_region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    Pos,
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Pos => "pos",
            Scope::Read => "read",
        }
    }
    fn parse(text: &str) -> Option<Scope> {
        match text {
            "admin" => Some(Scope::Admin),
            "pos" => Some(Scope::Pos),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// What a request's key grants: the merchant and the scopes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub merchant: Merchant,
}

impl Principal {
    /// `admin` may do everything; `pos` may also read; `read` only reads.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|scope| {
            matches!(
                (scope, needed),
                (Scope::Admin, _)
                    | (Scope::Pos, Scope::Pos | Scope::Read)
                    | (Scope::Read, Scope::Read)
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it; the key itself is never shown again.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: String,
    /// The secret key, shown only in this response.
    pub key: String,
    pub name: String,
    pub scopes: Vec<Scope>,
}

/// A fresh random key: 32 bytes of OS randomness, hex, with a recognisable prefix.
pub fn generate_key() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("lk_{}", hex::encode(bytes))
}

/// Keys are stored only as SHA-256 digests: they are 256-bit random, so a slow hash adds nothing.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn validate_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    if name.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if name.chars().count() > NAME_LENGTH_MAX {
        errors.push(FieldError::new(
            field,
            format!("must be at most {NAME_LENGTH_MAX} characters"),
        ));
    }
}

fn validate_timezone(timezone: &str) -> bool {
    !timezone.is_empty()
        && timezone.len() <= 64
        && timezone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

pub async fn create_merchant(
    db: &Database,
    input: &NewMerchant,
    now: i64,
) -> Result<(Merchant, CreatedApiKey), CoreError> {
    let mut errors = Vec::new();
    validate_name("name", &input.name, &mut errors);
    let exponent = currency_exponent(&input.currency);
    if exponent.is_none() {
        errors.push(FieldError::new(
            "currency",
            "must be a supported ISO 4217 code such as \"CNY\"",
        ));
    }
    let timezone = input.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    if !validate_timezone(&timezone) {
        errors.push(FieldError::new(
            "timezone",
            "must be an IANA time zone such as \"Asia/Shanghai\"",
        ));
    }
    let region = input
        .default_region
        .clone()
        .unwrap_or_else(|| default_region_for_currency(&input.currency).to_string());
    if region.parse::<phonenumber::country::Id>().is_err() {
        errors.push(FieldError::new(
            "default_region",
            "must be an ISO 3166 alpha-2 region such as \"CN\"",
        ));
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let merchant = Merchant {
        id: new_id("mer"),
        name: input.name.trim().to_string(),
        currency: input.currency.clone(),
        currency_exponent: exponent.expect("validated above"),
        timezone,
        default_region: region,
        settings: MerchantSettings::default(),
        created_at: now,
    };
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO merchants (merchant_id, name, currency, currency_exponent, timezone, \
         default_region, settings, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&merchant.id)
    .bind(&merchant.name)
    .bind(&merchant.currency)
    .bind(i64::from(merchant.currency_exponent))
    .bind(&merchant.timezone)
    .bind(&merchant.default_region)
    .bind(serde_json::to_string(&merchant.settings).expect("settings serialize"))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for (kind, asset) in MERCHANT_ACCOUNTS {
        let asset = asset.resolve(&merchant.currency);
        sqlx::query(
            "INSERT INTO accounts (merchant_id, id, member_id, asset, kind, balance, version, created_at) \
             VALUES ($1, $2, NULL, $3, $4, 0, 0, $5)",
        )
        .bind(&merchant.id)
        .bind(merchant_account_id(kind))
        .bind(asset)
        .bind(*kind)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let key = insert_api_key(
        &mut tx,
        &merchant.id,
        "initial admin key",
        &[Scope::Admin],
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((merchant, key))
}

async fn insert_api_key(
    connection: &mut sqlx::AnyConnection,
    merchant_id: &str,
    name: &str,
    scopes: &[Scope],
    now: i64,
) -> Result<CreatedApiKey, CoreError> {
    let key = generate_key();
    let id = new_id("key");
    let scopes_text = scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(",");
    sqlx::query(
        "INSERT INTO api_keys (merchant_id, id, name, key_hash, key_prefix, scopes, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
    )
    .bind(merchant_id)
    .bind(&id)
    .bind(name)
    .bind(hash_key(&key))
    .bind(&key[..10])
    .bind(scopes_text)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(CreatedApiKey {
        id,
        key,
        name: name.to_string(),
        scopes: scopes.to_vec(),
    })
}

const MERCHANT_COLUMNS: &str = "m.merchant_id, m.name, m.currency, m.currency_exponent, \
     m.timezone, m.default_region, m.settings, m.created_at";

fn merchant_from_row(row: &sqlx::any::AnyRow) -> Result<Merchant, CoreError> {
    let settings: String = row.try_get("settings")?;
    Ok(Merchant {
        id: row.try_get("merchant_id")?,
        name: row.try_get("name")?,
        currency: row.try_get("currency")?,
        currency_exponent: u32::try_from(row.try_get::<i64, _>("currency_exponent")?)
            .map_err(|_| CoreError::Internal("bad currency exponent".into()))?,
        timezone: row.try_get("timezone")?,
        default_region: row.try_get("default_region")?,
        settings: serde_json::from_str(&settings)
            .map_err(|error| CoreError::Internal(format!("stored settings unreadable: {error}")))?,
        created_at: row.try_get("created_at")?,
    })
}

/// Finds the merchant and scopes of an API key by its digest ([`hash_key`]); None for an
/// unknown or revoked key.
pub async fn authenticate(pool: &AnyPool, key_hash: &str) -> Result<Option<Principal>, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT k.id AS key_id, k.scopes, {MERCHANT_COLUMNS} FROM api_keys k \
         JOIN merchants m ON m.merchant_id = k.merchant_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
    ))
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let scopes_text: String = row.try_get("scopes")?;
    Ok(Some(Principal {
        key_id: row.try_get("key_id")?,
        scopes: scopes_text.split(',').filter_map(Scope::parse).collect(),
        merchant: merchant_from_row(&row)?,
    }))
}

pub async fn get_merchant(pool: &AnyPool, merchant_id: &str) -> Result<Merchant, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {MERCHANT_COLUMNS} FROM merchants m WHERE m.merchant_id = $1"
    ))
    .bind(merchant_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("merchant"))?;
    merchant_from_row(&row)
}

pub async fn update_merchant(
    pool: &AnyPool,
    merchant: &Merchant,
    name: Option<&str>,
    settings: &MerchantSettings,
) -> Result<(), CoreError> {
    let name = name.unwrap_or(&merchant.name);
    sqlx::query("UPDATE merchants SET name = $2, settings = $3 WHERE merchant_id = $1")
        .bind(&merchant.id)
        .bind(name.trim())
        .bind(serde_json::to_string(settings).expect("settings serialize"))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn create_api_key(
    pool: &AnyPool,
    merchant_id: &str,
    name: &str,
    scopes: &[Scope],
    now: i64,
) -> Result<CreatedApiKey, CoreError> {
    let mut errors = Vec::new();
    validate_name("name", name, &mut errors);
    if scopes.is_empty() {
        errors.push(FieldError::new("scopes", "must name at least one scope"));
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE merchant_id = $1")
        .bind(merchant_id)
        .fetch_one(pool)
        .await?;
    if count >= API_KEYS_PER_MERCHANT_MAX {
        return Err(CoreError::Unprocessable(format!(
            "a merchant may hold at most {API_KEYS_PER_MERCHANT_MAX} keys"
        )));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort_by_key(|scope| scope.as_str());
    scopes.dedup();
    let mut connection = pool.acquire().await?;
    insert_api_key(&mut connection, merchant_id, name.trim(), &scopes, now).await
}

pub async fn list_api_keys(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<ApiKeyView>, CoreError> {
    let rows = sqlx::query(
        "SELECT id, name, key_prefix, scopes, created_at, revoked_at FROM api_keys \
         WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(api_key_from_row).collect()
}

fn api_key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyView, CoreError> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKeyView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("key_prefix")?,
        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
        created_at: from_unix_micros(row.try_get("created_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_unix_micros),
    })
}

/// Revokes a key of this merchant. Revoking twice is not an error; the first time stays.
pub async fn revoke_api_key(
    pool: &AnyPool,
    merchant_id: &str,
    key_id: &str,
    now: i64,
) -> Result<ApiKeyView, CoreError> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 WHERE merchant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(merchant_id)
    .bind(key_id)
    .bind(now)
    .execute(pool)
    .await?;
    let row = sqlx::query(
        "SELECT id, name, key_prefix, scopes, created_at, revoked_at FROM api_keys \
         WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(key_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("api key"))?;
    api_key_from_row(&row)
}

/// The merchant with this exact name, if there is one (the oldest if several).
pub async fn merchant_by_name(pool: &AnyPool, name: &str) -> Result<Option<Merchant>, CoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT merchant_id FROM merchants WHERE name = $1 ORDER BY created_at, merchant_id LIMIT 1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match id {
        Some(id) => Ok(Some(get_merchant(pool, &id).await?)),
        None => Ok(None),
    }
}

/// Replaces the merchant's keys named `name` by one new key with `scopes` (a tool's own key,
/// made afresh on every run because a key is shown only once).
pub async fn rotate_named_key(
    pool: &AnyPool,
    merchant_id: &str,
    name: &str,
    scopes: &[Scope],
    now: i64,
) -> Result<CreatedApiKey, CoreError> {
    let mut transaction = pool.begin().await?;
    sqlx::query("DELETE FROM api_keys WHERE merchant_id = $1 AND name = $2")
        .bind(merchant_id)
        .bind(name)
        .execute(&mut *transaction)
        .await?;
    let key = insert_api_key(&mut transaction, merchant_id, name, scopes, now).await?;
    transaction.commit().await?;
    Ok(key)
}

/// The member who spent the most, with the store of their latest purchase.
pub async fn top_spender(
    pool: &AnyPool,
    merchant_id: &str,
) -> Result<Option<(String, String)>, CoreError> {
    Ok(sqlx::query_as(
        "SELECT m.id, (SELECT p.store_id FROM purchases p WHERE p.merchant_id = m.merchant_id \
           AND p.member_id = m.id ORDER BY p.occurred_at DESC LIMIT 1) AS store_id \
         FROM members m WHERE m.merchant_id = $1 AND m.orders_count > 0 \
         ORDER BY m.lifetime_spend DESC, m.id LIMIT 1",
    )
    .bind(merchant_id)
    .fetch_optional(pool)
    .await?)
}
