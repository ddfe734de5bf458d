//! What the merchant sells, learned from purchases: per item (SKU) the units sold, orders,
//! last price, name and category; per pair of items how many orders held both. Counted from
//! `purchase.recorded` events by the dispatcher, exactly once per event (the event id is the
//! key in `event_effects`), off the purchase's own write path. Read for recommendations.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use utoipa::ToSchema;

use crate::error::CoreError;

/// Distinct items of one purchase that count towards co-purchases (the costliest lines
/// first): n items make n × (n - 1) pair rows, so a basket of 500 lines must not make 250,000
/// (12 make at most 132 upserts a purchase).
pub const CO_PURCHASE_ITEMS_MAX: usize = 12;
/// Rows per multi-row upsert.
const UPSERT_ROWS_MAX: usize = 100;
/// Candidates of each kind (co-purchased, popular) a recommendation considers.
pub const CANDIDATES_PER_KIND_MAX: i64 = 100;
/// History lines a recommendation reads.
pub const HISTORY_LINES_MAX: i64 = 50;

/// Records that `effect` of `event_id` is applied; false if it was already (the caller then
/// applies nothing). Runs in the caller's transaction, with the effect itself.
pub async fn claim_effect(
    connection: &mut AnyConnection,
    merchant_id: &str,
    event_id: &str,
    effect: &str,
    now: i64,
) -> Result<bool, CoreError> {
    let inserted = sqlx::query(
        "INSERT INTO event_effects (merchant_id, event_id, effect, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, event_id, effect) DO NOTHING",
    )
    .bind(merchant_id)
    .bind(event_id)
    .bind(effect)
    .bind(now)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

struct Line {
    name: Option<String>,
    category: Option<String>,
    quantity: i64,
    unit_price: i64,
    total: i64,
}

/// Counts purchase `purchase_id` into the item statistics, once for `event_id`.
pub async fn count_purchase(
    connection: &mut AnyConnection,
    merchant_id: &str,
    event_id: &str,
    purchase_id: &str,
    now: i64,
) -> Result<(), CoreError> {
    if !claim_effect(connection, merchant_id, event_id, "item_stats", now).await? {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT i.sku, i.name, i.category, i.quantity, i.unit_price, i.total, p.occurred_at \
         FROM purchase_items i JOIN purchases p ON p.merchant_id = i.merchant_id \
         AND p.id = i.purchase_id WHERE i.merchant_id = $1 AND i.purchase_id = $2 ORDER BY i.line",
    )
    .bind(merchant_id)
    .bind(purchase_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut occurred_at = now;
    let mut items: BTreeMap<String, Line> = BTreeMap::new();
    for row in &rows {
        occurred_at = row.try_get("occurred_at")?;
        let sku: String = row.try_get("sku")?;
        let line = Line {
            name: row.try_get("name")?,
            category: row.try_get("category")?,
            quantity: row.try_get("quantity")?,
            unit_price: row.try_get("unit_price")?,
            total: row.try_get("total")?,
        };
        items
            .entry(sku)
            .and_modify(|seen| {
                seen.quantity += line.quantity;
                seen.total += line.total;
            })
            .or_insert(line);
    }
    let skus: Vec<&String> = items.keys().collect();
    for chunk in skus.chunks(UPSERT_ROWS_MAX) {
        let values: Vec<String> = (0..chunk.len())
            .map(|index| {
                let base = 3 + index * 5;
                format!(
                    "($1, ${}, ${}, ${}, ${}, ${}, 1, $2)",
                    base,
                    base + 1,
                    base + 2,
                    base + 3,
                    base + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO item_stats (merchant_id, sku, name, category, last_unit_price, \
             units_sold, orders_count, last_sold_at) VALUES {} \
             ON CONFLICT (merchant_id, sku) DO UPDATE SET \
             name = COALESCE(excluded.name, item_stats.name), \
             category = COALESCE(excluded.category, item_stats.category), \
             last_unit_price = CASE WHEN excluded.last_sold_at >= item_stats.last_sold_at \
               THEN excluded.last_unit_price ELSE item_stats.last_unit_price END, \
             units_sold = item_stats.units_sold + excluded.units_sold, \
             orders_count = item_stats.orders_count + 1, \
             last_sold_at = CASE WHEN excluded.last_sold_at > item_stats.last_sold_at \
               THEN excluded.last_sold_at ELSE item_stats.last_sold_at END",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(merchant_id).bind(occurred_at);
        for sku in chunk {
            let line = &items[*sku];
            query = query
                .bind(*sku)
                .bind(&line.name)
                .bind(&line.category)
                .bind(line.unit_price)
                .bind(line.quantity);
        }
        query.execute(&mut *connection).await?;
    }
    // Pairs among the costliest items, both directions, so "bought with X" is one key range.
    let mut ranked: Vec<(&String, &Line)> = items.iter().collect();
    ranked.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
    ranked.truncate(CO_PURCHASE_ITEMS_MAX);
    let pairs: Vec<(&str, &str)> = ranked
        .iter()
        .flat_map(|(a, _)| {
            ranked
                .iter()
                .filter(move |(b, _)| b != a)
                .map(move |(b, _)| (a.as_str(), b.as_str()))
        })
        .collect();
    for chunk in pairs.chunks(UPSERT_ROWS_MAX) {
        let values: Vec<String> = (0..chunk.len())
            .map(|index| format!("($1, ${}, ${}, 1)", 2 + index * 2, 3 + index * 2))
            .collect();
        let sql = format!(
            "INSERT INTO co_purchases (merchant_id, sku, other_sku, orders_count) VALUES {} \
             ON CONFLICT (merchant_id, sku, other_sku) DO UPDATE SET \
             orders_count = co_purchases.orders_count + 1",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(merchant_id);
        for (sku, other) in chunk {
            query = query.bind(*sku).bind(*other);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
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
        let placeholders: Vec<String> = (0..recent.len())
            .map(|index| format!("${}", index + 2))
            .collect();
        let sql = format!(
            "SELECT other_sku, CAST(SUM(orders_count) AS BIGINT) AS together FROM co_purchases \
             WHERE merchant_id = $1 AND sku IN ({}) GROUP BY other_sku \
             ORDER BY together DESC, other_sku LIMIT {CANDIDATES_PER_KIND_MAX}",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql).bind(merchant_id);
        for sku in recent {
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
    let placeholders: Vec<String> = (0..wanted.len())
        .map(|index| format!("${}", index + 2))
        .collect();
    let sql = format!(
        "SELECT sku, name, category, last_unit_price, units_sold FROM item_stats \
         WHERE merchant_id = $1 AND sku IN ({}) ORDER BY units_sold DESC, sku",
        placeholders.join(", ")
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
