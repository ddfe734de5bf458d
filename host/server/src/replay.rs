//! Explaining and replaying plugin-derived ledger transactions. Every plugin call the host
//! acted on is recorded in the transaction's provenance with the plugin's id, version and
//! sha256, the input's SHA-256 and the input itself (compressed), and the plugin's answer.
//! An explanation shows that; a replay runs the recorded input through the recorded plugin
//! version again and says whether the answer is identical.

use loyalty_core::ledger::{get_transaction, LedgerEntry};
use loyalty_core::merchants::Merchant;
use loyalty_core::session::Session;
use loyalty_core::CoreError;
use loyalty_runtime as runtime;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::plugins::unpack;
use crate::AppState;

/// One plugin call behind a transaction.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Decision {
    /// `earn-rule` or `campaign-trigger`.
    pub world: String,
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    /// Of the component that ran.
    pub sha256: String,
    pub input_sha256: String,
    /// Whether the recorded input still hashes to `input_sha256`.
    pub input_verified: bool,
    /// The input as the plugin received it: `context`, `member`, and `purchase` or `event`.
    #[schema(value_type = Object)]
    pub input: Value,
    /// `ok`, or `failed` (then `failure` says how and the host's fallback applied).
    pub outcome: String,
    pub failure: Option<String>,
    /// What the plugin answered (awards, or a campaign's actions), before the host's checks.
    #[schema(value_type = Object)]
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Explanation {
    pub transaction_id: String,
    pub kind: String,
    pub member_id: Option<String>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    /// `plugins` (earn rules decided), `base_rate` (the merchant's settings decided, or the
    /// fallback after a plugin failed), `campaign`, or `none` (no points were decided).
    pub policy: String,
    pub fallback: Option<String>,
    /// The campaign, for a campaign's award.
    pub campaign_id: Option<String>,
    pub decisions: Vec<Decision>,
    pub postings: Vec<loyalty_core::ledger::PostingView>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

fn decision(world: &str, record: &Value) -> Result<Decision, CoreError> {
    let input_sha256 = text(record, "input_sha256");
    let (input, input_verified) = match record["input"].as_str() {
        Some(packed) => {
            let (json, verified) = unpack(packed, &input_sha256)?;
            let arguments: Value = serde_json::from_slice(&json).map_err(|error| {
                CoreError::Internal(format!("a recorded input is not JSON: {error}"))
            })?;
            let third = if world == "campaign-trigger" {
                "event"
            } else {
                "purchase"
            };
            (
                serde_json::json!({
                    "context": arguments[0],
                    "member": arguments[1],
                    third: arguments[2],
                }),
                verified,
            )
        }
        None => (Value::Null, false),
    };
    Ok(Decision {
        world: world.to_string(),
        plugin_id: text(record, "plugin_id"),
        name: text(record, "name"),
        version: text(record, "version"),
        sha256: text(record, "sha256"),
        input_sha256,
        input_verified,
        input,
        outcome: record["outcome"].as_str().unwrap_or("ok").to_string(),
        failure: record["failure"].as_str().map(str::to_string),
        output: record["output"].clone(),
    })
}

/// Reads transaction `id` of the merchant and what decided it.
pub async fn explain(
    state: &AppState,
    merchant: &Merchant,
    id: &str,
) -> Result<Explanation, CoreError> {
    let mut connection = state.database.pool.acquire().await?;
    let (entry, member_id): (LedgerEntry, Option<String>) = get_transaction(
        &mut Session::Pooled(&mut connection),
        &merchant.id,
        id,
        &merchant.currency,
        merchant.currency_exponent,
    )
    .await?;
    let provenance = entry.provenance.clone().unwrap_or(Value::Null);
    let mut decisions = Vec::new();
    let mut campaign_id = None;
    let mut fallback = None;
    let policy = if let Some(plugins) = provenance["plugins"].as_array() {
        for record in plugins {
            decisions.push(decision("earn-rule", record)?);
        }
        fallback = provenance["fallback"].as_str().map(str::to_string);
        "plugins"
    } else if provenance["campaign_id"].is_string() {
        campaign_id = provenance["campaign_id"].as_str().map(str::to_string);
        decisions.push(decision("campaign-trigger", &provenance["plugin"])?);
        "campaign"
    } else if entry.kind == "purchase" {
        "base_rate"
    } else {
        "none"
    };
    Ok(Explanation {
        transaction_id: entry.id,
        kind: entry.kind,
        member_id,
        reference: entry.reference,
        reason: entry.reason,
        policy: policy.to_string(),
        fallback,
        campaign_id,
        decisions,
        postings: entry.postings,
        created_at: entry.created_at,
    })
}

/// One decision run again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Replayed {
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub world: String,
    /// The recorded input still hashes to its recorded digest.
    pub input_verified: bool,
    /// The stored component is the one that ran (same sha256).
    pub component_verified: bool,
    /// The replay's answer equals the recorded one, byte for byte as JSON.
    pub identical: bool,
    #[schema(value_type = Object)]
    pub recorded: Value,
    #[schema(value_type = Object)]
    pub replayed: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    pub transaction_id: String,
    /// Every decision replayed identically (false when there was nothing to replay).
    pub identical: bool,
    pub decisions: Vec<Replayed>,
}

/// Runs every recorded plugin call of transaction `id` again, on the recorded plugin version
/// with the recorded input, and compares the answers.
pub async fn replay(
    state: &AppState,
    merchant: &Merchant,
    id: &str,
) -> Result<ReplayReport, CoreError> {
    let explanation = explain(state, merchant, id).await?;
    let mut replayed = Vec::with_capacity(explanation.decisions.len());
    for decision in &explanation.decisions {
        let (plugin, record) = state
            .plugins
            .load_by_id(&state.database, &merchant.id, &decision.plugin_id)
            .await?;
        let limits = state.plugins.limits(&record.limits);
        let input = decision.input.clone();
        let world = decision.world.clone();
        let answer: Result<Value, String> = tokio::task::spawn_blocking(move || {
            let bad =
                |error: serde_json::Error| format!("the recorded input does not fit: {error}");
            let context: runtime::Context =
                serde_json::from_value(input["context"].clone()).map_err(bad)?;
            let member: runtime::Member =
                serde_json::from_value(input["member"].clone()).map_err(bad)?;
            if world == "campaign-trigger" {
                let event: runtime::Event =
                    serde_json::from_value(input["event"].clone()).map_err(bad)?;
                let report = plugin.on_event(&limits, &context, &member, &event);
                report
                    .result
                    .map(|actions| serde_json::to_value(actions).expect("actions serialize"))
                    .map_err(|failure| failure.kind().to_string())
            } else {
                let purchase: runtime::Purchase =
                    serde_json::from_value(input["purchase"].clone()).map_err(bad)?;
                let report = plugin.earn(&limits, &context, &member, &purchase);
                report
                    .result
                    .map(|awards| serde_json::to_value(awards).expect("awards serialize"))
                    .map_err(|failure| failure.kind().to_string())
            }
        })
        .await
        .map_err(|error| CoreError::Internal(format!("the replay thread failed: {error}")))?;
        let (recorded, replayed_value) = match (&decision.failure, answer) {
            (None, Ok(value)) => (decision.output.clone(), value),
            (None, Err(kind)) => (
                decision.output.clone(),
                serde_json::json!({"failure": kind}),
            ),
            (Some(failure), Ok(value)) => (serde_json::json!({"failure": failure}), value),
            (Some(failure), Err(kind)) => (
                serde_json::json!({"failure": failure}),
                serde_json::json!({"failure": kind}),
            ),
        };
        replayed.push(Replayed {
            plugin_id: decision.plugin_id.clone(),
            name: decision.name.clone(),
            version: decision.version.clone(),
            world: decision.world.clone(),
            input_verified: decision.input_verified,
            component_verified: record.sha256 == decision.sha256,
            identical: recorded == replayed_value,
            recorded,
            replayed: replayed_value,
        });
    }
    Ok(ReplayReport {
        transaction_id: explanation.transaction_id,
        identical: !replayed.is_empty()
            && replayed
                .iter()
                .all(|decision| decision.identical && decision.input_verified),
        decisions: replayed,
    })
}
