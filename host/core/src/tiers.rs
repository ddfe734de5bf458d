//! Tiers: the merchant's ranked tier definitions, members' tier changes (written by the
//! writer, with history, provenance and a `tier.changed` event) and the history's reads.
//! Who decides a change (a tier-policy plugin, an admin) is the server's business.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id, Script};
use crate::error::{CoreError, FieldError};
use crate::events::{queue_event, NewEvent, TIER_CHANGED};
use crate::operations::Outcome;
use crate::session::Session;

pub const TIERS_MAX: usize = 20;
pub const TIER_CODE_LENGTH_MAX: usize = 32;
pub const TIER_NAME_LENGTH_MAX: usize = 100;
pub const TIER_BENEFITS_LENGTH_MAX: usize = 2_000;
pub const TIER_ATTRIBUTES_BYTES_MAX: usize = 4 * 1024;
pub const EARN_MULTIPLIER_MAX: i64 = 100;
pub const TIER_REASON_LENGTH_MAX: usize = 500;

/// One tier as the merchant defines it (`PUT /v1/tiers` takes them lowest first).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    /// Lower-case letters, digits, `-` and `_`; unique in the list.
    pub code: String,
    pub name: String,
    /// What the tier gives, as members read it.
    #[serde(default)]
    pub benefits: String,
    /// Decimal string (default "1"): earn plugins read it from the member snapshot and
    /// multiply their points by it.
    pub earn_multiplier: Option<String>,
    /// The tier's own settings for tier policies (thresholds …), a JSON object.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TiersInput {
    /// Lowest tier first; a tier's rank is its position (0 is the lowest).
    pub tiers: Vec<TierInput>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Tier {
    pub code: String,
    pub name: String,
    /// 0 is the lowest tier.
    pub rank: i64,
    pub benefits: String,
    /// Decimal string.
    #[schema(value_type = String)]
    pub earn_multiplier: Decimal,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierList {
    pub tiers: Vec<Tier>,
}

fn validate_tiers(input: &TiersInput) -> Result<Vec<Tier>, CoreError> {
    let mut errors = Vec::new();
    if input.tiers.len() > TIERS_MAX {
        errors.push(FieldError::new(
            "tiers",
            format!("at most {TIERS_MAX} tiers"),
        ));
    }
    let mut tiers = Vec::with_capacity(input.tiers.len());
    for (index, tier) in input.tiers.iter().enumerate().take(TIERS_MAX) {
        let field = |name: &str| format!("tiers[{index}].{name}");
        let code_ok = !tier.code.is_empty()
            && tier.code.len() <= TIER_CODE_LENGTH_MAX
            && tier.code.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
            });
        if !code_ok {
            errors.push(FieldError::new(
                field("code"),
                format!("1 to {TIER_CODE_LENGTH_MAX} of a-z, 0-9, '-' and '_'"),
            ));
        } else if input.tiers[..index]
            .iter()
            .any(|earlier| earlier.code == tier.code)
        {
            errors.push(FieldError::new(field("code"), "appears twice"));
        }
        if tier.name.trim().is_empty() || tier.name.chars().count() > TIER_NAME_LENGTH_MAX {
            errors.push(FieldError::new(
                field("name"),
                format!("1 to {TIER_NAME_LENGTH_MAX} characters"),
            ));
        }
        if tier.benefits.chars().count() > TIER_BENEFITS_LENGTH_MAX {
            errors.push(FieldError::new(
                field("benefits"),
                format!("at most {TIER_BENEFITS_LENGTH_MAX} characters"),
            ));
        }
        let multiplier = match tier.earn_multiplier.as_deref() {
            None => Decimal::ONE,
            Some(text) => match text.parse::<Decimal>() {
                Ok(value)
                    if !value.is_sign_negative()
                        && value <= Decimal::from(EARN_MULTIPLIER_MAX)
                        && value.scale() <= 4 =>
                {
                    value.normalize()
                }
                _ => {
                    errors.push(FieldError::new(
                        field("earn_multiplier"),
                        format!(
                            "a decimal string from 0 to {EARN_MULTIPLIER_MAX} with at most 4 decimals"
                        ),
                    ));
                    Decimal::ONE
                }
            },
        };
        let attributes = tier
            .attributes
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        if !attributes.is_object() {
            errors.push(FieldError::new(
                field("attributes"),
                "must be a JSON object",
            ));
        } else if attributes.to_string().len() > TIER_ATTRIBUTES_BYTES_MAX {
            errors.push(FieldError::new(
                field("attributes"),
                format!("at most {TIER_ATTRIBUTES_BYTES_MAX} bytes"),
            ));
        }
        tiers.push(Tier {
            code: tier.code.clone(),
            name: tier.name.trim().to_string(),
            rank: i64::try_from(index).expect("at most TIERS_MAX tiers"),
            benefits: tier.benefits.clone(),
            earn_multiplier: multiplier,
            attributes,
        });
    }
    if errors.is_empty() {
        Ok(tiers)
    } else {
        Err(CoreError::Validation(errors))
    }
}

/// Replaces the merchant's tiers. A tier members still hold cannot be removed (409): move
/// them first. Members keep their tier codes; ranks follow the new order.
pub async fn put_tiers(
    pool: &AnyPool,
    merchant_id: &str,
    input: &TiersInput,
    now: i64,
) -> Result<Vec<Tier>, CoreError> {
    let tiers = validate_tiers(input)?;
    let mut transaction = pool.begin().await?;
    let held: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tier, CAST(COUNT(*) AS BIGINT) FROM members \
         WHERE merchant_id = $1 AND tier IS NOT NULL GROUP BY tier ORDER BY tier",
    )
    .bind(merchant_id)
    .fetch_all(&mut *transaction)
    .await?;
    let dropped: Vec<String> = held
        .iter()
        .filter(|(code, _)| !tiers.iter().any(|tier| &tier.code == code))
        .map(|(code, count)| format!("{code} ({count} members)"))
        .collect();
    if !dropped.is_empty() {
        return Err(CoreError::Conflict(format!(
            "members still hold tiers the new list drops: {}",
            dropped.join(", ")
        )));
    }
    sqlx::query("DELETE FROM tiers WHERE merchant_id = $1")
        .bind(merchant_id)
        .execute(&mut *transaction)
        .await?;
    for tier in &tiers {
        sqlx::query(
            "INSERT INTO tiers (merchant_id, code, tier_rank, name, benefits, earn_multiplier, \
             attributes, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(merchant_id)
        .bind(&tier.code)
        .bind(tier.rank)
        .bind(&tier.name)
        .bind(&tier.benefits)
        .bind(tier.earn_multiplier.to_string())
        .bind(tier.attributes.to_string())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(tiers)
}

/// The merchant's tiers, lowest first.
pub async fn list_tiers(pool: &AnyPool, merchant_id: &str) -> Result<Vec<Tier>, CoreError> {
    let rows = sqlx::query(
        "SELECT code, tier_rank, name, benefits, earn_multiplier, attributes FROM tiers \
         WHERE merchant_id = $1 ORDER BY tier_rank",
    )
    .bind(merchant_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let multiplier: String = row.try_get("earn_multiplier")?;
            let attributes: String = row.try_get("attributes")?;
            Ok(Tier {
                code: row.try_get("code")?,
                rank: row.try_get("tier_rank")?,
                name: row.try_get("name")?,
                benefits: row.try_get("benefits")?,
                earn_multiplier: multiplier
                    .parse()
                    .map_err(|_| CoreError::Internal("a stored multiplier".into()))?,
                attributes: serde_json::from_str(&attributes)
                    .map_err(|_| CoreError::Internal("stored tier attributes".into()))?,
            })
        })
        .collect()
}

/// What started a tier change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierSource {
    Purchase,
    Refund,
    DailyTick,
    Admin,
}

impl TierSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TierSource::Purchase => "purchase",
            TierSource::Refund => "refund",
            TierSource::DailyTick => "daily_tick",
            TierSource::Admin => "admin",
        }
    }
}

/// A decided tier change for the writer. It applies only if the member's tier is still
/// `expected_from` (what the decision saw); otherwise another change won and this one is moot.
#[derive(Debug, Clone)]
pub struct TierChangeCommand {
    pub member_id: String,
    pub expected_from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub source: TierSource,
    /// JSON: the deciding plugin (id, name, version, sha256, input digest), or the admin key.
    pub provenance: Option<serde_json::Value>,
}

/// The writer's answer to a tier change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TierChangeOutcome {
    /// False when the member's tier was no longer the one the decision saw.
    pub changed: bool,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The history entry, when changed.
    pub history_id: Option<String>,
}

/// Runs in the writer's transaction: the conditional update takes the member's row lock.
pub async fn change_tier(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    command: &TierChangeCommand,
    now: i64,
) -> Result<Outcome, CoreError> {
    let rows = script
        .fetch_after(
            connection,
            "UPDATE members SET tier = $3, version = version + 1, updated_at = $5 \
             WHERE merchant_id = $1 AND id = $2 AND tier IS NOT DISTINCT FROM $4 RETURNING id",
            vec![
                merchant_id.into(),
                (&command.member_id).into(),
                (&command.to).into(),
                (&command.expected_from).into(),
                now.into(),
            ],
        )
        .await?;
    let outcome = if rows.is_empty() {
        if !crate::members::member_exists(&mut *connection, merchant_id, &command.member_id).await?
        {
            return Err(CoreError::NotFound("member"));
        }
        TierChangeOutcome {
            changed: false,
            from: command.expected_from.clone(),
            to: command.to.clone(),
            history_id: None,
        }
    } else {
        let history_id = new_id("tch");
        let provenance = command.provenance.as_ref().map(|value| value.to_string());
        script.push(
            "INSERT INTO tier_history (merchant_id, id, member_id, from_tier, to_tier, reason, \
             source, provenance, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                merchant_id.into(),
                (&history_id).into(),
                (&command.member_id).into(),
                (&command.expected_from).into(),
                (&command.to).into(),
                (&command.reason).into(),
                command.source.as_str().into(),
                provenance.into(),
                now.into(),
            ],
        );
        queue_event(
            script,
            merchant_id,
            NewEvent::member(
                TIER_CHANGED,
                &command.member_id,
                serde_json::json!({
                    "member_id": command.member_id,
                    "from": command.expected_from,
                    "to": command.to,
                    "reason": command.reason,
                    "source": command.source.as_str(),
                    "history_id": history_id,
                }),
            ),
            now,
        );
        TierChangeOutcome {
            changed: true,
            from: command.expected_from.clone(),
            to: command.to.clone(),
            history_id: Some(history_id),
        }
    };
    Ok(Outcome::ok(
        serde_json::to_string(&outcome).expect("outcomes serialize"),
    ))
}

/// One entry of a member's tier history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierHistoryEntry {
    pub id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub source: String,
    /// The deciding plugin (id, name, version, sha256, input digest) or the admin key.
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

/// A member's tier changes, newest first, before `cursor` (an entry id).
pub async fn tier_history(
    pool: &AnyPool,
    merchant_id: &str,
    member_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<TierHistoryEntry>, CoreError> {
    if !crate::members::member_exists(&mut Session::Pool(pool), merchant_id, member_id).await? {
        return Err(CoreError::NotFound("member"));
    }
    let rows = sqlx::query(
        "SELECT id, from_tier, to_tier, reason, source, provenance, created_at FROM tier_history \
         WHERE merchant_id = $1 AND member_id = $2 AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(member_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let provenance: Option<String> = row.try_get("provenance")?;
            Ok(TierHistoryEntry {
                id: row.try_get("id")?,
                from: row.try_get("from_tier")?,
                to: row.try_get("to_tier")?,
                reason: row.try_get("reason")?,
                source: row.try_get("source")?,
                provenance: provenance
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .map(crate::ledger::without_inputs),
                created_at: from_unix_micros(row.try_get("created_at")?),
            })
        })
        .collect()
}
