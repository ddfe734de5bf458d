//! loyalty-host: the HTTP API, the CLI and the background jobs of the loyalty host.

pub mod api;
pub mod campaigns;
pub mod clock;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod import;
pub mod jobs;
pub mod openapi;
pub mod plugins;
pub mod principals;
pub mod replay;
pub mod scheduler;
pub mod tiers;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use loyalty_core::earn::{BaseRate, EarnPolicy};
use loyalty_core::merchants::hash_key;
use loyalty_core::writer::Writer;
use loyalty_core::Database;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use clock::Clock;

use crate::error::ApiError;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub database: Database,
    pub writer: Writer,
    pub clock: Clock,
    pub operator_key_hash: String,
    pub earn_policy: Arc<dyn EarnPolicy>,
    pub principals: Arc<principals::Principals>,
    pub plugins: Arc<plugins::PluginHost>,
    /// How webhook deliveries are sent and retried (tests shorten the waits).
    pub delivery: Arc<dispatch::DeliverySettings>,
}

impl AppState {
    /// Starts the writer on the current runtime. `writer_lanes` 0 picks the backend's default.
    pub fn new(
        database: Database,
        operator_key: &str,
        clock: Clock,
        writer_lanes: usize,
        plugins: plugins::PluginHost,
    ) -> AppState {
        AppState {
            plugins: Arc::new(plugins),
            writer: Writer::start(database.clone(), writer_lanes),
            database,
            clock,
            operator_key_hash: hash_key(operator_key),
            earn_policy: Arc::new(BaseRate),
            principals: Arc::default(),
            delivery: Arc::default(),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn router(state: AppState) -> Router {
    use api::*;
    let upload_bytes_max = state.plugins.component_bytes_max() + plugins::UPLOAD_OVERHEAD_BYTES_MAX;
    let v1 = Router::new()
        .route("/merchants", post(merchants::create))
        .route("/merchant", get(merchants::get).patch(merchants::update))
        .route("/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/api-keys/{id}", delete(api_keys::revoke))
        .route("/stores", post(stores::create).get(stores::list))
        .route("/stores/{id}", get(stores::get))
        .route("/members", post(members::create).get(members::list))
        .route("/members/{id}", get(members::get).patch(members::update))
        .route("/members/{id}/balances", get(members::balances))
        .route("/members/{id}/ledger", get(members::ledger))
        .route("/members/{id}/points/redemptions", post(points::redeem))
        .route("/members/{id}/points/adjustments", post(points::adjust))
        .route(
            "/members/{id}/stored-value/top-ups",
            post(stored_value::top_up),
        )
        .route("/members/{id}/count-cards", post(count_cards::sell))
        .route(
            "/members/{id}/count-cards/{card_id}/consumptions",
            post(count_cards::consume),
        )
        .route("/purchases", post(purchases::create))
        .route("/purchases/{id}", get(purchases::get))
        .route("/purchases/{id}/refunds", post(purchases::refund))
        .route(
            "/count-card-packages",
            post(count_cards::create_package).get(count_cards::list_packages),
        )
        .route("/count-card-packages/{id}", get(count_cards::get_package))
        .route(
            "/plugins",
            post(plugins::upload)
                .get(plugins::list)
                .layer(DefaultBodyLimit::max(upload_bytes_max)),
        )
        .route("/plugins/{id}", get(plugins::get))
        .route("/plugins/{id}/health", get(plugins::health))
        .route(
            "/stores/{store_id}/plugins/{world}",
            put(plugins::put_store_set).get(plugins::get_store_set),
        )
        .route(
            "/operator/jobs/points-lifecycle",
            post(operator::points_lifecycle),
        )
        .route("/operator/jobs/daily-tick", post(operator::daily_tick))
        .route("/tiers", get(tiers::list).put(tiers::put))
        .route("/members/{id}/tier-history", get(tiers::history))
        .route("/members/{id}/tier", put(tiers::assign))
        .route(
            "/members/{id}/recommendations",
            get(recommendations::recommend),
        )
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/events", get(webhooks::list_events))
        .route("/events/{id}", get(webhooks::get_event))
        .route("/ticks", get(ticks::list))
        .route(
            "/coupon-templates",
            post(offers::create_template).get(offers::list_templates),
        )
        .route("/coupon-templates/{id}", get(offers::get_template))
        .route(
            "/members/{id}/coupons",
            post(offers::issue).get(offers::member_coupons),
        )
        .route("/gifts", post(offers::create_gift).get(offers::list_gifts))
        .route("/gifts/{id}", get(offers::get_gift))
        .route("/members/{id}/gift-redemptions", post(offers::redeem_gift))
        .route("/campaigns", post(campaigns::create).get(campaigns::list))
        .route("/campaigns/{id}", get(campaigns::get))
        .route("/campaigns/{id}/stats", get(campaigns::stats))
        .route("/members/{id}/tags", get(campaigns::tags))
        .route("/transactions/{id}/explain", get(transactions::explain))
        .route("/transactions/{id}/replay", post(transactions::replay))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(|| async { Json(openapi::ApiDoc::openapi()) }),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                axum::response::IntoResponse::into_response(ApiError::Internal(
                    "a handler panicked".into(),
                ))
            },
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
