//! Point lots: every credit of points is a lot with an activation and an expiry time.
//! Spending consumes active lots first-to-expire first; a background job (and every write
//! that touches the member) activates pending lots and expires lots into breakage.
//!
//! Invariants (checked by `verify`): the pending lots of a member sum to the balance of
//! `points_pending`; the active lots sum to the balance of `points` when it is not negative,
//! and to zero when it is (a debt: later credits repay it before they form a lot).

use sqlx::Row;

use crate::db::{new_id, Backend, Script, SqlValue};
use crate::error::CoreError;
use crate::ledger::{
    member_account_id, record, NewTransaction, Posting, LOTS_PER_SPEND_MAX, POINTS,
};
use crate::session::{self, Session};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Most due lots one settlement handles for a member; the rest wait for the next run.
pub const DUE_LOTS_PER_SETTLEMENT_MAX: i64 = 1_000;

#[derive(Debug, Clone)]
pub struct Lot {
    pub id: String,
    pub member_id: String,
    pub state: String,
    pub remaining: i64,
    pub activates_at: i64,
    pub expires_at: Option<i64>,
}

fn lot_from_row(row: &session::Row) -> Result<Lot, CoreError> {
    Ok(Lot {
        id: row.try_get("id")?,
        member_id: row.try_get("member_id")?,
        state: row.try_get("state")?,
        remaining: row.try_get("remaining")?,
        activates_at: row.try_get("activates_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const LOT_COLUMNS: &str = "id, member_id, state, remaining, activates_at, expires_at";

/// What a lot in `state` with `remaining` points counts towards `point_expiry_hours`:
/// (expires_at, points) for an active lot with an expiry, nothing otherwise.
fn expiring_share(state: &str, remaining: i64, expires_at: Option<i64>) -> Option<(i64, i64)> {
    match expires_at {
        Some(at) if state == "active" && remaining > 0 => Some((at, remaining)),
        _ => None,
    }
}

pub fn expiry_after(activates_at: i64, expiry_days: Option<u32>) -> Option<i64> {
    expiry_days.map(|days| activates_at + i64::from(days) * MICROS_PER_DAY)
}

/// Queues a new lot in the command's script and returns its id.
#[allow(clippy::too_many_arguments)]
pub fn insert_lot(
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
    transaction_id: &str,
    pending: bool,
    earned: i64,
    remaining: i64,
    activates_at: i64,
    expires_at: Option<i64>,
    now: i64,
) -> String {
    assert!(
        earned > 0 && (0..=earned).contains(&remaining),
        "bad lot amounts"
    );
    let id = new_id("lot");
    let state = if pending {
        "pending"
    } else if remaining == 0 {
        "closed"
    } else {
        "active"
    };
    script.push(
        "INSERT INTO point_lots (merchant_id, id, member_id, transaction_id, state, earned, \
         remaining, activates_at, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vec![
            merchant_id.into(),
            (&id).into(),
            member_id.into(),
            transaction_id.into(),
            state.into(),
            earned.into(),
            remaining.into(),
            activates_at.into(),
            expires_at.into(),
            now.into(),
        ],
    );
    if let Some((at, points)) = expiring_share(state, remaining, expires_at) {
        script.add_expiring_points(merchant_id, member_id, at, points);
    }
    id
}

/// Lots in a member's next-expiry window from which the member keeps `point_expiry_hours`
/// rows: summing this many lots costs a read about what keeping the rows costs a write.
pub const EXPIRY_HOURS_LOTS_MIN: i64 = 100;

/// Switches the member (locked by this command) over to `point_expiry_hours`: builds their
/// rows from the lots as they stand and marks the member. Their later lot changes in this
/// command add to the rows; the statements run at once, so no queued change is counted twice.
pub async fn keep_expiry_hours(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
) -> Result<(), CoreError> {
    script.flush(connection).await?;
    // Rows a command added without knowing the member's flag (see `Script`) are rebuilt too.
    session::query("DELETE FROM point_expiry_hours WHERE merchant_id = $1 AND member_id = $2")
        .bind(merchant_id)
        .bind(member_id)
        .execute(&mut *connection)
        .await?;
    session::query(&format!(
        "INSERT INTO point_expiry_hours (merchant_id, member_id, expiry_hour, points) \
         SELECT merchant_id, member_id, expires_at / {hour}, SUM(remaining) FROM point_lots \
         WHERE merchant_id = $1 AND member_id = $2 AND state = 'active' AND remaining > 0 \
         AND expires_at IS NOT NULL GROUP BY merchant_id, member_id, expires_at / {hour}",
        hour = crate::db::EXPIRY_HOUR_MICROS
    ))
    .bind(merchant_id)
    .bind(member_id)
    .execute(&mut *connection)
    .await?;
    let marked = session::query(
        "UPDATE members SET expiry_hours_kept = 1 WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(member_id)
    .execute(&mut *connection)
    .await?;
    assert_eq!(marked, 1, "the member is locked by this command");
    script.set_expiry_hours_kept(merchant_id, member_id, true);
    Ok(())
}

/// How much of a credit of `points` forms a lot, given the balance after the credit: a
/// debt is repaid first.
pub fn lot_share_of_credit(points: i64, balance_after: i64) -> i64 {
    points.min(balance_after.max(0))
}

/// Gives the lot read as `before` its new `remaining` and `state`, and moves its share of
/// the member's expiring points along (queued in `script`).
async fn set_lot_remaining(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    before: &Lot,
    remaining: i64,
    state: &str,
) -> Result<(), CoreError> {
    session::query(
        "UPDATE point_lots SET remaining = $3, state = $4 WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(&before.id)
    .bind(remaining)
    .bind(state)
    .execute(&mut *connection)
    .await?;
    if let Some((at, points)) = expiring_share(&before.state, before.remaining, before.expires_at) {
        script.add_expiring_points(merchant_id, &before.member_id, at, -points);
    }
    if let Some((at, points)) = expiring_share(state, remaining, before.expires_at) {
        script.add_expiring_points(merchant_id, &before.member_id, at, points);
    }
    Ok(())
}

/// Takes up to `points` from the member's active lots, first to expire first (lots that
/// never expire last), and returns how many it took. The caller posts the ledger side.
pub async fn take_from_active_lots(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
    points: i64,
) -> Result<i64, CoreError> {
    assert!(points >= 0);
    if points == 0 {
        return Ok(0);
    }
    let rows = session::query(&format!(
        "SELECT {LOT_COLUMNS} FROM point_lots WHERE merchant_id = $1 AND member_id = $2 \
         AND state = 'active' AND remaining > 0 \
         ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, activates_at, id \
         LIMIT {LOTS_PER_SPEND_MAX}"
    ))
    .bind(merchant_id)
    .bind(member_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut taken = 0;
    for row in &rows {
        if taken == points {
            break;
        }
        let lot = lot_from_row(row)?;
        let take = lot.remaining.min(points - taken);
        let left = lot.remaining - take;
        set_lot_remaining(
            connection,
            script,
            merchant_id,
            &lot,
            left,
            if left == 0 { "closed" } else { "active" },
        )
        .await?;
        taken += take;
    }
    assert!(taken <= points);
    Ok(taken)
}

/// Takes up to `points` from one lot (a purchase's own lot, on refund). Returns the lot's
/// state before, and how many it took.
pub async fn take_from_lot(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    lot_id: &str,
    points: i64,
) -> Result<(String, i64), CoreError> {
    let row = session::query(&format!(
        "SELECT {LOT_COLUMNS} FROM point_lots WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(merchant_id)
    .bind(lot_id)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or_else(|| CoreError::Internal(format!("lot {lot_id} is missing")))?;
    let lot = lot_from_row(&row)?;
    if lot.state == "closed" || lot.remaining == 0 {
        return Ok((lot.state, 0));
    }
    let take = lot.remaining.min(points);
    let left = lot.remaining - take;
    let state = if left == 0 {
        "closed".to_string()
    } else {
        lot.state.clone()
    };
    set_lot_remaining(connection, script, merchant_id, &lot, left, &state).await?;
    Ok((lot.state, take))
}

/// The member's lots due at the `now_param`-th parameter: pending ones to activate and
/// active ones to expire, as two index ranges rather than one OR that would scan every lot.
fn due_lots_sql(now_param: usize) -> String {
    format!(
        "SELECT 'lot' AS row_kind, {LOT_COLUMNS} FROM point_lots WHERE merchant_id = $1 \
         AND member_id = $2 AND state = 'pending' AND activates_at <= ${now_param} \
         UNION ALL \
         SELECT 'lot' AS row_kind, {LOT_COLUMNS} FROM point_lots WHERE merchant_id = $1 \
         AND member_id = $2 AND state = 'active' AND expires_at IS NOT NULL \
         AND expires_at <= ${now_param} \
         ORDER BY activates_at, id LIMIT {DUE_LOTS_PER_SETTLEMENT_MAX}"
    )
}

/// A purchase's effect on the member's statistics, applied with the lock.
#[derive(Debug, Clone, Copy)]
pub struct PurchaseStats {
    pub total: i64,
    pub occurred_at: i64,
}

/// Takes the member's write lock (the member row; SQLite's write lock covers it already),
/// proves the member exists for this merchant, counts a purchase into the statistics if
/// given, and settles the member's due lots, so every later check sees current balances.
/// On SQLite the lock and the read of due lots travel in one round trip. Returns (points
/// activated, points expired).
pub async fn lock_and_settle(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
    purchase: Option<PurchaseStats>,
    now: i64,
) -> Result<(i64, i64), CoreError> {
    let (lock_sql, lock_params) = match purchase {
        None => (
            "UPDATE members SET version = version + 1 WHERE merchant_id = $1 AND id = $2 \
             RETURNING 'member' AS row_kind, expiry_hours_kept"
                .to_string(),
            2,
        ),
        Some(_) => (
            "UPDATE members SET version = version + 1, lifetime_spend = lifetime_spend + $3, \
             orders_count = orders_count + 1, last_purchase_at = CASE \
             WHEN last_purchase_at IS NULL OR last_purchase_at < $4 THEN $4 \
             ELSE last_purchase_at END WHERE merchant_id = $1 AND id = $2 \
             RETURNING 'member' AS row_kind, expiry_hours_kept"
                .to_string(),
            4,
        ),
    };
    let rows = match script.backend() {
        Backend::Sqlite => {
            // One call: the command's queued savepoint, the lock, the due lots.
            let sql = format!("{lock_sql};\n{}", due_lots_sql(lock_params + 1));
            let mut values: Vec<SqlValue> = vec![merchant_id.into(), member_id.into()];
            if let Some(stats) = purchase {
                values.push(stats.total.into());
                values.push(stats.occurred_at.into());
            }
            values.push(now.into());
            script.fetch_after(connection, &sql, values).await?
        }
        Backend::Postgres => {
            script.flush(connection).await?;
            let mut query = session::query(&lock_sql).bind(merchant_id).bind(member_id);
            if let Some(stats) = purchase {
                query = query.bind(stats.total).bind(stats.occurred_at);
            }
            let locked = query
                .fetch_optional(&mut *connection)
                .await?
                .ok_or(CoreError::NotFound("member"))?;
            let due_sql = due_lots_sql(3);
            let mut rows = session::query(&due_sql)
                .bind(merchant_id)
                .bind(member_id)
                .bind(now)
                .fetch_all(&mut *connection)
                .await?;
            // the lock's row, as SQLite's combined answer carries it
            rows.push(locked);
            rows
        }
    };
    let mut locked = false;
    let mut lots = Vec::new();
    for row in &rows {
        match row.try_get::<String, _>("row_kind")?.as_str() {
            "member" => {
                locked = true;
                let kept: i64 = row.try_get("expiry_hours_kept")?;
                script.set_expiry_hours_kept(merchant_id, member_id, kept == 1);
            }
            _ => lots.push(lot_from_row(row)?),
        }
    }
    if !locked {
        return Err(CoreError::NotFound("member"));
    }
    settle_lots(connection, script, merchant_id, member_id, lots, now).await
}

/// Activates pending lots whose time has come and expires active lots past their expiry,
/// each as its own ledger transaction. Idempotent: a lot changes state in the same
/// database transaction as its ledger entry, so running it again finds nothing to do.
async fn settle_lots(
    connection: &mut Session<'_>,
    script: &mut Script,
    merchant_id: &str,
    member_id: &str,
    lots: Vec<Lot>,
    now: i64,
) -> Result<(i64, i64), CoreError> {
    let points_account = member_account_id(member_id, "points");
    let pending_account = member_account_id(member_id, "points_pending");
    let (mut activated, mut expired) = (0, 0);
    for mut lot in lots {
        if lot.state == "pending" {
            let (_, balances) = record(
                connection,
                script,
                merchant_id,
                now,
                NewTransaction {
                    kind: "points.activation",
                    member_id: Some(member_id.to_string()),
                    reference: Some(lot.id.clone()),
                    reason: Some("return window passed".into()),
                    postings: vec![
                        Posting::member(pending_account.clone(), POINTS, -lot.remaining),
                        Posting::member(points_account.clone(), POINTS, lot.remaining),
                    ],
                    negative_allowed: vec![points_account.clone()],
                    ..Default::default()
                },
            )
            .await?;
            activated += lot.remaining;
            // A pending lot always holds points (an emptied one is closed), so the activation
            // posted to the points account and its new balance is known.
            let balance = balances.get(&points_account).copied().unwrap_or(0);
            let share = lot_share_of_credit(lot.remaining, balance);
            let state = if share == 0 { "closed" } else { "active" };
            set_lot_remaining(connection, script, merchant_id, &lot, share, state).await?;
            lot.remaining = share;
            lot.state = state.into();
        }
        if lot.state == "active" && lot.expires_at.is_some_and(|at| at <= now) {
            record(
                connection,
                script,
                merchant_id,
                now,
                NewTransaction {
                    kind: "points.expiry",
                    member_id: Some(member_id.to_string()),
                    reference: Some(lot.id.clone()),
                    reason: Some("points expired".into()),
                    postings: vec![
                        Posting::member(points_account.clone(), POINTS, -lot.remaining),
                        Posting::merchant("points_breakage", POINTS, lot.remaining),
                    ],
                    ..Default::default()
                },
            )
            .await?;
            expired += lot.remaining;
            set_lot_remaining(connection, script, merchant_id, &lot, 0, "closed").await?;
        }
    }
    Ok((activated, expired))
}

/// Members of any merchant with lots due at `now`, for the background job.
pub async fn members_with_due_lots(
    pool: &sqlx::AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<(String, String)>, CoreError> {
    let rows = sqlx::query(
        "SELECT DISTINCT merchant_id, member_id FROM point_lots \
         WHERE (state = 'pending' AND activates_at <= $1) \
            OR (state = 'active' AND expires_at IS NOT NULL AND expires_at <= $1) LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("merchant_id")?, row.try_get("member_id")?)))
        .collect()
}
