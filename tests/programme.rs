//! The programme end to end on both backends: tiers decided by the `tier-spend-threshold`
//! plugin after purchases, refunds and the daily tick (with history, provenance and events);
//! the tier's earn multiplier reaching `earn-base-rate`; the daily tick's settlement, expiry
//! notices and once-per-day guarantee; webhooks signed and retried to a local receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use loyalty_core::items::COUNT_PURCHASES_MAX;
use loyalty_host::dispatch::{self, DeliverySettings};
use loyalty_host::scheduler;
use loyalty_tests::{backend_tests, component, json, Backend, Merchant, TestServer};
use serde_json::Value;
use sha2::Sha256;

const DAY: Duration = Duration::from_secs(86_400);

fn idem() -> String {
    format!("k-{}", uuid::Uuid::now_v7().simple())
}

/// A merchant with three tiers, one store running `tier-spend-threshold` (gold from 500.00 in
/// 12 months, kept from 300.00) and `earn-base-rate`.
async fn programme(server: &TestServer) -> (Merchant, String) {
    let merchant = server.merchant("Tea House", "CNY").await;
    let tiers = json!({"tiers": [
        {"code": "silver", "name": "Silver", "benefits": "Members' prices"},
        {"code": "gold", "name": "Gold", "benefits": "Double points", "earn_multiplier": "2"},
        {"code": "platinum", "name": "Platinum", "earn_multiplier": "3.5"},
    ]});
    let put = server.put("/v1/tiers", &merchant.key, &tiers).await;
    let listed = put.ok(200)["tiers"].clone();
    assert_eq!(listed[1]["rank"], 1);
    assert_eq!(listed[1]["earn_multiplier"], "2");
    assert_eq!(listed[0]["earn_multiplier"], "1");
    let store = server.store(&merchant.key).await;
    for (name, world, config) in [
        (
            "tier_spend_threshold",
            "tier-policy",
            json!({"tiers": {
                "silver": {"upgrade_at": 0, "keep_at": 0},
                "gold": {"upgrade_at": 50_000, "keep_at": 30_000},
                "platinum": {"upgrade_at": 200_000, "keep_at": 150_000},
            }}),
        ),
        ("earn_base_rate", "earn-rule", json!({})),
    ] {
        let plugin = server
            .upload_plugin(
                &merchant.key,
                Some(&json!({"name": name.replace('_', "-"), "version": "0.1.0", "world": world})),
                Some(component(name)),
            )
            .await
            .ok(201)["id"]
            .clone();
        server
            .put(
                &format!("/v1/stores/{store}/plugins/{world}"),
                &merchant.key,
                &json!({"plugins": [{"plugin_id": plugin, "config": config}]}),
            )
            .await
            .ok(200);
    }
    (merchant, store)
}

async fn buy(server: &TestServer, key: &str, member: &str, store: &str, amount: &str) -> Value {
    server
        .post_idem(
            "/v1/purchases",
            key,
            &idem(),
            &json!({"member_id": member, "store_id": store,
                "items": [{"sku": "tea", "quantity": 1, "unit_price": amount}],
                "payments": [{"method": "card", "amount": amount}]}),
        )
        .await
        .ok(201)
        .clone()
}

async fn tier_of(server: &TestServer, key: &str, member: &str) -> Value {
    server
        .get(&format!("/v1/members/{member}"), key)
        .await
        .ok(200)["tier"]
        .clone()
}

async fn events_of(server: &TestServer, key: &str, kind: &str) -> Vec<Value> {
    server
        .get(&format!("/v1/events?type={kind}&limit=200"), key)
        .await
        .ok(200)["items"]
        .as_array()
        .expect("items")
        .clone()
}

async fn tiers_follow_the_policy(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (merchant, store) = programme(&server).await;
    let key = &merchant.key;

    // Bad definitions write nothing.
    let bad = server
        .put(
            "/v1/tiers",
            key,
            &json!({"tiers": [{"code": "Gold", "name": ""}, {"code": "x", "name": "X", "earn_multiplier": "-1"}]}),
        )
        .await;
    let problem = bad.problem(422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        ["tiers[0].code", "tiers[0].name", "tiers[1].earn_multiplier"]
    );
    assert_eq!(
        server.get("/v1/tiers", key).await.ok(200)["tiers"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // A new member starts in the lowest tier and joins with an event.
    let member = server
        .post(
            "/v1/members",
            key,
            &json!({"phone": "13800138000", "birthday": "1990-06-15"}),
        )
        .await
        .ok(201)["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(tier_of(&server, key, &member).await, "silver");
    let joined = events_of(&server, key, "member.joined").await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["member_id"], member.as_str());
    // Members' attributes cannot pose as the host's.
    server
        .patch(
            &format!("/v1/members/{member}"),
            key,
            &json!({"attributes": {"$tier": "platinum"}}),
        )
        .await
        .problem(422);

    // 600.00 in 12 months reaches gold; silver earns ×1.
    let first = buy(&server, key, &member, &store, "600.00").await;
    assert_eq!(first["points_awarded"], 600);
    assert_eq!(tier_of(&server, key, &member).await, "gold");
    let history = server
        .get(&format!("/v1/members/{member}/tier-history"), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(history.as_array().map(Vec::len), Some(1));
    assert_eq!(history[0]["from"], "silver");
    assert_eq!(history[0]["to"], "gold");
    assert_eq!(history[0]["source"], "purchase");
    assert_eq!(
        history[0]["reason"],
        "12-month spend CNY 600.00 reached gold"
    );
    assert_eq!(history[0]["provenance"]["name"], "tier-spend-threshold");
    assert_eq!(
        history[0]["provenance"]["input_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    let changed = events_of(&server, key, "tier.changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["data"]["to"], "gold");
    assert_eq!(changed[0]["data"]["history_id"], history[0]["id"]);

    // Gold doubles the plugin's points, and the award says so.
    let second = buy(&server, key, &member, &store, "10.00").await;
    assert_eq!(second["points_awarded"], 20);
    assert_eq!(
        second["awards"][0]["reason"],
        "1 point per CNY 1 × 2 (Gold)"
    );
    let recorded = events_of(&server, key, "purchase.recorded").await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1]["data"]["purchase_id"], second["id"]);
    assert_eq!(recorded[1]["store_id"], store.as_str());

    // Refunds: 610.00 - 200.00 = 410.00 keeps gold; - 200.00 more = 210.00 < 300.00 drops one rank.
    let purchase = first["id"].as_str().expect("id");
    let refund = |amount: &str| {
        let body = json!({"amount": amount});
        let path = format!("/v1/purchases/{purchase}/refunds");
        let server = &server;
        async move {
            server
                .post_idem(&path, key, &idem(), &body)
                .await
                .ok(201)
                .clone()
        }
    };
    refund("200.00").await;
    assert_eq!(tier_of(&server, key, &member).await, "gold");
    refund("200.00").await;
    assert_eq!(tier_of(&server, key, &member).await, "silver");
    let history = server
        .get(&format!("/v1/members/{member}/tier-history"), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(history[0]["source"], "refund");
    assert_eq!(history[0]["reason"], "below keep amount");
    assert_eq!(events_of(&server, key, "purchase.refunded").await.len(), 2);

    // A purchase under a key of our own, to be retried after the admin's move below.
    let retried = json!({"member_id": member, "store_id": store,
        "items": [{"sku": "tea", "quantity": 1, "unit_price": "1.00"}],
        "payments": [{"method": "card", "amount": "1.00"}]});
    let answered = server
        .post_idem("/v1/purchases", key, "retried-purchase", &retried)
        .await;
    answered.ok(201);
    assert_eq!(tier_of(&server, key, &member).await, "silver");

    // An admin's move is history too; an unknown tier is refused; dropping a held tier is a 409.
    server
        .put(
            &format!("/v1/members/{member}/tier"),
            key,
            &json!({"tier": "diamond", "reason": "VIP"}),
        )
        .await
        .problem(422);
    let assigned = server
        .put(
            &format!("/v1/members/{member}/tier"),
            key,
            &json!({"tier": "platinum", "reason": "Founding member"}),
        )
        .await;
    assert_eq!(assigned.ok(200)["changed"], true);
    // The retry is answered from its record and asks the policy nothing: platinum stays,
    // where a fresh purchase (211.00 in 12 months, below every keep amount) would drop it.
    let again = server
        .post_idem("/v1/purchases", key, "retried-purchase", &retried)
        .await;
    assert_eq!(
        (again.status, &again.text),
        (answered.status, &answered.text)
    );
    assert_eq!(tier_of(&server, key, &member).await, "platinum");
    let history = server
        .get(&format!("/v1/members/{member}/tier-history?limit=1"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(history["items"][0]["source"], "admin");
    assert!(history["items"][0]["provenance"]["api_key_id"].is_string());
    assert!(history["next_cursor"].is_string());
    server
        .put(
            "/v1/tiers",
            key,
            &json!({"tiers": [{"code": "silver", "name": "Silver"}]}),
        )
        .await
        .problem(409);

    // Another merchant sees none of it.
    let other = server.merchant("Other", "CNY").await;
    server
        .get(&format!("/v1/members/{member}/tier-history"), &other.key)
        .await
        .problem(404);
    assert!(events_of(&server, &other.key, "tier.changed")
        .await
        .is_empty());
    server
        .get(
            &format!("/v1/events/{}", changed[0]["id"].as_str().expect("id")),
            &other.key,
        )
        .await
        .problem(404);
    server.verify().await;
}

async fn the_daily_tick_runs_each_day_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (merchant, store) = programme(&server).await;
    let key = &merchant.key;
    server
        .patch(
            "/v1/merchant",
            key,
            &json!({"settings": {"points_pending_days": 1, "points_expiry_days": 30, "points_expiry_notice_days": 7}}),
        )
        .await
        .ok(200);
    let member = server
        .post("/v1/members", key, &json!({"phone": "13800138001"}))
        .await
        .ok(201)["id"]
        .as_str()
        .expect("id")
        .to_string();
    let receipt = buy(&server, key, &member, &store, "600.00").await;
    assert_eq!(receipt["points_awarded"], 600);
    assert_eq!(tier_of(&server, key, &member).await, "gold");

    // Two ticks of the same day at once: exactly one runs it.
    server.clock.advance(DAY + Duration::from_secs(3_600));
    let today = scheduler::local_date("Asia/Shanghai", server.clock.now()).expect("a date");
    let (first, second) = tokio::join!(
        scheduler::run_day(&server.state, &merchant.id, today),
        scheduler::run_day(&server.state, &merchant.id, today),
    );
    let mut outcomes = [
        first.expect("the tick runs").outcome,
        second.expect("the tick runs").outcome,
    ];
    outcomes.sort_unstable();
    assert!(
        outcomes == ["already_done", "ran"] || outcomes == ["ran", "running_elsewhere"],
        "{outcomes:?}"
    );
    let ticks = server.get("/v1/ticks", key).await.ok(200)["items"].clone();
    assert_eq!(ticks.as_array().map(Vec::len), Some(1));
    assert_eq!(ticks[0]["state"], "done");
    assert_eq!(ticks[0]["summary"]["points_activated"], 600);
    let again = server
        .post(
            "/v1/operator/jobs/daily-tick",
            loyalty_tests::OPERATOR_KEY,
            &json!({"merchant_id": merchant.id}),
        )
        .await;
    assert_eq!(again.ok(200)["outcome"], "already_done");
    // Bad input to the operator's tick: a future day, a malformed one, a missing merchant.
    for (body, status) in [
        (
            json!({"merchant_id": merchant.id, "date": "2999-01-01"}),
            422,
        ),
        (json!({"merchant_id": merchant.id, "date": "tomorrow"}), 422),
        (json!({"merchant_id": "mer_missing"}), 404),
    ] {
        server
            .post(
                "/v1/operator/jobs/daily-tick",
                loyalty_tests::OPERATOR_KEY,
                &body,
            )
            .await
            .problem(status);
    }

    // 30 days after activation the points expire; the tick 7 days before says so, once. (The
    // day is taken from the lot, so the test does not depend on the hour it runs at.)
    let expires_at: i64 = sqlx::query_scalar("SELECT MIN(expires_at) FROM point_lots")
        .fetch_one(&server.state.database.pool)
        .await
        .expect("a lot");
    let expiry_day = scheduler::local_date("Asia/Shanghai", expires_at).expect("a date");
    let notice_day = expiry_day
        .checked_sub(jiff::Span::new().days(7))
        .expect("a date");
    server.clock.advance(25 * DAY);
    for _ in 0..2 {
        scheduler::run_day(&server.state, &merchant.id, notice_day)
            .await
            .expect("the tick runs");
    }
    let day_before = notice_day.yesterday().expect("a date");
    let quiet = scheduler::run_day(&server.state, &merchant.id, day_before)
        .await
        .expect("the tick runs");
    assert_eq!(quiet.summary.expect("it ran").expiry_notices, 0);
    let expiring = events_of(&server, key, "points.expiring").await;
    assert_eq!(expiring.len(), 1, "{expiring:?}");
    assert_eq!(expiring[0]["data"]["points"], 600);
    assert_eq!(expiring[0]["member_id"], member.as_str());

    // A year later without purchases the tick downgrades one rank, as of the tick.
    server.clock.advance(365 * DAY);
    let later = scheduler::local_date("Asia/Shanghai", server.clock.now()).expect("a date");
    let run = scheduler::run_day(&server.state, &merchant.id, later)
        .await
        .expect("the tick runs");
    let summary = run.summary.expect("it ran");
    assert_eq!(summary.points_expired, 600);
    assert_eq!(summary.tiers_evaluated, 1);
    assert_eq!(summary.tiers_changed, 1);
    assert_eq!(tier_of(&server, key, &member).await, "silver");
    let history = server
        .get(&format!("/v1/members/{member}/tier-history"), key)
        .await
        .ok(200)["items"]
        .clone();
    assert_eq!(history[0]["source"], "daily_tick");
    let balances = server
        .get(&format!("/v1/members/{member}/balances"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(balances["points"]["available"], 0);
    server.verify().await;
}

/// What the local receiver saw: (headers, body) per request.
type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A receiver on a loopback port that answers 500 to the first `failures` requests and 200
/// afterwards.
async fn receiver(failures: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let recorded = recorded.clone();
            async move {
                let mut seen = recorded.lock().expect("not poisoned");
                seen.push((headers, body));
                if seen.len() <= failures {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    (format!("http://{address}/hook"), seen)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn webhooks_are_signed_and_retried(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Salon", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    let (url, seen) = receiver(1).await;
    let secret = "whsec-0123456789abcdef";

    for (body, field) in [
        (
            json!({"url": "ftp://x", "events": ["*"], "secret": secret}),
            "url",
        ),
        (
            json!({"url": url, "events": ["purchase.made"], "secret": secret}),
            "events[0]",
        ),
        (
            json!({"url": url, "events": [], "secret": secret}),
            "events",
        ),
        (
            json!({"url": url, "events": ["*"], "secret": "short"}),
            "secret",
        ),
    ] {
        let response = server.post("/v1/webhooks", key, &body).await;
        assert_eq!(response.problem(422)["errors"][0]["field"], field);
    }
    let webhook = server
        .post(
            "/v1/webhooks",
            key,
            &json!({"url": url, "events": ["purchase.recorded"], "secret": secret}),
        )
        .await
        .ok(201)
        .clone();
    assert!(webhook.get("secret").is_none(), "the secret is never shown");
    let webhook_id = webhook["id"].as_str().expect("id").to_string();
    // A second webhook whose receiver never answers well: given up after 2 attempts.
    let (dead_url, dead_seen) = receiver(usize::MAX).await;
    let dead = server
        .post(
            "/v1/webhooks",
            key,
            &json!({"url": dead_url, "events": ["*"], "secret": secret}),
        )
        .await
        .id();

    let member = server
        .post("/v1/members", key, &json!({"email": "ann@example.com"}))
        .await
        .id();
    let receipt = buy(&server, key, &member, &store, "25.00").await;

    let mut state = server.state.clone();
    state.delivery = Arc::new(DeliverySettings {
        retry_base_ms: 200,
        retry_max_ms: 400,
        attempts_max: 2,
        timeout_ms: 2_000,
        idle_poll_ms: 50,
        item_stats_interval_ms: 50,
    });
    let worker = tokio::spawn(dispatch::run_forever(state));
    wait_for("the retry", || {
        seen.lock().expect("not poisoned").len() >= 2
    })
    .await;
    // member.joined and purchase.recorded, twice each (one attempt, one retry).
    wait_for("the dead receiver's attempts", || {
        dead_seen.lock().expect("not poisoned").len() >= 4
    })
    .await;

    let requests = seen.lock().expect("not poisoned").clone();
    assert_eq!(requests.len(), 2, "one failure, one success, nothing else");
    for (headers, body) in &requests {
        let event: Value = serde_json::from_str(body).expect("a JSON event");
        assert_eq!(event["type"], "purchase.recorded");
        assert_eq!(event["data"]["purchase_id"], receipt["id"]);
        assert_eq!(event["data"]["total"], "25.00");
        assert_eq!(
            headers["loyalty-event-id"],
            event["id"].as_str().expect("id")
        );
        assert_eq!(headers["loyalty-event-type"], "purchase.recorded");
        let signature = headers["loyalty-signature"].to_str().expect("ascii");
        let (timestamp, digest) = signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
            .expect("t=…,v1=…");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
        mac.update(format!("{timestamp}.{body}").as_bytes());
        assert_eq!(digest, hex::encode(mac.finalize().into_bytes()));
        let sent_at: i64 = timestamp.parse().expect("seconds");
        assert!((sent_at - server.clock.now() / 1_000_000).abs() < 60);
    }
    assert_eq!(
        requests[0].0["loyalty-event-id"], requests[1].0["loyalty-event-id"],
        "the retry carries the same event"
    );

    let deliveries = |id: String| {
        let server = &server;
        async move {
            server
                .get(&format!("/v1/webhooks/{id}/deliveries"), key)
                .await
                .ok(200)["items"]
                .clone()
        }
    };
    wait_for_state(&server, key, &webhook_id, "delivered").await;
    let log = deliveries(webhook_id.clone()).await;
    assert_eq!(log.as_array().map(Vec::len), Some(1));
    assert_eq!(log[0]["attempts"], 2);
    assert_eq!(log[0]["last_status"], 200);
    assert_eq!(log[0]["event_type"], "purchase.recorded");
    wait_for_state(&server, key, &dead, "failed").await;
    let dead_log = deliveries(dead.clone()).await;
    assert_eq!(dead_log.as_array().map(Vec::len), Some(2));
    for delivery in dead_log.as_array().expect("items") {
        assert_eq!(delivery["state"], "failed");
        assert_eq!(delivery["attempts"], 2);
        assert_eq!(delivery["last_status"], 500);
        assert!(delivery["next_attempt_at"].is_null());
    }
    worker.abort();

    // Deleting stops deliveries and keeps the log; foreign merchants see nothing.
    let deleted = server
        .delete(&format!("/v1/webhooks/{webhook_id}"), key)
        .await;
    assert_eq!(deleted.ok(200)["active"], false);
    assert_eq!(
        deliveries(webhook_id.clone())
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let other = server.merchant("Other", "CNY").await;
    server
        .get(&format!("/v1/webhooks/{webhook_id}/deliveries"), &other.key)
        .await
        .problem(404);
    server.verify().await;
}

async fn wait_for_state(server: &TestServer, key: &str, webhook: &str, state: &str) {
    for _ in 0..200 {
        let log = server
            .get(&format!("/v1/webhooks/{webhook}/deliveries"), key)
            .await
            .ok(200)["items"]
            .clone();
        if log.as_array().is_some_and(|items| {
            !items.is_empty() && items.iter().all(|item| item["state"] == state)
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("webhook {webhook} never reached {state}");
}

backend_tests!(
    tiers_follow_the_policy,
    the_daily_tick_runs_each_day_once,
    webhooks_are_signed_and_retried,
);

async fn purchase_lines(
    server: &TestServer,
    key: &str,
    member: &str,
    store: &str,
    lines: &[(&str, &str, i64, &str)],
) {
    let items: Vec<Value> = lines
        .iter()
        .map(|(sku, category, quantity, price)| {
            json!({"sku": sku, "name": sku.to_uppercase(), "category": category, "quantity": quantity, "unit_price": price})
        })
        .collect();
    let sum: i64 = lines
        .iter()
        .map(|(_, _, quantity, price)| {
            quantity * price.replace('.', "").parse::<i64>().expect("a price")
        })
        .sum();
    let amount = format!("{}.{:02}", sum / 100, sum % 100);
    server
        .post_idem(
            "/v1/purchases",
            key,
            &idem(),
            &json!({"member_id": member, "store_id": store, "items": items,
                "payments": [{"method": "card", "amount": amount}]}),
        )
        .await
        .ok(201);
}

async fn recommendations_rank_candidates_from_history(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    let key = &merchant.key;
    let plain = server.store_coded(key, "PLAIN").await;
    let smart = server.store_coded(key, "SMART").await;
    let plugin = server
        .upload_plugin(
            key,
            Some(&json!({"name": "recommend-co-purchase", "version": "0.1.0", "world": "recommender"})),
            Some(component("recommend_co_purchase")),
        )
        .await
        .ok(201)["id"]
        .clone();
    server
        .put(
            &format!("/v1/stores/{smart}/plugins/recommender"),
            key,
            &json!({"plugins": [{"plugin_id": plugin, "config": {"max_per_category": 2}}]}),
        )
        .await
        .ok(200);
    let mut shoppers = Vec::new();
    for phone in ["13800000001", "13800000002", "13800000003", "13800000004"] {
        shoppers.push(
            server
                .post("/v1/members", key, &json!({"phone": phone}))
                .await
                .id(),
        );
    }
    // Lattes go with croissants; tea is popular on its own; muffins sometimes.
    for shopper in &shoppers[..3] {
        purchase_lines(
            &server,
            key,
            shopper,
            &plain,
            &[
                ("latte", "coffee", 1, "28.00"),
                ("croissant", "bakery", 1, "15.00"),
            ],
        )
        .await;
    }
    purchase_lines(
        &server,
        key,
        &shoppers[0],
        &plain,
        &[
            ("latte", "coffee", 1, "28.00"),
            ("muffin", "bakery", 1, "12.00"),
        ],
    )
    .await;
    purchase_lines(
        &server,
        key,
        &shoppers[1],
        &plain,
        &[("tea", "tea", 10, "9.00")],
    )
    .await;
    purchase_lines(
        &server,
        key,
        &shoppers[2],
        &plain,
        &[("tea", "tea", 5, "9.00")],
    )
    .await;

    // Counted once, however often the same events are dispatched (two hosts reading the
    // same batch) and counted.
    let batch = loyalty_core::events::undispatched(&server.state.database.pool, 100)
        .await
        .expect("reads the outbox");
    for _ in 0..2 {
        loyalty_host::dispatch::dispatch_batch(&server.state, &batch)
            .await
            .expect("dispatches");
        loyalty_host::dispatch::count_items(&server.state, COUNT_PURCHASES_MAX)
            .await
            .expect("counts");
    }
    let (units, orders): (i64, i64) =
        sqlx::query_as("SELECT units_sold, orders_count FROM item_stats WHERE sku = 'latte'")
            .fetch_one(&server.state.database.pool)
            .await
            .expect("latte stats");
    assert_eq!((units, orders), (4, 4));

    // A newcomer who bought a latte: popularity without a store, ranked by the plugin with one.
    let newcomer = &shoppers[3];
    purchase_lines(
        &server,
        key,
        newcomer,
        &plain,
        &[("latte", "coffee", 1, "28.00")],
    )
    .await;
    loyalty_host::dispatch::dispatch_events(&server.state)
        .await
        .expect("dispatches");
    loyalty_host::dispatch::count_items(&server.state, COUNT_PURCHASES_MAX)
        .await
        .expect("counts");
    let popular = server
        .get(&format!("/v1/members/{newcomer}/recommendations"), key)
        .await
        .ok(200)
        .clone();
    assert_eq!(popular["source"], "popularity");
    let skus: Vec<&str> = popular["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["sku"].as_str().expect("sku"))
        .collect();
    assert_eq!(
        skus,
        ["tea", "croissant", "muffin"],
        "most units first, the latte left out"
    );
    assert_eq!(popular["items"][0]["reason"], "popular: 15 sold");
    assert_eq!(popular["items"][0]["price"], "9.00");

    let ranked = server
        .get(
            &format!("/v1/members/{newcomer}/recommendations?store_id={smart}&limit=2"),
            key,
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(ranked["source"], "plugin:recommend-co-purchase@0.1.0");
    assert_eq!(ranked["items"][0]["sku"], "croissant");
    assert_eq!(
        ranked["items"][0]["reason"],
        "bought with your items 3 times"
    );
    assert_eq!(ranked["items"][0]["name"], "CROISSANT");
    assert_eq!(ranked["items"][1]["sku"], "muffin");
    assert_eq!(ranked["items"].as_array().map(Vec::len), Some(2));

    let fallback = server
        .get(
            &format!("/v1/members/{newcomer}/recommendations?store_id={plain}"),
            key,
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(fallback["source"], "popularity");
    assert_eq!(fallback["fallback_reason"], "no recommender");

    // Bad input and foreign ids.
    server
        .get(
            &format!("/v1/members/{newcomer}/recommendations?limit=0"),
            key,
        )
        .await
        .problem(422);
    server
        .get(
            &format!("/v1/members/{newcomer}/recommendations?store_id=sto_missing"),
            key,
        )
        .await
        .problem(404);
    let other = server.merchant("Other", "CNY").await;
    server
        .get(
            &format!("/v1/members/{newcomer}/recommendations"),
            &other.key,
        )
        .await
        .problem(404);
    server.verify().await;
}

/// A dispatcher pass larger than one writer command (256 events) queues every purchase once,
/// and counts of a smaller window take the queue in turn: each purchase is counted once, also
/// when two counts take the same window at once, and the same batch dispatched again (as a
/// second host would) queues nothing twice.
async fn a_pass_of_several_commands_counts_each_purchase_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    let key = &merchant.key;
    let store = server.store(key).await;
    let member = server
        .post("/v1/members", key, &json!({"phone": "13800000009"}))
        .await
        .id();
    let purchases: i64 = 300;
    for _ in 0..purchases {
        purchase_lines(
            &server,
            key,
            &member,
            &store,
            &[
                ("latte", "coffee", 1, "28.00"),
                ("croissant", "bakery", 2, "15.00"),
            ],
        )
        .await;
    }
    let pool = &server.state.database.pool;
    let scalar = move |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .expect("counts rows")
    };
    let undispatched = "SELECT COUNT(*) FROM events WHERE dispatched_at IS NULL";
    let queued = "SELECT COUNT(*) FROM item_stats_queue";
    let waiting = scalar(undispatched).await;
    assert!(
        waiting > i64::try_from(loyalty_core::events::EFFECTS_PER_COMMAND_MAX).expect("small"),
        "the pass needs more than one command, {waiting} events"
    );
    let batch = loyalty_core::events::undispatched(pool, loyalty_core::events::DISPATCH_BATCH_MAX)
        .await
        .expect("reads the outbox");
    assert_eq!(
        i64::try_from(batch.len()).expect("small"),
        waiting,
        "one pass takes them all"
    );
    for _ in 0..2 {
        loyalty_host::dispatch::dispatch_batch(&server.state, &batch)
            .await
            .expect("dispatches");
        assert_eq!(scalar(undispatched).await, 0);
        assert_eq!(scalar(queued).await, purchases, "each purchase queued once");
    }
    // Two hosts counting the same window at once: each purchase counts in one of them.
    let first = loyalty_core::items::queued_purchases(pool, 64)
        .await
        .expect("reads the queue");
    let (one, other) = tokio::join!(
        loyalty_host::dispatch::count_queued(&server.state, &first),
        loyalty_host::dispatch::count_queued(&server.state, &first),
    );
    assert_eq!(
        one.expect("counts") + other.expect("counts"),
        64,
        "the window counted once"
    );
    let window_max = 128;
    let mut windows = Vec::new();
    loop {
        let taken = loyalty_host::dispatch::count_items(&server.state, window_max)
            .await
            .expect("counts");
        if taken == 0 {
            break;
        }
        windows.push(taken);
        assert!(
            windows.len() <= 3,
            "the windows empty the queue (two are expected): {windows:?}"
        );
    }
    assert_eq!(windows, vec![128, 108]);
    assert_eq!(scalar(queued).await, 0);
    let counted = move || async move {
        let items: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT sku, units_sold, orders_count FROM item_stats ORDER BY sku")
                .fetch_all(pool)
                .await
                .expect("item stats");
        let pairs: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT sku, other_sku, orders_count FROM co_purchases ORDER BY sku, other_sku",
        )
        .fetch_all(pool)
        .await
        .expect("co-purchases");
        (items, pairs)
    };
    let expected = (
        vec![
            ("croissant".to_string(), 2 * purchases, purchases),
            ("latte".to_string(), purchases, purchases),
        ],
        vec![("croissant".to_string(), "latte".to_string(), purchases)],
    );
    assert_eq!(counted().await, expected);
    loyalty_host::dispatch::dispatch_batch(&server.state, &batch)
        .await
        .expect("dispatches again");
    assert_eq!(
        scalar(queued).await,
        0,
        "a dispatched event is not queued again"
    );
    server.verify().await;
}

mod recommendations {
    use super::*;
    backend_tests!(
        recommendations_rank_candidates_from_history,
        a_pass_of_several_commands_counts_each_purchase_once,
    );
}
