//! Tiers: the merchant's definitions, a member's tier history, and an admin's tier change.

use axum::extract::{Path, State};
use axum::Json;
use loyalty_core::members;
use loyalty_core::merchants::Scope;
use loyalty_core::operations::Command;
use loyalty_core::session::Session;
use loyalty_core::tiers::{
    self, TierChangeCommand, TierChangeOutcome, TierHistoryEntry, TierList, TierSource, TiersInput,
    TIER_REASON_LENGTH_MAX,
};
use loyalty_core::{CoreError, FieldError};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::Page;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

/// The merchant's tiers, lowest first.
#[utoipa::path(get, path = "/v1/tiers", tag = "tiers", responses((status = 200, body = TierList)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<TierList>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(TierList {
        tiers: tiers::list_tiers(&state.database.pool, &principal.merchant.id).await?,
    }))
}

/// Replace the merchant's tiers (admin), lowest first. Dropping a tier members hold is a 409.
#[utoipa::path(put, path = "/v1/tiers", tag = "tiers", request_body = TiersInput,
    responses((status = 200, body = TierList), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<TiersInput>,
) -> ApiResult<Json<TierList>> {
    let principal = auth.require(Scope::Admin)?;
    let tiers = tiers::put_tiers(
        &state.database.pool,
        &principal.merchant.id,
        &input,
        state.clock.now(),
    )
    .await?;
    Ok(Json(TierList { tiers }))
}

/// A member's tier changes, newest first, with reason and provenance.
#[utoipa::path(get, path = "/v1/members/{id}/tier-history", tag = "tiers", params(PageParams),
    responses((status = 200, body = Page<TierHistoryEntry>), (status = 404, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TierHistoryEntry>>> {
    let principal = auth.require(Scope::Read)?;
    let limit = page.limit()?;
    let items = tiers::tier_history(
        &state.database.pool,
        &principal.merchant.id,
        &id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |entry| &entry.id)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierAssignment {
    /// One of the merchant's tier codes, or null for none.
    pub tier: Option<String>,
    /// Why, for the member's history.
    pub reason: String,
}

/// Set a member's tier by hand (admin); recorded in the history with the key that did it.
#[utoipa::path(put, path = "/v1/members/{id}/tier", tag = "tiers", request_body = TierAssignment,
    responses((status = 200, body = TierChangeOutcome), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn assign(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<TierAssignment>,
) -> ApiResult<Json<TierChangeOutcome>> {
    let principal = auth.require(Scope::Admin)?;
    let merchant = &principal.merchant;
    let mut errors = Vec::new();
    let reason = input.reason.trim();
    if reason.is_empty() || reason.chars().count() > TIER_REASON_LENGTH_MAX {
        errors.push(FieldError::new(
            "reason",
            format!("1 to {TIER_REASON_LENGTH_MAX} characters"),
        ));
    }
    if let Some(code) = &input.tier {
        let known = tiers::list_tiers(&state.database.pool, &merchant.id).await?;
        if !known.iter().any(|tier| &tier.code == code) {
            errors.push(FieldError::new("tier", "not one of the merchant's tiers"));
        }
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors).into());
    }
    let member =
        members::get_member(&mut Session::Pool(&state.database.pool), merchant, &id).await?;
    if member.tier == input.tier {
        return Ok(Json(TierChangeOutcome {
            changed: false,
            from: member.tier.clone(),
            to: member.tier,
            history_id: None,
        }));
    }
    let command = Command::ChangeTier(TierChangeCommand {
        member_id: id,
        expected_from: member.tier,
        to: input.tier,
        reason: reason.to_string(),
        source: TierSource::Admin,
        provenance: Some(serde_json::json!({"api_key_id": principal.key_id})),
    });
    let outcome = crate::tiers::apply(&state, merchant, command, state.clock.now()).await?;
    if !outcome.changed {
        return Err(CoreError::Conflict(
            "the member's tier changed meanwhile; read it and try again".into(),
        )
        .into());
    }
    Ok(Json(outcome))
}
