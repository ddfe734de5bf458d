//! The runtime (engine, linker, loaded plugins) and plugins (one compiled component each).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::bindings::{self, VersionedPre};
use crate::cache::{DiskCache, Lookup};
use crate::call::{self, CallOutcome, CallReport, StoreState};
use crate::engine::{self, Slots, INSTANCES_CONCURRENT_MAX, MEMORY_KEEP_RESIDENT_BYTES_DEFAULT};
use crate::error::{CallFailure, LoadError, RuntimeError};
use crate::limits::{Limits, COMPONENT_BYTES_MAX_DEFAULT};
use crate::types::{
    Action, Award, Candidate, Context, EncodedSize, Event, HistoryLine, Member, Purchase, Scored,
    TierDecision, TierDef,
};
use crate::validate;
use crate::world::World;

/// How a runtime is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where compiled components are kept between runs; `None` compiles every component once
    /// per process.
    pub cache_dir: Option<PathBuf>,
    /// The largest component [`Runtime::load`] accepts, in bytes.
    pub component_bytes_max: usize,
    /// The operator's ceiling: every call's limits are clamped to it, and the engine's
    /// memory pool is sized for its `memory_bytes_max`.
    pub limits_max: Limits,
    /// The limits for a plugin without overrides (the runtime does not apply them itself: a
    /// call gets the limits it is given, clamped to `limits_max`).
    pub limits_default: Limits,
    /// Linear memory of a freed instance slot kept resident and reset in place, in bytes
    /// (default [`MEMORY_KEEP_RESIDENT_BYTES_DEFAULT`]; 0 returns it all to the kernel).
    pub memory_keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            component_bytes_max: COMPONENT_BYTES_MAX_DEFAULT,
            limits_max: Limits::CEILING_DEFAULT,
            limits_default: Limits::DEFAULT,
            memory_keep_resident_bytes: MEMORY_KEEP_RESIDENT_BYTES_DEFAULT,
        }
    }
}

/// What plugins and the runtime share.
struct Shared {
    engine: Engine,
    limits_max: Limits,
    slots: Slots,
}

struct RuntimeInner {
    shared: Arc<Shared>,
    config: RuntimeConfig,
    linker: Linker<StoreState>,
    cache: Option<DiskCache>,
    plugins: Mutex<HashMap<String, Plugin>>,
}

/// Runs plugins: one wasmtime engine with a pooling allocator and an epoch ticker, a linker
/// with the plugin host interfaces of every supported WIT version and deny-all WASI, and the
/// plugins loaded so far (by sha256). Cheap to clone; `Send + Sync`. Calls are synchronous:
/// run them on a blocking thread.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Where a plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadedFrom {
    /// Compiled from the component's bytes.
    Compiled,
    /// Read from the on-disk cache.
    DiskCache,
}

impl Runtime {
    /// Creates the engine (and its epoch ticker thread), the linker and the cache directory.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::build_engine(&config.limits_max, config.memory_keep_resident_bytes)?;
        engine::start_epoch_ticker(&engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("linking WASI: {e:#}")))?;
        bindings::add_to_linker(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("linking the plugin host: {e:#}")))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                DiskCache::new(dir.clone(), engine::compatibility_hash(&engine)).map_err(|e| {
                    RuntimeError::CacheDir {
                        path: dir.display().to_string(),
                        message: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                shared: Arc::new(Shared {
                    engine,
                    limits_max: config.limits_max,
                    slots: Slots::new(INSTANCES_CONCURRENT_MAX),
                }),
                config,
                linker,
                cache,
                plugins: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration the runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Loads a plugin component of at most `config.component_bytes_max` bytes; see
    /// [`Runtime::load_with_size_max`].
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        self.load_with_size_max(bytes, self.inner.config.component_bytes_max)
    }

    /// Loads a plugin component of at most `component_bytes_max` bytes (for plugins the
    /// operator allows to be bigger, e.g. interpreters).
    ///
    /// Checks that the bytes are a component (not a core module, not garbage), compiles it
    /// (or reads it from the on-disk cache, keyed by its sha256 and the engine's
    /// compatibility hash), checks that it exports exactly one plugin world at a supported
    /// WIT version and imports only what the host links, and pre-instantiates it. A
    /// component already loaded (same sha256) is returned from memory.
    pub fn load_with_size_max(
        &self,
        bytes: &[u8],
        component_bytes_max: usize,
    ) -> Result<Plugin, LoadError> {
        validate::check_bytes(bytes, component_bytes_max)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(plugin) = self.plugins().get(&sha256) {
            return Ok(plugin.clone());
        }
        let started = Instant::now();
        let engine = &self.inner.shared.engine;
        let (component, loaded_from) = self.compile(&sha256, bytes)?;
        let (world, version) = validate::world_of(engine, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnsupportedWorld(format!("it cannot be linked: {e:#}")))?;
        let pre = VersionedPre::new(version, world, pre)
            .expect("world_of returns only versions the bindings have")
            .map_err(|e| {
                LoadError::UnsupportedWorld(format!(
                    "its {world} export does not match loyalty:plugin@{version}: {e:#}"
                ))
            })?;
        if loaded_from == LoadedFrom::Compiled {
            if let Some(cache) = &self.inner.cache {
                // A cache that cannot be written only costs a compile next time.
                if let Err(error) = cache.put(&sha256, &component) {
                    tracing::warn!(%sha256, %error, "compiled component not cached");
                }
            }
        }
        let plugin = Plugin {
            inner: Arc::new(PluginInner {
                sha256: sha256.clone(),
                world,
                wit_version: version,
                loaded_from,
                load_elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                pre,
                shared: Arc::clone(&self.inner.shared),
            }),
        };
        Ok(self.plugins().entry(sha256).or_insert(plugin).clone())
    }

    /// The plugin with this sha256 (hex), if it is loaded: callers that keep components by
    /// hash need not read the bytes again.
    pub fn loaded(&self, sha256: &str) -> Option<Plugin> {
        self.plugins().get(sha256).cloned()
    }

    /// Forgets a loaded plugin (by sha256), so its compiled code is freed once no clone of
    /// it is left. Returns whether it was loaded.
    pub fn unload(&self, sha256: &str) -> bool {
        self.plugins().remove(sha256).is_some()
    }

    /// The on-disk cache file of the component with this sha256 (hex), if there is a cache
    /// directory. The file may not exist.
    pub fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        self.inner.cache.as_ref().map(|cache| cache.path(sha256))
    }

    fn plugins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Plugin>> {
        self.inner
            .plugins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The compiled component, from the disk cache if it has a usable artefact.
    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<(Component, LoadedFrom), LoadError> {
        let engine = &self.inner.shared.engine;
        if let Some(cache) = &self.inner.cache {
            match cache.get(engine, sha256) {
                Lookup::Hit(component) => return Ok((component, LoadedFrom::DiskCache)),
                Lookup::Miss => {}
                // A damaged or refused artefact is replaced by the compile below.
                Lookup::Unusable(error) => {
                    tracing::warn!(%sha256, %error, "cached component unusable; compiling");
                }
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok((component, LoadedFrom::Compiled))
    }
}

struct PluginInner {
    sha256: String,
    world: World,
    wit_version: &'static str,
    loaded_from: LoadedFrom,
    load_elapsed_us: u64,
    pre: VersionedPre,
    shared: Arc<Shared>,
}

/// A loaded plugin: a compiled, pre-instantiated component of one world. Cheap to clone;
/// `Send + Sync`. Every call runs on a fresh instance with the limits it is given (clamped to
/// the runtime's `limits_max`).
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("sha256", &self.inner.sha256)
            .field("world", &self.inner.world)
            .field("wit_version", &self.inner.wit_version)
            .field("loaded_from", &self.inner.loaded_from)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The sha256 of the component's bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// The world the plugin implements.
    pub fn world(&self) -> World {
        self.inner.world
    }

    /// The `loyalty:plugin` WIT version the plugin was built against, e.g. "0.1.0".
    pub fn wit_version(&self) -> &str {
        self.inner.wit_version
    }

    /// Whether the compiled code came from compiling or from the disk cache.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.inner.loaded_from
    }

    /// How long compiling (or reading the cache), checking and pre-instantiating took, in
    /// microseconds.
    pub fn load_elapsed_us(&self) -> u64 {
        self.inner.load_elapsed_us
    }

    /// Runs `earn.evaluate` (earn-rule plugins; others get [`CallFailure::WrongWorld`]).
    pub fn earn(
        &self,
        limits: &Limits,
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> CallReport<Vec<Award>> {
        let input = ctx.encoded_bytes() + member.encoded_bytes() + purchase.encoded_bytes();
        self.run(World::EarnRule, limits, ctx, input, |pre, store| {
            pre.earn(store, ctx, member, purchase)
        })
    }

    /// Runs `tiers.evaluate` (tier-policy plugins; others get [`CallFailure::WrongWorld`]).
    pub fn tier(
        &self,
        limits: &Limits,
        ctx: &Context,
        member: &Member,
        tiers: &[TierDef],
    ) -> CallReport<TierDecision> {
        let input = ctx.encoded_bytes() + member.encoded_bytes() + tiers.encoded_bytes();
        self.run(World::TierPolicy, limits, ctx, input, |pre, store| {
            pre.tier(store, ctx, member, tiers)
        })
    }

    /// Runs `recommend.recommend` (recommender plugins; others get
    /// [`CallFailure::WrongWorld`]).
    pub fn recommend(
        &self,
        limits: &Limits,
        ctx: &Context,
        member: &Member,
        history: &[HistoryLine],
        candidates: &[Candidate],
        limit: u32,
    ) -> CallReport<Vec<Scored>> {
        let input = ctx.encoded_bytes()
            + member.encoded_bytes()
            + history.encoded_bytes()
            + candidates.encoded_bytes()
            + limit.encoded_bytes();
        self.run(World::Recommender, limits, ctx, input, |pre, store| {
            pre.recommend(store, ctx, member, history, candidates, limit)
        })
    }

    /// Runs `campaign.on-event` (campaign-trigger plugins; others get
    /// [`CallFailure::WrongWorld`]).
    pub fn on_event(
        &self,
        limits: &Limits,
        ctx: &Context,
        member: &Member,
        event: &Event,
    ) -> CallReport<Vec<Action>> {
        let input = ctx.encoded_bytes() + member.encoded_bytes() + event.encoded_bytes();
        self.run(World::CampaignTrigger, limits, ctx, input, |pre, store| {
            pre.on_event(store, ctx, member, event)
        })
    }

    /// Refuses a call of another world, else runs it on a fresh store holding a pool slot.
    fn run<T: EncodedSize>(
        &self,
        world: World,
        limits: &Limits,
        ctx: &Context,
        input_bytes: usize,
        call: impl FnOnce(&VersionedPre, &mut Store<StoreState>) -> Option<CallOutcome<T>>,
    ) -> CallReport<T> {
        if self.inner.world != world {
            return CallReport::refused(CallFailure::WrongWorld);
        }
        let shared = &self.inner.shared;
        let limits = limits.clamp_to(&shared.limits_max);
        let _slot = shared.slots.acquire();
        call::run(&shared.engine, &limits, ctx.now, input_bytes, |store| {
            call(&self.inner.pre, store).expect("the plugin's world was checked above")
        })
    }
}
