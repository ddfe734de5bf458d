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
    if outcome.replayed {
        response.extensions_mut().insert(Replayed);
    }
    response
}

/// Marks a response that is the stored answer of an earlier request with the same
/// Idempotency-Key (in the response's extensions, so the bytes sent stay the first ones).
#[derive(Debug, Clone, Copy)]
pub struct Replayed;

/// Whether this request applied its command now: a fresh 201, not a replayed one.
pub fn applied_now(response: &Response) -> bool {
    response.status() == StatusCode::CREATED && response.extensions().get::<Replayed>().is_none()
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

/// Every value-moving endpoint: the scope, then the body parsed and turned into a command by
/// `prepare`, then the command through the writer under the key. A used key is answered from
/// its record: before the body is parsed where the handler checks keys, in the writer's lane
/// where the lane does ([`loyalty_core::db::Backend::checks_keys_in_lane`]); there a request
/// that no longer parses or prepares looks its key up before it answers its error, so a
/// retry gets the first response whatever has changed since.
pub async fn value_moving<T: serde::de::DeserializeOwned>(
    state: &AppState,
    auth: &Auth,
    scope: Scope,
    idempotent: Idempotent,
    prepare: impl AsyncFnOnce(&Principal, T) -> Result<Command, ApiError>,
) -> Result<Response, ApiError> {
    let principal = auth.require(scope)?;
    let lane_checks_key = state.database.backend.checks_keys_in_lane();
    if !lane_checks_key {
        if let Some(response) = replay(state, principal, &idempotent).await? {
            return Ok(response);
        }
    }
    let prepared = match idempotent.parse::<T>() {
        Ok(request) => prepare(principal, request).await,
        Err(error) => Err(error),
    };
    let command = match prepared {
        Ok(command) => command,
        Err(error) if lane_checks_key => {
            return match replay(state, principal, &idempotent).await? {
                Some(response) => Ok(response),
                None => Err(error),
            };
        }
        Err(error) => return Err(error),
    };
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
