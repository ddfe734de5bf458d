//! HTTP-level tests of every endpoint, success and failure, on SQLite and PostgreSQL.
//! The contract is the API section of the foundation issue: paths, field names, statuses,
//! problem+json errors, Idempotency-Key semantics.

use std::time::Duration;

use loyalty_tests::{backend_tests, json, Backend, Merchant, Response, TestServer, OPERATOR_KEY};
use reqwest::Method;
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

fn idem() -> String {
    format!("k-{}", uuid::Uuid::now_v7().simple())
}

/// The field paths of a validation problem.
fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|error| error["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_field(problem: &Value, field: &str) {
    let names = fields(problem);
    assert!(
        names.iter().any(|name| name == field),
        "expected a validation error on {field}, got {names:?}: {problem}"
    );
}

/// A request the helpers of the harness cannot send: raw bytes, own headers.
async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Response {
    let mut request = server
        .client
        .request(method, format!("{}{}", server.base_url, path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    Response::read(request.send().await.expect("the server answers")).await
}

/// A merchant with one store, ready for business.
struct Shop {
    server: TestServer,
    merchant: Merchant,
    store: String,
}

async fn shop(backend: Backend) -> Shop {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    let store = server.store(&merchant.key).await;
    Shop {
        server,
        merchant,
        store,
    }
}

impl Shop {
    fn key(&self) -> &str {
        &self.merchant.key
    }

    async fn member(&self, phone: &str) -> String {
        self.server
            .post("/v1/members", self.key(), &json!({"phone": phone}))
            .await
            .ok(201)["id"]
            .as_str()
            .expect("member id")
            .to_string()
    }

    async fn settings(&self, settings: Value) -> Value {
        self.server
            .patch("/v1/merchant", self.key(), &json!({ "settings": settings }))
            .await
            .ok(200)
            .clone()
    }

    async fn purchase(&self, member: &str, items: Value, payments: Value) -> Response {
        self.server
            .post_idem(
                "/v1/purchases",
                self.key(),
                &idem(),
                &json!({"member_id": member, "store_id": self.store,
                        "items": items, "payments": payments}),
            )
            .await
    }

    /// One item of `amount`, paid cash.
    async fn cash_purchase(&self, member: &str, amount: &str) -> Response {
        self.purchase(
            member,
            json!([{"sku": "ITEM", "quantity": 1, "unit_price": amount}]),
            json!([{"method": "cash", "amount": amount}]),
        )
        .await
    }

    async fn refund(&self, purchase: &str, body: Value) -> Response {
        self.server
            .post_idem(
                &format!("/v1/purchases/{purchase}/refunds"),
                self.key(),
                &idem(),
                &body,
            )
            .await
    }

    async fn balances(&self, member: &str) -> Value {
        self.server
            .get(&format!("/v1/members/{member}/balances"), self.key())
            .await
            .ok(200)
            .clone()
    }

    async fn ledger(&self, member: &str) -> Vec<Value> {
        self.server
            .get(
                &format!("/v1/members/{member}/ledger?limit=200"),
                self.key(),
            )
            .await
            .ok(200)["items"]
            .as_array()
            .expect("items")
            .clone()
    }

    async fn top_up(&self, member: &str, amount: &str) -> Response {
        self.server
            .post_idem(
                &format!("/v1/members/{member}/stored-value/top-ups"),
                self.key(),
                &idem(),
                &json!({"amount": amount, "store_id": self.store, "payment_method": "cash"}),
            )
            .await
    }

    async fn adjust(&self, member: &str, points: i64) -> Response {
        self.server
            .post_idem(
                &format!("/v1/members/{member}/points/adjustments"),
                self.key(),
                &idem(),
                &json!({"points": points, "reason": "goodwill"}),
            )
            .await
    }

    async fn redeem(&self, member: &str, points: i64) -> Response {
        self.server
            .post_idem(
                &format!("/v1/members/{member}/points/redemptions"),
                self.key(),
                &idem(),
                &json!({"points": points, "reason": "gift"}),
            )
            .await
    }

    async fn api_key(&self, scopes: Value) -> (String, String) {
        let response = self
            .server
            .post(
                "/v1/api-keys",
                self.key(),
                &json!({"name": "till", "scopes": scopes}),
            )
            .await;
        let body = response.ok(201);
        (
            body["id"].as_str().expect("id").to_string(),
            body["key"].as_str().expect("key").to_string(),
        )
    }
}

fn available(balances: &Value) -> i64 {
    balances["points"]["available"].as_i64().expect("available")
}

fn pending(balances: &Value) -> i64 {
    balances["points"]["pending"].as_i64().expect("pending")
}

// ---------------------------------------------------------------------------------------
// Merchants

async fn merchants_create_and_authenticate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({"name": "Tea House", "currency": "CNY", "timezone": "Asia/Shanghai"});
    let created = server
        .call(
            Method::POST,
            "/v1/merchants",
            Some(OPERATOR_KEY),
            None,
            Some(&body),
        )
        .await;
    let merchant = created.ok(201);
    assert_eq!(merchant["name"], "Tea House");
    assert_eq!(merchant["currency"], "CNY");
    assert!(merchant["id"].as_str().is_some_and(|id| !id.is_empty()));
    let admin_key = merchant["api_key"]
        .as_str()
        .expect("an admin key")
        .to_string();

    // Without a key, with a wrong key, with a merchant's key instead of the operator's.
    server
        .call(Method::POST, "/v1/merchants", None, None, Some(&body))
        .await
        .problem(401);
    server
        .call(
            Method::POST,
            "/v1/merchants",
            Some("not-the-operator-key"),
            None,
            Some(&body),
        )
        .await
        .problem(401);
    server
        .call(
            Method::POST,
            "/v1/merchants",
            Some(&admin_key),
            None,
            Some(&body),
        )
        .await
        .problem(401);

    // Bad currency, empty name.
    let bad = server
        .call(
            Method::POST,
            "/v1/merchants",
            Some(OPERATOR_KEY),
            None,
            Some(&json!({"name": "X", "currency": "XYZ"})),
        )
        .await;
    assert_field(bad.problem(422), "currency");
    let bad = server
        .call(
            Method::POST,
            "/v1/merchants",
            Some(OPERATOR_KEY),
            None,
            Some(&json!({"name": "  ", "currency": "CNY"})),
        )
        .await;
    assert_field(bad.problem(422), "name");

    // The admin key reads its own merchant; bad keys are 401.
    let own = server.get("/v1/merchant", &admin_key).await;
    let own = own.ok(200);
    assert_eq!(own["id"], merchant["id"]);
    assert_eq!(own["currency"], "CNY");
    assert!(own["settings"].is_object(), "settings: {own}");
    server
        .call(Method::GET, "/v1/merchant", None, None, None)
        .await
        .problem(401);
    server
        .get("/v1/merchant", "lk_0000000000000000")
        .await
        .problem(401);
    raw(
        &server,
        Method::GET,
        "/v1/merchant",
        &[("Authorization", &format!("Basic {admin_key}"))],
        None,
    )
    .await
    .problem(401);
    // The operator key is no merchant key.
    server.get("/v1/merchant", OPERATOR_KEY).await.problem(401);
}

async fn merchant_settings(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let defaults = server.get("/v1/merchant", shop.key()).await.ok(200).clone();
    let settings = &defaults["settings"];
    for field in [
        "points_per_currency_unit",
        "points_pending_days",
        "points_expiry_days",
        "stored_value_bonus_rules",
        "allow_negative_points",
    ] {
        assert!(
            settings.get(field).is_some(),
            "settings lack {field}: {settings}"
        );
    }

    let patched = shop
        .settings(json!({
            "points_per_currency_unit": "2",
            "points_pending_days": 3,
            "points_expiry_days": 90,
            "stored_value_bonus_rules": [{"min_top_up": "500", "bonus": "100"}],
            "allow_negative_points": true
        }))
        .await;
    let settings = &patched["settings"];
    assert_eq!(settings["points_per_currency_unit"], "2");
    assert_eq!(settings["points_pending_days"], 3);
    assert_eq!(settings["points_expiry_days"], 90);
    assert_eq!(settings["allow_negative_points"], true);
    assert_eq!(
        settings["stored_value_bonus_rules"][0]["min_top_up"],
        "500.00"
    );
    assert_eq!(settings["stored_value_bonus_rules"][0]["bonus"], "100.00");
    // A partial patch keeps the rest.
    let patched = shop.settings(json!({"points_pending_days": 0})).await;
    assert_eq!(patched["settings"]["points_per_currency_unit"], "2");
    assert_eq!(patched["settings"]["points_pending_days"], 0);
    assert_eq!(patched["settings"]["allow_negative_points"], true);

    // Invalid settings: 422 naming the field, and nothing changes.
    for (settings, field) in [
        (
            json!({"points_per_currency_unit": "-1"}),
            "settings.points_per_currency_unit",
        ),
        (
            json!({"points_per_currency_unit": "lots"}),
            "settings.points_per_currency_unit",
        ),
        (
            json!({"points_pending_days": 100000}),
            "settings.points_pending_days",
        ),
        (
            json!({"points_expiry_days": 0}),
            "settings.points_expiry_days",
        ),
        (
            json!({"stored_value_bonus_rules": [{"min_top_up": "500.001", "bonus": "1"}]}),
            "settings.stored_value_bonus_rules[0].min_top_up",
        ),
        (
            json!({"points_pending_days": 1, "currency_per_point": "0"}),
            "settings.currency_per_point",
        ),
    ] {
        let response = server
            .patch("/v1/merchant", shop.key(), &json!({ "settings": settings }))
            .await;
        assert_field(response.problem(422), field);
    }
    let duplicate = server
        .patch(
            "/v1/merchant",
            shop.key(),
            &json!({"settings": {"stored_value_bonus_rules": [
                {"min_top_up": "500", "bonus": "100"}, {"min_top_up": "500.00", "bonus": "50"}]}}),
        )
        .await;
    assert_field(duplicate.problem(422), "settings.stored_value_bonus_rules");
    assert_field(
        server
            .patch("/v1/merchant", shop.key(), &json!({"name": " "}))
            .await
            .problem(422),
        "name",
    );
    // Unknown setting, wrong type.
    server
        .patch(
            "/v1/merchant",
            shop.key(),
            &json!({"settings": {"points_per_dollar": "3"}}),
        )
        .await
        .problem(422);
    server
        .patch(
            "/v1/merchant",
            shop.key(),
            &json!({"settings": {"allow_negative_points": "yes"}}),
        )
        .await
        .problem(422);
    let after = server.get("/v1/merchant", shop.key()).await.ok(200).clone();
    assert_eq!(
        after["settings"], patched["settings"],
        "a refused patch changed settings"
    );

    // The settings take effect: 2 points per unit.
    let member = shop.member("13800138000").await;
    let purchase = shop.cash_purchase(&member, "25.00").await;
    assert_eq!(purchase.ok(201)["points_awarded"], 50);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// API keys and scopes

/// A host remembers an authenticated key for `PRINCIPAL_TTL_MS`: the host that revokes it
/// refuses it at once, another host of the same database within that time.
async fn revocation_reaches_other_hosts(backend: Backend) {
    let shop = &shop(backend).await;
    let other_host = TestServer::start_on(backend, shop.server.database_url.clone()).await;
    let (read_id, read_key) = shop.api_key(json!(["read"])).await;
    // Both hosts have seen the key; the other host remembers it from some moment between
    // these two instants.
    shop.server.get("/v1/merchant", &read_key).await.ok(200);
    let before_seen = std::time::Instant::now();
    other_host.get("/v1/merchant", &read_key).await.ok(200);
    let after_seen = std::time::Instant::now();
    shop.server
        .delete(&format!("/v1/api-keys/{read_id}"), shop.key())
        .await
        .ok(200);
    shop.server
        .get("/v1/merchant", &read_key)
        .await
        .problem(401);
    let ttl = Duration::from_millis(loyalty_host::principals::PRINCIPAL_TTL_MS);
    let remembered = other_host.get("/v1/merchant", &read_key).await;
    if before_seen.elapsed() < ttl {
        // Answered from the other host's memory, without reading the revoked key.
        remembered.ok(200);
    }
    tokio::time::sleep(
        (after_seen + ttl + Duration::from_millis(50))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    other_host.get("/v1/merchant", &read_key).await.problem(401);
}

async fn api_keys_and_scopes(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let (pos_id, pos_key) = shop.api_key(json!(["pos"])).await;
    let (read_id, read_key) = shop.api_key(json!(["read"])).await;
    assert!(
        pos_key.len() >= 32,
        "a key should be long and random: {pos_key}"
    );
    assert_ne!(pos_key, read_key);

    // Lists never show a secret.
    let list = server.get("/v1/api-keys", shop.key()).await;
    let items = list.ok(200)["items"].as_array().expect("items").clone();
    assert!(items.len() >= 3, "admin, pos and read keys: {}", list.text);
    for secret in [&pos_key, &read_key, &shop.merchant.key] {
        assert!(
            !list.text.contains(secret.as_str()),
            "the list shows a secret: {}",
            list.text
        );
    }
    for item in &items {
        assert!(
            item.get("key").is_none(),
            "a listed key has a secret: {item}"
        );
    }
    let pos_view = items
        .iter()
        .find(|item| item["id"] == pos_id)
        .expect("pos key listed");
    assert_eq!(pos_view["scopes"], json!(["pos"]));

    // Bad key requests.
    server
        .post(
            "/v1/api-keys",
            shop.key(),
            &json!({"name": "x", "scopes": []}),
        )
        .await
        .problem(422);
    server
        .post(
            "/v1/api-keys",
            shop.key(),
            &json!({"name": "x", "scopes": ["root"]}),
        )
        .await
        .problem(422);

    // `read` reads, and writes nothing.
    server.get("/v1/stores", &read_key).await.ok(200);
    server.get("/v1/merchant", &read_key).await.ok(200);
    server
        .get(&format!("/v1/members/{member}/balances"), &read_key)
        .await
        .ok(200);
    server
        .post("/v1/stores", &read_key, &json!({"code": "R", "name": "R"}))
        .await
        .problem(403);
    server
        .post("/v1/members", &read_key, &json!({"phone": "13900139000"}))
        .await
        .problem(403);
    server
        .post_idem(
            "/v1/purchases",
            &read_key,
            &idem(),
            &json!({"member_id": member, "store_id": shop.store,
                    "items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}],
                    "payments": [{"method": "cash", "amount": "1.00"}]}),
        )
        .await
        .problem(403);
    server
        .post_idem(
            &format!("/v1/members/{member}/points/redemptions"),
            &read_key,
            &idem(),
            &json!({"points": 1, "reason": "x"}),
        )
        .await
        .problem(403);
    server
        .patch("/v1/merchant", &read_key, &json!({"name": "Hacked"}))
        .await
        .problem(403);
    server.get("/v1/api-keys", &read_key).await.problem(403);

    // `pos` records purchases but may not adjust or configure.
    let purchase = server
        .post_idem(
            "/v1/purchases",
            &pos_key,
            &idem(),
            &json!({"member_id": member, "store_id": shop.store,
                    "items": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
                    "payments": [{"method": "cash", "amount": "10.00"}]}),
        )
        .await;
    assert_eq!(purchase.ok(201)["points_awarded"], 10);
    server
        .post_idem(
            &format!("/v1/members/{member}/points/adjustments"),
            &pos_key,
            &idem(),
            &json!({"points": 100, "reason": "x"}),
        )
        .await
        .problem(403);
    server
        .patch(
            "/v1/merchant",
            &pos_key,
            &json!({"settings": {"allow_negative_points": true}}),
        )
        .await
        .problem(403);
    server
        .post("/v1/stores", &pos_key, &json!({"code": "P", "name": "P"}))
        .await
        .problem(403);
    server
        .post(
            "/v1/api-keys",
            &pos_key,
            &json!({"name": "x", "scopes": ["admin"]}),
        )
        .await
        .problem(403);
    server
        .post(
            "/v1/count-card-packages",
            &pos_key,
            &json!({"name": "10 washes", "sku": "W10", "uses": 10, "price": "100.00", "valid_days": 30}),
        )
        .await
        .problem(403);
    assert_eq!(available(&shop.balances(&member).await), 10);

    // Revoke: the key answers 401 at once; the others still work.
    let revoked = server
        .delete(&format!("/v1/api-keys/{read_id}"), shop.key())
        .await;
    let revoked = revoked.ok(200);
    assert_eq!(revoked["id"], read_id.as_str());
    assert!(revoked["revoked_at"].is_string(), "revoked_at: {revoked}");
    server.get("/v1/stores", &read_key).await.problem(401);
    server.get("/v1/merchant", &read_key).await.problem(401);
    server.get("/v1/stores", &pos_key).await.ok(200);
    // Revoking a missing key is a 404; pos may not revoke.
    server
        .delete("/v1/api-keys/key_doesnotexist", shop.key())
        .await
        .problem(404);
    server
        .delete(&format!("/v1/api-keys/{pos_id}"), &pos_key)
        .await
        .problem(403);
    // Revoking twice keeps the first revocation.
    let again = server
        .delete(&format!("/v1/api-keys/{read_id}"), shop.key())
        .await;
    assert_eq!(again.ok(200)["revoked_at"], revoked["revoked_at"]);

    // Every endpoint wants a key.
    let id = "x_1";
    for (method, path) in [
        (Method::GET, "/v1/merchant".to_string()),
        (Method::PATCH, "/v1/merchant".to_string()),
        (Method::POST, "/v1/api-keys".to_string()),
        (Method::GET, "/v1/api-keys".to_string()),
        (Method::DELETE, format!("/v1/api-keys/{id}")),
        (Method::POST, "/v1/stores".to_string()),
        (Method::GET, "/v1/stores".to_string()),
        (Method::GET, format!("/v1/stores/{id}")),
        (Method::POST, "/v1/members".to_string()),
        (Method::GET, "/v1/members".to_string()),
        (Method::GET, format!("/v1/members/{member}")),
        (Method::PATCH, format!("/v1/members/{member}")),
        (Method::GET, format!("/v1/members/{member}/balances")),
        (Method::GET, format!("/v1/members/{member}/ledger")),
        (
            Method::POST,
            format!("/v1/members/{member}/points/redemptions"),
        ),
        (
            Method::POST,
            format!("/v1/members/{member}/points/adjustments"),
        ),
        (
            Method::POST,
            format!("/v1/members/{member}/stored-value/top-ups"),
        ),
        (Method::POST, format!("/v1/members/{member}/count-cards")),
        (
            Method::POST,
            format!("/v1/members/{member}/count-cards/{id}/consumptions"),
        ),
        (Method::POST, "/v1/purchases".to_string()),
        (Method::GET, format!("/v1/purchases/{id}")),
        (Method::POST, format!("/v1/purchases/{id}/refunds")),
        (Method::POST, "/v1/count-card-packages".to_string()),
        (Method::GET, "/v1/count-card-packages".to_string()),
        (Method::GET, format!("/v1/count-card-packages/{id}")),
        (
            Method::POST,
            "/v1/operator/jobs/points-lifecycle".to_string(),
        ),
    ] {
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        for key in [None, Some("lk_wrong"), Some(read_key.as_str())] {
            let response = server
                .call(method.clone(), &path, key, Some("idem-401"), body.as_ref())
                .await;
            assert_eq!(
                response.status, 401,
                "{method} {path} with {key:?}: {}",
                response.text
            );
            response.problem(401);
        }
    }
    // The lifecycle job is the operator's alone.
    server
        .call(
            Method::POST,
            "/v1/operator/jobs/points-lifecycle",
            Some(shop.key()),
            None,
            None,
        )
        .await
        .problem(401);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Stores

async fn stores(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let created = server
        .post(
            "/v1/stores",
            shop.key(),
            &json!({"code": "S2", "name": "Two"}),
        )
        .await;
    let store = created.ok(201).clone();
    assert_eq!(store["code"], "S2");
    assert_eq!(store["name"], "Two");
    let fetched = server
        .get(&format!("/v1/stores/{}", created.id()), shop.key())
        .await;
    assert_eq!(fetched.ok(200)["code"], "S2");
    // Duplicate code, bad input.
    server
        .post(
            "/v1/stores",
            shop.key(),
            &json!({"code": "S2", "name": "Again"}),
        )
        .await
        .problem(409);
    assert_field(
        server
            .post(
                "/v1/stores",
                shop.key(),
                &json!({"code": "", "name": "Empty"}),
            )
            .await
            .problem(422),
        "code",
    );
    assert_field(
        server
            .post("/v1/stores", shop.key(), &json!({"code": "S9", "name": ""}))
            .await
            .problem(422),
        "name",
    );
    server
        .get("/v1/stores/sto_doesnotexist", shop.key())
        .await
        .problem(404);

    // Pagination: 7 stores in pages of 3.
    for index in 3..=7 {
        server
            .post(
                "/v1/stores",
                shop.key(),
                &json!({"code": format!("S{index}"), "name": format!("Store {index}")}),
            )
            .await
            .ok(201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/stores?limit=3&cursor={cursor}"),
            None => "/v1/stores?limit=3".to_string(),
        };
        let page = server.get(&path, shop.key()).await.ok(200).clone();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|item| item["code"].as_str().unwrap().to_string()),
        );
        pages += 1;
        assert!(pages < 10, "pagination does not end");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["S1", "S2", "S3", "S4", "S5", "S6", "S7"]);
    assert!(pages >= 3);
    server
        .get("/v1/stores?limit=0", shop.key())
        .await
        .problem(422);
    server
        .get("/v1/stores?limit=abc", shop.key())
        .await
        .problem(422);
}

// ---------------------------------------------------------------------------------------
// Members

async fn members(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let created = server
        .post(
            "/v1/members",
            shop.key(),
            &json!({"phone": "13800138000", "name": "Li Lei", "birthday": "1990-05-17",
                    "email": "Li@Example.com", "external_id": "crm-1",
                    "attributes": {"vip": true}}),
        )
        .await;
    let member = created.ok(201).clone();
    let id = created.id();
    assert_eq!(member["phone"], "+8613800138000");
    assert_eq!(member["name"], "Li Lei");
    assert_eq!(member["birthday"], "1990-05-17");
    assert_eq!(member["external_id"], "crm-1");
    assert_eq!(member["attributes"]["vip"], true);
    assert!(member.get("tier").is_some(), "member lacks tier: {member}");
    assert!(member["joined_at"].is_string(), "joined_at: {member}");
    time_rfc3339(&member["joined_at"]);

    // Duplicate phone, in another notation.
    server
        .post(
            "/v1/members",
            shop.key(),
            &json!({"phone": "+86 138 0013 8000"}),
        )
        .await
        .problem(409);
    server
        .post("/v1/members", shop.key(), &json!({"external_id": "crm-1"}))
        .await
        .problem(409);
    // None of phone, email, external_id.
    server
        .post("/v1/members", shop.key(), &json!({"name": "Nobody"}))
        .await
        .problem(422);
    assert_field(
        server
            .post(
                "/v1/members",
                shop.key(),
                &json!({"phone": "13900139000", "birthday": "1990-13-45"}),
            )
            .await
            .problem(422),
        "birthday",
    );
    assert_field(
        server
            .post("/v1/members", shop.key(), &json!({"phone": "12"}))
            .await
            .problem(422),
        "phone",
    );
    assert_field(
        server
            .post("/v1/members", shop.key(), &json!({"email": "not-an-email"}))
            .await
            .problem(422),
        "email",
    );
    assert_field(
        server
            .post(
                "/v1/members",
                shop.key(),
                &json!({"phone": "13900139000", "attributes": [1, 2]}),
            )
            .await
            .problem(422),
        "attributes",
    );

    // GET, PATCH.
    let fetched = server.get(&format!("/v1/members/{id}"), shop.key()).await;
    assert_eq!(fetched.ok(200)["phone"], "+8613800138000");
    let patched = server
        .patch(
            &format!("/v1/members/{id}"),
            shop.key(),
            &json!({"name": "Han Meimei", "birthday": null}),
        )
        .await;
    let patched = patched.ok(200);
    assert_eq!(patched["name"], "Han Meimei");
    assert!(patched["birthday"].is_null());
    assert_eq!(patched["phone"], "+8613800138000");
    assert_field(
        server
            .patch(
                &format!("/v1/members/{id}"),
                shop.key(),
                &json!({"birthday": "yesterday"}),
            )
            .await
            .problem(422),
        "birthday",
    );
    server
        .patch(
            &format!("/v1/members/{id}"),
            shop.key(),
            &json!({"nickname": "x"}),
        )
        .await
        .problem(422);
    let other = shop.member("13900139000").await;
    server
        .patch(
            &format!("/v1/members/{other}"),
            shop.key(),
            &json!({"phone": "13800138000"}),
        )
        .await
        .problem(409);
    let only_phone = shop.member("13600136000").await;
    server
        .patch(
            &format!("/v1/members/{only_phone}"),
            shop.key(),
            &json!({"phone": null}),
        )
        .await
        .problem(422);
    server
        .get("/v1/members/mem_doesnotexist", shop.key())
        .await
        .problem(404);
    server
        .patch(
            "/v1/members/mem_doesnotexist",
            shop.key(),
            &json!({"name": "x"}),
        )
        .await
        .problem(404);
    // A refused patch changed nothing.
    let fetched = server.get(&format!("/v1/members/{id}"), shop.key()).await;
    assert_eq!(fetched.ok(200)["name"], "Han Meimei");

    // Lookups.
    let found = server
        .get("/v1/members?phone=13800138000", shop.key())
        .await;
    let items = found.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 1, "{}", found.text);
    assert_eq!(items[0]["id"], id.as_str());
    let found = server
        .get("/v1/members?phone=%2B8613800138000", shop.key())
        .await;
    assert_eq!(found.ok(200)["items"].as_array().unwrap().len(), 1);
    let found = server
        .get("/v1/members?external_id=crm-1", shop.key())
        .await;
    let items = found.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    let found = server
        .get("/v1/members?external_id=crm-404", shop.key())
        .await;
    assert!(found.ok(200)["items"].as_array().unwrap().is_empty());
    let found = server
        .get("/v1/members?phone=13700000000", shop.key())
        .await;
    assert!(found.ok(200)["items"].as_array().unwrap().is_empty());
    server
        .get("/v1/members?colour=blue", shop.key())
        .await
        .problem(422);

    // Pagination over 6 members.
    for phone in ["13700137001", "13700137002", "13700137003", "13700137004"] {
        shop.member(phone).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/members?limit=4".to_string();
    loop {
        let page = server.get(&path, shop.key()).await.ok(200).clone();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/members?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    let count = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(count, 7);
    assert_eq!(seen.len(), 7);
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp ("2024-05-01T12:00:00.123Z").
fn unix_seconds(value: &Value) -> i64 {
    let text = value.as_str().expect("a timestamp string");
    assert!(text.ends_with('Z'), "expected a UTC timestamp: {text}");
    let number = |range: std::ops::Range<usize>| -> i64 { text[range].parse().expect("digits") };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hour * 3_600 + minute * 60 + second
}

fn time_rfc3339(value: &Value) {
    let text = value.as_str().expect("a timestamp string");
    assert!(
        text.len() >= 20
            && text.as_bytes()[10] == b'T'
            && (text.ends_with('Z') || text.contains('+')),
        "not RFC 3339: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// Balances and ledger

async fn balances_and_ledger(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let empty = shop.balances(&member).await;
    assert_eq!(available(&empty), 0);
    assert_eq!(pending(&empty), 0);
    assert_eq!(empty["stored_value"]["principal"], "0.00");
    assert_eq!(empty["stored_value"]["bonus"], "0.00");
    assert_eq!(empty["stored_value"]["total"], "0.00");
    assert_eq!(empty["count_cards"], json!([]));
    assert!(shop.ledger(&member).await.is_empty());

    shop.top_up(&member, "100.00").await.ok(201);
    let purchase = shop.cash_purchase(&member, "30.00").await;
    let purchase_id = purchase.id();
    shop.adjust(&member, 5).await.ok(201);

    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 35);
    assert_eq!(balances["stored_value"]["principal"], "100.00");
    assert_eq!(balances["stored_value"]["total"], "100.00");
    // The purchase's lot expires first, the adjustment's a moment later on the same day:
    // the next expiry sums the points expiring within a day of it.
    assert_eq!(balances["points"]["expiring_next"]["points"], 35);
    time_rfc3339(&balances["points"]["expiring_next"]["at"]);

    let ledger = shop.ledger(&member).await;
    let kinds: Vec<&str> = ledger
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["points.adjustment", "purchase", "stored_value.top_up"]
    );
    let purchase_entry = &ledger[1];
    assert_eq!(purchase_entry["reference"], purchase_id.as_str());
    time_rfc3339(&purchase_entry["created_at"]);
    assert!(purchase_entry.get("reason").is_some());
    let postings = purchase_entry["postings"].as_array().expect("postings");
    assert!(postings.len() >= 2, "{purchase_entry}");
    let points_sum: i64 = postings
        .iter()
        .filter(|posting| posting["asset"] == "POINTS")
        .map(|posting| posting["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(points_sum, 0, "postings must balance: {purchase_entry}");
    assert!(postings
        .iter()
        .any(|posting| posting["amount"] == 30
            && posting["account"].as_str().unwrap().contains(&member)));
    let top_up = &ledger[2];
    assert!(top_up["postings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|posting| posting["asset"] == "CNY" && posting["amount"] == "100.00"));
    assert_eq!(ledger[0]["reason"], "goodwill");

    // Paging through the ledger.
    let first = server
        .get(&format!("/v1/members/{member}/ledger?limit=2"), shop.key())
        .await
        .ok(200)
        .clone();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = server
        .get(
            &format!("/v1/members/{member}/ledger?limit=2&cursor={cursor}"),
            shop.key(),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["kind"], "stored_value.top_up");
    assert!(second["next_cursor"].is_null());

    server
        .get("/v1/members/mem_doesnotexist/balances", shop.key())
        .await
        .problem(404);
    server
        .get("/v1/members/mem_doesnotexist/ledger", shop.key())
        .await
        .problem(404);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Purchases

async fn purchase_awards_points(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let response = server
        .post_idem(
            "/v1/purchases",
            shop.key(),
            &idem(),
            &json!({"member_id": member, "store_id": shop.store, "external_id": "R-1",
                    "items": [{"sku": "TEA", "name": "Tea", "category": "drinks", "quantity": 3, "unit_price": "12.50"},
                              {"sku": "CAKE", "quantity": 1, "unit_price": "8.99"}],
                    "payments": [{"method": "card", "amount": "40.00"}, {"method": "cash", "amount": "6.49"}]}),
        )
        .await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["total"], "46.49");
    assert_eq!(receipt["points_awarded"], 46);
    assert!(receipt["points_pending_until"].is_null());
    assert_eq!(receipt["balances"]["points"]["available"], 46);
    assert_eq!(receipt["member_id"], member.as_str());

    let detail = server
        .get(&format!("/v1/purchases/{}", response.id()), shop.key())
        .await
        .ok(200)
        .clone();
    assert_eq!(detail["total"], "46.49");
    assert_eq!(detail["external_id"], "R-1");
    assert_eq!(detail["items"].as_array().unwrap().len(), 2);
    assert_eq!(detail["items"][0]["total"], "37.50");
    assert_eq!(detail["payments"].as_array().unwrap().len(), 2);
    server
        .get("/v1/purchases/pur_doesnotexist", shop.key())
        .await
        .problem(404);

    let stats = server
        .get(&format!("/v1/members/{member}"), shop.key())
        .await
        .ok(200)["stats"]
        .clone();
    assert_eq!(stats["orders_count"], 1);
    assert_eq!(stats["lifetime_spend"], "46.49");

    // A JPY merchant has no minor units.
    let yen = server.merchant("Ramen", "JPY").await;
    let yen_store = server
        .post(
            "/v1/stores",
            &yen.key,
            &json!({"code": "T", "name": "Tokyo"}),
        )
        .await
        .id();
    let yen_member = server
        .post("/v1/members", &yen.key, &json!({"phone": "09012345678"}))
        .await;
    assert_eq!(yen_member.ok(201)["phone"], "+819012345678");
    let body = |price: &str| {
        json!({"member_id": yen_member.id(), "store_id": yen_store,
               "items": [{"sku": "R", "quantity": 1, "unit_price": price}],
               "payments": [{"method": "cash", "amount": price}]})
    };
    server
        .post_idem("/v1/purchases", &yen.key, &idem(), &body("980.5"))
        .await
        .problem(422);
    let yen_purchase = server
        .post_idem("/v1/purchases", &yen.key, &idem(), &body("980"))
        .await;
    assert_eq!(yen_purchase.ok(201)["total"], "980");
    server.verify().await;
}

async fn purchase_pending_then_active(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"points_pending_days": 7})).await;
    let member = shop.member("13800138000").await;
    let before = unix_now();
    let response = shop.cash_purchase(&member, "25.00").await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["points_awarded"], 25);
    let until = unix_seconds(&receipt["points_pending_until"]);
    let seven_days = 7 * 86_400;
    assert!(
        (until - before - seven_days).abs() < 120,
        "pending until {}, {} s from now",
        receipt["points_pending_until"],
        until - before
    );
    assert_eq!(receipt["balances"]["points"]["pending"], 25);
    assert_eq!(receipt["balances"]["points"]["available"], 0);
    let balances = shop.balances(&member).await;
    assert_eq!(pending(&balances), 25);
    assert_eq!(available(&balances), 0);
    // Pending points cannot be spent.
    shop.redeem(&member, 1).await.problem(422);

    // Partial refund within the return window takes from the pending lot.
    let refund = shop.refund(&response.id(), json!({"amount": "5.00"})).await;
    assert_eq!(refund.ok(201)["points_reversed"], 5);
    assert_eq!(pending(&shop.balances(&member).await), 20);

    // Not yet due: nothing happens.
    server.clock.advance(6 * DAY);
    shop.server.run_lifecycle().await;
    assert_eq!(pending(&shop.balances(&member).await), 20);

    server.clock.advance(2 * DAY);
    let run = server.run_lifecycle().await;
    assert_eq!(run["points_activated"], 20, "{run}");
    let balances = shop.balances(&member).await;
    assert_eq!(pending(&balances), 0);
    assert_eq!(available(&balances), 20);
    // Running again does nothing more.
    let run = server.run_lifecycle().await;
    assert_eq!(run["points_activated"], 0, "{run}");
    assert_eq!(available(&shop.balances(&member).await), 20);
    let ledger = shop.ledger(&member).await;
    assert_eq!(ledger[0]["kind"], "points.activation");
    shop.redeem(&member, 20).await.ok(201);
    server.verify().await;
}

async fn points_expire_into_breakage(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"points_pending_days": 0, "points_expiry_days": 30}))
        .await;
    let member = shop.member("13800138000").await;
    shop.cash_purchase(&member, "25.00").await.ok(201);
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 25);
    assert_eq!(balances["points"]["expiring_next"]["points"], 25);

    server.clock.advance(29 * DAY);
    server.run_lifecycle().await;
    assert_eq!(available(&shop.balances(&member).await), 25);

    server.clock.advance(2 * DAY);
    let run = server.run_lifecycle().await;
    assert_eq!(run["points_expired"], 25, "{run}");
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 0);
    assert!(balances["points"]["expiring_next"].is_null(), "{balances}");
    let ledger = shop.ledger(&member).await;
    assert_eq!(ledger[0]["kind"], "points.expiry");
    let postings = ledger[0]["postings"].as_array().unwrap();
    assert!(
        postings.iter().any(|posting| posting["account"]
            .as_str()
            .unwrap()
            .contains("points_breakage")
            && posting["amount"] == 25),
        "expiry goes to breakage: {}",
        ledger[0]
    );
    // Expired points cannot be spent.
    shop.redeem(&member, 1).await.problem(422);
    server.verify().await;
}

async fn purchase_with_stored_value(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"stored_value_bonus_rules": [{"min_top_up": "500", "bonus": "100"}]}))
        .await;
    let member = shop.member("13800138000").await;
    let top_up = shop.top_up(&member, "500.00").await;
    assert_eq!(top_up.ok(201)["bonus"], "100.00");
    let response = shop
        .purchase(
            &member,
            json!([{"sku": "A", "quantity": 2, "unit_price": "60.00"}]),
            json!([{"method": "stored_value", "amount": "60.00"}, {"method": "cash", "amount": "60.00"}]),
        )
        .await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["stored_value_paid"]["principal"], "50.00");
    assert_eq!(receipt["stored_value_paid"]["bonus"], "10.00");
    assert_eq!(receipt["balances"]["stored_value"]["principal"], "450.00");
    assert_eq!(receipt["balances"]["stored_value"]["bonus"], "90.00");
    assert_eq!(receipt["balances"]["stored_value"]["total"], "540.00");
    assert_eq!(receipt["points_awarded"], 120);

    // Refund half: cash and stored value come back in proportion, principal and bonus too.
    let refund = shop
        .refund(&response.id(), json!({"amount": "60.00"}))
        .await;
    let refund = refund.ok(201).clone();
    assert_eq!(refund["returned"]["cash"], "30.00");
    assert_eq!(refund["returned"]["stored_value"]["principal"], "25.00");
    assert_eq!(refund["returned"]["stored_value"]["bonus"], "5.00");
    assert_eq!(refund["points_reversed"], 60);
    assert_eq!(refund["balances"]["stored_value"]["principal"], "475.00");
    assert_eq!(refund["balances"]["stored_value"]["bonus"], "95.00");
    // The rest: everything is back where it started.
    let rest = shop.refund(&response.id(), json!({})).await;
    let rest = rest.ok(201).clone();
    assert_eq!(rest["amount"], "60.00");
    assert_eq!(rest["purchase_refunded_total"], "120.00");
    assert_eq!(rest["returned"]["stored_value"]["principal"], "25.00");
    assert_eq!(rest["returned"]["stored_value"]["bonus"], "5.00");
    let balances = shop.balances(&member).await;
    assert_eq!(balances["stored_value"]["principal"], "500.00");
    assert_eq!(balances["stored_value"]["bonus"], "100.00");
    assert_eq!(available(&balances), 0);
    server.verify().await;
}

async fn purchase_with_points(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    shop.adjust(&member, 1000).await.ok(201);
    // Default: one point is worth 0.01, so 5.00 costs 500 points; the points part earns nothing.
    let response = shop
        .purchase(
            &member,
            json!([{"sku": "A", "quantity": 1, "unit_price": "25.00"}]),
            json!([{"method": "points", "amount": "5.00"}, {"method": "cash", "amount": "20.00"}]),
        )
        .await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["points_redeemed"], 500);
    assert_eq!(receipt["points_awarded"], 20);
    assert_eq!(receipt["balances"]["points"]["available"], 520);

    // More than the member has: refused, nothing written.
    let ledger_before = shop.ledger(&member).await.len();
    shop.purchase(
        &member,
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
        json!([{"method": "points", "amount": "10.00"}]),
    )
    .await
    .problem(422);
    assert_eq!(available(&shop.balances(&member).await), 520);
    assert_eq!(shop.ledger(&member).await.len(), ledger_before);

    // A refund gives the points paid back and takes the earned ones.
    let refund = shop.refund(&response.id(), json!({})).await;
    let refund = refund.ok(201).clone();
    assert_eq!(refund["returned"]["points"], 500);
    assert_eq!(refund["returned"]["cash"], "20.00");
    assert_eq!(refund["points_reversed"], 20);
    assert_eq!(available(&shop.balances(&member).await), 1000);

    // A different redemption value; a payment that is no whole number of points is refused.
    shop.settings(json!({"currency_per_point": "0.5"})).await;
    let response = shop
        .purchase(
            &member,
            json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
            json!([{"method": "points", "amount": "10.00"}]),
        )
        .await;
    assert_eq!(response.ok(201)["points_redeemed"], 20);
    shop.purchase(
        &member,
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.25"}]),
        json!([{"method": "points", "amount": "10.25"}]),
    )
    .await
    .problem(422);
    assert_eq!(available(&shop.balances(&member).await), 980);
    server.verify().await;
}

async fn purchase_validation(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    shop.top_up(&member, "10.00").await.ok(201);
    shop.adjust(&member, 100).await.ok(201);
    let before = shop.balances(&member).await;
    let ledger_before = shop.ledger(&member).await.len();
    let body = |items: Value, payments: Value| json!({"member_id": member, "store_id": shop.store, "items": items, "payments": payments});
    let send = |body: Value| async move {
        server
            .post_idem("/v1/purchases", shop.key(), &idem(), &body)
            .await
    };

    // Payments do not sum to the total.
    let response = send(body(
        json!([{"sku": "A", "quantity": 2, "unit_price": "10.00"}]),
        json!([{"method": "cash", "amount": "15.00"}]),
    ))
    .await;
    assert_field(response.problem(422), "payments");
    // Too many decimals.
    let response = send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.001"}]),
        json!([{"method": "cash", "amount": "10.001"}]),
    ))
    .await;
    assert_field(response.problem(422), "items[0].unit_price");
    let response = send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
        json!([{"method": "cash", "amount": "10.000"}]),
    ))
    .await;
    assert_field(response.problem(422), "payments[0].amount");
    // Negative and zero quantities, negative price, negative payment.
    for quantity in [-1, 0] {
        let response = send(body(
            json!([{"sku": "A", "quantity": quantity, "unit_price": "10.00"}]),
            json!([{"method": "cash", "amount": "10.00"}]),
        ))
        .await;
        assert_field(response.problem(422), "items[0].quantity");
    }
    let response = send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "-10.00"}]),
        json!([{"method": "cash", "amount": "10.00"}]),
    ))
    .await;
    assert_field(response.problem(422), "items[0].unit_price");
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
        json!([{"method": "cash", "amount": "-10.00"}]),
    ))
    .await
    .problem(422);
    // No items; a non-number price; an unknown payment method; a method twice.
    send(body(json!([]), json!([]))).await.problem(422);
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "ten"}]),
        json!([{"method": "cash", "amount": "10.00"}]),
    ))
    .await
    .problem(422);
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
        json!([{"method": "bitcoin", "amount": "10.00"}]),
    ))
    .await
    .problem(422);
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]),
        json!([{"method": "cash", "amount": "5.00"}, {"method": "cash", "amount": "5.00"}]),
    ))
    .await
    .problem(422);
    // Missing member_id.
    send(json!({"store_id": shop.store, "items": [], "payments": []}))
        .await
        .problem(422);

    // Unknown member and store.
    let item = json!([{"sku": "A", "quantity": 1, "unit_price": "10.00"}]);
    let cash = json!([{"method": "cash", "amount": "10.00"}]);
    send(json!({"member_id": "mem_doesnotexist", "store_id": shop.store, "items": item, "payments": cash}))
        .await
        .problem(404);
    send(json!({"member_id": member, "store_id": "sto_doesnotexist", "items": item, "payments": cash}))
        .await
        .problem(404);
    // Not enough stored value or points: 422 and nothing at all is written, not even the
    // cash part or the points that would be earned.
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "30.00"}]),
        json!([{"method": "stored_value", "amount": "10.01"}, {"method": "cash", "amount": "19.99"}]),
    ))
    .await
    .problem(422);
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "30.00"}]),
        json!([{"method": "points", "amount": "1.01"}, {"method": "cash", "amount": "28.99"}]),
    ))
    .await
    .problem(422);
    send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "30.00"}]),
        json!([{"method": "stored_value", "amount": "10.00"}, {"method": "points", "amount": "1.01"},
               {"method": "cash", "amount": "18.99"}]),
    ))
    .await
    .problem(422);
    assert_eq!(shop.balances(&member).await, before);
    assert_eq!(shop.ledger(&member).await.len(), ledger_before);
    let stats = server
        .get(&format!("/v1/members/{member}"), shop.key())
        .await
        .ok(200)["stats"]
        .clone();
    assert_eq!(stats["orders_count"], 0);
    assert_eq!(stats["lifetime_spend"], "0.00");

    // Exactly what the member has is fine.
    let response = send(body(
        json!([{"sku": "A", "quantity": 1, "unit_price": "31.00"}]),
        json!([{"method": "stored_value", "amount": "10.00"}, {"method": "points", "amount": "1.00"},
               {"method": "cash", "amount": "20.00"}]),
    ))
    .await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["balances"]["stored_value"]["total"], "0.00");
    assert_eq!(receipt["balances"]["points"]["available"], 30);

    // external_id is unique per merchant.
    let with_external = |external: &str| {
        json!({"member_id": member, "store_id": shop.store, "external_id": external,
               "items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}],
               "payments": [{"method": "cash", "amount": "1.00"}]})
    };
    send(with_external("RCPT-1")).await.ok(201);
    let before = shop.balances(&member).await;
    send(with_external("RCPT-1")).await.problem(409);
    assert_eq!(shop.balances(&member).await, before);
    send(with_external("RCPT-2")).await.ok(201);
    // A future occurred_at, a bad timestamp.
    let mut future = with_external("RCPT-3");
    future["occurred_at"] = json!("2999-01-01T00:00:00Z");
    send(future).await.problem(422);
    let mut garbled = with_external("RCPT-3");
    garbled["occurred_at"] = json!("yesterday");
    send(garbled).await.problem(422);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Refunds

async fn refunds(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let response = shop
        .purchase(
            &member,
            json!([{"sku": "TEA", "quantity": 4, "unit_price": "10.00"},
                   {"sku": "CAKE", "quantity": 2, "unit_price": "30.00"}]),
            json!([{"method": "cash", "amount": "100.00"}]),
        )
        .await;
    let purchase = response.id();
    assert_eq!(response.ok(201)["points_awarded"], 100);

    // By items: one cake is 30.00 of 100.00, so 30 points.
    let by_items = shop
        .refund(
            &purchase,
            json!({"items": [{"sku": "CAKE", "quantity": 1}]}),
        )
        .await;
    let by_items = by_items.ok(201).clone();
    assert_eq!(by_items["amount"], "30.00");
    assert_eq!(by_items["points_reversed"], 30);
    assert_eq!(by_items["returned"]["cash"], "30.00");
    assert_eq!(by_items["purchase_refunded_total"], "30.00");
    assert_eq!(by_items["balances"]["points"]["available"], 70);
    // More of an item than is left, an unknown sku.
    shop.refund(
        &purchase,
        json!({"items": [{"sku": "CAKE", "quantity": 2}]}),
    )
    .await
    .problem(422);
    shop.refund(
        &purchase,
        json!({"items": [{"sku": "COFFEE", "quantity": 1}]}),
    )
    .await
    .problem(422);
    shop.refund(
        &purchase,
        json!({"items": [{"sku": "TEA", "quantity": -1}]}),
    )
    .await
    .problem(422);
    // Items and amount together; a bad amount.
    shop.refund(
        &purchase,
        json!({"items": [{"sku": "TEA", "quantity": 1}], "amount": "10.00"}),
    )
    .await
    .problem(422);
    shop.refund(&purchase, json!({"amount": "0.00"}))
        .await
        .problem(422);
    shop.refund(&purchase, json!({"amount": "1.001"}))
        .await
        .problem(422);
    // By amount: 14.00 of the 70.00 left takes 14 of the 70 points left.
    let by_amount = shop.refund(&purchase, json!({"amount": "14.00"})).await;
    let by_amount = by_amount.ok(201).clone();
    assert_eq!(by_amount["points_reversed"], 14);
    assert_eq!(by_amount["purchase_refunded_total"], "44.00");
    // More than is left: refused, nothing changes.
    let before = shop.balances(&member).await;
    shop.refund(&purchase, json!({"amount": "56.01"}))
        .await
        .problem(422);
    assert_eq!(shop.balances(&member).await, before);
    // The rest.
    let rest = shop.refund(&purchase, json!({})).await;
    let rest = rest.ok(201).clone();
    assert_eq!(rest["amount"], "56.00");
    assert_eq!(rest["points_reversed"], 56);
    assert_eq!(rest["purchase_refunded_total"], "100.00");
    assert_eq!(available(&shop.balances(&member).await), 0);
    // Nothing is left to refund.
    shop.refund(&purchase, json!({})).await.problem(422);
    shop.refund(&purchase, json!({"amount": "0.01"}))
        .await
        .problem(422);

    let detail = server
        .get(&format!("/v1/purchases/{purchase}"), shop.key())
        .await
        .ok(200)
        .clone();
    assert_eq!(detail["refunded"], "100.00");
    assert_eq!(detail["points_reversed"], 100);
    assert_eq!(detail["refunds"].as_array().unwrap().len(), 3);
    let stats = server
        .get(&format!("/v1/members/{member}"), shop.key())
        .await
        .ok(200)["stats"]
        .clone();
    assert_eq!(stats["lifetime_spend"], "0.00");

    shop.refund("pur_doesnotexist", json!({}))
        .await
        .problem(404);
    server.verify().await;
}

async fn refund_after_points_spent_without_debt(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let purchase = shop.cash_purchase(&member, "100.00").await;
    assert_eq!(purchase.ok(201)["points_awarded"], 100);
    shop.redeem(&member, 80).await.ok(201);
    let refund = shop.refund(&purchase.id(), json!({})).await;
    let refund = refund.ok(201).clone();
    assert_eq!(refund["points_reversed"], 20);
    assert_eq!(refund["points_not_reversed"], 80);
    assert_eq!(refund["points_debt"], 0);
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 0);
    // A negative adjustment beyond the balance is refused without negative points.
    shop.adjust(&member, -1).await.problem(422);
    server.verify().await;
}

async fn refund_after_points_spent_with_debt(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"allow_negative_points": true})).await;
    let member = shop.member("13800138000").await;
    let purchase = shop.cash_purchase(&member, "100.00").await;
    assert_eq!(purchase.ok(201)["points_awarded"], 100);
    shop.redeem(&member, 80).await.ok(201);
    let refund = shop.refund(&purchase.id(), json!({})).await;
    let refund = refund.ok(201).clone();
    assert_eq!(refund["points_reversed"], 100);
    assert_eq!(refund["points_debt"], 80);
    assert_eq!(refund["points_not_reversed"], 0);
    assert_eq!(available(&shop.balances(&member).await), -80);
    // Nothing can be spent while in debt.
    shop.redeem(&member, 1).await.problem(422);
    server.verify().await;
    // The next earnings repay the debt first.
    let next = shop.cash_purchase(&member, "100.00").await;
    assert_eq!(next.ok(201)["balances"]["points"]["available"], 20);
    shop.redeem(&member, 20).await.ok(201);
    assert_eq!(available(&shop.balances(&member).await), 0);
    server.verify().await;
}

/// Many small refunds: every split rounds by largest remainder, so the parts always add up
/// to what was paid, never more.
async fn refunds_in_parts_add_up(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    shop.top_up(&member, "3.34").await.ok(201);
    shop.adjust(&member, 333).await.ok(201);
    let response = shop
        .purchase(
            &member,
            json!([{"sku": "A", "quantity": 3, "unit_price": "4.00"}]),
            json!([{"method": "cash", "amount": "3.33"}, {"method": "card", "amount": "5.00"},
                   {"method": "stored_value", "amount": "0.34"}, {"method": "points", "amount": "3.33"}]),
        )
        .await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["points_redeemed"], 333);
    assert_eq!(receipt["points_awarded"], 8);
    let purchase = response.id();
    let money = |value: &Value| -> i64 {
        let text = value.as_str().expect("money");
        let (units, cents) = text.split_once('.').expect("two decimals");
        units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
    };
    let (mut cash, mut card, mut principal, mut points, mut reversed, mut refunded) =
        (0, 0, 0, 0, 0, 0);
    for amount in ["1.00", "1.00", "0.01", "2.99", "0.07"] {
        let refund = shop.refund(&purchase, json!({"amount": amount})).await;
        let refund = refund.ok(201).clone();
        let returned = &refund["returned"];
        let parts = money(&returned["cash"])
            + money(&returned["card"])
            + money(&returned["stored_value"]["principal"])
            + money(&returned["stored_value"]["bonus"])
            + returned["points"].as_i64().unwrap();
        assert_eq!(parts, money(&refund["amount"]), "the parts of {refund}");
        cash += money(&returned["cash"]);
        card += money(&returned["card"]);
        principal += money(&returned["stored_value"]["principal"]);
        points += returned["points"].as_i64().unwrap();
        reversed += refund["points_reversed"].as_i64().unwrap();
        refunded += money(&refund["amount"]);
    }
    let rest = shop.refund(&purchase, json!({})).await;
    let rest = rest.ok(201).clone();
    cash += money(&rest["returned"]["cash"]);
    card += money(&rest["returned"]["card"]);
    principal += money(&rest["returned"]["stored_value"]["principal"]);
    points += rest["returned"]["points"].as_i64().unwrap();
    reversed += rest["points_reversed"].as_i64().unwrap();
    refunded += money(&rest["amount"]);
    assert_eq!(refunded, 1200);
    assert_eq!((cash, card, principal, points), (333, 500, 34, 333));
    assert_eq!(reversed, 8);
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 333);
    assert_eq!(balances["stored_value"]["principal"], "3.34");
    let detail = server
        .get(&format!("/v1/purchases/{purchase}"), shop.key())
        .await
        .ok(200)
        .clone();
    for payment in detail["payments"].as_array().unwrap() {
        assert_eq!(payment["amount"], payment["refunded"], "{payment}");
    }
    shop.refund(&purchase, json!({"amount": "0.01"}))
        .await
        .problem(422);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Redemptions and adjustments

async fn redemptions_and_adjustments(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let adjusted = shop.adjust(&member, 100).await;
    let adjusted = adjusted.ok(201).clone();
    assert_eq!(adjusted["points"], 100);
    assert_eq!(adjusted["reason"], "goodwill");
    assert_eq!(adjusted["balances"]["points"]["available"], 100);
    let redeemed = shop.redeem(&member, 30).await;
    assert_eq!(redeemed.ok(201)["balances"]["points"]["available"], 70);
    // Overdrawn, zero, negative, no reason.
    shop.redeem(&member, 71).await.problem(422);
    shop.redeem(&member, 0).await.problem(422);
    shop.redeem(&member, -5).await.problem(422);
    shop.adjust(&member, 0).await.problem(422);
    server
        .post_idem(
            &format!("/v1/members/{member}/points/redemptions"),
            shop.key(),
            &idem(),
            &json!({"points": 1, "reason": "  "}),
        )
        .await
        .problem(422);
    server
        .post_idem(
            &format!("/v1/members/{member}/points/adjustments"),
            shop.key(),
            &idem(),
            &json!({"points": 1}),
        )
        .await
        .problem(422);
    // A negative adjustment within the balance is fine; beyond it needs negative points.
    assert_eq!(
        shop.adjust(&member, -20).await.ok(201)["balances"]["points"]["available"],
        50
    );
    shop.adjust(&member, -51).await.problem(422);
    assert_eq!(available(&shop.balances(&member).await), 50);
    shop.settings(json!({"allow_negative_points": true})).await;
    assert_eq!(
        shop.adjust(&member, -51).await.ok(201)["balances"]["points"]["available"],
        -1
    );
    let ledger = shop.ledger(&member).await;
    assert_eq!(ledger[0]["kind"], "points.adjustment");
    assert_eq!(
        ledger
            .iter()
            .filter(|entry| entry["kind"] == "points.redemption")
            .count(),
        1
    );
    // Unknown member.
    shop.redeem("mem_doesnotexist", 1).await.problem(404);
    shop.adjust("mem_doesnotexist", 1).await.problem(404);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Stored value

async fn top_ups_with_bonus(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"stored_value_bonus_rules": [
        {"min_top_up": "500", "bonus": "100"},
        {"min_top_up": "1000", "bonus": "300"}
    ]}))
    .await;
    let member = shop.member("13800138000").await;
    let response = shop.top_up(&member, "500").await;
    let receipt = response.ok(201).clone();
    assert_eq!(receipt["amount"], "500.00");
    assert_eq!(receipt["bonus"], "100.00");
    assert_eq!(receipt["balances"]["stored_value"]["principal"], "500.00");
    assert_eq!(receipt["balances"]["stored_value"]["bonus"], "100.00");
    assert_eq!(receipt["balances"]["stored_value"]["total"], "600.00");
    assert_eq!(
        shop.top_up(&member, "499.99").await.ok(201)["bonus"],
        "0.00"
    );
    assert_eq!(
        shop.top_up(&member, "1200.00").await.ok(201)["bonus"],
        "300.00"
    );
    let balances = shop.balances(&member).await;
    assert_eq!(balances["stored_value"]["principal"], "2199.99");
    assert_eq!(balances["stored_value"]["bonus"], "400.00");

    let top_up_path = format!("/v1/members/{member}/stored-value/top-ups");
    let top_up_path = top_up_path.as_str();
    let send = |body: Value| async move {
        server
            .post_idem(top_up_path, shop.key(), &idem(), &body)
            .await
    };
    assert_field(
        send(json!({"amount": "100.00", "store_id": shop.store, "payment_method": "stored_value"}))
            .await
            .problem(422),
        "payment_method",
    );
    send(json!({"amount": "100.00", "store_id": shop.store, "payment_method": "points"}))
        .await
        .problem(422);
    assert_field(
        send(json!({"amount": "0", "store_id": shop.store, "payment_method": "cash"}))
            .await
            .problem(422),
        "amount",
    );
    assert_field(
        send(json!({"amount": "1.001", "store_id": shop.store, "payment_method": "cash"}))
            .await
            .problem(422),
        "amount",
    );
    send(json!({"amount": "-5.00", "store_id": shop.store, "payment_method": "card"}))
        .await
        .problem(422);
    send(json!({"amount": "5.00", "store_id": "sto_doesnotexist", "payment_method": "card"}))
        .await
        .problem(404);
    server
        .post_idem(
            "/v1/members/mem_doesnotexist/stored-value/top-ups",
            shop.key(),
            &idem(),
            &json!({"amount": "5.00", "store_id": shop.store, "payment_method": "card"}),
        )
        .await
        .problem(404);
    assert_eq!(shop.balances(&member).await, balances);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Count cards

async fn count_cards(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    shop.settings(json!({"stored_value_bonus_rules": [{"min_top_up": "500", "bonus": "100"}]}))
        .await;
    let member = shop.member("13800138000").await;
    let package = server
        .post(
            "/v1/count-card-packages",
            shop.key(),
            &json!({"name": "10 washes", "sku": "WASH10", "uses": 10, "price": "120.00", "valid_days": 30}),
        )
        .await;
    let package_body = package.ok(201).clone();
    let package_id = package.id();
    assert_eq!(package_body["price"], "120.00");
    assert_eq!(package_body["uses"], 10);
    assert_eq!(package_body["valid_days"], 30);
    // Duplicate sku, bad terms.
    server
        .post(
            "/v1/count-card-packages",
            shop.key(),
            &json!({"name": "again", "sku": "WASH10", "uses": 5, "price": "60.00", "valid_days": 30}),
        )
        .await
        .problem(409);
    for (body, field) in [
        (
            json!({"name": "x", "sku": "X1", "uses": 0, "price": "1.00", "valid_days": 30}),
            "uses",
        ),
        (
            json!({"name": "x", "sku": "X2", "uses": 1, "price": "1.001", "valid_days": 30}),
            "price",
        ),
        (
            json!({"name": "x", "sku": "X3", "uses": 1, "price": "-1.00", "valid_days": 30}),
            "price",
        ),
        (
            json!({"name": "x", "sku": "X4", "uses": 1, "price": "1.00", "valid_days": 0}),
            "valid_days",
        ),
    ] {
        assert_field(
            server
                .post("/v1/count-card-packages", shop.key(), &body)
                .await
                .problem(422),
            field,
        );
    }
    let fetched = server
        .get(&format!("/v1/count-card-packages/{package_id}"), shop.key())
        .await;
    assert_eq!(fetched.ok(200)["sku"], "WASH10");
    let list = server.get("/v1/count-card-packages", shop.key()).await;
    assert_eq!(list.ok(200)["items"].as_array().unwrap().len(), 1);
    server
        .get("/v1/count-card-packages/pkg_doesnotexist", shop.key())
        .await
        .problem(404);

    let sell = |method: &str, package: &str| {
        let body = json!({"package_id": package, "store_id": shop.store, "payment_method": method});
        let member = member.clone();
        async move {
            server
                .post_idem(
                    &format!("/v1/members/{member}/count-cards"),
                    shop.key(),
                    &idem(),
                    &body,
                )
                .await
        }
    };
    // Cash.
    let sold = sell("cash", &package_id).await;
    let sold = sold.ok(201).clone();
    let card = sold["card"]["id"].as_str().expect("card id").to_string();
    assert_eq!(sold["card"]["remaining"], 10);
    assert_eq!(sold["card"]["package_id"], package_id.as_str());
    assert!(sold["stored_value_paid"].is_null());
    let cards = sold["balances"]["count_cards"].as_array().unwrap().clone();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["id"], card.as_str());
    assert_eq!(cards[0]["remaining"], 10);
    assert_eq!(cards[0]["name"], "10 washes");
    // Stored value, too little of it: refused, no card.
    sell("stored_value", &package_id).await.problem(422);
    assert_eq!(
        shop.balances(&member).await["count_cards"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Stored value, principal and bonus in proportion.
    shop.top_up(&member, "500.00").await.ok(201);
    let sold = sell("stored_value", &package_id).await;
    let sold = sold.ok(201).clone();
    assert_eq!(sold["stored_value_paid"]["principal"], "100.00");
    assert_eq!(sold["stored_value_paid"]["bonus"], "20.00");
    assert_eq!(sold["balances"]["stored_value"]["total"], "480.00");
    assert_eq!(sold["balances"]["count_cards"].as_array().unwrap().len(), 2);
    // Points cannot pay; unknown package.
    sell("points", &package_id).await.problem(422);
    sell("cash", "pkg_doesnotexist").await.problem(404);

    // Consumptions.
    let consume = |card: &str, uses: i64| {
        let path = format!("/v1/members/{member}/count-cards/{card}/consumptions");
        let body = json!({"uses": uses, "store_id": shop.store});
        async move { server.post_idem(&path, shop.key(), &idem(), &body).await }
    };
    let used = consume(&card, 3).await;
    let used = used.ok(201).clone();
    assert_eq!(used["uses"], 3);
    assert_eq!(used["remaining"], 7);
    consume(&card, 8).await.problem(422);
    consume(&card, 0).await.problem(422);
    consume(&card, -1).await.problem(422);
    consume("card_doesnotexist", 1).await.problem(404);
    let stranger = shop.member("13900139000").await;
    server
        .post_idem(
            &format!("/v1/members/{stranger}/count-cards/{card}/consumptions"),
            shop.key(),
            &idem(),
            &json!({"uses": 1, "store_id": shop.store}),
        )
        .await
        .problem(404);
    server
        .post_idem(
            &format!("/v1/members/{member}/count-cards/{card}/consumptions"),
            shop.key(),
            &idem(),
            &json!({"uses": 1, "store_id": "sto_doesnotexist"}),
        )
        .await
        .problem(404);
    assert_eq!(consume(&card, 7).await.ok(201)["remaining"], 0);
    consume(&card, 1).await.problem(422);
    // A used-up card leaves the balances; the other stays.
    let cards = shop.balances(&member).await["count_cards"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(cards.len(), 1);
    let second = cards[0]["id"].as_str().unwrap().to_string();
    // After expiry, no more uses.
    server.clock.advance(31 * DAY);
    consume(&second, 1).await.problem(422);
    assert!(shop.balances(&member).await["count_cards"]
        .as_array()
        .unwrap()
        .is_empty());
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Idempotency

async fn idempotency(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let body = json!({"member_id": member, "store_id": shop.store,
                      "items": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
                      "payments": [{"method": "cash", "amount": "10.00"}]});

    // Missing or unusable key: 400, nothing written.
    server
        .call(
            Method::POST,
            "/v1/purchases",
            Some(shop.key()),
            None,
            Some(&body),
        )
        .await
        .problem(400);
    server
        .call(
            Method::POST,
            &format!("/v1/members/{member}/points/adjustments"),
            Some(shop.key()),
            None,
            Some(&json!({"points": 5, "reason": "x"})),
        )
        .await
        .problem(400);
    server
        .call(
            Method::POST,
            &format!("/v1/members/{member}/stored-value/top-ups"),
            Some(shop.key()),
            None,
            Some(&json!({"amount": "5.00", "store_id": shop.store, "payment_method": "cash"})),
        )
        .await
        .problem(400);
    server
        .post_idem("/v1/purchases", shop.key(), "", &body)
        .await
        .problem(400);
    assert!(shop.ledger(&member).await.is_empty());

    // The same key and body: the first answer byte for byte, once applied.
    let first = server
        .post_idem("/v1/purchases", shop.key(), "same", &body)
        .await;
    first.ok(201);
    let second = server
        .post_idem("/v1/purchases", shop.key(), "same", &body)
        .await;
    assert_eq!(second.status, first.status);
    assert_eq!(second.text, first.text);
    assert_eq!(available(&shop.balances(&member).await), 10);
    assert_eq!(shop.ledger(&member).await.len(), 1);
    // A different body, or the same body elsewhere: 409.
    let mut other = body.clone();
    other["items"][0]["unit_price"] = json!("20.00");
    other["payments"][0]["amount"] = json!("20.00");
    let conflict = server
        .post_idem("/v1/purchases", shop.key(), "same", &other)
        .await;
    assert_eq!(
        conflict.problem(409)["type"],
        "/problems/idempotency-key-reused"
    );
    server
        .post_idem(
            &format!("/v1/members/{member}/points/adjustments"),
            shop.key(),
            "same",
            &json!({"points": 5, "reason": "x"}),
        )
        .await
        .problem(409);
    assert_eq!(available(&shop.balances(&member).await), 10);

    // Refunds, top-ups, adjustments replay too.
    let refund_path = format!("/v1/purchases/{}/refunds", first.id());
    let refund = server
        .post_idem(
            &refund_path,
            shop.key(),
            "refund-1",
            &json!({"amount": "4.00"}),
        )
        .await;
    refund.ok(201);
    let again = server
        .post_idem(
            &refund_path,
            shop.key(),
            "refund-1",
            &json!({"amount": "4.00"}),
        )
        .await;
    assert_eq!((again.status, &again.text), (refund.status, &refund.text));
    let top_up_path = format!("/v1/members/{member}/stored-value/top-ups");
    let top_up_body = json!({"amount": "50.00", "store_id": shop.store, "payment_method": "cash"});
    let top_up = server
        .post_idem(&top_up_path, shop.key(), "tu-1", &top_up_body)
        .await;
    let again = server
        .post_idem(&top_up_path, shop.key(), "tu-1", &top_up_body)
        .await;
    assert_eq!((again.status, &again.text), (top_up.status, &top_up.text));
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), 6);
    assert_eq!(balances["stored_value"]["total"], "50.00");

    // A refused request stores nothing: the same key works once the request is valid.
    let redeem_path = format!("/v1/members/{member}/points/redemptions");
    server
        .post_idem(
            &redeem_path,
            shop.key(),
            "redeem-1",
            &json!({"points": 7, "reason": "x"}),
        )
        .await
        .problem(422);
    let redeemed = server
        .post_idem(
            &redeem_path,
            shop.key(),
            "redeem-1",
            &json!({"points": 6, "reason": "x"}),
        )
        .await;
    assert_eq!(redeemed.ok(201)["balances"]["points"]["available"], 0);

    // Keys are per merchant: another merchant may use the same key.
    let other_merchant = server.merchant("Other", "CNY").await;
    let other_store = server.store(&other_merchant.key).await;
    let other_member = server
        .post(
            "/v1/members",
            &other_merchant.key,
            &json!({"phone": "13800138000"}),
        )
        .await
        .id();
    let theirs = server
        .post_idem(
            "/v1/purchases",
            &other_merchant.key,
            "same",
            &json!({"member_id": other_member, "store_id": other_store,
                    "items": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
                    "payments": [{"method": "cash", "amount": "10.00"}]}),
        )
        .await;
    assert_eq!(theirs.ok(201)["member_id"], other_member.as_str());
    assert_ne!(theirs.id(), first.id());
    // And the first merchant's key still replays its own purchase.
    let replay = server
        .post_idem("/v1/purchases", shop.key(), "same", &body)
        .await;
    assert_eq!(replay.text, first.text);

    // Concurrent duplicates apply once.
    let concurrent = json!({"points": 3, "reason": "concurrent"});
    let path = format!("/v1/members/{member}/points/adjustments");
    let answers = futures::future::join_all(
        (0..8).map(|_| server.post_idem(&path, shop.key(), "concurrent-1", &concurrent)),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text);
        assert_eq!(answer.text, answers[0].text);
    }
    assert_eq!(available(&shop.balances(&member).await), 3);

    // A retry gets the first answer even when the request would now be refused: here the
    // merchant changed how much a point pays, and 3 points no longer pay 0.03 (on SQLite the
    // writer's lane checks keys, and a request refused before it looks its key up first).
    let by_points = json!({"member_id": member, "store_id": shop.store,
                           "items": [{"sku": "A", "quantity": 1, "unit_price": "0.03"}],
                           "payments": [{"method": "points", "amount": "0.03"}]});
    let paid = server
        .post_idem("/v1/purchases", shop.key(), "by-points", &by_points)
        .await;
    paid.ok(201);
    shop.settings(json!({"currency_per_point": "0.02"})).await;
    let retried = server
        .post_idem("/v1/purchases", shop.key(), "by-points", &by_points)
        .await;
    assert_eq!((retried.status, &retried.text), (paid.status, &paid.text));
    server
        .post_idem("/v1/purchases", shop.key(), "by-points-2", &by_points)
        .await
        .problem(422);
    // And a body that no longer parses under a used key is still the key's conflict.
    let conflict = server
        .post_idem(
            "/v1/purchases",
            shop.key(),
            "by-points",
            &json!({"not": "a purchase"}),
        )
        .await;
    assert_eq!(
        conflict.problem(409)["type"],
        "/problems/idempotency-key-reused"
    );
    assert_eq!(available(&shop.balances(&member).await), 0);
    assert_eq!(shop.ledger(&member).await.len(), 6);
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// Bad input

async fn bad_input(backend: Backend) {
    let shop = &shop(backend).await;
    let server = &shop.server;
    let member = shop.member("13800138000").await;
    let bearer = format!("Bearer {}", shop.key());
    let json_headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    // Malformed JSON.
    raw(
        server,
        Method::POST,
        "/v1/members",
        &json_headers,
        Some(b"{\"phone\": ".to_vec()),
    )
    .await
    .problem(400);
    raw(
        server,
        Method::POST,
        "/v1/purchases",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "malformed-1"),
        ],
        Some(b"{not json".to_vec()),
    )
    .await
    .problem(400);
    raw(
        server,
        Method::POST,
        "/v1/stores",
        &json_headers,
        Some(Vec::new()),
    )
    .await
    .problem(400);
    raw(
        server,
        Method::POST,
        "/v1/stores",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "text/plain"),
        ],
        Some(b"{\"code\": \"X\", \"name\": \"X\"}".to_vec()),
    )
    .await
    .problem(400);
    // Unknown field, wrong type: 422 naming the field.
    let unknown = server
        .post(
            "/v1/members",
            shop.key(),
            &json!({"phone": "13900139000", "shoe_size": 42}),
        )
        .await;
    let problem = unknown.problem(422);
    assert_eq!(problem["type"], "/problems/validation");
    assert!(
        fields(problem).iter().any(|field| !field.is_empty()),
        "errors[].field: {problem}"
    );
    assert!(
        unknown.text.contains("shoe_size"),
        "the problem names the field: {}",
        unknown.text
    );
    let wrong = server
        .post(
            "/v1/stores",
            shop.key(),
            &json!({"code": 5, "name": "Five"}),
        )
        .await;
    assert_field(wrong.problem(422), "code");
    let wrong = server
        .post_idem(
            "/v1/purchases",
            shop.key(),
            &idem(),
            &json!({"member_id": member, "store_id": shop.store,
                    "items": [{"sku": "A", "quantity": "two", "unit_price": "1.00"}],
                    "payments": [{"method": "cash", "amount": "2.00"}]}),
        )
        .await;
    assert_field(wrong.problem(422), "items[0].quantity");
    let wrong = server
        .post_idem(
            &format!("/v1/members/{member}/points/adjustments"),
            shop.key(),
            &idem(),
            &json!({"points": 1.5, "reason": "x"}),
        )
        .await;
    assert_field(wrong.problem(422), "points");
    server
        .post("/v1/members", shop.key(), &json!([1, 2, 3]))
        .await
        .problem(422);

    // Over 1 MiB.
    let big = format!(
        "{{\"phone\": \"13900139000\", \"name\": \"{}\"}}",
        "x".repeat(1024 * 1024 + 16)
    );
    raw(
        server,
        Method::POST,
        "/v1/members",
        &json_headers,
        Some(big.into_bytes()),
    )
    .await
    .problem(413);
    let big_purchase = format!(
        "{{\"member_id\": \"{member}\", \"store_id\": \"{}\", \"items\": [], \"payments\": [], \"pad\": \"{}\"}}",
        shop.store,
        "x".repeat(1024 * 1024 + 16)
    );
    raw(
        server,
        Method::POST,
        "/v1/purchases",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "big-1"),
        ],
        Some(big_purchase.into_bytes()),
    )
    .await
    .problem(413);

    // Unknown routes.
    server
        .get("/v1/nothing-here", shop.key())
        .await
        .problem(404);
    raw(server, Method::GET, "/nothing", &[], None)
        .await
        .problem(404);
    // A wrong method answers a problem too.
    let wrong_method = server
        .call(Method::DELETE, "/v1/stores", Some(shop.key()), None, None)
        .await;
    assert!(
        (400..500).contains(&wrong_method.status)
            && wrong_method.content_type == "application/problem+json",
        "{} {}",
        wrong_method.status,
        wrong_method.text
    );
    // Nothing above was written.
    assert!(shop.ledger(&member).await.is_empty());
    let list = server.get("/v1/members", shop.key()).await;
    assert_eq!(list.ok(200)["items"].as_array().unwrap().len(), 1);
    server.verify().await;
}

async fn openapi(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = raw(&server, Method::GET, "/openapi.json", &[], None).await;
    let document = response.ok(200);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1")),
        "openapi: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/merchants",
        "/v1/merchant",
        "/v1/api-keys",
        "/v1/api-keys/{id}",
        "/v1/stores",
        "/v1/stores/{id}",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/members/{id}/balances",
        "/v1/members/{id}/ledger",
        "/v1/purchases",
        "/v1/purchases/{id}",
        "/v1/purchases/{id}/refunds",
        "/v1/members/{id}/points/redemptions",
        "/v1/members/{id}/points/adjustments",
        "/v1/members/{id}/stored-value/top-ups",
        "/v1/count-card-packages",
        "/v1/members/{id}/count-cards",
        "/v1/members/{id}/count-cards/{card_id}/consumptions",
    ] {
        assert!(paths.contains_key(path), "the document lacks {path}");
    }
    assert!(paths["/v1/purchases"].get("post").is_some());
    assert!(document["components"]["schemas"]
        .as_object()
        .is_some_and(|schemas| !schemas.is_empty()));
}

/// Points that expired from a purchase's lot went to breakage: refunding the purchase later
/// does not take them again from the member's other points, with or without debts allowed.
async fn refund_after_points_expired(backend: Backend) {
    for allow_negative in [false, true] {
        let shop = &shop(backend).await;
        let server = &shop.server;
        shop.settings(json!({"points_pending_days": 0, "points_expiry_days": 10,
                             "allow_negative_points": allow_negative}))
            .await;
        let member = shop.member("13800138000").await;
        let purchase = shop.cash_purchase(&member, "50.00").await.id();
        server.clock.advance(11 * DAY);
        assert_eq!(server.run_lifecycle().await["points_expired"], 50);
        shop.adjust(&member, 30).await.ok(201);

        let refund = shop.refund(&purchase, json!({})).await;
        let body = refund.ok(201);
        assert_eq!(body["points_expired"], 50, "{body}");
        assert_eq!(body["points_reversed"], 0, "{body}");
        assert_eq!(body["points_debt"], 0, "{body}");
        assert_eq!(body["points_not_reversed"], 0, "{body}");
        assert_eq!(available(&shop.balances(&member).await), 30);
        server.verify().await;
    }
}

/// A purchase recorded after its points' expiry (an import of old receipts) sends them to
/// breakage at once instead of showing them as available.
async fn back_dated_purchase_points_expire_at_once(backend: Backend) {
    let shop = &shop(backend).await;
    shop.settings(json!({"points_pending_days": 0, "points_expiry_days": 30}))
        .await;
    let member = shop.member("13800138000").await;
    let receipt = shop
        .server
        .post_idem(
            "/v1/purchases",
            shop.key(),
            "old-receipt",
            &json!({"member_id": member, "store_id": shop.store, "occurred_at": "2020-01-02T10:00:00Z",
                    "items": [{"sku": "TEA", "quantity": 1, "unit_price": "10.00"}],
                    "payments": [{"method": "cash", "amount": "10.00"}]}),
        )
        .await;
    let body = receipt.ok(201);
    assert_eq!(body["points_awarded"], 10);
    assert_eq!(body["balances"]["points"]["available"], 0, "{body}");
    assert!(
        body["balances"]["points"]["expiring_next"].is_null(),
        "{body}"
    );
    let ledger = shop.ledger(&member).await;
    assert!(
        ledger.iter().any(|entry| entry["kind"] == "points.expiry"),
        "{ledger:?}"
    );
    shop.server.verify().await;
}

/// A method an endpoint does not take answers 405 problem+json.
async fn wrong_method(backend: Backend) {
    let shop = &shop(backend).await;
    let response = shop
        .server
        .call(
            reqwest::Method::PUT,
            "/v1/stores",
            Some(shop.key()),
            None,
            Some(&json!({})),
        )
        .await;
    response.problem(405);
}

/// A member with many lots in their next-expiry window is switched over to
/// `point_expiry_hours`: the next expiry then sums whole hours from there and reads only the
/// lots of the window's last hour. Lots placed (by back-dating) around that hour's edges must
/// count exactly as "expiring within a day of the earliest", through spends and refunds; a
/// member with few lots keeps no rows.
async fn expiring_next_counts_across_hours(backend: Backend) {
    const HOUR: i64 = 3_600_000_000;
    const MINUTE: i64 = 60_000_000;
    const YEAR: i64 = 365 * 24 * HOUR;
    let shop = &shop(backend).await;
    let member = shop.member("13800138000").await;
    let light = shop.member("13800138001").await;
    shop.cash_purchase(&light, "5.00").await.ok(201);
    // Thirty days ago, on an hour: a purchase then expires 365 days later, on the same minute.
    let base = (shop.server.clock.now() - 30 * 24 * HOUR) / HOUR * HOUR;
    let purchase = |offset: i64, amount: &str| {
        let body = json!({"member_id": member, "store_id": shop.store,
                          "occurred_at": loyalty_core::db::format_micros(base + offset),
                          "items": [{"sku": "ITEM", "quantity": 1, "unit_price": amount}],
                          "payments": [{"method": "cash", "amount": amount}]});
        async move {
            let receipt = shop
                .server
                .post_idem("/v1/purchases", shop.key(), &idem(), &body)
                .await
                .ok(201)
                .clone();
            receipt["id"].as_str().expect("an id").to_string()
        }
    };
    // Enough lots at the earliest expiry that a purchase's balances read sums the threshold.
    let fillers = loyalty_core::points::EXPIRY_HOURS_LOTS_MIN;
    for _ in 0..fillers {
        purchase(30 * MINUTE, "1.00").await;
    }
    let mut purchases = Vec::new();
    for (offset, amount) in [
        (30 * MINUTE, "10.00"),             // the earliest expiry
        (23 * HOUR + 59 * MINUTE, "20.00"), // a whole hour inside the day
        (24 * HOUR + 10 * MINUTE, "40.00"), // the day's last, partial hour: inside
        (24 * HOUR + 30 * MINUTE, "80.00"), // exactly a day after the earliest: outside
        (24 * HOUR + 50 * MINUTE, "160.00"),
    ] {
        purchases.push(purchase(offset, amount).await);
    }
    let pool = &shop.server.state.database.pool;
    let kept = |member: String| async move {
        let kept: i64 = sqlx::query_scalar("SELECT expiry_hours_kept FROM members WHERE id = $1")
            .bind(&member)
            .fetch_one(pool)
            .await
            .expect("the member");
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM point_expiry_hours WHERE member_id = $1")
                .bind(&member)
                .fetch_one(pool)
                .await
                .expect("hours");
        (kept, rows)
    };
    assert_eq!(
        kept(member.clone()).await,
        (1, 3),
        "a row per hour with points"
    );
    assert_eq!(kept(light.clone()).await, (0, 0));

    let expiring = |balances: &Value| {
        let next = &balances["points"]["expiring_next"];
        (
            next["points"].as_i64().expect("points"),
            unix_seconds(&next["at"]),
        )
    };
    let seconds = |offset: i64| (base + YEAR + offset) / 1_000_000;
    let balances = shop.balances(&member).await;
    assert_eq!(available(&balances), fillers + 310, "{balances}");
    assert_eq!(
        expiring(&balances),
        (fillers + 70, seconds(30 * MINUTE)),
        "{balances}"
    );

    // Refunding the partial hour's purchase takes its 40 out of the window.
    shop.refund(&purchases[2], json!({})).await.ok(201);
    let balances = shop.balances(&member).await;
    assert_eq!(
        expiring(&balances),
        (fillers + 30, seconds(30 * MINUTE)),
        "{balances}"
    );

    // Spending empties the earliest hour's lots and takes 5 of the next: the window now
    // starts there and reaches the last two lots.
    shop.redeem(&member, fillers + 15).await.ok(201);
    let balances = shop.balances(&member).await;
    assert_eq!(
        expiring(&balances),
        (15 + 80 + 160, seconds(23 * HOUR + 59 * MINUTE)),
        "{balances}"
    );
    assert_eq!(
        expiring(&shop.balances(&light).await).0,
        5,
        "a member without rows reads their lots"
    );
    shop.server.verify().await;

    // `verify` notices an hour that no longer matches its lots.
    sqlx::query("UPDATE point_expiry_hours SET points = points + 1 WHERE points > 0")
        .execute(pool)
        .await
        .expect("tamper");
    let report = loyalty_core::verify::verify(pool)
        .await
        .expect("verify runs");
    let hours = report
        .checks
        .iter()
        .find(|check| check.name.starts_with("expiring points by hour"))
        .expect("the expiry-hour check");
    assert!(hours.violation_count > 0, "{:?}", hours.violations);
}

backend_tests!(
    expiring_next_counts_across_hours,
    refund_after_points_expired,
    back_dated_purchase_points_expire_at_once,
    wrong_method,
    merchants_create_and_authenticate,
    merchant_settings,
    api_keys_and_scopes,
    revocation_reaches_other_hosts,
    stores,
    members,
    balances_and_ledger,
    purchase_awards_points,
    purchase_pending_then_active,
    points_expire_into_breakage,
    purchase_with_stored_value,
    purchase_with_points,
    purchase_validation,
    refunds,
    refunds_in_parts_add_up,
    refund_after_points_spent_without_debt,
    refund_after_points_spent_with_debt,
    redemptions_and_adjustments,
    top_ups_with_bonus,
    count_cards,
    idempotency,
    bad_input,
    openapi,
);
