//! The HTTP API under `/v1`, one file per resource.

pub mod api_keys;
pub mod campaigns;
pub mod count_cards;
pub mod members;
pub mod merchants;
pub mod offers;
pub mod operator;
pub mod plugins;
pub mod points;
pub mod purchases;
pub mod recommendations;
pub mod stored_value;
pub mod stores;
pub mod ticks;
pub mod tiers;
pub mod transactions;
pub mod webhooks;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use loyalty_core::merchants::{Principal, Scope};
use loyalty_core::operations::{Command, Outcome};
use loyalty_core::session::Session;
use loyalty_core::writer::{lookup, IdempotencyClaim, Submission};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{Auth, Idempotent};
use crate::AppState;

/// A page of a list: pass `next_cursor` as `cursor` for the next page; null at the end.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> Page<T> {
        let full = i64::try_from(items.len()).expect("a page is small") == limit;
        let next_cursor = if full {
            items.last().map(|item| id(item).to_string())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// The stored body, sent byte for byte.
pub fn respond(outcome: Outcome) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut response = (status, outcome.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Answers a retry from the stored response without touching the writer.
async fn replay(
    state: &AppState,
    principal: &Principal,
    idempotent: &Idempotent,
) -> Result<Option<Response>, ApiError> {
    match lookup(
        &mut Session::Pool(&state.database.pool),
        &principal.merchant.id,
        &idempotent.claim.key,
    )
    .await?
    {
        Some(stored) => Ok(Some(respond(stored.answer(&idempotent.claim.digest)?))),
        None => Ok(None),
    }
}

/// Every value-moving endpoint: the scope, then a used key answered from its record, then
/// the body parsed and turned into a command by `prepare`, then the command through the
/// writer under the key.
pub async fn value_moving<T: serde::de::DeserializeOwned>(
    state: &AppState,
    auth: &Auth,
    scope: Scope,
    idempotent: Idempotent,
    prepare: impl AsyncFnOnce(&Principal, T) -> Result<Command, ApiError>,
) -> Result<Response, ApiError> {
    let principal = auth.require(scope)?;
    if let Some(response) = replay(state, principal, &idempotent).await? {
        return Ok(response);
    }
    let request: T = idempotent.parse()?;
    let command = prepare(principal, request).await?;
    let outcome = submit(state, principal, Some(idempotent.claim), command).await?;
    Ok(respond(outcome))
}

/// Sends a validated command through the writer, under the request's Idempotency-Key when it
/// moves value. Profile writes come here too, without a key: on SQLite the writer's lane is
/// the one connection that writes, and a write of its own would wait for the lane's lock
/// between batches.
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    claim: Option<IdempotencyClaim>,
    command: Command,
) -> Result<Outcome, ApiError> {
    Ok(state
        .writer
        .submit(Submission {
            merchant: principal.merchant.clone(),
            claim,
            command,
            now: state.clock.now(),
        })
        .await?)
}
