//! What the merchant sells, learned from purchases: per item (SKU) the units sold, orders,
//! last price, name and category; per pair of items how many orders held both. Off the
//! purchase's own write path: the dispatcher queues each purchase when it dispatches its
//! `purchase.recorded` event ([`queue_purchases`]), and the server counts the queue in large
//! windows ([`count_purchases`]), exactly once per purchase (a queued row is deleted in the
//! transaction that counts it). Read for recommendations.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AnyPool, Row};
use utoipa::ToSchema;

use crate::db::{numbered_list, values_rows, SqlValue};
use crate::error::CoreError;
use crate::session::{self, Session};

/// Distinct items of one purchase that count towards co-purchases (the costliest lines
/// first): n items make n × (n - 1) / 2 pairs, so a basket of 500 lines must not make 124,750
/// (12 make at most 66 upserts a purchase).
pub const CO_PURCHASE_ITEMS_MAX: usize = 12;
/// Rows per multi-row upsert.
const UPSERT_ROWS_MAX: usize = 100;
/// Queued purchases one count takes at most, and so one transaction counts. Merging is what
/// makes a count cheap: with the ledger benchmark's 200 SKUs (about 16 pairs a purchase), 256
/// purchases upserted about 3,800 pair rows, 15 a purchase, and 4,096 about 19,000, under 5
/// a purchase. On SQLite the count holds the only write lock while it upserts, so the window
/// is not larger.
pub const COUNT_PURCHASES_MAX: usize = 4_096;
/// Queued purchases claimed per statement.
const CLAIM_ROWS_MAX: usize = 500;
/// Candidates of each kind (co-purchased, popular) a recommendation considers.
pub const CANDIDATES_PER_KIND_MAX: i64 = 100;
/// History lines a recommendation reads.
pub const HISTORY_LINES_MAX: i64 = 50;

/// One distinct item of a purchase, its lines summed.
#[derive(Debug, Clone)]
pub struct BasketLine {
    name: Option<String>,
    category: Option<String>,
    quantity: i64,
    unit_price: i64,
    total: i64,
}

/// What a purchase adds to the item statistics: when it happened and its items by SKU.
#[derive(Debug, Clone, Default)]
pub struct Basket {
    occurred_at: i64,
    items: BTreeMap<String, BasketLine>,
}

/// The baskets of a merchant's purchases, by purchase id. A purchase's lines never change
/// once written (a refund only counts returned quantities), so the dispatcher reads them from
/// the pool before its writer command, and the command spends the write lock on writes only.
pub async fn purchase_baskets(
    pool: &AnyPool,
    merchant_id: &str,
    purchase_ids: &[String],
) -> Result<BTreeMap<String, Basket>, CoreError> {
    let mut baskets: BTreeMap<String, Basket> = BTreeMap::new();
    for chunk in purchase_ids.chunks(UPSERT_ROWS_MAX) {
        // The ids restrict both sides of the join: with them on the lines alone, PostgreSQL
        // hashed all of the merchant's purchases for every pass (measured: 20-50 ms a query
        // at 7,000 purchases, growing with the merchant).
        let sql = format!(
            "SELECT i.purchase_id, i.sku, i.name, i.category, i.quantity, i.unit_price, i.total, \
             p.occurred_at FROM purchase_items i JOIN purchases p ON p.merchant_id = i.merchant_id \
             AND p.id = i.purchase_id WHERE i.merchant_id = $1 AND i.purchase_id IN ({}) \
             AND p.merchant_id = $1 AND p.id IN ({}) ORDER BY i.purchase_id, i.line",
            numbered_list(2, chunk.len()),
            numbered_list(2 + chunk.len(), chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(merchant_id);
        for purchase_id in chunk.iter().chain(chunk) {
            query = query.bind(purchase_id);
        }
        for row in query.fetch_all(pool).await? {
            let line = BasketLine {
                name: row.try_get("name")?,
                category: row.try_get("category")?,
                quantity: row.try_get("quantity")?,
                unit_price: row.try_get("unit_price")?,
                total: row.try_get("total")?,
            };
            let basket = baskets.entry(row.try_get("purchase_id")?).or_default();
            basket.occurred_at = row.try_get("occurred_at")?;
            basket
                .items
                .entry(row.try_get("sku")?)
                .and_modify(|seen: &mut BasketLine| {
                    seen.quantity += line.quantity;
                    seen.total += line.total;
                })
                .or_insert(line);
        }
    }
    Ok(baskets)
}

/// A purchase waiting to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPurchase {
    pub merchant_id: String,
    /// Its `purchase.recorded` event: the queue's key.
    pub event_id: String,
    pub purchase_id: String,
}

/// Queues purchases (event id, purchase id) of one merchant for counting, in the dispatcher's
/// transaction that dispatches their events. An event queued again is ignored.
pub async fn queue_purchases(
    connection: &mut Session<'_>,
    merchant_id: &str,
    purchases: &[(&str, &str)],
    now: i64,
) -> Result<(), CoreError> {
    for chunk in purchases.chunks(UPSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO item_stats_queue (merchant_id, queued_at, event_id, purchase_id) \
             VALUES {} ON CONFLICT (merchant_id, event_id) DO NOTHING",
            values_rows(2, 2, chunk.len(), "")
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into(), now.into()];
        for (event_id, purchase_id) in chunk {
            values.extend([SqlValue::from(*event_id), SqlValue::from(*purchase_id)]);
        }
        session::query(&sql)
            .bind_values(values)
            .execute(connection)
            .await?;
    }
    Ok(())
}

/// The longest-queued purchases, across merchants, at most `limit`. The queue holds about one
/// window between counts, so sorting it is cheap.
pub async fn queued_purchases(
    pool: &AnyPool,
    limit: usize,
) -> Result<Vec<QueuedPurchase>, CoreError> {
    let limit = i64::try_from(limit.clamp(1, COUNT_PURCHASES_MAX)).expect("a window fits i64");
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT merchant_id, event_id, purchase_id FROM item_stats_queue \
         ORDER BY queued_at, merchant_id, event_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(merchant_id, event_id, purchase_id)| QueuedPurchase {
            merchant_id,
            event_id,
            purchase_id,
        })
        .collect())
}

/// What a batch adds to one item's statistics.
#[derive(Default)]
struct ItemDelta {
    name: Option<String>,
    category: Option<String>,
    /// The price at the batch's latest sale of it.
    last_unit_price: i64,
    last_sold_at: i64,
    units: i64,
    orders: i64,
}

/// Counts queued purchases into the item statistics, each once: `purchases` holds (event id,
/// basket), the baskets read beforehand by [`purchase_baskets`]. A purchase counts only if
/// its queue row is still there, and the row goes in the same transaction, so a count that
/// runs twice (two hosts, or a retry) counts nothing twice. Then multi-row upserts of the
/// summed counts, at most 100 rows a statement: a pair bought together in several of
/// the window's purchases is one row.
pub async fn count_purchases(
    connection: &mut Session<'_>,
    merchant_id: &str,
    purchases: &[(&str, &Basket)],
) -> Result<usize, CoreError> {
    debug_assert!(purchases.len() <= COUNT_PURCHASES_MAX, "a window at most");
    let mut claimed: Vec<&Basket> = Vec::new();
    for chunk in purchases.chunks(CLAIM_ROWS_MAX) {
        let sql = format!(
            "DELETE FROM item_stats_queue WHERE merchant_id = $1 AND event_id IN ({}) \
             RETURNING event_id",
            numbered_list(2, chunk.len())
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into()];
        values.extend(chunk.iter().map(|(event_id, _)| SqlValue::from(*event_id)));
        let fresh: std::collections::BTreeSet<String> = session::query(&sql)
            .bind_values(values)
            .fetch_all(connection)
            .await?
            .iter()
            .map(|row| row.try_get("event_id"))
            .collect::<Result<_, _>>()?;
        claimed.extend(
            chunk
                .iter()
                .filter(|(event_id, _)| fresh.contains(*event_id))
                .map(|(_, basket)| *basket),
        );
    }
    let counted = claimed.len();
    if claimed.is_empty() {
        return Ok(0);
    }
    let mut deltas: BTreeMap<String, ItemDelta> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), i64> = BTreeMap::new();
    for Basket { occurred_at, items } in claimed {
        for (sku, line) in items {
            let delta = deltas.entry(sku.clone()).or_default();
            if *occurred_at >= delta.last_sold_at {
                delta.last_sold_at = *occurred_at;
                delta.last_unit_price = line.unit_price;
            }
            delta.name = line.name.clone().or(delta.name.take());
            delta.category = line.category.clone().or(delta.category.take());
            delta.units += line.quantity;
            delta.orders += 1;
        }
        // Pairs among the basket's costliest items, each once with the lesser SKU first
        // (readers look a pair up from either side).
        let mut ranked: Vec<(&String, &BasketLine)> = items.iter().collect();
        ranked.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
        ranked.truncate(CO_PURCHASE_ITEMS_MAX);
        for (a, _) in &ranked {
            for (b, _) in &ranked {
                if a < b {
                    *pairs.entry(((*a).clone(), (*b).clone())).or_default() += 1;
                }
            }
        }
    }
    let items: Vec<(&String, &ItemDelta)> = deltas.iter().collect();
    for chunk in items.chunks(UPSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO item_stats (merchant_id, sku, name, category, last_unit_price, \
             units_sold, orders_count, last_sold_at) VALUES {} \
             ON CONFLICT (merchant_id, sku) DO UPDATE SET \
             name = COALESCE(excluded.name, item_stats.name), \
             category = COALESCE(excluded.category, item_stats.category), \
             last_unit_price = CASE WHEN excluded.last_sold_at >= item_stats.last_sold_at \
               THEN excluded.last_unit_price ELSE item_stats.last_unit_price END, \
             units_sold = item_stats.units_sold + excluded.units_sold, \
             orders_count = item_stats.orders_count + excluded.orders_count, \
             last_sold_at = CASE WHEN excluded.last_sold_at > item_stats.last_sold_at \
               THEN excluded.last_sold_at ELSE item_stats.last_sold_at END",
            values_rows(1, 7, chunk.len(), "")
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into()];
        for (sku, delta) in chunk {
            values.extend([
                SqlValue::from(*sku),
                (&delta.name).into(),
                (&delta.category).into(),
                delta.last_unit_price.into(),
                delta.units.into(),
                delta.orders.into(),
                delta.last_sold_at.into(),
            ]);
        }
        session::query(&sql)
            .bind_values(values)
            .execute(connection)
            .await?;
    }
    let pairs: Vec<(&(String, String), &i64)> = pairs.iter().collect();
    for chunk in pairs.chunks(UPSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO co_purchases (merchant_id, sku, other_sku, orders_count) VALUES {} \
             ON CONFLICT (merchant_id, sku, other_sku) DO UPDATE SET \
             orders_count = co_purchases.orders_count + excluded.orders_count",
            values_rows(1, 3, chunk.len(), "")
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into()];
        for ((sku, other), count) in chunk {
            values.extend([SqlValue::from(sku), other.into(), (**count).into()]);
        }
        session::query(&sql)
            .bind_values(values)
            .execute(connection)
            .await?;
    }
    Ok(counted)
}

/// [`count_purchases`] in a transaction of its own on a pooled connection: on PostgreSQL a
/// count needs no writer lane (the lanes batch commits, and a window's thousands of upserts
/// in a lane held up the purchases routed to it), and it competes with no purchase for a lock
/// (only counts write the item statistics). SQLite's counts go through its one writer.
pub async fn count_purchases_in_transaction(
    pool: &AnyPool,
    merchant_id: &str,
    purchases: &[(&str, &Basket)],
) -> Result<usize, CoreError> {
    let mut transaction = pool.begin().await?;
    let counted = count_purchases(
        &mut Session::Pooled(&mut transaction),
        merchant_id,
        purchases,
    )
    .await?;
    transaction.commit().await?;
    Ok(counted)
}

/// An item with the features a recommender ranks by.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ItemFeatures {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    /// The last unit price sold at, in minor units.
    pub price: i64,
    /// Units sold, all time.
    pub units_sold: i64,
    /// Orders that held both this item and one of the member's recent items.
    pub co_purchase_count: i64,
}

/// A line of the member's history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price: i64,
    pub total: i64,
    pub occurred_at: i64,
}

/// The member's most recent purchase lines, newest first.
pub async fn member_history(
    pool: &AnyPool,
    merchant_id: &str,
    member_id: &str,
) -> Result<Vec<HistoryItem>, CoreError> {
    let rows = sqlx::query(
        "SELECT i.sku, i.name, i.category, i.quantity - i.refunded_quantity AS quantity, \
         i.unit_price, i.total, p.occurred_at FROM purchases p JOIN purchase_items i \
         ON i.merchant_id = p.merchant_id AND i.purchase_id = p.id \
         WHERE p.merchant_id = $1 AND p.member_id = $2 AND i.quantity > i.refunded_quantity \
         ORDER BY p.occurred_at DESC, p.id DESC, i.line LIMIT $3",
    )
    .bind(merchant_id)
    .bind(member_id)
    .bind(HISTORY_LINES_MAX)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(HistoryItem {
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                category: row.try_get("category")?,
                quantity: row.try_get("quantity")?,
                unit_price: row.try_get("unit_price")?,
                total: row.try_get("total")?,
                occurred_at: row.try_get("occurred_at")?,
            })
        })
        .collect()
}

/// Candidates for a member whose recent items are `recent`: the items most often bought with
/// them, then the merchant's most popular items; each once, with its features.
pub async fn candidates(
    pool: &AnyPool,
    merchant_id: &str,
    recent: &[String],
) -> Result<Vec<ItemFeatures>, CoreError> {
    let mut co_counts: BTreeMap<String, i64> = BTreeMap::new();
    if !recent.is_empty() {
        // A pair is stored once, on either side: the recent item may be its first or its
        // second SKU. The list is bound twice, once for each side.
        let sql = format!(
            "SELECT other, CAST(SUM(orders_count) AS BIGINT) AS together FROM (\
             SELECT other_sku AS other, orders_count FROM co_purchases \
             WHERE merchant_id = $1 AND sku IN ({}) \
             UNION ALL SELECT sku AS other, orders_count FROM co_purchases \
             WHERE merchant_id = $1 AND other_sku IN ({})) AS pairs GROUP BY other \
             ORDER BY together DESC, other LIMIT {CANDIDATES_PER_KIND_MAX}",
            numbered_list(2, recent.len()),
            numbered_list(2 + recent.len(), recent.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql).bind(merchant_id);
        for sku in recent.iter().chain(recent) {
            query = query.bind(sku);
        }
        co_counts.extend(query.fetch_all(pool).await?);
    }
    let popular: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT sku FROM item_stats WHERE merchant_id = $1 \
         ORDER BY units_sold DESC, sku LIMIT {CANDIDATES_PER_KIND_MAX}"
    ))
    .bind(merchant_id)
    .fetch_all(pool)
    .await?;
    let mut wanted: Vec<String> = co_counts.keys().cloned().collect();
    wanted.extend(
        popular
            .into_iter()
            .filter(|sku| !co_counts.contains_key(sku)),
    );
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT sku, name, category, last_unit_price, units_sold FROM item_stats \
         WHERE merchant_id = $1 AND sku IN ({}) ORDER BY units_sold DESC, sku",
        numbered_list(2, wanted.len())
    );
    let mut query = sqlx::query(&sql).bind(merchant_id);
    for sku in &wanted {
        query = query.bind(sku);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let sku: String = row.try_get("sku")?;
            Ok(ItemFeatures {
                co_purchase_count: co_counts.get(&sku).copied().unwrap_or(0),
                name: row.try_get("name")?,
                category: row.try_get("category")?,
                price: row.try_get("last_unit_price")?,
                units_sold: row.try_get("units_sold")?,
                sku,
            })
        })
        .collect()
}
