//! The merchant's daily ticks: which local dates ran, and what each did.

use axum::extract::State;
use axum::Json;
use loyalty_core::merchants::Scope;
use loyalty_core::ticks::{self, TickRecord};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::Auth;
use crate::AppState;

/// Days listed at most.
pub const TICKS_LISTED_MAX: i64 = 60;

#[derive(Debug, Serialize, ToSchema)]
pub struct TickList {
    pub items: Vec<TickRecord>,
}

/// The merchant's most recent daily ticks (at most 60), newest first.
#[utoipa::path(get, path = "/v1/ticks", tag = "webhooks", responses((status = 200, body = TickList)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<TickList>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(TickList {
        items: ticks::recent_days(
            &state.database.pool,
            &principal.merchant.id,
            TICKS_LISTED_MAX,
        )
        .await?,
    }))
}
