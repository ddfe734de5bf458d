//! The daily tick's bookkeeping: one row per (merchant, local date), claimed by one host and
//! finished once, so a restart or a second host never runs a day twice; and the reads the
//! tick needs (members with lots due, points expiring on a day, members to evaluate).

use serde::Serialize;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::from_unix_micros;
use crate::error::CoreError;

/// A claim older than this is taken over: its host died mid-tick (every step is idempotent,
/// so finishing the day again is safe).
pub const TICK_LEASE_MICROS: i64 = 15 * 60 * 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller runs the day.
    Claimed,
    /// The day ran already.
    Done,
    /// Another host is running it now.
    Running,
}

/// Claims the merchant's `local_date` (YYYY-MM-DD) for this caller.
pub async fn claim_day(
    pool: &AnyPool,
    merchant_id: &str,
    local_date: &str,
    now: i64,
) -> Result<Claim, CoreError> {
    // The common case, a day that ran, costs one read and no write.
    let existing: Option<(String, i64)> = sqlx::query_as(
        "SELECT state, claimed_at FROM daily_ticks WHERE merchant_id = $1 AND local_date = $2",
    )
    .bind(merchant_id)
    .bind(local_date)
    .fetch_optional(pool)
    .await?;
    match existing {
        Some((state, _)) if state == "done" => return Ok(Claim::Done),
        Some((_, claimed_at)) if claimed_at >= now - TICK_LEASE_MICROS => {
            return Ok(Claim::Running)
        }
        _ => {}
    }
    let inserted = sqlx::query(
        "INSERT INTO daily_ticks (merchant_id, local_date, state, claimed_at) \
         VALUES ($1, $2, 'running', $3) ON CONFLICT (merchant_id, local_date) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(local_date)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Claimed);
    }
    let taken_over = sqlx::query(
        "UPDATE daily_ticks SET claimed_at = $3 WHERE merchant_id = $1 AND local_date = $2 \
         AND state = 'running' AND claimed_at < $4",
    )
    .bind(merchant_id)
    .bind(local_date)
    .bind(now)
    .bind(now - TICK_LEASE_MICROS)
    .execute(pool)
    .await?
    .rows_affected();
    if taken_over == 1 {
        return Ok(Claim::Claimed);
    }
    let state: String = sqlx::query_scalar(
        "SELECT state FROM daily_ticks WHERE merchant_id = $1 AND local_date = $2",
    )
    .bind(merchant_id)
    .bind(local_date)
    .fetch_one(pool)
    .await?;
    Ok(if state == "done" {
        Claim::Done
    } else {
        Claim::Running
    })
}

pub async fn finish_day(
    pool: &AnyPool,
    merchant_id: &str,
    local_date: &str,
    summary: &serde_json::Value,
    now: i64,
) -> Result<(), CoreError> {
    sqlx::query(
        "UPDATE daily_ticks SET state = 'done', finished_at = $3, summary = $4 \
         WHERE merchant_id = $1 AND local_date = $2",
    )
    .bind(merchant_id)
    .bind(local_date)
    .bind(now)
    .bind(summary.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// A day's record, as `GET /v1/ticks` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TickRecord {
    pub local_date: String,
    /// running | done
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub claimed_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<time::OffsetDateTime>,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}

/// The merchant's most recent days, newest first.
pub async fn recent_days(
    pool: &AnyPool,
    merchant_id: &str,
    limit: i64,
) -> Result<Vec<TickRecord>, CoreError> {
    let rows = sqlx::query(
        "SELECT local_date, state, claimed_at, finished_at, summary FROM daily_ticks \
         WHERE merchant_id = $1 ORDER BY local_date DESC LIMIT $2",
    )
    .bind(merchant_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let summary: Option<String> = row.try_get("summary")?;
            Ok(TickRecord {
                local_date: row.try_get("local_date")?,
                state: row.try_get("state")?,
                claimed_at: from_unix_micros(row.try_get("claimed_at")?),
                finished_at: row
                    .try_get::<Option<i64>, _>("finished_at")?
                    .map(from_unix_micros),
                summary: summary.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })
        .collect()
}

/// Members of one merchant with lots due at `now` (to activate or expire).
pub async fn merchant_members_with_due_lots(
    pool: &AnyPool,
    merchant_id: &str,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, CoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT member_id FROM point_lots WHERE merchant_id = $1 AND \
         ((state = 'pending' AND activates_at <= $2) \
          OR (state = 'active' AND expires_at IS NOT NULL AND expires_at <= $2)) LIMIT $3",
    )
    .bind(merchant_id)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Points that will expire in `[from, until)`, per member after `cursor` (a member id):
/// (member, points, soonest expiry).
pub async fn points_expiring_between(
    pool: &AnyPool,
    merchant_id: &str,
    from: i64,
    until: i64,
    cursor: &str,
    limit: i64,
) -> Result<Vec<(String, i64, i64)>, CoreError> {
    Ok(sqlx::query_as(
        "SELECT member_id, CAST(SUM(remaining) AS BIGINT), MIN(expires_at) FROM point_lots \
         WHERE merchant_id = $1 AND state = 'active' AND remaining > 0 \
         AND expires_at >= $2 AND expires_at < $3 AND member_id > $4 \
         GROUP BY member_id ORDER BY member_id LIMIT $5",
    )
    .bind(merchant_id)
    .bind(from)
    .bind(until)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A page of a merchant's members with the store of their latest purchase (where their
/// tier policy is asked), after `cursor` (a member id). Members who never bought are left
/// out: no store's policy applies to them.
pub async fn members_with_home_store(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: &str,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>, CoreError> {
    Ok(sqlx::query_as(
        "SELECT m.id, (SELECT p.store_id FROM purchases p WHERE p.merchant_id = m.merchant_id \
           AND p.member_id = m.id ORDER BY p.occurred_at DESC, p.id DESC LIMIT 1) AS store_id \
         FROM members m WHERE m.merchant_id = $1 AND m.id > $2 AND m.orders_count > 0 \
         ORDER BY m.id LIMIT $3",
    )
    .bind(merchant_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Every merchant's id and time zone (the scheduler's round).
pub async fn merchants_and_zones(pool: &AnyPool) -> Result<Vec<(String, String)>, CoreError> {
    Ok(
        sqlx::query_as("SELECT merchant_id, timezone FROM merchants ORDER BY merchant_id")
            .fetch_all(pool)
            .await?,
    )
}

/// A page of a merchant's member ids after `cursor` (the daily tick's campaign round).
pub async fn member_ids(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: &str,
    limit: i64,
) -> Result<Vec<String>, CoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM members WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(merchant_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
