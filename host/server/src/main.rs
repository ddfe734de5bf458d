//! `loyalty`: serve the API, migrate the database, verify the ledger, import real data.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loyalty_core::Database;
use loyalty_host::plugins::{PluginHost, PluginSettings};
use loyalty_host::{dispatch, import, jobs, router, scheduler, AppState, Clock};

#[derive(Parser)]
#[command(
    name = "loyalty",
    version,
    about = "Loyalty host: members, points, stored value, count cards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (migrates the database first).
    Serve {
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
        #[arg(long, env = "LOYALTY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The operator key (creates merchants). Generated and printed when not given.
        #[arg(long, env = "LOYALTY_OPERATOR_KEY", hide_env_values = true)]
        operator_key: Option<String>,
        /// Concurrent write transactions on PostgreSQL (SQLite always has one); 0 = default
        /// (one per core of this machine, 2 to 16), at most 64. Each lane is a thread with a
        /// connection of its own; raise it for a database far away or bigger than this machine.
        #[arg(long, default_value_t = 0)]
        writer_lanes: usize,
        /// Seconds between runs of the background jobs (points lifecycle, due daily ticks).
        #[arg(long, default_value_t = 60)]
        lifecycle_interval_seconds: u64,
        /// Where compiled plugins are kept between runs (none: compiled once per process).
        #[arg(long, env = "LOYALTY_PLUGIN_CACHE_DIR")]
        plugin_cache_dir: Option<std::path::PathBuf>,
        /// The largest plugin component an upload may carry, in bytes.
        #[arg(long, env = "LOYALTY_PLUGIN_BYTES_MAX", default_value_t = loyalty_runtime::COMPONENT_BYTES_MAX_DEFAULT)]
        plugin_bytes_max: usize,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
    },
    /// Check every ledger invariant; exits non-zero on a violation.
    Verify {
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
    },
    /// Run a merchant's daily tick for one local date by hand (settle lots, expiry notices,
    /// tier policies); a day that ran already is not run again.
    Tick {
        #[arg(long)]
        merchant: String,
        /// YYYY-MM-DD in the merchant's time zone; default: today there.
        #[arg(long)]
        date: Option<String>,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
        /// Where compiled plugins are kept between runs.
        #[arg(long, env = "LOYALTY_PLUGIN_CACHE_DIR")]
        plugin_cache_dir: Option<std::path::PathBuf>,
    },
    /// Seed (or find) the demo merchant: the Online Retail slice through the example plugins,
    /// tiers, coupons, campaigns; prints a fresh admin key and a member to try.
    Demo {
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
        /// The data: the fixture slice (`tests/fixtures/online_retail_slice.csv`).
        #[arg(long)]
        slice: std::path::PathBuf,
        /// Where the example components are (`earn_base_rate.wasm`, …).
        #[arg(long)]
        components: std::path::PathBuf,
        /// Where compiled plugins are kept between runs.
        #[arg(long, env = "LOYALTY_PLUGIN_CACHE_DIR")]
        plugin_cache_dir: Option<std::path::PathBuf>,
    },
    /// Run a ledger transaction's recorded plugin calls again on the recorded plugin
    /// versions and report whether the answers are identical (exits 1 if not).
    Replay {
        #[arg(long)]
        transaction: String,
        /// The transaction's merchant (found by a scan of the ledger when not given).
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
        database: String,
        /// Where compiled plugins are kept between runs.
        #[arg(long, env = "LOYALTY_PLUGIN_CACHE_DIR")]
        plugin_cache_dir: Option<std::path::PathBuf>,
    },
    /// Import real data into a merchant through the API's own pipeline (idempotent).
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
}

#[derive(Subcommand)]
enum ImportSource {
    /// The UCI Online Retail data set (CSV or CSV.gz): a store per country, a member per
    /// CustomerID, a purchase per invoice, C-invoices as refunds of earlier purchases.
    OnlineRetail(OnlineRetailArgs),
}

#[derive(clap::Args)]
struct OnlineRetailArgs {
    /// The data set, `.csv` or `.csv.gz`.
    #[arg(long)]
    file: std::path::PathBuf,
    /// The merchant to import into (its currency must be GBP).
    #[arg(long, required_unless_present = "create_merchant")]
    merchant: Option<String>,
    /// Instead of --merchant: create a GBP merchant (Europe/London) of this name and import
    /// into it; prints its id and admin key.
    #[arg(long, conflicts_with = "merchant")]
    create_merchant: Option<String>,
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/loyalty.db")]
    database: String,
    /// A plugin component (.wasm) to register for the merchant and enable on every store of
    /// the import, with configuration `{}` (repeatable; replaces those stores' set for the
    /// plugin's world).
    #[arg(long = "plugin")]
    plugins: Vec<std::path::PathBuf>,
    /// Configuration of a `--plugin`, as NAME=JSON (the name from the file name:
    /// `earn_base_rate.wasm` is `earn-base-rate`); repeatable. Default `{}`.
    #[arg(long = "plugin-config", value_parser = parse_plugin_config)]
    plugin_configs: Vec<(String, serde_json::Value)>,
    /// Purchases and refunds in flight at once, in the data's time order (never two of one
    /// member at once).
    #[arg(long, default_value_t = import::CONCURRENCY_DEFAULT)]
    concurrency: usize,
    /// Concurrent write transactions on PostgreSQL (SQLite always has one); 0 = default.
    #[arg(long, default_value_t = 0)]
    writer_lanes: usize,
    /// Where compiled plugins are kept between runs.
    #[arg(long, env = "LOYALTY_PLUGIN_CACHE_DIR")]
    plugin_cache_dir: Option<std::path::PathBuf>,
}

/// mimalloc rather than glibc's malloc: the writer's lane and the request handlers allocate
/// and free small blocks all the time (measured in the ledger benchmark; see the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            database,
            listen,
            operator_key,
            writer_lanes,
            lifecycle_interval_seconds,
            plugin_cache_dir,
            plugin_bytes_max,
        } => {
            let plugins = PluginSettings {
                runtime: loyalty_runtime::RuntimeConfig {
                    cache_dir: plugin_cache_dir,
                    component_bytes_max: plugin_bytes_max,
                    ..Default::default()
                },
                ..Default::default()
            };
            serve(
                &database,
                &listen,
                operator_key,
                writer_lanes,
                lifecycle_interval_seconds,
                plugins,
            )
            .await
        }
        Command::Migrate { database } => {
            let database = Database::connect(&database).await?;
            database.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Verify { database } => verify(&database).await,
        Command::Demo {
            database,
            slice,
            components,
            plugin_cache_dir,
        } => {
            let state = offline_state(&database, plugin_cache_dir).await?;
            let demo = loyalty_host::demo::seed(&state, &slice, &components).await?;
            println!(
                "demo merchant {} ({}); admin key for this run: {}",
                demo.merchant_id,
                if demo.created {
                    "seeded now"
                } else {
                    "seeded before"
                },
                demo.api_key
            );
            println!(
                "try: KEY={} MEMBER={} STORE={}",
                demo.api_key, demo.member_id, demo.store_id
            );
            Ok(())
        }
        Command::Replay {
            transaction,
            merchant,
            database,
            plugin_cache_dir,
        } => replay(&database, &transaction, merchant, plugin_cache_dir).await,
        Command::Tick {
            merchant,
            date,
            database,
            plugin_cache_dir,
        } => tick(&database, &merchant, date.as_deref(), plugin_cache_dir).await,
        Command::Import {
            source: ImportSource::OnlineRetail(args),
        } => import_online_retail(args).await,
    }
}

async fn import_online_retail(args: OnlineRetailArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let database = Database::connect(&args.database)
        .await
        .context("connecting to the database")?;
    database.migrate().await.context("migrating")?;
    let plugins = PluginHost::new(PluginSettings {
        runtime: loyalty_runtime::RuntimeConfig {
            cache_dir: args.plugin_cache_dir,
            ..Default::default()
        },
        ..Default::default()
    })
    .context("starting the plugin runtime")?;
    // no API is served: the operator key is never asked for
    let operator_key = loyalty_core::merchants::generate_key();
    let state = AppState::new(
        database,
        &operator_key,
        Clock::default(),
        args.writer_lanes,
        plugins,
    );
    let merchant_id = match (args.merchant, args.create_merchant) {
        (Some(id), _) => id,
        (None, Some(name)) => {
            let (merchant, key) = import::create_online_retail_merchant(&state, &name).await?;
            println!(
                "created merchant {} ({}, {}); admin key (shown once): {}",
                merchant.id, merchant.name, merchant.currency, key.key
            );
            merchant.id
        }
        (None, None) => anyhow::bail!("give --merchant or --create-merchant"),
    };
    let options = import::ImportOptions {
        concurrency: args.concurrency,
        progress: std::io::stdout().is_terminal(),
        plugins: args.plugins,
        plugin_configs: args.plugin_configs.into_iter().collect(),
        end_at: None,
    };
    let summary = import::import_online_retail(&state, &merchant_id, &args.file, &options).await?;
    println!("{summary}");
    Ok(())
}

/// A state for one-off commands (no API is served: the operator key is never asked for).
async fn offline_state(
    url: &str,
    plugin_cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<AppState> {
    let database = Database::connect(url)
        .await
        .context("connecting to the database")?;
    database.migrate().await.context("migrating")?;
    let plugins = PluginHost::new(PluginSettings {
        runtime: loyalty_runtime::RuntimeConfig {
            cache_dir: plugin_cache_dir,
            ..Default::default()
        },
        ..Default::default()
    })
    .context("starting the plugin runtime")?;
    let operator_key = loyalty_core::merchants::generate_key();
    Ok(AppState::new(
        database,
        &operator_key,
        Clock::default(),
        0,
        plugins,
    ))
}

async fn replay(
    url: &str,
    transaction: &str,
    merchant: Option<String>,
    plugin_cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let state = offline_state(url, plugin_cache_dir).await?;
    let merchant_id = match merchant {
        Some(id) => id,
        None => loyalty_core::ledger::transaction_merchant(&state.database.pool, transaction)
            .await
            .with_context(|| format!("transaction {transaction}"))?,
    };
    let merchant = loyalty_core::merchants::get_merchant(&state.database.pool, &merchant_id)
        .await
        .with_context(|| format!("merchant {merchant_id}"))?;
    let report = loyalty_host::replay::replay(&state, &merchant, transaction).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("reports serialize")
    );
    if report.decisions.is_empty() {
        anyhow::bail!("replay: no plugin decided transaction {transaction}");
    }
    if !report.identical {
        anyhow::bail!("replay: the answers differ");
    }
    println!(
        "replay: {} plugin call(s) identical",
        report.decisions.len()
    );
    Ok(())
}

async fn tick(
    url: &str,
    merchant_id: &str,
    date: Option<&str>,
    plugin_cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let state = offline_state(url, plugin_cache_dir).await?;
    let merchant = loyalty_core::merchants::get_merchant(&state.database.pool, merchant_id)
        .await
        .with_context(|| format!("merchant {merchant_id}"))?;
    let now = state.clock.now();
    let date = match date {
        Some(text) => scheduler::parse_day(&merchant, text, now)?,
        None => scheduler::local_date(&merchant.timezone, now)?,
    };
    let run = scheduler::run_day(&state, &merchant.id, date).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&run).expect("tick runs serialize")
    );
    Ok(())
}

async fn serve(
    url: &str,
    listen: &str,
    operator_key: Option<String>,
    writer_lanes: usize,
    lifecycle_interval_seconds: u64,
    plugins: PluginSettings,
) -> anyhow::Result<()> {
    let database = Database::connect(url)
        .await
        .context("connecting to the database")?;
    database.migrate().await.context("migrating")?;
    let operator_key = match operator_key {
        Some(key) if !key.trim().is_empty() => key,
        _ => {
            let key = loyalty_core::merchants::generate_key();
            println!("generated operator key (set LOYALTY_OPERATOR_KEY to keep one): {key}");
            key
        }
    };
    let plugins = PluginHost::new(plugins).context("starting the plugin runtime")?;
    let state = AppState::new(
        database,
        &operator_key,
        Clock::default(),
        writer_lanes,
        plugins,
    );
    tokio::spawn(jobs::run_forever(
        state.clone(),
        Duration::from_secs(lifecycle_interval_seconds.max(1)),
    ));
    tokio::spawn(dispatch::run_forever(state.clone()));
    tokio::spawn(jobs::refresh_statistics_forever(state.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let lanes = state.writer.lanes();
    println!(
        "loyalty host listening on http://{listen} (database {}, {lanes} writer lane{})",
        redact(url),
        if lanes == 1 { "" } else { "s" }
    );
    println!("operator key: {operator_key}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// `NAME=JSON` of `--plugin-config`.
fn parse_plugin_config(text: &str) -> Result<(String, serde_json::Value), String> {
    let (name, json) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=JSON".to_string())?;
    let config: serde_json::Value =
        serde_json::from_str(json).map_err(|error| format!("the JSON of {name}: {error}"))?;
    if !config.is_object() {
        return Err(format!("the configuration of {name} must be a JSON object"));
    }
    Ok((name.to_string(), config))
}

/// The database URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn verify(url: &str) -> anyhow::Result<()> {
    let database = Database::connect(url).await?;
    database.migrate().await?;
    let report = loyalty_core::verify::verify(&database.pool).await?;
    for check in &report.checks {
        let verdict = if check.violation_count == 0 {
            "ok  "
        } else {
            "FAIL"
        };
        println!(
            "{verdict} {} ({} examined, {} violations)",
            check.name, check.examined, check.violation_count
        );
        for violation in &check.violations {
            println!("       {violation}");
        }
    }
    if report.ok() {
        println!("verify: all {} checks passed", report.checks.len());
        Ok(())
    } else {
        anyhow::bail!("verify: ledger invariants violated")
    }
}
