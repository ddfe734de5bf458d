//! An earn rule's expiry override, end to end: the `expiring-earn` test guest awards N points
//! expiring at `ctx.now` + D days and M points on the merchant's default expiry. The host keeps
//! the override points in lots of their own (same transaction, same activation), expires only
//! them when their time comes, reverses refunds from all of the purchase's lots, and ignores an
//! override at or before the points activate.

use std::time::Duration;

use loyalty_tests::{backend_tests, component, json, Backend, Merchant, Response, TestServer};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);
const MINUTE: Duration = Duration::from_secs(60);
const DAY_MICROS: i64 = 86_400_000_000;

fn idem() -> String {
    format!("k-{}", uuid::Uuid::now_v7().simple())
}

/// Microseconds since the epoch of an RFC 3339 UTC timestamp ("2024-05-01T12:00:00.123456Z").
fn micros(value: &Value) -> i64 {
    let text = value.as_str().expect("a timestamp string");
    let text = text.strip_suffix('Z').expect("a UTC timestamp");
    let number = |range: std::ops::Range<usize>| -> i64 { text[range].parse().expect("digits") };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    let fraction = text.get(20..).unwrap_or("");
    assert!(fraction.len() <= 6, "at most microseconds: {text}");
    let fraction: i64 = format!("{fraction:0<6}").parse().expect("digits");
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000 + fraction
}

struct Shop {
    server: TestServer,
    merchant: Merchant,
    store: String,
    plugin_id: Value,
    member: String,
}

/// A merchant with `settings`, a store running `expiring-earn` with `config`, and a member.
async fn shop(backend: Backend, settings: Value, config: Value) -> Shop {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    server
        .patch(
            "/v1/merchant",
            &merchant.key,
            &json!({ "settings": settings }),
        )
        .await
        .ok(200);
    let store = server.store(&merchant.key).await;
    let plugin_id = server
        .upload_plugin(
            &merchant.key,
            Some(&json!({"name": "expiring-earn", "version": "0.1.0", "world": "earn-rule"})),
            Some(component("expiring_earn")),
        )
        .await
        .ok(201)["id"]
        .clone();
    let member = server
        .post(
            "/v1/members",
            &merchant.key,
            &json!({"phone": "13800138000"}),
        )
        .await
        .id();
    let shop = Shop {
        server,
        merchant,
        store,
        plugin_id,
        member,
    };
    shop.configure(config).await;
    shop
}

impl Shop {
    fn key(&self) -> &str {
        &self.merchant.key
    }

    async fn configure(&self, config: Value) {
        self.server
            .put(
                &format!("/v1/stores/{}/plugins/earn-rule", self.store),
                self.key(),
                &json!({"plugins": [{"plugin_id": self.plugin_id, "config": config}]}),
            )
            .await
            .ok(200);
    }

    /// A cash purchase of 40.00 (two items of 20.00), optionally back-dated.
    async fn purchase(&self, occurred_at: Option<&str>) -> Value {
        let mut body = json!({"member_id": self.member, "store_id": self.store,
                              "items": [{"sku": "A", "quantity": 1, "unit_price": "20.00"},
                                        {"sku": "B", "quantity": 1, "unit_price": "20.00"}],
                              "payments": [{"method": "cash", "amount": "40.00"}]});
        if let Some(at) = occurred_at {
            body["occurred_at"] = json!(at);
        }
        self.server
            .post_idem("/v1/purchases", self.key(), &idem(), &body)
            .await
            .ok(201)
            .clone()
    }

    async fn refund(&self, purchase: &Value, body: Value) -> Value {
        let id = purchase["id"].as_str().expect("a purchase id");
        self.server
            .post_idem(
                &format!("/v1/purchases/{id}/refunds"),
                self.key(),
                &idem(),
                &body,
            )
            .await
            .ok(201)
            .clone()
    }

    async fn adjust(&self, points: i64) -> Response {
        self.server
            .post_idem(
                &format!("/v1/members/{}/points/adjustments", self.member),
                self.key(),
                &idem(),
                &json!({"points": points, "reason": "test"}),
            )
            .await
    }

    async fn points(&self) -> Value {
        self.server
            .get(&format!("/v1/members/{}/balances", self.member), self.key())
            .await
            .ok(200)["points"]
            .clone()
    }

    async fn ledger(&self) -> Vec<Value> {
        self.server
            .get(&format!("/v1/members/{}/ledger", self.member), self.key())
            .await
            .ok(200)["items"]
            .as_array()
            .expect("ledger items")
            .clone()
    }
}

/// The override's points sit in a lot of their own: the receipt and `expiring_next` show its
/// expiry, only they expire into breakage when it passes, and a later refund reverses the
/// default lot's points and forgives the expired ones.
async fn override_lot_expires_alone(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 0, "points_expiry_days": 365}),
        json!({"points": 30, "expires_in_days": 10, "default_points": 70}),
    )
    .await;
    let server = &shop.server;
    let receipt = shop.purchase(None).await;
    assert_eq!(receipt["points_awarded"], 100, "{receipt}");
    let occurred_at = micros(&receipt["occurred_at"]);
    let awards = &receipt["awards"];
    assert_eq!(awards[0]["points"], 30, "{receipt}");
    assert_eq!(awards[0]["source"], "plugin:expiring-earn@0.1.0");
    let override_at = micros(&awards[0]["expires_at"]);
    assert_eq!(override_at, occurred_at + 10 * DAY_MICROS, "{receipt}");
    assert_eq!(awards[1]["points"], 70, "{receipt}");
    assert!(
        awards[1].get("expires_at").is_none(),
        "the default expiry shows no override: {receipt}"
    );
    let points = &receipt["balances"]["points"];
    assert_eq!(points["available"], 100, "{receipt}");
    assert_eq!(points["expiring_next"]["points"], 30, "{receipt}");
    assert_eq!(micros(&points["expiring_next"]["at"]), override_at);
    let points = shop.points().await;
    assert_eq!(points["expiring_next"]["points"], 30, "{points}");
    assert_eq!(micros(&points["expiring_next"]["at"]), override_at);
    // The purchase detail, which reads the stored awards back, still answers.
    server
        .get(
            &format!("/v1/purchases/{}", receipt["id"].as_str().expect("id")),
            shop.key(),
        )
        .await
        .ok(200);
    // The OpenAPI document describes the field: an optional RFC 3339 timestamp.
    let openapi = server.get("/openapi.json", shop.key()).await;
    let award_view = &openapi.ok(200)["components"]["schemas"]["AwardView"];
    assert_eq!(
        award_view["properties"]["expires_at"]["format"], "date-time",
        "{award_view}"
    );
    assert!(
        !award_view["required"]
            .as_array()
            .expect("required fields")
            .contains(&json!("expires_at")),
        "{award_view}"
    );

    // A minute before the override nothing expires.
    server.clock.advance(10 * DAY - MINUTE);
    assert_eq!(server.run_lifecycle().await["points_expired"], 0);
    assert_eq!(shop.points().await["available"], 100);

    // After it, only the override's 30 points go to breakage; the default lot stays.
    server.clock.advance(2 * MINUTE);
    let run = server.run_lifecycle().await;
    assert_eq!(run["points_expired"], 30, "{run}");
    let points = shop.points().await;
    assert_eq!(points["available"], 70, "{points}");
    assert_eq!(points["expiring_next"]["points"], 70, "{points}");
    assert_eq!(
        micros(&points["expiring_next"]["at"]),
        occurred_at + 365 * DAY_MICROS
    );
    let ledger = shop.ledger().await;
    assert_eq!(ledger[0]["kind"], "points.expiry", "{}", ledger[0]);
    let postings = ledger[0]["postings"].as_array().expect("postings");
    assert!(
        postings.iter().any(|posting| posting["account"]
            .as_str()
            .is_some_and(|account| account.contains("points_breakage"))
            && posting["amount"] == 30),
        "the override's points go to breakage: {}",
        ledger[0]
    );

    // Other points the member holds are not touched by the refund: it reverses the default
    // lot's 70 and forgives the 30 that already expired.
    shop.adjust(500).await.ok(201);
    let refund = shop.refund(&receipt, json!({})).await;
    assert_eq!(refund["points_reversed"], 70, "{refund}");
    assert_eq!(refund["points_expired"], 30, "{refund}");
    assert_eq!(refund["points_not_reversed"], 0, "{refund}");
    assert_eq!(refund["balances"]["points"]["available"], 500, "{refund}");
    server.verify().await;
}

/// A refund reverses from the purchase's main lot first, then from its override lot, and not
/// from the member's other points, even where those expire sooner (spending order would take
/// them first). An override may also lie beyond the merchant's default expiry.
async fn refund_takes_from_every_lot(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 0, "points_expiry_days": 365}),
        json!({"points": 30, "expires_in_days": 400, "default_points": 70}),
    )
    .await;
    shop.adjust(500).await.ok(201);
    let receipt = shop.purchase(None).await;
    let occurred_at = micros(&receipt["occurred_at"]);
    assert_eq!(
        micros(&receipt["awards"][0]["expires_at"]),
        occurred_at + 400 * DAY_MICROS,
        "{receipt}"
    );
    assert_eq!(receipt["balances"]["points"]["available"], 600);

    // Half the purchase: 50 points, all from the main lot (70 → 20), which expires within a
    // day of the adjustment's 500.
    let refund = shop.refund(&receipt, json!({"amount": "20.00"})).await;
    assert_eq!(refund["points_reversed"], 50, "{refund}");
    let points = &refund["balances"]["points"];
    assert_eq!(points["available"], 550, "{refund}");
    assert_eq!(points["expiring_next"]["points"], 520, "{refund}");

    // The rest: 20 from the main lot, then the override lot's 30; the adjustment's lot keeps
    // its 500.
    let refund = shop.refund(&receipt, json!({})).await;
    assert_eq!(refund["points_reversed"], 50, "{refund}");
    assert_eq!(refund["points_not_reversed"], 0, "{refund}");
    let points = &refund["balances"]["points"];
    assert_eq!(points["available"], 500, "{refund}");
    assert_eq!(points["expiring_next"]["points"], 500, "{refund}");

    // Past every expiry only the adjustment's points expire: nothing of the purchase is left.
    shop.server.clock.advance(401 * DAY);
    assert_eq!(shop.server.run_lifecycle().await["points_expired"], 500);
    assert_eq!(shop.points().await["available"], 0);
    shop.server.verify().await;
}

/// While the purchase is pending, every lot is pending; a refund takes from the main lot, then
/// from the override lot, and what is left activates together and expires on each lot's time.
async fn pending_purchase_with_override(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 7, "points_expiry_days": 365}),
        json!({"points": 30, "expires_in_days": 30, "default_points": 70}),
    )
    .await;
    let server = &shop.server;
    let receipt = shop.purchase(None).await;
    let occurred_at = micros(&receipt["occurred_at"]);
    assert_eq!(
        micros(&receipt["points_pending_until"]),
        occurred_at + 7 * DAY_MICROS
    );
    assert_eq!(
        micros(&receipt["awards"][0]["expires_at"]),
        occurred_at + 30 * DAY_MICROS,
        "{receipt}"
    );
    assert_eq!(receipt["balances"]["points"]["pending"], 100, "{receipt}");
    assert_eq!(receipt["balances"]["points"]["available"], 0, "{receipt}");

    // Half: 50 from the pending main lot (70 → 20).
    let refund = shop.refund(&receipt, json!({"amount": "20.00"})).await;
    assert_eq!(refund["points_reversed"], 50, "{refund}");
    assert_eq!(refund["balances"]["points"]["pending"], 50, "{refund}");
    // A quarter: 25 = the main lot's last 20, then 5 from the pending override lot.
    let refund = shop.refund(&receipt, json!({"amount": "10.00"})).await;
    assert_eq!(refund["points_reversed"], 25, "{refund}");
    assert_eq!(refund["points_not_reversed"], 0, "{refund}");
    assert_eq!(refund["balances"]["points"]["pending"], 25, "{refund}");
    assert_eq!(refund["balances"]["points"]["available"], 0, "{refund}");

    // The override lot's 25 activate with the purchase and expire at the override.
    server.clock.advance(8 * DAY);
    assert_eq!(server.run_lifecycle().await["points_activated"], 25);
    let points = shop.points().await;
    assert_eq!(points["available"], 25, "{points}");
    assert_eq!(points["expiring_next"]["points"], 25, "{points}");
    assert_eq!(
        micros(&points["expiring_next"]["at"]),
        occurred_at + 30 * DAY_MICROS
    );
    server.clock.advance(23 * DAY);
    assert_eq!(server.run_lifecycle().await["points_expired"], 25);
    assert_eq!(shop.points().await["available"], 0);
    server.verify().await;
}

/// An override at or before the points activate is not honoured: the default expiry applies.
/// When every award has an honoured override there is no main lot, and refunds still find the
/// purchase's points.
async fn override_before_activation_is_ignored(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 7, "points_expiry_days": 365}),
        json!({"points": 30, "expires_in_days": 3, "default_points": 0}),
    )
    .await;
    let server = &shop.server;
    let receipt = shop.purchase(None).await;
    let occurred_at = micros(&receipt["occurred_at"]);
    assert_eq!(receipt["points_awarded"], 30, "{receipt}");
    assert!(
        receipt["awards"][0].get("expires_at").is_none(),
        "an override before activation is ignored: {receipt}"
    );
    server.clock.advance(4 * DAY);
    assert_eq!(server.run_lifecycle().await["points_expired"], 0);
    assert_eq!(shop.points().await["pending"], 30);
    server.clock.advance(4 * DAY);
    assert_eq!(server.run_lifecycle().await["points_activated"], 30);
    let points = shop.points().await;
    assert_eq!(points["available"], 30, "{points}");
    assert_eq!(
        micros(&points["expiring_next"]["at"]),
        occurred_at + (7 + 365) * DAY_MICROS,
        "the default expiry applies: {points}"
    );

    // Without a return window the points activate at once: an override at that very instant
    // is not honoured either.
    server
        .patch(
            "/v1/merchant",
            shop.key(),
            &json!({"settings": {"points_pending_days": 0}}),
        )
        .await
        .ok(200);
    shop.configure(json!({"points": 10, "expires_in_days": 0}))
        .await;
    let receipt = shop.purchase(None).await;
    assert_eq!(receipt["points_awarded"], 10, "{receipt}");
    assert!(
        receipt["awards"][0].get("expires_at").is_none(),
        "{receipt}"
    );
    assert_eq!(receipt["balances"]["points"]["available"], 40, "{receipt}");

    // Only override awards: no main lot. A refund takes the override lot's points.
    shop.configure(json!({"points": 40, "expires_in_days": 20}))
        .await;
    let receipt = shop.purchase(None).await;
    assert_eq!(receipt["balances"]["points"]["available"], 80, "{receipt}");
    let override_at = micros(&receipt["awards"][0]["expires_at"]);
    assert_eq!(
        micros(&receipt["balances"]["points"]["expiring_next"]["at"]),
        override_at
    );
    let refund = shop.refund(&receipt, json!({"amount": "30.00"})).await;
    assert_eq!(refund["points_reversed"], 30, "{refund}");
    let points = &refund["balances"]["points"];
    assert_eq!(points["available"], 50, "{refund}");
    assert_eq!(points["expiring_next"]["points"], 10, "{refund}");
    assert_eq!(micros(&points["expiring_next"]["at"]), override_at);
    server.verify().await;
}

/// A back-dated purchase whose override has already passed: the override's points go to
/// breakage at once, as the default lot's would; a refund forgives them.
async fn back_dated_override_expires_on_arrival(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 0, "points_expiry_days": 365}),
        json!({"points": 30, "expires_in_days": -10, "default_points": 70}),
    )
    .await;
    let month_ago = loyalty_core::db::from_unix_micros(shop.server.clock.now() - 30 * DAY_MICROS);
    let receipt = shop
        .purchase(Some(&format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            month_ago.year(),
            u8::from(month_ago.month()),
            month_ago.day(),
            month_ago.hour(),
            month_ago.minute(),
            month_ago.second()
        )))
        .await;
    assert_eq!(receipt["points_awarded"], 100, "{receipt}");
    // now − 10 days lies after the activation a month ago: honoured, and already past.
    assert!(!receipt["awards"][0]["expires_at"].is_null(), "{receipt}");
    let points = &receipt["balances"]["points"];
    assert_eq!(points["available"], 70, "{receipt}");
    assert_eq!(points["expiring_next"]["points"], 70, "{receipt}");
    let ledger = shop.ledger().await;
    assert_eq!(ledger[0]["kind"], "points.expiry", "{}", ledger[0]);
    assert_eq!(shop.server.run_lifecycle().await["points_expired"], 0);

    let refund = shop.refund(&receipt, json!({})).await;
    assert_eq!(refund["points_reversed"], 70, "{refund}");
    assert_eq!(refund["points_expired"], 30, "{refund}");
    assert_eq!(refund["balances"]["points"]["available"], 0, "{refund}");
    shop.server.verify().await;
}

/// A debt is repaid before the new points form lots, from the main lot first; the override
/// lot keeps its points.
async fn debt_is_repaid_from_the_main_lot_first(backend: Backend) {
    let shop = &shop(
        backend,
        json!({"points_pending_days": 0, "allow_negative_points": true}),
        json!({"points": 30, "expires_in_days": 10, "default_points": 70}),
    )
    .await;
    shop.adjust(-80).await.ok(201);
    assert_eq!(shop.points().await["available"], -80);
    let receipt = shop.purchase(None).await;
    let points = &receipt["balances"]["points"];
    assert_eq!(points["available"], 20, "{receipt}");
    // The main lot gave its 70 to the debt, the override lot 10 of its 30.
    assert_eq!(points["expiring_next"]["points"], 20, "{receipt}");
    assert_eq!(
        points["expiring_next"]["at"],
        receipt["awards"][0]["expires_at"]
    );
    shop.server.clock.advance(11 * DAY);
    assert_eq!(shop.server.run_lifecycle().await["points_expired"], 20);
    assert_eq!(shop.points().await["available"], 0);
    shop.server.verify().await;
}

backend_tests!(
    override_lot_expires_alone,
    refund_takes_from_every_lot,
    pending_purchase_with_override,
    override_before_activation_is_ignored,
    back_dated_override_expires_on_arrival,
    debt_is_repaid_from_the_main_lot_first,
);
