//! The plugin registry and per-store enablement (admin), and plugin health.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::merchants::Scope;
use loyalty_core::plugins::{
    self as registry, Inspected, Manifest, Plugin, StorePlugins, StorePluginsRequest,
};

use crate::api::Page;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Auth, PageParams};
use crate::plugins::PluginHealth;
use crate::AppState;

/// Room for the manifest and the multipart framing on top of the component's own limit.
pub const UPLOAD_OVERHEAD_BYTES_MAX: usize = 256 * 1024;

/// Upload a plugin version (admin): `multipart/form-data` with a `manifest` part (JSON:
/// name, version, world, description, config_schema, limits) and a `component` part (the
/// WebAssembly component). The component is validated and compiled before it is recorded.
/// The same name and version with the same bytes answers 200 with the existing record; with
/// different bytes, 409.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins",
    request_body(content_type = "multipart/form-data", description = "parts `manifest` (JSON) and `component` (bytes)"),
    responses((status = 201, body = Plugin), (status = 200, body = Plugin), (status = 400, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> ApiResult<(StatusCode, Json<Plugin>)> {
    let principal = auth.require(Scope::Admin)?;
    let mut manifest: Option<Manifest> = None;
    let mut component: Option<Vec<u8>> = None;
    let bytes_max = state.plugins.component_bytes_max();
    // A limit on parts, so a request of endless tiny parts ends.
    for _ in 0..8 {
        let field = multipart
            .next_field()
            .await
            .map_err(|error| ApiError::BadRequest(format!("malformed multipart body: {error}")))?;
        let Some(field) = field else { break };
        match field.name() {
            Some("manifest") => {
                let text = field.bytes().await.map_err(|error| {
                    ApiError::BadRequest(format!("reading the manifest: {error}"))
                })?;
                let deserializer = &mut serde_json::Deserializer::from_slice(&text);
                manifest = Some(serde_path_to_error::deserialize(deserializer).map_err(
                    |error| {
                        let path = error.path().to_string();
                        let field = if path == "." {
                            "manifest".to_string()
                        } else {
                            format!("manifest.{path}")
                        };
                        ApiError::Validation(vec![loyalty_core::FieldError::new(
                            field,
                            error.inner().to_string(),
                        )])
                    },
                )?);
            }
            Some("component") => {
                let bytes = field.bytes().await.map_err(|error| {
                    ApiError::BadRequest(format!("reading the component: {error}"))
                })?;
                if bytes.len() > bytes_max {
                    return Err(ApiError::Validation(vec![loyalty_core::FieldError::new(
                        "component",
                        format!(
                            "is {} bytes, more than the {bytes_max} allowed",
                            bytes.len()
                        ),
                    )]));
                }
                component = Some(bytes.to_vec());
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    if manifest.is_none() {
        missing.push(loyalty_core::FieldError::new("manifest", "is required"));
    }
    if component.is_none() {
        missing.push(loyalty_core::FieldError::new("component", "is required"));
    }
    let (Some(manifest), Some(component)) = (manifest, component) else {
        return Err(ApiError::Validation(missing));
    };
    let (compiled, component) = state.plugins.inspect(component).await?;
    let (plugin, created) = registry::create_plugin(
        &state.database.pool,
        &principal.merchant.id,
        &manifest,
        Inspected {
            world: compiled.world().as_str(),
            wit_version: compiled.wit_version(),
            sha256: compiled.sha256(),
            bytes: &component,
        },
        state.clock.now(),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(plugin)))
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", params(PageParams),
    responses((status = 200, body = Page<Plugin>)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Plugin>>> {
    let principal = auth.require(Scope::Admin)?;
    let limit = page.limit()?;
    let items = registry::list_plugins(
        &state.database.pool,
        &principal.merchant.id,
        page.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page::new(items, limit, |plugin| &plugin.id)))
}

#[utoipa::path(get, path = "/v1/plugins/{id}", tag = "plugins",
    responses((status = 200, body = Plugin), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Plugin>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(
        registry::get_plugin(&state.database.pool, &principal.merchant.id, &id).await?,
    ))
}

/// Calls, failures by kind, fuel and latency percentiles (this host process, recent calls),
/// and the plugin's circuit in each store that runs it.
#[utoipa::path(get, path = "/v1/plugins/{id}/health", tag = "plugins",
    responses((status = 200, body = PluginHealth), (status = 404, body = Problem)))]
pub async fn health(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PluginHealth>> {
    let principal = auth.require(Scope::Admin)?;
    Ok(Json(
        state
            .plugins
            .health(&state.database, &principal.merchant.id, &id)
            .await?,
    ))
}

/// Which plugin versions the store runs for a world, in order.
#[utoipa::path(get, path = "/v1/stores/{store_id}/plugins/{world}", tag = "plugins",
    responses((status = 200, body = StorePlugins), (status = 404, body = Problem)))]
pub async fn get_store_set(
    State(state): State<AppState>,
    auth: Auth,
    Path((store_id, world)): Path<(String, String)>,
) -> ApiResult<Json<StorePlugins>> {
    let principal = auth.require(Scope::Admin)?;
    let world = registry::world_by_name(&world)?;
    Ok(Json(
        registry::store_plugins(
            &state.database.pool,
            &principal.merchant.id,
            &store_id,
            world,
        )
        .await?,
    ))
}

/// Replace the plugin versions the store runs for a world, each with its configuration
/// (validated against the plugin's schema) and priority. Versions are pinned; an empty list
/// switches the world back to the built-in behaviour; sending a set again closes circuits.
#[utoipa::path(put, path = "/v1/stores/{store_id}/plugins/{world}", tag = "plugins",
    request_body = StorePluginsRequest,
    responses((status = 200, body = StorePlugins), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_store_set(
    State(state): State<AppState>,
    auth: Auth,
    Path((store_id, world)): Path<(String, String)>,
    ApiJson(request): ApiJson<StorePluginsRequest>,
) -> ApiResult<Json<StorePlugins>> {
    let principal = auth.require(Scope::Admin)?;
    let world = registry::world_by_name(&world)?;
    let set = registry::set_store_plugins(
        &state.database.pool,
        &principal.merchant.id,
        &store_id,
        world,
        &request,
        state.clock.now(),
    )
    .await?;
    state
        .plugins
        .forget_set(&principal.merchant.id, &store_id, world);
    Ok(Json(set))
}
