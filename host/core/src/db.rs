//! The database handle: one `sqlx::AnyPool` over SQLite or PostgreSQL, one schema for both.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::error::CoreError;
use crate::session::{Row, Session};

/// Connections a pool opens at most. SQLite serialises writers anyway; readers share the rest.
pub const POOL_CONNECTIONS_MAX: u32 = 16;
/// A statement slower than this is logged as a warning.
pub const SLOW_STATEMENT_MS: u64 = 500;
/// Page cache per SQLite connection of the pool, in KiB.
pub const SQLITE_CACHE_KIB: u32 = 64 * 1024;
/// Page cache of SQLite's writer lane, in KiB. Smaller than the readers': at every commit
/// SQLite walks the cache's hash table (`pcache1TruncateUnsafe`, 6 % of the lane in a
/// profile), and the lane's pages are re-read cheaply through the memory map. Measured in
/// alternating 8 s runs against 64 MiB: one member 1,650–1,711 against 1,524–1,610
/// purchases/s, 20,000 members 1,890–1,905 against 1,749–1,757.
pub const SQLITE_WRITER_CACHE_KIB: u32 = 8 * 1024;
/// How much of the database file SQLite reads through a memory map rather than `read` calls.
/// A pooled reader's page cache is emptied whenever a write lands between its reads (WAL), so
/// without a map every read after a write copies its pages in again with system calls.
pub const SQLITE_MMAP_BYTES: u64 = 1 << 30;
/// WAL pages after which a commit checkpoints (SQLite's own mechanism: a checkpoint run by
/// the committing connection can also restart the WAL, which a background one competing with
/// readers rarely can, and then the WAL grows without bound).
pub const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 4_000;
/// Size the WAL file is truncated back to after a checkpoint restarts it.
pub const SQLITE_WAL_BYTES_KEPT: u64 = 64 * 1024 * 1024;

/// The distinct members PostgreSQL assumes among `point_lots` rows, as a negative fraction of
/// the rows (a fixed `n_distinct`: about 20 lots a member). Analysed while one member held most
/// lots (a young merchant, or the ledger benchmark after its one-member scenario), the table
/// taught the planner that a member's condition selects every lot, and the cached plan of the
/// balances read walked the merchant-wide expiry index for the member's earliest lot (a third
/// of the machine's CPU under the benchmark); with a fixed count it uses the member's index.
pub const POINT_LOTS_MEMBER_DISTINCT_FRACTION: &str = "-0.05";

/// Tables whose rows are updated in place again and again (a member's statistics, an
/// account's balance, a pair's count), none of the updated columns indexed: PostgreSQL fills
/// their pages only to [`UPDATED_IN_PLACE_FILLFACTOR_PERCENT`].
pub const UPDATED_IN_PLACE_TABLES: [&str; 3] = ["members", "accounts", "co_purchases"];
/// How full PostgreSQL packs a new page of [`UPDATED_IN_PLACE_TABLES`]; the rest is room for
/// their rows' next versions.
pub const UPDATED_IN_PLACE_FILLFACTOR_PERCENT: u32 = 70;

/// How long a SQLite statement waits for another connection's write lock before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether the writer's lane looks up a request's Idempotency-Key before running its
    /// command, instead of the request handler looking it up before queueing it. On SQLite
    /// the lane's lookup is a function call on its own connection, while a pooled read hands
    /// the query to a worker thread and back: moving the lookup into the lane cut the server's
    /// CPU per purchase by 15–29 % in the ledger benchmark. On PostgreSQL a lookup in the lane
    /// would be one more round trip on the lane's serial path, so the handler's pooled read
    /// stays there.
    pub fn checks_keys_in_lane(self) -> bool {
        self == Backend::Sqlite
    }
}

#[derive(Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite's database file, which the writer opens on its own thread (see
    /// [`crate::session`]); `None` on PostgreSQL.
    pub sqlite_path: Option<String>,
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
            // Statements are not logged; a slow one is a warning an operator sees.
            .log_statements(tracing::log::LevelFilter::Off)
            .log_slow_statements(
                tracing::log::LevelFilter::Warn,
                Duration::from_millis(SLOW_STATEMENT_MS),
            );
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |connection, _meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres {
                        // PostgreSQL's own choice between cached generic and per-execution
                        // plans, whatever the server's default. Forcing per-execution plans
                        // (as we did while a plan cached on a nearly empty table could outlive
                        // its growth) cost a planning per read; the host's statistics refresh
                        // (`refresh_statistics`) now invalidates such plans as tables grow.
                        // Measured on the plugin benchmark on PostgreSQL: plugin ÷ built-in
                        // 0.906 and 0.879 with `auto`, 0.773 with `force_custom_plan`.
                        connection.execute("SET plan_cache_mode = auto").await?;
                    }
                    if backend == Backend::Sqlite {
                        connection
                            .execute(sqlite_pragmas(SQLITE_CACHE_KIB).as_str())
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let sqlite_path = match backend {
            Backend::Sqlite => sqlite_file(&url),
            Backend::Postgres => None,
        };
        Ok(Database {
            pool,
            backend,
            sqlite_path,
        })
    }

    pub async fn migrate(&self) -> Result<(), CoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|error| CoreError::Internal(format!("migration failed: {error}")))?;
        if self.backend == Backend::Postgres {
            // Per member, not per statistics sample: see POINT_LOTS_MEMBER_DISTINCT_FRACTION.
            // PostgreSQL-only DDL, so it lives here rather than in the shared migrations; it
            // applies from the table's next ANALYZE. Each setting is written only where it is
            // missing: an ALTER rewrites the catalog row even when nothing changes, and that
            // makes every session of every host sharing the database drop its cached plans
            // of the table.
            let distinct = format!("n_distinct={POINT_LOTS_MEMBER_DISTINCT_FRACTION}");
            if !self
                .stored_options("point_lots", Some("member_id"))
                .await?
                .contains(&distinct)
            {
                sqlx::query(&format!(
                    "ALTER TABLE point_lots ALTER COLUMN member_id SET (n_distinct = {POINT_LOTS_MEMBER_DISTINCT_FRACTION})"
                ))
                .execute(&self.pool)
                .await?;
            }
            // Rows that every purchase updates keep room on their page, so the new version
            // can stay on it as a heap-only tuple (HOT): none of the columns these updates
            // change is indexed. On a full page each update writes the row to another page
            // and a new entry into every index of the table.
            let fillfactor = format!("fillfactor={UPDATED_IN_PLACE_FILLFACTOR_PERCENT}");
            for table in UPDATED_IN_PLACE_TABLES {
                if self
                    .stored_options(table, None)
                    .await?
                    .contains(&fillfactor)
                {
                    continue;
                }
                sqlx::query(&format!(
                    "ALTER TABLE {table} SET (fillfactor = {UPDATED_IN_PLACE_FILLFACTOR_PERCENT})"
                ))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// PostgreSQL's stored settings of a table (`reloptions`) or, given one, of its column
    /// (`attoptions`), as `name=value` items.
    async fn stored_options(
        &self,
        table: &str,
        column: Option<&str>,
    ) -> Result<Vec<String>, CoreError> {
        let query = match column {
            None => sqlx::query_scalar::<_, String>(
                "SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class \
                 WHERE oid = CAST($1 AS regclass)",
            )
            .bind(table),
            Some(column) => sqlx::query_scalar::<_, String>(
                "SELECT COALESCE(array_to_string(attoptions, ','), '') FROM pg_attribute \
                 WHERE attrelid = CAST($1 AS regclass) AND attname = $2",
            )
            .bind(table)
            .bind(column),
        };
        let options = query.fetch_one(&self.pool).await?;
        Ok(options.split(',').map(str::to_string).collect())
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

/// Every SQLite connection's settings: WAL so readers never block the writer; FULL so an
/// acknowledged commit survives power loss, not only a process crash.
pub fn sqlite_pragmas(cache_kib: u32) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; \
         PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -{cache_kib}; \
         PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES}; \
         PRAGMA journal_size_limit = {SQLITE_WAL_BYTES_KEPT}; \
         PRAGMA temp_store = MEMORY; \
         PRAGMA mmap_size = {SQLITE_MMAP_BYTES};"
    )
}

/// The file of a `sqlite://path?…` url.
fn sqlite_file(url: &str) -> Option<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty()).then(|| path.to_string())
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
    let path =
        sqlite_file(url).ok_or_else(|| CoreError::Config("sqlite url names no file".into()))?;
    let path = path.as_str();
    // Every pooled connection (and the writer's own) would open a database of its own.
    if path == ":memory:" || url.contains("mode=memory") {
        return Err(CoreError::Config(
            "an in-memory SQLite database is not supported: give a file (sqlite://path)".into(),
        ));
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|error| {
                CoreError::Config(format!("cannot create {}: {error}", parent.display()))
            })?;
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

/// RFC 3339 text of unix microseconds, as event data and receipts show times.
pub fn format_micros(micros: i64) -> String {
    from_unix_micros(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("stored timestamps format")
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

/// A value bound into a [`Script`].
#[derive(Debug, Clone)]
pub enum SqlValue {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Int(Some(value))
    }
}
impl From<Option<i64>> for SqlValue {
    fn from(value: Option<i64>) -> Self {
        SqlValue::Int(value)
    }
}
impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(Some(value.to_string()))
    }
}
impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(Some(value))
    }
}
impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(Some(value.clone()))
    }
}
impl From<Option<String>> for SqlValue {
    fn from(value: Option<String>) -> Self {
        SqlValue::Text(value)
    }
}
impl From<&Option<String>> for SqlValue {
    fn from(value: &Option<String>) -> Self {
        SqlValue::Text(value.clone())
    }
}

/// Most statements one script carries before it must be flushed.
pub const SCRIPT_STATEMENTS_MAX: usize = 256;

/// Writes whose results nobody reads, collected and sent in one round trip: on SQLite as
/// several statements in one string (or, on the lane's own SQLite connection, one after
/// another with no round trip at all), on PostgreSQL as one statement of data-modifying CTEs.
/// Each statement is written with its own `$1…$n`; the script renumbers them.
#[derive(Debug)]
pub struct Script {
    backend: Backend,
    statements: Vec<(String, Vec<SqlValue>)>,
    /// A SAVEPOINT is queued and has not been sent yet: nothing of the command ran.
    savepoint_queued: bool,
    /// Changes of members' expiring points, by (merchant, member, expiry hour), merged until
    /// the flush: PostgreSQL cannot upsert one row twice in one statement, and a command may
    /// touch two lots expiring in the same hour.
    expiry_hours: BTreeMap<(String, String, i64), i64>,
    /// Members (merchant, member) known to keep no `point_expiry_hours` rows: their lot
    /// changes add none. A member not named here gets rows for every change, so a command
    /// that did not read the flag can only add rows that the switch-over rebuilds anyway.
    expiry_hours_skipped: BTreeSet<(String, String)>,
    /// The balances of members read earlier in the writer's batch (see
    /// [`crate::ledger::RememberedBalances`]), carried from command to command.
    remembered: crate::ledger::RememberedBalances,
}

/// Microseconds in an hour of `point_expiry_hours` (migration 0009).
pub const EXPIRY_HOUR_MICROS: i64 = 3_600_000_000;
/// Rows of `point_expiry_hours` one upsert carries at most.
const EXPIRY_HOURS_PER_UPSERT_MAX: usize = 100;

impl Script {
    pub fn new(backend: Backend) -> Script {
        Script {
            backend,
            statements: Vec::new(),
            savepoint_queued: false,
            expiry_hours: BTreeMap::new(),
            expiry_hours_skipped: BTreeSet::new(),
            remembered: Default::default(),
        }
    }

    /// A script that starts with the balances the batch's earlier commands left.
    pub fn carrying(backend: Backend, remembered: crate::ledger::RememberedBalances) -> Script {
        Script {
            remembered,
            ..Script::new(backend)
        }
    }

    /// The batch's remembered balances, to move or forget as the command changes them.
    pub fn remembered(&mut self) -> &mut crate::ledger::RememberedBalances {
        &mut self.remembered
    }

    /// Hands the remembered balances on to the batch's next command.
    pub fn take_remembered(&mut self) -> crate::ledger::RememberedBalances {
        std::mem::take(&mut self.remembered)
    }

    /// Whether the member keeps `point_expiry_hours` rows, as the command read it with the
    /// member's lock.
    pub fn set_expiry_hours_kept(&mut self, merchant_id: &str, member_id: &str, kept: bool) {
        let member = (merchant_id.to_string(), member_id.to_string());
        if kept {
            self.expiry_hours_skipped.remove(&member);
        } else {
            self.expiry_hours_skipped.insert(member);
        }
    }

    /// Adds `points` (negative: takes them) to the member's spendable points expiring in the
    /// hour of `expires_at`; written with the script's next flush.
    pub fn add_expiring_points(
        &mut self,
        merchant_id: &str,
        member_id: &str,
        expires_at: i64,
        points: i64,
    ) {
        // Active lots expire after they were written, so truncation is the floor here.
        assert!(expires_at > 0, "an active lot expires after 1970");
        self.remembered
            .add_expiring(merchant_id, member_id, expires_at, points);
        if points == 0 {
            return;
        }
        let member = (merchant_id.to_string(), member_id.to_string());
        if self.expiry_hours_skipped.contains(&member) {
            return;
        }
        // The same two strings key the change: built once.
        let (merchant, member) = member;
        let hour = expires_at / EXPIRY_HOUR_MICROS;
        *self
            .expiry_hours
            .entry((merchant, member, hour))
            .or_default() += points;
    }

    /// Turns the merged expiry-hour changes into upserts at the end of the queue (before a
    /// raw statement such as the savepoint's release, and at every flush).
    fn queue_expiry_hours(&mut self) {
        let changes: Vec<_> = std::mem::take(&mut self.expiry_hours)
            .into_iter()
            .filter(|(_, points)| *points != 0)
            .collect();
        for chunk in changes.chunks(EXPIRY_HOURS_PER_UPSERT_MAX) {
            let sql = format!(
                "INSERT INTO point_expiry_hours (merchant_id, member_id, expiry_hour, points) \
                 VALUES {} ON CONFLICT (merchant_id, member_id, expiry_hour) \
                 DO UPDATE SET points = point_expiry_hours.points + excluded.points",
                values_rows(0, 4, chunk.len(), "")
            );
            let mut values = Vec::with_capacity(chunk.len() * 4);
            for ((merchant_id, member_id, hour), points) in chunk {
                values.push(merchant_id.into());
                values.push(member_id.into());
                values.push((*hour).into());
                values.push((*points).into());
            }
            self.push(&sql, values);
        }
    }

    /// Opens the command's savepoint: on SQLite it travels with the command's first
    /// statement, on PostgreSQL it is sent at once.
    pub async fn open_savepoint(
        &mut self,
        connection: &mut Session<'_>,
        name: &str,
    ) -> Result<(), CoreError> {
        match self.backend {
            Backend::Sqlite => {
                self.push_raw(&format!("SAVEPOINT {name}"));
                self.savepoint_queued = true;
            }
            Backend::Postgres => {
                crate::session::query(&format!("SAVEPOINT {name}"))
                    .execute(connection)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the savepoint is still only queued (so nothing of the command was sent).
    pub fn savepoint_queued(&self) -> bool {
        self.savepoint_queued
    }

    /// Runs the queued statements and then `sql` (numbered from `$1` over `values`), and
    /// returns `sql`'s rows. On SQLite all of it is one call (`sql` may hold several
    /// statements joined by `;\n`); on PostgreSQL the queue is flushed first and `sql` must be
    /// one statement.
    pub async fn fetch_after(
        &mut self,
        connection: &mut Session<'_>,
        sql: &str,
        values: Vec<SqlValue>,
    ) -> Result<Vec<Row>, CoreError> {
        self.queue_expiry_hours();
        match connection {
            Session::Pooled(_) | Session::Pool(_) if self.backend == Backend::Sqlite => {
                self.push(sql, values);
                self.savepoint_queued = false;
                let (sql, values) = self.take_sqlite();
                crate::session::query(&sql)
                    .bind_values(values)
                    .fetch_all(connection)
                    .await
            }
            _ => {
                self.flush(connection).await?;
                crate::session::query(sql)
                    .bind_values(values)
                    .fetch_all(connection)
                    .await
            }
        }
    }

    pub fn push(&mut self, sql: &str, values: Vec<SqlValue>) {
        assert!(
            self.statements.len() < SCRIPT_STATEMENTS_MAX,
            "script too long"
        );
        self.statements.push((sql.to_string(), values));
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Queues a statement without parameters (SQLite only: PostgreSQL scripts are CTEs).
    pub fn push_raw(&mut self, sql: &str) {
        assert_eq!(
            self.backend,
            Backend::Sqlite,
            "raw statements ride only in SQLite scripts"
        );
        self.queue_expiry_hours();
        self.push(sql, Vec::new());
    }

    /// Takes the queued statements, each renumbered to follow the ones before it, and all
    /// their values in order.
    fn take_numbered(&mut self) -> (Vec<String>, Vec<SqlValue>) {
        let mut statements = Vec::with_capacity(self.statements.len());
        let mut values = Vec::new();
        for (statement, statement_values) in self.statements.drain(..) {
            statements.push(renumber(&statement, values.len()));
            values.extend(statement_values);
        }
        (statements, values)
    }

    /// The queued statements as one SQLite string numbered through, and its values.
    fn take_sqlite(&mut self) -> (String, Vec<SqlValue>) {
        let (statements, values) = self.take_numbered();
        (statements.join(";\n"), values)
    }

    /// Runs the collected statements and empties the script. A command that must read
    /// what it queued flushes first.
    pub async fn flush(&mut self, connection: &mut Session<'_>) -> Result<(), CoreError> {
        self.queue_expiry_hours();
        if self.statements.is_empty() {
            return Ok(());
        }
        self.savepoint_queued = false;
        match connection {
            Session::Direct(_) => {
                for (sql, values) in std::mem::take(&mut self.statements) {
                    crate::session::query(&sql)
                        .bind_values(values)
                        .execute(connection)
                        .await?;
                }
            }
            Session::Pooled(_) | Session::Pool(_) if self.backend == Backend::Sqlite => {
                let (sql, values) = self.take_sqlite();
                crate::session::query(&sql)
                    .bind_values(values)
                    .execute(connection)
                    .await?;
            }
            Session::Pooled(_) | Session::Pool(_) => {
                let (statements, values) = self.take_numbered();
                let (last, rest) = statements.split_last().expect("not empty");
                let mut sql = String::new();
                for (index, statement) in rest.iter().enumerate() {
                    sql.push_str(if index == 0 { "WITH " } else { ", " });
                    sql.push_str(&format!("s{index} AS ({statement})"));
                }
                if !rest.is_empty() {
                    sql.push(' ');
                }
                sql.push_str(last);
                crate::session::query(&sql)
                    .bind_values(values)
                    .execute(connection)
                    .await?;
            }
        }
        Ok(())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

pub(crate) fn bind_all(mut query: AnyQuery<'_>, values: Vec<SqlValue>) -> AnyQuery<'_> {
    for value in values {
        query = match value {
            SqlValue::Int(value) => query.bind(value),
            SqlValue::Text(value) => query.bind(value),
        };
    }
    query
}

/// `$first, $first+1, …`: `count` parameters for an `IN (…)` list.
/// `numbered_list(2, 3)` is `$2, $3, $4`.
pub fn numbered_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("${index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `VALUES` rows of a multi-row INSERT: each row starts with the `shared` parameters
/// `$1…$shared`, then takes its own `per_row` parameters in order, then `tail` (literals).
/// `values_rows(2, 2, 2, "")` is `($1, $2, $3, $4), ($1, $2, $5, $6)`.
pub fn values_rows(shared: usize, per_row: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write;
    // Written into one string: the writer builds these for every purchase's lines, postings
    // and item statistics, and a string per parameter was 3 % of SQLite's lane in `perf`.
    let mut out = String::with_capacity(rows * (2 + (shared + per_row) * 5 + tail.len()));
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        let base = shared + 1 + row * per_row;
        let numbers = (1..=shared).chain(base..base + per_row);
        for (position, number) in numbers.enumerate() {
            if position > 0 {
                out.push_str(", ");
            }
            write!(out, "${number}").expect("writing to a String cannot fail");
        }
        out.push_str(tail);
        out.push(')');
    }
    out
}

/// A table whose row count has moved this many rows from its last ANALYZE's count, beyond
/// [`STATISTICS_GROWTH_PERCENT`] of that count, is analyzed at the next look. Small, because
/// a young table must be analyzed while it is still small: a lane caches a generic plan made
/// on the table's first statistics and keeps it until the next ANALYZE. Made on a
/// never-analyzed table of a few dozen rows, the plan for "the purchase with this id" walked
/// the merchant's `purchases_member` index and filtered by id; with 1,000 changed rows before
/// the first ANALYZE (the earlier threshold) the benchmark's refunds each read every purchase
/// of the merchant (2.4 ms and 1,687 buffers a lookup, 23 % of PostgreSQL's statement time).
pub const STATISTICS_GROWTH_ROWS_MIN: i64 = 50;
/// The growth, as a share of the last ANALYZE's row count, beyond which a table is analyzed
/// again: its size the planner scales by the table's pages anyway, so only the shape of the
/// data must keep up. With 20 % a fast-growing table was analyzed every few seconds
/// (purchase lines: about 250 ms each) and the spread scenario lost 4-10 %.
pub const STATISTICS_GROWTH_PERCENT: i64 = 100;
/// The share of a table's live rows that may be changed in place before its statistics count
/// as stale.
pub const STATISTICS_STALE_FRACTION_PERCENT: i64 = 20;
/// Rows changed in place (updates, and inserts balanced by deletes) since a table's last
/// ANALYZE, beyond [`STATISTICS_STALE_FRACTION_PERCENT`] of its live rows, before the refresh
/// analyzes it for the new values' sake.
pub const STATISTICS_CHANGED_ROWS_MIN: i64 = 1_000;
/// A table analyzed for changed values waits this long before the next such ANALYZE. Tables
/// that are only updated (accounts, members, the item statistics: 16 pair updates a purchase
/// in the benchmark) would otherwise be analyzed at every look for nothing: with a look
/// every 2 s that cost the ledger benchmark's spread scenario a sixth of its rate.
pub const STATISTICS_CHANGED_INTERVAL_SECONDS: i64 = 60;
/// Tables one [`refresh_statistics`] call analyzes at most (the schema has 36), those whose
/// row counts moved the most against their thresholds first. Young tables cost an ANALYZE of
/// a few milliseconds each and must all be analyzed at the first look: with at most 8 a look,
/// a young merchant's `purchases` came after 8 faster-growing tables and waited a look
/// longer, its refunds reading every purchase meanwhile.
pub const STATISTICS_TABLES_PER_RUN_MAX: i64 = 40;

/// On PostgreSQL, runs ANALYZE on this schema's tables whose statistics have fallen behind
/// their changes, and returns their names; on SQLite it does nothing. Autovacuum may be off,
/// and even when on it looks once a minute: meanwhile a young, fast-growing merchant's tables
/// keep the statistics of when they were nearly empty, and the planner answers "these
/// purchases' lines" by scanning all of the merchant's lines (measured: 170 ms per dispatcher
/// batch at 80,000 lines, and purchase rates falling from 630 to 170 per second within a
/// minute of the plugin benchmark).
pub async fn refresh_statistics(database: &Database) -> Result<Vec<String>, CoreError> {
    if database.backend != Backend::Postgres {
        return Ok(Vec::new());
    }
    // reltuples is the row count of the last ANALYZE or VACUUM (-1: never); n_live_tup is
    // the row count now. A VACUUM without ANALYZE resets the growth; the changed-rows rule
    // (n_mod_since_analyze) then still catches the table.
    let stale: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name FROM (SELECT quote_ident(s.schemaname) || '.' || \
         quote_ident(s.relname) AS table_name, \
         abs(s.n_live_tup - greatest(c.reltuples, 0)) \
         / ($1 + greatest(c.reltuples, 0) * $6 / 100.0) AS growth, \
         s.n_mod_since_analyze, s.n_live_tup, \
         greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.schemaname = current_schema()) AS t \
         WHERE growth > 1 OR (n_mod_since_analyze > $3 + n_live_tup * $2 / 100 \
         AND (analyzed_at IS NULL OR analyzed_at < now() - make_interval(secs => $4))) \
         ORDER BY growth DESC, table_name LIMIT $5",
    )
    .bind(STATISTICS_GROWTH_ROWS_MIN)
    .bind(STATISTICS_STALE_FRACTION_PERCENT)
    .bind(STATISTICS_CHANGED_ROWS_MIN)
    .bind(STATISTICS_CHANGED_INTERVAL_SECONDS)
    .bind(STATISTICS_TABLES_PER_RUN_MAX)
    .bind(STATISTICS_GROWTH_PERCENT)
    .fetch_all(&database.pool)
    .await?;
    let mut analyzed = Vec::with_capacity(stale.len());
    for (table,) in stale {
        // Schema and table come quoted by quote_ident, so the name is exactly that table.
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&database.pool)
            .await?;
        analyzed.push(table);
    }
    Ok(analyzed)
}

/// `$k` → `?`, with `values[k - 1]` repeated in the order of the placeholders. SQLite finds a
/// numbered parameter's index by a linear search of the statement's names, and sqlx looks up
/// every index from 1 to the highest in each statement of a script, so numbered parameters
/// cost quadratic time in a long script (measured: 2.5 % of an import's CPU, all of it on the
/// writer's thread); anonymous ones are bound in one pass. Our SQL has no `$` inside literals.
pub(crate) fn positional(sql: &str, values: Vec<SqlValue>) -> (String, Vec<SqlValue>) {
    let mut out = String::with_capacity(sql.len());
    let mut ordered = Vec::with_capacity(values.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut index = 0usize;
            while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                index = index * 10 + digit as usize;
                chars.next();
            }
            let value = values
                .get(index.wrapping_sub(1))
                .unwrap_or_else(|| panic!("${index} has no value in {sql}"));
            ordered.push(value.clone());
            out.push('?');
        } else {
            out.push(c);
        }
    }
    (out, ordered)
}

/// `$k` → `$(k + offset)`. Our SQL has no `$` inside literals.
fn renumber(sql: &str, offset: usize) -> String {
    use std::fmt::Write;
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut number = String::new();
            while let Some(digit) = chars.peek().filter(|d| d.is_ascii_digit()) {
                number.push(*digit);
                chars.next();
            }
            let index: usize = number.parse().expect("digits");
            write!(out, "${}", index + offset).expect("writing to a String cannot fail");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_in_memory_sqlite() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
        ] {
            let refused = super::sqlite_url_with_create(url).expect_err(url);
            assert!(refused.to_string().contains("in-memory"), "{refused}");
        }
    }

    #[test]
    fn builds_values_rows() {
        assert_eq!(
            super::values_rows(2, 2, 2, ""),
            "($1, $2, $3, $4), ($1, $2, $5, $6)"
        );
        assert_eq!(super::values_rows(1, 1, 1, ", 0"), "($1, $2, 0)");
        assert_eq!(super::values_rows(0, 2, 2, ""), "($1, $2), ($3, $4)");
        assert_eq!(super::values_rows(1, 0, 2, ""), "($1), ($1)");
    }

    #[test]
    fn builds_numbered_lists() {
        assert_eq!(super::numbered_list(2, 3), "$2, $3, $4");
        assert_eq!(super::numbered_list(5, 1), "$5");
    }

    #[test]
    fn makes_parameters_positional() {
        let (sql, values) = super::positional(
            "VALUES ($1, $2), ($1, $3) WHERE x = '$'",
            vec![1.into(), "two".into(), 3.into()],
        );
        assert_eq!(sql, "VALUES (?, ?), (?, ?) WHERE x = '$'");
        let described: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
        assert_eq!(
            described,
            [
                "Int(Some(1))",
                "Text(Some(\"two\"))",
                "Int(Some(1))",
                "Int(Some(3))"
            ]
        );
    }

    #[test]
    fn renumbers_parameters() {
        assert_eq!(
            super::renumber("VALUES ($1, $2, $10)", 3),
            "VALUES ($4, $5, $13)"
        );
        assert_eq!(super::renumber("x = $1", 0), "x = $1");
    }
}
