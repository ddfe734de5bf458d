//! The plugin registry: a merchant's uploaded plugin versions (component bytes stored once
//! per sha256), and which versions each store runs for each world, with configuration,
//! priority and a circuit breaker. Knows nothing of WebAssembly: the server asks the runtime
//! what a component is and passes the answer in.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{from_unix_micros, new_id};
use crate::error::{CoreError, FieldError};
use crate::stores::{conflict_on, get_store};

/// The worlds of the WIT package a store can enable plugins for.
pub const WORLDS: [&str; 4] = [
    "earn-rule",
    "tier-policy",
    "recommender",
    "campaign-trigger",
];
pub const PLUGIN_NAME_LENGTH_MAX: usize = 64;
pub const PLUGIN_VERSION_LENGTH_MAX: usize = 32;
pub const PLUGIN_DESCRIPTION_LENGTH_MAX: usize = 2_000;
/// Largest JSON Schema or store configuration accepted, in bytes of JSON text.
pub const PLUGIN_JSON_BYTES_MAX: usize = 64 * 1024;
/// Most plugins a store runs for one world.
pub const STORE_PLUGINS_PER_WORLD_MAX: usize = 16;
/// Consecutive failures after which a plugin is switched off for a store.
pub const CIRCUIT_FAILURES_DEFAULT: i64 = 5;

/// What an integrator declares with a component.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Lowercase letters, digits and dashes, e.g. `earn-category-multiplier`.
    pub name: String,
    /// `MAJOR.MINOR.PATCH`; a name and version is uploaded once (same bytes again is a no-op).
    pub version: String,
    /// `earn-rule`, `tier-policy`, `recommender` or `campaign-trigger`; must be the world the
    /// component implements.
    pub world: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema every store configuration of this plugin must satisfy (default: any object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config_schema: Option<Value>,
    /// Limits this plugin needs beyond the defaults (still capped by the operator's maximums).
    #[serde(default)]
    pub limits: PluginLimits,
}

/// Per-call limits a plugin asks for; absent fields take the host's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_call_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes_max: Option<u64>,
}

/// What the runtime found the component to be.
pub struct Inspected<'a> {
    pub world: &'a str,
    pub wit_version: &'a str,
    pub sha256: &'a str,
    pub bytes: &'a [u8],
}

/// One uploaded plugin version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plugin {
    pub id: String,
    pub name: String,
    pub version: String,
    pub world: String,
    /// The WIT package version the component was built against.
    pub wit_version: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub config_schema: Value,
    pub limits: PluginLimits,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    pub size_bytes: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

fn validate_manifest(manifest: &Manifest, errors: &mut Vec<FieldError>) {
    let name_ok = !manifest.name.is_empty()
        && manifest.name.len() <= PLUGIN_NAME_LENGTH_MAX
        && manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !manifest.name.starts_with('-');
    if !name_ok {
        errors.push(FieldError::new(
            "manifest.name",
            format!("must be 1 to {PLUGIN_NAME_LENGTH_MAX} lowercase letters, digits or dashes"),
        ));
    }
    let parts: Vec<&str> = manifest.version.split('.').collect();
    let version_ok = manifest.version.len() <= PLUGIN_VERSION_LENGTH_MAX
        && parts.len() == 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
    if !version_ok {
        errors.push(FieldError::new(
            "manifest.version",
            "must be MAJOR.MINOR.PATCH, e.g. 1.0.0",
        ));
    }
    if !WORLDS.contains(&manifest.world.as_str()) {
        errors.push(FieldError::new(
            "manifest.world",
            format!("must be one of {}", WORLDS.join(", ")),
        ));
    }
    if manifest.description.chars().count() > PLUGIN_DESCRIPTION_LENGTH_MAX {
        errors.push(FieldError::new(
            "manifest.description",
            format!("must be at most {PLUGIN_DESCRIPTION_LENGTH_MAX} characters"),
        ));
    }
    if let Some(schema) = &manifest.config_schema {
        if schema.to_string().len() > PLUGIN_JSON_BYTES_MAX {
            errors.push(FieldError::new(
                "manifest.config_schema",
                format!("must be at most {PLUGIN_JSON_BYTES_MAX} bytes"),
            ));
        } else if let Err(error) = jsonschema::validator_for(schema) {
            errors.push(FieldError::new(
                "manifest.config_schema",
                format!("is not a valid JSON Schema: {error}"),
            ));
        }
    }
    for (field, value) in [
        (
            "manifest.limits.fuel_per_call_max",
            manifest.limits.fuel_per_call_max,
        ),
        ("manifest.limits.deadline_ms", manifest.limits.deadline_ms),
        (
            "manifest.limits.memory_bytes_max",
            manifest.limits.memory_bytes_max,
        ),
    ] {
        if value == Some(0) {
            errors.push(FieldError::new(field, "must be more than 0"));
        }
    }
}

/// Records an uploaded plugin version. The same name and version with the same bytes returns
/// the existing record (`false`: nothing created); with different bytes it is a 409.
pub async fn create_plugin(
    pool: &AnyPool,
    merchant_id: &str,
    manifest: &Manifest,
    inspected: Inspected<'_>,
    now: i64,
) -> Result<(Plugin, bool), CoreError> {
    let mut errors = Vec::new();
    validate_manifest(manifest, &mut errors);
    if errors.is_empty() && manifest.world != inspected.world {
        errors.push(FieldError::new(
            "manifest.world",
            format!(
                "the component implements {}, not {}",
                inspected.world, manifest.world
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    if let Some(existing) =
        find_plugin(pool, merchant_id, &manifest.name, &manifest.version).await?
    {
        return same_or_conflict(existing, inspected.sha256);
    }
    let size_bytes = i64::try_from(inspected.bytes.len()).expect("a component fits in i64 bytes");
    let schema = manifest
        .config_schema
        .clone()
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    let id = new_id("plg");
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "INSERT INTO plugin_components (sha256, size_bytes, bytes, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(inspected.sha256)
    .bind(size_bytes)
    .bind(inspected.bytes)
    .bind(now)
    .execute(&mut *transaction)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO plugins (merchant_id, id, name, version, world, wit_version, description, \
         config_schema, limits, sha256, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(merchant_id)
    .bind(&id)
    .bind(&manifest.name)
    .bind(&manifest.version)
    .bind(&manifest.world)
    .bind(inspected.wit_version)
    .bind(manifest.description.trim())
    .bind(schema.to_string())
    .bind(serde_json::to_string(&manifest.limits).expect("limits serialize"))
    .bind(inspected.sha256)
    .bind(size_bytes)
    .bind(now)
    .execute(&mut *transaction)
    .await;
    match inserted {
        Ok(_) => transaction.commit().await?,
        Err(error) => {
            transaction.rollback().await?;
            let error = conflict_on(
                error.into(),
                "plugins_name_version",
                "version",
                "this plugin version was uploaded concurrently",
            );
            // A concurrent upload of the same name and version won the race.
            if matches!(error, CoreError::Conflict(_)) {
                if let Some(existing) =
                    find_plugin(pool, merchant_id, &manifest.name, &manifest.version).await?
                {
                    return same_or_conflict(existing, inspected.sha256);
                }
            }
            return Err(error);
        }
    }
    Ok((get_plugin(pool, merchant_id, &id).await?, true))
}

fn same_or_conflict(existing: Plugin, sha256: &str) -> Result<(Plugin, bool), CoreError> {
    if existing.sha256 == sha256 {
        Ok((existing, false))
    } else {
        Err(CoreError::Conflict(format!(
            "{} {} was already uploaded with different bytes (sha256 {}); upload a new version",
            existing.name, existing.version, existing.sha256
        )))
    }
}

const PLUGIN_COLUMNS: &str = "id, name, version, world, wit_version, description, config_schema, \
                              limits, sha256, size_bytes, created_at";

fn plugin_from_row(row: &sqlx::any::AnyRow) -> Result<Plugin, CoreError> {
    let schema: String = row.try_get("config_schema")?;
    let limits: String = row.try_get("limits")?;
    Ok(Plugin {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        world: row.try_get("world")?,
        wit_version: row.try_get("wit_version")?,
        description: row.try_get("description")?,
        config_schema: serde_json::from_str(&schema)
            .map_err(|error| CoreError::Internal(format!("stored schema: {error}")))?,
        limits: serde_json::from_str(&limits)
            .map_err(|error| CoreError::Internal(format!("stored limits: {error}")))?,
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        created_at: from_unix_micros(row.try_get("created_at")?),
    })
}

async fn find_plugin(
    pool: &AnyPool,
    merchant_id: &str,
    name: &str,
    version: &str,
) -> Result<Option<Plugin>, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE merchant_id = $1 AND name = $2 AND version = $3"
    ))
    .bind(merchant_id)
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(plugin_from_row).transpose()
}

pub async fn get_plugin(pool: &AnyPool, merchant_id: &str, id: &str) -> Result<Plugin, CoreError> {
    let row = sqlx::query(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE merchant_id = $1 AND id = $2"
    ))
    .bind(merchant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("plugin"))?;
    plugin_from_row(&row)
}

pub async fn list_plugins(
    pool: &AnyPool,
    merchant_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<Plugin>, CoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(merchant_id)
    .bind(cursor.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(plugin_from_row).collect()
}

/// The component bytes of one of the merchant's plugins.
pub async fn component_bytes(
    pool: &AnyPool,
    merchant_id: &str,
    plugin_id: &str,
) -> Result<Vec<u8>, CoreError> {
    let row = sqlx::query(
        "SELECT c.bytes FROM plugins p JOIN plugin_components c ON c.sha256 = p.sha256 \
         WHERE p.merchant_id = $1 AND p.id = $2",
    )
    .bind(merchant_id)
    .bind(plugin_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("plugin"))?;
    Ok(row.try_get("bytes")?)
}

/// One entry of a store's plugin set for a world.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorePluginEntry {
    pub plugin_id: String,
    /// Configuration, validated against the plugin's `config_schema` (default `{}`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// Lower runs first; ties run in plugin id order.
    #[serde(default)]
    pub priority: i64,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorePluginsRequest {
    pub plugins: Vec<StorePluginEntry>,
}

/// A plugin version a store runs, as the host calls it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnabledPlugin {
    pub plugin_id: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub priority: i64,
    #[serde(skip)]
    pub limits: PluginLimits,
    /// Failures in a row; reset by a success.
    pub consecutive_failures: i64,
    /// Switched off for this store after too many failures in a row; an admin's PUT of the
    /// store's set switches it back on.
    pub circuit_open: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub circuit_opened_at: Option<time::OffsetDateTime>,
}

impl EnabledPlugin {
    /// A plugin version run outside a store's set (a campaign's trigger, a replay) with
    /// `config`: no priority, no circuit.
    pub fn pinned(plugin: Plugin, config: Value) -> EnabledPlugin {
        EnabledPlugin {
            plugin_id: plugin.id,
            name: plugin.name,
            version: plugin.version,
            sha256: plugin.sha256,
            config,
            priority: 0,
            limits: plugin.limits,
            consecutive_failures: 0,
            circuit_open: false,
            circuit_opened_at: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StorePlugins {
    pub store_id: String,
    pub world: String,
    pub plugins: Vec<EnabledPlugin>,
}

/// The world named `name`, as the registry's own name (a `&'static str` keys caches); an
/// unknown world is not found, like any unknown path.
pub fn world_by_name(name: &str) -> Result<&'static str, CoreError> {
    WORLDS
        .iter()
        .find(|known| **known == name)
        .copied()
        .ok_or(CoreError::NotFound("world"))
}

/// Checks a configuration for `plugin` (size, and the plugin's JSON Schema); problems go to
/// `errors` under `field`. Fails only if the stored schema itself is broken.
pub fn check_config(
    plugin: &Plugin,
    config: &Value,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Result<(), CoreError> {
    if config.to_string().len() > PLUGIN_JSON_BYTES_MAX {
        errors.push(FieldError::new(
            field,
            format!("must be at most {PLUGIN_JSON_BYTES_MAX} bytes"),
        ));
        return Ok(());
    }
    let validator = jsonschema::validator_for(&plugin.config_schema).map_err(|error| {
        CoreError::Internal(format!(
            "stored schema of {} is invalid: {error}",
            plugin.id
        ))
    })?;
    for error in validator.iter_errors(config) {
        let path = error.instance_path().to_string();
        errors.push(FieldError::new(
            format!("{field}{}", path.replace('/', ".")).trim_end_matches('.'),
            error.to_string(),
        ));
    }
    Ok(())
}

/// Replaces the plugin versions `store_id` runs for `world`. Versions stay pinned: a newer
/// upload of a plugin changes nothing until a store is switched to it. Clears every circuit.
pub async fn set_store_plugins(
    pool: &AnyPool,
    merchant_id: &str,
    store_id: &str,
    world: &str,
    request: &StorePluginsRequest,
    now: i64,
) -> Result<StorePlugins, CoreError> {
    world_by_name(world)?;
    get_store(pool, merchant_id, store_id).await?;
    if world == "campaign-trigger" {
        // A trigger needs a schedule, a budget and caps: it runs as a campaign.
        return Err(CoreError::Unprocessable(
            "campaign triggers run as campaigns (POST /v1/campaigns, with stores, schedule, \
             budget and caps), not as a store's plugin set"
                .into(),
        ));
    }
    let mut errors = Vec::new();
    if request.plugins.len() > STORE_PLUGINS_PER_WORLD_MAX {
        errors.push(FieldError::new(
            "plugins",
            format!("at most {STORE_PLUGINS_PER_WORLD_MAX} plugins per world"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, entry) in request.plugins.iter().enumerate() {
        let field = format!("plugins[{index}]");
        if !seen.insert(entry.plugin_id.as_str()) {
            errors.push(FieldError::new(
                format!("{field}.plugin_id"),
                "is listed twice",
            ));
            continue;
        }
        let plugin = match get_plugin(pool, merchant_id, &entry.plugin_id).await {
            Ok(plugin) => plugin,
            Err(CoreError::NotFound(_)) => {
                errors.push(FieldError::new(
                    format!("{field}.plugin_id"),
                    "no such plugin",
                ));
                continue;
            }
            Err(error) => return Err(error),
        };
        if plugin.world != world {
            errors.push(FieldError::new(
                format!("{field}.plugin_id"),
                format!("is a {} plugin, not {world}", plugin.world),
            ));
            continue;
        }
        check_config(
            &plugin,
            &entry.config,
            &format!("{field}.config"),
            &mut errors,
        )?;
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "DELETE FROM store_plugins WHERE merchant_id = $1 AND store_id = $2 AND world = $3",
    )
    .bind(merchant_id)
    .bind(store_id)
    .bind(world)
    .execute(&mut *transaction)
    .await?;
    for entry in &request.plugins {
        sqlx::query(
            "INSERT INTO store_plugins (merchant_id, store_id, world, plugin_id, config, priority, \
             consecutive_failures, circuit_opened_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, $7)",
        )
        .bind(merchant_id)
        .bind(store_id)
        .bind(world)
        .bind(&entry.plugin_id)
        .bind(entry.config.to_string())
        .bind(entry.priority)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    store_plugins(pool, merchant_id, store_id, world).await
}

/// The plugin versions `store_id` runs for `world`, in the order they run.
pub async fn store_plugins(
    pool: &AnyPool,
    merchant_id: &str,
    store_id: &str,
    world: &str,
) -> Result<StorePlugins, CoreError> {
    world_by_name(world)?;
    get_store(pool, merchant_id, store_id).await?;
    let rows = sqlx::query(
        "SELECT s.plugin_id, p.name, p.version, p.sha256, p.limits, s.config, s.priority, \
         s.consecutive_failures, s.circuit_opened_at \
         FROM store_plugins s JOIN plugins p ON p.merchant_id = s.merchant_id AND p.id = s.plugin_id \
         WHERE s.merchant_id = $1 AND s.store_id = $2 AND s.world = $3 \
         ORDER BY s.priority, s.plugin_id",
    )
    .bind(merchant_id)
    .bind(store_id)
    .bind(world)
    .fetch_all(pool)
    .await?;
    let plugins = rows
        .iter()
        .map(|row| {
            let config: String = row.try_get("config")?;
            let limits: String = row.try_get("limits")?;
            let opened: Option<i64> = row.try_get("circuit_opened_at")?;
            Ok(EnabledPlugin {
                plugin_id: row.try_get("plugin_id")?,
                name: row.try_get("name")?,
                version: row.try_get("version")?,
                sha256: row.try_get("sha256")?,
                config: serde_json::from_str(&config)
                    .map_err(|error| CoreError::Internal(format!("stored config: {error}")))?,
                priority: row.try_get("priority")?,
                limits: serde_json::from_str(&limits)
                    .map_err(|error| CoreError::Internal(format!("stored limits: {error}")))?,
                consecutive_failures: row.try_get("consecutive_failures")?,
                circuit_open: opened.is_some(),
                circuit_opened_at: opened.map(from_unix_micros),
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    Ok(StorePlugins {
        store_id: store_id.to_string(),
        world: world.to_string(),
        plugins,
    })
}

/// Every store set a plugin is part of (for its health report).
pub async fn plugin_stores(
    pool: &AnyPool,
    merchant_id: &str,
    plugin_id: &str,
) -> Result<Vec<(String, i64, Option<i64>)>, CoreError> {
    let rows = sqlx::query(
        "SELECT store_id, consecutive_failures, circuit_opened_at FROM store_plugins \
         WHERE merchant_id = $1 AND plugin_id = $2 ORDER BY store_id",
    )
    .bind(merchant_id)
    .bind(plugin_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("store_id")?,
                row.try_get("consecutive_failures")?,
                row.try_get("circuit_opened_at")?,
            ))
        })
        .collect()
}

/// Counts a failed call; opens the circuit when `failures_max` failures come in a row.
/// Returns whether the circuit is open now.
pub async fn record_failure(
    pool: &AnyPool,
    merchant_id: &str,
    store_id: &str,
    world: &str,
    plugin_id: &str,
    failures_max: i64,
    now: i64,
) -> Result<bool, CoreError> {
    let row = sqlx::query(
        "UPDATE store_plugins SET consecutive_failures = consecutive_failures + 1, \
         circuit_opened_at = CASE WHEN circuit_opened_at IS NULL AND consecutive_failures + 1 >= $5 \
         THEN $6 ELSE circuit_opened_at END \
         WHERE merchant_id = $1 AND store_id = $2 AND world = $3 AND plugin_id = $4 \
         RETURNING circuit_opened_at",
    )
    .bind(merchant_id)
    .bind(store_id)
    .bind(world)
    .bind(plugin_id)
    .bind(failures_max)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(row
            .try_get::<Option<i64>, _>("circuit_opened_at")?
            .is_some()),
        // The set changed while the call ran: nothing to count.
        None => Ok(false),
    }
}

/// A success ends a run of failures.
pub async fn record_success(
    pool: &AnyPool,
    merchant_id: &str,
    store_id: &str,
    world: &str,
    plugin_id: &str,
) -> Result<(), CoreError> {
    sqlx::query(
        "UPDATE store_plugins SET consecutive_failures = 0 \
         WHERE merchant_id = $1 AND store_id = $2 AND world = $3 AND plugin_id = $4 \
         AND consecutive_failures > 0 AND circuit_opened_at IS NULL",
    )
    .bind(merchant_id)
    .bind(store_id)
    .bind(world)
    .bind(plugin_id)
    .execute(pool)
    .await?;
    Ok(())
}
