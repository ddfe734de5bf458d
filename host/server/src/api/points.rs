//! Points redemptions (pos) and adjustments (admin).

use axum::extract::{Path, State};
use axum::response::Response;
use loyalty_core::merchants::Scope;
use loyalty_core::operations::{self, Command, PointsReceipt, PointsRequest};

use crate::api::value_moving;
use crate::error::{ApiResult, Problem};
use crate::extract::{Auth, Idempotent};
use crate::AppState;

/// Spend points outside a purchase (a gift, a service). Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/points/redemptions", tag = "points", request_body = PointsRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = PointsReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn redeem(
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
        async |_, request: PointsRequest| {
            operations::prepare_points(&request, false)?;
            Ok(Command::Redeem {
                member_id,
                points: request.points,
                reason: request.reason,
            })
        },
    )
    .await
}

/// Add or remove points by hand (admin), with a reason. Removing more than is available
/// needs the merchant to allow negative points. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/points/adjustments", tag = "points", request_body = PointsRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = PointsReceipt), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn adjust(
    State(state): State<AppState>,
    auth: Auth,
    Path(member_id): Path<String>,
    idempotent: Idempotent,
) -> ApiResult<Response> {
    value_moving(
        &state,
        &auth,
        Scope::Admin,
        idempotent,
        async |_, request: PointsRequest| {
            operations::prepare_points(&request, true)?;
            Ok(Command::Adjust {
                member_id,
                points: request.points,
                reason: request.reason,
            })
        },
    )
    .await
}
