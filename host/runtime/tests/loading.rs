//! Loading: what is refused (and why), and the compiled cache on disk.

mod common;

use std::time::Instant;

use common::*;
use loyalty_runtime::{LoadError, LoadedFrom, Runtime, RuntimeConfig, World};

#[test]
fn a_core_module_is_not_a_component() {
    let core = wat::parse_str("(module (func (export \"f\")))").expect("valid wat");
    assert_eq!(runtime().load(&core).err(), Some(LoadError::NotAComponent));
}

#[test]
fn random_bytes_are_not_a_component() {
    // A fixed xorshift sequence, so the test is the same every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    assert_eq!(runtime().load(&bytes).err(), Some(LoadError::NotAComponent));
    assert_eq!(runtime().load(&[]).err(), Some(LoadError::NotAComponent));
}

#[test]
fn garbage_after_a_component_header_fails_to_compile() {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    match runtime().load(&bytes) {
        Err(LoadError::Compile(message)) => assert!(!message.is_empty()),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn oversized_components_are_refused_unless_allowed() {
    let bytes = component("echo-earn");
    let small = Runtime::new(RuntimeConfig {
        component_bytes_max: 1024,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    assert_eq!(
        small.load(&bytes).err(),
        Some(LoadError::TooLarge {
            bytes: bytes.len(),
            max: 1024
        })
    );
    assert_eq!(
        runtime().load_with_size_max(&bytes, 10).err(),
        Some(LoadError::TooLarge {
            bytes: bytes.len(),
            max: 10
        })
    );
    let plugin = runtime()
        .load_with_size_max(&bytes, bytes.len())
        .expect("exactly at the limit loads");
    assert_eq!(plugin.world(), World::EarnRule);
    assert!(LoadError::TooLarge { bytes: 3, max: 2 }
        .to_string()
        .contains("more than the 2 bytes allowed"));
}

#[test]
fn a_component_without_a_plugin_world_is_refused() {
    let empty = wat::parse_str("(component)").expect("valid wat");
    match runtime().load(&empty) {
        Err(LoadError::UnsupportedWorld(why)) => {
            assert!(why.contains("exports no loyalty:plugin interface"), "{why}")
        }
        other => panic!("expected an unsupported world, got {other:?}"),
    }
}

#[test]
fn a_component_importing_what_the_host_does_not_provide_is_refused() {
    let importer = wat::parse_str(
        r#"(component
            (import "evil:net/socket@1.0.0" (instance))
            (instance $i)
            (export "loyalty:plugin/earn@0.1.0" (instance $i))
        )"#,
    )
    .expect("valid wat");
    match runtime().load(&importer) {
        Err(LoadError::UnsupportedWorld(why)) => {
            assert!(why.contains("evil:net/socket@1.0.0"), "{why}");
            assert!(why.contains("does not provide"), "{why}");
        }
        other => panic!("expected an unsupported world, got {other:?}"),
    }
}

#[test]
fn a_plugin_interface_at_an_unsupported_version_is_refused() {
    let future = wat::parse_str(
        r#"(component
            (instance $i)
            (export "loyalty:plugin/earn@9.0.0" (instance $i))
        )"#,
    )
    .expect("valid wat");
    match runtime().load(&future) {
        Err(LoadError::UnsupportedWorld(why)) => {
            assert!(why.contains("loyalty:plugin/earn@9.0.0"), "{why}");
            assert!(why.contains("0.1.0"), "{why}");
        }
        other => panic!("expected an unsupported world, got {other:?}"),
    }
}

#[test]
fn an_export_with_the_wrong_signature_is_refused() {
    // Exports the earn interface at the right version, but without `evaluate`.
    let hollow = wat::parse_str(
        r#"(component
            (instance $i)
            (export "loyalty:plugin/earn@0.1.0" (instance $i))
        )"#,
    )
    .expect("valid wat");
    match runtime().load(&hollow) {
        Err(LoadError::UnsupportedWorld(why)) => {
            assert!(why.contains("does not match loyalty:plugin@0.1.0"), "{why}")
        }
        other => panic!("expected an unsupported world, got {other:?}"),
    }
}

#[test]
fn each_world_is_recognised() {
    for (name, world) in [
        ("earn-base-rate", World::EarnRule),
        ("tier-spend-threshold", World::TierPolicy),
        ("recommend-co-purchase", World::Recommender),
        ("campaign-birthday", World::CampaignTrigger),
    ] {
        let plugin = plugin(name);
        assert_eq!(plugin.world(), world, "{name}");
        assert_eq!(plugin.wit_version(), "0.1.0");
        assert_eq!(plugin.sha256().len(), 64);
    }
}

#[test]
fn loading_the_same_bytes_twice_returns_the_loaded_plugin() {
    let bytes = component("echo-earn");
    let first = runtime().load(&bytes).expect("loads");
    let started = Instant::now();
    let second = runtime().load(&bytes).expect("loads");
    assert_eq!(first.sha256(), second.sha256());
    assert_eq!(
        first.load_elapsed_us(),
        second.load_elapsed_us(),
        "the same plugin"
    );
    eprintln!("second load from memory: {:?}", started.elapsed());
}

#[test]
fn the_disk_cache_is_used_by_a_second_runtime_and_a_damaged_file_is_recompiled() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = component("earn-base-rate");
    let call = |plugin: &loyalty_runtime::Plugin| {
        plugin
            .earn(
                &limits(),
                &ctx(""),
                &member(),
                &purchase(vec![line("x", None, 1, 1_999)]),
            )
            .result
            .expect("earns")
    };

    let compiled = Runtime::new(config())
        .expect("runtime")
        .load(&bytes)
        .expect("loads");
    assert_eq!(compiled.loaded_from(), LoadedFrom::Compiled);
    let runtime = Runtime::new(config()).expect("runtime");
    let file = runtime.cache_path(compiled.sha256()).expect("a cache dir");
    assert!(file.exists(), "{} written", file.display());

    let cached = runtime.load(&bytes).expect("loads");
    assert_eq!(cached.loaded_from(), LoadedFrom::DiskCache);
    eprintln!(
        "earn-base-rate: compiled in {} µs, loaded from the disk cache in {} µs",
        compiled.load_elapsed_us(),
        cached.load_elapsed_us()
    );
    assert!(cached.load_elapsed_us() < compiled.load_elapsed_us());
    assert_eq!(call(&cached), call(&compiled));

    // Flip a byte in the middle: the digest no longer matches, so it is recompiled (and the
    // file rewritten).
    let mut damaged = std::fs::read(&file).expect("cache file");
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&file, &damaged).expect("write");
    let recompiled = Runtime::new(config())
        .expect("runtime")
        .load(&bytes)
        .expect("loads despite the damaged cache");
    assert_eq!(recompiled.loaded_from(), LoadedFrom::Compiled);
    assert_eq!(call(&recompiled), call(&compiled));
    let again = Runtime::new(config())
        .expect("runtime")
        .load(&bytes)
        .expect("loads");
    assert_eq!(
        again.loaded_from(),
        LoadedFrom::DiskCache,
        "the file was rewritten"
    );

    // A truncated file, and one that is not a cache file at all.
    for broken in [&damaged[..100], b"not a cache file".as_slice()] {
        std::fs::write(&file, broken).expect("write");
        let plugin = Runtime::new(config())
            .expect("runtime")
            .load(&bytes)
            .expect("loads");
        assert_eq!(plugin.loaded_from(), LoadedFrom::Compiled);
        assert_eq!(call(&plugin), call(&compiled));
    }
}

#[test]
fn runtime_and_plugin_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Runtime>();
    send_sync::<loyalty_runtime::Plugin>();
}
