//! Benchmarks of the loyalty host.
//!
//! * `loyalty-bench ledger`: purchases over HTTP against a real `loyalty` server, compared
//!   with the machine's bare durable-commit rate, on SQLite and (when a URL is given)
//!   PostgreSQL.
//! * `loyalty-bench plugins`: what the plugin sandbox costs (see `plugins.rs`).
//!
//! Normally run through `cargo xtask bench ledger|plugins [--quick]`, which builds everything
//! in release mode first.

mod plugins;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

#[derive(Parser)]
#[command(name = "loyalty-bench", about = "Benchmarks for the loyalty host")]
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Purchases/s and latency over HTTP vs. bare durable commits/s, per backend.
    Ledger(LedgerArgs),
    /// Plugin compile and load times, fresh-instance call latency and throughput, and the
    /// purchase rate with an earn-rule plugin vs the built-in rate.
    Plugins(plugins::PluginsArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Args)]
struct LedgerArgs {
    /// Scale the work down for a smoke run (3 s per scenario, 2,000 members, 300 bare commits).
    #[arg(long)]
    quick: bool,
    /// PostgreSQL server to benchmark on (a fresh database `bench_<random>` is created there
    /// and dropped at the end). Without it (and without TEST_DATABASE_URL) only SQLite runs.
    #[arg(long, env = "TEST_DATABASE_URL", value_name = "URL")]
    postgres: Option<String>,
    /// Run only this backend.
    #[arg(long, value_enum)]
    only: Option<Backend>,
    /// The `loyalty` binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    loyalty_bin: Option<PathBuf>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of purchases per scenario [default: 20, --quick: 3].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Stop a scenario after this many purchases even if time is left [default: 20000].
    #[arg(long, value_name = "N")]
    max_purchases: Option<usize>,
    /// Members in the spread scenario [default: 100000, --quick: 2000].
    #[arg(long, value_name = "N")]
    members: Option<usize>,
    /// Sequential single-row commits for the bare rate [default: 2000, --quick: 300].
    #[arg(long, value_name = "N")]
    bare_commits: Option<usize>,
    /// Keep the temporary directory (SQLite's databases, server logs) and the PostgreSQL
    /// database (its name is printed), to look into afterwards.
    #[arg(long)]
    keep: bool,
}

/// The resolved knobs of one run.
#[derive(Clone, Copy)]
struct Params {
    clients: usize,
    duration: Duration,
    max_purchases: usize,
    members: usize,
    /// How many of the spread members get a stored-value top-up (they are the ones that pay
    /// with stored value).
    sv_members: usize,
    bare_commits: usize,
}

/// Fraction of purchases paying (part or all) with stored value.
const SV_SHARE: f64 = 0.2;
/// Fraction of purchases followed by a refund.
const REFUND_SHARE: f64 = 0.1;
/// One top-up, in CNY.
const TOP_UP: &str = "100000.00";
const TOP_UP_CENTS: i64 = 10_000_000;
/// Errors printed in full (the rest are only counted).
const SHOWN_ERRORS: u64 = 5;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Ledger(args) => ledger(args).await,
        Cmd::Plugins(args) => plugins::plugins(args).await,
    };
    if let Err(err) = result {
        eprintln!("loyalty-bench: error: {err:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// the ledger benchmark

struct Row {
    backend: &'static str,
    scenario: String,
    purchases: u64,
    refunds: u64,
    elapsed: Duration,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    bare: f64,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "{:<9}{:<15}purchases/s {:.1}  p50 {:.1} ms  p99 {:.1} ms  errors {}  ratio {:.2} (bare {:.0} commits/s)",
            self.backend,
            self.scenario,
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.rate / self.bare,
            self.bare
        )
    }
}

async fn ledger(args: LedgerArgs) -> Result<()> {
    let params = Params {
        clients: args.clients.max(1),
        duration: Duration::from_secs_f64(args.duration.unwrap_or(if args.quick {
            3.0
        } else {
            20.0
        })),
        max_purchases: args.max_purchases.unwrap_or(20_000),
        members: args
            .members
            .unwrap_or(if args.quick { 2_000 } else { 100_000 })
            .max(1),
        sv_members: 0,
        bare_commits: args
            .bare_commits
            .unwrap_or(if args.quick { 300 } else { 2_000 })
            .max(1),
    };
    let params = Params {
        sv_members: params
            .members
            .min(if args.quick { 200 } else { 2_000 })
            .max(1),
        ..params
    };

    let bin = loyalty_bin(args.loyalty_bin.as_deref(), "ledger")?;

    let postgres = args.postgres.clone().filter(|url| !url.trim().is_empty());
    let mut backends = Vec::new();
    if args.only != Some(Backend::Postgres) {
        backends.push(Backend::Sqlite);
    }
    if args.only != Some(Backend::Sqlite) {
        if postgres.is_some() {
            backends.push(Backend::Postgres);
        } else if args.only == Some(Backend::Postgres) {
            bail!("--only postgres needs --postgres <url> or TEST_DATABASE_URL");
        } else {
            println!(
                "PostgreSQL: skipped (set TEST_DATABASE_URL or pass --postgres <url> to include it)"
            );
        }
    }

    let tmp = std::env::temp_dir().join(format!("loyalty-bench-{}", &random_hex()[..12]));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;

    println!(
        "ledger bench: {} clients, {:.0} s or {} purchases per scenario, spread over {} members \
         ({} with stored value), {} bare commits; server {}",
        params.clients,
        params.duration.as_secs_f64(),
        params.max_purchases,
        params.members,
        params.sv_members,
        params.bare_commits,
        bin.display()
    );
    if let Some(micros) = sync_delay_us() {
        println!(
            "EMULATED DISK: every fsync and fdatasync of this benchmark and its server waits \
             {micros} µs more (bench/sync-delay, preloaded); a PostgreSQL server only if it was \
             started with the same library preloaded (its bare rate shows whether it was)"
        );
    }

    let mut rows = Vec::new();
    let mut failure = None;
    for backend in backends {
        println!("\n== {} ==", backend.name());
        let result = match backend {
            Backend::Sqlite => bench_sqlite(&bin, &tmp, params).await,
            Backend::Postgres => {
                let url = postgres
                    .as_deref()
                    .expect("postgres backend is only chosen with a URL");
                bench_postgres(&bin, &tmp, url, params, args.keep).await
            }
        };
        match result {
            Ok(mut r) => rows.append(&mut r),
            Err(err) => {
                eprintln!("{}: FAILED: {err:#}", backend.name());
                failure.get_or_insert(err.context(format!("{} backend", backend.name())));
            }
        }
    }

    println!("\n== results ==");
    for row in &rows {
        println!("{}", row.line());
    }
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    if errors > 0 {
        println!(
            "WARNING: {errors} requests answered non-2xx or failed (see the first ones above)"
        );
    }

    if failure.is_some() || args.keep {
        println!("kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

async fn bench_sqlite(bin: &Path, tmp: &Path, params: Params) -> Result<Vec<Row>> {
    let dir = tmp.join("sqlite");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bare = bare_sqlite(&dir.join("bare.db"), params.bare_commits).await?;
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    bench_server(Backend::Sqlite, bin, &dir, &url, bare, params).await
}

async fn bench_postgres(
    bin: &Path,
    tmp: &Path,
    admin_url: &str,
    params: Params,
    keep: bool,
) -> Result<Vec<Row>> {
    let dir = tmp.join("postgres");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = format!("bench_{}", &random_hex()[..12]);
    let url = with_database(admin_url, &db)?;
    create_database(admin_url, &db).await?;

    let result = async {
        let bare = bare_postgres(&url, params.bare_commits).await?;
        bench_server(Backend::Postgres, bin, &dir, &url, bare, params).await
    }
    .await;

    if keep {
        println!("kept database {db} (drop it with DROP DATABASE {db})");
        return result;
    }
    match drop_database(admin_url, &db).await {
        Ok(()) => println!("dropped database {db}"),
        Err(err) => eprintln!("warning: could not drop database {db}: {err:#}"),
    }
    result
}

async fn create_database(admin_url: &str, db: &str) -> Result<()> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL (--postgres / TEST_DATABASE_URL)")?;
    sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("CREATE DATABASE {db}"))?;
    let _ = admin.close().await;
    println!("created database {db}");
    Ok(())
}

async fn drop_database(admin_url: &str, db: &str) -> Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let forced = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    if forced.is_err() {
        // PostgreSQL < 13 has no FORCE.
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute(&mut admin)
            .await?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// A connection of the bench's own to the server's database (read-write for SQLite's file).
async fn connect_any(backend: Backend, url: &str) -> Result<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = match backend {
        Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rw"),
        _ => url.to_string(),
    };
    sqlx::AnyConnection::connect(&url)
        .await
        .with_context(|| format!("connect {url}"))
}

/// The server's outbox work still to do: events not dispatched, purchases not yet counted
/// into the item statistics.
async fn outbox_backlog(connection: &mut sqlx::AnyConnection) -> Result<(i64, i64)> {
    let undispatched =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE dispatched_at IS NULL")
            .fetch_one(&mut *connection)
            .await
            .context("counting undispatched events")?;
    // A server built before the queue (migration 0010) has no such table.
    let uncounted = sqlx::query_scalar("SELECT COUNT(*) FROM item_stats_queue")
        .fetch_one(&mut *connection)
        .await
        .unwrap_or(0);
    Ok((undispatched, uncounted))
}

/// Starts the server on `url`, runs both scenarios, stops it and runs `loyalty verify`.
async fn bench_server(
    backend: Backend,
    bin: &Path,
    dir: &Path,
    url: &str,
    bare: f64,
    params: Params,
) -> Result<Vec<Row>> {
    let mut server = Server::start(bin, url, dir).await?;
    let result = async {
        let admin = setup_merchant(&server).await?;
        let server_pid = server.child.id();
        let ceiling = http_ceiling(&admin.api, params).await?;
        println!(
            "  ceiling: GET /v1/merchant {ceiling:.0} requests/s from the same clients \
             ({:.2} of the bare commit rate; no purchase can be faster than this request)",
            ceiling / bare
        );
        let mut rows = Vec::new();
        for spread in [false, true] {
            let row = scenario(backend, &admin, server_pid, spread, bare, params, url)
                .await
                .with_context(|| {
                    format!("scenario {}", if spread { "spread" } else { "one-member" })
                })?;
            println!("{}", row.line());
            rows.push(row);
        }
        Ok::<_, anyhow::Error>(rows)
    }
    .await;
    if result.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let rows = result?;
    verify(bin, url).await?;
    Ok(rows)
}

/// How long [`settle_database`] waits for the dispatcher to work off the outbox.
const OUTBOX_DRAIN_MAX: Duration = Duration::from_secs(180);

/// Pays the setup's write debt before measuring, so purchases are not timed against the
/// outbox, checkpoint and autovacuum work of the scenario before and of bulk-loading members:
/// the outbox is drained, PostgreSQL is vacuumed, analysed and checkpointed; SQLite's WAL is
/// checkpointed.
async fn settle_database(backend: Backend, url: &str) -> Result<()> {
    let started = Instant::now();
    let mut connection = connect_any(backend, url).await?;
    // The outbox first: the dispatcher still working off the one-member scenario's events
    // and item statistics would be timed against the spread scenario, and a build that ran
    // the first scenario faster would look slower in the second.
    let mut backlog = (0, 0);
    while started.elapsed() < OUTBOX_DRAIN_MAX {
        backlog = outbox_backlog(&mut connection).await?;
        if backlog == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if backlog != (0, 0) {
        println!(
            "  {} events undispatched and {} purchases uncounted after {OUTBOX_DRAIN_MAX:?}",
            backlog.0, backlog.1
        );
    }
    let statements: &[&str] = match backend {
        Backend::Postgres => &["VACUUM ANALYZE", "CHECKPOINT"],
        Backend::Sqlite => &["PRAGMA wal_checkpoint(PASSIVE)"],
    };
    for statement in statements {
        sqlx::raw_sql(statement)
            .execute(&mut connection)
            .await
            .with_context(|| format!("{statement} after setup"))?;
    }
    connection.close().await?;
    println!(
        "  settled the database after setup in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bare durable-commit rate

async fn bare_sqlite(path: &Path, n: usize) -> Result<f64> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        bail!("bare SQLite is journal_mode={mode} synchronous={sync}, wanted wal / 2 (FULL)");
    }
    sqlx::raw_sql("CREATE TABLE bare (id INTEGER PRIMARY KEY, v BIGINT)")
        .execute(&mut conn)
        .await?;
    let start = Instant::now();
    for i in 0..n {
        sqlx::query("INSERT INTO bare (id, v) VALUES (?1, ?2)")
            .bind(i as i64)
            .bind((i as i64) * 7)
            .execute(&mut conn)
            .await
            .context("bare SQLite insert")?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    conn.close().await?;
    println!(
        "sqlite   bare commits/s {rate:.0} ({n} autocommit INSERTs, WAL, synchronous=FULL, {:.2} ms each)",
        1000.0 / rate
    );
    Ok(rate)
}

async fn bare_postgres(url: &str, n: usize) -> Result<f64> {
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to the bench database")?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    sqlx::raw_sql("CREATE TABLE bare (id INTEGER PRIMARY KEY, v BIGINT)")
        .execute(&mut conn)
        .await?;
    let start = Instant::now();
    for i in 0..n {
        sqlx::query("INSERT INTO bare (id, v) VALUES ($1, $2)")
            .bind(i as i32)
            .bind((i as i64) * 7)
            .execute(&mut conn)
            .await
            .context("bare PostgreSQL insert")?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bare").execute(&mut conn).await?;
    conn.close().await?;
    println!(
        "postgres bare commits/s {rate:.0} ({n} autocommit INSERTs, synchronous_commit={sync}, fsync={fsync}, {:.2} ms each)",
        1000.0 / rate
    );
    Ok(rate)
}

// ---------------------------------------------------------------------------------------------
// the server process

struct Server {
    child: tokio::process::Child,
    base: String,
    operator_key: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    async fn start(bin: &Path, url: &str, dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let operator_key = format!("op_{}", random_hex());
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).context("creating the server log")?;
        let err = out.try_clone().context("duplicating the log handle")?;
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .arg("--database")
            .arg(url)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("LOYALTY_OPERATOR_KEY", &operator_key)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            operator_key,
            log,
            http,
        };
        server.wait_healthy().await?;
        println!(
            "server up at {} (log {})",
            server.base,
            server.log.display()
        );
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let start = Instant::now();
        let url = format!("{}/healthz", self.base);
        loop {
            let ok = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|r| r.status() == reqwest::StatusCode::OK)
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                self.print_log_tail();
                bail!("the server exited before becoming healthy ({status})");
            }
            if start.elapsed() > Duration::from_secs(60) {
                self.print_log_tail();
                bail!("the server did not answer GET /healthz with 200 within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        eprintln!("--- last lines of {} ---", self.log.display());
        for line in &lines[start..] {
            eprintln!("  {line}");
        }
        eprintln!("---");
    }

    fn api(&self, key: &str) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            key: key.to_string(),
        }
    }
}

async fn verify(bin: &Path, url: &str) -> Result<()> {
    let out = tokio::process::Command::new(bin)
        .arg("verify")
        .arg("--database")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} verify", bin.display()))?;
    println!("loyalty verify: {}", out.status);
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("  {line}");
    }
    if !out.status.success() {
        bail!("`loyalty verify` failed ({})", out.status);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    /// POST with a fresh Idempotency-Key; Ok only on 2xx. The error text names the request,
    /// the status and the body.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let request = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", format!("bench-{}", random_hex()))
            .json(body);
        self.send("POST", path, request).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Result<Value, String> {
        let request = self
            .http
            .patch(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .json(body);
        self.send("PATCH", path, request).await
    }

    async fn put(&self, path: &str, body: &Value) -> Result<Value, String> {
        let request = self
            .http
            .put(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .json(body);
        self.send("PUT", path, request).await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let request = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.key);
        self.send("GET", path, request).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, String> {
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {path} -> {status}: reading body: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path} -> {status}: {text}"));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path} -> {status}: body is not JSON ({e}): {text}"))
    }
}

/// The `id` of a created resource, as a string (accepts string or number ids).
fn id_of(v: &Value) -> Result<String, String> {
    match v.get("id") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("response has no id: {v}")),
    }
}

/// Counts non-2xx answers and transport failures, printing the first few in full.
struct Errors {
    count: AtomicU64,
    label: String,
}

impl Errors {
    fn new(label: String) -> Self {
        Self {
            count: AtomicU64::new(0),
            label,
        }
    }

    fn record(&self, message: &str) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= SHOWN_ERRORS {
            eprintln!("  [{}] error #{n}: {}", self.label, truncate(message, 600));
        } else if n == SHOWN_ERRORS + 1 {
            eprintln!("  [{}] (further errors are only counted)", self.label);
        }
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------
// setup

struct Merchant {
    api: Api,
    store_id: String,
}

async fn setup_merchant(server: &Server) -> Result<Merchant> {
    let operator = server.api(&server.operator_key);
    let merchant = operator
        .post(
            "/v1/merchants",
            &json!({"name": "Bench", "currency": "CNY"}),
        )
        .await
        .map_err(|e| anyhow!(e))
        .context("creating the merchant")?;
    let key = merchant
        .get("api_key")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("merchant response has no api_key: {merchant}"))?;
    let api = server.api(key);
    api.patch(
        "/v1/merchant",
        &json!({"settings": {"points_per_currency_unit": "1", "points_pending_days": 0}}),
    )
    .await
    .map_err(|e| anyhow!(e))
    .context("configuring the merchant")?;
    let store = api
        .post("/v1/stores", &json!({"code": "S1", "name": "Store 1"}))
        .await
        .map_err(|e| anyhow!(e))
        .context("creating the store")?;
    let store_id = id_of(&store).map_err(|e| anyhow!(e))?;
    Ok(Merchant { api, store_id })
}

/// Creates `n` members with `clients` concurrent requests; returns the ids created.
async fn create_members(
    api: &Api,
    prefix: &str,
    n: usize,
    clients: usize,
    errors: &Arc<Errors>,
) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(n) {
        let api = api.clone();
        let next = next.clone();
        let errors = errors.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = json!({
                    "external_id": format!("{prefix}-{i}"),
                    "name": format!("Bench member {i}"),
                });
                match api.post("/v1/members", &body).await.and_then(|v| id_of(&v)) {
                    Ok(id) => ids.push(id),
                    Err(e) => errors.record(&e),
                }
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for task in tasks {
        ids.extend(task.await.expect("member-creating task panicked"));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  created {} members in {secs:.1} s ({:.0}/s)",
        ids.len(),
        ids.len() as f64 / secs
    );
    ids
}

/// Tops up each member `times` times with TOP_UP, `clients` requests at a time.
async fn top_up(
    api: &Api,
    store_id: &str,
    members: &[String],
    times: usize,
    clients: usize,
    errors: &Arc<Errors>,
) -> usize {
    let jobs: Arc<Vec<String>> = Arc::new(
        members
            .iter()
            .flat_map(|m| std::iter::repeat_n(m.clone(), times))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(jobs.len()) {
        let (api, jobs, next, ok, errors) = (
            api.clone(),
            jobs.clone(),
            next.clone(),
            ok.clone(),
            errors.clone(),
        );
        let body = json!({"amount": TOP_UP, "store_id": store_id, "payment_method": "cash"});
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(member) = jobs.get(i) else { break };
                let path = format!("/v1/members/{member}/stored-value/top-ups");
                match api.post(&path, &body).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.record(&e),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("top-up task panicked");
    }
    let done = ok.load(Ordering::Relaxed);
    println!(
        "  {done} top-ups of {TOP_UP} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    done
}

// ---------------------------------------------------------------------------------------------
// scenarios

async fn scenario(
    backend: Backend,
    merchant: &Merchant,
    server_pid: Option<u32>,
    spread: bool,
    bare: f64,
    params: Params,
    database_url: &str,
) -> Result<Row> {
    let name = if spread {
        format!("{}-members", params.members)
    } else {
        "one-member".to_string()
    };
    println!("-- {} {name}", backend.name());
    let errors = Arc::new(Errors::new(format!("{} {name}", backend.name())));
    let api = &merchant.api;
    let tag = &random_hex()[..8];

    let (members, sv_members) = if spread {
        let members = create_members(
            api,
            &format!("m-{tag}"),
            params.members,
            params.clients,
            &errors,
        )
        .await;
        if members.is_empty() {
            bail!("no member could be created");
        }
        let sv: Vec<String> = members.iter().take(params.sv_members).cloned().collect();
        // Plenty: each stored-value member sees a few purchases of at most 900.00 each.
        top_up(api, &merchant.store_id, &sv, 1, params.clients, &errors).await;
        (members, sv)
    } else {
        let members = create_members(api, &format!("m-{tag}"), 1, 1, &errors).await;
        if members.is_empty() {
            bail!("the member could be created");
        }
        // Stored-value spending on this member: ~SV_SHARE of max_purchases at well under
        // 250.00 each on average (partial payments, refunds give some back).
        let need = (params.max_purchases as f64 * SV_SHARE * 25_000.0) as i64;
        let times = (need / TOP_UP_CENTS + 1) as usize;
        top_up(
            api,
            &merchant.store_id,
            &members,
            times,
            params.clients,
            &errors,
        )
        .await;
        (members.clone(), members)
    };

    let setup_errors = errors.get();
    if setup_errors > 0 {
        eprintln!("  {setup_errors} errors during setup");
    }
    if spread {
        // Only after the bulk load: analysing the one-member database would teach PostgreSQL
        // that the tables are tiny, and its cached plans would then scan them as they grow.
        settle_database(backend, database_url).await?;
    }

    let local_postgres = backend == Backend::Postgres && is_local(database_url);
    let cpu_before = (
        server_pid.and_then(cpu_seconds),
        cpu_seconds(std::process::id()),
    );
    let postgres_before = local_postgres.then(postgres_cpu_seconds).flatten();
    let outcome = run_purchases(
        api.clone(),
        merchant.store_id.clone(),
        Arc::new(members),
        Arc::new(sv_members),
        params,
        errors.clone(),
    )
    .await;

    let cpu_after = (
        server_pid.and_then(cpu_seconds),
        cpu_seconds(std::process::id()),
    );
    let postgres_after = local_postgres.then(postgres_cpu_seconds).flatten();
    // Work the server put off (dispatching, counting item statistics) is not in the figures
    // above: show how much there is.
    let mut connection = connect_any(backend, database_url).await?;
    let (undispatched, uncounted) = outbox_backlog(&mut connection).await?;
    connection.close().await?;
    println!(
        "  left for after the purchases: {undispatched} events undispatched, {uncounted} \
         purchases not yet counted into the item statistics"
    );
    if let ((Some(s0), Some(c0)), (Some(s1), Some(c1))) = (cpu_before, cpu_after) {
        let wall = outcome.elapsed.as_secs_f64();
        println!(
            "  cpu during purchases: server {:.1} s ({:.0} % of one core), bench client {:.1} s ({:.0} %)",
            s1 - s0,
            100.0 * (s1 - s0) / wall,
            c1 - c0,
            100.0 * (c1 - c0) / wall
        );
        let postgres = postgres_before.zip(postgres_after).map(|(p0, p1)| p1 - p0);
        if let Some(postgres) = postgres {
            println!(
                "  cpu during purchases: PostgreSQL {postgres:.1} s ({:.0} % of one core; \
                 this machine's postgres processes)",
                100.0 * postgres / wall
            );
        }
        println!(
            "{}",
            cpu_budget(
                outcome.purchases,
                s1 - s0,
                postgres.unwrap_or(0.0),
                c1 - c0,
                bare
            )
        );
    }
    let mut lat = outcome.latencies_us;
    lat.sort_unstable();
    let secs = outcome.elapsed.as_secs_f64();
    let row = Row {
        backend: backend.name(),
        scenario: name,
        purchases: outcome.purchases,
        refunds: outcome.refunds,
        elapsed: outcome.elapsed,
        rate: outcome.purchases as f64 / secs,
        p50_ms: percentile(&lat, 0.50) / 1000.0,
        p99_ms: percentile(&lat, 0.99) / 1000.0,
        errors: errors.get(),
        bare,
    };
    println!(
        "  {} purchases and {} refunds in {:.1} s",
        row.purchases,
        row.refunds,
        row.elapsed.as_secs_f64()
    );
    let enrolments = &outcome.enrolments_us;
    println!(
        "  beside them {} enrolments, one per {ENROLMENT_INTERVAL_MS} ms at most: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        enrolments.len(),
        percentile(enrolments, 0.50) / 1000.0,
        percentile(enrolments, 0.99) / 1000.0,
        enrolments.last().copied().unwrap_or_default() as f64 / 1000.0
    );
    Ok(row)
}

/// Seconds the ceiling is measured for, at most (the scenario's duration if shorter).
const CEILING_SECONDS_MAX: f64 = 5.0;

/// Requests/s of the cheapest authenticated request, the merchant's own record (served from
/// the key cache, no write), from the same clients: what the HTTP path and this machine's two
/// cores allow before a purchase does any work of its own.
async fn http_ceiling(api: &Api, params: Params) -> Result<f64> {
    let seconds = params.duration.as_secs_f64().min(CEILING_SECONDS_MAX);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..params.clients {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut served = 0u64;
            while Instant::now() < deadline {
                api.get("/v1/merchant").await?;
                served += 1;
            }
            Ok::<u64, String>(served)
        }));
    }
    let mut served = 0;
    for task in tasks {
        served += task
            .await
            .expect("ceiling task panicked")
            .map_err(|e| anyhow!(e))
            .context("measuring the HTTP ceiling")?;
    }
    Ok(served as f64 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

struct Outcome {
    purchases: u64,
    refunds: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
    /// Latencies of the enrolments made beside the purchases, sorted.
    enrolments_us: Vec<u64>,
}

/// One enrolment this often beside the purchases, from a client of its own: a till signing up
/// members during the rush. Its latencies show whether a write outside the purchase path
/// waits behind the purchases.
const ENROLMENT_INTERVAL_MS: u64 = 100;

/// Enrols members one after another, one every [`ENROLMENT_INTERVAL_MS`], until `deadline`.
async fn enrol_beside(
    api: Api,
    prefix: String,
    deadline: Instant,
    errors: Arc<Errors>,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(ENROLMENT_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0.. {
        ticks.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        let body = json!({"external_id": format!("{prefix}-{i}")});
        let t = Instant::now();
        match api.post("/v1/members", &body).await.and_then(|v| id_of(&v)) {
            Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
            Err(e) => errors.record(&e),
        }
    }
    latencies.sort_unstable();
    latencies
}

async fn run_purchases(
    api: Api,
    store_id: String,
    members: Arc<Vec<String>>,
    sv_members: Arc<Vec<String>>,
    params: Params,
    errors: Arc<Errors>,
) -> Outcome {
    let issued = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(params.max_purchases)));
    let refunds = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + params.duration;
    let enrolments = tokio::spawn(enrol_beside(
        api.clone(),
        format!("enrolled-{}", &random_hex()[..8]),
        deadline,
        errors.clone(),
    ));
    let mut tasks = Vec::new();
    for _ in 0..params.clients {
        let (api, store_id, members, sv_members, errors) = (
            api.clone(),
            store_id.clone(),
            members.clone(),
            sv_members.clone(),
            errors.clone(),
        );
        let (issued, latencies, refunds) = (issued.clone(), latencies.clone(), refunds.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            let mut mine = Vec::new();
            while Instant::now() < deadline
                && issued.fetch_add(1, Ordering::Relaxed) < params.max_purchases
            {
                let pays_sv = rng.gen_bool(SV_SHARE);
                let member = if pays_sv {
                    &sv_members[rng.gen_range(0..sv_members.len())]
                } else {
                    &members[rng.gen_range(0..members.len())]
                };
                let (body, total) = purchase_body(&mut rng, member, &store_id, pays_sv);
                let t = Instant::now();
                let result = api.post("/v1/purchases", &body).await;
                let elapsed = t.elapsed();
                let purchase = match result.and_then(|v| id_of(&v)) {
                    Ok(id) => id,
                    Err(e) => {
                        errors.record(&e);
                        continue;
                    }
                };
                mine.push(elapsed.as_micros() as u64);
                if rng.gen_bool(REFUND_SHARE) {
                    let body = if rng.gen_bool(0.5) || total < 2 {
                        json!({})
                    } else {
                        json!({"amount": money(rng.gen_range(1..total))})
                    };
                    match api
                        .post(&format!("/v1/purchases/{purchase}/refunds"), &body)
                        .await
                    {
                        Ok(_) => {
                            refunds.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.record(&e),
                    }
                }
            }
            latencies
                .lock()
                .expect("latency list poisoned")
                .extend(mine);
        }));
    }
    for task in tasks {
        task.await.expect("purchase task panicked");
    }
    let elapsed = start.elapsed();
    let enrolments_us = enrolments.await.expect("enrolling task panicked");
    let latencies_us = std::mem::take(&mut *latencies.lock().expect("latency list poisoned"));
    Outcome {
        purchases: latencies_us.len() as u64,
        refunds: refunds.load(Ordering::Relaxed),
        latencies_us,
        elapsed,
        enrolments_us,
    }
}

const CATEGORIES: [&str; 5] = ["drinks", "food", "bakery", "household", "beauty"];

/// A purchase of 1–10 distinct items; returns the body and the total in cents.
fn purchase_body(rng: &mut StdRng, member: &str, store_id: &str, pays_sv: bool) -> (Value, i64) {
    let n = rng.gen_range(1..=10);
    let skus = rand::seq::index::sample(rng, 200, n);
    let mut total = 0i64;
    let items: Vec<Value> = skus
        .iter()
        .map(|k| {
            let quantity: i64 = rng.gen_range(1..=3);
            let price: i64 = rng.gen_range(100..=3_000);
            total += quantity * price;
            json!({
                "sku": format!("SKU-{k}"),
                "name": format!("Item {k}"),
                "category": CATEGORIES[k % CATEGORIES.len()],
                "quantity": quantity,
                "unit_price": money(price),
            })
        })
        .collect();
    let other = if rng.gen_bool(0.5) { "cash" } else { "card" };
    let payments = if !pays_sv {
        json!([{"method": other, "amount": money(total)}])
    } else if rng.gen_bool(0.5) {
        json!([{"method": "stored_value", "amount": money(total)}])
    } else {
        let sv = rng.gen_range(1..total);
        json!([
            {"method": "stored_value", "amount": money(sv)},
            {"method": other, "amount": money(total - sv)},
        ])
    };
    let body = json!({
        "member_id": member,
        "store_id": store_id,
        "items": items,
        "payments": payments,
    });
    (body, total)
}

/// Cents as a decimal string with two places.
fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

// ---------------------------------------------------------------------------------------------
// small helpers

fn random_hex() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// The kernel's clock ticks per second, in which `/proc` counts CPU time.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used so far (Linux `/proc`; None elsewhere).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_ticks(&stat, false)? / clock_ticks())
}

/// The CPU ticks in a `/proc/<pid>/stat` line: user and system time, and with `reaped` those
/// of the children the process has reaped too. None if the line is malformed.
fn stat_ticks(stat: &str, reaped: bool) -> Option<f64> {
    // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th, cutime and
    // cstime the 14th and 15th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let last = if reaped { 14 } else { 12 };
    (11..=last)
        .map(|index| fields.get(index)?.parse::<f64>().ok())
        .sum()
}

/// What the scenario's purchases cost in CPU, each, and the purchase rate this machine's
/// cores allow for that work at most: every core busy with nothing else. Beside the measured
/// rate it says how far the ratio to the bare commit rate can rise on this machine without
/// making a purchase cheaper (the bare rate measures the disk's fsync, not the CPU).
fn cpu_budget(purchases: u64, server: f64, postgres: f64, client: f64, bare: f64) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let per_purchase_ms = |seconds: f64| 1_000.0 * seconds / purchases.max(1) as f64;
    let total = server + postgres + client;
    let ceiling = if total > 0.0 {
        cores * purchases as f64 / total
    } else {
        f64::NAN
    };
    let postgres_part = if postgres > 0.0 {
        format!(", PostgreSQL {:.3} ms", per_purchase_ms(postgres))
    } else {
        String::new()
    };
    format!(
        "  cpu per purchase: server {:.3} ms{postgres_part}, bench client {:.3} ms; \
         {cores:.0} cores allow at most {ceiling:.0} purchases/s of this work (ratio {:.2})",
        per_purchase_ms(server),
        per_purchase_ms(client),
        ceiling / bare
    )
}

/// Whether a PostgreSQL URL names this machine (loopback, or a socket path): only then are
/// the `postgres` processes here the server's.
fn is_local(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    matches!(host, "" | "localhost" | "127.0.0.1" | "::1")
}

/// User + system CPU seconds of every process on this machine named `postgres`, with the
/// children each has reaped (a backend that exits passes its time to the postmaster), so
/// the difference of two readings is the server's work between them. None when there is no
/// such process (or no `/proc`).
fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone since the listing
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        total += stat_ticks(&stat, true).unwrap_or(0.0);
        found = true;
    }
    found.then(|| total / clock_ticks())
}

/// The `loyalty` binary: `given`, or the one next to this executable; it must exist.
fn loyalty_bin(given: Option<&Path>, bench: &str) -> Result<PathBuf> {
    let bin = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name(format!("loyalty{}", std::env::consts::EXE_SUFFIX)),
    };
    if !bin.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p loyalty-host) or run \
             `cargo xtask bench {bench}`, or pass --loyalty-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The extra wait per flush when bench/sync-delay is preloaded (`cargo xtask bench ledger
/// --sync-delay-us N`), so the figures say they were taken on an emulated disk.
fn sync_delay_us() -> Option<String> {
    let preloaded =
        std::env::var("LD_PRELOAD").is_ok_and(|libraries| libraries.contains("loyalty_sync_delay"));
    preloaded.then(|| std::env::var("LOYALTY_SYNC_DELAY_US").unwrap_or_else(|_| "500".into()))
}

/// The same PostgreSQL URL pointing at database `db` (keeps user, host and query).
fn with_database(url: &str, db: &str) -> Result<String> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("not a URL: {url}"))?;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[authority_end..];
    let query = after.find('?').map_or("", |q| &after[q..]);
    Ok(format!(
        "{}{}/{db}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/test", "b").unwrap(),
            "postgres://u:p@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://127.0.0.1?sslmode=disable", "b").unwrap(),
            "postgres://127.0.0.1/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql:///test?host=/run/pg", "b").unwrap(),
            "postgresql:///b?host=/run/pg"
        );
    }

    #[test]
    fn money_formats_cents() {
        assert_eq!(money(1250), "12.50");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(100_000), "1000.00");
    }

    #[test]
    fn purchase_payments_sum_to_total() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let sv = rng.gen_bool(0.5);
            let (body, total) = purchase_body(&mut rng, "m", "s", sv);
            let cents = |v: &Value| -> i64 {
                let s = v.as_str().unwrap();
                let (a, b) = s.split_once('.').unwrap();
                a.parse::<i64>().unwrap() * 100 + b.parse::<i64>().unwrap()
            };
            let items: i64 = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["quantity"].as_i64().unwrap() * cents(&i["unit_price"]))
                .sum();
            let paid: i64 = body["payments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| cents(&p["amount"]))
                .sum();
            assert_eq!(items, total);
            assert_eq!(paid, total);
        }
    }

    #[test]
    fn stat_ticks_reads_the_times_after_the_command_name() {
        // pid (comm) state, then fields 2 to 11 after the state, utime 12th .. cstime 15th.
        let stat = "42 (post gres) S 1 2 3 4 5 6 7 8 9 10 100 20 3 4 20 0 1";
        assert_eq!(stat_ticks(stat, false), Some(120.0));
        assert_eq!(stat_ticks(stat, true), Some(127.0));
        assert_eq!(stat_ticks("42 (short) S 1 2", false), None);
    }

    #[test]
    fn only_loopback_and_socket_urls_are_local() {
        assert!(is_local("postgres://postgres@127.0.0.1:5432/test"));
        assert!(is_local("postgres://user:secret@localhost/db"));
        assert!(is_local("postgres://postgres@[::1]:5432/test"));
        assert!(is_local("postgres:///test?host=/var/run/postgresql"));
        assert!(!is_local("postgres://postgres@db.example.com:5432/test"));
        assert!(!is_local("postgres://postgres@10.0.0.7/test"));
    }

    #[test]
    fn the_cpu_budget_divides_the_cores_by_the_work_of_a_purchase() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // 1,000 purchases costing 0.5 + 1.0 + 0.5 s: 2 ms each.
        let line = cpu_budget(1_000, 0.5, 1.0, 0.5, 1_000.0);
        assert!(line.contains("server 0.500 ms, PostgreSQL 1.000 ms, bench client 0.500 ms"));
        let ceiling = cores * 500.0;
        assert!(
            line.contains(&format!("at most {ceiling:.0} purchases/s")),
            "{line}"
        );
        assert!(line.contains(&format!("(ratio {:.2})", ceiling / 1_000.0)));
        assert!(!cpu_budget(10, 0.1, 0.0, 0.1, 100.0).contains("PostgreSQL"));
    }
}
