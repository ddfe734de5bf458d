//! Tenant isolation: merchant B's key on any of merchant A's ids answers 404 exactly as a
//! missing id does, changes nothing of A's, and B's lists never show A's rows.

use loyalty_tests::{backend_tests, json, Backend, Merchant, Response, TestServer};
use reqwest::Method;
use serde_json::Value;

fn idem() -> String {
    format!("k-{}", uuid::Uuid::now_v7().simple())
}

/// One of everything, of one merchant.
struct Tenant {
    merchant: Merchant,
    store: String,
    member: String,
    purchase: String,
    package: String,
    card: String,
    key_id: String,
    key: String,
    purchase_idempotency_key: String,
    purchase_body: Value,
}

async fn tenant(server: &TestServer, name: &str) -> Tenant {
    let merchant = server.merchant(name, "CNY").await;
    let key = merchant.key.clone();
    let store = server.store(&key).await;
    // The same phone and external id at both merchants: identities are per merchant.
    let member = server
        .post(
            "/v1/members",
            &key,
            &json!({"phone": "13800138000", "external_id": "crm-1", "name": name}),
        )
        .await
        .id();
    server
        .post_idem(
            &format!("/v1/members/{member}/stored-value/top-ups"),
            &key,
            &idem(),
            &json!({"amount": "500.00", "store_id": store, "payment_method": "cash"}),
        )
        .await
        .ok(201);
    let purchase_idempotency_key = format!("purchase-of-{name}");
    let purchase_body = json!({"member_id": member, "store_id": store,
        "items": [{"sku": "TEA", "quantity": 4, "unit_price": "25.00"}],
        "payments": [{"method": "stored_value", "amount": "40.00"}, {"method": "cash", "amount": "60.00"}]});
    let purchase = server
        .post_idem(
            "/v1/purchases",
            &key,
            &purchase_idempotency_key,
            &purchase_body,
        )
        .await;
    assert_eq!(purchase.ok(201)["points_awarded"], 100);
    let purchase = purchase.id();
    let package = server
        .post(
            "/v1/count-card-packages",
            &key,
            &json!({"name": "10 washes", "sku": "WASH10", "uses": 10, "price": "100.00", "valid_days": 30}),
        )
        .await
        .id();
    let sold = server
        .post_idem(
            &format!("/v1/members/{member}/count-cards"),
            &key,
            &idem(),
            &json!({"package_id": package, "store_id": store, "payment_method": "cash"}),
        )
        .await;
    let card = sold.ok(201)["card"]["id"]
        .as_str()
        .expect("card id")
        .to_string();
    let created = server
        .post(
            "/v1/api-keys",
            &key,
            &json!({"name": "till", "scopes": ["pos"]}),
        )
        .await;
    let created = created.ok(201).clone();
    Tenant {
        merchant,
        store,
        member,
        purchase,
        package,
        card,
        key_id: created["id"].as_str().expect("id").to_string(),
        key: created["key"].as_str().expect("key").to_string(),
        purchase_idempotency_key,
        purchase_body,
    }
}

/// Everything A can see of its own data.
async fn snapshot(server: &TestServer, a: &Tenant) -> Vec<String> {
    let key = &a.merchant.key;
    let mut views = Vec::new();
    for path in [
        format!("/v1/members/{}", a.member),
        format!("/v1/members/{}/balances", a.member),
        format!("/v1/members/{}/ledger?limit=200", a.member),
        format!("/v1/purchases/{}", a.purchase),
        format!("/v1/stores/{}", a.store),
        format!("/v1/count-card-packages/{}", a.package),
        "/v1/api-keys?limit=200".to_string(),
        "/v1/members?limit=200".to_string(),
        "/v1/stores?limit=200".to_string(),
        "/v1/count-card-packages?limit=200".to_string(),
    ] {
        let response = server.get(&path, key).await;
        views.push(response.ok(200).to_string());
    }
    views
}

/// One request, sent twice: with the foreign id and with a missing one.
struct Probe {
    what: &'static str,
    method: Method,
    foreign_path: String,
    missing_path: String,
    foreign_body: Option<Value>,
    missing_body: Option<Value>,
}

fn probe(what: &'static str, method: Method, foreign: String, missing: String) -> Probe {
    Probe {
        what,
        method,
        foreign_path: foreign,
        missing_path: missing,
        foreign_body: None,
        missing_body: None,
    }
}

fn with_body(mut probe: Probe, foreign: Value, missing: Value) -> Probe {
    probe.foreign_body = Some(foreign);
    probe.missing_body = Some(missing);
    probe
}

async fn send(
    server: &TestServer,
    key: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let idempotency_key = (method == Method::POST).then(idem);
    server
        .call(
            method.clone(),
            path,
            Some(key),
            idempotency_key.as_deref(),
            body,
        )
        .await
}

async fn foreign_ids_are_missing_ids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = tenant(&server, "Alpha").await;
    let b = tenant(&server, "Beta").await;
    let before = snapshot(&server, &a).await;
    let missing_member = "mem_0000000000000000000000000000dead";
    let missing_purchase = "pur_0000000000000000000000000000dead";
    let missing_store = "sto_0000000000000000000000000000dead";
    let missing_package = "pkg_0000000000000000000000000000dead";
    let missing_card = "card_0000000000000000000000000000dead";
    let missing_key = "key_0000000000000000000000000000dead";

    let purchase = |member: &str, store: &str| {
        json!({"member_id": member, "store_id": store,
               "items": [{"sku": "TEA", "quantity": 1, "unit_price": "10.00"}],
               "payments": [{"method": "cash", "amount": "10.00"}]})
    };
    let top_up =
        |store: &str| json!({"amount": "100.00", "store_id": store, "payment_method": "cash"});
    let sale = |package: &str, store: &str| json!({"package_id": package, "store_id": store, "payment_method": "cash"});
    let uses = |store: &str| json!({"uses": 1, "store_id": store});
    let points = json!({"points": 10, "reason": "probe"});
    let negative = json!({"points": -10, "reason": "probe"});

    let probes = vec![
        probe(
            "GET member",
            Method::GET,
            format!("/v1/members/{}", a.member),
            format!("/v1/members/{missing_member}"),
        ),
        with_body(
            probe(
                "PATCH member",
                Method::PATCH,
                format!("/v1/members/{}", a.member),
                format!("/v1/members/{missing_member}"),
            ),
            json!({"name": "Mallory", "phone": "13900139000"}),
            json!({"name": "Mallory", "phone": "13900139000"}),
        ),
        probe(
            "GET balances",
            Method::GET,
            format!("/v1/members/{}/balances", a.member),
            format!("/v1/members/{missing_member}/balances"),
        ),
        probe(
            "GET ledger",
            Method::GET,
            format!("/v1/members/{}/ledger", a.member),
            format!("/v1/members/{missing_member}/ledger"),
        ),
        probe(
            "GET purchase",
            Method::GET,
            format!("/v1/purchases/{}", a.purchase),
            format!("/v1/purchases/{missing_purchase}"),
        ),
        with_body(
            probe(
                "refund (rest)",
                Method::POST,
                format!("/v1/purchases/{}/refunds", a.purchase),
                format!("/v1/purchases/{missing_purchase}/refunds"),
            ),
            json!({}),
            json!({}),
        ),
        with_body(
            probe(
                "refund (amount)",
                Method::POST,
                format!("/v1/purchases/{}/refunds", a.purchase),
                format!("/v1/purchases/{missing_purchase}/refunds"),
            ),
            json!({"amount": "10.00"}),
            json!({"amount": "10.00"}),
        ),
        with_body(
            probe(
                "refund (items)",
                Method::POST,
                format!("/v1/purchases/{}/refunds", a.purchase),
                format!("/v1/purchases/{missing_purchase}/refunds"),
            ),
            json!({"items": [{"sku": "TEA", "quantity": 1}]}),
            json!({"items": [{"sku": "TEA", "quantity": 1}]}),
        ),
        with_body(
            probe(
                "redemption",
                Method::POST,
                format!("/v1/members/{}/points/redemptions", a.member),
                format!("/v1/members/{missing_member}/points/redemptions"),
            ),
            points.clone(),
            points.clone(),
        ),
        with_body(
            probe(
                "adjustment (+)",
                Method::POST,
                format!("/v1/members/{}/points/adjustments", a.member),
                format!("/v1/members/{missing_member}/points/adjustments"),
            ),
            points.clone(),
            points.clone(),
        ),
        with_body(
            probe(
                "adjustment (-)",
                Method::POST,
                format!("/v1/members/{}/points/adjustments", a.member),
                format!("/v1/members/{missing_member}/points/adjustments"),
            ),
            negative.clone(),
            negative.clone(),
        ),
        with_body(
            probe(
                "top-up of A's member",
                Method::POST,
                format!("/v1/members/{}/stored-value/top-ups", a.member),
                format!("/v1/members/{missing_member}/stored-value/top-ups"),
            ),
            top_up(&b.store),
            top_up(&b.store),
        ),
        with_body(
            probe(
                "top-up at A's store",
                Method::POST,
                format!("/v1/members/{}/stored-value/top-ups", b.member),
                format!("/v1/members/{}/stored-value/top-ups", b.member),
            ),
            top_up(&a.store),
            top_up(missing_store),
        ),
        with_body(
            probe(
                "count-card sale to A's member",
                Method::POST,
                format!("/v1/members/{}/count-cards", a.member),
                format!("/v1/members/{missing_member}/count-cards"),
            ),
            sale(&b.package, &b.store),
            sale(&b.package, &b.store),
        ),
        with_body(
            probe(
                "count-card sale of A's package",
                Method::POST,
                format!("/v1/members/{}/count-cards", b.member),
                format!("/v1/members/{}/count-cards", b.member),
            ),
            sale(&a.package, &b.store),
            sale(missing_package, &b.store),
        ),
        with_body(
            probe(
                "count-card sale at A's store",
                Method::POST,
                format!("/v1/members/{}/count-cards", b.member),
                format!("/v1/members/{}/count-cards", b.member),
            ),
            sale(&b.package, &a.store),
            sale(&b.package, missing_store),
        ),
        with_body(
            probe(
                "consumption of A's card by A's member",
                Method::POST,
                format!(
                    "/v1/members/{}/count-cards/{}/consumptions",
                    a.member, a.card
                ),
                format!("/v1/members/{missing_member}/count-cards/{missing_card}/consumptions"),
            ),
            uses(&b.store),
            uses(&b.store),
        ),
        with_body(
            probe(
                "consumption of A's card by B's member",
                Method::POST,
                format!(
                    "/v1/members/{}/count-cards/{}/consumptions",
                    b.member, a.card
                ),
                format!(
                    "/v1/members/{}/count-cards/{missing_card}/consumptions",
                    b.member
                ),
            ),
            uses(&b.store),
            uses(&b.store),
        ),
        with_body(
            probe(
                "consumption at A's store",
                Method::POST,
                format!(
                    "/v1/members/{}/count-cards/{}/consumptions",
                    b.member, b.card
                ),
                format!(
                    "/v1/members/{}/count-cards/{}/consumptions",
                    b.member, b.card
                ),
            ),
            uses(&a.store),
            uses(missing_store),
        ),
        probe(
            "GET store",
            Method::GET,
            format!("/v1/stores/{}", a.store),
            format!("/v1/stores/{missing_store}"),
        ),
        probe(
            "GET count-card package",
            Method::GET,
            format!("/v1/count-card-packages/{}", a.package),
            format!("/v1/count-card-packages/{missing_package}"),
        ),
        probe(
            "revoke A's api key",
            Method::DELETE,
            format!("/v1/api-keys/{}", a.key_id),
            format!("/v1/api-keys/{missing_key}"),
        ),
        probe(
            "revoke A's admin key",
            Method::DELETE,
            format!("/v1/api-keys/{}", admin_key_id(&server, &a).await),
            format!("/v1/api-keys/{missing_key}"),
        ),
        with_body(
            probe(
                "purchase for A's member",
                Method::POST,
                "/v1/purchases".into(),
                "/v1/purchases".into(),
            ),
            purchase(&a.member, &b.store),
            purchase(missing_member, &b.store),
        ),
        with_body(
            probe(
                "purchase at A's store",
                Method::POST,
                "/v1/purchases".into(),
                "/v1/purchases".into(),
            ),
            purchase(&b.member, &a.store),
            purchase(&b.member, missing_store),
        ),
        with_body(
            probe(
                "purchase for A's member at A's store",
                Method::POST,
                "/v1/purchases".into(),
                "/v1/purchases".into(),
            ),
            purchase(&a.member, &a.store),
            purchase(missing_member, missing_store),
        ),
    ];

    // B's admin key and B's pos key both see A's ids as missing.
    for key in [&b.merchant.key, &b.key] {
        for probe in &probes {
            let is_admin_only = probe.what.starts_with("adjustment")
                || probe.what.starts_with("revoke")
                || probe.what.starts_with("GET store")
                || probe.what.starts_with("GET count");
            if key == &b.key && is_admin_only && probe.method != Method::GET {
                // pos may not adjust or revoke at all: a 403 says nothing about A.
                let foreign = send(
                    &server,
                    key,
                    &probe.method,
                    &probe.foreign_path,
                    probe.foreign_body.as_ref(),
                )
                .await;
                foreign.problem(403);
                continue;
            }
            let missing = send(
                &server,
                key,
                &probe.method,
                &probe.missing_path,
                probe.missing_body.as_ref(),
            )
            .await;
            let foreign = send(
                &server,
                key,
                &probe.method,
                &probe.foreign_path,
                probe.foreign_body.as_ref(),
            )
            .await;
            let missing_problem = missing.problem(404).clone();
            let foreign_problem = foreign.problem(404);
            for field in ["type", "title", "status"] {
                assert_eq!(
                    foreign_problem[field], missing_problem[field],
                    "{}: A's id answers {} but a missing id answers {}",
                    probe.what, foreign.text, missing.text
                );
            }
            if missing_problem["detail"] != foreign_problem["detail"] {
                // Which entity is missing may differ (a missing member vs a missing card);
                // the detail must never say that the entity exists elsewhere.
                let detail = foreign_problem["detail"].as_str().unwrap_or_default();
                assert!(
                    detail.ends_with("not found"),
                    "{}: detail {detail:?} vs {:?}",
                    probe.what,
                    missing_problem["detail"]
                );
            }
            for id in [
                &a.merchant.id,
                &a.member,
                &a.purchase,
                &a.store,
                &a.package,
                &a.card,
            ] {
                assert!(
                    !foreign.text.contains(id.as_str()) || probe.foreign_path.contains(id.as_str()),
                    "{}: the answer leaks {id}: {}",
                    probe.what,
                    foreign.text
                );
            }
        }
    }

    // B replaying A's Idempotency-Key with A's exact body does not get A's answer.
    let replay = server
        .post_idem(
            "/v1/purchases",
            &b.merchant.key,
            &a.purchase_idempotency_key,
            &a.purchase_body,
        )
        .await;
    replay.problem(404);
    // A's own replay still answers A's purchase.
    let own = server
        .post_idem(
            "/v1/purchases",
            &a.merchant.key,
            &a.purchase_idempotency_key,
            &a.purchase_body,
        )
        .await;
    assert_eq!(own.ok(201)["id"], a.purchase.as_str());

    // Nothing of A's changed, and A's keys still work.
    let after = snapshot(&server, &a).await;
    let labels = [
        "member",
        "balances",
        "ledger",
        "purchase",
        "store",
        "package",
        "api keys",
        "member list",
        "store list",
        "package list",
    ];
    for ((label, before), after) in labels.iter().zip(&before).zip(&after) {
        assert_eq!(before, after, "A's {label} changed");
    }
    server.get("/v1/stores", &a.key).await.ok(200);
    server.get("/v1/merchant", &a.merchant.key).await.ok(200);
    server.verify().await;
}

async fn admin_key_id(server: &TestServer, tenant: &Tenant) -> String {
    let list = server
        .get("/v1/api-keys?limit=200", &tenant.merchant.key)
        .await;
    list.ok(200)["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["scopes"] == json!(["admin"]))
        .and_then(|item| item["id"].as_str())
        .expect("the merchant's admin key is listed")
        .to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect()
}

async fn lists_never_show_foreign_rows(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = tenant(&server, "Alpha").await;
    let b = tenant(&server, "Beta").await;
    let a_admin = admin_key_id(&server, &a).await;
    let a_ids = [
        a.member.clone(),
        a.store.clone(),
        a.package.clone(),
        a.key_id.clone(),
        a_admin,
        a.purchase.clone(),
        a.card.clone(),
    ];
    for key in [&b.merchant.key, &b.key] {
        for path in [
            "/v1/members?limit=200",
            "/v1/members?phone=13800138000",
            "/v1/members?phone=%2B8613800138000",
            "/v1/members?external_id=crm-1",
            "/v1/stores?limit=200",
            "/v1/count-card-packages?limit=200",
        ] {
            let response = server.get(path, key).await;
            let page = response.ok(200).clone();
            let listed = ids(&page);
            assert!(!listed.is_empty(), "B sees its own rows at {path}");
            for id in &a_ids {
                assert!(!listed.contains(id), "B's {path} lists A's {id}");
                assert!(
                    !response.text.contains(id.as_str()),
                    "B's {path} mentions A's {id}"
                );
            }
        }
    }
    let keys = server.get("/v1/api-keys?limit=200", &b.merchant.key).await;
    let listed = ids(keys.ok(200));
    assert_eq!(listed.len(), 2, "B's admin and pos keys: {}", keys.text);
    for id in &a_ids {
        assert!(!listed.contains(id), "B's key list shows A's {id}");
    }
    // The lookups find exactly B's member.
    let found = server
        .get("/v1/members?phone=13800138000", &b.merchant.key)
        .await;
    assert_eq!(ids(found.ok(200)), std::slice::from_ref(&b.member));
    let found = server
        .get("/v1/members?external_id=crm-1", &b.merchant.key)
        .await;
    assert_eq!(ids(found.ok(200)), std::slice::from_ref(&b.member));
    // B's ledger and balances are B's alone.
    let ledger = server
        .get(
            &format!("/v1/members/{}/ledger?limit=200", b.member),
            &b.merchant.key,
        )
        .await;
    for id in &a_ids {
        assert!(!ledger.ok(200).to_string().contains(id.as_str()));
    }
    let balances = server
        .get(
            &format!("/v1/members/{}/balances", b.member),
            &b.merchant.key,
        )
        .await;
    let balances = balances.ok(200);
    let cards = balances["count_cards"].as_array().expect("cards");
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["id"], b.card.as_str());
    // Each merchant reads only itself.
    let own = server.get("/v1/merchant", &b.key).await;
    assert_eq!(own.ok(200)["id"], b.merchant.id.as_str());
    server.verify().await;
}

/// A request sent with A's id and with a missing one: method, (paths), (bodies).
type Pair = (Method, (String, String), Option<(Value, Value)>);

/// A's programme: tiers, a coupon, a gift, a webhook, a campaign, events and a transaction.
struct Programme {
    coupon: String,
    template: String,
    gift: String,
    webhook: String,
    campaign: String,
    event: String,
    transaction: String,
}

async fn programme(server: &TestServer, a: &Tenant) -> Programme {
    let key = &a.merchant.key;
    server
        .put(
            "/v1/tiers",
            key,
            &json!({"tiers": [{"code": "silver", "name": "Silver"}]}),
        )
        .await
        .ok(200);
    server
        .put(
            &format!("/v1/members/{}/tier", a.member),
            key,
            &json!({"tier": "silver", "reason": "founding member"}),
        )
        .await
        .ok(200);
    let template = server
        .post(
            "/v1/coupon-templates",
            key,
            &json!({"code": "TEN", "name": "Ten off", "kind": "amount_off", "value": "10.00", "valid_days": 30}),
        )
        .await
        .id();
    let coupon = server
        .post(
            &format!("/v1/members/{}/coupons", a.member),
            key,
            &json!({"template_id": template}),
        )
        .await
        .id();
    let gift = server
        .post(
            "/v1/gifts",
            key,
            &json!({"name": "Mug", "points_cost": 1, "stock": 5}),
        )
        .await
        .id();
    let webhook = server
        .post(
            "/v1/webhooks",
            key,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": "0123456789abcdef"}),
        )
        .await
        .id();
    let plugin = server
        .upload_plugin(
            key,
            Some(&json!({"name": "campaign-birthday", "version": "0.1.0", "world": "campaign-trigger"})),
            Some(loyalty_tests::component("campaign_birthday")),
        )
        .await
        .ok(201)["id"]
        .clone();
    let campaign = server
        .post(
            "/v1/campaigns",
            key,
            &json!({"name": "Birthday", "plugin_id": plugin, "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z"}),
        )
        .await
        .id();
    let event = server.get("/v1/events?limit=1", key).await.ok(200)["items"][0]["id"]
        .as_str()
        .expect("an event")
        .to_string();
    let transaction = server
        .get(&format!("/v1/purchases/{}", a.purchase), key)
        .await
        .ok(200)["transaction_id"]
        .as_str()
        .expect("a transaction")
        .to_string();
    Programme {
        coupon,
        template,
        gift,
        webhook,
        campaign,
        event,
        transaction,
    }
}

async fn programme_ids_are_isolated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = tenant(&server, "Alpha").await;
    let b = tenant(&server, "Beta").await;
    let p = programme(&server, &a).await;
    let missing_id = "x_0000000000000000000000000000dead";
    let missing = missing_id;
    let member_probe = |path: &str| (path.replace("{}", &a.member), path.replace("{}", missing));
    let mut pairs: Vec<Pair> = vec![
        (
            Method::GET,
            member_probe("/v1/members/{}/tier-history"),
            None,
        ),
        (Method::GET, member_probe("/v1/members/{}/coupons"), None),
        (Method::GET, member_probe("/v1/members/{}/tags"), None),
        (
            Method::GET,
            member_probe("/v1/members/{}/recommendations"),
            None,
        ),
        (
            Method::PUT,
            member_probe("/v1/members/{}/tier"),
            Some((
                json!({"tier": null, "reason": "probe"}),
                json!({"tier": null, "reason": "probe"}),
            )),
        ),
        (
            Method::POST,
            member_probe("/v1/members/{}/gift-redemptions"),
            Some((
                json!({"gift_id": "gft_probe", "quantity": 1, "store_id": b.store}),
                json!({"gift_id": "gft_probe", "quantity": 1, "store_id": b.store}),
            )),
        ),
        (
            Method::GET,
            (
                format!("/v1/gifts/{}", p.gift),
                format!("/v1/gifts/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/coupon-templates/{}", p.template),
                format!("/v1/coupon-templates/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/webhooks/{}", p.webhook),
                format!("/v1/webhooks/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/webhooks/{}/deliveries", p.webhook),
                format!("/v1/webhooks/{missing}/deliveries"),
            ),
            None,
        ),
        (
            Method::DELETE,
            (
                format!("/v1/webhooks/{}", p.webhook),
                format!("/v1/webhooks/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/campaigns/{}", p.campaign),
                format!("/v1/campaigns/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/campaigns/{}/stats", p.campaign),
                format!("/v1/campaigns/{missing}/stats"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/events/{}", p.event),
                format!("/v1/events/{missing}"),
            ),
            None,
        ),
        (
            Method::GET,
            (
                format!("/v1/transactions/{}/explain", p.transaction),
                format!("/v1/transactions/{missing}/explain"),
            ),
            None,
        ),
        (
            Method::POST,
            (
                format!("/v1/transactions/{}/replay", p.transaction),
                format!("/v1/transactions/{missing}/replay"),
            ),
            Some((json!({}), json!({}))),
        ),
    ];
    // B's member redeeming A's gift, B's member paying with A's coupon: like missing ones.
    pairs.push((
        Method::POST,
        (
            format!("/v1/members/{}/gift-redemptions", b.member),
            format!("/v1/members/{}/gift-redemptions", b.member),
        ),
        Some((
            json!({"gift_id": p.gift, "quantity": 1, "store_id": b.store}),
            json!({"gift_id": missing, "quantity": 1, "store_id": b.store}),
        )),
    ));
    let pay_with = |coupon: &str| {
        json!({"member_id": b.member, "store_id": b.store, "coupons": [coupon],
            "items": [{"sku": "TEA", "quantity": 2, "unit_price": "10.00"}],
            "payments": [{"method": "cash", "amount": "10.00"}]})
    };
    pairs.push((
        Method::POST,
        ("/v1/purchases".into(), "/v1/purchases".into()),
        Some((pay_with(&p.coupon), pay_with(missing))),
    ));
    pairs.push((
        Method::POST,
        (
            format!("/v1/members/{}/coupons", b.member),
            format!("/v1/members/{}/coupons", b.member),
        ),
        Some((
            json!({"template_id": p.template}),
            json!({"template_id": missing}),
        )),
    ));
    for (method, (foreign_path, missing_path), bodies) in &pairs {
        let (foreign_body, missing_body) = match bodies {
            Some((foreign, missing)) => (Some(foreign), Some(missing)),
            None => (None, None),
        };
        let foreign = send(&server, &b.merchant.key, method, foreign_path, foreign_body).await;
        let missing = send(&server, &b.merchant.key, method, missing_path, missing_body).await;
        assert!(
            foreign.status >= 400,
            "{method} {foreign_path}: A's id answered {}: {}",
            foreign.status,
            foreign.text
        );
        let foreign_problem = foreign.problem(missing.status).clone();
        let missing_problem = missing.problem(missing.status);
        for field in ["type", "title", "status"] {
            assert_eq!(
                foreign_problem[field], missing_problem[field],
                "{method} {foreign_path}: {} vs {}",
                foreign.text, missing.text
            );
        }
        assert_eq!(
            foreign_problem["errors"]
                .to_string()
                .replace(&p.coupon, missing_id)
                .replace(&p.gift, missing_id)
                .replace(&p.template, missing_id),
            missing_problem["errors"].to_string(),
            "{method} {foreign_path}: field errors differ"
        );
        for id in [
            &a.member,
            &p.coupon,
            &p.gift,
            &p.webhook,
            &p.campaign,
            &p.event,
            &p.transaction,
        ] {
            assert!(
                !foreign.text.contains(id.as_str()) || foreign_path.contains(id.as_str()),
                "{method} {foreign_path}: the answer leaks {id}: {}",
                foreign.text
            );
        }
    }
    // A's programme is as it was.
    let coupons = server
        .get(
            &format!("/v1/members/{}/coupons", a.member),
            &a.merchant.key,
        )
        .await
        .ok(200)["items"][0]["state"]
        .clone();
    assert_eq!(coupons, "issued");
    let gift = server
        .get(&format!("/v1/gifts/{}", p.gift), &a.merchant.key)
        .await
        .ok(200)["stock"]
        .clone();
    assert_eq!(gift, 5);
    let webhook = server
        .get(&format!("/v1/webhooks/{}", p.webhook), &a.merchant.key)
        .await
        .ok(200)["active"]
        .clone();
    assert_eq!(webhook, true);
    let tier = server
        .get(&format!("/v1/members/{}", a.member), &a.merchant.key)
        .await
        .ok(200)["tier"]
        .clone();
    assert_eq!(tier, "silver");
    // B's lists hold none of A's rows.
    for path in [
        "/v1/events?limit=200",
        "/v1/webhooks",
        "/v1/campaigns",
        "/v1/gifts",
        "/v1/coupon-templates",
        "/v1/tiers",
        "/v1/ticks",
    ] {
        let text = server.get(path, &b.merchant.key).await.ok(200).to_string();
        for id in [
            &a.member,
            &p.webhook,
            &p.campaign,
            &p.gift,
            &p.template,
            &p.event,
        ] {
            assert!(!text.contains(id.as_str()), "{path} shows A's {id}");
        }
    }
    server.verify().await;
}

backend_tests!(
    foreign_ids_are_missing_ids,
    lists_never_show_foreign_rows,
    programme_ids_are_isolated
);
