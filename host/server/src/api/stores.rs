//! Stores of the merchant.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::merchants::Scope;
use loyalty_core::stores::{self, NewStore, Store};

use crate::api::Page;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

/// Create a store (admin).
#[utoipa::path(post, path = "/v1/stores", tag = "stores", request_body = NewStore,
    responses((status = 201, body = Store), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewStore>,
) -> ApiResult<(StatusCode, Json<Store>)> {
    let principal = auth.require(Scope::Admin)?;
    let store = stores::create_store(
        &state.database.pool,
        &principal.merchant.id,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(store)))
}

#[utoipa::path(get, path = "/v1/stores", tag = "stores", params(PageParams),
    responses((status = 200, body = Page<Store>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Store>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = stores::list_stores(
        &state.database.pool,
        &principal.merchant.id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |store| &store.id)))
}

#[utoipa::path(get, path = "/v1/stores/{id}", tag = "stores",
    responses((status = 200, body = Store), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Store>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        stores::get_store(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}
