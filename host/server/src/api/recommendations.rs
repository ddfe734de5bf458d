//! Recommendations: the host builds candidates from the merchant's purchase history
//! (co-purchase counts, popularity, the member's recent lines) and the store's `recommender`
//! plugin ranks them; without one (or when it fails) the most popular items the member has not
//! bought recently come first.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::Json;
use loyalty_core::items::{self, ItemFeatures};
use loyalty_core::merchants::Scope;
use loyalty_core::money::format_money;
use loyalty_core::session::Session;
use loyalty_core::{members, stores, CoreError, FieldError};
use loyalty_runtime as runtime;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiQuery, Auth};
use crate::AppState;

pub const RECOMMENDATIONS_MAX: u32 = 50;
pub const RECOMMENDATIONS_DEFAULT: u32 = 10;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendationParams {
    /// The store whose recommender ranks (without one: popularity).
    pub store_id: Option<String>,
    /// 1 to 50, default 10.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    /// The last price it sold at.
    pub price: String,
    /// Higher is better; only the order matters.
    pub score: i64,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendations {
    pub member_id: String,
    pub store_id: Option<String>,
    /// `plugin:<name>@<version>`, or `popularity`.
    pub source: String,
    /// Why popularity was used when a store was given: `no recommender`, or how the plugin
    /// failed (`guest`, `trap`, `fuel`, …).
    pub fallback_reason: Option<String>,
    pub items: Vec<Recommendation>,
}

/// Items to recommend to a member, best first, each with a score and a reason.
#[utoipa::path(get, path = "/v1/members/{id}/recommendations", tag = "members",
    params(RecommendationParams),
    responses((status = 200, body = Recommendations), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn recommend(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<RecommendationParams>,
) -> ApiResult<Json<Recommendations>> {
    let principal = auth.require(Scope::Read)?;
    let merchant = &principal.merchant;
    let limit = params.limit.unwrap_or(RECOMMENDATIONS_DEFAULT);
    if !(1..=RECOMMENDATIONS_MAX).contains(&limit) {
        return Err(CoreError::Validation(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {RECOMMENDATIONS_MAX}"),
        )])
        .into());
    }
    let pool = &state.database.pool;
    if !members::member_exists(&mut Session::Pool(pool), &merchant.id, &id).await? {
        return Err(CoreError::NotFound("member").into());
    }
    if let Some(store_id) = &params.store_id {
        stores::get_store(pool, &merchant.id, store_id).await?;
    }
    let history = items::member_history(pool, &merchant.id, &id).await?;
    let mut recent: Vec<String> = Vec::new();
    for line in &history {
        if !recent.contains(&line.sku) {
            recent.push(line.sku.clone());
        }
    }
    let candidates = items::candidates(pool, &merchant.id, &recent).await?;
    let money = |minor: i64| format_money(minor, merchant.currency_exponent);
    let now = state.clock.now();
    let mut fallback_reason = None;
    if let Some(store_id) = &params.store_id {
        let history_input = history
            .iter()
            .map(|line| runtime::HistoryLine {
                line: runtime::PurchaseLine {
                    sku: line.sku.clone(),
                    name: line.name.clone(),
                    category: line.category.clone(),
                    quantity: u32::try_from(line.quantity).unwrap_or(u32::MAX),
                    unit_price: line.unit_price,
                    total: line.total,
                },
                occurred_at: line.occurred_at,
            })
            .collect();
        let candidate_input = candidates.iter().map(candidate_input).collect();
        match state
            .plugins
            .recommend(
                &state.database,
                merchant,
                store_id,
                &id,
                history_input,
                candidate_input,
                limit,
                now,
            )
            .await?
        {
            Ok(ranking) => {
                let items = ranking
                    .items
                    .into_iter()
                    .filter_map(|scored| {
                        let item = candidates.iter().find(|item| item.sku == scored.sku)?;
                        Some(Recommendation {
                            sku: scored.sku,
                            name: item.name.clone(),
                            category: item.category.clone(),
                            price: money(item.price),
                            score: scored.score,
                            reason: scored.reason,
                        })
                    })
                    .collect();
                return Ok(Json(Recommendations {
                    member_id: id,
                    store_id: params.store_id,
                    source: ranking.source,
                    fallback_reason: None,
                    items,
                }));
            }
            Err(reason) => fallback_reason = Some(reason.to_string()),
        }
    }
    let bought: HashSet<&String> = recent.iter().collect();
    let mut popular: Vec<&ItemFeatures> = candidates
        .iter()
        .filter(|item| !bought.contains(&item.sku))
        .collect();
    popular.sort_by(|a, b| b.units_sold.cmp(&a.units_sold).then(a.sku.cmp(&b.sku)));
    let items = popular
        .into_iter()
        .take(usize::try_from(limit).expect("limits are small"))
        .map(|item| Recommendation {
            sku: item.sku.clone(),
            name: item.name.clone(),
            category: item.category.clone(),
            price: money(item.price),
            score: item.units_sold,
            reason: format!("popular: {} sold", item.units_sold),
        })
        .collect();
    Ok(Json(Recommendations {
        member_id: id,
        store_id: params.store_id,
        source: "popularity".into(),
        fallback_reason,
        items,
    }))
}

fn candidate_input(item: &ItemFeatures) -> runtime::Candidate {
    runtime::Candidate {
        sku: item.sku.clone(),
        name: item.name.clone(),
        category: item.category.clone(),
        price: item.price,
        popularity: u32::try_from(item.units_sold).unwrap_or(u32::MAX),
        co_purchase_count: u32::try_from(item.co_purchase_count).unwrap_or(u32::MAX),
    }
}
