//! Hostile guests are contained, each with the right failure kind, and the runtime keeps
//! working after each.

mod common;

use common::*;
use loyalty_runtime::{CallFailure, Limits, TierDecision, World};

fn simple_purchase() -> loyalty_runtime::Purchase {
    purchase(vec![line("latte", Some("coffee"), 2, 1_500)])
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let plugin = plugin("hostile-loop");
    for _ in 0..2 {
        let report = plugin.earn(&limits(), &ctx("{}"), &member(), &simple_purchase());
        assert_eq!(report.result, Err(CallFailure::Fuel));
        assert_eq!(report.fuel_consumed, limits().fuel_per_call_max);
        assert!(
            report.elapsed_us < limits().deadline_ms * 1_000,
            "fuel ran out before the deadline ({} µs)",
            report.elapsed_us
        );
    }
    assert_runtime_still_works();
}

#[test]
fn an_endless_loop_with_a_huge_fuel_budget_hits_the_deadline() {
    let plugin = plugin("hostile-loop");
    let limits = Limits {
        fuel_per_call_max: u64::MAX / 2,
        deadline_ms: 50,
        ..limits()
    };
    let report = plugin.earn(&limits, &ctx("{}"), &member(), &simple_purchase());
    assert_eq!(report.result, Err(CallFailure::Deadline));
    eprintln!("deadline 50 ms; interrupted after {} µs", report.elapsed_us);
    assert!(
        report.elapsed_us >= 50_000,
        "not before the deadline: {} µs",
        report.elapsed_us
    );
    // Generous: this machine may be busy; the tick is 1 ms.
    assert!(
        report.elapsed_us < 500_000,
        "soon after the deadline: {} µs",
        report.elapsed_us
    );
    assert!(report.fuel_consumed > 0);
    assert_runtime_still_works();
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let plugin = plugin("hostile-memory");
    // Plenty of fuel and time, so memory is the limit that stops it.
    for memory_bytes_max in [16 << 20, 4 << 20] {
        let limits = Limits {
            fuel_per_call_max: 1_000_000_000,
            deadline_ms: 5_000,
            memory_bytes_max,
            ..limits()
        };
        let report = plugin.earn(&limits, &ctx("{}"), &member(), &simple_purchase());
        assert_eq!(
            report.result,
            Err(CallFailure::Memory),
            "with {memory_bytes_max} bytes"
        );
    }
    assert_runtime_still_works();
}

#[test]
fn a_panic_is_a_trap() {
    let plugin = plugin("hostile-trap");
    let report = plugin.earn(&limits(), &ctx("{}"), &member(), &simple_purchase());
    match &report.result {
        Err(CallFailure::Trap(message)) => {
            assert!(message.contains("unreachable"), "{message}");
            // The panic message, from the guest's stderr.
            assert!(
                message.contains("hostile-trap: deliberate panic"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        report.result.as_ref().map_err(CallFailure::kind),
        Err("trap")
    );
    assert_runtime_still_works();
}

#[test]
fn an_oversized_output_is_refused_and_fits_a_bigger_cap() {
    let plugin = plugin("hostile-output");
    // Formatting 5,000 reasons takes more than the default fuel: give it enough.
    let limits = Limits {
        fuel_per_call_max: 1_000_000_000,
        deadline_ms: 5_000,
        ..limits()
    };
    let report = plugin.earn(&limits, &ctx("{}"), &member(), &simple_purchase());
    match report.result {
        Err(CallFailure::Output { bytes, max }) => {
            assert_eq!(max, limits.output_bytes_max);
            // 5,000 awards: 8 (points) + 8 + 64 (reason) + 1 (no expiry) each, plus the list.
            assert_eq!(bytes, 8 + 5_000 * (8 + 8 + 64 + 1));
        }
        other => panic!("expected an output failure, got {other:?}"),
    }
    let bigger = Limits {
        output_bytes_max: 1 << 20,
        ..limits
    };
    let report = plugin.earn(&bigger, &ctx("{}"), &member(), &simple_purchase());
    assert_eq!(report.result.expect("fits 1 MiB").len(), 5_000);
    assert_runtime_still_works();
}

#[test]
fn a_log_flood_is_capped_and_counted_and_the_call_succeeds() {
    let plugin = plugin("hostile-log");
    // A million host calls: give it the time and fuel; the log caps are the defaults.
    let limits = Limits {
        fuel_per_call_max: 10_000_000_000,
        deadline_ms: 60_000,
        ..limits()
    };
    let report = plugin.earn(&limits, &ctx("{}"), &member(), &simple_purchase());
    let awards = report.result.expect("the flood survives");
    assert_eq!(awards.len(), 1);
    assert_eq!(awards[0].points, 1);
    // 16 KiB of 1 KiB lines.
    let kept = limits.log_bytes_max / 1024;
    assert_eq!(report.logs.len(), kept);
    assert!(report.logs.iter().all(|l| l.message.len() == 1024));
    assert_eq!(report.logs_dropped as usize, 1_000_000 - kept);
    eprintln!("log flood: {} µs", report.elapsed_us);

    // The line cap applies too.
    let few_lines = Limits {
        log_lines_max: 3,
        ..limits
    };
    let report = plugin.earn(&few_lines, &ctx("{}"), &member(), &simple_purchase());
    assert!(report.result.is_ok());
    assert_eq!(report.logs.len(), 3);
    assert_eq!(report.logs_dropped, 1_000_000 - 3);
    assert_runtime_still_works();
}

#[test]
fn a_tier_policy_is_refused_as_an_earn_rule_and_works_as_a_tier_policy() {
    let plugin = plugin("tier-stay");
    assert_eq!(plugin.world(), World::TierPolicy);
    assert_eq!(plugin.wit_version(), "0.1.0");
    let report = plugin.earn(&limits(), &ctx("{}"), &member(), &simple_purchase());
    assert_eq!(report.result, Err(CallFailure::WrongWorld));
    assert_eq!(report.fuel_consumed, 0, "nothing ran");
    let report = plugin.tier(&limits(), &ctx("{}"), &member(), &[]);
    assert_eq!(report.result, Ok(TierDecision::Stay("always stay".into())));
    let echo = common::plugin("echo-earn");
    let report = echo.tier(&limits(), &ctx("{}"), &member(), &[]);
    assert_eq!(report.result, Err(CallFailure::WrongWorld));
    assert_runtime_still_works();
}

#[test]
fn an_oversized_input_is_refused_before_the_call() {
    let plugin = plugin("echo-earn");
    let lines = (0..5_000)
        .map(|i| line(&format!("sku-{i:020}"), Some("category"), 1, 100))
        .collect();
    let report = plugin.earn(&limits(), &ctx("{}"), &member(), &purchase(lines));
    match report.result {
        Err(CallFailure::Input { bytes, max }) => {
            assert_eq!(max, limits().input_bytes_max);
            assert!(bytes > max);
        }
        other => panic!("expected an input failure, got {other:?}"),
    }
    assert_eq!(report.fuel_consumed, 0, "nothing ran");
    assert_runtime_still_works();
}

#[test]
fn limits_above_the_ceiling_are_clamped() {
    // The ceiling's fuel is u64::MAX here, so clamp a runtime with a low ceiling instead.
    let runtime = loyalty_runtime::Runtime::new(loyalty_runtime::RuntimeConfig {
        limits_max: Limits {
            fuel_per_call_max: 1_000_000,
            ..Limits::DEFAULT
        },
        cache_dir: Some(target_dir().join("loyalty-runtime-test-cache")),
        ..Default::default()
    })
    .expect("runtime");
    let plugin = runtime.load(&component("hostile-loop")).expect("loads");
    let asked = Limits {
        fuel_per_call_max: u64::MAX,
        deadline_ms: 10_000,
        ..limits()
    };
    let report = plugin.earn(&asked, &ctx("{}"), &member(), &simple_purchase());
    assert_eq!(report.result, Err(CallFailure::Fuel));
    assert_eq!(report.fuel_consumed, 1_000_000);
}

#[test]
fn concurrent_calls_from_many_threads_all_succeed() {
    let plugin = plugin("echo-earn");
    // Other tests run hostile guests at the same time on few cores: a wall-clock deadline is
    // not what this test is about.
    let limits = || Limits {
        deadline_ms: 10_000,
        ..common::limits()
    };
    let expected = plugin
        .earn(&limits(), &ctx("{}"), &member(), &simple_purchase())
        .result
        .expect("ok");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    let report = plugin.earn(&limits(), &ctx("{}"), &member(), &simple_purchase());
                    assert_eq!(report.result.as_ref(), Ok(&expected), "{report:?}");
                }
            });
        }
    });
}
