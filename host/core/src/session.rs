//! The connection the writer's commands run their statements on, over either of two drivers:
//! sqlx (PostgreSQL's lanes, and any caller holding a pooled connection) or rusqlite on
//! SQLite's one lane. sqlx runs every SQLite statement on a worker thread of its own and
//! hands each result row and statement result back through a channel, so a purchase of a
//! dozen statements woke the lane's thread a dozen times; the lane is SQLite's single writer,
//! and those hand-offs were most of its time that was not SQLite's (measured: the worker's
//! futex and eventfd calls and the lane's epoll waits outnumbered the WAL writes three to one).
//! On its own thread with rusqlite the lane calls SQLite directly.
//!
//! The query builders below mirror sqlx's (`query`, `query_scalar`, `query_as`, `bind`,
//! `fetch_*`, `execute`, `Row::try_get`), so the domain's statements read the same on both.
//! SQL is written with `$1…$n` for both backends (SQLite reads `$n` as `?n` here).

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::db::{Backend, SqlValue};
use crate::error::CoreError;

/// Prepared statements the SQLite lane keeps (the writer runs a few dozen distinct ones; the
/// rest are multi-row inserts whose text varies with their row count).
pub const SQLITE_STATEMENT_CACHE_MAX: usize = 512;

/// Where a command's statements go.
pub enum Session<'c> {
    /// A sqlx connection, on either backend.
    Pooled(&'c mut AnyConnection),
    /// SQLite, called on this thread.
    Direct(&'c mut rusqlite::Connection),
    /// Any free connection of the pool, statement by statement (reads and single writes
    /// outside a transaction).
    Pool(&'c sqlx::AnyPool),
}

impl Session<'_> {
    pub fn backend(&self) -> Backend {
        match self {
            Session::Pooled(connection) => connection_backend(connection),
            Session::Direct(_) => Backend::Sqlite,
            Session::Pool(pool) => pool_backend(pool),
        }
    }

    /// Runs `sql` (one statement, or several joined by `;\n` on SQLite) and returns every
    /// row the statements produce, in order, and the rows they changed.
    async fn run(
        &mut self,
        sql: &str,
        values: Vec<SqlValue>,
        keep_rows: bool,
    ) -> Result<(Vec<Row>, u64), CoreError> {
        match self {
            Session::Direct(connection) => {
                let mut rows = Vec::new();
                let mut changed = 0;
                for statement in sql.split(";\n") {
                    changed += run_direct(connection, statement, &values, &mut rows)
                        .map_err(direct_error)?;
                }
                Ok((rows, changed))
            }
            Session::Pooled(connection) => {
                let backend = connection_backend(connection);
                run_sqlx(&mut **connection, backend, sql, values, keep_rows).await
            }
            Session::Pool(pool) => {
                run_sqlx(*pool, pool_backend(pool), sql, values, keep_rows).await
            }
        }
    }
}

fn connection_backend(connection: &AnyConnection) -> Backend {
    if connection.backend_name().eq_ignore_ascii_case("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

fn pool_backend(pool: &sqlx::AnyPool) -> Backend {
    let options = pool.connect_options();
    if options.database_url.scheme().starts_with("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

/// Runs `sql` through sqlx on `executor`.
async fn run_sqlx<'e, E>(
    executor: E,
    backend: Backend,
    sql: &str,
    values: Vec<SqlValue>,
    keep_rows: bool,
) -> Result<(Vec<Row>, u64), CoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (sql, values) = match backend {
        Backend::Sqlite => crate::db::positional(sql, values),
        Backend::Postgres => (sql.to_string(), values),
    };
    let query = crate::db::bind_all(sqlx::query(&sql), values);
    if keep_rows {
        let rows = query.fetch_all(executor).await?;
        Ok((rows.into_iter().map(Row::Pooled).collect(), 0))
    } else {
        let done = query.execute(executor).await?;
        Ok((Vec::new(), done.rows_affected()))
    }
}

/// Runs one statement on SQLite; its `$n` bind `values[n - 1]`. Returns the rows changed.
fn run_direct(
    connection: &rusqlite::Connection,
    sql: &str,
    values: &[SqlValue],
    rows: &mut Vec<Row>,
) -> Result<u64, rusqlite::Error> {
    let sql = sqlite_numbered(sql);
    let mut statement = connection.prepare_cached(&sql)?;
    // A statement of a script may use only some of the script's numbers; binding the ones
    // it skips is harmless, and cheaper than asking SQLite which they are (a linear search
    // per number: 4.5 % of the lane in a profile).
    let count = statement.parameter_count();
    if count > values.len() {
        return Err(rusqlite::Error::InvalidParameterCount(values.len(), count));
    }
    for (index, value) in values.iter().take(count).enumerate() {
        statement.raw_bind_parameter(index + 1, value)?;
    }
    let writes = !statement.readonly();
    let column_count = statement.column_count();
    // Named once per execution, and only when a row comes back (most statements return none).
    let mut names: Option<Arc<[String]>> = None;
    let mut results = statement.raw_query();
    while let Some(row) = results.next()? {
        let names = names
            .get_or_insert_with(|| {
                let statement: &rusqlite::Statement<'_> = row.as_ref();
                statement
                    .column_names()
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .clone();
        let mut values = Vec::with_capacity(column_count);
        for index in 0..column_count {
            values.push(rusqlite::types::Value::from(row.get_ref(index)?));
        }
        rows.push(Row::Direct(DirectRow { names, values }));
    }
    drop(results);
    // changes() keeps the count of the last INSERT, UPDATE or DELETE, whatever ran since.
    Ok(if writes { connection.changes() } else { 0 })
}

/// `$n` → `?n`: SQLite numbers `$n` by first appearance, `?n` by `n`. Our SQL has `$` only
/// before parameter numbers or inside JSON paths (`'$.x'`), never before a digit otherwise.
///
/// Only the `$`s are visited (found with `memchr`), in a copy made at once: this runs before
/// every statement of the lane, whose scripts run to kilobytes, and pushing the text char by
/// char was 6–7 % of the lane in `perf`.
fn sqlite_numbered(sql: &str) -> Cow<'_, str> {
    let bytes = sql.as_bytes();
    let mut numbers = memchr::memchr_iter(b'$', bytes)
        .filter(|&at| bytes.get(at + 1).is_some_and(u8::is_ascii_digit))
        .peekable();
    if numbers.peek().is_none() {
        return Cow::Borrowed(sql);
    }
    let mut out = bytes.to_vec();
    for at in numbers {
        out[at] = b'?';
    }
    // One ASCII byte replaced by another keeps the text valid UTF-8.
    Cow::Owned(String::from_utf8(out).expect("'$' replaced by '?' is still UTF-8"))
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            SqlValue::Int(Some(value)) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            SqlValue::Text(Some(value)) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            SqlValue::Int(None) | SqlValue::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Errors: a rusqlite error travels as a sqlx database error, so every caller's handling of
// unique violations, busy databases and internal failures applies to both drivers alike.

#[derive(Debug)]
struct DirectError {
    /// SQLite's extended result code.
    code: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for DirectError {}

impl sqlx::error::DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlx::error::ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => sqlx::error::ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

fn direct_error(error: rusqlite::Error) -> CoreError {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            CoreError::Database(sqlx::Error::Database(Box::new(DirectError {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            })))
        }
        error => CoreError::Internal(format!("sqlite: {error}")),
    }
}

/// Opens SQLite's writer connection on `path` with `pragmas` (the pool's own).
pub fn open_direct(path: &str, pragmas: &str) -> Result<rusqlite::Connection, CoreError> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(direct_error)?;
    connection.execute_batch(pragmas).map_err(direct_error)?;
    connection.set_prepared_statement_cache_capacity(SQLITE_STATEMENT_CACHE_MAX);
    Ok(connection)
}

// ---------------------------------------------------------------------------------------
// Query builders

/// A statement and its bound values.
pub struct Query<'q> {
    sql: &'q str,
    values: Vec<SqlValue>,
}

/// A statement written with `$1…$n`; bind its values in order.
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        values: Vec::new(),
    }
}

impl<'q> Query<'q> {
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Values bound all at once (for statements built with a variable number of them).
    pub fn bind_values(mut self, values: Vec<SqlValue>) -> Self {
        self.values.extend(values);
        self
    }

    /// Runs the statement; returns the rows it changed.
    pub async fn execute(self, session: &mut Session<'_>) -> Result<u64, CoreError> {
        Ok(session.run(self.sql, self.values, false).await?.1)
    }

    pub async fn fetch_all(self, session: &mut Session<'_>) -> Result<Vec<Row>, CoreError> {
        Ok(session.run(self.sql, self.values, true).await?.0)
    }

    pub async fn fetch_optional(self, session: &mut Session<'_>) -> Result<Option<Row>, CoreError> {
        Ok(self.fetch_all(session).await?.into_iter().next())
    }

    pub async fn fetch_one(self, session: &mut Session<'_>) -> Result<Row, CoreError> {
        self.fetch_optional(session)
            .await?
            .ok_or(CoreError::Database(sqlx::Error::RowNotFound))
    }
}

/// How a typed query turns a row into its output.
pub trait RowDecoder {
    type Output;
    fn decode(row: &Row) -> Result<Self::Output, CoreError>;
}

/// A row's first column as `T` ([`query_scalar`]).
pub struct FirstColumn<T>(std::marker::PhantomData<fn() -> T>);

impl<T: FromColumn> RowDecoder for FirstColumn<T> {
    type Output = T;
    fn decode(row: &Row) -> Result<T, CoreError> {
        row.try_get(0)
    }
}

/// A row as the tuple `T` ([`query_as`]).
pub struct Tuple<T>(std::marker::PhantomData<fn() -> T>);

impl<T: FromRow> RowDecoder for Tuple<T> {
    type Output = T;
    fn decode(row: &Row) -> Result<T, CoreError> {
        T::from_row(row)
    }
}

/// A statement whose rows decode to `D::Output`.
pub struct TypedQuery<'q, D> {
    query: Query<'q>,
    decoder: std::marker::PhantomData<fn() -> D>,
}

/// A statement whose rows are one value each.
pub fn query_scalar<T: FromColumn>(sql: &str) -> TypedQuery<'_, FirstColumn<T>> {
    TypedQuery {
        query: query(sql),
        decoder: std::marker::PhantomData,
    }
}

/// A statement whose rows are tuples.
pub fn query_as<T: FromRow>(sql: &str) -> TypedQuery<'_, Tuple<T>> {
    TypedQuery {
        query: query(sql),
        decoder: std::marker::PhantomData,
    }
}

impl<'q, D: RowDecoder> TypedQuery<'q, D> {
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.query = self.query.bind(value);
        self
    }

    pub fn bind_values(mut self, values: Vec<SqlValue>) -> Self {
        self.query = self.query.bind_values(values);
        self
    }

    pub async fn fetch_all(self, session: &mut Session<'_>) -> Result<Vec<D::Output>, CoreError> {
        self.query
            .fetch_all(session)
            .await?
            .iter()
            .map(D::decode)
            .collect()
    }

    pub async fn fetch_optional(
        self,
        session: &mut Session<'_>,
    ) -> Result<Option<D::Output>, CoreError> {
        match self.query.fetch_optional(session).await? {
            Some(row) => Ok(Some(D::decode(&row)?)),
            None => Ok(None),
        }
    }

    pub async fn fetch_one(self, session: &mut Session<'_>) -> Result<D::Output, CoreError> {
        D::decode(&self.query.fetch_one(session).await?)
    }
}

// ---------------------------------------------------------------------------------------
// Rows

/// A result row of either driver.
pub enum Row {
    Pooled(AnyRow),
    Direct(DirectRow),
}

pub struct DirectRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

/// A column by name or by position.
pub trait ColumnIndex: Copy + std::fmt::Display {
    fn position(self, names: &[String]) -> Option<usize>;
    fn read<T: FromColumn>(self, row: &AnyRow) -> Result<T, sqlx::Error>;
}

impl ColumnIndex for &str {
    fn position(self, names: &[String]) -> Option<usize> {
        names.iter().position(|name| name == self)
    }
    fn read<T: FromColumn>(self, row: &AnyRow) -> Result<T, sqlx::Error> {
        T::from_pooled(row, self)
    }
}

impl ColumnIndex for usize {
    fn position(self, names: &[String]) -> Option<usize> {
        (self < names.len()).then_some(self)
    }
    fn read<T: FromColumn>(self, row: &AnyRow) -> Result<T, sqlx::Error> {
        T::from_pooled(row, self)
    }
}

impl Row {
    /// The column's value as `T`: a missing column or a value of another type is an error.
    pub fn try_get<T: FromColumn, I: ColumnIndex>(&self, index: I) -> Result<T, CoreError> {
        match self {
            Row::Pooled(row) => Ok(index.read(row)?),
            Row::Direct(row) => {
                let position = index.position(&row.names).ok_or_else(|| {
                    CoreError::Internal(format!("no column {index} in the result"))
                })?;
                T::from_direct(&row.values[position]).ok_or_else(|| {
                    CoreError::Internal(format!(
                        "column {index} holds {:?}, not the type read",
                        row.values[position].data_type()
                    ))
                })
            }
        }
    }
}

/// A type a column decodes to on both drivers.
pub trait FromColumn: Sized {
    fn from_pooled<I>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error>
    where
        I: sqlx::ColumnIndex<AnyRow>;
    fn from_direct(value: &rusqlite::types::Value) -> Option<Self>;
}

macro_rules! from_column {
    ($type:ty, $value:ident => $direct:expr) => {
        impl FromColumn for $type {
            fn from_pooled<I>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error>
            where
                I: sqlx::ColumnIndex<AnyRow>,
            {
                sqlx::Row::try_get(row, index)
            }
            fn from_direct($value: &rusqlite::types::Value) -> Option<Self> {
                use rusqlite::types::Value;
                $direct
            }
        }

        impl FromColumn for Option<$type> {
            fn from_pooled<I>(row: &AnyRow, index: I) -> Result<Self, sqlx::Error>
            where
                I: sqlx::ColumnIndex<AnyRow>,
            {
                sqlx::Row::try_get(row, index)
            }
            fn from_direct(value: &rusqlite::types::Value) -> Option<Self> {
                match value {
                    rusqlite::types::Value::Null => Some(None),
                    value => <$type as FromColumn>::from_direct(value).map(Some),
                }
            }
        }
    };
}

from_column!(i64, value => match value { Value::Integer(number) => Some(*number), _ => None });
from_column!(i32, value => match value {
    Value::Integer(number) => i32::try_from(*number).ok(),
    _ => None,
});
from_column!(bool, value => match value { Value::Integer(number) => Some(*number != 0), _ => None });
from_column!(f64, value => match value {
    Value::Real(number) => Some(*number),
    #[allow(clippy::cast_precision_loss)]
    Value::Integer(number) => Some(*number as f64),
    _ => None,
});
from_column!(String, value => match value { Value::Text(text) => Some(text.clone()), _ => None });

/// A row read as a tuple.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, CoreError>;
}

macro_rules! from_row {
    ($($type:ident $position:tt),+) => {
        impl<$($type: FromColumn),+> FromRow for ($($type,)+) {
            fn from_row(row: &Row) -> Result<Self, CoreError> {
                Ok(($(row.try_get::<$type, usize>($position)?,)+))
            }
        }
    };
}

from_row!(A 0);
from_row!(A 0, B 1);
from_row!(A 0, B 1, C 2);
from_row!(A 0, B 1, C 2, D 3);
from_row!(A 0, B 1, C 2, D 3, E 4);
from_row!(A 0, B 1, C 2, D 3, E 4, F 5);

#[cfg(test)]
mod tests {
    use super::{open_direct, query, query_as, query_scalar, Session};
    use crate::error::CoreError;

    fn scratch() -> (std::path::PathBuf, rusqlite::Connection) {
        let path = std::env::temp_dir().join(format!(
            "loyalty-session-{}.db",
            uuid::Uuid::now_v7().simple()
        ));
        let connection = open_direct(
            path.to_str().expect("a temporary path is UTF-8"),
            &crate::db::sqlite_pragmas(crate::db::SQLITE_WRITER_CACHE_KIB),
        )
        .expect("open");
        (path, connection)
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    /// Statements joined by `;\n` share one numbering, rows of all of them come back in
    /// order, changes are counted only for writes, and columns decode by name or position.
    #[test]
    fn direct_runs_scripts_with_shared_numbers() {
        let (path, mut connection) = scratch();
        block_on(async {
            let mut session = Session::Direct(&mut connection);
            // The writer's connection is as durable as the pool's: WAL, synchronous = FULL.
            let journal: String = query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut session)
                .await
                .expect("journal mode");
            assert_eq!(journal, "wal");
            let synchronous: i64 = query_scalar("PRAGMA synchronous")
                .fetch_one(&mut session)
                .await
                .expect("synchronous");
            assert_eq!(synchronous, 2);
            query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT)")
                .execute(&mut session)
                .await
                .expect("create");
            let changed =
                query("INSERT INTO t (k, n, note) VALUES ($2, $1, NULL), ($3, $1, '$.x')")
                    .bind(7)
                    .bind("a")
                    .bind("b")
                    .execute(&mut session)
                    .await
                    .expect("insert");
            assert_eq!(changed, 2);
            let rows = query(
                "UPDATE t SET n = n + $1 WHERE k = $2 RETURNING 'updated' AS kind, n;\n\
                 SELECT 'read' AS kind, n FROM t WHERE k = $3",
            )
            .bind(1)
            .bind("a")
            .bind("b")
            .fetch_all(&mut session)
            .await
            .expect("script");
            let read: Vec<(String, i64)> = rows
                .iter()
                .map(|row| {
                    (
                        row.try_get("kind").expect("kind"),
                        row.try_get(1).expect("n"),
                    )
                })
                .collect();
            assert_eq!(read, [("updated".to_string(), 8), ("read".to_string(), 7)]);
            let note: Option<String> = query_scalar("SELECT note FROM t WHERE k = $1")
                .bind("a")
                .fetch_one(&mut session)
                .await
                .expect("note");
            assert_eq!(note, None);
            let pair: (String, Option<String>) = query_as("SELECT k, note FROM t WHERE k = $1")
                .bind("b")
                .fetch_one(&mut session)
                .await
                .expect("pair");
            assert_eq!(pair, ("b".to_string(), Some("$.x".to_string())));
            let selected = query("SELECT n FROM t").execute(&mut session).await;
            assert_eq!(selected.expect("a read changes nothing"), 0);
            let wrong = query_scalar::<i64>("SELECT k FROM t WHERE k = $1")
                .bind("a")
                .fetch_one(&mut session)
                .await;
            assert!(matches!(wrong, Err(CoreError::Internal(_))), "{wrong:?}");
        });
        drop(connection);
        let _ = std::fs::remove_file(&path);
    }

    /// SQLite's errors on the direct connection classify as sqlx's do: a duplicate key is a
    /// unique violation naming the table, a taken write lock is busy.
    #[test]
    fn direct_errors_classify_like_sqlx() {
        let (path, mut connection) = scratch();
        let mut other =
            open_direct(path.to_str().expect("UTF-8"), "PRAGMA busy_timeout = 0").expect("open");
        block_on(async {
            let mut session = Session::Direct(&mut connection);
            query("CREATE TABLE keys (k TEXT PRIMARY KEY)")
                .execute(&mut session)
                .await
                .expect("create");
            let duplicate = query("INSERT INTO keys (k) VALUES ($1), ($1)")
                .bind("x")
                .execute(&mut session)
                .await
                .expect_err("a duplicate key");
            let violated = duplicate.unique_violation().expect("a unique violation");
            assert!(violated.contains("keys.k"), "{violated}");
            assert!(!duplicate.is_busy());
            query("BEGIN IMMEDIATE")
                .execute(&mut session)
                .await
                .expect("take the write lock");
            let refused = query("BEGIN IMMEDIATE")
                .execute(&mut Session::Direct(&mut other))
                .await
                .expect_err("the lock is taken");
            assert!(refused.is_busy(), "{refused:?}");
            assert!(refused.unique_violation().is_none());
        });
        drop((connection, other));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn numbers_parameters_for_sqlite() {
        assert_eq!(
            super::sqlite_numbered("SELECT $2, $10, '$.a' WHERE x = $1"),
            "SELECT ?2, ?10, '$.a' WHERE x = ?1"
        );
        assert_eq!(
            super::sqlite_numbered("SELECT '¥', $1, '$'"),
            "SELECT '¥', ?1, '$'"
        );
        assert_eq!(super::sqlite_numbered("$1$"), "?1$");
        assert!(matches!(
            super::sqlite_numbered("SELECT '$.a'"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
