//! Count cards (计次): packages, sales to members, consumptions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use loyalty_core::merchants::Scope;
use loyalty_core::operations::{
    self, Command, ConsumptionReceipt, ConsumptionRequest, CountCardReceipt, CountCardSaleRequest,
};
use loyalty_core::stores::{self, CountCardPackage, NewCountCardPackage};

use crate::api::{value_moving, Page};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, Idempotent, PageParams};
use crate::AppState;

/// Define a count-card package (admin).
#[utoipa::path(post, path = "/v1/count-card-packages", tag = "count-cards", request_body = NewCountCardPackage,
    responses((status = 201, body = CountCardPackage), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_package(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewCountCardPackage>,
) -> ApiResult<(StatusCode, Json<CountCardPackage>)> {
    let principal = auth.require(Scope::Admin)?;
    let package = stores::create_package(
        &state.database.pool,
        &principal.merchant,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(package)))
}

#[utoipa::path(get, path = "/v1/count-card-packages", tag = "count-cards", params(PageParams),
    responses((status = 200, body = Page<CountCardPackage>)))]
pub async fn list_packages(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<CountCardPackage>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = stores::list_packages(
        &state.database.pool,
        &principal.merchant,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |package| &package.id)))
}

#[utoipa::path(get, path = "/v1/count-card-packages/{id}", tag = "count-cards",
    responses((status = 200, body = CountCardPackage), (status = 404, body = Problem)))]
pub async fn get_package(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CountCardPackage>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        stores::get_package(&state.database.pool, &principal.merchant, &id).await?,
    ))
}

/// Sell a count card to a member. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/count-cards", tag = "count-cards", request_body = CountCardSaleRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = CountCardReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn sell(
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
        async |principal, request: CountCardSaleRequest| {
            operations::prepare_count_card_sale(&request)?;
            let package = stores::package_terms(
                &state.database.pool,
                &principal.merchant.id,
                &request.package_id,
            )
            .await?;
            Ok(Command::SellCountCard {
                member_id,
                store_id: request.store_id,
                package,
                method: request.payment_method,
            })
        },
    )
    .await
}

/// Use a count card. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/count-cards/{card_id}/consumptions", tag = "count-cards",
    request_body = ConsumptionRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = ConsumptionReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn consume(
    State(state): State<AppState>,
    auth: Auth,
    Path((member_id, card_id)): Path<(String, String)>,
    idempotent: Idempotent,
) -> ApiResult<Response> {
    value_moving(
        &state,
        &auth,
        Scope::Pos,
        idempotent,
        async |_, request: ConsumptionRequest| {
            operations::prepare_consumption(&request)?;
            Ok(Command::Consume {
                member_id,
                card_id,
                store_id: request.store_id,
                uses: request.uses,
            })
        },
    )
    .await
}
