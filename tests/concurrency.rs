//! Concurrency on both backends: 32 clients send 2,048 mixed value-moving operations
//! (purchases paying with cash, card, stored value and points; refunds; redemptions;
//! top-ups; count-card consumptions) at a handful of members of three merchants, so most
//! operations contend for the same member. About one operation in ten is fired two or three
//! times at once with the same Idempotency-Key and body.
//!
//! Afterwards: no 5xx; every duplicate got the same status and the same bytes; every key of a
//! successful operation is applied exactly once (one ledger transaction, one stored response)
//! and a refused one not at all; each member's balances equal the setup plus the sum of the
//! successful operations' receipts; and `verify` passes (conservation, no negative balance,
//! cached balances equal postings, lots match balances).
//!
//! A second test fires a burst of purchases at one member and checks that each answer holds
//! the member's balances right after that purchase (the writer's batches remember balances).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use loyalty_tests::{backend_tests, json, Backend, Response, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::Row;

const CLIENTS: usize = 32;
const OPERATIONS_PER_CLIENT: usize = 64;
const MERCHANTS: usize = 3;
const MEMBERS_PER_MERCHANT: usize = 4;
/// Per mille of operations sent more than once with the same key.
const DUPLICATED_PER_MILLE: u32 = 100;

const SETUP_TOP_UP: i64 = 200_000;
const SETUP_POINTS: i64 = 20_000;
const CARD_USES: i64 = 5_000;

#[derive(Debug, Clone)]
struct MemberRef {
    merchant: usize,
    id: String,
}

#[derive(Debug, Clone)]
struct MerchantRef {
    key: String,
    store: String,
}

#[derive(Debug, Clone)]
struct World {
    merchants: Vec<MerchantRef>,
    members: Vec<MemberRef>,
    /// The count card of each member.
    cards: Vec<String>,
}

/// Changes one successful operation makes to its member, read from its receipt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Delta {
    points: i64,
    principal: i64,
    bonus: i64,
    uses: i64,
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, other: Delta) {
        self.points += other.points;
        self.principal += other.principal;
        self.bonus += other.bonus;
        self.uses += other.uses;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Purchase,
    Refund,
    Redemption,
    TopUp,
    Consumption,
    /// Meant to be refused (overdraws a balance).
    Overdraw,
}

/// The outcome of one operation (all sends of its key).
#[derive(Debug)]
struct Outcome {
    kind: Kind,
    member: usize,
    merchant: usize,
    key: String,
    /// Total of the purchase and the part paid with points, to check the award.
    purchase_eligible: Option<i64>,
    responses: Vec<Response>,
}

fn minor(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("a money string, got {text}"));
    let (units, cents) = text.split_once('.').expect("two decimals");
    let sign = if units.starts_with('-') { -1 } else { 1 };
    sign * (units.trim_start_matches('-').parse::<i64>().unwrap() * 100
        + cents.parse::<i64>().unwrap())
}

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

async fn setup(server: &TestServer) -> World {
    let mut merchants = Vec::new();
    let mut members = Vec::new();
    let mut cards = Vec::new();
    for index in 0..MERCHANTS {
        let merchant = server.merchant(&format!("Concurrent {index}"), "CNY").await;
        server
            .patch(
                "/v1/merchant",
                &merchant.key,
                &json!({"settings": {
                    "points_per_currency_unit": "1",
                    "points_pending_days": 0,
                    "allow_negative_points": false,
                    "stored_value_bonus_rules": [
                        {"min_top_up": "100.00", "bonus": "20.00"},
                        {"min_top_up": "1000.00", "bonus": "300.00"}
                    ]
                }}),
            )
            .await
            .ok(200);
        let store = server.store(&merchant.key).await;
        let package = server
            .post(
                "/v1/count-card-packages",
                &merchant.key,
                &json!({"name": "Wash", "sku": "WASH", "uses": CARD_USES, "price": "10.00", "valid_days": 365}),
            )
            .await
            .id();
        for member_index in 0..MEMBERS_PER_MERCHANT {
            let member = server
                .post(
                    "/v1/members",
                    &merchant.key,
                    &json!({"external_id": format!("c{index}-{member_index}")}),
                )
                .await
                .id();
            let key = |what: &str| format!("setup-{member}-{what}");
            server
                .post_idem(
                    &format!("/v1/members/{member}/stored-value/top-ups"),
                    &merchant.key,
                    &key("top-up"),
                    &json!({"amount": money(SETUP_TOP_UP), "store_id": store, "payment_method": "card"}),
                )
                .await
                .ok(201);
            server
                .post_idem(
                    &format!("/v1/members/{member}/points/adjustments"),
                    &merchant.key,
                    &key("points"),
                    &json!({"points": SETUP_POINTS, "reason": "opening balance"}),
                )
                .await
                .ok(201);
            let card = server
                .post_idem(
                    &format!("/v1/members/{member}/count-cards"),
                    &merchant.key,
                    &key("card"),
                    &json!({"package_id": package, "store_id": store, "payment_method": "cash"}),
                )
                .await;
            cards.push(card.ok(201)["card"]["id"].as_str().unwrap().to_string());
            members.push(MemberRef {
                merchant: index,
                id: member,
            });
        }
        merchants.push(MerchantRef {
            key: merchant.key,
            store,
        });
    }
    World {
        merchants,
        members,
        cards,
    }
}

/// Sends the same request `copies` times at once under one key.
async fn send_copies(
    server: &TestServer,
    key: &str,
    path: &str,
    idempotency_key: &str,
    body: &Value,
    copies: usize,
) -> Vec<Response> {
    futures::future::join_all(
        (0..copies).map(|_| server.post_idem(path, key, idempotency_key, body)),
    )
    .await
}

async fn client(
    server: Arc<TestServer>,
    world: Arc<World>,
    client_index: usize,
    seed: u64,
) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = Vec::with_capacity(OPERATIONS_PER_CLIENT);
    // Purchases this client made and has not refunded yet: (member, purchase id, total).
    let mut refundable: Vec<(usize, String, i64)> = Vec::new();
    for operation in 0..OPERATIONS_PER_CLIENT {
        let member = rng.gen_range(0..world.members.len());
        let merchant_index = world.members[member].merchant;
        let merchant = &world.merchants[merchant_index];
        let member_id = &world.members[member].id;
        let key = format!("c-{client_index}-{operation}");
        let roll = rng.gen_range(0..100);
        let mut purchase_eligible = None;
        let (kind, member, path, body) = if roll < 5 {
            let body = json!({"points": 1_000_000_000, "reason": "too much"});
            (
                Kind::Overdraw,
                member,
                format!("/v1/members/{member_id}/points/redemptions"),
                body,
            )
        } else if roll < 45 || (roll < 60 && refundable.is_empty()) {
            let items: Vec<(i64, i64)> = (0..rng.gen_range(1..=4))
                .map(|_| (rng.gen_range(100..5_000), rng.gen_range(1..=3)))
                .collect();
            let total: i64 = items.iter().map(|(price, quantity)| price * quantity).sum();
            let mut payments = Vec::new();
            let mut left = total;
            let mut points_paid = 0;
            if rng.gen_bool(0.3) {
                let amount = rng.gen_range(1..=left.min(2_000));
                payments.push(json!({"method": "stored_value", "amount": money(amount)}));
                left -= amount;
            }
            if left > 0 && rng.gen_bool(0.3) {
                points_paid = rng.gen_range(1..=left.min(300));
                payments.push(json!({"method": "points", "amount": money(points_paid)}));
                left -= points_paid;
            }
            if left > 0 {
                let method = if rng.gen_bool(0.5) { "cash" } else { "card" };
                payments.push(json!({"method": method, "amount": money(left)}));
            }
            purchase_eligible = Some(total - points_paid);
            let body = json!({
                "member_id": member_id,
                "store_id": merchant.store,
                "items": items.iter().enumerate().map(|(line, (price, quantity))| json!({"sku": format!("SKU{line}"), "quantity": quantity, "unit_price": money(*price)})).collect::<Vec<_>>(),
                "payments": payments,
            });
            (Kind::Purchase, member, "/v1/purchases".to_string(), body)
        } else if roll < 60 {
            let (member, purchase, total) =
                refundable.swap_remove(rng.gen_range(0..refundable.len()));
            let body = if rng.gen_bool(0.5) {
                json!({})
            } else {
                json!({"amount": money(rng.gen_range(1..=total))})
            };
            (
                Kind::Refund,
                member,
                format!("/v1/purchases/{purchase}/refunds"),
                body,
            )
        } else if roll < 75 {
            let body = json!({"points": rng.gen_range(1..=100), "reason": "gift"});
            (
                Kind::Redemption,
                member,
                format!("/v1/members/{member_id}/points/redemptions"),
                body,
            )
        } else if roll < 88 {
            let amount = [1_000, 9_999, 10_000, 25_000][rng.gen_range(0..4)];
            let body = json!({"amount": money(amount), "store_id": merchant.store, "payment_method": "cash"});
            (
                Kind::TopUp,
                member,
                format!("/v1/members/{member_id}/stored-value/top-ups"),
                body,
            )
        } else {
            let card = &world.cards[member];
            let body = json!({"uses": rng.gen_range(1..=3), "store_id": merchant.store});
            (
                Kind::Consumption,
                member,
                format!("/v1/members/{member_id}/count-cards/{card}/consumptions"),
                body,
            )
        };
        let copies = if kind != Kind::Overdraw && rng.gen_ratio(DUPLICATED_PER_MILLE, 1000) {
            rng.gen_range(2..=3)
        } else {
            1
        };
        let merchant_key = &world.merchants[world.members[member].merchant].key;
        let responses = send_copies(&server, merchant_key, &path, &key, &body, copies).await;
        if kind == Kind::Purchase && responses[0].status == 201 {
            let total = minor(&responses[0].json["total"]);
            refundable.push((member, responses[0].id(), total));
        }
        outcomes.push(Outcome {
            kind,
            member,
            merchant: world.members[member].merchant,
            key,
            purchase_eligible,
            responses,
        });
    }
    outcomes
}

/// What a successful operation did to its member, from its receipt (with the receipt's own
/// figures checked where they follow from the request alone).
fn delta_of(outcome: &Outcome) -> Delta {
    let receipt = &outcome.responses[0].json;
    match outcome.kind {
        Kind::Purchase => {
            let eligible = outcome
                .purchase_eligible
                .expect("purchases know their eligible amount");
            assert_eq!(
                receipt["points_awarded"],
                json!(eligible / 100),
                "base rate, floored: {receipt}"
            );
            let (principal, bonus) = match &receipt["stored_value_paid"] {
                Value::Null => (0, 0),
                paid => (minor(&paid["principal"]), minor(&paid["bonus"])),
            };
            Delta {
                points: receipt["points_awarded"].as_i64().unwrap()
                    - receipt["points_redeemed"].as_i64().unwrap(),
                principal: -principal,
                bonus: -bonus,
                uses: 0,
            }
        }
        Kind::Refund => {
            assert_eq!(receipt["points_debt"], json!(0), "{receipt}");
            Delta {
                points: receipt["returned"]["points"].as_i64().unwrap()
                    - receipt["points_reversed"].as_i64().unwrap(),
                principal: minor(&receipt["returned"]["stored_value"]["principal"]),
                bonus: minor(&receipt["returned"]["stored_value"]["bonus"]),
                uses: 0,
            }
        }
        Kind::Redemption => Delta {
            points: -receipt["points"].as_i64().unwrap(),
            ..Delta::default()
        },
        Kind::TopUp => {
            let amount = minor(&receipt["amount"]);
            let expected_bonus = match amount {
                amount if amount >= 100_000 => 30_000,
                amount if amount >= 10_000 => 2_000,
                _ => 0,
            };
            assert_eq!(
                minor(&receipt["bonus"]),
                expected_bonus,
                "bonus rule: {receipt}"
            );
            Delta {
                principal: amount,
                bonus: expected_bonus,
                ..Delta::default()
            }
        }
        Kind::Consumption => Delta {
            uses: -receipt["uses"].as_i64().unwrap(),
            ..Delta::default()
        },
        Kind::Overdraw => panic!("an overdraw succeeded: {receipt}"),
    }
}

fn snapshot(balances: &Value, card: &str) -> Delta {
    let uses = balances["count_cards"]
        .as_array()
        .expect("count cards")
        .iter()
        .find(|entry| entry["id"] == card)
        .map(|entry| entry["remaining"].as_i64().unwrap())
        .unwrap_or(0);
    Delta {
        points: balances["points"]["available"].as_i64().expect("points"),
        principal: minor(&balances["stored_value"]["principal"]),
        bonus: minor(&balances["stored_value"]["bonus"]),
        uses,
    }
}

async fn balances_of(server: &TestServer, world: &World) -> Vec<Delta> {
    let mut all = Vec::new();
    for (index, member) in world.members.iter().enumerate() {
        let key = &world.merchants[member.merchant].key;
        let response = server
            .get(&format!("/v1/members/{}/balances", member.id), key)
            .await;
        let balances = response.ok(200);
        assert_eq!(balances["points"]["pending"], json!(0), "{balances}");
        all.push(snapshot(balances, &world.cards[index]));
    }
    all
}

/// Applied keys of this test's operations (`c-…`) with how many ledger transactions carry them.
async fn applied_keys(
    server: &TestServer,
    table: &str,
    merchant_column: &str,
) -> BTreeMap<(String, String), i64> {
    let sql =
        format!(
        "SELECT {merchant_column} AS merchant, {key} AS idem, COUNT(*) AS applied FROM {table} \
         WHERE {key} LIKE 'c-%' GROUP BY {merchant_column}, {key}",
        key = if table == "transactions" { "idempotency_key" } else { "key" },
    );
    let rows = sqlx::query(&sql)
        .fetch_all(&server.state.database.pool)
        .await
        .expect("count keys");
    rows.iter()
        .map(|row| {
            (
                (
                    row.try_get::<String, _>("merchant").unwrap(),
                    row.try_get::<String, _>("idem").unwrap(),
                ),
                row.try_get::<i64, _>("applied").unwrap(),
            )
        })
        .collect()
}

async fn concurrent_mixed_operations(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let world = Arc::new(setup(&server).await);
    let merchant_ids: Vec<String> = {
        let mut ids = Vec::new();
        for merchant in &world.merchants {
            let response = server.get("/v1/merchant", &merchant.key).await;
            ids.push(response.ok(200)["id"].as_str().unwrap().to_string());
        }
        ids
    };
    let before = balances_of(&server, &world).await;

    let started = Instant::now();
    let seed: u64 = rand::thread_rng().gen();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|index| {
            tokio::spawn(client(
                server.clone(),
                world.clone(),
                index,
                seed.wrapping_add(index as u64),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("a client finished"));
    }
    let elapsed = started.elapsed();
    let sends: usize = outcomes.iter().map(|outcome| outcome.responses.len()).sum();
    eprintln!(
        "{backend:?}: {} operations ({sends} requests) from {CLIENTS} clients in {elapsed:.2?} (seed {seed})",
        outcomes.len()
    );
    assert!(outcomes.len() >= 2_000);

    let mut expected = before.clone();
    let mut succeeded: BTreeSet<(String, String)> = BTreeSet::new();
    let mut counts: BTreeMap<(Kind, u16), usize> = BTreeMap::new();
    let mut duplicated = 0;
    for outcome in &outcomes {
        let first = &outcome.responses[0];
        for response in &outcome.responses {
            assert!(
                response.status < 500,
                "seed {seed}: {} {:?} got {}: {}",
                outcome.key,
                outcome.kind,
                response.status,
                response.text
            );
            assert_eq!(
                response.status, first.status,
                "seed {seed}: duplicate sends of {} differ: {} vs {}",
                outcome.key, first.text, response.text
            );
            assert_eq!(
                response.text, first.text,
                "seed {seed}: duplicate sends of {} differ",
                outcome.key
            );
        }
        if outcome.responses.len() > 1 {
            duplicated += 1;
        }
        *counts.entry((outcome.kind, first.status)).or_default() += 1;
        match first.status {
            201 => {
                expected[outcome.member] += delta_of(outcome);
                succeeded.insert((merchant_ids[outcome.merchant].clone(), outcome.key.clone()));
            }
            _ => {
                first.problem(first.status);
                assert_eq!(
                    first.status, 422,
                    "seed {seed}: {:?} {}: {}",
                    outcome.kind, outcome.key, first.text
                );
                // Only overdraws are meant to fail: the members' reserves cover the rest.
                assert_eq!(
                    outcome.kind,
                    Kind::Overdraw,
                    "seed {seed}: {} refused: {}",
                    outcome.key,
                    first.text
                );
            }
        }
    }
    eprintln!("{backend:?}: {duplicated} operations sent 2-3 times; outcomes {counts:?}");
    assert!(
        duplicated >= 100,
        "too few duplicated operations: {duplicated}"
    );

    // Every successful key applied exactly once, every refused key not at all.
    let in_ledger = applied_keys(&server, "transactions", "merchant_id").await;
    assert_eq!(
        in_ledger.keys().cloned().collect::<BTreeSet<_>>(),
        succeeded,
        "keys in the ledger"
    );
    assert!(
        in_ledger.values().all(|count| *count == 1),
        "a key applied twice: {in_ledger:?}"
    );
    let stored = applied_keys(&server, "idempotency_keys", "merchant_id").await;
    assert_eq!(
        stored.keys().cloned().collect::<BTreeSet<_>>(),
        succeeded,
        "stored responses"
    );

    let after = balances_of(&server, &world).await;
    for (index, (actual, expected)) in after.iter().zip(&expected).enumerate() {
        assert_eq!(
            actual, expected,
            "seed {seed}: member {index} balances: the setup plus the receipts"
        );
        assert!(
            actual.points >= 0 && actual.principal >= 0 && actual.bonus >= 0 && actual.uses >= 0
        );
    }
    server.verify().await;
}

/// Purchases fired at one member at once share the writer's batches, where the member's later
/// purchases answer from the balances the batch remembers (no read). Each answer must still
/// be the member's balances right after that purchase: ordered by points available, every
/// answer is the one before plus its own points, its stored value is the top-up less the
/// stored-value payments up to it, and its next expiry is no later than the one before, with
/// all the points in its day.
async fn one_member_burst_answers_each_purchase_with_its_own_balances(backend: Backend) {
    const PURCHASES: i64 = 96;
    const TOP_UP: i64 = 500_000;
    let server = Arc::new(TestServer::start(backend).await);
    let merchant = server.merchant("Burst", "CNY").await;
    server
        .patch(
            "/v1/merchant",
            &merchant.key,
            &json!({"settings": {"points_per_currency_unit": "1", "points_pending_days": 0}}),
        )
        .await
        .ok(200);
    let store = server.store(&merchant.key).await;
    let member = server
        .post(
            "/v1/members",
            &merchant.key,
            &json!({"external_id": "burst"}),
        )
        .await
        .id();
    server
        .post_idem(
            &format!("/v1/members/{member}/stored-value/top-ups"),
            &merchant.key,
            "burst-top-up",
            &json!({"amount": money(TOP_UP), "store_id": store, "payment_method": "card"}),
        )
        .await
        .ok(201);
    let sends = (1..=PURCHASES).map(|index| {
        let server = server.clone();
        let key = merchant.key.clone();
        let body = json!({
            "member_id": member,
            "store_id": store,
            "items": [{"sku": "TEA", "quantity": 1, "unit_price": money(index * 100)}],
            // every third pays with stored value
            "payments": [{"method": if index % 3 == 0 { "stored_value" } else { "cash" }, "amount": money(index * 100)}],
        });
        async move {
            let response = server
                .post_idem("/v1/purchases", &key, &format!("burst-{index}"), &body)
                .await;
            (index, response.ok(201).clone())
        }
    });
    let mut answers = futures::future::join_all(sends).await;
    answers.sort_by_key(|(_, receipt)| receipt["balances"]["points"]["available"].as_i64());
    let mut points = 0;
    let mut stored_value = TOP_UP;
    let mut earliest_expiry: Option<time::OffsetDateTime> = None;
    for (index, receipt) in &answers {
        assert_eq!(receipt["points_awarded"], *index, "1 point per yuan");
        points += index;
        if index % 3 == 0 {
            stored_value -= index * 100;
        }
        let balances = &receipt["balances"];
        assert_eq!(balances["points"]["available"], points, "purchase {index}");
        assert_eq!(
            balances["stored_value"]["total"],
            money(stored_value),
            "purchase {index}: {balances}"
        );
        let expiring = &balances["points"]["expiring_next"];
        assert_eq!(expiring["points"], points, "purchase {index}: {balances}");
        // The earliest expiry so far: requests are stamped before they queue, so a later
        // purchase in the batch may carry an earlier time, and its lot expire first.
        let at = time::OffsetDateTime::parse(
            expiring["at"].as_str().expect("an expiry"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        if let Some(earlier) = earliest_expiry {
            assert!(
                at <= earlier,
                "purchase {index}: the next expiry moved later"
            );
        }
        earliest_expiry = Some(at);
    }
    let last = answers.last().expect("answers").1["balances"].clone();
    let now = server
        .get(&format!("/v1/members/{member}/balances"), &merchant.key)
        .await;
    assert_eq!(now.ok(200), &last, "the last answer is the balances now");
    server.verify().await;
}

backend_tests!(
    concurrent_mixed_operations,
    one_member_burst_answers_each_purchase_with_its_own_balances
);
