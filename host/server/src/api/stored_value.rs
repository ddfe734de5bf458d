//! Stored value (储值): top-ups with bonus.

use axum::extract::{Path, State};
use axum::response::Response;
use loyalty_core::merchants::Scope;
use loyalty_core::operations::{self, Command, TopUpReceipt, TopUpRequest};

use crate::api::{replay, submit};
use crate::error::{ApiResult, Problem};
use crate::extract::{Auth, Idempotent};
use crate::AppState;

/// Top up a member's stored value; the merchant's bonus rules add a bonus (充500送100).
/// Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/stored-value/top-ups", tag = "stored-value", request_body = TopUpRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = TopUpReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn top_up(
    State(state): State<AppState>,
    auth: Auth,
    Path(member_id): Path<String>,
    idempotent: Idempotent,
) -> ApiResult<Response> {
    let principal = auth.require(Scope::Pos)?;
    if let Some(response) = replay(&state, principal, &idempotent).await? {
        return Ok(response);
    }
    let request: TopUpRequest = idempotent.parse()?;
    let amount = operations::prepare_top_up(&principal.merchant, &request)?;
    let command = Command::TopUp {
        member_id,
        store_id: request.store_id,
        amount,
        method: request.payment_method,
    };
    submit(&state, principal, idempotent, command).await
}
