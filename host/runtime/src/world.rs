//! The plugin worlds the host knows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `earn-rule`: decides the points a purchase earns.
    EarnRule,
    /// `tier-policy`: decides a member's tier.
    TierPolicy,
    /// `recommender`: ranks items for a member.
    Recommender,
    /// `campaign-trigger`: reacts to member events with actions.
    CampaignTrigger,
}

impl World {
    /// Every world, in a fixed order.
    pub const ALL: [World; 4] = [
        World::EarnRule,
        World::TierPolicy,
        World::Recommender,
        World::CampaignTrigger,
    ];

    /// The world's WIT name, e.g. "earn-rule".
    pub fn as_str(self) -> &'static str {
        match self {
            World::EarnRule => "earn-rule",
            World::TierPolicy => "tier-policy",
            World::Recommender => "recommender",
            World::CampaignTrigger => "campaign-trigger",
        }
    }

    /// The name of the interface the world exports, e.g. "earn".
    pub fn export_interface(self) -> &'static str {
        match self {
            World::EarnRule => "earn",
            World::TierPolicy => "tiers",
            World::Recommender => "recommend",
            World::CampaignTrigger => "campaign",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`World`] from a name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a plugin world (expected earn-rule, tier-policy, recommender or campaign-trigger)")]
pub struct UnknownWorld(pub String);

impl FromStr for World {
    type Err = UnknownWorld;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        World::ALL
            .into_iter()
            .find(|world| world.as_str() == s)
            .ok_or_else(|| UnknownWorld(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for world in World::ALL {
            assert_eq!(world.as_str().parse::<World>(), Ok(world));
        }
        assert!("earn".parse::<World>().is_err());
    }
}
