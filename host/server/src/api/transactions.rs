//! Explaining and replaying a ledger transaction's plugin decisions.

use axum::extract::{Path, State};
use axum::Json;
use loyalty_core::merchants::Scope;

use crate::error::{ApiResult, Problem};
use crate::extract::Auth;
use crate::replay::{self, Explanation, ReplayReport};
use crate::AppState;

/// What decided a transaction: the policy, and per plugin call its id, version, sha256, the
/// recorded input (verified against its digest) and the plugin's answer.
#[utoipa::path(get, path = "/v1/transactions/{id}/explain", tag = "ledger",
    responses((status = 200, body = Explanation), (status = 404, body = Problem)))]
pub async fn explain(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Explanation>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        replay::explain(&state, &principal.merchant, &id).await?,
    ))
}

/// Run a transaction's recorded plugin calls again on the recorded plugin versions (admin):
/// whether each answer is identical. Writes nothing.
#[utoipa::path(post, path = "/v1/transactions/{id}/replay", tag = "ledger",
    responses((status = 200, body = ReplayReport), (status = 404, body = Problem)))]
pub async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ReplayReport>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(
        replay::replay(&state, &principal.merchant, &id).await?,
    ))
}
