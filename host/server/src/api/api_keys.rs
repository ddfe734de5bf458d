//! API keys of the merchant (admin).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::merchants::{self, ApiKeyView, CreatedApiKey, Scope};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::Page;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    /// `admin` (everything), `pos` (purchases, refunds, redemptions, top-ups, count cards, members) or `read`.
    pub scopes: Vec<Scope>,
}

/// Create a key; the secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let principal = auth.require(Scope::Admin)?;
    let key = merchants::create_api_key(
        &state.database.pool,
        &principal.merchant.id,
        &input.name,
        &input.scopes,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// List keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = Page<ApiKeyView>), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    let principal = auth.require(Scope::Admin)?;
    let limit = page.limit()?;
    let keys = merchants::list_api_keys(
        &state.database.pool,
        &principal.merchant.id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(keys, limit, |key| &key.id)))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    responses((status = 200, body = ApiKeyView), (status = 404, body = Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let principal = auth.require(Scope::Admin)?;
    let key = merchants::revoke_api_key(
        &state.database.pool,
        &principal.merchant.id,
        &id,
        state.clock.now(),
    )
    .await?;
    state.principals.forget_merchant(&principal.merchant.id);
    Ok(Json(key))
}
