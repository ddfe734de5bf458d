//! Webhooks: registrations and their delivery logs; and the merchant's event feed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::events::{self, Event, EVENT_KINDS};
use loyalty_core::merchants::Scope;
use loyalty_core::webhooks::{self, Delivery, NewWebhook, Webhook};
use loyalty_core::{CoreError, FieldError};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::Page;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

/// Register a webhook (admin): events are POSTed to `url`, signed with `secret`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = Webhook), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    let principal = auth.require(Scope::Admin)?;
    let webhook = webhooks::create_webhook(
        &state.database.pool,
        &principal.merchant.id,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(webhook)))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

/// The merchant's webhooks (admin), deleted ones included (`active: false`).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<WebhookList>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(WebhookList {
        items: webhooks::list_webhooks(&state.database.pool, &principal.merchant.id).await?,
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = Webhook), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(
        webhooks::get_webhook(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}

/// Delete a webhook (admin): no new deliveries, pending ones are dropped; its log stays.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    responses((status = 200, body = Webhook), (status = 404, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(
        webhooks::deactivate_webhook(
            &state.database.pool,
            &principal.merchant.id,
            &id,
            state.clock.now(),
        )
        .await?,
    ))
}

/// A webhook's deliveries, newest first: state, attempts, the receiver's last answer.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(PageParams),
    responses((status = 200, body = Page<Delivery>), (status = 404, body = Problem)))]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Delivery>>> {
    let principal = auth.require(Scope::Admin)?;
    let limit = page.limit()?;
    let items = webhooks::list_deliveries(
        &state.database.pool,
        &principal.merchant.id,
        &id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |delivery| &delivery.id)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventListParams {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (events come oldest first).
    pub cursor: Option<String>,
    /// Only events of this kind, e.g. `tier.changed`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events of this member.
    pub member_id: Option<String>,
}

/// The merchant's events, oldest first: the feed for integrations without webhooks.
#[utoipa::path(get, path = "/v1/events", tag = "webhooks", params(EventListParams),
    responses((status = 200, body = Page<Event>), (status = 422, body = Problem)))]
pub async fn list_events(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(params): ApiQuery<EventListParams>,
) -> ApiResult<Json<Page<Event>>> {
    let principal = auth.require(Scope::Read)?;
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    if let Some(kind) = &params.kind {
        if !EVENT_KINDS.contains(&kind.as_str()) {
            return Err(CoreError::Validation(vec![FieldError::new(
                "type",
                format!("one of {}", EVENT_KINDS.join(", ")),
            )])
            .into());
        }
    }
    let items = events::list_events(
        &state.database.pool,
        &principal.merchant.id,
        params.kind.as_deref(),
        params.member_id.as_deref(),
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |event| &event.id)))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "webhooks",
    responses((status = 200, body = Event), (status = 404, body = Problem)))]
pub async fn get_event(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Event>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        events::get_event(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}
