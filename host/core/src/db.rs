//! The database handle: one `sqlx::AnyPool` over SQLite or PostgreSQL, one schema for both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::error::CoreError;

/// Connections a pool opens at most. SQLite serialises writers anyway; readers share the rest.
pub const POOL_CONNECTIONS_MAX: u32 = 16;
/// How long a SQLite statement waits for another connection's write lock before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Database {
    /// Connects to `sqlite://path` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Database, CoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|error| CoreError::Config(format!("bad database url: {error}")))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |connection, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL so readers never block the writer; FULL so an acknowledged commit
                        // survives power loss, not only a process crash.
                        connection
                            .execute(
                                format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
                                     PRAGMA foreign_keys = ON;"
                                )
                                .as_str(),
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Database { pool, backend })
    }

    pub async fn migrate(&self) -> Result<(), CoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|error| CoreError::Internal(format!("migration failed: {error}")))
    }

    /// The statement that opens a write transaction. SQLite takes the write lock at once so a
    /// transaction that reads first never fails to upgrade.
    pub fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

pub fn backend_of(url: &str) -> Result<Backend, CoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(CoreError::Config(format!(
            "database url must start with sqlite:// or postgres://, got {url:?}"
        )))
    }
}

fn sqlite_url_with_create(url: &str) -> Result<String, CoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(CoreError::Config("sqlite url names no file".into()));
    }
    if path != ":memory:" {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    CoreError::Config(format!("cannot create {}: {error}", parent.display()))
                })?;
            }
        }
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    if url.contains("mode=") {
        Ok(url.to_string())
    } else {
        Ok(format!("{url}{separator}mode=rwc"))
    }
}

/// Now as unix microseconds, the unit every timestamp column uses.
pub fn unix_micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).expect("timestamps fit i64 microseconds")
}

pub fn from_unix_micros(micros: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .expect("stored timestamps are valid")
}

/// A new identifier: a prefix naming the kind, then a time-ordered UUIDv7, so ids sort by
/// creation and a cursor over them is stable.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
