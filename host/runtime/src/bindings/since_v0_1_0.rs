//! Bindings of `loyalty:plugin@0.1.0` (`wit/since_v0.1.0`, frozen).

use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::Store;

use crate::call::{CallOutcome, GuestError, StoreState};
use crate::types as host;
use crate::world::World;

/// The WIT package version these bindings implement.
pub(crate) const VERSION: &str = "0.1.0";

/// The `earn-rule` world; it also generates the shared `types` and `host` interfaces that the
/// other worlds reuse.
mod earn_rule {
    wasmtime::component::bindgen!({
        world: "earn-rule",
        path: "../../wit/since_v0.1.0",
    });
}

mod tier_policy {
    wasmtime::component::bindgen!({
        world: "tier-policy",
        path: "../../wit/since_v0.1.0",
        with: {
            "loyalty:plugin/types": super::earn_rule::loyalty::plugin::types,
            "loyalty:plugin/host": super::earn_rule::loyalty::plugin::host,
        },
    });
}

mod recommender {
    wasmtime::component::bindgen!({
        world: "recommender",
        path: "../../wit/since_v0.1.0",
        with: {
            "loyalty:plugin/types": super::earn_rule::loyalty::plugin::types,
            "loyalty:plugin/host": super::earn_rule::loyalty::plugin::host,
        },
    });
}

mod campaign_trigger {
    wasmtime::component::bindgen!({
        world: "campaign-trigger",
        path: "../../wit/since_v0.1.0",
        with: {
            "loyalty:plugin/types": super::earn_rule::loyalty::plugin::types,
            "loyalty:plugin/host": super::earn_rule::loyalty::plugin::host,
        },
    });
}

use campaign_trigger::exports::loyalty::plugin::campaign as wit_campaign;
use earn_rule::exports::loyalty::plugin::earn as wit_earn;
use earn_rule::loyalty::plugin::{host as wit_host, types as wit};
use recommender::exports::loyalty::plugin::recommend as wit_recommend;
use tier_policy::exports::loyalty::plugin::tiers as wit_tiers;

impl wit::Host for StoreState {}

impl wit_host::Host for StoreState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        StoreState::log(self, level.into(), message);
    }
}

/// Links this version's `host` interface (and its `types`).
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |state| state)?;
    wit_host::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |state| state)
}

/// A pre-instantiated plugin of one world.
pub(crate) enum Pre {
    EarnRule(earn_rule::EarnRulePre<StoreState>),
    TierPolicy(tier_policy::TierPolicyPre<StoreState>),
    Recommender(recommender::RecommenderPre<StoreState>),
    CampaignTrigger(campaign_trigger::CampaignTriggerPre<StoreState>),
}

impl Pre {
    /// Type-checks `pre`'s exports against `world`.
    pub(crate) fn new(world: World, pre: InstancePre<StoreState>) -> wasmtime::Result<Pre> {
        Ok(match world {
            World::EarnRule => Pre::EarnRule(earn_rule::EarnRulePre::new(pre)?),
            World::TierPolicy => Pre::TierPolicy(tier_policy::TierPolicyPre::new(pre)?),
            World::Recommender => Pre::Recommender(recommender::RecommenderPre::new(pre)?),
            World::CampaignTrigger => {
                Pre::CampaignTrigger(campaign_trigger::CampaignTriggerPre::new(pre)?)
            }
        })
    }

    /// `earn.evaluate`, or `None` if the plugin is not an earn rule.
    pub(crate) fn earn(
        &self,
        store: &mut Store<StoreState>,
        ctx: &host::Context,
        member: &host::Member,
        purchase: &host::Purchase,
    ) -> Option<CallOutcome<Vec<host::Award>>> {
        let Pre::EarnRule(pre) = self else {
            return None;
        };
        let outcome = (|| -> CallOutcome<_> {
            let instance = pre.instantiate(&mut *store)?;
            let answer = instance.loyalty_plugin_earn().call_evaluate(
                &mut *store,
                &ctx.into(),
                &member.into(),
                &purchase.into(),
            )?;
            Ok(answer
                .map(|awards| awards.into_iter().map(Into::into).collect())
                .map_err(Into::into))
        })();
        Some(outcome)
    }

    /// `tiers.evaluate`, or `None` if the plugin is not a tier policy.
    pub(crate) fn tier(
        &self,
        store: &mut Store<StoreState>,
        ctx: &host::Context,
        member: &host::Member,
        tiers: &[host::TierDef],
    ) -> Option<CallOutcome<host::TierDecision>> {
        let Pre::TierPolicy(pre) = self else {
            return None;
        };
        let outcome = (|| -> CallOutcome<_> {
            let instance = pre.instantiate(&mut *store)?;
            let tiers: Vec<wit_tiers::TierDef> = tiers.iter().map(Into::into).collect();
            let answer = instance.loyalty_plugin_tiers().call_evaluate(
                &mut *store,
                &ctx.into(),
                &member.into(),
                &tiers,
            )?;
            Ok(answer.map(Into::into).map_err(Into::into))
        })();
        Some(outcome)
    }

    /// `recommend.recommend`, or `None` if the plugin is not a recommender.
    #[allow(
        clippy::too_many_arguments,
        reason = "one per WIT parameter, plus the store"
    )]
    pub(crate) fn recommend(
        &self,
        store: &mut Store<StoreState>,
        ctx: &host::Context,
        member: &host::Member,
        history: &[host::HistoryLine],
        candidates: &[host::Candidate],
        limit: u32,
    ) -> Option<CallOutcome<Vec<host::Scored>>> {
        let Pre::Recommender(pre) = self else {
            return None;
        };
        let outcome = (|| -> CallOutcome<_> {
            let instance = pre.instantiate(&mut *store)?;
            let history: Vec<wit_recommend::HistoryLine> = history.iter().map(Into::into).collect();
            let candidates: Vec<wit_recommend::Candidate> =
                candidates.iter().map(Into::into).collect();
            let answer = instance.loyalty_plugin_recommend().call_recommend(
                &mut *store,
                &ctx.into(),
                &member.into(),
                &history,
                &candidates,
                limit,
            )?;
            Ok(answer
                .map(|scored| scored.into_iter().map(Into::into).collect())
                .map_err(Into::into))
        })();
        Some(outcome)
    }

    /// `campaign.on-event`, or `None` if the plugin is not a campaign trigger.
    pub(crate) fn on_event(
        &self,
        store: &mut Store<StoreState>,
        ctx: &host::Context,
        member: &host::Member,
        event: &host::Event,
    ) -> Option<CallOutcome<Vec<host::Action>>> {
        let Pre::CampaignTrigger(pre) = self else {
            return None;
        };
        let outcome = (|| -> CallOutcome<_> {
            let instance = pre.instantiate(&mut *store)?;
            let answer = instance.loyalty_plugin_campaign().call_on_event(
                &mut *store,
                &ctx.into(),
                &member.into(),
                &event.into(),
            )?;
            Ok(answer
                .map(|actions| actions.into_iter().map(Into::into).collect())
                .map_err(Into::into))
        })();
        Some(outcome)
    }
}

// Host types into this version's types (arguments).

impl From<&host::Date> for wit::Date {
    fn from(d: &host::Date) -> Self {
        wit::Date {
            year: d.year,
            month: d.month,
            day: d.day,
        }
    }
}

impl From<&host::Context> for wit::Context {
    fn from(c: &host::Context) -> Self {
        wit::Context {
            merchant_id: c.merchant_id.clone(),
            store_id: c.store_id.clone(),
            now: c.now,
            timezone: c.timezone.clone(),
            utc_offset_seconds: c.utc_offset_seconds,
            config: c.config.clone(),
            currency: c.currency.clone(),
            currency_exponent: c.currency_exponent,
        }
    }
}

impl From<&host::MemberStats> for wit::MemberStats {
    fn from(s: &host::MemberStats) -> Self {
        wit::MemberStats {
            lifetime_spend: s.lifetime_spend,
            spend_12_months: s.spend_12_months,
            orders_count: s.orders_count,
            last_purchase_at: s.last_purchase_at,
            points_available: s.points_available,
        }
    }
}

impl From<&host::Member> for wit::Member {
    fn from(m: &host::Member) -> Self {
        wit::Member {
            id: m.id.clone(),
            tier: m.tier.clone(),
            joined_at: m.joined_at,
            birthday: m.birthday.as_ref().map(Into::into),
            attributes: m.attributes.clone(),
            stats: (&m.stats).into(),
        }
    }
}

impl From<&host::PurchaseLine> for wit::PurchaseLine {
    fn from(l: &host::PurchaseLine) -> Self {
        wit::PurchaseLine {
            sku: l.sku.clone(),
            name: l.name.clone(),
            category: l.category.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
            total: l.total,
        }
    }
}

impl From<&host::Purchase> for wit::Purchase {
    fn from(p: &host::Purchase) -> Self {
        wit::Purchase {
            id: p.id.clone(),
            store_id: p.store_id.clone(),
            channel: p.channel.clone(),
            occurred_at: p.occurred_at,
            currency: p.currency.clone(),
            lines: p.lines.iter().map(Into::into).collect(),
            total: p.total,
        }
    }
}

impl From<&host::TierDef> for wit_tiers::TierDef {
    fn from(t: &host::TierDef) -> Self {
        wit_tiers::TierDef {
            code: t.code.clone(),
            name: t.name.clone(),
            rank: t.rank,
            attributes: t.attributes.clone(),
        }
    }
}

impl From<&host::HistoryLine> for wit_recommend::HistoryLine {
    fn from(h: &host::HistoryLine) -> Self {
        wit_recommend::HistoryLine {
            line: (&h.line).into(),
            occurred_at: h.occurred_at,
        }
    }
}

impl From<&host::Candidate> for wit_recommend::Candidate {
    fn from(c: &host::Candidate) -> Self {
        wit_recommend::Candidate {
            sku: c.sku.clone(),
            name: c.name.clone(),
            category: c.category.clone(),
            price: c.price,
            popularity: c.popularity,
            co_purchase_count: c.co_purchase_count,
        }
    }
}

impl From<&host::Event> for wit_campaign::Event {
    fn from(e: &host::Event) -> Self {
        match e {
            host::Event::PurchaseRecorded(p) => wit_campaign::Event::PurchaseRecorded(p.into()),
            host::Event::MemberJoined => wit_campaign::Event::MemberJoined,
            host::Event::TierChanged(c) => {
                wit_campaign::Event::TierChanged(wit_campaign::TierChange {
                    from: c.from.clone(),
                    to: c.to.clone(),
                })
            }
            host::Event::DailyTick => wit_campaign::Event::DailyTick,
        }
    }
}

// This version's types into host types (results).

impl From<wit::LogLevel> for host::LogLevel {
    fn from(level: wit::LogLevel) -> Self {
        match level {
            wit::LogLevel::Debug => host::LogLevel::Debug,
            wit::LogLevel::Info => host::LogLevel::Info,
            wit::LogLevel::Warn => host::LogLevel::Warn,
            wit::LogLevel::Error => host::LogLevel::Error,
        }
    }
}

impl From<wit::Error> for GuestError {
    fn from(e: wit::Error) -> Self {
        GuestError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<wit_earn::Award> for host::Award {
    fn from(a: wit_earn::Award) -> Self {
        host::Award {
            points: a.points,
            reason: a.reason,
            expires_at: a.expires_at,
        }
    }
}

impl From<wit_tiers::TierDecision> for host::TierDecision {
    fn from(d: wit_tiers::TierDecision) -> Self {
        match d {
            wit_tiers::TierDecision::Stay(why) => host::TierDecision::Stay(why),
            wit_tiers::TierDecision::MoveTo(m) => host::TierDecision::MoveTo(host::TierMove {
                tier: m.tier,
                reason: m.reason,
            }),
        }
    }
}

impl From<wit_recommend::Scored> for host::Scored {
    fn from(s: wit_recommend::Scored) -> Self {
        host::Scored {
            sku: s.sku,
            score: s.score,
            reason: s.reason,
        }
    }
}

impl From<wit_campaign::Action> for host::Action {
    fn from(a: wit_campaign::Action) -> Self {
        match a {
            wit_campaign::Action::AwardPoints(p) => host::Action::AwardPoints(host::PointsAward {
                points: p.points,
                reason: p.reason,
            }),
            wit_campaign::Action::IssueCoupon(code) => host::Action::IssueCoupon(code),
            wit_campaign::Action::TagMember(tag) => host::Action::TagMember(tag),
            wit_campaign::Action::SendMessage(m) => host::Action::SendMessage(host::Message {
                channel: m.channel,
                template: m.template,
                variables: m.variables,
            }),
        }
    }
}
