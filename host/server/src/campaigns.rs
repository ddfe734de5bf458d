//! The campaign service: asks running campaigns' trigger plugins about member events (from the
//! outbox) and daily ticks, checks the actions they propose, and has the writer apply them
//! exactly once per (campaign, cause, member) within budget and caps.

use loyalty_core::campaigns::{
    running, Campaign, CampaignAction, CampaignActionsCommand, CampaignActionsOutcome,
    ACTIONS_PER_EVENT_MAX, ACTION_TEXT_LENGTH_MAX, CAMPAIGN_AWARD_POINTS_MAX,
    MESSAGE_VARIABLES_MAX,
};
use loyalty_core::events::{self, Event};
use loyalty_core::merchants::Merchant;
use loyalty_core::operations::{recorded_purchase, Command};
use loyalty_core::plugins::EnabledPlugin;
use loyalty_core::writer::Submission;
use loyalty_core::CoreError;
use loyalty_runtime as runtime;

use crate::AppState;

/// A merchant's running campaigns with their plugins.
pub type Running = Vec<(Campaign, EnabledPlugin)>;

pub async fn running_campaigns(
    state: &AppState,
    merchant_id: &str,
    now: i64,
) -> Result<Running, CoreError> {
    running(&state.database.pool, merchant_id, now).await
}

/// What campaigns did with one cause.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reach {
    pub calls: i64,
    pub applied: i64,
    pub dropped: i64,
}

impl Reach {
    pub fn add(&mut self, other: Reach) {
        self.calls += other.calls;
        self.applied += other.applied;
        self.dropped += other.dropped;
    }
}

fn text(value: &str) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty() && trimmed.chars().count() <= ACTION_TEXT_LENGTH_MAX)
        .then(|| trimmed.to_string())
}

/// The host's checks of proposed actions: positive bounded points, non-empty bounded texts, at
/// most [`ACTIONS_PER_EVENT_MAX`]. Returns the actions to apply and how many were refused.
fn checked(actions: Vec<runtime::Action>) -> (Vec<CampaignAction>, i64) {
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (index, action) in actions.into_iter().enumerate() {
        let action = if index >= ACTIONS_PER_EVENT_MAX {
            None
        } else {
            match action {
                runtime::Action::AwardPoints(award) => (1..=CAMPAIGN_AWARD_POINTS_MAX)
                    .contains(&award.points)
                    .then_some(())
                    .and_then(|()| text(&award.reason))
                    .map(|reason| CampaignAction::AwardPoints {
                        points: award.points,
                        reason,
                    }),
                runtime::Action::IssueCoupon(code) => {
                    text(&code).map(|template_code| CampaignAction::IssueCoupon { template_code })
                }
                runtime::Action::TagMember(tag) => {
                    text(&tag).map(|tag| CampaignAction::TagMember { tag })
                }
                runtime::Action::SendMessage(message) => {
                    let variables_ok = message.variables.len() <= MESSAGE_VARIABLES_MAX
                        && message.variables.iter().all(|(name, value)| {
                            text(name).is_some() && value.chars().count() <= ACTION_TEXT_LENGTH_MAX
                        });
                    match (
                        text(&message.channel),
                        text(&message.template),
                        variables_ok,
                    ) {
                        (Some(channel), Some(template), true) => {
                            Some(CampaignAction::SendMessage {
                                channel,
                                template,
                                variables: message.variables,
                            })
                        }
                        _ => None,
                    }
                }
            }
        };
        match action {
            Some(action) => accepted.push(action),
            None => refused += 1,
        }
    }
    (accepted, refused)
}

/// Asks every campaign in `campaigns` that `store_id` reaches about `event` for the member,
/// and applies their actions. `cause` keys the exactly-once effect (an event id, or
/// `tick:<date>`). A plugin's failure is logged and skips only that campaign.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    state: &AppState,
    merchant: &Merchant,
    campaigns: &Running,
    member_id: &str,
    store_id: Option<&str>,
    event: &runtime::Event,
    cause: &str,
    now: i64,
) -> Result<Reach, CoreError> {
    let mut reach = Reach::default();
    for (campaign, plugin) in campaigns {
        if let Some(store_id) = store_id {
            if !campaign.store_ids.is_empty() && !campaign.store_ids.iter().any(|id| id == store_id)
            {
                continue;
            }
        }
        reach.calls += 1;
        let answer = match state
            .plugins
            .on_event(
                &state.database,
                merchant,
                plugin,
                store_id,
                member_id,
                event,
                now,
            )
            .await?
        {
            Ok(answer) => answer,
            Err(_) => continue,
        };
        if answer.actions.is_empty() {
            continue;
        }
        let output = serde_json::to_value(&answer.actions).expect("actions serialize");
        let (actions, refused) = checked(answer.actions);
        let command = Command::CampaignActions(CampaignActionsCommand {
            campaign_id: campaign.id.clone(),
            member_id: member_id.to_string(),
            cause: cause.to_string(),
            actions,
            refused,
            provenance: serde_json::json!({
                "plugin_id": plugin.plugin_id,
                "name": plugin.name,
                "version": plugin.version,
                "sha256": plugin.sha256,
                                "input_sha256": answer.input.sha256,
                "input": answer.input.packed,
                "output": output,
            }),
        });
        let outcome = state
            .writer
            .submit(Submission {
                merchant: merchant.clone(),
                claim: None,
                command,
                now,
            })
            .await?;
        let outcome: CampaignActionsOutcome = serde_json::from_str(&outcome.body)
            .map_err(|error| CoreError::Internal(format!("a campaign's answer: {error}")))?;
        reach.applied += outcome.applied;
        reach.dropped += i64::try_from(outcome.dropped.len()).expect("few actions");
    }
    Ok(reach)
}

/// The plugin event for an outbox event, if campaign triggers hear about its kind.
pub async fn trigger_event(
    state: &AppState,
    event: &Event,
) -> Result<Option<runtime::Event>, CoreError> {
    Ok(match event.kind.as_str() {
        events::MEMBER_JOINED => Some(runtime::Event::MemberJoined),
        events::TIER_CHANGED => event.data["to"].as_str().map(|to| {
            runtime::Event::TierChanged(runtime::TierChange {
                from: event.data["from"].as_str().map(str::to_string),
                to: to.to_string(),
            })
        }),
        events::PURCHASE_RECORDED => {
            let Some(purchase_id) = event.data["purchase_id"].as_str() else {
                return Ok(None);
            };
            let merchant =
                loyalty_core::merchants::get_merchant(&state.database.pool, &event.merchant_id)
                    .await?;
            let purchase =
                recorded_purchase(&state.database.pool, &event.merchant_id, purchase_id).await?;
            Some(runtime::Event::PurchaseRecorded(runtime::Purchase {
                id: purchase.id,
                store_id: purchase.store_id,
                channel: "pos".to_string(),
                occurred_at: purchase.occurred_at,
                currency: merchant.currency,
                lines: purchase
                    .lines
                    .into_iter()
                    .map(|line| runtime::PurchaseLine {
                        sku: line.sku,
                        name: line.name,
                        category: line.category,
                        quantity: u32::try_from(line.quantity).unwrap_or(u32::MAX),
                        unit_price: line.unit_price,
                        total: line.total,
                    })
                    .collect(),
                total: purchase.total,
            }))
        }
        _ => None,
    })
}
