//! The tier service: asks the store's tier policy where a member belongs and writes the
//! decision through the writer (history, provenance and `tier.changed` in one transaction).
//! Asked after every purchase and refund, and by the daily tick.

use loyalty_core::merchants::Merchant;
use loyalty_core::operations::Command;
use loyalty_core::tiers::{list_tiers, TierChangeCommand, TierChangeOutcome, TierSource};
use loyalty_core::writer::Submission;
use loyalty_core::CoreError;

use crate::AppState;

const WORLD: &str = "tier-policy";

/// Asks the policy of `store_id` about `member_id` and applies a move. `None`: the store has
/// no policy, the merchant no tiers, or the member stays.
pub async fn evaluate(
    state: &AppState,
    merchant: &Merchant,
    member_id: &str,
    store_id: &str,
    source: TierSource,
    now: i64,
) -> Result<Option<TierChangeOutcome>, CoreError> {
    // The enabled set is remembered in memory: a store without a policy costs no query.
    if !state
        .plugins
        .has_enabled(&state.database, &merchant.id, store_id, WORLD)
        .await?
    {
        return Ok(None);
    }
    let tiers = list_tiers(&state.database.pool, &merchant.id).await?;
    let Some(verdict) = state
        .plugins
        .decide_tier(&state.database, merchant, store_id, member_id, &tiers, now)
        .await?
    else {
        return Ok(None);
    };
    let command = Command::ChangeTier(TierChangeCommand {
        member_id: member_id.to_string(),
        expected_from: verdict.from,
        to: Some(verdict.to),
        reason: verdict.reason,
        source,
        provenance: Some(verdict.provenance),
    });
    apply(state, merchant, command, now).await.map(Some)
}

/// Sends a tier change through the writer and reads its answer.
pub async fn apply(
    state: &AppState,
    merchant: &Merchant,
    command: Command,
    now: i64,
) -> Result<TierChangeOutcome, CoreError> {
    let outcome = state
        .writer
        .submit(Submission {
            merchant: merchant.clone(),
            claim: None,
            command,
            now,
        })
        .await?;
    serde_json::from_str(&outcome.body)
        .map_err(|error| CoreError::Internal(format!("a tier change's answer: {error}")))
}

/// [`evaluate`] after a purchase or a refund was written: its failure is logged, never the
/// request's (the value moved; the daily tick asks again).
pub async fn after_change(
    state: &AppState,
    merchant: &Merchant,
    member_id: &str,
    store_id: &str,
    source: TierSource,
    now: i64,
) {
    if let Err(error) = evaluate(state, merchant, member_id, store_id, source, now).await {
        tracing::error!(%error, member = %member_id, "tier evaluation failed; the tier stays");
    }
}
