//! The service that asks plugins: finds a store's enabled plugins, builds their input from a
//! member snapshot, calls them through the runtime on a blocking thread, applies the failure
//! policy (fallback, circuit breaker) and keeps per-plugin health. Plugins decide; the writer
//! writes what they decided.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loyalty_core::earn::Award;
use loyalty_core::members::{snapshot, MemberSnapshot};
use loyalty_core::merchants::Merchant;
use loyalty_core::operations::{cap_awards, PurchaseCommand};
use loyalty_core::plugins::{self as registry, EnabledPlugin, PluginLimits};
use loyalty_core::{CoreError, Database};
use loyalty_runtime as runtime;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// How long a store's enabled set is remembered before it is read again. A change through
/// this host's API is seen at once; another host's change within this time.
pub const ENABLED_SET_TTL_MS: u64 = 2_000;
/// Samples kept per plugin for the health percentiles (the most recent calls).
pub const HEALTH_SAMPLES_MAX: usize = 1_024;

/// How the host runs plugins.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub runtime: runtime::RuntimeConfig,
    /// Failures in a row after which a plugin is switched off for a store.
    pub failures_max: i64,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            runtime: runtime::RuntimeConfig::default(),
            failures_max: registry::CIRCUIT_FAILURES_DEFAULT,
        }
    }
}

type SetKey = (String, String, &'static str);
/// A store's set for a world, and when it was read.
type RememberedSet = (Instant, Arc<Vec<EnabledPlugin>>);
/// (merchant id, store id, world) of a call.
type CallSite<'a> = (&'a str, &'a str, &'static str);

pub struct PluginHost {
    runtime: runtime::Runtime,
    failures_max: i64,
    enabled: Mutex<HashMap<SetKey, RememberedSet>>,
    health: Mutex<HashMap<String, Health>>,
    started_at: time::OffsetDateTime,
}

#[derive(Default)]
struct Health {
    calls: u64,
    failures: BTreeMap<&'static str, u64>,
    fuel: VecDeque<u64>,
    latency_us: VecDeque<u64>,
}

/// What this host saw of a plugin's calls since it started.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginHealth {
    pub plugin_id: String,
    pub calls: u64,
    /// Failures by kind: guest, trap, fuel, deadline, memory, input, output, wrong-world.
    pub failures: BTreeMap<String, u64>,
    pub fuel_p50: Option<u64>,
    pub fuel_p99: Option<u64>,
    pub latency_us_p50: Option<u64>,
    pub latency_us_p99: Option<u64>,
    /// Each store set the plugin is in, with its circuit.
    pub stores: Vec<StoreCircuit>,
    /// Counters cover calls made by this host process since this moment.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: time::OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreCircuit {
    pub store_id: String,
    pub consecutive_failures: i64,
    pub circuit_open: bool,
}

fn percentile(samples: &VecDeque<u64>, percent: usize) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<u64> = samples.iter().copied().collect();
    sorted.sort_unstable();
    let index = (sorted.len() * percent).div_ceil(100).saturating_sub(1);
    Some(sorted[index.min(sorted.len() - 1)])
}

fn push_sample(samples: &mut VecDeque<u64>, value: u64) {
    if samples.len() == HEALTH_SAMPLES_MAX {
        samples.pop_front();
    }
    samples.push_back(value);
}

/// A plugin call's outcome as kept on the ledger transaction.
#[derive(Debug, Serialize)]
struct CallRecord {
    plugin_id: String,
    name: String,
    version: String,
    sha256: String,
    /// SHA-256 of the call's input (context, member, purchase as JSON), for replays.
    input_sha256: String,
    /// The input itself, compressed ([`pack`]): a replay runs it again.
    input: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    points: i64,
    /// The plugin's answer as it gave it (before the host's caps), when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Vec<runtime::Award>>,
}

/// A plugin call's input as kept for explanations and replays: the SHA-256 of its JSON and
/// the JSON itself, deflated and in base64.
#[derive(Debug, Clone)]
pub struct PackedInput {
    pub sha256: String,
    pub packed: String,
}

/// The largest input a replay inflates (the runtime's input cap is far below).
pub const PACKED_INPUT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Packs a plugin input (a tuple of the call's arguments) for the record.
pub fn pack<T: Serialize>(input: &T) -> PackedInput {
    use std::io::Write;
    let json = serde_json::to_vec(input).expect("plugin input serializes");
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 3),
        flate2::Compression::fast(),
    );
    encoder.write_all(&json).expect("writing to memory");
    let deflated = encoder.finish().expect("writing to memory");
    PackedInput {
        sha256: hex::encode(Sha256::digest(&json)),
        packed: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, deflated),
    }
}

/// The JSON of a packed input, and whether it still matches `sha256`.
pub fn unpack(packed: &str, sha256: &str) -> Result<(Vec<u8>, bool), CoreError> {
    use std::io::Read;
    let deflated = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packed)
        .map_err(|error| CoreError::Internal(format!("a recorded input is not base64: {error}")))?;
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .take(u64::try_from(PACKED_INPUT_BYTES_MAX).expect("small"))
        .read_to_end(&mut json)
        .map_err(|error| {
            CoreError::Internal(format!("a recorded input does not inflate: {error}"))
        })?;
    let verified = hex::encode(Sha256::digest(&json)) == sha256;
    Ok((json, verified))
}

impl PluginHost {
    pub fn new(settings: PluginSettings) -> Result<PluginHost, runtime::RuntimeError> {
        Ok(PluginHost {
            runtime: runtime::Runtime::new(settings.runtime)?,
            failures_max: settings.failures_max,
            enabled: Mutex::default(),
            health: Mutex::default(),
            started_at: time::OffsetDateTime::now_utc(),
        })
    }

    /// The largest component an upload may carry.
    pub fn component_bytes_max(&self) -> usize {
        self.runtime.config().component_bytes_max
    }

    /// Validates and compiles an uploaded component (on a blocking thread: compiling takes
    /// tens of milliseconds). The bytes come back with the plugin, uncopied.
    pub async fn inspect(&self, bytes: Vec<u8>) -> Result<(runtime::Plugin, Vec<u8>), CoreError> {
        let runtime = self.runtime.clone();
        let (loaded, bytes) = tokio::task::spawn_blocking(move || (runtime.load(&bytes), bytes))
            .await
            .map_err(|error| CoreError::Internal(format!("the compiler thread failed: {error}")))?;
        let plugin = loaded.map_err(|error| CoreError::field("component", error.to_string()))?;
        Ok((plugin, bytes))
    }

    async fn plugin(
        &self,
        database: &Database,
        merchant_id: &str,
        enabled: &EnabledPlugin,
    ) -> Result<runtime::Plugin, CoreError> {
        if let Some(plugin) = self.runtime.loaded(&enabled.sha256) {
            return Ok(plugin);
        }
        let bytes =
            registry::component_bytes(&database.pool, merchant_id, &enabled.plugin_id).await?;
        let runtime = self.runtime.clone();
        // The stored bytes were accepted once; a larger size limit since lowered must not
        // strand a plugin a store already runs.
        let plugin = tokio::task::spawn_blocking(move || {
            runtime.load_with_size_max(
                &bytes,
                bytes.len().max(runtime.config().component_bytes_max),
            )
        })
        .await
        .map_err(|error| CoreError::Internal(format!("the compiler thread failed: {error}")))?
        .map_err(|error| {
            CoreError::Internal(format!("a stored plugin no longer loads: {error}"))
        })?;
        Ok(plugin)
    }

    /// The store's set for a world, from memory when fresh.
    async fn enabled(
        &self,
        database: &Database,
        merchant_id: &str,
        store_id: &str,
        world: &'static str,
    ) -> Result<Arc<Vec<EnabledPlugin>>, CoreError> {
        let key = (merchant_id.to_string(), store_id.to_string(), world);
        if let Some((at, set)) = self
            .enabled
            .lock()
            .expect("the set memory is never poisoned")
            .get(&key)
        {
            if at.elapsed() < Duration::from_millis(ENABLED_SET_TTL_MS) {
                return Ok(set.clone());
            }
        }
        let set = match registry::store_plugins(&database.pool, merchant_id, store_id, world).await
        {
            Ok(set) => Arc::new(set.plugins),
            // The writer answers for a missing store, as it does without plugins.
            Err(CoreError::NotFound(_)) => Arc::new(Vec::new()),
            Err(error) => return Err(error),
        };
        self.enabled
            .lock()
            .expect("the set memory is never poisoned")
            .insert(key, (Instant::now(), set.clone()));
        Ok(set)
    }

    /// Whether the store runs any plugin of `world` whose circuit is closed (from memory when
    /// fresh).
    pub async fn has_enabled(
        &self,
        database: &Database,
        merchant_id: &str,
        store_id: &str,
        world: &'static str,
    ) -> Result<bool, CoreError> {
        Ok(self
            .enabled(database, merchant_id, store_id, world)
            .await?
            .iter()
            .any(|plugin| !plugin.circuit_open))
    }

    /// Loads plugin `plugin_id` of the merchant (its pinned version, by id) for a replay.
    pub async fn load_by_id(
        &self,
        database: &Database,
        merchant_id: &str,
        plugin_id: &str,
    ) -> Result<(runtime::Plugin, registry::Plugin), CoreError> {
        let record = registry::get_plugin(&database.pool, merchant_id, plugin_id).await?;
        let enabled = EnabledPlugin::pinned(record.clone(), serde_json::json!({}));
        Ok((self.plugin(database, merchant_id, &enabled).await?, record))
    }

    /// Forgets a store's remembered set (after it changed).
    pub fn forget_set(&self, merchant_id: &str, store_id: &str, world: &'static str) {
        self.enabled
            .lock()
            .expect("the set memory is never poisoned")
            .remove(&(merchant_id.to_string(), store_id.to_string(), world));
    }

    /// The limits a plugin runs with: the runtime's defaults, what its manifest asked for,
    /// within the operator's ceiling.
    pub fn limits(&self, asked: &PluginLimits) -> runtime::Limits {
        let mut limits = self.runtime.config().limits_default;
        if let Some(fuel) = asked.fuel_per_call_max {
            limits.fuel_per_call_max = fuel;
        }
        if let Some(deadline) = asked.deadline_ms {
            limits.deadline_ms = deadline;
        }
        if let Some(memory) = asked.memory_bytes_max {
            limits.memory_bytes_max = usize::try_from(memory).unwrap_or(usize::MAX);
        }
        limits.clamp_to(&self.runtime.config().limits_max)
    }

    fn record_health<T>(&self, plugin_id: &str, report: &runtime::CallReport<T>) {
        let mut health = self
            .health
            .lock()
            .expect("the health memory is never poisoned");
        let entry = health.entry(plugin_id.to_string()).or_default();
        entry.calls += 1;
        if let Err(failure) = &report.result {
            *entry.failures.entry(failure.kind()).or_default() += 1;
        }
        push_sample(&mut entry.fuel, report.fuel_consumed);
        push_sample(&mut entry.latency_us, report.elapsed_us);
    }

    pub async fn health(
        &self,
        database: &Database,
        merchant_id: &str,
        plugin_id: &str,
    ) -> Result<PluginHealth, CoreError> {
        registry::get_plugin(&database.pool, merchant_id, plugin_id).await?;
        let stores = registry::plugin_stores(&database.pool, merchant_id, plugin_id)
            .await?
            .into_iter()
            .map(|(store_id, consecutive_failures, opened)| StoreCircuit {
                store_id,
                consecutive_failures,
                circuit_open: opened.is_some(),
            })
            .collect();
        let health = self
            .health
            .lock()
            .expect("the health memory is never poisoned");
        let empty = Health::default();
        let entry = health.get(plugin_id).unwrap_or(&empty);
        Ok(PluginHealth {
            plugin_id: plugin_id.to_string(),
            calls: entry.calls,
            failures: entry
                .failures
                .iter()
                .map(|(kind, count)| (kind.to_string(), *count))
                .collect(),
            fuel_p50: percentile(&entry.fuel, 50),
            fuel_p99: percentile(&entry.fuel, 99),
            latency_us_p50: percentile(&entry.latency_us, 50),
            latency_us_p99: percentile(&entry.latency_us, 99),
            stores,
            since: self.started_at,
        })
    }

    /// Counts a call's outcome for the store's circuit. A failure to count is logged, never
    /// the request's failure.
    async fn count_outcome(
        &self,
        database: &Database,
        (merchant_id, store_id, world): CallSite<'_>,
        enabled: &EnabledPlugin,
        failed: bool,
        now: i64,
    ) {
        let counted = if failed {
            registry::record_failure(
                &database.pool,
                merchant_id,
                store_id,
                world,
                &enabled.plugin_id,
                self.failures_max,
                now,
            )
            .await
            .map(|opened| {
                if opened {
                    tracing::warn!(plugin = %enabled.plugin_id, store = %store_id, "plugin switched off for the store after repeated failures");
                }
            })
        } else if enabled.consecutive_failures > 0 {
            registry::record_success(
                &database.pool,
                merchant_id,
                store_id,
                world,
                &enabled.plugin_id,
            )
            .await
        } else {
            return;
        };
        self.forget_set(merchant_id, store_id, world);
        if let Err(error) = counted {
            tracing::error!(%error, plugin = %enabled.plugin_id, "could not count a plugin call");
        }
    }

    /// Replaces the built-in awards of `command` with what the store's earn rules decide.
    /// A plugin that fails never fails the purchase: the built-in base rate stands, and the
    /// transaction's provenance says which plugin failed and how.
    pub async fn decide_earn(
        &self,
        database: &Database,
        merchant: &Merchant,
        command: &mut PurchaseCommand,
        now: i64,
    ) -> Result<(), CoreError> {
        const WORLD: &str = "earn-rule";
        let enabled = self
            .enabled(database, &merchant.id, &command.store_id, WORLD)
            .await?;
        let active: Vec<&EnabledPlugin> = enabled
            .iter()
            .filter(|plugin| !plugin.circuit_open)
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let member =
            member_input(snapshot(&database.pool, &merchant.id, &command.member_id, now).await?);
        let purchase = purchase_input(merchant, command);
        let store_id = command.store_id.clone();
        let site: CallSite<'_> = (&merchant.id, &store_id, WORLD);
        let mut awards = Vec::new();
        let mut records = Vec::with_capacity(active.len());
        let mut failed = false;
        for enabled in active {
            let context = context_input(merchant, &command.store_id, enabled, now);
            let input = pack(&(&context, &member, &purchase));
            let plugin = match self.plugin(database, &merchant.id, enabled).await {
                Ok(plugin) => plugin,
                Err(error) => {
                    tracing::error!(%error, plugin = %enabled.plugin_id, "plugin could not be loaded");
                    failed = true;
                    records.push(record(
                        enabled,
                        input,
                        "failed",
                        Some("load".into()),
                        0,
                        None,
                    ));
                    continue;
                }
            };
            let limits = self.limits(&enabled.limits);
            let (call_member, call_purchase) = (member.clone(), purchase.clone());
            let report = tokio::task::spawn_blocking(move || {
                plugin.earn(&limits, &context, &call_member, &call_purchase)
            })
            .await
            .map_err(|error| CoreError::Internal(format!("the plugin thread failed: {error}")))?;
            self.record_health(&enabled.plugin_id, &report);
            for line in &report.logs {
                tracing::debug!(plugin = %enabled.plugin_id, level = line.level.as_str(), message = %line.message, "plugin log");
            }
            match report.result {
                Ok(plugin_awards) => {
                    let points = plugin_awards.iter().map(|award| award.points.max(0)).sum();
                    awards.extend(plugin_awards.iter().map(|award| Award {
                        points: award.points,
                        reason: award.reason.clone(),
                        source: format!("plugin:{}@{}", enabled.name, enabled.version),
                        expires_at: award.expires_at,
                    }));
                    records.push(record(
                        enabled,
                        input,
                        "ok",
                        None,
                        points,
                        Some(plugin_awards),
                    ));
                    self.count_outcome(database, site, enabled, false, now)
                        .await;
                }
                Err(failure) => {
                    failed = true;
                    records.push(record(
                        enabled,
                        input,
                        "failed",
                        Some(failure.kind().into()),
                        0,
                        None,
                    ));
                    tracing::warn!(plugin = %enabled.plugin_id, failure = %failure, "earn rule failed; the base rate applies");
                    self.count_outcome(database, site, enabled, true, now).await;
                }
            }
        }
        let fallback = failed.then_some("base_rate");
        if !failed {
            command.awards = cap_awards(awards, merchant.settings.points_per_purchase_max);
        }
        command.provenance = Some(serde_json::json!({
            "earn_policy": "plugins",
            "plugins": records,
            "fallback": fallback,
        }));
        Ok(())
    }
}

/// A tier policy's decision to move a member, with what the ledger keeps of how it was made.
#[derive(Debug, Clone)]
pub struct TierVerdict {
    /// What the member's tier was in the snapshot the policy saw.
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// The plugin (id, name, version, sha256) and the digest of its input.
    pub provenance: serde_json::Value,
}

impl PluginHost {
    /// Asks the store's tier policy (the first enabled one whose circuit is closed) where
    /// `member_id` belongs among `tiers`. `None`: no policy, the policy keeps the member where
    /// they are, or it failed (logged, counted, and the tier stays: a failing policy never
    /// moves anyone).
    pub async fn decide_tier(
        &self,
        database: &Database,
        merchant: &Merchant,
        store_id: &str,
        member_id: &str,
        tiers: &[loyalty_core::tiers::Tier],
        now: i64,
    ) -> Result<Option<TierVerdict>, CoreError> {
        const WORLD: &str = "tier-policy";
        if tiers.is_empty() {
            return Ok(None);
        }
        let enabled = self
            .enabled(database, &merchant.id, store_id, WORLD)
            .await?;
        let Some(enabled) = enabled.iter().find(|plugin| !plugin.circuit_open) else {
            return Ok(None);
        };
        let snapshot = snapshot(&database.pool, &merchant.id, member_id, now).await?;
        let from = snapshot.tier.clone();
        let member = member_input(snapshot);
        let definitions: Vec<runtime::TierDef> = tiers
            .iter()
            .map(|tier| runtime::TierDef {
                code: tier.code.clone(),
                name: tier.name.clone(),
                rank: u32::try_from(tier.rank).expect("ranks are below TIERS_MAX"),
                attributes: tier.attributes.to_string(),
            })
            .collect();
        let context = context_input(merchant, store_id, enabled, now);
        let input = pack(&(&context, &member, &definitions));
        let site: CallSite<'_> = (&merchant.id, store_id, WORLD);
        let plugin = match self.plugin(database, &merchant.id, enabled).await {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(%error, plugin = %enabled.plugin_id, "tier policy could not be loaded");
                return Ok(None);
            }
        };
        let limits = self.limits(&enabled.limits);
        let report = tokio::task::spawn_blocking(move || {
            plugin.tier(&limits, &context, &member, &definitions)
        })
        .await
        .map_err(|error| CoreError::Internal(format!("the plugin thread failed: {error}")))?;
        self.record_health(&enabled.plugin_id, &report);
        let decision = match report.result {
            Ok(decision) => {
                self.count_outcome(database, site, enabled, false, now)
                    .await;
                decision
            }
            Err(failure) => {
                tracing::warn!(plugin = %enabled.plugin_id, failure = %failure, "tier policy failed; the tier stays");
                self.count_outcome(database, site, enabled, true, now).await;
                return Ok(None);
            }
        };
        let runtime::TierDecision::MoveTo(moved) = decision else {
            return Ok(None);
        };
        if from.as_deref() == Some(moved.tier.as_str()) {
            return Ok(None);
        }
        if !tiers.iter().any(|tier| tier.code == moved.tier) {
            // A proposal the host cannot honour: the tier stays, and the merchant can see why.
            tracing::warn!(plugin = %enabled.plugin_id, tier = %moved.tier, "tier policy proposed an unknown tier; ignored");
            return Ok(None);
        }
        let reason: String = moved
            .reason
            .chars()
            .take(loyalty_core::tiers::TIER_REASON_LENGTH_MAX)
            .collect();
        Ok(Some(TierVerdict {
            from,
            to: moved.tier,
            reason,
            provenance: serde_json::json!({
                "plugin_id": enabled.plugin_id,
                "name": enabled.name,
                "version": enabled.version,
                "sha256": enabled.sha256,
                                "input_sha256": input.sha256,
                "input": input.packed,
            }),
        }))
    }
}

/// A campaign trigger's answer, with the input that produced it.
#[derive(Debug, Clone)]
pub struct TriggerAnswer {
    pub actions: Vec<runtime::Action>,
    pub input: PackedInput,
}

impl PluginHost {
    /// Asks a campaign's trigger plugin about `event` for the member. `Ok(Err(kind))`: the
    /// plugin failed (logged and counted in its health); the campaign does nothing for it.
    #[allow(clippy::too_many_arguments)]
    pub async fn on_event(
        &self,
        database: &Database,
        merchant: &Merchant,
        enabled: &EnabledPlugin,
        store_id: Option<&str>,
        member_id: &str,
        event: &runtime::Event,
        now: i64,
    ) -> Result<Result<TriggerAnswer, &'static str>, CoreError> {
        let member = member_input(snapshot(&database.pool, &merchant.id, member_id, now).await?);
        let context = context_at(merchant, store_id, enabled, now);
        let input = pack(&(&context, &member, event));
        let plugin = match self.plugin(database, &merchant.id, enabled).await {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(%error, plugin = %enabled.plugin_id, "campaign trigger could not be loaded");
                return Ok(Err("load"));
            }
        };
        let limits = self.limits(&enabled.limits);
        let event = event.clone();
        let report = tokio::task::spawn_blocking(move || {
            plugin.on_event(&limits, &context, &member, &event)
        })
        .await
        .map_err(|error| CoreError::Internal(format!("the plugin thread failed: {error}")))?;
        self.record_health(&enabled.plugin_id, &report);
        match report.result {
            Ok(actions) => Ok(Ok(TriggerAnswer { actions, input })),
            Err(failure) => {
                tracing::warn!(plugin = %enabled.plugin_id, failure = %failure, "campaign trigger failed");
                Ok(Err(failure.kind()))
            }
        }
    }
}

/// A recommender's ranking, validated against the candidates it was given.
#[derive(Debug, Clone)]
pub struct Ranking {
    /// `plugin:<name>@<version>`.
    pub source: String,
    pub items: Vec<runtime::Scored>,
}

impl PluginHost {
    /// Asks the store's recommender (the first enabled one whose circuit is closed) to rank
    /// `candidates` for the member. `Ok(Err(reason))`: no recommender, or it failed (logged
    /// and counted) — the caller falls back to popularity.
    #[allow(clippy::too_many_arguments)]
    pub async fn recommend(
        &self,
        database: &Database,
        merchant: &Merchant,
        store_id: &str,
        member_id: &str,
        history: Vec<runtime::HistoryLine>,
        candidates: Vec<runtime::Candidate>,
        limit: u32,
        now: i64,
    ) -> Result<Result<Ranking, &'static str>, CoreError> {
        const WORLD: &str = "recommender";
        let enabled = self
            .enabled(database, &merchant.id, store_id, WORLD)
            .await?;
        let Some(enabled) = enabled.iter().find(|plugin| !plugin.circuit_open) else {
            return Ok(Err("no recommender"));
        };
        let member = member_input(snapshot(&database.pool, &merchant.id, member_id, now).await?);
        let context = context_input(merchant, store_id, enabled, now);
        let site: CallSite<'_> = (&merchant.id, store_id, WORLD);
        let plugin = match self.plugin(database, &merchant.id, enabled).await {
            Ok(plugin) => plugin,
            Err(error) => {
                tracing::error!(%error, plugin = %enabled.plugin_id, "recommender could not be loaded");
                return Ok(Err("load"));
            }
        };
        let limits = self.limits(&enabled.limits);
        let known: std::collections::HashSet<String> = candidates
            .iter()
            .map(|candidate| candidate.sku.clone())
            .collect();
        let report = tokio::task::spawn_blocking(move || {
            plugin.recommend(&limits, &context, &member, &history, &candidates, limit)
        })
        .await
        .map_err(|error| CoreError::Internal(format!("the plugin thread failed: {error}")))?;
        self.record_health(&enabled.plugin_id, &report);
        match report.result {
            Ok(scored) => {
                self.count_outcome(database, site, enabled, false, now)
                    .await;
                // Only candidates, each once, at most `limit`: the host shows nothing else.
                let mut seen = std::collections::HashSet::new();
                let items = scored
                    .into_iter()
                    .filter(|item| known.contains(&item.sku) && seen.insert(item.sku.clone()))
                    .take(usize::try_from(limit).expect("limits are small"))
                    .collect();
                Ok(Ok(Ranking {
                    source: format!("plugin:{}@{}", enabled.name, enabled.version),
                    items,
                }))
            }
            Err(failure) => {
                tracing::warn!(plugin = %enabled.plugin_id, failure = %failure, "recommender failed; popularity applies");
                self.count_outcome(database, site, enabled, true, now).await;
                Ok(Err(failure.kind()))
            }
        }
    }
}

fn record(
    enabled: &EnabledPlugin,
    input: PackedInput,
    outcome: &'static str,
    failure: Option<String>,
    points: i64,
    output: Option<Vec<runtime::Award>>,
) -> CallRecord {
    CallRecord {
        plugin_id: enabled.plugin_id.clone(),
        name: enabled.name.clone(),
        version: enabled.version.clone(),
        sha256: enabled.sha256.clone(),
        input_sha256: input.sha256,
        input: input.packed,
        outcome,
        failure,
        points,
        output,
    }
}

/// The merchant's UTC offset at `now`, from the system's time-zone database (0 and a warning
/// when the zone is unknown there).
fn utc_offset_seconds(timezone: &str, now: i64) -> i32 {
    let zone = match jiff::tz::TimeZone::get(timezone) {
        Ok(zone) => zone,
        Err(error) => {
            tracing::warn!(%error, timezone, "unknown time zone; plugins see UTC");
            return 0;
        }
    };
    match jiff::Timestamp::from_microsecond(now) {
        Ok(at) => zone.to_offset(at).seconds(),
        Err(_) => 0,
    }
}

fn context_input(
    merchant: &Merchant,
    store_id: &str,
    enabled: &EnabledPlugin,
    now: i64,
) -> runtime::Context {
    context_at(merchant, Some(store_id), enabled, now)
}

fn context_at(
    merchant: &Merchant,
    store_id: Option<&str>,
    enabled: &EnabledPlugin,
    now: i64,
) -> runtime::Context {
    runtime::Context {
        merchant_id: merchant.id.clone(),
        store_id: store_id.map(str::to_string),
        now,
        timezone: merchant.timezone.clone(),
        utc_offset_seconds: utc_offset_seconds(&merchant.timezone, now),
        config: enabled.config.to_string(),
        currency: merchant.currency.clone(),
        currency_exponent: u8::try_from(merchant.currency_exponent)
            .expect("currency exponents are small"),
    }
}

fn member_input(member: MemberSnapshot) -> runtime::Member {
    runtime::Member {
        id: member.id,
        tier: member.tier,
        joined_at: member.joined_at,
        birthday: member
            .birthday
            .map(|(year, month, day)| runtime::Date { year, month, day }),
        attributes: member.attributes,
        stats: runtime::MemberStats {
            lifetime_spend: member.lifetime_spend,
            spend_12_months: member.spend_12_months,
            orders_count: u32::try_from(member.orders_count).unwrap_or(u32::MAX),
            last_purchase_at: member.last_purchase_at,
            points_available: member.points_available,
        },
    }
}

fn purchase_input(merchant: &Merchant, command: &PurchaseCommand) -> runtime::Purchase {
    runtime::Purchase {
        id: command.purchase_id.clone(),
        store_id: command.store_id.clone(),
        channel: "pos".to_string(),
        occurred_at: command.occurred_at,
        currency: merchant.currency.clone(),
        lines: command
            .lines
            .iter()
            .map(|line| runtime::PurchaseLine {
                sku: line.sku.clone(),
                name: line.name.clone(),
                category: line.category.clone(),
                quantity: u32::try_from(line.quantity).expect("quantities are validated small"),
                unit_price: line.unit_price,
                total: line.total,
            })
            .collect(),
        total: command.total,
    }
}
