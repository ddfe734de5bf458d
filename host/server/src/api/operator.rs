//! Operator actions: run the background jobs now.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::Operator;
use crate::AppState;
use crate::{jobs, scheduler};

#[derive(Debug, Serialize, ToSchema)]
pub struct LifecycleRun {
    pub members: usize,
    pub points_activated: i64,
    pub points_expired: i64,
}

/// Activate due pending points and expire due lots for every merchant now (the background
/// job does the same on its own schedule).
#[utoipa::path(post, path = "/v1/operator/jobs/points-lifecycle", tag = "operator",
    security(("operator" = [])),
    responses((status = 200, body = LifecycleRun), (status = 401, body = Problem)))]
pub async fn points_lifecycle(
    State(state): State<AppState>,
    _operator: Operator,
) -> ApiResult<Json<LifecycleRun>> {
    let run = jobs::run_points_lifecycle(&state).await?;
    Ok(Json(run))
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DailyTickRequest {
    pub merchant_id: String,
    /// The merchant's local date, YYYY-MM-DD; default: today there. Never a future day.
    pub date: Option<String>,
}

/// Run a merchant's daily tick for a day now (at most once per day: a day that ran answers
/// `already_done`). The background scheduler runs each merchant's today on its own.
#[utoipa::path(post, path = "/v1/operator/jobs/daily-tick", tag = "operator",
    security(("operator" = [])), request_body = DailyTickRequest,
    responses((status = 200, body = scheduler::TickRun), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn daily_tick(
    State(state): State<AppState>,
    _operator: Operator,
    crate::extract::ApiJson(request): crate::extract::ApiJson<DailyTickRequest>,
) -> ApiResult<Json<scheduler::TickRun>> {
    let merchant =
        loyalty_core::merchants::get_merchant(&state.database.pool, &request.merchant_id).await?;
    let now = state.clock.now();
    let date = match &request.date {
        Some(text) => scheduler::parse_day(&merchant, text, now)?,
        None => scheduler::local_date(&merchant.timezone, now)?,
    };
    Ok(Json(scheduler::run_day(&state, &merchant.id, date).await?))
}
