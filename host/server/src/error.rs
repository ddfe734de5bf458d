//! The one error type of the API: every failure answers `application/problem+json`
//! (RFC 9457) with `type`, `title`, `status`, `detail` and, for validation, `errors[]`.
//! Internal errors are logged and never leak their details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use loyalty_core::{CoreError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    /// The JSON path of the offending field, e.g. `items[0].unit_price`.
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    Unauthorized(String),
    Forbidden(String),
    BadRequest(String),
    NotFound(String),
    Validation(Vec<FieldError>),
    Unprocessable(String),
    Conflict(String),
    IdempotencyMismatch,
    PayloadTooLarge,
    MethodNotAllowed,
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid API key",
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The API key lacks the scope",
            ),
            ApiError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad-request", "Malformed request")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "The request is invalid",
            ),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                "The request was refused",
            ),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with existing state",
            ),
            ApiError::IdempotencyMismatch => (
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let (detail, errors) = match self {
            ApiError::Unauthorized(detail)
            | ApiError::Forbidden(detail)
            | ApiError::BadRequest(detail)
            | ApiError::NotFound(detail)
            | ApiError::Unprocessable(detail)
            | ApiError::Conflict(detail)
            | ApiError::Unavailable(detail) => (detail.clone(), Vec::new()),
            ApiError::Validation(fields) => (
                fields
                    .iter()
                    .map(|field| format!("{} {}", field.field, field.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                fields
                    .iter()
                    .map(|field| ProblemField {
                        field: field.field.clone(),
                        message: field.message.clone(),
                    })
                    .collect(),
            ),
            ApiError::IdempotencyMismatch => (
                "this Idempotency-Key was already used with a different request".into(),
                Vec::new(),
            ),
            ApiError::PayloadTooLarge => ("the body exceeds 1 MiB".into(), Vec::new()),
            ApiError::MethodNotAllowed => {
                ("this endpoint does not take that method".into(), Vec::new())
            }
            ApiError::Internal(_) => (
                "an internal error occurred; it has been logged".into(),
                Vec::new(),
            ),
        };
        Problem {
            kind: format!("/problems/{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(message) = &self {
            tracing::error!(%message, "internal error");
        }
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).expect("statuses come from StatusCode");
        let mut response = (
            status,
            serde_json::to_string(&problem).expect("problems serialize"),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            CoreError::Validation(fields) => ApiError::Validation(fields),
            CoreError::Unprocessable(detail) => ApiError::Unprocessable(detail),
            CoreError::Conflict(detail) => ApiError::Conflict(detail),
            CoreError::IdempotencyMismatch => ApiError::IdempotencyMismatch,
            CoreError::Retry => ApiError::Unavailable(
                "a transient conflict; retry with the same Idempotency-Key".into(),
            ),
            CoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            busy if busy.is_busy() => {
                tracing::warn!(error = %busy, "the database was busy");
                ApiError::Unavailable("the database is busy; nothing was written, retry".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
