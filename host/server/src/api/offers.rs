//! Coupons (templates, issuing to members, a member's coupons) and the gift catalogue with
//! its redemptions. Coupons are used with a purchase (`coupons` on `POST /v1/purchases`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use loyalty_core::coupons::{self, Coupon, CouponTemplate, NewCouponTemplate};
use loyalty_core::gifts::{self, Gift, GiftRedemptionRequest, NewGift};
use loyalty_core::merchants::Scope;
use loyalty_core::operations::{Command, GiftRedemptionReceipt};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::{value_moving, Page};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, Idempotent, PageParams};
use crate::AppState;

/// Create a coupon template (admin).
#[utoipa::path(post, path = "/v1/coupon-templates", tag = "offers", request_body = NewCouponTemplate,
    responses((status = 201, body = CouponTemplate), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_template(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewCouponTemplate>,
) -> ApiResult<(StatusCode, Json<CouponTemplate>)> {
    let principal = auth.require(Scope::Admin)?;
    let template = coupons::create_template(
        &state.database.pool,
        &principal.merchant,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(template)))
}

#[utoipa::path(get, path = "/v1/coupon-templates", tag = "offers", params(PageParams),
    responses((status = 200, body = Page<CouponTemplate>)))]
pub async fn list_templates(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<CouponTemplate>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = coupons::list_templates(
        &state.database.pool,
        &principal.merchant,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |template| &template.id)))
}

#[utoipa::path(get, path = "/v1/coupon-templates/{id}", tag = "offers",
    responses((status = 200, body = CouponTemplate), (status = 404, body = Problem)))]
pub async fn get_template(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<CouponTemplate>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        coupons::get_template(&state.database.pool, &principal.merchant, &id).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponIssue {
    pub template_id: String,
}

/// Issue a coupon to a member (admin); valid for the template's `valid_days` from now.
#[utoipa::path(post, path = "/v1/members/{id}/coupons", tag = "offers", request_body = CouponIssue,
    responses((status = 201, body = Coupon), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn issue(
    State(state): State<AppState>,
    auth: Auth,
    Path(member_id): Path<String>,
    ApiJson(input): ApiJson<CouponIssue>,
) -> ApiResult<(StatusCode, Json<Coupon>)> {
    let principal = auth.require(Scope::Admin)?;
    let coupon = coupons::issue_by_admin(
        &state.database,
        &principal.merchant,
        &member_id,
        &input.template_id,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(coupon)))
}

/// A member's coupons, newest first: issued (usable), redeemed, or expired.
#[utoipa::path(get, path = "/v1/members/{id}/coupons", tag = "offers", params(PageParams),
    responses((status = 200, body = Page<Coupon>), (status = 404, body = Problem)))]
pub async fn member_coupons(
    State(state): State<AppState>,
    auth: Auth,
    Path(member_id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Coupon>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = coupons::member_coupons(
        &state.database.pool,
        &principal.merchant,
        &member_id,
        page.cursor.as_deref(),
        limit,
        state.clock.now(),
    )
    .await?;
    Ok(Json(Page::new(items, limit, |coupon| &coupon.id)))
}

/// Add a gift to the catalogue (admin).
#[utoipa::path(post, path = "/v1/gifts", tag = "offers", request_body = NewGift,
    responses((status = 201, body = Gift), (status = 422, body = Problem)))]
pub async fn create_gift(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewGift>,
) -> ApiResult<(StatusCode, Json<Gift>)> {
    let principal = auth.require(Scope::Admin)?;
    let gift = gifts::create_gift(
        &state.database.pool,
        &principal.merchant.id,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(gift)))
}

#[utoipa::path(get, path = "/v1/gifts", tag = "offers", params(PageParams),
    responses((status = 200, body = Page<Gift>)))]
pub async fn list_gifts(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Gift>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = gifts::list_gifts(
        &state.database.pool,
        &principal.merchant.id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |gift| &gift.id)))
}

#[utoipa::path(get, path = "/v1/gifts/{id}", tag = "offers",
    responses((status = 200, body = Gift), (status = 404, body = Problem)))]
pub async fn get_gift(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Gift>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        gifts::get_gift(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}

/// Exchange a member's points for gifts (pos): points and stock move in one transaction; the
/// stock never goes below zero. Needs an Idempotency-Key.
#[utoipa::path(post, path = "/v1/members/{id}/gift-redemptions", tag = "offers", request_body = GiftRedemptionRequest,
    params(("Idempotency-Key" = String, Header, description = "Unique per value-moving request")),
    responses((status = 201, body = GiftRedemptionReceipt), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn redeem_gift(
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
        async |_, request: GiftRedemptionRequest| {
            gifts::validate_redemption(&request)?;
            Ok(Command::RedeemGift {
                member_id,
                gift_id: request.gift_id,
                quantity: request.quantity,
                store_id: request.store_id,
            })
        },
    )
    .await
}
