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

    /// The database could not serve the statement in time: SQLite's write lock stayed taken
    /// past the busy timeout, PostgreSQL refused a lock or a connection, or the pool had no
    /// connection free. The statement's transaction is undone, so nothing was written and the
    /// request can be sent again.
    pub fn is_busy(&self) -> bool {
        match self {
            CoreError::Database(sqlx::Error::PoolTimedOut) => true,
            CoreError::Database(sqlx::Error::Database(error)) => {
                let code = error.code();
                let code = code.as_deref().unwrap_or_default();
                match code.parse::<u32>() {
                    // SQLite's codes are numbers: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with
                    // their extended codes in the upper bits.
                    Ok(sqlite_code) => matches!(sqlite_code & 0xff, 5 | 6),
                    // PostgreSQL's SQLSTATEs: lock_not_available, query_canceled (a statement
                    // timeout), too_many_connections, cannot_connect_now.
                    Err(_) => matches!(code, "55P03" | "57014" | "53300" | "57P03"),
                }
            }
            _ => false,
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

#[cfg(test)]
mod tests {
    use super::CoreError;
    use sqlx::Connection;

    /// A write that finds SQLite's write lock taken is "busy" (a 503 to the client), not an
    /// internal error; other database errors are not.
    #[test]
    fn sqlite_lock_contention_is_busy() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            sqlx::any::install_default_drivers();
            let path = std::env::temp_dir()
                .join(format!("loyalty-busy-{}.db", uuid::Uuid::now_v7().simple()));
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let mut holder = sqlx::AnyConnection::connect(&url).await.expect("connect");
            let mut waiter = sqlx::AnyConnection::connect(&url).await.expect("connect");
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
                .execute(&mut holder)
                .await
                .expect("create");
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut waiter)
                .await
                .expect("no waiting");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut holder)
                .await
                .expect("take the write lock");
            let refused = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut waiter)
                .await
                .expect_err("the lock is taken");
            assert!(CoreError::from(refused).is_busy());
            let duplicate = sqlx::query("INSERT INTO t (id) VALUES (1), (1)")
                .execute(&mut holder)
                .await
                .expect_err("a duplicate key");
            assert!(!CoreError::from(duplicate).is_busy());
            drop((holder, waiter));
            let _ = std::fs::remove_file(&path);
        });
    }
}
