//! Shared by the runtime's integration tests: where the test components are, one runtime per
//! test binary (so each component compiles once), and sample inputs.

#![allow(dead_code, reason = "each test binary uses part of these helpers")]

use std::path::PathBuf;
use std::sync::OnceLock;

use loyalty_runtime::{
    Context, Limits, Member, MemberStats, Plugin, Purchase, PurchaseLine, Runtime, RuntimeConfig,
};

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The cargo target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_dir().join(dir),
        None => workspace_dir().join("target"),
    }
}

/// The bytes of a test or example component, e.g. `component("hostile-loop")`. Panics with
/// how to build them if they are missing.
pub fn component(name: &str) -> Vec<u8> {
    let path = target_dir()
        .join("plugins/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "component {name} not found at {} ({e}): run `cargo xtask plugins` first",
            path.display()
        )
    })
}

/// The operator ceiling of the shared test runtime: high enough that tests can ask for a
/// huge fuel budget (to reach the deadline) or a long deadline (for the log flood).
pub const TEST_CEILING: Limits = Limits {
    fuel_per_call_max: u64::MAX,
    deadline_ms: 60_000,
    memory_bytes_max: 64 << 20,
    input_bytes_max: 4 << 20,
    output_bytes_max: 4 << 20,
    log_lines_max: 10_000,
    log_bytes_max: 1 << 20,
};

/// One runtime per test binary; its disk cache lives in the target directory so reruns skip
/// compiling.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(target_dir().join("loyalty-runtime-test-cache")),
            limits_max: TEST_CEILING,
            ..RuntimeConfig::default()
        })
        .expect("the test runtime starts")
    })
}

/// A component loaded into the shared runtime (compiled at most once per test binary).
pub fn plugin(name: &str) -> Plugin {
    runtime()
        .load(&component(name))
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// 2024-05-17T00:00:00Z, in microseconds.
pub const NOW: i64 = 1_715_904_000_000_000;

/// A context in CNY with this configuration text.
pub fn ctx(config: &str) -> Context {
    Context {
        merchant_id: "mer_test".into(),
        store_id: Some("sto_test".into()),
        now: NOW,
        timezone: "UTC".into(),
        utc_offset_seconds: 0,
        config: config.into(),
        currency: "CNY".into(),
        currency_exponent: 2,
    }
}

/// A member without a tier or birthday.
pub fn member() -> Member {
    Member {
        id: "mem_test".into(),
        tier: None,
        joined_at: NOW - 86_400_000_000 * 365,
        birthday: None,
        attributes: "{}".into(),
        stats: MemberStats {
            lifetime_spend: 0,
            spend_12_months: 0,
            orders_count: 0,
            last_purchase_at: None,
            points_available: 0,
        },
    }
}

/// A purchase line.
pub fn line(sku: &str, category: Option<&str>, quantity: u32, unit_price: i64) -> PurchaseLine {
    PurchaseLine {
        sku: sku.into(),
        name: None,
        category: category.map(Into::into),
        quantity,
        unit_price,
        total: i64::from(quantity) * unit_price,
    }
}

/// A purchase of these lines (total = their sum).
pub fn purchase(lines: Vec<PurchaseLine>) -> Purchase {
    Purchase {
        id: "pur_test".into(),
        store_id: "sto_test".into(),
        channel: "pos".into(),
        occurred_at: NOW,
        currency: "CNY".into(),
        total: lines.iter().map(|l| l.total).sum(),
        lines,
    }
}

/// Default limits.
pub fn limits() -> Limits {
    Limits::default()
}

/// A well-behaved call (echo-earn) succeeds: the runtime still works.
pub fn assert_runtime_still_works() {
    let report = plugin("echo-earn").earn(
        &limits(),
        &ctx("{}"),
        &member(),
        &purchase(vec![line("a", None, 1, 100)]),
    );
    let awards = report
        .result
        .expect("echo-earn succeeds after a hostile call");
    assert_eq!(awards.len(), 1);
}
