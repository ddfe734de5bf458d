//! Campaigns: create (admin), list, read, stats; and the tags campaigns put on members.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::campaigns::{self, Campaign, CampaignStats, NewCampaign};
use loyalty_core::merchants::Scope;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::Page;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

/// Start a campaign (admin): a campaign-trigger plugin with configuration, stores, a schedule,
/// a budget and a per-member cap.
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = NewCampaign,
    responses((status = 201, body = Campaign), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let principal = auth.require(Scope::Admin)?;
    let campaign = campaigns::create_campaign(
        &state.database.pool,
        &principal.merchant,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", params(PageParams),
    responses((status = 200, body = Page<Campaign>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Campaign>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = campaigns::list_campaigns(
        &state.database.pool,
        &principal.merchant.id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |campaign| &campaign.id)))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns",
    responses((status = 200, body = Campaign), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        campaigns::get_campaign(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}

/// What a campaign did: members reached, points granted, coupons issued and redeemed, the
/// revenue of purchases that used its coupons, actions applied and dropped.
#[utoipa::path(get, path = "/v1/campaigns/{id}/stats", tag = "campaigns",
    responses((status = 200, body = CampaignStats), (status = 404, body = Problem)))]
pub async fn stats(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignStats>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        campaigns::campaign_stats(&state.database.pool, &principal.merchant, &id).await?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tags {
    pub tags: Vec<String>,
}

/// The tags campaigns put on a member, in order.
#[utoipa::path(get, path = "/v1/members/{id}/tags", tag = "campaigns",
    responses((status = 200, body = Tags), (status = 404, body = Problem)))]
pub async fn tags(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Tags>> {
    let principal = auth.require(Scope::Read)?;
    let tags = campaigns::member_tags(&state.database.pool, &principal.merchant.id, &id).await?;
    Ok(Json(Tags { tags }))
}
