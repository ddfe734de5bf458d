//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Loyalty host API", description = "Members, tiers, points, stored value and count cards on a double-entry ledger, with per-store WebAssembly plugins, domain events and signed webhooks. Errors are application/problem+json."),
    paths(
        api::merchants::create, api::merchants::get, api::merchants::update,
        api::api_keys::create, api::api_keys::list, api::api_keys::revoke,
        api::stores::create, api::stores::list, api::stores::get,
        api::members::create, api::members::get, api::members::update, api::members::list,
        api::members::balances, api::members::ledger,
        api::purchases::create, api::purchases::get, api::purchases::refund,
        api::points::redeem, api::points::adjust,
        api::stored_value::top_up,
        api::count_cards::create_package, api::count_cards::list_packages, api::count_cards::get_package,
        api::count_cards::sell, api::count_cards::consume,
        api::operator::points_lifecycle, api::operator::daily_tick,
        api::tiers::list, api::tiers::put, api::tiers::history, api::tiers::assign,
        api::webhooks::create, api::webhooks::list, api::webhooks::get, api::webhooks::delete,
        api::webhooks::deliveries, api::webhooks::list_events, api::webhooks::get_event,
        api::ticks::list, api::recommendations::recommend,
        api::offers::create_template, api::offers::list_templates, api::offers::get_template,
        api::offers::issue, api::offers::member_coupons,
        api::offers::create_gift, api::offers::list_gifts, api::offers::get_gift,
        api::offers::redeem_gift,
        api::campaigns::create, api::campaigns::list, api::campaigns::get, api::campaigns::stats,
        api::campaigns::tags, api::transactions::explain, api::transactions::replay,
        api::plugins::upload, api::plugins::list, api::plugins::get, api::plugins::health,
        api::plugins::get_store_set, api::plugins::put_store_set,
    ),
    modifiers(&Security),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("operator", bearer());
    }
}
