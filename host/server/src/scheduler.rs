//! The daily tick: once per merchant and local date, in the merchant's time zone. It settles
//! due point lots (activation, expiry), emits `points.expiring` for points that expire
//! `points_expiry_notice_days` ahead, asks tier policies about every member who bought, and
//! sends `daily tick` to running campaigns for every member.
//! Each (merchant, date) is claimed in the database, so a restart or a second host never runs
//! a day twice; every step is idempotent, so a day a dead host left half done is finished by
//! the next claim after the lease.

use jiff::ToSpan;
use loyalty_core::events::{insert_event, NewEvent, POINTS_EXPIRING};
use loyalty_core::merchants::{get_merchant, Merchant};
use loyalty_core::operations::Command;
use loyalty_core::session::Session;
use loyalty_core::ticks::{self, Claim};
use loyalty_core::tiers::{list_tiers, TierSource};
use loyalty_core::writer::Submission;
use loyalty_core::CoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{campaigns, tiers, AppState};

/// Members settled per round of a tick; rounds repeat until none is due.
pub const SETTLE_MEMBERS_PER_ROUND_MAX: i64 = 10_000;
/// Rounds of settlement one tick runs at most (a bound, far above any real backlog).
pub const SETTLE_ROUNDS_MAX: usize = 1_000;
/// Members read per page for notices and tier evaluation.
pub const MEMBERS_PER_PAGE: i64 = 1_000;
/// Pages one tick reads at most per step: 10 million members.
pub const PAGES_MAX: usize = 10_000;

/// What a tick did.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
pub struct TickSummary {
    pub members_settled: i64,
    pub points_activated: i64,
    pub points_expired: i64,
    /// `points.expiring` events written (members notified).
    pub expiry_notices: i64,
    pub tiers_evaluated: i64,
    pub tiers_changed: i64,
    /// Campaign trigger calls with `daily tick`, and what their actions came to.
    pub campaign_calls: i64,
    pub campaign_actions_applied: i64,
    pub campaign_actions_dropped: i64,
}

/// The answer of [`run_day`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TickRun {
    pub merchant_id: String,
    pub local_date: String,
    /// `ran`: this call ran the day; `already_done`; `running_elsewhere`.
    pub outcome: &'static str,
    pub summary: Option<TickSummary>,
}

/// The merchant's local date at `now`.
pub fn local_date(timezone: &str, now: i64) -> Result<jiff::civil::Date, CoreError> {
    let zone = zone(timezone)?;
    let at = jiff::Timestamp::from_microsecond(now)
        .map_err(|error| CoreError::Internal(format!("a timestamp out of range: {error}")))?;
    Ok(zone.to_datetime(at).date())
}

/// The first instant of `date` in the merchant's zone, as unix microseconds.
pub fn day_start(timezone: &str, date: jiff::civil::Date) -> Result<i64, CoreError> {
    let zoned = date
        .to_zoned(zone(timezone)?)
        .map_err(|error| CoreError::Internal(format!("the start of {date}: {error}")))?;
    Ok(zoned.timestamp().as_microsecond())
}

fn zone(timezone: &str) -> Result<jiff::tz::TimeZone, CoreError> {
    jiff::tz::TimeZone::get(timezone)
        .map_err(|error| CoreError::Internal(format!("time zone {timezone}: {error}")))
}

/// Parses a `--date` / `local_date`: YYYY-MM-DD, not after the merchant's today.
pub fn parse_day(
    merchant: &Merchant,
    text: &str,
    now: i64,
) -> Result<jiff::civil::Date, CoreError> {
    let date: jiff::civil::Date = text
        .parse()
        .map_err(|_| CoreError::field("date", "a date as YYYY-MM-DD"))?;
    if date > local_date(&merchant.timezone, now)? {
        return Err(CoreError::field(
            "date",
            "a day that has begun in the merchant's time zone (ticks never run ahead)",
        ));
    }
    Ok(date)
}

/// Runs the merchant's `date` once. Today's tick runs at `now`; a past day (run by hand
/// after an outage) runs as of that day's last instant.
pub async fn run_day(
    state: &AppState,
    merchant_id: &str,
    date: jiff::civil::Date,
) -> Result<TickRun, CoreError> {
    let merchant = get_merchant(&state.database.pool, merchant_id).await?;
    let clock_now = state.clock.now();
    let today = local_date(&merchant.timezone, clock_now)?;
    let now = if date >= today {
        clock_now
    } else {
        day_start(&merchant.timezone, date.tomorrow().map_err(internal)?)? - 1
    };
    let local_date = date.to_string();
    let claim =
        ticks::claim_day(&state.database.pool, &merchant.id, &local_date, clock_now).await?;
    let outcome = match claim {
        Claim::Claimed => "ran",
        Claim::Done => "already_done",
        Claim::Running => "running_elsewhere",
    };
    if claim != Claim::Claimed {
        return Ok(TickRun {
            merchant_id: merchant.id,
            local_date,
            outcome,
            summary: None,
        });
    }
    let mut summary = TickSummary::default();
    settle(state, &merchant, now, &mut summary).await?;
    notify_expiring(state, &merchant, date, now, &mut summary).await?;
    evaluate_tiers(state, &merchant, now, &mut summary).await?;
    tick_campaigns(state, &merchant, date, now, &mut summary).await?;
    ticks::finish_day(
        &state.database.pool,
        &merchant.id,
        &local_date,
        &serde_json::to_value(&summary).expect("summaries serialize"),
        state.clock.now(),
    )
    .await?;
    tracing::info!(merchant = %merchant.id, date = %local_date, ?summary, "daily tick");
    Ok(TickRun {
        merchant_id: merchant.id,
        local_date,
        outcome,
        summary: Some(summary),
    })
}

fn internal(error: jiff::Error) -> CoreError {
    CoreError::Internal(error.to_string())
}

async fn settle(
    state: &AppState,
    merchant: &Merchant,
    now: i64,
    summary: &mut TickSummary,
) -> Result<(), CoreError> {
    for _ in 0..SETTLE_ROUNDS_MAX {
        let due = ticks::merchant_members_with_due_lots(
            &state.database.pool,
            &merchant.id,
            now,
            SETTLE_MEMBERS_PER_ROUND_MAX,
        )
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        for member_id in due {
            let outcome = state
                .writer
                .submit(Submission {
                    merchant: merchant.clone(),
                    claim: None,
                    command: Command::Settle { member_id },
                    now,
                })
                .await?;
            let counts: serde_json::Value = serde_json::from_str(&outcome.body)
                .map_err(|error| CoreError::Internal(error.to_string()))?;
            summary.members_settled += 1;
            summary.points_activated += counts["activated"].as_i64().unwrap_or(0);
            summary.points_expired += counts["expired"].as_i64().unwrap_or(0);
        }
    }
    tracing::warn!(merchant = %merchant.id, "settlement stopped at its round limit; the next run continues");
    Ok(())
}

/// One `points.expiring` per member whose points expire on the day `notice_days` ahead. The
/// dedupe key (member, that day) makes a rerun of the day write nothing new.
async fn notify_expiring(
    state: &AppState,
    merchant: &Merchant,
    date: jiff::civil::Date,
    now: i64,
    summary: &mut TickSummary,
) -> Result<(), CoreError> {
    let days = merchant.settings.points_expiry_notice_days;
    if days == 0 {
        return Ok(());
    }
    let target = date.checked_add(i64::from(days).days()).map_err(internal)?;
    let from = day_start(&merchant.timezone, target)?;
    let until = day_start(&merchant.timezone, target.tomorrow().map_err(internal)?)?;
    let mut cursor = String::new();
    for _ in 0..PAGES_MAX {
        let page = ticks::points_expiring_between(
            &state.database.pool,
            &merchant.id,
            from,
            until,
            &cursor,
            MEMBERS_PER_PAGE,
        )
        .await?;
        let Some((last, _, _)) = page.last() else {
            return Ok(());
        };
        cursor = last.clone();
        for (member_id, points, expires_at) in &page {
            let event = NewEvent::member(
                POINTS_EXPIRING,
                member_id,
                serde_json::json!({
                    "member_id": member_id,
                    "points": points,
                    "expires_at": loyalty_core::db::format_micros(*expires_at),
                    "expires_on": target.to_string(),
                }),
            )
            .deduplicated_by(format!("{POINTS_EXPIRING}:{member_id}:{target}"));
            if insert_event(
                &mut Session::Pool(&state.database.pool),
                &merchant.id,
                event,
                now,
            )
            .await?
            .is_some()
            {
                summary.expiry_notices += 1;
            }
        }
    }
    Ok(())
}

/// Asks the tier policy of each buying member's latest store (evaluation windows move and
/// downgrades happen without a purchase).
async fn evaluate_tiers(
    state: &AppState,
    merchant: &Merchant,
    now: i64,
    summary: &mut TickSummary,
) -> Result<(), CoreError> {
    if list_tiers(&state.database.pool, &merchant.id)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let mut cursor = String::new();
    for _ in 0..PAGES_MAX {
        let page = ticks::members_with_home_store(
            &state.database.pool,
            &merchant.id,
            &cursor,
            MEMBERS_PER_PAGE,
        )
        .await?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        cursor = last.clone();
        for (member_id, store_id) in &page {
            let Some(store_id) = store_id else { continue };
            summary.tiers_evaluated += 1;
            match tiers::evaluate(
                state,
                merchant,
                member_id,
                store_id,
                TierSource::DailyTick,
                now,
            )
            .await
            {
                Ok(Some(change)) if change.changed => summary.tiers_changed += 1,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, member = %member_id, "tier evaluation failed in the daily tick")
                }
            }
        }
    }
    Ok(())
}

/// Sends `daily tick` for every member to every running campaign (birthday, member day,
/// win-back); each (campaign, day, member) applies once.
async fn tick_campaigns(
    state: &AppState,
    merchant: &Merchant,
    date: jiff::civil::Date,
    now: i64,
    summary: &mut TickSummary,
) -> Result<(), CoreError> {
    let running = campaigns::running_campaigns(state, &merchant.id, now).await?;
    if running.is_empty() {
        return Ok(());
    }
    let cause = format!("tick:{date}");
    let mut reach = campaigns::Reach::default();
    let mut cursor = String::new();
    for _ in 0..PAGES_MAX {
        let page = ticks::member_ids(
            &state.database.pool,
            &merchant.id,
            &cursor,
            MEMBERS_PER_PAGE,
        )
        .await?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.clone();
        for member_id in &page {
            match campaigns::run(
                state,
                merchant,
                &running,
                member_id,
                None,
                &loyalty_runtime::Event::DailyTick,
                &cause,
                now,
            )
            .await
            {
                Ok(member_reach) => reach.add(member_reach),
                Err(error) => {
                    tracing::error!(%error, member = %member_id, "campaigns failed in the daily tick")
                }
            }
        }
    }
    summary.campaign_calls += reach.calls;
    summary.campaign_actions_applied += reach.applied;
    summary.campaign_actions_dropped += reach.dropped;
    Ok(())
}

/// Runs every merchant's today that has not run yet (the background loop's round).
pub async fn run_due_days(state: &AppState) -> Result<Vec<TickRun>, CoreError> {
    let mut runs = Vec::new();
    let now = state.clock.now();
    for (merchant_id, timezone) in ticks::merchants_and_zones(&state.database.pool).await? {
        let date = match local_date(&timezone, now) {
            Ok(date) => date,
            Err(error) => {
                tracing::error!(%error, merchant = %merchant_id, "no local date; tick skipped");
                continue;
            }
        };
        let run = run_day(state, &merchant_id, date).await?;
        if run.outcome == "ran" {
            runs.push(run);
        }
    }
    Ok(runs)
}
