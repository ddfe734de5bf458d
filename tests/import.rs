//! `loyalty import online-retail` on the committed slice of the UCI Online Retail data set
//! (`tests/fixtures/online_retail_slice.csv`, see its README), in-process against the real
//! server's state, on both backends: exact counts, the purchases and refunds as the API shows
//! them, a store-enabled earn plugin deciding points, a second run adding nothing, and verify.
//!
//! The expected numbers were computed from the CSV by an independent script (Python's `csv`
//! module and the matching rule written afresh: newest earlier purchase first); the simplest
//! of them are recounted here from the file by a parser of its own.

use std::collections::HashSet;
use std::path::PathBuf;

use loyalty_host::import::{import_online_retail, online_retail, ImportOptions, ImportSummary};
use loyalty_tests::{backend_tests, component, json, Backend, Merchant, TestServer, OPERATOR_KEY};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/online_retail_slice.csv")
}

/// Lines, guest lines and distinct CustomerIDs of the fixture, by a parser of this test's own
/// (the fixture's quoted fields never hold a line break).
fn recount() -> (u64, u64, usize) {
    let text = std::fs::read_to_string(fixture()).expect("the fixture is readable");
    let mut lines = 0;
    let mut guests = 0;
    let mut customers = HashSet::new();
    for line in text.lines().skip(1).filter(|line| !line.is_empty()) {
        lines += 1;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        for character in line.chars() {
            match character {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut field)),
                other => field.push(other),
            }
        }
        fields.push(field);
        assert_eq!(fields.len(), 8, "line {line}");
        if fields[6].is_empty() {
            guests += 1;
        } else {
            customers.insert(fields[6].clone());
        }
    }
    (lines, guests, customers.len())
}

async fn gbp_merchant(server: &TestServer) -> Merchant {
    let created = server
        .call(
            reqwest::Method::POST,
            "/v1/merchants",
            Some(OPERATOR_KEY),
            None,
            Some(&json!({"name": "Online Retail", "currency": "GBP", "timezone": "Europe/London"})),
        )
        .await;
    let body = created.ok(201);
    Merchant {
        id: body["id"].as_str().expect("id").to_string(),
        key: body["api_key"].as_str().expect("api_key").to_string(),
    }
}

async fn import(server: &TestServer, merchant: &Merchant) -> ImportSummary {
    import_online_retail(
        &server.state,
        &merchant.id,
        &fixture(),
        &ImportOptions::default(),
    )
    .await
    .expect("the import runs")
}

fn skipped(summary: &ImportSummary) -> Vec<(&str, u64)> {
    summary
        .skipped
        .iter()
        .map(|(reason, count)| (reason.as_str(), *count))
        .collect()
}

async fn import_fixture(backend: Backend) {
    let server = TestServer::start(backend).await;

    // the import refuses a merchant whose books are not in GBP
    let yuan = server.merchant("Cafe", "CNY").await;
    let refused = import_online_retail(
        &server.state,
        &yuan.id,
        &fixture(),
        &ImportOptions::default(),
    )
    .await
    .expect_err("a CNY merchant is refused");
    assert!(refused.to_string().contains("GBP"), "{refused:#}");

    let merchant = gbp_merchant(&server).await;
    // The UK store exists already and runs earn-base-rate at 2 points per GBP: the import
    // reuses it, and its purchases earn what the plugin decides.
    let uk = server.store_coded(&merchant.key, "UNITED-KINGDOM").await;
    let plugin = server
        .upload_plugin(
            &merchant.key,
            Some(&json!({"name": "earn-base-rate", "version": "1.0.0", "world": "earn-rule"})),
            Some(component("earn_base_rate")),
        )
        .await
        .id();
    server
        .put(
            &format!("/v1/stores/{uk}/plugins/earn-rule"),
            &merchant.key,
            &json!({"plugins": [{"plugin_id": plugin, "config": {"points_per_currency_unit": 2}}]}),
        )
        .await
        .ok(200);

    let first = import(&server, &merchant).await;
    let (lines, guests, customers) = recount();
    assert_eq!(first.lines_read, 3_306);
    assert_eq!(first.lines_read, lines);
    assert_eq!(
        (first.invoices, first.sales, first.cancellations),
        (197, 169, 28)
    );
    assert_eq!((first.stores_created, first.stores_reused), (6, 1));
    assert_eq!((first.members_created, first.members_reused), (101, 0));
    assert_eq!(first.members_created as usize, customers);
    assert_eq!(
        (
            first.purchases_imported,
            first.purchases_present,
            first.purchases_refused
        ),
        (154, 0, 0)
    );
    assert_eq!(
        (
            first.refunds_imported,
            first.refunds_present,
            first.refunds_refused
        ),
        (24, 0, 0)
    );
    // 145 UK purchases at 2 points per GBP (the plugin), 9 elsewhere at the base rate of 1
    assert_eq!(first.points_issued, 102_766);
    assert!(first.points_reversed > 0);
    assert_eq!(
        skipped(&first),
        [
            (online_retail::UNMATCHED, 28),
            (online_retail::GUEST, 1_134),
            (online_retail::ZERO_PRICE, 3),
        ]
    );
    assert_eq!(first.skipped[online_retail::GUEST], guests);
    assert_eq!(first.notes[online_retail::PARTLY_MATCHED], 4);
    assert_eq!(
        first.notes["unit prices rounded to 2 decimals (half away from zero)"],
        2
    );
    // 2,108 lines in purchases, 33 cancellation lines in refunds
    assert_eq!(first.lines_imported, 2_141);
    assert_eq!(
        first.lines_imported + first.lines_present + first.lines_skipped(),
        first.lines_read
    );
    let printed = first.to_string();
    assert!(
        printed.contains("154 imported") && printed.contains("lines/s"),
        "{printed}"
    );

    // Customer 12504 (Germany) bought 12 each of three items in 575352, cancelled 1 each in
    // C577397 and 12 each in C577775 (11 left to refund: 1 each beyond), then bought again.
    let members = server
        .get("/v1/members?external_id=12504", &merchant.key)
        .await;
    let member = &members.ok(200)["items"][0];
    assert_eq!(member["joined_at"], "2011-11-09T14:56:00Z");
    let member_id = member["id"].as_str().expect("member id");
    let ledger = server
        .get(
            &format!("/v1/members/{member_id}/ledger?limit=200"),
            &merchant.key,
        )
        .await;
    let entries = ledger.ok(200)["items"].as_array().expect("entries").clone();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|entry| entry["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["purchase", "refund", "refund", "purchase"],
        "newest first"
    );
    let first_purchase = entries[3]["reference"].as_str().expect("purchase id");
    let detail = server
        .get(&format!("/v1/purchases/{first_purchase}"), &merchant.key)
        .await;
    let detail = detail.ok(200);
    assert_eq!(detail["external_id"], "575352");
    assert_eq!(detail["occurred_at"], "2011-11-09T14:56:00Z");
    assert_eq!(detail["total"], "449.40");
    assert_eq!(detail["refunded"], "335.40");
    assert_eq!(detail["points_awarded"], 449);
    assert_eq!(detail["refunds"].as_array().expect("refunds").len(), 2);
    let refunded: Vec<(String, i64)> = detail["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["sku"].as_str().expect("sku").to_string(),
                item["refunded_quantity"].as_i64().expect("quantity"),
            )
        })
        .collect();
    assert_eq!(
        refunded,
        [
            ("22236".to_string(), 12),
            ("22776".to_string(), 12),
            ("22220".to_string(), 12),
            ("21124".to_string(), 0),
            ("21122".to_string(), 0),
            ("POST".to_string(), 0),
        ]
    );

    // A UK purchase's points came from the plugin, at the data's time (in December London
    // time is UTC).
    let members = server
        .get("/v1/members?external_id=17850", &merchant.key)
        .await;
    let member_id = members.ok(200)["items"][0]["id"]
        .as_str()
        .expect("member id")
        .to_string();
    let ledger = server
        .get(
            &format!("/v1/members/{member_id}/ledger?limit=200"),
            &merchant.key,
        )
        .await;
    let oldest = ledger.ok(200)["items"]
        .as_array()
        .expect("entries")
        .last()
        .expect("an entry")
        .clone();
    assert_eq!(oldest["created_at"], "2010-12-01T08:26:00Z");
    assert_eq!(oldest["provenance"]["earn_policy"], "plugins");
    assert_eq!(oldest["provenance"]["plugins"][0]["name"], "earn-base-rate");
    let detail = server
        .get(
            &format!(
                "/v1/purchases/{}",
                oldest["reference"].as_str().expect("id")
            ),
            &merchant.key,
        )
        .await;
    let detail = detail.ok(200);
    assert_eq!(detail["external_id"], "536365");
    assert_eq!(detail["total"], "139.12");
    assert_eq!(detail["points_awarded"], 278);
    assert_eq!(
        detail["items"][0]["name"],
        "WHITE HANGING HEART T-LIGHT HOLDER"
    );

    // Again: nothing new.
    let second = import(&server, &merchant).await;
    assert!(second.nothing_new());
    assert_eq!((second.stores_created, second.stores_reused), (0, 7));
    assert_eq!((second.members_created, second.members_reused), (0, 101));
    assert_eq!(
        (second.purchases_imported, second.purchases_present),
        (0, 154)
    );
    assert_eq!((second.refunds_imported, second.refunds_present), (0, 24));
    assert_eq!((second.points_issued, second.points_reversed), (0, 0));
    assert_eq!((second.lines_imported, second.lines_present), (0, 2_141));
    assert!(second.to_string().contains("nothing new"), "{second}");

    server.verify().await;
}

backend_tests!(import_fixture);
