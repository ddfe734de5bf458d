//! The demo merchant `cargo xtask run` seeds: the fixture slice through the example plugins,
//! with tiers, coupons, campaigns and recommendations to show; a second seed adds nothing.

use loyalty_tests::{backend_tests, json, target_dir, Backend, TestServer};

async fn the_demo_shows_the_programme(backend: Backend) {
    let server = TestServer::start(backend).await;
    let slice = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("online_retail_slice.csv");
    let components = target_dir()
        .join("plugins")
        .join("wasm32-wasip2")
        .join("release");
    let demo = loyalty_host::demo::seed(&server.state, &slice, &components)
        .await
        .expect("the demo seeds");
    assert!(demo.created);
    let key = &demo.api_key;
    let member = server
        .get(&format!("/v1/members/{}", demo.member_id), key)
        .await
        .ok(200)
        .clone();
    assert!(member["tier"].is_string(), "{member}");
    assert!(member["stats"]["orders_count"].as_i64().expect("orders") > 1);
    let balances = server
        .get(&format!("/v1/members/{}/balances", demo.member_id), key)
        .await
        .ok(200)
        .clone();
    assert!(balances["points"]["available"].as_i64().expect("points") > 0);
    let coupons = server
        .get(&format!("/v1/members/{}/coupons", demo.member_id), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(coupons[0]["code"], "WELCOME");
    let recommended = server
        .get(
            &format!(
                "/v1/members/{}/recommendations?store_id={}&limit=3",
                demo.member_id, demo.store_id
            ),
            key,
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(recommended["source"], "plugin:recommend-co-purchase@1.0.0");
    assert!(!recommended["items"].as_array().expect("items").is_empty());
    let tiers = server.get("/v1/tiers", key).await.ok(200)["tiers"].clone();
    assert_eq!(tiers.as_array().map(Vec::len), Some(3));
    let campaigns = server.get("/v1/campaigns", key).await.ok(200)["items"].clone();
    assert_eq!(campaigns.as_array().map(Vec::len), Some(2));
    let ledger = server
        .get(
            &format!("/v1/members/{}/ledger?limit=50", demo.member_id),
            key,
        )
        .await
        .ok(200)["items"]
        .clone();
    let purchase = ledger
        .as_array()
        .expect("items")
        .iter()
        .find(|entry| entry["kind"] == "purchase")
        .expect("a purchase");
    assert!(
        purchase["provenance"]["plugins"][0].get("input").is_none(),
        "lists leave inputs out"
    );
    let replay = server
        .post(
            &format!(
                "/v1/transactions/{}/replay",
                purchase["id"].as_str().expect("id")
            ),
            key,
            &json!({}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(replay["identical"], true, "{replay}");

    // Seeding again finds the merchant, imports nothing, and rotates the key.
    let again = loyalty_host::demo::seed(&server.state, &slice, &components)
        .await
        .expect("the demo is found");
    assert!(!again.created);
    assert_eq!(again.merchant_id, demo.merchant_id);
    server.get("/v1/merchant", &demo.api_key).await.problem(401);
    server.get("/v1/merchant", &again.api_key).await.ok(200);
    server.verify().await;
}

backend_tests!(the_demo_shows_the_programme);
