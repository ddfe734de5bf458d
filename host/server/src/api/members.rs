//! Members, their balances and their ledger.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use loyalty_core::db::new_id;
use loyalty_core::ledger::{self, Balances, LedgerEntry};
use loyalty_core::members::{self, Member, MemberFilter, MemberPatch, NewMember};
use loyalty_core::merchants::Scope;
use loyalty_core::operations::Command;
use loyalty_core::session::Session;
use serde::Deserialize;

use crate::api::{respond, submit, Page};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::AppState;

/// Enrol a member (admin or pos).
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = NewMember,
    responses((status = 201, body = Member), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(input): ApiJson<NewMember>,
) -> ApiResult<Response> {
    let principal = auth.require(Scope::Pos)?;
    let outcome = submit(
        &state,
        principal,
        None,
        Command::EnrolMember {
            member_id: new_id("mem"),
            member: input,
        },
    )
    .await?;
    Ok(respond(outcome))
}

#[utoipa::path(get, path = "/v1/members/{id}", tag = "members",
    responses((status = 200, body = Member), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Member>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(
        members::get_member(
            &mut Session::Pool(&state.database.pool),
            &principal.merchant,
            &id,
        )
        .await?,
    ))
}

/// Change a member's profile (admin or pos); `null` clears a field.
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", request_body = MemberPatch,
    responses((status = 200, body = Member), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<MemberPatch>,
) -> ApiResult<Response> {
    let principal = auth.require(Scope::Pos)?;
    let outcome = submit(
        &state,
        principal,
        None,
        Command::UpdateMember {
            member_id: id,
            patch,
        },
    )
    .await?;
    Ok(respond(outcome))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MemberListParams {
    /// Exact phone (any notation; compared in E.164).
    pub phone: Option<String>,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// List or look up members.
#[utoipa::path(get, path = "/v1/members", tag = "members", params(MemberListParams),
    responses((status = 200, body = Page<Member>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(params): ApiQuery<MemberListParams>,
) -> ApiResult<Json<Page<Member>>> {
    let principal = auth.require(Scope::Read)?;
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = page.limit()?;
    let filter = MemberFilter {
        phone: params.phone,
        email: params.email,
        external_id: params.external_id,
    };
    let items = members::list_members(
        &state.database.pool,
        &principal.merchant,
        &filter,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |member| &member.id)))
}

/// Points (available, pending, next expiry), stored value (principal, bonus) and count cards.
#[utoipa::path(get, path = "/v1/members/{id}/balances", tag = "members",
    responses((status = 200, body = Balances), (status = 404, body = Problem)))]
pub async fn balances(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Balances>> {
    let principal = auth.require(Scope::Read)?;
    let merchant = &principal.merchant;
    let mut connection = state
        .database
        .pool
        .acquire()
        .await
        .map_err(loyalty_core::CoreError::from)?;
    let balances = ledger::balances(
        &mut Session::Pooled(&mut connection),
        &merchant.id,
        &id,
        merchant.currency_exponent,
        state.clock.now(),
        &[],
    )
    .await?;
    Ok(Json(balances))
}

/// The member's ledger transactions, newest first, with their postings.
#[utoipa::path(get, path = "/v1/members/{id}/ledger", tag = "members", params(PageParams),
    responses((status = 200, body = Page<LedgerEntry>), (status = 404, body = Problem)))]
pub async fn ledger(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<LedgerEntry>>> {
    let principal = auth.require(Scope::Read)?;
    let merchant = &principal.merchant;
    let limit = page.limit()?;
    if !members::member_exists(&mut Session::Pool(&state.database.pool), &merchant.id, &id).await? {
        return Err(loyalty_core::CoreError::NotFound("member").into());
    }
    let mut connection = state
        .database
        .pool
        .acquire()
        .await
        .map_err(loyalty_core::CoreError::from)?;
    let entries = ledger::member_ledger(
        &mut Session::Pooled(&mut connection),
        &merchant.id,
        &id,
        &merchant.currency,
        merchant.currency_exponent,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(entries, limit, |entry| &entry.id)))
}
