//! `loyalty`: serve the API, migrate the database, verify the ledger.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loyalty_core::Database;
use loyalty_host::plugins::{PluginHost, PluginSettings};
use loyalty_host::{jobs, router, AppState, Clock};

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
        /// Concurrent write transactions on PostgreSQL (SQLite always has one); 0 = default.
        #[arg(long, default_value_t = 0)]
        writer_lanes: usize,
        /// Seconds between runs of the points lifecycle job.
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
}

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
    }
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
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "loyalty host listening on http://{listen} (database {})",
        redact(url)
    );
    println!("operator key: {operator_key}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
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
