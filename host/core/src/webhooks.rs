//! Webhook registrations and their deliveries: one delivery row per (webhook, event), its
//! attempts and state. The server's dispatcher creates deliveries from the outbox and sends
//! them; this module only keeps the records.

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::events::EVENT_KINDS;
use crate::session::{self, Session};

pub const WEBHOOKS_PER_MERCHANT_MAX: i64 = 20;
pub const WEBHOOK_URL_LENGTH_MAX: usize = 2_000;
pub const WEBHOOK_SECRET_LENGTH_MIN: usize = 16;
pub const WEBHOOK_SECRET_LENGTH_MAX: usize = 256;
/// The longest error text kept on a delivery.
pub const DELIVERY_ERROR_LENGTH_MAX: usize = 500;
/// Subscribes a webhook to every event kind.
pub const ALL_EVENTS: &str = "*";

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed: an `https://` URL (or `http://`, for a receiver the
    /// merchant runs on its own network).
    pub url: String,
    /// Event kinds to receive, or `["*"]` for all.
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of the `Loyalty-Signature` header, 16 to 256 characters. Kept
    /// by the host to sign; never shown again.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// False once deleted: no new deliveries; the log stays readable.
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

impl Webhook {
    /// Whether an event of `kind` is delivered to this webhook.
    pub fn subscribes(&self, kind: &str) -> bool {
        self.active
            && self
                .events
                .iter()
                .any(|subscribed| subscribed == kind || subscribed == ALL_EVENTS)
    }
}

fn validate(input: &NewWebhook) -> Result<(), CoreError> {
    let mut errors = Vec::new();
    let scheme_ok = input.url.starts_with("https://") || input.url.starts_with("http://");
    let host_ok = input
        .url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .is_some_and(|host| !host.is_empty());
    if !scheme_ok
        || !host_ok
        || input.url.len() > WEBHOOK_URL_LENGTH_MAX
        || input.url.chars().any(char::is_whitespace)
    {
        errors.push(FieldError::new(
            "url",
            format!("an http:// or https:// URL with a host, at most {WEBHOOK_URL_LENGTH_MAX} characters"),
        ));
    }
    if input.events.is_empty() {
        errors.push(FieldError::new(
            "events",
            "name at least one event kind, or \"*\"",
        ));
    }
    for (index, kind) in input.events.iter().enumerate() {
        if kind != ALL_EVENTS && !EVENT_KINDS.contains(&kind.as_str()) {
            errors.push(FieldError::new(
                format!("events[{index}]"),
                format!(
                    "unknown event kind; one of {}, or \"*\"",
                    EVENT_KINDS.join(", ")
                ),
            ));
        }
    }
    let secret_length = input.secret.chars().count();
    if !(WEBHOOK_SECRET_LENGTH_MIN..=WEBHOOK_SECRET_LENGTH_MAX).contains(&secret_length) {
        errors.push(FieldError::new(
            "secret",
            format!("{WEBHOOK_SECRET_LENGTH_MIN} to {WEBHOOK_SECRET_LENGTH_MAX} characters"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Validation(errors))
    }
}

fn webhook_from_row(row: &sqlx::any::AnyRow) -> Result<Webhook, CoreError> {
    let events: String = row.try_get("events")?;
    Ok(Webhook {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        events: serde_json::from_str(&events)
            .map_err(|_| CoreError::Internal("stored webhook events".into()))?,
        active: row.try_get::<i64, _>("active")? == 1,
        created_at: from_unix_micros(row.try_get("created_at")?),
    })
}

pub async fn create_webhook(
    pool: &AnyPool,
    merchant_id: &str,
    input: &NewWebhook,
    now: i64,
) -> Result<Webhook, CoreError> {
    validate(input)?;
    let mut events = input.events.clone();
    events.sort();
    events.dedup();
    let active: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhooks WHERE merchant_id = $1 AND active = 1",
    )
    .bind(merchant_id)
    .fetch_one(pool)
    .await?;
    if active >= WEBHOOKS_PER_MERCHANT_MAX {
        return Err(CoreError::Unprocessable(format!(
            "a merchant has at most {WEBHOOKS_PER_MERCHANT_MAX} active webhooks"
        )));
    }
    let id = new_id("whk");
    sqlx::query(
        "INSERT INTO webhooks (merchant_id, id, url, events, secret, active, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6)",
    )
    .bind(merchant_id)
    .bind(&id)
    .bind(&input.url)
    .bind(serde_json::to_string(&events).expect("strings serialize"))
    .bind(&input.secret)
    .bind(now)
    .execute(pool)
    .await?;
    get_webhook(pool, merchant_id, &id).await
}

pub async fn get_webhook(
    pool: &AnyPool,
    merchant_id: &str,
    id: &str,
) -> Result<Webhook, CoreError> {
    let row = sqlx::query(
        "SELECT id, url, events, active, created_at FROM webhooks WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("webhook"))?;
    webhook_from_row(&row)
}

pub async fn list_webhooks(pool: &AnyPool, merchant_id: &str) -> Result<Vec<Webhook>, CoreError> {
    let rows = sqlx::query(
        "SELECT id, url, events, active, created_at FROM webhooks WHERE merchant_id = $1 ORDER BY id",
    )
    .bind(merchant_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(webhook_from_row).collect()
}

/// Deactivates a webhook: no new deliveries, pending ones are dropped; the log stays.
pub async fn deactivate_webhook(
    pool: &AnyPool,
    merchant_id: &str,
    id: &str,
    now: i64,
) -> Result<Webhook, CoreError> {
    get_webhook(pool, merchant_id, id).await?;
    let mut transaction = pool.begin().await?;
    sqlx::query("UPDATE webhooks SET active = 0 WHERE merchant_id = $1 AND id = $2")
        .bind(merchant_id)
        .bind(id)
        .execute(&mut *transaction)
        .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL, \
         last_error = 'the webhook was deleted', updated_at = $3 \
         WHERE merchant_id = $1 AND webhook_id = $2 AND state = 'pending'",
    )
    .bind(merchant_id)
    .bind(id)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    get_webhook(pool, merchant_id, id).await
}

/// Records a pending delivery of the event to each webhook, due at once. A delivery that
/// exists already (a second dispatch of the same event) is left as it is.
pub async fn enqueue_deliveries(
    connection: &mut Session<'_>,
    merchant_id: &str,
    event_id: &str,
    event_kind: &str,
    webhook_ids: &[String],
    now: i64,
) -> Result<(), CoreError> {
    for webhook_id in webhook_ids {
        session::query(
            "INSERT INTO webhook_deliveries (merchant_id, id, webhook_id, event_id, event_kind, \
             state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6) \
             ON CONFLICT (merchant_id, webhook_id, event_id) DO NOTHING",
        )
        .bind(merchant_id)
        .bind(new_id("dlv"))
        .bind(webhook_id)
        .bind(event_id)
        .bind(event_kind)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// A delivery to attempt now.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub merchant_id: String,
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub attempts: i64,
}

/// Up to `limit` deliveries due at `now`, with the due time each was read at (the claim's
/// guard). Reading only: [`claim_on`] takes them.
pub async fn due_deliveries(
    pool: &AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<(DueDelivery, i64)>, CoreError> {
    let rows = sqlx::query(
        "SELECT d.merchant_id, d.id, d.webhook_id, d.event_id, d.attempts, d.next_attempt_at, \
         w.url, w.secret FROM webhook_deliveries d JOIN webhooks w \
         ON w.merchant_id = d.merchant_id AND w.id = d.webhook_id \
         WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
         ORDER BY d.next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                DueDelivery {
                    merchant_id: row.try_get("merchant_id")?,
                    id: row.try_get("id")?,
                    webhook_id: row.try_get("webhook_id")?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                    event_id: row.try_get("event_id")?,
                    attempts: row.try_get("attempts")?,
                },
                row.try_get("next_attempt_at")?,
            ))
        })
        .collect()
}

/// Claims deliveries (id, the due time read) of one merchant until `lease_until`: another host,
/// or this one's next pass, skips them until then, and takes them over if this host dies.
/// Returns the ids claimed (a delivery another host claimed first is left out).
pub async fn claim_on(
    connection: &mut Session<'_>,
    merchant_id: &str,
    deliveries: &[(String, i64)],
    lease_until: i64,
) -> Result<Vec<String>, CoreError> {
    let mut claimed = Vec::with_capacity(deliveries.len());
    for (id, due_at) in deliveries {
        let taken = session::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $4 WHERE merchant_id = $1 AND id = $2 \
             AND state = 'pending' AND next_attempt_at = $3",
        )
        .bind(merchant_id)
        .bind(id)
        .bind(*due_at)
        .bind(lease_until)
        .execute(&mut *connection)
        .await?;
        if taken == 1 {
            claimed.push(id.clone());
        }
    }
    Ok(claimed)
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// `Some(at)`: try again at `at`; `None` with an error: give up.
    pub retry_at: Option<i64>,
}

pub async fn record_attempt_on(
    connection: &mut Session<'_>,
    merchant_id: &str,
    delivery_id: &str,
    attempt: &Attempt,
    now: i64,
) -> Result<(), CoreError> {
    let state = match (&attempt.error, attempt.retry_at) {
        (None, _) => "delivered",
        (Some(_), Some(_)) => "pending",
        (Some(_), None) => "failed",
    };
    let error = attempt.error.as_ref().map(|text| {
        text.chars()
            .take(DELIVERY_ERROR_LENGTH_MAX)
            .collect::<String>()
    });
    session::query(
        "UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, next_attempt_at = $4, \
         last_status = $5, last_error = $6, delivered_at = $7, updated_at = $8 \
         WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(delivery_id)
    .bind(state)
    .bind(attempt.retry_at.filter(|_| state == "pending"))
    .bind(attempt.status.map(i64::from))
    .bind(error)
    .bind((state == "delivered").then_some(now))
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    /// The event kind.
    pub event_type: String,
    /// pending | delivered | failed
    pub state: String,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

/// A webhook's deliveries, newest first, before `cursor` (a delivery id).
pub async fn list_deliveries(
    pool: &AnyPool,
    merchant_id: &str,
    webhook_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, CoreError> {
    get_webhook(pool, merchant_id, webhook_id).await?;
    let rows = sqlx::query(
        "SELECT id, event_id, event_kind, state, attempts, last_status, last_error, \
         next_attempt_at, delivered_at, created_at FROM webhook_deliveries \
         WHERE merchant_id = $1 AND webhook_id = $2 AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(merchant_id)
    .bind(webhook_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Delivery {
                id: row.try_get("id")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_kind")?,
                state: row.try_get("state")?,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                last_error: row.try_get("last_error")?,
                next_attempt_at: row
                    .try_get::<Option<i64>, _>("next_attempt_at")?
                    .map(from_unix_micros),
                delivered_at: row
                    .try_get::<Option<i64>, _>("delivered_at")?
                    .map(from_unix_micros),
                created_at: from_unix_micros(row.try_get("created_at")?),
            })
        })
        .collect()
}
