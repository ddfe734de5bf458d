//! Members: identity (phone in E.164, e-mail, external id, each unique per merchant),
//! profile, attributes, tier and purchase statistics.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::ledger::{member_account_id, MEMBER_ACCOUNTS};
use crate::merchants::Merchant;
use crate::money::format_money;
use crate::session::{self, Session};
use crate::settings::double_option;
use crate::stores::conflict_on;

pub const ATTRIBUTES_BYTES_MAX: usize = 16 * 1024;
pub const ATTRIBUTES_KEYS_MAX: usize = 64;
pub const EMAIL_LENGTH_MAX: usize = 254;
pub const EXTERNAL_ID_LENGTH_MAX: usize = 128;
/// Attribute keys the host adds to the member snapshot plugins see (`$tier`); members'
/// own attributes may not use them.
pub const RESERVED_ATTRIBUTE_PREFIX: &str = "$";
/// The snapshot attribute carrying the member's tier definition: `{code, name, rank,
/// earn_multiplier}` (the multiplier as a decimal string).
pub const TIER_ATTRIBUTE: &str = "$tier";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Any common notation; stored in E.164, read with the merchant's default region.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// ISO date, YYYY-MM-DD.
    pub birthday: Option<String>,
    /// The merchant's own id for the member (CRM, e-shop customer id).
    pub external_id: Option<String>,
    /// Free-form JSON object (at most 64 keys, 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub birthday: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Replaces the whole attributes object.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub birthday: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// The member's tier code: the merchant's lowest tier on joining (null while the merchant
    /// has none), then whatever the tier policy or an admin decides.
    pub tier: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub joined_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: time::OffsetDateTime,
    pub stats: MemberStats,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberStats {
    /// Purchases less refunds, all time.
    pub lifetime_spend: String,
    pub orders_count: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_purchase_at: Option<time::OffsetDateTime>,
}

struct Identity {
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
    birthday: Option<String>,
    external_id: Option<String>,
    attributes: serde_json::Value,
}

/// E.164 form of a phone number read with the merchant's default region.
pub fn normalize_phone(text: &str, region: &str) -> Result<String, FieldError> {
    let region: phonenumber::country::Id = region
        .parse()
        .map_err(|_| FieldError::new("phone", "the merchant's default region is not valid"))?;
    let number = phonenumber::parse(Some(region), text)
        .map_err(|_| FieldError::new("phone", "is not a phone number"))?;
    if !phonenumber::is_valid(&number) {
        return Err(FieldError::new("phone", "is not a valid phone number"));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn validate_email(email: &str) -> Result<String, FieldError> {
    let email = email.trim();
    let valid = email.len() <= EMAIL_LENGTH_MAX
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email.to_lowercase())
    } else {
        Err(FieldError::new("email", "is not an e-mail address"))
    }
}

fn validate_birthday(birthday: &str) -> Result<String, FieldError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(birthday, format)
        .map(|_| birthday.to_string())
        .map_err(|_| FieldError::new("birthday", "must be a date YYYY-MM-DD"))
}

fn validate_attributes(attributes: &serde_json::Value) -> Result<(), FieldError> {
    let Some(object) = attributes.as_object() else {
        return Err(FieldError::new("attributes", "must be a JSON object"));
    };
    if let Some(key) = object
        .keys()
        .find(|key| key.starts_with(RESERVED_ATTRIBUTE_PREFIX))
    {
        return Err(FieldError::new(
            "attributes",
            format!("keys starting with '{RESERVED_ATTRIBUTE_PREFIX}' are the host's ({key})"),
        ));
    }
    if object.len() > ATTRIBUTES_KEYS_MAX {
        return Err(FieldError::new(
            "attributes",
            format!("at most {ATTRIBUTES_KEYS_MAX} keys"),
        ));
    }
    if attributes.to_string().len() > ATTRIBUTES_BYTES_MAX {
        return Err(FieldError::new(
            "attributes",
            format!("at most {ATTRIBUTES_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

fn validate_identity(
    merchant: &Merchant,
    phone: Option<&str>,
    email: Option<&str>,
    name: Option<&str>,
    birthday: Option<&str>,
    external_id: Option<&str>,
    attributes: Option<&serde_json::Value>,
) -> Result<Identity, CoreError> {
    let mut errors = Vec::new();
    let phone = phone.and_then(
        |phone| match normalize_phone(phone, &merchant.default_region) {
            Ok(phone) => Some(phone),
            Err(error) => {
                errors.push(error);
                None
            }
        },
    );
    let email = email.and_then(|email| match validate_email(email) {
        Ok(email) => Some(email),
        Err(error) => {
            errors.push(error);
            None
        }
    });
    let birthday = birthday.and_then(|birthday| match validate_birthday(birthday) {
        Ok(birthday) => Some(birthday),
        Err(error) => {
            errors.push(error);
            None
        }
    });
    if let Some(name) = name {
        if name.chars().count() > crate::merchants::NAME_LENGTH_MAX {
            errors.push(FieldError::new("name", "is too long"));
        }
    }
    if let Some(external_id) = external_id {
        if external_id.is_empty() || external_id.len() > EXTERNAL_ID_LENGTH_MAX {
            errors.push(FieldError::new(
                "external_id",
                format!("must be 1 to {EXTERNAL_ID_LENGTH_MAX} characters"),
            ));
        }
    }
    let attributes = attributes.cloned().unwrap_or_else(|| serde_json::json!({}));
    if let Err(error) = validate_attributes(&attributes) {
        errors.push(error);
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    Ok(Identity {
        phone,
        email,
        name: name.map(|name| name.trim().to_string()),
        birthday,
        external_id: external_id.map(str::to_string),
        attributes,
    })
}

fn map_identity_conflict(error: CoreError) -> CoreError {
    let error = conflict_on(
        error,
        "members_phone",
        "phone",
        "another member has this phone",
    );
    let error = conflict_on(
        error,
        "members_email",
        "email",
        "another member has this email",
    );
    conflict_on(
        error,
        "members_external_id",
        "external_id",
        "another member has this external_id",
    )
}

pub async fn create_member(
    pool: &AnyPool,
    merchant: &Merchant,
    input: &NewMember,
    now: i64,
) -> Result<Member, CoreError> {
    let mut tx = pool.begin().await?;
    let member = enrol_on(
        &mut Session::Pooled(&mut tx),
        merchant,
        &new_id("mem"),
        input,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(member)
}

/// Enrols a member as `id` on the writer's connection (or a transaction) and reads it back
/// there. Through the
/// writer, an enrolment joins the purchases' group commit instead of waiting for SQLite's
/// write lock between their transactions (measured under the ledger benchmark's load: 220 ms
/// an enrolment on average, 6.1 s at worst, when enrolments took the lock themselves).
pub async fn enrol_on(
    connection: &mut Session<'_>,
    merchant: &Merchant,
    id: &str,
    input: &NewMember,
    now: i64,
) -> Result<Member, CoreError> {
    insert_member(&mut *connection, merchant, id, input, now).await?;
    get_member(&mut *connection, merchant, id).await
}

/// Enrols several members in one transaction (a bulk import: one durable commit instead of
/// one per member), each validated and written exactly as [`create_member`] does, joined at
/// its own time. The first failure (a duplicate phone, email or external_id: a 409) undoes
/// them all. Returns their ids, in order.
pub async fn create_members(
    pool: &AnyPool,
    merchant: &Merchant,
    inputs: &[(NewMember, i64)],
) -> Result<Vec<String>, CoreError> {
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(inputs.len());
    for (input, now) in inputs {
        let id = new_id("mem");
        insert_member(&mut Session::Pooled(&mut tx), merchant, &id, input, *now).await?;
        ids.push(id);
    }
    tx.commit().await?;
    Ok(ids)
}

/// Validates and inserts a member with its accounts as `id`.
async fn insert_member(
    connection: &mut Session<'_>,
    merchant: &Merchant,
    id: &str,
    input: &NewMember,
    now: i64,
) -> Result<(), CoreError> {
    if input.phone.is_none() && input.email.is_none() && input.external_id.is_none() {
        return Err(CoreError::field(
            "phone",
            "give at least one of phone, email or external_id",
        ));
    }
    let identity = validate_identity(
        merchant,
        input.phone.as_deref(),
        input.email.as_deref(),
        input.name.as_deref(),
        input.birthday.as_deref(),
        input.external_id.as_deref(),
        input.attributes.as_ref(),
    )?;
    session::query(
        "INSERT INTO members (merchant_id, id, phone, email, name, birthday, external_id, \
         attributes, tier, joined_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
         (SELECT code FROM tiers WHERE merchant_id = $1 ORDER BY tier_rank LIMIT 1), $9, $9)",
    )
    .bind(&merchant.id)
    .bind(id)
    .bind(&identity.phone)
    .bind(&identity.email)
    .bind(&identity.name)
    .bind(&identity.birthday)
    .bind(&identity.external_id)
    .bind(identity.attributes.to_string())
    .bind(now)
    .execute(&mut *connection)
    .await
    .map_err(map_identity_conflict)?;
    crate::events::insert_event(
        &mut *connection,
        &merchant.id,
        crate::events::NewEvent::member(
            crate::events::MEMBER_JOINED,
            id,
            serde_json::json!({"member_id": id, "joined_at": crate::db::format_micros(now)}),
        ),
        now,
    )
    .await?;
    let mut sql = String::from(
        "INSERT INTO accounts (merchant_id, id, member_id, asset, kind, balance, version, created_at) VALUES ",
    );
    for (index, _) in MEMBER_ACCOUNTS.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        let base = 4 + index * 3;
        sql.push_str(&format!(
            "($1, ${}, $2, ${}, ${}, 0, 0, $3)",
            base,
            base + 1,
            base + 2
        ));
    }
    let mut query = session::query(&sql).bind(&merchant.id).bind(id).bind(now);
    for (kind, asset) in MEMBER_ACCOUNTS {
        query = query
            .bind(member_account_id(id, kind))
            .bind(asset.resolve(&merchant.currency).to_string())
            .bind(*kind);
    }
    query.execute(&mut *connection).await?;
    Ok(())
}

const MEMBER_COLUMNS: &str = "id, phone, email, name, birthday, external_id, attributes, tier, \
     joined_at, updated_at, lifetime_spend, orders_count, last_purchase_at";

fn member_from_row(row: &session::Row, exponent: u32) -> Result<Member, CoreError> {
    let attributes: String = row.try_get("attributes")?;
    Ok(Member {
        id: row.try_get("id")?,
        phone: row.try_get("phone")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        birthday: row.try_get("birthday")?,
        external_id: row.try_get("external_id")?,
        attributes: serde_json::from_str(&attributes).map_err(|error| {
            CoreError::Internal(format!("stored attributes unreadable: {error}"))
        })?,
        tier: row.try_get("tier")?,
        joined_at: from_unix_micros(row.try_get("joined_at")?),
        updated_at: from_unix_micros(row.try_get("updated_at")?),
        stats: MemberStats {
            lifetime_spend: format_money(row.try_get("lifetime_spend")?, exponent),
            orders_count: row.try_get("orders_count")?,
            last_purchase_at: row
                .try_get::<Option<i64>, _>("last_purchase_at")?
                .map(from_unix_micros),
        },
    })
}

/// A member of the merchant, read on any executor (the pool, the writer's connection, a
/// transaction); a foreign merchant's member is not found.
pub async fn get_member(
    connection: &mut Session<'_>,
    merchant: &Merchant,
    id: &str,
) -> Result<Member, CoreError> {
    let row = session::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(&merchant.id)
    .bind(id)
    .fetch_optional(connection)
    .await?
    .ok_or(CoreError::NotFound("member"))?;
    member_from_row(&row, merchant.currency_exponent)
}

/// Whether the merchant has this member, read on any executor (the pool, the writer's
/// connection, a transaction).
pub async fn member_exists(
    connection: &mut Session<'_>,
    merchant_id: &str,
    id: &str,
) -> Result<bool, CoreError> {
    let found: Option<String> =
        session::query_scalar("SELECT id FROM members WHERE merchant_id = $1 AND id = $2")
            .bind(merchant_id)
            .bind(id)
            .fetch_optional(connection)
            .await?;
    Ok(found.is_some())
}

/// Changes a member's profile on the writer's connection (so, like an enrolment, it joins the
/// group commit instead of waiting for SQLite's write lock) and reads it back there.
pub async fn update_member_on(
    connection: &mut Session<'_>,
    merchant: &Merchant,
    id: &str,
    patch: &MemberPatch,
    now: i64,
) -> Result<Member, CoreError> {
    let current = get_member(&mut *connection, merchant, id).await?;
    let pick = |patched: &Option<Option<String>>, current: &Option<String>| match patched {
        Some(value) => value.clone(),
        None => current.clone(),
    };
    let phone = pick(&patch.phone, &current.phone);
    let email = pick(&patch.email, &current.email);
    let external_id = pick(&patch.external_id, &current.external_id);
    if phone.is_none() && email.is_none() && external_id.is_none() {
        return Err(CoreError::field(
            "phone",
            "a member keeps at least one of phone, email or external_id",
        ));
    }
    // Only fields the patch names are validated again, so an old stored value never blocks.
    let identity = validate_identity(
        merchant,
        patch.phone.as_ref().and_then(|value| value.as_deref()),
        patch.email.as_ref().and_then(|value| value.as_deref()),
        patch.name.as_ref().and_then(|value| value.as_deref()),
        patch.birthday.as_ref().and_then(|value| value.as_deref()),
        patch
            .external_id
            .as_ref()
            .and_then(|value| value.as_deref()),
        patch.attributes.as_ref(),
    )?;
    let chosen =
        |patched: &Option<Option<String>>, validated: Option<String>, current: Option<String>| {
            match patched {
                Some(Some(_)) => validated,
                Some(None) => None,
                None => current,
            }
        };
    let phone = chosen(&patch.phone, identity.phone, current.phone);
    let email = chosen(&patch.email, identity.email, current.email);
    let name = chosen(&patch.name, identity.name, current.name);
    let birthday = chosen(&patch.birthday, identity.birthday, current.birthday);
    let external_id = chosen(
        &patch.external_id,
        identity.external_id,
        current.external_id,
    );
    let attributes = match &patch.attributes {
        Some(_) => identity.attributes,
        None => current.attributes,
    };
    session::query(
        "UPDATE members SET phone = $3, email = $4, name = $5, birthday = $6, external_id = $7, \
         attributes = $8, updated_at = $9 WHERE merchant_id = $1 AND id = $2",
    )
    .bind(&merchant.id)
    .bind(id)
    .bind(&phone)
    .bind(&email)
    .bind(&name)
    .bind(&birthday)
    .bind(&external_id)
    .bind(attributes.to_string())
    .bind(now)
    .execute(&mut *connection)
    .await
    .map_err(map_identity_conflict)?;
    get_member(&mut *connection, merchant, id).await
}

#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

pub async fn list_members(
    pool: &AnyPool,
    merchant: &Merchant,
    filter: &MemberFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Member>, CoreError> {
    let phone = match &filter.phone {
        Some(phone) => match normalize_phone(phone, &merchant.default_region) {
            Ok(phone) => Some(phone),
            // A string that is no phone number matches no member.
            Err(_) => return Ok(Vec::new()),
        },
        None => None,
    };
    let email = filter
        .email
        .as_ref()
        .map(|email| email.trim().to_lowercase());
    // Only the filters given become conditions, each a plain equality: a lookup by phone,
    // email or external id then goes through that column's unique index (a partial index,
    // usable only where the query names the column), instead of walking the merchant's
    // members in id order and testing each.
    let mut conditions = String::new();
    let mut values: Vec<String> = Vec::new();
    for (column, value) in [
        ("phone", phone),
        ("email", email),
        ("external_id", filter.external_id.clone()),
    ] {
        if let Some(value) = value {
            values.push(value);
            conditions.push_str(&format!(" AND {column} = ${}", 2 + values.len()));
        }
    }
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE merchant_id = $1 AND id > $2{conditions} \
         ORDER BY id LIMIT ${}",
        3 + values.len()
    );
    let mut query = sqlx::query(&sql)
        .bind(&merchant.id)
        .bind(cursor.unwrap_or(""));
    for value in values {
        query = query.bind(value);
    }
    let rows = query.bind(limit).fetch_all(pool).await?;
    rows.into_iter()
        .map(|row| member_from_row(&session::Row::Pooled(row), merchant.currency_exponent))
        .collect()
}

/// Days that count as "the last 12 months" in member stats.
pub const SPEND_WINDOW_DAYS: i64 = 365;

/// What the host tells a plugin about a member: identity, tier and the aggregates, read at
/// one moment (plugins decide on it; the writer re-checks balances when it writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub id: String,
    pub tier: Option<String>,
    pub joined_at: i64,
    /// (year, month, day)
    pub birthday: Option<(i32, u8, u8)>,
    /// JSON object text.
    pub attributes: String,
    pub lifetime_spend: i64,
    pub spend_12_months: i64,
    pub orders_count: i64,
    pub last_purchase_at: Option<i64>,
    /// Spendable points (zero while the member is in debt).
    pub points_available: i64,
}

pub async fn snapshot(
    pool: &AnyPool,
    merchant_id: &str,
    member_id: &str,
    now: i64,
) -> Result<MemberSnapshot, CoreError> {
    let window_start = now - SPEND_WINDOW_DAYS * 86_400_000_000;
    let row = sqlx::query(
        "SELECT m.tier, m.joined_at, m.birthday, m.attributes, m.lifetime_spend, m.orders_count, \
         m.last_purchase_at, t.name AS tier_name, t.tier_rank, t.earn_multiplier, \
         (SELECT CAST(COALESCE(SUM(p.total - p.refunded), 0) AS BIGINT) FROM purchases p \
          WHERE p.merchant_id = m.merchant_id AND p.member_id = m.id AND p.occurred_at >= $3) \
          AS spend_12_months, \
         (SELECT CAST(COALESCE(SUM(a.balance), 0) AS BIGINT) FROM accounts a \
          WHERE a.merchant_id = m.merchant_id AND a.id = $4) AS points \
         FROM members m LEFT JOIN tiers t ON t.merchant_id = m.merchant_id AND t.code = m.tier \
         WHERE m.merchant_id = $1 AND m.id = $2",
    )
    .bind(merchant_id)
    .bind(member_id)
    .bind(window_start)
    .bind(crate::ledger::member_account_id(member_id, "points"))
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("member"))?;
    let birthday = row
        .try_get::<Option<String>, _>("birthday")?
        .and_then(|text| {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(&text, format).ok()
        })
        .map(|date| (date.year(), u8::from(date.month()), date.day()));
    let tier: Option<String> = row.try_get("tier")?;
    let mut attributes: String = row.try_get("attributes")?;
    let tier_name: Option<String> = row.try_get("tier_name")?;
    if let (Some(code), Some(name)) = (&tier, tier_name) {
        // The tier's definition rides in the attributes (the frozen WIT's member record has
        // only the code), under a key members' own attributes cannot use.
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&attributes).unwrap_or_default();
        object.insert(
            TIER_ATTRIBUTE.to_string(),
            serde_json::json!({
                "code": code,
                "name": name,
                "rank": row.try_get::<i64, _>("tier_rank")?,
                "earn_multiplier": row.try_get::<String, _>("earn_multiplier")?,
            }),
        );
        attributes = serde_json::Value::Object(object).to_string();
    }
    Ok(MemberSnapshot {
        id: member_id.to_string(),
        tier,
        joined_at: row.try_get("joined_at")?,
        birthday,
        attributes,
        lifetime_spend: row.try_get("lifetime_spend")?,
        spend_12_months: row.try_get("spend_12_months")?,
        orders_count: row.try_get("orders_count")?,
        last_purchase_at: row.try_get("last_purchase_at")?,
        points_available: row.try_get::<i64, _>("points")?.max(0),
    })
}
