//! Generated bindings, one module per published WIT version (`wit/since_v<version>`), with
//! conversions between the host's version-independent types and each version's own.
//!
//! Adding a WIT version: add `since_v0_x_0.rs` beside the existing ones, link its `host`
//! interface in [`add_to_linker`], and add its `Pre` to [`VersionedPre`] and the lookup in
//! [`VersionedPre::new`]. A component says which version it implements by the version on its
//! exported interface (`loyalty:plugin/earn@0.1.0`).

use wasmtime::component::{InstancePre, Linker};

use wasmtime::Store;

use crate::call::{CallOutcome, StoreState};
use crate::types::{
    Action, Award, Candidate, Context, Event, HistoryLine, Member, Purchase, Scored, TierDecision,
    TierDef,
};
use crate::world::World;

pub(crate) mod since_v0_1_0;

/// The WIT versions this host links, oldest first.
pub(crate) const VERSIONS: &[&str] = &[since_v0_1_0::VERSION];

/// Adds every version's host interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    since_v0_1_0::add_to_linker(linker)
}

/// A plugin's pre-instantiated component with its version's typed exports.
pub(crate) enum VersionedPre {
    /// `loyalty:plugin@0.1.0`.
    V0_1_0(since_v0_1_0::Pre),
}

impl VersionedPre {
    /// Type-checks `pre`'s export of `world` at `version` against that version's WIT.
    pub(crate) fn new(
        version: &str,
        world: World,
        pre: InstancePre<StoreState>,
    ) -> Option<wasmtime::Result<VersionedPre>> {
        match version {
            since_v0_1_0::VERSION => {
                Some(since_v0_1_0::Pre::new(world, pre).map(VersionedPre::V0_1_0))
            }
            _ => None,
        }
    }
}

/// Each call returns `None` if the plugin is of another world.
impl VersionedPre {
    pub(crate) fn earn(
        &self,
        store: &mut Store<StoreState>,
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> Option<CallOutcome<Vec<Award>>> {
        match self {
            VersionedPre::V0_1_0(pre) => pre.earn(store, ctx, member, purchase),
        }
    }

    pub(crate) fn tier(
        &self,
        store: &mut Store<StoreState>,
        ctx: &Context,
        member: &Member,
        tiers: &[TierDef],
    ) -> Option<CallOutcome<TierDecision>> {
        match self {
            VersionedPre::V0_1_0(pre) => pre.tier(store, ctx, member, tiers),
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one per WIT parameter, plus the store"
    )]
    pub(crate) fn recommend(
        &self,
        store: &mut Store<StoreState>,
        ctx: &Context,
        member: &Member,
        history: &[HistoryLine],
        candidates: &[Candidate],
        limit: u32,
    ) -> Option<CallOutcome<Vec<Scored>>> {
        match self {
            VersionedPre::V0_1_0(pre) => {
                pre.recommend(store, ctx, member, history, candidates, limit)
            }
        }
    }

    pub(crate) fn on_event(
        &self,
        store: &mut Store<StoreState>,
        ctx: &Context,
        member: &Member,
        event: &Event,
    ) -> Option<CallOutcome<Vec<Action>>> {
        match self {
            VersionedPre::V0_1_0(pre) => pre.on_event(store, ctx, member, event),
        }
    }
}
