//! Stored value (储值): top-ups with bonus.

use axum::extract::{Path, State};
use axum::response::Response;
use loyalty_core::merchants::Scope;
use loyalty_core::operations::{self, Command, TopUpReceipt, TopUpRequest};

use crate::api::value_moving;
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
    value_moving(
        &state,
        &auth,
        Scope::Pos,
        idempotent,
        async |principal, request: TopUpRequest| {
            let amount = operations::prepare_top_up(&principal.merchant, &request)?;
            Ok(Command::TopUp {
                member_id,
                store_id: request.store_id,
                amount,
                method: request.payment_method,
            })
        },
    )
    .await
}
