//! The one error type of the domain. The server maps each variant to a problem+json response.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The entity does not exist for this merchant (a foreign merchant's id looks the same).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is malformed; nothing was written.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The input is well-formed but a business rule refuses it (overdrawn balance, …).
    #[error("{0}")]
    Unprocessable(String),
    /// The request conflicts with existing state (a duplicate unique value, …).
    #[error("{0}")]
    Conflict(String),
    /// The Idempotency-Key was already used for a different request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A transient database conflict (deadlock, serialization failure); safe to retry.
    #[error("transient conflict, retry")]
    Retry,
    /// The host is shutting down or overloaded.
    #[error("{0}")]
    Unavailable(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl CoreError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> CoreError {
        CoreError::Validation(vec![FieldError::new(field, message)])
    }

    /// The constraint a database error violated, if it was a unique violation.
    pub fn unique_violation(&self) -> Option<String> {
        match self {
            CoreError::Database(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Some(
                    error
                        .constraint()
                        .map(str::to_string)
                        .unwrap_or_else(|| error.message().to_string()),
                )
            }
            _ => None,
        }
    }

    /// Deadlocks and serialization failures: the whole unit of work can run again.
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::Retry => true,
            CoreError::Database(sqlx::Error::Database(error)) => {
                matches!(error.code().as_deref(), Some("40001") | Some("40P01"))
            }
            _ => false,
        }
    }
}
