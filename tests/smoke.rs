//! The first end-to-end path on both backends: merchant, store, member, purchase, refund.

use loyalty_tests::{backend_tests, json, Backend, TestServer};

async fn purchase_and_refund(backend: Backend) {
    let server = TestServer::start(backend).await;
    let merchant = server.merchant("Cafe", "CNY").await;
    let store = server.store(&merchant.key).await;
    let member = server
        .post(
            "/v1/members",
            &merchant.key,
            &json!({"phone": "13800138000"}),
        )
        .await
        .id();
    let purchase = server
        .post_idem(
            "/v1/purchases",
            &merchant.key,
            "p1",
            &json!({"member_id": member, "store_id": store,
                    "items": [{"sku": "TEA", "quantity": 2, "unit_price": "12.50"}],
                    "payments": [{"method": "cash", "amount": "25.00"}]}),
        )
        .await;
    let body = purchase.ok(201);
    assert_eq!(body["total"], "25.00");
    assert_eq!(body["points_awarded"], 25);
    assert_eq!(body["balances"]["points"]["available"], 25);
    let refund = server
        .post_idem(
            &format!("/v1/purchases/{}/refunds", purchase.id()),
            &merchant.key,
            "r1",
            &json!({"amount": "10.00"}),
        )
        .await;
    assert_eq!(refund.ok(201)["points_reversed"], 10);
    server.verify().await;
}

/// On PostgreSQL, a table changed well beyond its statistics (here never analyzed) is
/// analyzed by the host's refresh; on SQLite the refresh has nothing to do.
async fn stale_statistics_are_refreshed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let database = &server.state.database;
    if backend == Backend::Sqlite {
        let analyzed = loyalty_core::db::refresh_statistics(database)
            .await
            .expect("refresh");
        assert!(analyzed.is_empty(), "{analyzed:?}");
        return;
    }
    let rows = loyalty_core::db::STATISTICS_STALE_ROWS_MIN + 500;
    sqlx::query(
        "INSERT INTO merchants (merchant_id, name, currency, currency_exponent, timezone, \
         default_region, settings, created_at) SELECT 'mer_stats_' || n, 'm', 'CNY', 2, 'UTC', \
         'CN', '{}', 0 FROM generate_series(1, $1) AS n",
    )
    .bind(rows)
    .execute(&database.pool)
    .await
    .expect("insert merchants");
    // The change counters reach pg_stat_user_tables when the inserting session reports its
    // statistics (within about a second of going idle).
    let mut analyzed = Vec::new();
    for _ in 0..60 {
        analyzed = loyalty_core::db::refresh_statistics(database)
            .await
            .expect("refresh");
        if analyzed.iter().any(|table| table.ends_with(".merchants")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        analyzed.iter().any(|table| table.ends_with(".merchants")),
        "merchants was not analyzed: {analyzed:?}"
    );
    // ANALYZE writes the row estimate into the catalogue at once.
    let estimate: i64 = sqlx::query_scalar(
        "SELECT CAST(reltuples AS BIGINT) FROM pg_class WHERE oid = to_regclass('merchants')",
    )
    .fetch_one(&database.pool)
    .await
    .expect("read the estimate");
    assert!(estimate >= rows, "estimate {estimate} after {rows} rows");
}

backend_tests!(purchase_and_refund, stale_statistics_are_refreshed);
