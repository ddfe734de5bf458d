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

/// On PostgreSQL, a table grown well beyond its statistics (here never analyzed) is analyzed
/// by the host's refresh, and updates alone do not analyze it again within the minute; on
/// SQLite the refresh has nothing to do.
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
    let rows = loyalty_core::db::STATISTICS_CHANGED_ROWS_MIN + 500;
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

    // Rows changed in place, however many, wait a minute after the last ANALYZE: tables that
    // are only updated would otherwise be analyzed at every look.
    sqlx::query("UPDATE merchants SET name = 'renamed' WHERE merchant_id LIKE 'mer_stats_%'")
        .execute(&database.pool)
        .await
        .expect("update merchants");
    let mut changed = 0;
    for _ in 0..60 {
        changed = sqlx::query_scalar(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables \
             WHERE relid = to_regclass('merchants')",
        )
        .fetch_one(&database.pool)
        .await
        .expect("read the change counter");
        if changed >= rows {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(changed >= rows, "{changed} changes counted of {rows}");
    let analyzed = loyalty_core::db::refresh_statistics(database)
        .await
        .expect("refresh");
    assert!(
        !analyzed.iter().any(|table| table.ends_with(".merchants")),
        "merchants analyzed again within the minute: {analyzed:?}"
    );
}

/// PostgreSQL's generic (cached) plan of the balances read's search for a member's earliest
/// active lot, as `EXPLAIN` prints it.
async fn earliest_lot_generic_plan(pool: &sqlx::AnyPool, merchant: &str, member: &str) -> String {
    generic_plan(
        pool,
        "SELECT MIN(expires_at) FROM point_lots \
         WHERE merchant_id = $1 AND member_id = $2 AND state = 'active' AND remaining > 0 \
         AND expires_at IS NOT NULL",
        &[merchant, member],
        false,
    )
    .await
}

/// PostgreSQL's generic plan of `statement` (its parameters all text, given as `arguments`),
/// optionally with sequential scans ruled out as the writer's lanes do.
async fn generic_plan(
    pool: &sqlx::AnyPool,
    statement: &str,
    arguments: &[&str],
    without_seqscan: bool,
) -> String {
    let mut connection = pool.acquire().await.expect("a connection");
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *connection)
        .await
        .expect("generic plans");
    if without_seqscan {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *connection)
            .await
            .expect("no sequential scans");
    }
    let types = vec!["text"; arguments.len()].join(", ");
    sqlx::query(&format!("PREPARE planned ({types}) AS {statement}"))
        .execute(&mut *connection)
        .await
        .expect("prepare");
    // The test's own ids, written into the statement: EXPLAIN takes no bound parameters here.
    let quoted: Vec<String> = arguments.iter().map(|value| format!("'{value}'")).collect();
    let explain = format!("EXPLAIN EXECUTE planned ({})", quoted.join(", "));
    let plan: Vec<String> = sqlx::query_scalar(&explain)
        .fetch_all(&mut *connection)
        .await
        .expect("explain");
    sqlx::query("DEALLOCATE planned")
        .execute(&mut *connection)
        .await
        .expect("deallocate");
    sqlx::query("RESET ALL")
        .execute(&mut *connection)
        .await
        .expect("reset");
    plan.join("\n")
}

/// On PostgreSQL, the writer's cached plans of a lookup by primary key on young tables (every
/// estimate one row, sequential scans ruled out) never go through a unique index of a column
/// the row may lack: the lanes locked members through members_external_id and read refunded
/// purchases through purchases_external_id, with only merchant_id as the index condition (a
/// walk over the merchant's members or purchases), until those became partial indexes. The
/// member has no other index, so its lock must use the primary key.
async fn young_tables_skip_partial_keys(backend: Backend) {
    let server = TestServer::start(backend).await;
    if backend == Backend::Sqlite {
        return;
    }
    let pool = &server.state.database.pool;
    let lock = generic_plan(
        pool,
        "UPDATE members SET version = version + 1 WHERE merchant_id = $1 AND id = $2 \
         RETURNING 'member' AS row_kind",
        &["mer_young", "mem_1"],
        true,
    )
    .await;
    assert!(lock.contains("using members_pkey on"), "{lock}");
    let read = generic_plan(
        pool,
        "SELECT member_id, store_id, total FROM purchases WHERE merchant_id = $1 AND id = $2",
        &["mer_young", "pur_1"],
        true,
    )
    .await;
    assert!(!read.contains("purchases_external_id"), "{read}");
}

/// On PostgreSQL, lots analysed while one member held them all must not teach the planner that
/// a member's condition selects every lot: the cached (generic) plan of a member's earliest
/// lot uses the member's index, not a walk of the merchant-wide expiry index. SQLite keeps no
/// such statistics.
async fn skewed_lot_statistics_keep_member_plans(backend: Backend) {
    let server = TestServer::start(backend).await;
    if backend == Backend::Sqlite {
        return;
    }
    let pool = &server.state.database.pool;
    let insert_lots = |member: &'static str, first: i64, count: i64, members: i64| {
        sqlx::query(
            "INSERT INTO point_lots (merchant_id, id, member_id, transaction_id, state, earned, \
             remaining, activates_at, expires_at, created_at) SELECT 'mer_skew', \
             'lot_' || (n + $2), $1 || (n % $4), 'txn', 'active', 10, 10, 0, n + $2, 0 \
             FROM generate_series(1, $3) AS n",
        )
        .bind(member)
        .bind(first)
        .bind(count)
        .bind(members)
        .execute(pool)
    };
    insert_lots("mem_big_", 0, 6_000, 1)
        .await
        .expect("one member's lots");
    sqlx::query("ANALYZE point_lots")
        .execute(pool)
        .await
        .expect("analyze");
    insert_lots("mem_small_", 1_000_000, 3_000, 1_500)
        .await
        .expect("many members' lots");
    let plan = earliest_lot_generic_plan(pool, "mer_skew", "mem_small_7").await;
    assert!(plan.contains("using point_lots_member on"), "{plan}");
    assert!(!plan.contains("point_lots_expiry"), "{plan}");
}

/// On PostgreSQL, a plan cached while the lots table was young (no statistics, every estimate
/// one row) must still find a member's earliest lot by walking the member's expiry index in
/// order, not by reading all of the member's active lots through another index of theirs (the
/// writer's lane cached such a plan and spent about 0.7 ms of each purchase of a member with
/// 2,000 lots on it).
async fn young_lot_table_keeps_member_plans(backend: Backend) {
    let server = TestServer::start(backend).await;
    if backend == Backend::Sqlite {
        return;
    }
    let pool = &server.state.database.pool;
    sqlx::query(
        "INSERT INTO point_lots (merchant_id, id, member_id, transaction_id, state, earned, \
         remaining, activates_at, expires_at, created_at) SELECT 'mer_young', 'lot_' || n, \
         'mem_busy', 'txn', 'active', 10, 10, n, 1000000 + n, 0 \
         FROM generate_series(1, 2000) AS n",
    )
    .execute(pool)
    .await
    .expect("one member's lots");
    let plan = earliest_lot_generic_plan(pool, "mer_young", "mem_busy").await;
    assert!(plan.contains("using point_lots_member on"), "{plan}");
}

/// On PostgreSQL the tables whose rows every purchase updates (a member's statistics, an
/// account's balance, a pair of items' count) leave room on their pages, so an update that
/// changes no indexed column stays on its page (a HOT update: no new index entries). Checked
/// with the transaction's own counters: 200 fresh rows, each updated once; on pages packed
/// full (PostgreSQL's default) none of these updates is HOT.
async fn updated_rows_stay_on_their_pages(backend: Backend) {
    let server = TestServer::start(backend).await;
    if backend == Backend::Sqlite {
        return;
    }
    let rows = 200;
    let tables = [
        (
            "members",
            "INSERT INTO members (merchant_id, id, phone, attributes, joined_at, updated_at) \
             SELECT 'mer_hot', 'mem_' || n, '+86138' || lpad(n::text, 8, '0'), '{}', 0, 0 \
             FROM generate_series(1, $1) AS n",
            "UPDATE members SET version = version + 1, lifetime_spend = lifetime_spend + 100, \
             orders_count = orders_count + 1, last_purchase_at = 1 WHERE merchant_id = 'mer_hot'",
        ),
        (
            "accounts",
            "INSERT INTO accounts (merchant_id, id, member_id, asset, kind, balance, version, \
             created_at) SELECT 'mer_hot', 'acc_' || n, 'mem_' || n, 'points', 'points', 0, 0, 0 \
             FROM generate_series(1, $1) AS n",
            "UPDATE accounts SET balance = balance + 10, version = version + 1 \
             WHERE merchant_id = 'mer_hot'",
        ),
        (
            "co_purchases",
            "INSERT INTO co_purchases (merchant_id, sku, other_sku, orders_count) \
             SELECT 'mer_hot', 'SKU-' || n, 'SKU-' || (n + 1), 1 FROM generate_series(1, $1) AS n",
            "UPDATE co_purchases SET orders_count = orders_count + 1 WHERE merchant_id = 'mer_hot'",
        ),
    ];
    let pool = &server.state.database.pool;
    for (table, insert, update) in tables {
        let mut transaction = pool.begin().await.expect("a transaction");
        sqlx::query(insert)
            .bind(rows)
            .execute(&mut *transaction)
            .await
            .expect("fresh rows");
        sqlx::query(update)
            .execute(&mut *transaction)
            .await
            .expect("each row updated once");
        let (updated, hot): (i64, i64) = sqlx::query_as(&format!(
            "SELECT pg_stat_get_xact_tuples_updated('{table}'::regclass), \
             pg_stat_get_xact_tuples_hot_updated('{table}'::regclass)"
        ))
        .fetch_one(&mut *transaction)
        .await
        .expect("the transaction's counters");
        transaction.rollback().await.expect("rolled back");
        assert_eq!(updated, rows, "{table}: every row updated");
        assert!(
            hot >= rows / 4,
            "{table}: {hot} of {updated} updates stayed on their page"
        );
    }
}

/// A host that starts again on a PostgreSQL database it has set up writes none of its storage
/// settings again: an ALTER rewrites the table's catalog row (a new `xmin`) even when nothing
/// changes, and every session of every host would drop its cached plans of the table.
async fn restarting_leaves_the_catalog_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    if backend == Backend::Sqlite {
        return;
    }
    let pool = &server.state.database.pool;
    let catalog_rows = || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname || ' ' || COALESCE(array_to_string(c.reloptions, ','), ''), \
             c.xmin::text || ' ' || a.xmin::text FROM pg_class c \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'member_id' \
             WHERE c.oid IN (CAST('members' AS regclass), CAST('accounts' AS regclass), \
             CAST('point_lots' AS regclass)) ORDER BY c.relname",
        )
        .fetch_all(pool)
        .await
        .expect("the catalog rows");
        rows
    };
    let before = catalog_rows().await;
    assert!(
        before[0].0.contains("fillfactor=70"),
        "accounts: {before:?}"
    );
    server.state.database.migrate().await.expect("set up again");
    assert_eq!(
        catalog_rows().await,
        before,
        "the catalog rows are untouched"
    );
}

backend_tests!(
    purchase_and_refund,
    restarting_leaves_the_catalog_alone,
    updated_rows_stay_on_their_pages,
    stale_statistics_are_refreshed,
    skewed_lot_statistics_keep_member_plans,
    young_lot_table_keeps_member_plans,
    young_tables_skip_partial_keys
);
