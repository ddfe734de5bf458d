//! Background jobs: the points lifecycle (activate pending lots, expire lots into breakage),
//! each merchant's daily tick once its local day begins (`scheduler`), and pruning of old
//! idempotency records. Value moves go through the writer like any command, so they never
//! race a purchase of the same member.

use std::collections::HashMap;
use std::time::Duration;

use loyalty_core::merchants::{get_merchant, Merchant};
use loyalty_core::operations::Command;
use loyalty_core::points::{members_with_due_lots, MICROS_PER_DAY};
use loyalty_core::writer::{prune_idempotency_keys, Submission};
use loyalty_core::CoreError;

use crate::api::operator::LifecycleRun;
use crate::AppState;

/// Members one lifecycle run settles at most; a backlog is worked off run by run.
pub const LIFECYCLE_MEMBERS_PER_RUN_MAX: i64 = 10_000;
/// How long applied Idempotency-Keys are kept (the API promises at least 24 hours).
pub const IDEMPOTENCY_RETENTION_DAYS: i64 = 7;

pub async fn run_points_lifecycle(state: &AppState) -> Result<LifecycleRun, CoreError> {
    let now = state.clock.now();
    let due =
        members_with_due_lots(&state.database.pool, now, LIFECYCLE_MEMBERS_PER_RUN_MAX).await?;
    let mut merchants: HashMap<String, Merchant> = HashMap::new();
    let mut run = LifecycleRun {
        members: 0,
        points_activated: 0,
        points_expired: 0,
    };
    for (merchant_id, member_id) in due {
        if !merchants.contains_key(&merchant_id) {
            let merchant = get_merchant(&state.database.pool, &merchant_id).await?;
            merchants.insert(merchant_id.clone(), merchant);
        }
        let merchant = merchants[&merchant_id].clone();
        let outcome = state
            .writer
            .submit(Submission {
                merchant,
                claim: None,
                command: Command::Settle { member_id },
                now,
            })
            .await?;
        let counts: serde_json::Value = serde_json::from_str(&outcome.body)
            .map_err(|error| CoreError::Internal(error.to_string()))?;
        run.members += 1;
        run.points_activated += counts["activated"].as_i64().unwrap_or(0);
        run.points_expired += counts["expired"].as_i64().unwrap_or(0);
    }
    Ok(run)
}

/// How often the host looks for PostgreSQL tables with stale statistics. Often, because a
/// young table's first statistics decide the plans the lanes cache; the look itself is one
/// read of `pg_stat_user_tables`.
pub const STATISTICS_CHECK_INTERVAL_SECONDS: u64 = 2;

/// On PostgreSQL, keeps the planner's statistics fresh forever (see
/// [`loyalty_core::db::refresh_statistics`]); on SQLite it returns at once.
pub async fn refresh_statistics_forever(state: AppState) {
    if state.database.backend != loyalty_core::Backend::Postgres {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(STATISTICS_CHECK_INTERVAL_SECONDS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match loyalty_core::db::refresh_statistics(&state.database).await {
            Ok(tables) if !tables.is_empty() => {
                tracing::debug!(?tables, "refreshed planner statistics")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
        }
    }
}

/// Runs the jobs forever at `interval`.
pub async fn run_forever(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run_points_lifecycle(&state).await {
            Ok(run) if run.members > 0 => tracing::info!(
                members = run.members,
                activated = run.points_activated,
                expired = run.points_expired,
                "points lifecycle"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "points lifecycle failed"),
        }
        match crate::scheduler::run_due_days(&state).await {
            Ok(runs) => {
                for run in runs {
                    tracing::info!(merchant = %run.merchant_id, date = %run.local_date, "daily tick ran");
                }
            }
            Err(error) => tracing::error!(%error, "daily ticks failed"),
        }
        let before = state.clock.now() - IDEMPOTENCY_RETENTION_DAYS * MICROS_PER_DAY;
        if let Err(error) = prune_idempotency_keys(&state.database.pool, before).await {
            tracing::error!(%error, "pruning idempotency keys failed");
        }
    }
}
