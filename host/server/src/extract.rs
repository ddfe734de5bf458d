//! Request extractors that answer problem+json on bad input: JSON bodies (with the path of
//! the offending field), query strings, the API key, and the Idempotency-Key.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use loyalty_core::merchants::{authenticate, hash_key, Principal, Scope};
use loyalty_core::writer::IdempotencyClaim;
use loyalty_core::FieldError;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// Longest Idempotency-Key accepted.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// Largest page a list returns; the default is smaller.
pub const PAGE_LIMIT_MAX: i64 = 200;
pub const PAGE_LIMIT_DEFAULT: i64 = 50;

async fn body_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        let content_type = content_type.to_str().unwrap_or_default();
        if !content_type.starts_with("application/json") && !content_type.ends_with("+json") {
            return Err(ApiError::BadRequest(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("cannot read the body: {rejection}"))
            }
        })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is empty; send a JSON object".into(),
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest(format!("the body is not valid JSON: {inner}"))
        } else {
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            // serde's message carries its own position; the field path says where.
            let message = inner.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
    })
}

/// A JSON body, deserialized with field paths in its errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A value-moving request: its body, and the claim on its Idempotency-Key (the key and a
/// digest of method, path and body).
pub struct Idempotent {
    pub claim: IdempotencyClaim,
    pub body: Bytes,
}

impl Idempotent {
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }
}

impl FromRequest<AppState> for Idempotent {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = match request.headers().get("idempotency-key") {
            None => {
                return Err(ApiError::BadRequest(
                    "this request moves value and needs an Idempotency-Key header".into(),
                ))
            }
            Some(value) => value
                .to_str()
                .ok()
                .filter(|key| {
                    !key.is_empty()
                        && key.len() <= IDEMPOTENCY_KEY_LENGTH_MAX
                        && key.bytes().all(|byte| byte.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "the Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} visible ASCII characters"
                    ))
                })?
                .to_string(),
        };
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let body = body_bytes(request, state).await?;
        Ok(Idempotent {
            claim: IdempotencyClaim {
                key,
                digest: request_digest(method.as_str(), &path, &body),
            },
            body,
        })
    }
}

/// The digest an Idempotency-Key is stored with: SHA-256 of method, path and body. The same
/// key with a request of another digest is a 409.
pub fn request_digest(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A query string, with problem+json errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|error| {
                ApiError::Validation(vec![FieldError::new("query", error.to_string())])
            })
    }
}

/// `?limit=&cursor=`: a page of a list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(PAGE_LIMIT_DEFAULT),
            Some(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
            Some(_) => Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                format!("must be between 1 and {PAGE_LIMIT_MAX}"),
            )])),
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <api key>".into()))?;
    value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be Bearer <api key>".into())
        })
}

/// The merchant and scopes of the request's API key.
pub struct Auth(pub Principal);

impl Auth {
    pub fn require(&self, scope: Scope) -> Result<&Principal, ApiError> {
        if self.0.allows(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key needs the {} scope for this request",
                scope.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key_hash = hash_key(bearer(parts)?);
        if let Some(principal) = state.principals.get(&key_hash) {
            return Ok(Auth(principal));
        }
        match authenticate(&state.database.pool, &key_hash).await? {
            Some(principal) => {
                state.principals.put(key_hash, principal.clone());
                Ok(Auth(principal))
            }
            None => Err(ApiError::Unauthorized(
                "the API key is unknown or revoked".into(),
            )),
        }
    }
}

/// The operator: holder of the host's operator key (creates merchants, runs jobs).
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(parts)?;
        // Compare digests, not the keys, so the comparison time says nothing about the key.
        if hash_key(key) == state.operator_key_hash {
            Ok(Operator)
        } else {
            Err(ApiError::Unauthorized(
                "this request needs the operator key".into(),
            ))
        }
    }
}
