//! Operator actions: run the background jobs now.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::Operator;
use crate::jobs;
use crate::AppState;

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
