//! Merchants: created by the operator; each merchant reads and configures itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use loyalty_core::merchants::{self, CreatedApiKey, MerchantView, NewMerchant, Scope};
use loyalty_core::settings::SettingsPatch;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Auth, Operator};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedMerchant {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub timezone: String,
    /// An `admin` key of the new merchant, shown only in this response.
    pub api_key: String,
}

/// Create a merchant (operator key).
#[utoipa::path(post, path = "/v1/merchants", tag = "merchants", request_body = NewMerchant,
    security(("operator" = [])),
    responses((status = 201, body = CreatedMerchant), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    _operator: Operator,
    ApiJson(input): ApiJson<NewMerchant>,
) -> ApiResult<(StatusCode, Json<CreatedMerchant>)> {
    let (merchant, key): (_, CreatedApiKey) =
        merchants::create_merchant(&state.database, &input, state.clock.now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedMerchant {
            id: merchant.id,
            name: merchant.name,
            currency: merchant.currency,
            timezone: merchant.timezone,
            api_key: key.key,
        }),
    ))
}

/// The merchant of the API key, with its settings.
#[utoipa::path(get, path = "/v1/merchant", tag = "merchants",
    responses((status = 200, body = MerchantView), (status = 401, body = Problem)))]
pub async fn get(auth: Auth) -> ApiResult<Json<MerchantView>> {
    let principal = auth.require(Scope::Read)?;
    Ok(Json(principal.merchant.view()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantPatch {
    pub name: Option<String>,
    pub settings: Option<SettingsPatch>,
}

/// Change the merchant's name or programme settings (admin).
#[utoipa::path(patch, path = "/v1/merchant", tag = "merchants", request_body = MerchantPatch,
    responses((status = 200, body = MerchantView), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(patch): ApiJson<MerchantPatch>,
) -> ApiResult<Json<MerchantView>> {
    let principal = auth.require(Scope::Admin)?;
    let merchant = &principal.merchant;
    if let Some(name) = &patch.name {
        let mut errors = Vec::new();
        merchants::validate_name("name", name, &mut errors);
        if !errors.is_empty() {
            return Err(loyalty_core::CoreError::Validation(errors).into());
        }
    }
    let settings = match &patch.settings {
        Some(settings_patch) => merchant
            .settings
            .patched(settings_patch, merchant.currency_exponent)?,
        None => merchant.settings.clone(),
    };
    merchants::update_merchant(
        &state.database.pool,
        merchant,
        patch.name.as_deref(),
        &settings,
    )
    .await?;
    state.principals.forget_merchant(&merchant.id);
    let updated = merchants::get_merchant(&state.database.pool, &merchant.id).await?;
    Ok(Json(updated.view()))
}
