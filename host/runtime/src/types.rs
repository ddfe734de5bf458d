//! Host-side mirrors of the `loyalty:plugin` WIT types.
//!
//! These types do not depend on a WIT version: the server builds them, and each version's
//! bindings module converts them into (and out of) its own generated types. A later WIT
//! version that adds a field gets a new field here (with a default the older bindings ignore).

use serde::{Deserialize, Serialize};

/// Microseconds since 1970-01-01T00:00:00Z (WIT `timestamp`).
pub type Timestamp = i64;

/// A calendar date without a time zone (a birthday).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Date {
    /// Year, e.g. 1990.
    pub year: i32,
    /// Month of the year, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
}

/// Where and when the plugin is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The merchant's id (`mer_…`).
    pub merchant_id: String,
    /// The store the call is for (`sto_…`), if the event happened at a store.
    pub store_id: Option<String>,
    /// The host's time for this call; also what the plugin's WASI wall clock reads.
    pub now: Timestamp,
    /// The merchant's IANA time zone, e.g. "Asia/Shanghai".
    pub timezone: String,
    /// The offset of `timezone` from UTC at `now`, in seconds (east positive).
    pub utc_offset_seconds: i32,
    /// The plugin's configuration for this store, as JSON text.
    pub config: String,
    /// ISO 4217 code of the merchant's currency, e.g. "CNY".
    pub currency: String,
    /// Digits after the decimal point in `currency`.
    pub currency_exponent: u8,
}

/// Aggregates the host keeps for a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStats {
    /// Everything the member ever spent, net of refunds, in minor units.
    pub lifetime_spend: i64,
    /// Spend in the last 12 months, net of refunds, in minor units.
    pub spend_12_months: i64,
    /// Purchases recorded.
    pub orders_count: u32,
    /// When the last purchase happened, if any.
    pub last_purchase_at: Option<Timestamp>,
    /// Points the member can spend now.
    pub points_available: i64,
}

/// What a plugin may know about a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id (`mem_…`).
    pub id: String,
    /// The member's tier code, if the merchant has tiers.
    pub tier: Option<String>,
    /// When the member joined.
    pub joined_at: Timestamp,
    /// The member's birthday, if known.
    pub birthday: Option<Date>,
    /// The merchant's own attributes of the member, as JSON object text.
    pub attributes: String,
    /// Aggregates.
    pub stats: MemberStats,
}

/// One line of a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseLine {
    /// The merchant's stock-keeping unit.
    pub sku: String,
    /// Display name, if given.
    pub name: Option<String>,
    /// Category, if given.
    pub category: Option<String>,
    /// How many units.
    pub quantity: u32,
    /// Price of one unit, in minor units.
    pub unit_price: i64,
    /// `quantity` × `unit_price`, in minor units.
    pub total: i64,
}

/// A purchase as the host recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// The purchase's id (`pur_…`).
    pub id: String,
    /// The store it happened at.
    pub store_id: String,
    /// How it was sold: "pos", "online", or another channel the merchant names.
    pub channel: String,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// ISO 4217 code of the purchase's currency.
    pub currency: String,
    /// The lines.
    pub lines: Vec<PurchaseLine>,
    /// Sum of the lines, in minor units.
    pub total: i64,
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something the merchant should look at.
    Warn,
    /// The plugin could not do its work.
    Error,
}

impl LogLevel {
    /// The level's WIT name: "debug", "info", "warn" or "error".
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Points awarded for one reason (earn-rule output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// Points; the host rejects negative awards and caps the sum per purchase.
    pub points: i64,
    /// A sentence the member and the merchant can read.
    pub reason: String,
    /// When these points expire, if not the merchant's default.
    pub expires_at: Option<Timestamp>,
}

/// One of the merchant's tiers (tier-policy input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierDef {
    /// The tier's code, e.g. "gold".
    pub code: String,
    /// Display name.
    pub name: String,
    /// Rank: 0 is the lowest tier, higher is better.
    pub rank: u32,
    /// The tier's own settings as JSON object text.
    pub attributes: String,
}

/// A move to another tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierMove {
    /// The code of the tier to move to.
    pub tier: String,
    /// Why, for the member's history.
    pub reason: String,
}

/// What a tier policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierDecision {
    /// Keep the member's current tier; the string says why.
    Stay(String),
    /// Move the member to another tier.
    MoveTo(TierMove),
}

/// A line the member bought, with when (recommender input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// The line.
    pub line: PurchaseLine,
    /// When the purchase happened.
    pub occurred_at: Timestamp,
}

/// An item the host offers as a candidate, with features it computed (recommender input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The item's SKU.
    pub sku: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// Category, if known.
    pub category: Option<String>,
    /// Typical unit price, in minor units.
    pub price: i64,
    /// Units sold by the merchant over the host's popularity window.
    pub popularity: u32,
    /// How often the item was bought together with items the member bought.
    pub co_purchase_count: u32,
}

/// A recommended item (recommender output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scored {
    /// One of the candidates' SKUs.
    pub sku: String,
    /// Higher is better; only the order matters.
    pub score: i64,
    /// Why, e.g. "often bought with latte".
    pub reason: String,
}

/// A tier change (campaign-trigger event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    /// The tier before, if any.
    pub from: Option<String>,
    /// The tier now.
    pub to: String,
}

/// What happened to a member (campaign-trigger input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A purchase was recorded for the member.
    PurchaseRecorded(Purchase),
    /// The member joined.
    MemberJoined,
    /// The member's tier changed.
    TierChanged(TierChange),
    /// Once a day per member, at the merchant's local midnight.
    DailyTick,
}

/// A message to send through one of the merchant's channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// "sms", "email", "wechat", … as the merchant configured.
    pub channel: String,
    /// The merchant's template code.
    pub template: String,
    /// Values for the template's placeholders.
    pub variables: Vec<(String, String)>,
}

/// Points to award (campaign-trigger action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointsAward {
    /// Points, more than zero.
    pub points: i64,
    /// Why, as the member will read it.
    pub reason: String,
}

/// What the host should do (campaign-trigger output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Award points (the host writes the ledger transaction).
    AwardPoints(PointsAward),
    /// Issue a coupon from the merchant's template with this code.
    IssueCoupon(String),
    /// Add a tag to the member.
    TagMember(String),
    /// Send a message.
    SendMessage(Message),
}

/// An honest estimate of a value's size in the component model's canonical encoding: the
/// bytes of every string and list element plus fixed sizes for scalars (a string or list
/// costs its 8-byte pointer and length, an option its 1-byte tag). Used to refuse oversized
/// input before a call and oversized output before it is returned.
pub(crate) trait EncodedSize {
    /// The estimated size, in bytes.
    fn encoded_bytes(&self) -> usize;
}

const POINTER_AND_LENGTH_BYTES: usize = 8;
const TAG_BYTES: usize = 1;

impl EncodedSize for String {
    fn encoded_bytes(&self) -> usize {
        POINTER_AND_LENGTH_BYTES + self.len()
    }
}

impl EncodedSize for str {
    fn encoded_bytes(&self) -> usize {
        POINTER_AND_LENGTH_BYTES + self.len()
    }
}

impl<T: EncodedSize> EncodedSize for Option<T> {
    fn encoded_bytes(&self) -> usize {
        TAG_BYTES + self.as_ref().map_or(0, EncodedSize::encoded_bytes)
    }
}

impl<T: EncodedSize> EncodedSize for [T] {
    fn encoded_bytes(&self) -> usize {
        POINTER_AND_LENGTH_BYTES + self.iter().map(EncodedSize::encoded_bytes).sum::<usize>()
    }
}

impl<T: EncodedSize> EncodedSize for Vec<T> {
    fn encoded_bytes(&self) -> usize {
        self.as_slice().encoded_bytes()
    }
}

impl<A: EncodedSize, B: EncodedSize> EncodedSize for (A, B) {
    fn encoded_bytes(&self) -> usize {
        self.0.encoded_bytes() + self.1.encoded_bytes()
    }
}

macro_rules! scalar_size {
    ($($t:ty),*) => {
        $(impl EncodedSize for $t {
            fn encoded_bytes(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        })*
    };
}
scalar_size!(i64, i32, u32, u8);

impl<T: EncodedSize + ?Sized> EncodedSize for &T {
    fn encoded_bytes(&self) -> usize {
        (**self).encoded_bytes()
    }
}

macro_rules! record_size {
    ($t:ty { $($field:ident),* }) => {
        impl EncodedSize for $t {
            fn encoded_bytes(&self) -> usize {
                0 $(+ self.$field.encoded_bytes())*
            }
        }
    };
}

record_size!(Date { year, month, day });
record_size!(Context {
    merchant_id,
    store_id,
    now,
    timezone,
    utc_offset_seconds,
    config,
    currency,
    currency_exponent
});
record_size!(MemberStats {
    lifetime_spend,
    spend_12_months,
    orders_count,
    last_purchase_at,
    points_available
});
record_size!(Member {
    id,
    tier,
    joined_at,
    birthday,
    attributes,
    stats
});
record_size!(PurchaseLine {
    sku,
    name,
    category,
    quantity,
    unit_price,
    total
});
record_size!(Purchase {
    id,
    store_id,
    channel,
    occurred_at,
    currency,
    lines,
    total
});
record_size!(Award {
    points,
    reason,
    expires_at
});
record_size!(TierDef {
    code,
    name,
    rank,
    attributes
});
record_size!(TierMove { tier, reason });
record_size!(HistoryLine { line, occurred_at });
record_size!(Candidate {
    sku,
    name,
    category,
    price,
    popularity,
    co_purchase_count
});
record_size!(Scored { sku, score, reason });
record_size!(TierChange { from, to });
record_size!(Message {
    channel,
    template,
    variables
});
record_size!(PointsAward { points, reason });

impl EncodedSize for TierDecision {
    fn encoded_bytes(&self) -> usize {
        TAG_BYTES
            + match self {
                TierDecision::Stay(why) => why.encoded_bytes(),
                TierDecision::MoveTo(to) => to.encoded_bytes(),
            }
    }
}

impl EncodedSize for Event {
    fn encoded_bytes(&self) -> usize {
        TAG_BYTES
            + match self {
                Event::PurchaseRecorded(purchase) => purchase.encoded_bytes(),
                Event::MemberJoined | Event::DailyTick => 0,
                Event::TierChanged(change) => change.encoded_bytes(),
            }
    }
}

impl EncodedSize for Action {
    fn encoded_bytes(&self) -> usize {
        TAG_BYTES
            + match self {
                Action::AwardPoints(award) => award.encoded_bytes(),
                Action::IssueCoupon(code) => code.encoded_bytes(),
                Action::TagMember(tag) => tag.encoded_bytes(),
                Action::SendMessage(message) => message.encoded_bytes(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_string_bytes_and_fixed_fields() {
        let award = Award {
            points: 5,
            reason: "abc".into(),
            expires_at: None,
        };
        // 8 (points) + 8 + 3 (reason) + 1 (option tag)
        assert_eq!(award.encoded_bytes(), 20);
        let awards = vec![award.clone(), award];
        assert_eq!(awards.encoded_bytes(), 8 + 40);
        let decision = TierDecision::Stay("x".repeat(100));
        assert_eq!(decision.encoded_bytes(), 1 + 8 + 100);
    }
}
