//! Domain events and the outbox. An event is written in the same database transaction as the
//! change that caused it (queued in the writer's [`Script`], or bound into the caller's own
//! transaction), and delivered afterwards, at least once, by the server's dispatcher: to
//! webhooks and to campaign triggers. Receivers deduplicate by the event's id.

use serde::Serialize;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id, numbered_list, Script, SqlValue};
use crate::error::CoreError;
use crate::session::{self, Session};

/// Every kind of event the host emits. A webhook subscribes to some of them (or `*`).
pub const EVENT_KINDS: &[&str] = &[
    MEMBER_JOINED,
    PURCHASE_RECORDED,
    PURCHASE_REFUNDED,
    TIER_CHANGED,
    POINTS_EXPIRING,
    COUPON_ISSUED,
    MESSAGE_REQUESTED,
];
pub const MEMBER_JOINED: &str = "member.joined";
pub const PURCHASE_RECORDED: &str = "purchase.recorded";
pub const PURCHASE_REFUNDED: &str = "purchase.refunded";
pub const TIER_CHANGED: &str = "tier.changed";
pub const POINTS_EXPIRING: &str = "points.expiring";
pub const COUPON_ISSUED: &str = "coupon.issued";
pub const MESSAGE_REQUESTED: &str = "message.requested";

/// Events one dispatcher pass takes at most.
pub const DISPATCH_BATCH_MAX: i64 = 1_024;
/// Events one writer command of a pass applies at most: on SQLite the command holds the only
/// write lock, so a large pass goes in several commands and purchases are written between
/// them.
pub const EFFECTS_PER_COMMAND_MAX: usize = 256;

/// An event to write.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub member_id: Option<String>,
    pub store_id: Option<String>,
    pub data: serde_json::Value,
    /// Set for events that may be emitted twice for the same fact (a rerun of a day): the
    /// second is dropped.
    pub dedupe_key: Option<String>,
}

impl NewEvent {
    pub fn member(kind: &'static str, member_id: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            kind,
            member_id: Some(member_id.to_string()),
            store_id: None,
            data,
            dedupe_key: None,
        }
    }

    pub fn at_store(mut self, store_id: &str) -> NewEvent {
        self.store_id = Some(store_id.to_string());
        self
    }

    pub fn deduplicated_by(mut self, key: String) -> NewEvent {
        self.dedupe_key = Some(key);
        self
    }
}

const INSERT_SQL: &str = "INSERT INTO events (merchant_id, id, kind, member_id, store_id, data, \
     dedupe_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (merchant_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING";

fn insert_values(merchant_id: &str, id: &str, event: NewEvent, now: i64) -> Vec<SqlValue> {
    debug_assert!(EVENT_KINDS.contains(&event.kind), "a known event kind");
    debug_assert!(event.data.is_object(), "event data is an object");
    vec![
        merchant_id.into(),
        id.into(),
        event.kind.into(),
        event.member_id.into(),
        event.store_id.into(),
        event.data.to_string().into(),
        event.dedupe_key.into(),
        now.into(),
    ]
}

/// Queues the event in the writer's script: it commits (or rolls back) with the command.
pub fn queue_event(script: &mut Script, merchant_id: &str, event: NewEvent, now: i64) -> String {
    let id = new_id("evt");
    script.push(INSERT_SQL, insert_values(merchant_id, &id, event, now));
    id
}

/// Writes the event on `connection` (a transaction of the caller's, or the pool). Returns
/// its id, or `None` when an event with the same dedupe key exists.
pub async fn insert_event(
    connection: &mut Session<'_>,
    merchant_id: &str,
    event: NewEvent,
    now: i64,
) -> Result<Option<String>, CoreError> {
    let id = new_id("evt");
    let written = session::query(INSERT_SQL)
        .bind_values(insert_values(merchant_id, &id, event, now))
        .execute(connection)
        .await?;
    Ok((written == 1).then_some(id))
}

/// An event as receivers see it (the webhook body, `GET /v1/events`).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Event {
    /// `evt_…`, unique: receivers deduplicate by it.
    pub id: String,
    /// The event kind, e.g. `purchase.recorded`.
    #[serde(rename = "type")]
    pub kind: String,
    pub merchant_id: String,
    pub member_id: Option<String>,
    pub store_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

const EVENT_COLUMNS: &str = "merchant_id, id, kind, member_id, store_id, data, created_at";

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<Event, CoreError> {
    let data: String = row.try_get("data")?;
    Ok(Event {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        merchant_id: row.try_get("merchant_id")?,
        member_id: row.try_get("member_id")?,
        store_id: row.try_get("store_id")?,
        data: serde_json::from_str(&data)
            .map_err(|error| CoreError::Internal(format!("stored event data: {error}")))?,
        created_at: from_unix_micros(row.try_get("created_at")?),
    })
}

/// The oldest events not yet dispatched, across merchants.
pub async fn undispatched(pool: &AnyPool, limit: i64) -> Result<Vec<Event>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE dispatched_at IS NULL \
         ORDER BY created_at, id LIMIT $1"
    ))
    .bind(limit.clamp(1, DISPATCH_BATCH_MAX))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// Marks events of one merchant dispatched, those not dispatched yet, and returns their ids:
/// the claim that makes a dispatch apply once even when two hosts dispatch the same events.
/// At most [`EFFECTS_PER_COMMAND_MAX`] ids per statement.
pub async fn claim_undispatched(
    connection: &mut Session<'_>,
    merchant_id: &str,
    event_ids: &[&str],
    now: i64,
) -> Result<std::collections::BTreeSet<String>, CoreError> {
    let mut claimed = std::collections::BTreeSet::new();
    for chunk in event_ids.chunks(EFFECTS_PER_COMMAND_MAX) {
        let sql = format!(
            "UPDATE events SET dispatched_at = $2 WHERE merchant_id = $1 AND id IN ({}) \
             AND dispatched_at IS NULL RETURNING id",
            numbered_list(3, chunk.len())
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into(), now.into()];
        values.extend(chunk.iter().map(|id| SqlValue::from(*id)));
        for row in session::query(&sql)
            .bind_values(values)
            .fetch_all(connection)
            .await?
        {
            claimed.insert(row.try_get("id")?);
        }
    }
    Ok(claimed)
}

pub async fn get_event(pool: &AnyPool, merchant_id: &str, id: &str) -> Result<Event, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("event"))?;
    event_from_row(&row)
}

/// A merchant's events, oldest first from after `cursor` (an event id), optionally of one
/// kind and one member: the feed a merchant without webhooks polls.
pub async fn list_events(
    pool: &AnyPool,
    merchant_id: &str,
    kind: Option<&str>,
    member_id: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Event>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE merchant_id = $1 AND id > $2 \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR member_id = $4) \
         ORDER BY id LIMIT $5"
    ))
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(kind)
    .bind(member_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// What the dispatcher applies for one event, in the writer's transaction.
#[derive(Debug, Clone)]
pub struct EventEffect {
    pub event_id: String,
    pub kind: String,
    /// Webhooks that get a delivery of it.
    pub webhook_ids: Vec<String>,
    /// For `purchase.recorded`: the purchase, queued to be counted into the item statistics.
    pub purchase_id: Option<String>,
}

/// The effects of a batch of one merchant's events, those not dispatched before (claimed by
/// marking them dispatched) — one writer command, so on SQLite it never competes with
/// purchases for the write lock.
pub async fn apply_effects(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    effects: &[EventEffect],
    now: i64,
) -> Result<crate::operations::Outcome, CoreError> {
    // The command's savepoint goes first; the statements below run on the connection.
    script.flush(connection).await?;
    let ids: Vec<&str> = effects
        .iter()
        .map(|effect| effect.event_id.as_str())
        .collect();
    let claimed = claim_undispatched(connection, merchant_id, &ids, now).await?;
    let fresh: Vec<&EventEffect> = effects
        .iter()
        .filter(|effect| claimed.contains(&effect.event_id))
        .collect();
    for effect in &fresh {
        if !effect.webhook_ids.is_empty() {
            crate::webhooks::enqueue_deliveries(
                connection,
                merchant_id,
                &effect.event_id,
                &effect.kind,
                &effect.webhook_ids,
                now,
            )
            .await?;
        }
    }
    let purchases: Vec<(&str, &str)> = fresh
        .iter()
        .filter_map(|effect| {
            effect
                .purchase_id
                .as_deref()
                .map(|purchase_id| (effect.event_id.as_str(), purchase_id))
        })
        .collect();
    if !purchases.is_empty() {
        crate::items::queue_purchases(connection, merchant_id, &purchases, now).await?;
    }
    Ok(crate::operations::Outcome::ok(
        serde_json::json!({"events": fresh.len()}).to_string(),
    ))
}
