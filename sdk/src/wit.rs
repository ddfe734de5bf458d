//! The wit-bindgen generated bindings, private to the SDK: plugin authors use the re-exports
//! and traits at the crate root, so a change of wit-bindgen's naming never reaches them.
//!
//! One module per world. The shared `types` and `host` interfaces are generated once, in
//! `shared`, and every world module points at them with `with:`, so there is exactly one
//! `Context` type (and one `Member`, …) whichever world a plugin implements.
//!
//! Every world uses `pub_export_macro`: its library-side custom section then describes only
//! the world's imports, and the exports are described by the section the export macro emits
//! in the plugin crate. A plugin that links the SDK therefore exports only its own world, not
//! the union of all four.

// Generated code: its items are documented as far as the WIT is, and it is reachable from
// outside only through `__private` (for the export macros), never as API.
#![allow(missing_docs)]

/// `types` and `host`, generated from a world that only imports `host` (which uses `types`).
pub mod shared {
    wit_bindgen::generate!({
        inline: "
            package loyalty:sdk-shared;
            world shared {
                import loyalty:plugin/host@0.1.0;
            }
        ",
        path: "../wit/since_v0.1.0",
        world: "loyalty:sdk-shared/shared",
        generate_all,
        generate_unused_types: true,
        additional_derives: [PartialEq, Eq],
        runtime_path: "::loyalty_sdk::__private::wit_bindgen::rt",
    });
}

/// The `earn-rule` world.
pub mod earn_rule {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "loyalty:plugin/earn-rule@0.1.0",
        with: {
            "loyalty:plugin/types@0.1.0": crate::wit::shared::loyalty::plugin::types,
            "loyalty:plugin/host@0.1.0": crate::wit::shared::loyalty::plugin::host,
        },
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_earn_rule_world",
        default_bindings_module: "::loyalty_sdk::__private::earn_rule",
        runtime_path: "::loyalty_sdk::__private::wit_bindgen::rt",
    });
}

/// The `tier-policy` world.
pub mod tier_policy {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "loyalty:plugin/tier-policy@0.1.0",
        with: {
            "loyalty:plugin/types@0.1.0": crate::wit::shared::loyalty::plugin::types,
            "loyalty:plugin/host@0.1.0": crate::wit::shared::loyalty::plugin::host,
        },
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_tier_policy_world",
        default_bindings_module: "::loyalty_sdk::__private::tier_policy",
        runtime_path: "::loyalty_sdk::__private::wit_bindgen::rt",
    });
}

/// The `recommender` world.
pub mod recommender {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "loyalty:plugin/recommender@0.1.0",
        with: {
            "loyalty:plugin/types@0.1.0": crate::wit::shared::loyalty::plugin::types,
            "loyalty:plugin/host@0.1.0": crate::wit::shared::loyalty::plugin::host,
        },
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_recommender_world",
        default_bindings_module: "::loyalty_sdk::__private::recommender",
        runtime_path: "::loyalty_sdk::__private::wit_bindgen::rt",
    });
}

/// The `campaign-trigger` world.
pub mod campaign_trigger {
    wit_bindgen::generate!({
        path: "../wit/since_v0.1.0",
        world: "loyalty:plugin/campaign-trigger@0.1.0",
        with: {
            "loyalty:plugin/types@0.1.0": crate::wit::shared::loyalty::plugin::types,
            "loyalty:plugin/host@0.1.0": crate::wit::shared::loyalty::plugin::host,
        },
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "export_campaign_trigger_world",
        default_bindings_module: "::loyalty_sdk::__private::campaign_trigger",
        runtime_path: "::loyalty_sdk::__private::wit_bindgen::rt",
    });
}
