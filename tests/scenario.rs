//! The programme a merchant runs, end to end on both backends: join → purchase (plugin points)
//! → tier up → birthday tick → coupon issued → purchase with the coupon → partial refund →
//! expiry; campaign budgets and caps; gifts redeemed concurrently never oversell.

use std::time::Duration;

use loyalty_host::{campaigns, dispatch, scheduler};
use loyalty_tests::{backend_tests, component, json, Backend, Merchant, TestServer};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);
const ZONE: &str = "Asia/Shanghai";

fn idem() -> String {
    format!("k-{}", uuid::Uuid::now_v7().simple())
}

async fn enable(
    server: &TestServer,
    key: &str,
    store: &str,
    name: &str,
    world: &str,
    config: Value,
) -> Value {
    let plugin = server
        .upload_plugin(
            key,
            Some(&json!({"name": name.replace('_', "-"), "version": "0.1.0", "world": world})),
            Some(component(name)),
        )
        .await
        .ok(201)["id"]
        .clone();
    if world != "campaign-trigger" {
        server
            .put(
                &format!("/v1/stores/{store}/plugins/{world}"),
                key,
                &json!({"plugins": [{"plugin_id": plugin, "config": config}]}),
            )
            .await
            .ok(200);
    }
    plugin
}

/// A member whose birthday is `days` after today in the merchant's zone.
async fn member_with_birthday(server: &TestServer, key: &str, phone: &str, days: i64) -> String {
    let today = scheduler::local_date(ZONE, server.clock.now()).expect("a date");
    let birthday = today
        .checked_add(jiff::Span::new().days(days))
        .expect("a date");
    let text = format!("1990-{:02}-{:02}", birthday.month(), birthday.day());
    // 29 February has no 1990: such a test day is celebrated on 28 February.
    let text = text.replace("1990-02-29", "1990-02-28");
    server
        .post(
            "/v1/members",
            key,
            &json!({"phone": phone, "birthday": text}),
        )
        .await
        .ok(201)["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn campaign(
    server: &TestServer,
    key: &str,
    plugin: &Value,
    config: Value,
    budget: Value,
    cap: Option<i64>,
) -> String {
    let now = server.clock.now() / 1_000_000;
    let at = |seconds: i64| {
        time::OffsetDateTime::from_unix_timestamp(seconds)
            .expect("a time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    };
    let mut body = json!({
        "name": "Birthday", "plugin_id": plugin, "config": config,
        "starts_at": at(now - 86_400), "ends_at": at(now + 400 * 86_400), "budget": budget,
    });
    if let Some(cap) = cap {
        body["per_member_cap"] = json!(cap);
    }
    server.post("/v1/campaigns", key, &body).await.ok(201)["id"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn run_today(server: &TestServer, merchant: &Merchant) -> scheduler::TickSummary {
    let today = scheduler::local_date(ZONE, server.clock.now()).expect("a date");
    let run = scheduler::run_day(&server.state, &merchant.id, today)
        .await
        .expect("the tick runs");
    assert_eq!(run.outcome, "ran");
    run.summary.expect("a summary")
}

async fn balance(server: &TestServer, key: &str, member: &str) -> i64 {
    server
        .get(&format!("/v1/members/{member}/balances"), key)
        .await
        .ok(200)["points"]["available"]
        .as_i64()
        .expect("points")
}

async fn the_programme_end_to_end(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Tea House", "CNY").await;
    let key = &merchant.key;
    server
        .patch(
            "/v1/merchant",
            key,
            &json!({"settings": {"points_expiry_days": 30}}),
        )
        .await
        .ok(200);
    server
        .put(
            "/v1/tiers",
            key,
            &json!({"tiers": [{"code": "silver", "name": "Silver"}, {"code": "gold", "name": "Gold", "earn_multiplier": "2"}]}),
        )
        .await
        .ok(200);
    let store = server.store(key).await;
    enable(&server, key, &store, "tier_spend_threshold", "tier-policy", json!({"tiers": {
        "silver": {"upgrade_at": 0, "keep_at": 0}, "gold": {"upgrade_at": 50_000, "keep_at": 30_000}}})).await;
    enable(
        &server,
        key,
        &store,
        "earn_base_rate",
        "earn-rule",
        json!({}),
    )
    .await;
    let birthday = enable(
        &server,
        key,
        &store,
        "campaign_birthday",
        "campaign-trigger",
        json!({}),
    )
    .await;
    // A trigger runs as a campaign, never as a store's plugin set.
    server
        .put(
            &format!("/v1/stores/{store}/plugins/campaign-trigger"),
            key,
            &json!({"plugins": [{"plugin_id": birthday}]}),
        )
        .await
        .problem(422);
    let template = server
        .post(
            "/v1/coupon-templates",
            key,
            &json!({"code": "BDAY", "name": "Birthday 20 off", "kind": "amount_off", "value": "20.00",
                "min_spend": "50.00", "valid_days": 30}),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(template["value"], "20.00");
    let campaign_id = campaign(
        &server,
        key,
        &birthday,
        json!({"points": 100, "coupon_template": "BDAY", "message_template": "bday", "message_channel": "sms"}),
        json!({"points": 1000, "coupons": 10}),
        Some(3),
    )
    .await;

    // Join and buy: plugin points at silver, then gold.
    let member = member_with_birthday(&server, key, "13800138000", 2).await;
    let purchase = |amount: &str, coupons: Value, paid: &str| {
        let body = json!({"member_id": member, "store_id": store, "coupons": coupons,
            "items": [{"sku": "tea-set", "category": "tea", "quantity": 1, "unit_price": amount}],
            "payments": [{"method": "card", "amount": paid}]});
        let server = &server;
        async move { server.post_idem("/v1/purchases", key, &idem(), &body).await }
    };
    let first = purchase("600.00", json!([]), "600.00").await;
    assert_eq!(first.ok(201)["points_awarded"], 600);
    let tier = server
        .get(&format!("/v1/members/{member}"), key)
        .await
        .ok(200)["tier"]
        .clone();
    assert_eq!(tier, "gold");
    // The outbox reaches the campaign, which acts only on ticks.
    dispatch::dispatch_events(&server.state)
        .await
        .expect("dispatches");

    // Two days later: the birthday tick awards points, issues the coupon, asks for a message.
    server.clock.advance(2 * DAY);
    let summary = run_today(&server, &merchant).await;
    assert_eq!(summary.campaign_calls, 1);
    assert_eq!(summary.campaign_actions_applied, 3);
    assert_eq!(balance(&server, key, &member).await, 700);
    let coupons = server
        .get(&format!("/v1/members/{member}/coupons"), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(coupons.as_array().map(Vec::len), Some(1));
    assert_eq!(coupons[0]["state"], "issued");
    assert_eq!(coupons[0]["code"], "BDAY");
    assert_eq!(coupons[0]["campaign_id"], campaign_id.as_str());
    let coupon = coupons[0]["id"].as_str().expect("id").to_string();
    let messages = server
        .get("/v1/events?type=message.requested", key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(1));
    assert_eq!(messages[0]["data"]["template"], "bday");
    assert_eq!(messages[0]["data"]["variables"]["points"], "100");
    // The same cause again applies nothing (the day itself never runs twice either).
    let running = campaigns::running_campaigns(&server.state, &merchant.id, server.clock.now())
        .await
        .expect("campaigns");
    let merchant_record =
        loyalty_core::merchants::get_merchant(&server.state.database.pool, &merchant.id)
            .await
            .expect("merchant");
    let today = scheduler::local_date(ZONE, server.clock.now()).expect("a date");
    let again = campaigns::run(
        &server.state,
        &merchant_record,
        &running,
        &member,
        None,
        &loyalty_runtime::Event::DailyTick,
        &format!("tick:{today}"),
        server.clock.now(),
    )
    .await
    .expect("runs");
    assert_eq!((again.calls, again.applied), (1, 0));
    assert_eq!(balance(&server, key, &member).await, 700);

    // Pay with the coupon: 100.00 less 20.00. Payments must match; the coupon works once.
    purchase("100.00", json!([coupon]), "100.00")
        .await
        .problem(422);
    purchase("40.00", json!([coupon]), "20.00")
        .await
        .problem(422); // below min_spend
    let with_coupon = purchase("100.00", json!([coupon]), "80.00").await;
    let receipt = with_coupon.ok(201).clone();
    assert_eq!(receipt["amount_due"], "80.00");
    assert_eq!(receipt["coupons"][0]["discount"], "20.00");
    assert_eq!(
        receipt["points_awarded"], 200,
        "gold doubles the plugin's 100"
    );
    let reused = purchase("100.00", json!([coupon]), "80.00").await;
    assert_eq!(reused.problem(422)["errors"][0]["message"], "already used");
    let coupon_state = server
        .get(&format!("/v1/members/{member}/coupons"), key)
        .await
        .ok(200)["items"][0]
        .clone();
    assert_eq!(coupon_state["state"], "redeemed");
    assert_eq!(coupon_state["discount"], "20.00");

    // A partial refund: half the price back, the coupon's share of it is nobody's.
    let refund = server
        .post_idem(
            &format!(
                "/v1/purchases/{}/refunds",
                receipt["id"].as_str().expect("id")
            ),
            key,
            &idem(),
            &json!({"amount": "50.00"}),
        )
        .await;
    let refund = refund.ok(201).clone();
    assert_eq!(refund["returned"]["card"], "40.00");
    assert_eq!(refund["returned"]["coupon_share"], "10.00");
    assert_eq!(refund["points_reversed"], 100);
    dispatch::dispatch_events(&server.state)
        .await
        .expect("dispatches");
    let stats = server
        .get(&format!("/v1/campaigns/{campaign_id}/stats"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(stats["members_reached"], 1);
    assert_eq!(stats["points_granted"], 100);
    assert_eq!(stats["coupons_issued"], 1);
    assert_eq!(stats["coupons_redeemed"], 1);
    assert_eq!(stats["coupon_revenue"], "100.00");
    assert_eq!(stats["actions_dropped"], 0);

    // An admin's coupon, used and fully refunded: it comes back.
    let template_id = template["id"].as_str().expect("id");
    server
        .post(
            &format!("/v1/members/{member}/coupons"),
            key,
            &json!({"template_id": "cpt_missing"}),
        )
        .await
        .problem(422);
    let given = server
        .post(
            &format!("/v1/members/{member}/coupons"),
            key,
            &json!({"template_id": template_id}),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(given["source"], "admin");
    let given_id = given["id"].as_str().expect("id").to_string();
    let used = purchase("60.00", json!([given_id]), "40.00")
        .await
        .ok(201)
        .clone();
    server
        .post_idem(
            &format!("/v1/purchases/{}/refunds", used["id"].as_str().expect("id")),
            key,
            &idem(),
            &json!({}),
        )
        .await
        .ok(201);
    let restored = server
        .get(&format!("/v1/members/{member}/coupons?limit=1"), key)
        .await
        .ok(200)["items"][0]
        .clone();
    assert_eq!(restored["id"], given_id.as_str());
    assert_eq!(restored["state"], "issued");
    // Another merchant's key cannot issue or read them.
    let other = server.merchant("Other", "CNY").await;
    server
        .get(&format!("/v1/members/{member}/coupons"), &other.key)
        .await
        .problem(404);

    // A month on, everything not spent has expired.
    server.clock.advance(31 * DAY);
    let summary = run_today(&server, &merchant).await;
    assert!(summary.points_expired > 0);
    assert_eq!(balance(&server, key, &member).await, 0);
    let expired = server
        .get(&format!("/v1/members/{member}/coupons?limit=1"), key)
        .await
        .ok(200)["items"][0]
        .clone();
    assert_eq!(expired["state"], "expired");
    server.verify().await;
}

async fn campaigns_keep_to_budget_and_caps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Salon", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    let birthday = enable(
        &server,
        key,
        &store,
        "campaign_birthday",
        "campaign-trigger",
        json!({}),
    )
    .await;
    server
        .post(
            "/v1/coupon-templates",
            key,
            &json!({"code": "BDAY", "name": "Ten percent", "kind": "percent_off", "value": "10", "valid_days": 7}),
        )
        .await
        .ok(201);
    // Bad campaigns write nothing.
    let bad = server
        .post(
            "/v1/campaigns",
            key,
            &json!({"name": "x", "plugin_id": birthday, "config": {"points": -1},
                "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z",
                "budget": {"points": -5}, "per_member_cap": 0, "store_ids": ["sto_missing"]}),
        )
        .await;
    let fields: Vec<String> = bad.problem(422)["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field").to_string())
        .collect();
    for field in ["ends_at", "budget.points", "per_member_cap", "store_ids[0]"] {
        assert!(
            fields.iter().any(|seen| seen == field),
            "{field} in {fields:?}"
        );
    }
    let campaign_id = campaign(
        &server,
        key,
        &birthday,
        json!({"points": 100, "coupon_template": "BDAY"}),
        json!({"points": 150}),
        Some(1),
    )
    .await;
    let first = member_with_birthday(&server, key, "13800000001", 0).await;
    let second = member_with_birthday(&server, key, "13800000002", 0).await;
    let summary = run_today(&server, &merchant).await;
    // First member: 100 points (cap used), coupon dropped by the cap. Second: the points
    // exceed the budget (dropped, cap given back), the coupon is issued.
    assert_eq!(summary.campaign_actions_applied, 2);
    assert_eq!(summary.campaign_actions_dropped, 2);
    assert_eq!(balance(&server, key, &first).await, 100);
    assert_eq!(balance(&server, key, &second).await, 0);
    let coupons = |member: String| {
        let server = &server;
        async move {
            server
                .get(&format!("/v1/members/{member}/coupons"), key)
                .await
                .ok(200)["items"]
                .as_array()
                .map(Vec::len)
        }
    };
    assert_eq!(coupons(first.clone()).await, Some(0));
    assert_eq!(coupons(second.clone()).await, Some(1));
    let stats = server
        .get(&format!("/v1/campaigns/{campaign_id}/stats"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(stats["members_reached"], 2);
    assert_eq!(stats["points_granted"], 100);
    assert_eq!(stats["coupons_issued"], 1);
    assert_eq!(stats["actions_applied"], 2);
    assert_eq!(stats["actions_dropped"], 2);
    // Foreign merchants see nothing.
    let other = server.merchant("Other", "CNY").await;
    server
        .get(&format!("/v1/campaigns/{campaign_id}/stats"), &other.key)
        .await
        .problem(404);
    server.verify().await;
}

async fn gifts_never_oversell(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Shop", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    server
        .post(
            "/v1/gifts",
            key,
            &json!({"name": "", "points_cost": 0, "stock": -1}),
        )
        .await
        .problem(422);
    let gift = server
        .post(
            "/v1/gifts",
            key,
            &json!({"name": "Tea mug", "points_cost": 100, "stock": 3}),
        )
        .await
        .ok(201)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut members = Vec::new();
    for index in 0..6 {
        let member = server
            .post(
                "/v1/members",
                key,
                &json!({"phone": format!("1390000000{index}")}),
            )
            .await
            .id();
        server
            .post_idem(
                &format!("/v1/members/{member}/points/adjustments"),
                key,
                &idem(),
                &json!({"points": 150, "reason": "welcome"}),
            )
            .await
            .ok(201);
        members.push(member);
    }
    let redemptions = futures::future::join_all(members.iter().map(|member| {
        let body = json!({"gift_id": gift, "quantity": 1, "store_id": store});
        let path = format!("/v1/members/{member}/gift-redemptions");
        let server = &server;
        async move { server.post_idem(&path, key, &idem(), &body).await }
    }))
    .await;
    let won = redemptions
        .iter()
        .filter(|response| response.status == 201)
        .count();
    let refused = redemptions
        .iter()
        .filter(|response| response.status == 422)
        .count();
    assert_eq!((won, refused), (3, 3), "{redemptions:?}");
    let stock = server.get(&format!("/v1/gifts/{gift}"), key).await.ok(200)["stock"].clone();
    assert_eq!(stock, 0);
    let mut balances = Vec::new();
    for member in &members {
        balances.push(balance(&server, key, member).await);
    }
    balances.sort_unstable();
    assert_eq!(balances, [50, 50, 50, 150, 150, 150]);
    // Not enough points: refused, and the stock untouched.
    let restocked = server
        .post(
            "/v1/gifts",
            key,
            &json!({"name": "Teapot", "points_cost": 500, "stock": 1}),
        )
        .await
        .id();
    let poor = server
        .post_idem(
            &format!("/v1/members/{}/gift-redemptions", members[0]),
            key,
            &idem(),
            &json!({"gift_id": restocked, "quantity": 1, "store_id": store}),
        )
        .await;
    poor.problem(422);
    assert_eq!(
        server
            .get(&format!("/v1/gifts/{restocked}"), key)
            .await
            .ok(200)["stock"],
        1
    );
    server
        .post_idem(
            &format!("/v1/members/{}/gift-redemptions", members[0]),
            key,
            &idem(),
            &json!({"gift_id": restocked, "quantity": 0, "store_id": store}),
        )
        .await
        .problem(422);
    server.verify().await;
}

backend_tests!(
    the_programme_end_to_end,
    campaigns_keep_to_budget_and_caps,
    gifts_never_oversell,
);

async fn transactions_explain_and_replay(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Bakery", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    let plain = server.store_coded(key, "PLAIN").await;
    enable(
        &server,
        key,
        &store,
        "earn_category_multiplier",
        "earn-rule",
        json!({"category_percent": {"bread": 300}}),
    )
    .await;
    let member = server
        .post("/v1/members", key, &json!({"phone": "13700000000"}))
        .await
        .id();
    let buy = |store: String| {
        let body = json!({"member_id": member, "store_id": store,
            "items": [{"sku": "baguette", "category": "bread", "quantity": 2, "unit_price": "12.50"},
                      {"sku": "milk", "category": "dairy", "quantity": 1, "unit_price": "8.00"}],
            "payments": [{"method": "cash", "amount": "33.00"}]});
        let server = &server;
        async move {
            server
                .post_idem("/v1/purchases", key, &idem(), &body)
                .await
                .ok(201)
                .clone()
        }
    };
    let receipt = buy(store.clone()).await;
    let transaction = receipt["transaction_id"].as_str().expect("id").to_string();
    let explained = server
        .get(&format!("/v1/transactions/{transaction}/explain"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(explained["policy"], "plugins");
    assert_eq!(explained["kind"], "purchase");
    let decision = &explained["decisions"][0];
    assert_eq!(decision["name"], "earn-category-multiplier");
    assert_eq!(decision["world"], "earn-rule");
    assert_eq!(decision["input_verified"], true);
    assert_eq!(decision["input"]["purchase"]["total"], 3300);
    assert_eq!(decision["input"]["member"]["id"], member.as_str());
    assert_eq!(
        decision["output"][0]["points"],
        receipt["awards"][0]["points"]
    );
    let replayed = server
        .post(
            &format!("/v1/transactions/{transaction}/replay"),
            key,
            &json!({}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(replayed["identical"], true, "{replayed}");
    assert_eq!(replayed["decisions"][0]["component_verified"], true);
    assert_eq!(replayed["decisions"][0]["replayed"], decision["output"]);

    // The built-in rate: nothing to replay.
    let built_in = buy(plain).await;
    let plain_transaction = built_in["transaction_id"].as_str().expect("id");
    let explained = server
        .get(
            &format!("/v1/transactions/{plain_transaction}/explain"),
            key,
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(explained["policy"], "base_rate");
    assert_eq!(explained["decisions"].as_array().map(Vec::len), Some(0));

    // A tampered record is caught: the input no longer hashes to its digest.
    sqlx::query("UPDATE transactions SET provenance = REPLACE(provenance, '\"input_sha256\":\"', '\"input_sha256\":\"00') WHERE id = $1")
        .bind(&transaction)
        .execute(&server.state.database.pool)
        .await
        .expect("tamper");
    let tampered = server
        .post(
            &format!("/v1/transactions/{transaction}/replay"),
            key,
            &json!({}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(tampered["identical"], false);
    assert_eq!(tampered["decisions"][0]["input_verified"], false);

    // Other merchants and read keys.
    let other = server.merchant("Other", "CNY").await;
    server
        .get(
            &format!("/v1/transactions/{transaction}/explain"),
            &other.key,
        )
        .await
        .problem(404);
    server
        .post(
            &format!("/v1/transactions/{transaction}/replay"),
            &other.key,
            &json!({}),
        )
        .await
        .problem(404);
    server
        .get("/v1/transactions/txn_missing/explain", key)
        .await
        .problem(404);
}

async fn campaign_awards_replay(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Salon", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    let birthday = enable(
        &server,
        key,
        &store,
        "campaign_birthday",
        "campaign-trigger",
        json!({}),
    )
    .await;
    campaign(
        &server,
        key,
        &birthday,
        json!({"points": 88}),
        json!({}),
        None,
    )
    .await;
    let member = member_with_birthday(&server, key, "13600000000", 0).await;
    run_today(&server, &merchant).await;
    let ledger = server
        .get(&format!("/v1/members/{member}/ledger"), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(ledger[0]["kind"], "campaign.award");
    let transaction = ledger[0]["id"].as_str().expect("id");
    let explained = server
        .get(&format!("/v1/transactions/{transaction}/explain"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(explained["policy"], "campaign");
    assert_eq!(explained["decisions"][0]["input"]["event"], "daily_tick");
    let replayed = server
        .post(
            &format!("/v1/transactions/{transaction}/replay"),
            key,
            &json!({}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(replayed["identical"], true, "{replayed}");
}

mod replays {
    use super::*;
    backend_tests!(transactions_explain_and_replay, campaign_awards_replay);
}
