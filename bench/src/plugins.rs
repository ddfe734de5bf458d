//! `loyalty-bench plugins`: what the sandbox costs.
//!
//! In this process, through `loyalty-runtime` as the server uses it: compile time per example
//! plugin, load time from the on-disk cache, earn-rule call latency with a fresh instance per
//! call (a 20-line purchase), and call throughput on one thread and on every core. Then end to
//! end over HTTP: purchases at a store whose points come from the `earn-base-rate` plugin
//! against purchases at a store on the built-in base rate, in alternating rounds of the same
//! run, and their ratio.
//!
//! Normally run through `cargo xtask bench plugins [--quick]`, which builds the components and
//! the release binaries first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use loyalty_runtime::{
    Context, LoadedFrom, Member, MemberStats, Purchase, PurchaseLine, Runtime, RuntimeConfig,
    MEMORY_KEEP_RESIDENT_BYTES_DEFAULT,
};
use serde_json::{json, Value};

use crate::{
    create_members, id_of, percentile, random_hex, run_purchases, setup_merchant, top_up, verify,
    Backend, Errors, Merchant, Params, Server,
};

/// The example plugins (`plugins/`), as their components are named.
const EXAMPLE_PLUGINS: [&str; 6] = [
    "earn_base_rate",
    "earn_category_multiplier",
    "tier_spend_threshold",
    "recommend_co_purchase",
    "campaign_birthday",
    "campaign_winback",
];
/// The earn rules whose calls are timed, with the configuration they run with.
const TIMED_EARN_RULES: [(&str, &str); 2] = [
    (
        "earn_base_rate",
        r#"{"points_per_currency_unit":1,"rounding":"down"}"#,
    ),
    (
        "earn_category_multiplier",
        r#"{"points_per_currency_unit":1,"category_percent":{"drinks":200,"bakery":150}}"#,
    ),
];
/// Lines in the timed purchase.
const PURCHASE_LINES: usize = 20;
/// Compilations per plugin (the median is printed).
const COMPILES_PER_PLUGIN: usize = 3;
/// Loads from the disk cache per plugin (the median is printed).
const CACHED_LOADS_PER_PLUGIN: usize = 5;
/// Calls before timing starts (page faults, branch predictors, the pool's first slots).
const WARM_UP_CALLS: usize = 500;
/// Purchases per store and round at most (a round normally ends by time).
const PURCHASES_PER_ROUND_MAX: usize = 200_000;
/// Microseconds since the epoch of the timed purchase (2026-03-02T10:00:00Z, a Monday).
const NOW_US: i64 = 1_772_445_600_000_000;

#[derive(Args)]
pub(crate) struct PluginsArgs {
    /// Scale the work down for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where the components are (default: `plugins/wasm32-wasip2/release` in the target
    /// directory this executable was built in).
    #[arg(long, value_name = "DIR")]
    components: Option<PathBuf>,
    /// Timed calls per earn rule [default: 20000, --quick: 2000].
    #[arg(long, value_name = "N")]
    calls: Option<usize>,
    /// Seconds of calls per throughput measurement [default: 5, --quick: 1].
    #[arg(long, value_name = "SECS")]
    throughput_seconds: Option<f64>,
    /// PostgreSQL server for the end-to-end part too (a fresh database is created and
    /// dropped). Without it (and without TEST_DATABASE_URL) only SQLite runs.
    #[arg(long, env = "TEST_DATABASE_URL", value_name = "URL")]
    postgres: Option<String>,
    /// Run the end-to-end part on this backend only.
    #[arg(long, value_enum)]
    only: Option<Backend>,
    /// Skip the end-to-end part.
    #[arg(long)]
    no_http: bool,
    /// The `loyalty` binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    loyalty_bin: Option<PathBuf>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rounds of (native, plugin) purchases [default: 4, --quick: 1].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Seconds of purchases per store per round [default: 8, --quick: 3].
    #[arg(long, value_name = "SECS")]
    round_seconds: Option<f64>,
    /// Members the purchases are spread over [default: 2000, --quick: 300].
    #[arg(long, value_name = "N")]
    members: Option<usize>,
}

pub(crate) async fn plugins(args: PluginsArgs) -> Result<()> {
    let components = match &args.components {
        Some(dir) => dir.clone(),
        None => default_components_dir()?,
    };
    let calls = args
        .calls
        .unwrap_or(if args.quick { 2_000 } else { 20_000 })
        .max(1);
    let throughput = Duration::from_secs_f64(args.throughput_seconds.unwrap_or(if args.quick {
        1.0
    } else {
        5.0
    }));
    let tmp = std::env::temp_dir().join(format!("loyalty-bench-{}", &random_hex()[..12]));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "plugin bench: components from {}; {calls} timed calls per earn rule, {:.0} s per \
         throughput figure, {cores} cores",
        components.display(),
        throughput.as_secs_f64()
    );

    let result = async {
        let components_for_runtime = components.clone();
        let cache = tmp.join("cache");
        tokio::task::spawn_blocking(move || {
            runtime_figures(&components_for_runtime, &cache, calls, throughput, cores)
        })
        .await
        .context("the runtime measurements panicked")??;
        if !args.no_http {
            end_to_end(&args, &components, &tmp).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("kept {}", tmp.display());
    }
    result
}

/// `<target>/plugins/wasm32-wasip2/release`, for this executable at `<target>/release/`.
fn default_components_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("{} has no target directory above it", exe.display()))?;
    Ok(target.join("plugins").join("wasm32-wasip2").join("release"))
}

fn read_component(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (build the components with `cargo xtask plugins`)",
            path.display()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// in process, through the runtime

fn runtime_figures(
    components: &Path,
    cache: &Path,
    calls: usize,
    throughput: Duration,
    cores: usize,
) -> Result<()> {
    println!("\n== compile and load (median) ==");
    println!(
        "{:<26}{:>10}{:>14}{:>16}",
        "plugin", "bytes", "compile ms", "cached load ms"
    );
    for name in EXAMPLE_PLUGINS {
        let bytes = read_component(components, name)?;
        let mut compiles = Vec::with_capacity(COMPILES_PER_PLUGIN);
        for _ in 0..COMPILES_PER_PLUGIN {
            // A runtime without a cache compiles; a fresh one each time, since a runtime
            // keeps what it loaded.
            let runtime = Runtime::new(RuntimeConfig::default())?;
            let plugin = runtime
                .load(&bytes)
                .map_err(|e| anyhow!("{name} did not load: {e}"))?;
            if plugin.loaded_from() != LoadedFrom::Compiled {
                bail!("{name} was not compiled by a runtime without a cache");
            }
            compiles.push(plugin.load_elapsed_us());
        }
        let config = RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..RuntimeConfig::default()
        };
        // The first load with the cache compiles and writes the artefact.
        Runtime::new(config.clone())?
            .load(&bytes)
            .map_err(|e| anyhow!("{name} did not load: {e}"))?;
        let mut loads = Vec::with_capacity(CACHED_LOADS_PER_PLUGIN);
        for _ in 0..CACHED_LOADS_PER_PLUGIN {
            let plugin = Runtime::new(config.clone())?
                .load(&bytes)
                .map_err(|e| anyhow!("{name} did not load: {e}"))?;
            if plugin.loaded_from() != LoadedFrom::DiskCache {
                bail!("{name} was compiled again although its artefact is in the cache");
            }
            loads.push(plugin.load_elapsed_us());
        }
        compiles.sort_unstable();
        loads.sort_unstable();
        println!(
            "{name:<26}{:>10}{:>14.1}{:>16.2}",
            bytes.len(),
            percentile(&compiles, 0.5) / 1000.0,
            percentile(&loads, 0.5) / 1000.0
        );
    }

    println!("\n== earn-rule calls, a fresh instance each, {PURCHASE_LINES}-line purchase (µs) ==");
    println!(
        "{:<26}{:<18}{:>8}{:>8}{:>8}{:>10}{:>12}{:>14}",
        "plugin",
        "freed memory",
        "p50",
        "p99",
        "mean",
        "fuel",
        "calls/s 1t",
        &format!("calls/s {cores}t")
    );
    let (member, purchase) = (timed_member(), timed_purchase());
    for (name, config) in TIMED_EARN_RULES {
        let bytes = read_component(components, name)?;
        let context = timed_context(config);
        // The default keeps freed memory resident; the comparison returns it to the kernel,
        // as a pooling allocator does out of the box.
        for (label, keep_resident) in [
            ("kept (default)", MEMORY_KEEP_RESIDENT_BYTES_DEFAULT),
            ("to the kernel", 0),
        ] {
            let runtime = Runtime::new(RuntimeConfig {
                memory_keep_resident_bytes: keep_resident,
                ..RuntimeConfig::default()
            })?;
            let limits = runtime.config().limits_default;
            let plugin = runtime
                .load(&bytes)
                .map_err(|e| anyhow!("{name} did not load: {e}"))?;
            let call = || plugin.earn(&limits, &context, &member, &purchase);
            let first = call();
            let awards = first
                .result
                .map_err(|failure| anyhow!("{name} failed: {failure}"))?;
            if awards.iter().map(|award| award.points).sum::<i64>() <= 0 {
                bail!("{name} awarded no points for the timed purchase: {awards:?}");
            }
            for _ in 0..WARM_UP_CALLS {
                call();
            }
            let mut latencies = Vec::with_capacity(calls);
            for _ in 0..calls {
                let started = Instant::now();
                let report = call();
                latencies.push(started.elapsed().as_nanos() as u64);
                if report.result.is_err() {
                    bail!("{name} failed during the timed calls: {:?}", report.result);
                }
            }
            latencies.sort_unstable();
            let mean = latencies.iter().sum::<u64>() as f64 / latencies.len() as f64;
            let one = calls_per_second(
                &plugin, &limits, &context, &member, &purchase, 1, throughput,
            );
            let all = calls_per_second(
                &plugin, &limits, &context, &member, &purchase, cores, throughput,
            );
            println!(
                "{name:<26}{label:<18}{:>8.1}{:>8.1}{:>8.1}{:>10}{:>12.0}{:>14.0}",
                percentile(&latencies, 0.5) / 1000.0,
                percentile(&latencies, 0.99) / 1000.0,
                mean / 1000.0,
                first.fuel_consumed,
                one,
                all
            );
        }
    }
    Ok(())
}

/// Calls per second from `threads` threads calling as fast as they can for `duration`.
fn calls_per_second(
    plugin: &loyalty_runtime::Plugin,
    limits: &loyalty_runtime::Limits,
    context: &Context,
    member: &Member,
    purchase: &Purchase,
    threads: usize,
    duration: Duration,
) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut mine = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let report = plugin.earn(limits, context, member, purchase);
                    match report.result {
                        Ok(_) => mine += 1,
                        // Counted out of the rate and shown: a deadline missed on a loaded
                        // machine is a figure, not a reason to lose the run.
                        Err(failure) => failed
                            .lock()
                            .expect("no panics hold the lock")
                            .push(failure.kind()),
                    }
                }
                done.fetch_add(mine, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let failed = failed.into_inner().expect("no panics hold the lock");
    if !failed.is_empty() {
        println!(
            "  ({} of the throughput calls failed on {threads} thread(s): {:?})",
            failed.len(),
            failed.iter().collect::<std::collections::BTreeSet<_>>()
        );
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn timed_context(config: &str) -> Context {
    Context {
        merchant_id: "mer_bench".into(),
        store_id: Some("sto_bench".into()),
        now: NOW_US,
        timezone: "Asia/Shanghai".into(),
        utc_offset_seconds: 8 * 3600,
        config: config.into(),
        currency: "CNY".into(),
        currency_exponent: 2,
    }
}

fn timed_member() -> Member {
    Member {
        id: "mem_bench".into(),
        tier: Some("silver".into()),
        joined_at: NOW_US - 400 * 86_400_000_000,
        birthday: Some(loyalty_runtime::Date {
            year: 1990,
            month: 3,
            day: 14,
        }),
        attributes: r#"{"source":"bench"}"#.into(),
        stats: MemberStats {
            lifetime_spend: 1_234_500,
            spend_12_months: 456_700,
            orders_count: 42,
            last_purchase_at: Some(NOW_US - 3 * 86_400_000_000),
            points_available: 870,
        },
    }
}

fn timed_purchase() -> Purchase {
    const CATEGORIES: [&str; 4] = ["drinks", "food", "bakery", "household"];
    let lines: Vec<PurchaseLine> = (0..PURCHASE_LINES)
        .map(|i| {
            let quantity = 1 + (i % 3) as u32;
            let unit_price = 150 + 137 * i as i64;
            PurchaseLine {
                sku: format!("SKU-{i:04}"),
                name: Some(format!("Item number {i}")),
                category: Some(CATEGORIES[i % CATEGORIES.len()].into()),
                quantity,
                unit_price,
                total: i64::from(quantity) * unit_price,
            }
        })
        .collect();
    Purchase {
        id: "pur_bench".into(),
        store_id: "sto_bench".into(),
        channel: "pos".into(),
        occurred_at: NOW_US,
        currency: "CNY".into(),
        total: lines.iter().map(|line| line.total).sum(),
        lines,
    }
}

// ---------------------------------------------------------------------------------------------
// end to end, over HTTP

async fn end_to_end(args: &PluginsArgs, components: &Path, tmp: &Path) -> Result<()> {
    let bin = crate::loyalty_bin(args.loyalty_bin.as_deref(), "plugins")?;
    let component = read_component(components, "earn_base_rate")?;
    let members = args
        .members
        .unwrap_or(if args.quick { 300 } else { 2_000 })
        .max(1);
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 4 }).max(1);
    let round =
        Duration::from_secs_f64(
            args.round_seconds
                .unwrap_or(if args.quick { 3.0 } else { 8.0 }),
        );
    let params = Params {
        clients: args.clients.max(1),
        duration: round,
        // Rounds end by time; this only bounds a run on a much faster machine.
        max_purchases: PURCHASES_PER_ROUND_MAX,
        members,
        sv_members: members.min(200),
        bare_commits: 0,
    };
    let postgres = args.postgres.clone().filter(|url| !url.trim().is_empty());
    let mut backends = Vec::new();
    if args.only != Some(Backend::Postgres) {
        backends.push(Backend::Sqlite);
    }
    if args.only != Some(Backend::Sqlite) {
        match &postgres {
            Some(_) => backends.push(Backend::Postgres),
            None if args.only == Some(Backend::Postgres) => {
                bail!("--only postgres needs --postgres <url> or TEST_DATABASE_URL")
            }
            None => println!(
                "\nPostgreSQL: skipped (set TEST_DATABASE_URL or pass --postgres <url> to include it)"
            ),
        }
    }
    println!(
        "\n== purchases over HTTP: earn-base-rate plugin vs built-in base rate ==\n\
         {} clients, {members} members, {rounds} rounds of {:.0} s per store, stores alternating",
        params.clients,
        round.as_secs_f64()
    );
    let mut lines = Vec::new();
    for backend in backends {
        let dir = tmp.join(backend.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let line = match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.join("plugins.db").display());
                compare(backend, &bin, &dir, &url, &component, params, rounds).await?
            }
            Backend::Postgres => {
                let admin_url = postgres
                    .as_deref()
                    .expect("postgres backend is only chosen with a URL");
                let db = format!("bench_{}", &random_hex()[..12]);
                crate::create_database(admin_url, &db).await?;
                let url = crate::with_database(admin_url, &db)?;
                let result = compare(backend, &bin, &dir, &url, &component, params, rounds).await;
                if let Err(err) = crate::drop_database(admin_url, &db).await {
                    eprintln!("warning: could not drop database {db}: {err:#}");
                }
                result?
            }
        };
        lines.push(line);
    }
    println!("\n== results ==");
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Purchases/s, latencies and errors of one store over all rounds.
#[derive(Default)]
struct Side {
    purchases: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Side {
    fn rate(&self) -> f64 {
        self.purchases as f64 / self.seconds
    }
}

/// One backend: a merchant with a native store and a plugin store, rounds of purchases at
/// each in turn, the ratio of their rates. Returns the result line.
async fn compare(
    backend: Backend,
    bin: &Path,
    dir: &Path,
    url: &str,
    component: &[u8],
    params: Params,
    rounds: usize,
) -> Result<String> {
    println!("\n-- {}", backend.name());
    let mut server = Server::start(bin, url, dir).await?;
    let result = async {
        let merchant = setup_merchant(&server).await?;
        let plugin_store = plugin_store(&merchant, component).await?;
        let errors = Arc::new(Errors::new(backend.name().to_string()));
        let api = &merchant.api;
        let tag = &random_hex()[..8];
        let members = create_members(
            api,
            &format!("m-{tag}"),
            params.members,
            params.clients,
            &errors,
        )
        .await;
        if members.len() != params.members {
            bail!(
                "only {} of {} members were created",
                members.len(),
                params.members
            );
        }
        let sv_members: Vec<String> = members.iter().take(params.sv_members).cloned().collect();
        top_up(
            api,
            &merchant.store_id,
            &sv_members,
            1,
            params.clients,
            &errors,
        )
        .await;
        same_points_at_both(&merchant, &plugin_store, &members[0]).await?;
        let (members, sv_members) = (Arc::new(members), Arc::new(sv_members));

        let mut native = Side::default();
        let mut plugin = Side::default();
        for round in 0..rounds {
            // Alternate which store goes first, so a drift of the machine's speed (the
            // database growing, another tenant's load) falls on both alike.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for with_plugin in order {
                let (store, side) = if with_plugin {
                    (&plugin_store, &mut plugin)
                } else {
                    (&merchant.store_id, &mut native)
                };
                let outcome = run_purchases(
                    api.clone(),
                    store.clone(),
                    members.clone(),
                    sv_members.clone(),
                    params,
                    errors.clone(),
                )
                .await;
                println!(
                    "  round {} {:<7} {:>7.1} purchases/s",
                    round + 1,
                    if with_plugin { "plugin" } else { "native" },
                    outcome.purchases as f64 / outcome.elapsed.as_secs_f64()
                );
                side.purchases += outcome.purchases;
                side.seconds += outcome.elapsed.as_secs_f64();
                side.latencies_us.extend(outcome.latencies_us);
            }
        }
        let health = server_side_calls(&merchant).await?;
        println!("  the server's own figures for the plugin: {health}");
        native.latencies_us.sort_unstable();
        plugin.latencies_us.sort_unstable();
        Ok::<_, anyhow::Error>(format!(
            "{:<9}native {:.1} purchases/s (p50 {:.1} ms, p99 {:.1} ms)  plugin {:.1} purchases/s \
             (p50 {:.1} ms, p99 {:.1} ms)  plugin ÷ native {:.3}  errors {}",
            backend.name(),
            native.rate(),
            percentile(&native.latencies_us, 0.5) / 1000.0,
            percentile(&native.latencies_us, 0.99) / 1000.0,
            plugin.rate(),
            percentile(&plugin.latencies_us, 0.5) / 1000.0,
            percentile(&plugin.latencies_us, 0.99) / 1000.0,
            plugin.rate() / native.rate(),
            errors.get()
        ))
    }
    .await;
    if result.is_err() {
        server.print_log_tail();
    }
    server.stop().await;
    let line = result?;
    verify(bin, url).await?;
    Ok(line)
}

/// A second store of `merchant` whose earn rule is `earn-base-rate` at 1 point per CNY 1
/// (what the built-in rate gives), uploaded as a plugin; returns its id.
async fn plugin_store(merchant: &Merchant, component: &[u8]) -> Result<String> {
    let api = &merchant.api;
    let store = api
        .post("/v1/stores", &json!({"code": "S2", "name": "Plugin store"}))
        .await
        .map_err(|e| anyhow!(e))?;
    let store_id = id_of(&store).map_err(|e| anyhow!(e))?;
    let manifest = json!({
        "name": "earn-base-rate",
        "version": "1.0.0",
        "world": "earn-rule",
        "description": "points per currency unit",
        "config_schema": {"type": "object"},
    });
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            "component",
            reqwest::multipart::Part::bytes(component.to_vec()).file_name("earn_base_rate.wasm"),
        );
    let request = api
        .http
        .post(format!("{}/v1/plugins", api.base))
        .bearer_auth(&api.key)
        .multipart(form);
    let plugin = api
        .send("POST", "/v1/plugins", request)
        .await
        .map_err(|e| anyhow!(e))?;
    let plugin_id = id_of(&plugin).map_err(|e| anyhow!(e))?;
    api.put(
        &format!("/v1/stores/{store_id}/plugins/earn-rule"),
        &json!({"plugins": [{"plugin_id": plugin_id,
                             "config": {"points_per_currency_unit": 1, "rounding": "down"}}]}),
    )
    .await
    .map_err(|e| anyhow!(e))?;
    Ok(store_id)
}

/// Checks that the plugin really decides at the plugin store, and that both stores award the
/// same points for the same purchase (so the comparison is of like with like).
async fn same_points_at_both(merchant: &Merchant, plugin_store: &str, member: &str) -> Result<()> {
    let mut awarded = Vec::new();
    for store in [merchant.store_id.as_str(), plugin_store] {
        let body = json!({
            "member_id": member,
            "store_id": store,
            "items": [{"sku": "CHECK", "category": "drinks", "quantity": 3, "unit_price": "12.34"}],
            "payments": [{"method": "cash", "amount": "37.02"}],
        });
        let receipt = merchant
            .api
            .post("/v1/purchases", &body)
            .await
            .map_err(|e| anyhow!(e))?;
        awarded.push((
            receipt["points_awarded"].as_i64(),
            receipt["awards"][0]["source"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let (native, plugin) = (&awarded[0], &awarded[1]);
    if native.0 != Some(37) || plugin.0 != Some(37) || !plugin.1.starts_with("plugin:") {
        bail!("the stores do not award alike: native {native:?}, plugin {plugin:?}");
    }
    Ok(())
}

/// The plugin's health as the server reports it (calls, failures, latency percentiles).
async fn server_side_calls(merchant: &Merchant) -> Result<Value> {
    let plugins = merchant
        .api
        .get("/v1/plugins")
        .await
        .map_err(|e| anyhow!(e))?;
    let id = plugins["items"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no plugin listed: {plugins}"))?;
    let health = merchant
        .api
        .get(&format!("/v1/plugins/{id}/health"))
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(json!({
        "calls": health["calls"],
        "failures": health["failures"],
        "latency_us_p50": health["latency_us_p50"],
        "latency_us_p99": health["latency_us_p99"],
        "fuel_p50": health["fuel_p50"],
    }))
}
