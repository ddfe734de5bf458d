//! Purchases and refunds: the main job of the host.

use axum::extract::{Path, State};
use axum::response::Response;
use loyalty_core::merchants::{Merchant, Scope};
use loyalty_core::operations::{
    self, Command, PurchaseReceipt, PurchaseRequest, RefundReceipt, RefundRequest,
};
use loyalty_core::tiers::TierSource;
use loyalty_core::CoreError;

use crate::api::{applied_now, value_moving};
use crate::error::{ApiResult, Problem};
use crate::extract::{Auth, Idempotent};
use crate::{tiers, AppState};

/// Record a purchase: earns points (pending for the return window), and draws stored value
/// and points used as payment, all in one transaction. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/purchases", tag = "purchases", request_body = PurchaseRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = PurchaseReceipt), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    idempotent: Idempotent,
) -> ApiResult<Response> {
    // Set only when this request (not a replay of an earlier one) sends a command.
    let mut written: Option<(Merchant, String, String)> = None;
    let response = value_moving(
        &state,
        &auth,
        Scope::Pos,
        idempotent,
        async |principal, request: PurchaseRequest| {
            let command =
                purchase_command(&state, &principal.merchant, &request, state.clock.now()).await?;
            written = Some((
                principal.merchant.clone(),
                request.member_id.clone(),
                request.store_id.clone(),
            ));
            Ok(command)
        },
    )
    .await?;
    if let Some((merchant, member_id, store_id)) = written {
        if applied_now(&response) {
            tiers::after_change(
                &state,
                &merchant,
                &member_id,
                &store_id,
                TierSource::Purchase,
                state.clock.now(),
            )
            .await;
        }
    }
    Ok(response)
}

/// Refund items or an amount of a purchase (or, with neither, the rest of it). Points are
/// reversed and payments returned in proportion. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/purchases/{id}/refunds", tag = "purchases", request_body = RefundRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = RefundReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn refund(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    idempotent: Idempotent,
) -> ApiResult<Response> {
    let mut written: Option<(Merchant, String, String)> = None;
    let response = value_moving(
        &state,
        &auth,
        Scope::Pos,
        idempotent,
        async |principal, request: RefundRequest| {
            let (command, store_id) =
                refund_command(&state, &principal.merchant, id, &request).await?;
            written = Some((
                principal.merchant.clone(),
                command.route_key().to_string(),
                store_id,
            ));
            Ok(command)
        },
    )
    .await?;
    if let Some((merchant, member_id, store_id)) = written {
        if applied_now(&response) {
            tiers::after_change(
                &state,
                &merchant,
                &member_id,
                &store_id,
                TierSource::Refund,
                state.clock.now(),
            )
            .await;
        }
    }
    Ok(response)
}

/// A purchase request as the writer's command: validated, and its points decided by the
/// store's earn rules (the merchant's base rate without any), at `now` — the API's clock, or
/// the receipt's own time for an import. Every purchase, the API's or an import's, is made here.
pub async fn purchase_command(
    state: &AppState,
    merchant: &Merchant,
    request: &PurchaseRequest,
    now: i64,
) -> Result<Command, CoreError> {
    let mut command =
        operations::prepare_purchase(merchant, request, state.earn_policy.as_ref(), now)?;
    state
        .plugins
        .decide_earn(&state.database, merchant, &mut command, now)
        .await?;
    Ok(Command::Purchase(command))
}

/// A refund request of purchase `purchase_id` as the writer's command (routed by the
/// purchase's member), and the purchase's store. Every refund, the API's or an import's, is
/// made here.
pub async fn refund_command(
    state: &AppState,
    merchant: &Merchant,
    purchase_id: String,
    request: &RefundRequest,
) -> Result<(Command, String), CoreError> {
    let scope = operations::prepare_refund(merchant, request)?;
    let (member_id, store_id) =
        operations::purchase_member(&state.database.pool, &merchant.id, &purchase_id).await?;
    Ok((
        Command::Refund {
            purchase_id,
            member_id,
            scope,
        },
        store_id,
    ))
}

/// A purchase with its lines, payments and refunds.
#[utoipa::path(get, path = "/v1/purchases/{id}", tag = "purchases",
    responses((status = 200, body = operations::PurchaseDetail), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<operations::PurchaseDetail>> {
    let principal = auth.require(Scope::Read)?;
    Ok(axum::Json(
        operations::get_purchase(&state.database.pool, &principal.merchant, &id).await?,
    ))
}
