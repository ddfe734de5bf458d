//! Test support: the real server, in-process, over real HTTP on a loopback port, on SQLite
//! or PostgreSQL, each test with its own database. `TEST_DATABASE_URL` names a PostgreSQL
//! server; each test creates (and drops) a fresh database on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loyalty_core::Database;
use loyalty_host::plugins::{PluginHost, PluginSettings};
use loyalty_host::{router, AppState, Clock};
use serde_json::Value;

pub use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for tests, if any. Under CI it is required.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI is set but TEST_DATABASE_URL is not: the PostgreSQL suite is mandatory in CI"
            );
            None
        }
    }
}

/// Runs one async test body on a backend; PostgreSQL tests pass (and say so) when no
/// server is configured outside CI.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if $crate::postgres_url().is_none() {
                        eprintln!("TEST_DATABASE_URL is not set: PostgreSQL test skipped");
                        return;
                    }
                    super::$name($crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "lt_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    )
}

/// A fresh, empty database of the backend. Returns its URL.
pub async fn fresh_database(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let directory = std::env::temp_dir().join("loyalty-tests");
            std::fs::create_dir_all(&directory).expect("temp dir is writable");
            format!(
                "sqlite://{}",
                directory.join(format!("{}.db", unique_name())).display()
            )
        }
        Backend::Postgres => {
            let admin_url = postgres_url().expect("PostgreSQL tests need TEST_DATABASE_URL");
            let name = unique_name();
            let admin = Database::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin.pool)
                .await
                .expect("create a test database");
            admin.pool.close().await;
            replace_database_name(&admin_url, &name)
        }
    }
}

fn replace_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|index| index + 3).unwrap_or(0);
    let replaced = match base[scheme_end..].find('/') {
        Some(slash) => format!("{}/{}", &base[..scheme_end + slash], name),
        None => format!("{base}/{name}"),
    };
    match query {
        Some(query) => format!("{replaced}?{query}"),
        None => replaced,
    }
}

fn drop_database(url: &str) {
    if !url.starts_with("postgres") {
        if let Some(path) = url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
        return;
    }
    let name = url
        .split('?')
        .next()
        .and_then(|base| base.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    let Some(admin_url) = postgres_url() else {
        return;
    };
    // Drop runs outside any runtime we may block: use a thread with its own.
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleanup");
        runtime.block_on(async move {
            if let Ok(admin) = Database::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin.pool)
                    .await;
                admin.pool.close().await;
            }
        });
    })
    .join();
}

pub const OPERATOR_KEY: &str = "test-operator-key";

/// The cargo target directory the components were built into (`cargo xtask plugins`).
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = std::path::PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

/// The bytes of a component built by `cargo xtask plugins`: an example plugin or a test guest
/// by crate name (`earn_base_rate`), or `python_earn_rule`.
pub fn component(name: &str) -> Vec<u8> {
    let plugins = target_dir().join("plugins");
    let path = if name == "python_earn_rule" {
        plugins.join("python").join("python_earn_rule.wasm")
    } else {
        plugins
            .join("wasm32-wasip2")
            .join("release")
            .join(format!("{name}.wasm"))
    };
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{} is missing ({error}): run `cargo xtask plugins` first",
            path.display()
        )
    })
}

/// The plugin runtime as tests run it: compiled components shared between test processes
/// through a disk cache, and room for the Python example (≈ 18 MB).
pub fn plugin_settings() -> PluginSettings {
    let mut settings = PluginSettings::default();
    settings.runtime.cache_dir = Some(target_dir().join("plugins").join("test-cache"));
    settings.runtime.component_bytes_max = 48 * 1024 * 1024;
    // The wall deadline is the operator's ceiling (1 s), not the production default (50 ms):
    // tests run in parallel on small machines, and a call that a busy scheduler paused for
    // 50 ms would fall back to the base rate and change the test's exact figures. The tests
    // of the deadline itself set theirs.
    settings.runtime.limits_default.deadline_ms = settings.runtime.limits_max.deadline_ms;
    settings
}

/// The real server on a loopback port with its own database.
pub struct TestServer {
    pub base_url: String,
    pub database_url: String,
    pub backend: Backend,
    pub clock: Clock,
    pub client: reqwest::Client,
    pub state: AppState,
    server: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with_plugins(backend, plugin_settings()).await
    }

    /// A server whose plugin runtime has these settings (e.g. a higher operator ceiling).
    pub async fn start_with_plugins(backend: Backend, plugins: PluginSettings) -> TestServer {
        let database_url = fresh_database(backend).await;
        TestServer::start_on_with_plugins(backend, database_url, plugins).await
    }

    pub async fn start_on(backend: Backend, database_url: String) -> TestServer {
        TestServer::start_on_with_plugins(backend, database_url, plugin_settings()).await
    }

    async fn start_on_with_plugins(
        backend: Backend,
        database_url: String,
        plugins: PluginSettings,
    ) -> TestServer {
        let database = Database::connect(&database_url).await.expect("connect");
        database.migrate().await.expect("migrate");
        let clock = Clock::default();
        let state = AppState::new(
            database,
            OPERATOR_KEY,
            clock.clone(),
            0,
            PluginHost::new(plugins).expect("the plugin runtime starts"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("bound address");
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("server runs");
        });
        TestServer {
            base_url: format!("http://{address}"),
            database_url,
            backend,
            clock,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
            state,
            server,
        }
    }

    /// Sends a request; returns status and parsed JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        Response::read(response).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.call(reqwest::Method::GET, path, Some(key), None, None)
            .await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.call(reqwest::Method::POST, path, Some(key), None, Some(body))
            .await
    }

    /// A value-moving POST with an Idempotency-Key.
    pub async fn post_idem(
        &self,
        path: &str,
        key: &str,
        idempotency_key: &str,
        body: &Value,
    ) -> Response {
        self.call(
            reqwest::Method::POST,
            path,
            Some(key),
            Some(idempotency_key),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.call(reqwest::Method::DELETE, path, Some(key), None, None)
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Response {
        self.call(reqwest::Method::PUT, path, Some(key), None, Some(body))
            .await
    }

    /// `POST /v1/plugins` with a manifest and component bytes (either part may be left out).
    pub async fn upload_plugin(
        &self,
        key: &str,
        manifest: Option<&Value>,
        component: Option<Vec<u8>>,
    ) -> Response {
        let mut form = reqwest::multipart::Form::new();
        if let Some(manifest) = manifest {
            form = form.text("manifest", manifest.to_string());
        }
        if let Some(component) = component {
            form = form.part(
                "component",
                reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"),
            );
        }
        let response = self
            .client
            .post(format!("{}/v1/plugins", self.base_url))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("the server answers");
        Response::read(response).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> Response {
        self.call(reqwest::Method::PATCH, path, Some(key), None, Some(body))
            .await
    }

    /// A new merchant (currency CNY unless given) with its admin key.
    pub async fn merchant(&self, name: &str, currency: &str) -> Merchant {
        let response = self
            .call(
                reqwest::Method::POST,
                "/v1/merchants",
                Some(OPERATOR_KEY),
                None,
                Some(&json!({"name": name, "currency": currency, "timezone": "Asia/Shanghai"})),
            )
            .await;
        assert_eq!(response.status, 201, "create merchant: {}", response.text);
        Merchant {
            id: response.json["id"].as_str().expect("id").to_string(),
            key: response.json["api_key"]
                .as_str()
                .expect("api_key")
                .to_string(),
        }
    }

    /// A store (code S1) of the merchant with this key; returns its id.
    pub async fn store(&self, key: &str) -> String {
        self.store_coded(key, "S1").await
    }

    /// A store with this code; returns its id.
    pub async fn store_coded(&self, key: &str, code: &str) -> String {
        self.post("/v1/stores", key, &json!({"code": code, "name": code}))
            .await
            .ok(201)["id"]
            .as_str()
            .expect("a store id")
            .to_string()
    }

    /// Runs `loyalty verify`'s checks against this server's database; panics on a violation.
    pub async fn verify(&self) {
        let report = loyalty_core::verify::verify(&self.state.database.pool)
            .await
            .expect("verify runs");
        let failures: Vec<String> = report
            .checks
            .iter()
            .filter(|check| check.violation_count > 0)
            .map(|check| format!("{}: {:?}", check.name, check.violations))
            .collect();
        assert!(
            failures.is_empty(),
            "ledger invariants violated: {failures:#?}"
        );
    }

    /// Runs the points lifecycle job now (as the operator would).
    pub async fn run_lifecycle(&self) -> Value {
        let response = self
            .call(
                reqwest::Method::POST,
                "/v1/operator/jobs/points-lifecycle",
                Some(OPERATOR_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(response.status, 200, "lifecycle: {}", response.text);
        response.json
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.abort();
        drop_database(&self.database_url);
    }
}

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl Response {
    /// Reads status, content type and body (parsed as JSON when it is JSON).
    pub async fn read(response: reqwest::Response) -> Response {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            content_type,
            text,
            json,
        }
    }

    /// Asserts a problem+json error with this status; returns the body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.text
        );
        for field in ["type", "title", "status", "detail"] {
            assert!(
                !self.json[field].is_null(),
                "problem lacks {field}: {}",
                self.text
            );
        }
        assert_eq!(self.json["status"], status);
        &self.json
    }

    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        &self.json
    }

    pub fn id(&self) -> String {
        self.json["id"].as_str().expect("an id").to_string()
    }
}
