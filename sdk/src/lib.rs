//! Write loyalty plugins in Rust.
//!
//! A plugin is a WebAssembly component the loyalty host runs once per decision, sandboxed: it
//! sees only what the call passes in (a [`Context`], a [`Member`], and the world's own input)
//! and may only [`log`]. There are four kinds, one WIT world each:
//!
//! | World              | Implement           | Export with                  |
//! |--------------------|---------------------|------------------------------|
//! | `earn-rule`        | [`EarnRule`]        | [`export_earn_rule!`]        |
//! | `tier-policy`      | [`TierPolicy`]      | [`export_tier_policy!`]      |
//! | `recommender`      | [`Recommender`]     | [`export_recommender!`]      |
//! | `campaign-trigger` | [`CampaignTrigger`] | [`export_campaign_trigger!`] |
//!
//! Money is always an `i64` count of the currency's minor units (see [`money`]); times are
//! `i64` microseconds since the Unix epoch (see [`date`] for the merchant's local calendar);
//! the plugin's configuration is JSON text read with [`Context::config`].
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"] # cdylib: the component; rlib: native `cargo test`
//!
//! [dependencies]
//! loyalty-sdk = { path = "../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs` — double points on coffee:
//!
//! ```
//! use loyalty_sdk::{money, Award, Context, EarnRule, Member, PluginError, Purchase};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(default = "one")]
//!     points_per_currency_unit: i64,
//! }
//!
//! fn one() -> i64 {
//!     1
//! }
//!
//! struct CoffeeDouble;
//!
//! impl EarnRule for CoffeeDouble {
//!     fn evaluate(ctx: &Context, _member: &Member, purchase: &Purchase) -> Result<Vec<Award>, PluginError> {
//!         let config: Config = ctx.config()?;
//!         let coffee: i64 = purchase
//!             .lines
//!             .iter()
//!             .filter(|line| line.category.as_deref() == Some("coffee"))
//!             .map(|line| line.total)
//!             .sum();
//!         let points = 2 * money::points_for(coffee, config.points_per_currency_unit, ctx.currency_exponent);
//!         loyalty_sdk::log::debug(&format!("coffee {coffee} earns {points}"));
//!         if points == 0 {
//!             return Ok(Vec::new());
//!         }
//!         Ok(vec![Award::new(points, "2× coffee")])
//!     }
//! }
//!
//! loyalty_sdk::export_earn_rule!(CoffeeDouble);
//!
//! // A native unit test (`cargo test`), through the SDK's test harness:
//! # fn main() {
//! use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};
//!
//! let ctx = ContextBuilder::new()
//!     .config(serde_json::json!({"points_per_currency_unit": 1}))
//!     .build();
//! let purchase = PurchaseBuilder::new()
//!     .line("latte", Some("coffee"), 2, 1_550) // 2 × CNY 15.50
//!     .line("bagel", Some("food"), 1, 1_000)
//!     .build();
//! let awards = CoffeeDouble::evaluate(&ctx, &MemberBuilder::new().build(), &purchase).unwrap();
//! assert_eq!(awards, vec![Award::new(62, "2× coffee")]);
//! assert_eq!(loyalty_sdk::testing::take_logs().len(), 1);
//! # }
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2`: the `cdylib` is
//! written as a component (`target/wasm32-wasip2/release/<crate>.wasm`).
//!
//! # Testing natively
//!
//! On a non-wasm target the export macros only check that the type implements the world's
//! trait, [`log`] writes to a thread-local buffer ([`testing::take_logs`]), and
//! [`testing`] has builders with sensible defaults, so a plugin's tests call
//! `MyType::evaluate(...)` directly with plain `cargo test`.

#![warn(missing_docs)]

// The generated bindings name this crate by its absolute path (`::loyalty_sdk::…`) so the
// export macros also work when expanded in a plugin crate; this makes the same path resolve
// inside the SDK itself.
extern crate self as loyalty_sdk;

/// With the feature `leaking-allocator` (off by default), the plugin's allocator is a bump
/// pointer that never frees: every call runs in a fresh instance whose memory is dropped after
/// it. It halves the fuel a call burns but touches more pages, which measured slower in wall
/// time; memory a call uses still counts against the host's per-call memory cap.
#[cfg(all(target_arch = "wasm32", feature = "leaking-allocator"))]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::LeakingAllocator> =
    // SAFETY: a component instance runs on one thread; plugins have no threads of their own.
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::LeakingAllocator::new()) };

pub mod date;
pub mod json;
pub mod log;
pub mod money;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod wit;

use serde::de::DeserializeOwned;

use wit::campaign_trigger::exports::loyalty::plugin::campaign;
use wit::earn_rule::exports::loyalty::plugin::earn;
use wit::recommender::exports::loyalty::plugin::recommend;
use wit::shared::loyalty::plugin::types;
use wit::tier_policy::exports::loyalty::plugin::tiers;

pub use campaign::{Action, Event, Message, PointsAward, TierChange};
pub use earn::Award;
pub use recommend::{Candidate, HistoryLine, Scored};
pub use tiers::{TierDecision, TierDef, TierMove};
pub use types::{
    Context, Date, Error as PluginError, LogLevel, Member, MemberStats, Purchase, PurchaseLine,
    Timestamp,
};

/// Microseconds in one day: times are microseconds since the Unix epoch.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Decides the points a purchase earns (the `earn-rule` world). Export with
/// [`export_earn_rule!`].
pub trait EarnRule {
    /// The awards for `purchase` by `member`; an empty list awards nothing. The host sums the
    /// awards of every enabled earn rule, rejects negative awards and caps the sum per
    /// purchase. An `Err` is recorded and the host awards nothing for this rule.
    fn evaluate(
        ctx: &Context,
        member: &Member,
        purchase: &Purchase,
    ) -> Result<Vec<Award>, PluginError>;
}

/// Decides a member's tier (the `tier-policy` world). Export with [`export_tier_policy!`].
pub trait TierPolicy {
    /// The decision for `member` among the merchant's `tiers`, which are ordered by rank
    /// (lowest first). A [`TierDecision::MoveTo`] must name one of `tiers`.
    fn evaluate(
        ctx: &Context,
        member: &Member,
        tiers: &[TierDef],
    ) -> Result<TierDecision, PluginError>;
}

/// Ranks items for a member (the `recommender` world). Export with [`export_recommender!`].
pub trait Recommender {
    /// At most `limit` of `candidates`, best first, given the member's purchase `history`.
    fn recommend(
        ctx: &Context,
        member: &Member,
        history: &[HistoryLine],
        candidates: &[Candidate],
        limit: u32,
    ) -> Result<Vec<Scored>, PluginError>;
}

/// Reacts to member events with actions the host carries out (the `campaign-trigger` world).
/// Export with [`export_campaign_trigger!`].
pub trait CampaignTrigger {
    /// The actions for `event` concerning `member`; an empty list does nothing.
    fn on_event(ctx: &Context, member: &Member, event: &Event) -> Result<Vec<Action>, PluginError>;
}

impl Context {
    /// The plugin's configuration (`config`, JSON text) as `T`. The text must be one JSON
    /// object; blank text reads as `{}`, so a config type whose fields all have defaults works
    /// without any configuration. For nested objects see [`json::optional_object`].
    ///
    /// # Errors
    /// A [`PluginError`] with code `bad-config` if the text is not JSON or does not fit `T`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        parse_config(&self.config)
    }

    /// The merchant-local calendar date at [`Context::now`].
    pub fn local_date(&self) -> Date {
        date::local_date(self.now, self.utc_offset_seconds)
    }

    /// The merchant-local ISO weekday at [`Context::now`]: 1 is Monday, 7 is Sunday.
    pub fn local_weekday(&self) -> u8 {
        date::local_weekday(self.now, self.utc_offset_seconds)
    }

    /// The merchant-local month (1 to 12) at [`Context::now`].
    pub fn local_month(&self) -> u8 {
        self.local_date().month
    }
}

/// Parses plugin configuration JSON text as `T` (what [`Context::config`] does). The text must
/// be one JSON object (serde would otherwise also read a struct from an array); blank text
/// reads as `{}`.
///
/// # Errors
/// A [`PluginError`] with code `bad-config` naming where the text does not fit `T`.
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T, PluginError> {
    // The host may pass an empty string for "no configuration"; defaults then apply.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    json::object(&mut deserializer)
        .and_then(|config| deserializer.end().map(|()| config))
        .map_err(|e| PluginError::bad_config(format!("configuration is invalid: {e}")))
}

impl PluginError {
    /// An error with a machine-readable `code` and a sentence for the merchant's operator.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A `bad-config` error: the plugin's configuration cannot be used.
    pub fn bad_config(message: impl Into<String>) -> Self {
        Self::new("bad-config", message)
    }
}

impl Award {
    /// An award of `points` for `reason`, expiring on the merchant's default schedule.
    pub fn new(points: i64, reason: impl Into<String>) -> Self {
        Self {
            points,
            reason: reason.into(),
            expires_at: None,
        }
    }

    /// An award of `points` for `reason` that expires at `expires_at` instead of on the
    /// merchant's default schedule. The host honours the override only if it lies after the
    /// points activate (the end of the merchant's return window) and by the end of year 9999;
    /// otherwise the default schedule applies. Points with their own expiry form a lot of
    /// their own in the member's balance.
    pub fn expiring(points: i64, reason: impl Into<String>, expires_at: Timestamp) -> Self {
        Self {
            points,
            reason: reason.into(),
            expires_at: Some(expires_at),
        }
    }
}

/// The member attribute under which the host passes the member's tier definition (the
/// member record itself carries only the tier's code). Members' own attributes never use
/// keys starting with `$`.
pub const TIER_ATTRIBUTE: &str = "$tier";

/// The member's tier as the merchant defined it (see [`Member::tier_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierInfo {
    /// The tier's code, e.g. "gold".
    pub code: String,
    /// Display name.
    pub name: String,
    /// 0 is the lowest tier.
    pub rank: u32,
    /// The tier's earn multiplier in ten-thousandths: 10 000 is ×1, 15 000 is ×1.5 (the host
    /// keeps at most 4 decimals, so this is exact).
    pub earn_multiplier_ten_thousandths: i64,
}

impl TierInfo {
    /// `points` × the earn multiplier, rounded down (integer arithmetic, no floats).
    pub fn multiply_points(&self, points: i64) -> i64 {
        let product =
            i128::from(points) * i128::from(self.earn_multiplier_ten_thousandths) / 10_000;
        i64::try_from(product).unwrap_or(if points < 0 { i64::MIN } else { i64::MAX })
    }
}

/// "1.5" → 15 000; `None` for anything that is not a non-negative decimal with at most 4
/// decimals.
fn ten_thousandths(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || fraction.len() > 4
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<4}").parse().ok()?;
    whole.checked_mul(10_000)?.checked_add(fraction)
}

impl Member {
    /// The member's tier definition, if the member has a tier the merchant defines: the
    /// host passes it in the attributes under [`TIER_ATTRIBUTE`].
    pub fn tier_info(&self) -> Option<TierInfo> {
        // Most calls have no tier: skip parsing the attributes then (fuel is per call).
        if !self.attributes.contains(TIER_ATTRIBUTE) {
            return None;
        }
        let attributes: serde_json::Value = serde_json::from_str(&self.attributes).ok()?;
        let tier = attributes.get(TIER_ATTRIBUTE)?;
        Some(TierInfo {
            code: tier.get("code")?.as_str()?.to_string(),
            name: tier.get("name")?.as_str()?.to_string(),
            rank: u32::try_from(tier.get("rank")?.as_u64()?).ok()?,
            earn_multiplier_ten_thousandths: ten_thousandths(
                tier.get("earn_multiplier")?.as_str()?,
            )?,
        })
    }
}

impl Date {
    /// The date `year`-`month`-`day` (not validated: a birthday as the host stored it).
    pub fn new(year: i32, month: u8, day: u8) -> Self {
        Self { year, month, day }
    }
}

impl TierDecision {
    /// Keep the current tier because of `reason`.
    pub fn stay(reason: impl Into<String>) -> Self {
        Self::Stay(reason.into())
    }

    /// Move to the tier with code `tier` because of `reason`.
    pub fn move_to(tier: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::MoveTo(TierMove {
            tier: tier.into(),
            reason: reason.into(),
        })
    }
}

impl Action {
    /// Award `points` for `reason`.
    pub fn award_points(points: i64, reason: impl Into<String>) -> Self {
        Self::AwardPoints(PointsAward {
            points,
            reason: reason.into(),
        })
    }
}

// The adapters from the SDK's traits to the generated `Guest` traits. Blanket impls live here
// (the generated traits are this crate's), so the export macros need not name them.
impl<T: EarnRule> earn::Guest for T {
    fn evaluate(
        ctx: Context,
        member: Member,
        purchase: Purchase,
    ) -> Result<Vec<Award>, PluginError> {
        <T as EarnRule>::evaluate(&ctx, &member, &purchase)
    }
}

impl<T: TierPolicy> tiers::Guest for T {
    fn evaluate(
        ctx: Context,
        member: Member,
        tiers: Vec<TierDef>,
    ) -> Result<TierDecision, PluginError> {
        <T as TierPolicy>::evaluate(&ctx, &member, &tiers)
    }
}

impl<T: Recommender> recommend::Guest for T {
    fn recommend(
        ctx: Context,
        member: Member,
        history: Vec<HistoryLine>,
        candidates: Vec<Candidate>,
        limit: u32,
    ) -> Result<Vec<Scored>, PluginError> {
        <T as Recommender>::recommend(&ctx, &member, &history, &candidates, limit)
    }
}

impl<T: CampaignTrigger> campaign::Guest for T {
    fn on_event(ctx: Context, member: Member, event: Event) -> Result<Vec<Action>, PluginError> {
        <T as CampaignTrigger>::on_event(&ctx, &member, &event)
    }
}

/// Not part of the API: what the export macros expand to.
#[doc(hidden)]
pub mod __private {
    pub use crate::wit::{campaign_trigger, earn_rule, recommender, tier_policy};
    pub use wit_bindgen;

    /// Compile-time check used by the export macros on native targets.
    pub const fn assert_earn_rule<T: crate::EarnRule>() {}
    /// Compile-time check used by the export macros on native targets.
    pub const fn assert_tier_policy<T: crate::TierPolicy>() {}
    /// Compile-time check used by the export macros on native targets.
    pub const fn assert_recommender<T: crate::Recommender>() {}
    /// Compile-time check used by the export macros on native targets.
    pub const fn assert_campaign_trigger<T: crate::CampaignTrigger>() {}
}

/// Exports `$ty` (an identifier of a type implementing [`EarnRule`]) as the component's
/// `earn-rule` world. Use once, in the plugin crate's root. On non-wasm targets it only
/// checks the trait is implemented, so native tests can call `$ty::evaluate` directly.
#[macro_export]
macro_rules! export_earn_rule {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::earn_rule::export_earn_rule_world!(
            $ty with_types_in $crate::__private::earn_rule
        );
        const _: () = $crate::__private::assert_earn_rule::<$ty>();
    };
}

/// Exports `$ty` (an identifier of a type implementing [`TierPolicy`]) as the component's
/// `tier-policy` world. Use once, in the plugin crate's root; on non-wasm targets it only
/// checks the trait is implemented.
#[macro_export]
macro_rules! export_tier_policy {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::tier_policy::export_tier_policy_world!(
            $ty with_types_in $crate::__private::tier_policy
        );
        const _: () = $crate::__private::assert_tier_policy::<$ty>();
    };
}

/// Exports `$ty` (an identifier of a type implementing [`Recommender`]) as the component's
/// `recommender` world. Use once, in the plugin crate's root; on non-wasm targets it only
/// checks the trait is implemented.
#[macro_export]
macro_rules! export_recommender {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::recommender::export_recommender_world!(
            $ty with_types_in $crate::__private::recommender
        );
        const _: () = $crate::__private::assert_recommender::<$ty>();
    };
}

/// Exports `$ty` (an identifier of a type implementing [`CampaignTrigger`]) as the
/// component's `campaign-trigger` world. Use once, in the plugin crate's root; on non-wasm
/// targets it only checks the trait is implemented.
#[macro_export]
macro_rules! export_campaign_trigger {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::campaign_trigger::export_campaign_trigger_world!(
            $ty with_types_in $crate::__private::campaign_trigger
        );
        const _: () = $crate::__private::assert_campaign_trigger::<$ty>();
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        points: i64,
    }

    #[test]
    fn tier_info_reads_the_host_attribute() {
        let member = testing::MemberBuilder::new()
            .attributes(serde_json::json!({"vip": true}))
            .tier_with("gold", "Gold", 2, "1.5")
            .build();
        let tier = member.tier_info().expect("a tier");
        assert_eq!(tier.code, "gold");
        assert_eq!(tier.rank, 2);
        assert_eq!(tier.earn_multiplier_ten_thousandths, 15_000);
        assert_eq!(tier.multiply_points(7), 10);
        assert_eq!(
            testing::MemberBuilder::new().tier("x").build().tier_info(),
            None
        );
        assert_eq!(ten_thousandths("2"), Some(20_000));
        assert_eq!(ten_thousandths("0.0001"), Some(1));
        assert_eq!(ten_thousandths("1.23456"), None);
        assert_eq!(ten_thousandths("-1"), None);
        assert_eq!(ten_thousandths(".5"), None);
    }

    #[test]
    fn config_parses_and_blank_means_defaults() {
        assert_eq!(
            parse_config::<Config>(r#"{"points": 5}"#),
            Ok(Config { points: 5 })
        );
        assert_eq!(parse_config::<Config>(""), Ok(Config { points: 0 }));
        assert_eq!(parse_config::<Config>("  \n"), Ok(Config { points: 0 }));
    }

    #[test]
    fn config_errors_are_bad_config_and_say_where() {
        let e = parse_config::<Config>(r#"{"points": "five"}"#).expect_err("a string is no i64");
        assert_eq!(e.code, "bad-config");
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse_config::<Config>(r#"{"pionts": 5}"#).expect_err("unknown field");
        assert_eq!(e.code, "bad-config");
        assert!(e.message.contains("pionts"), "{}", e.message);
        let e = parse_config::<Config>("{").expect_err("not JSON");
        assert_eq!(e.code, "bad-config");
        let e =
            parse_config::<Config>("[5]").expect_err("serde alone reads a struct from an array");
        assert_eq!(e.code, "bad-config");
        assert!(e.message.contains("a JSON object"), "{}", e.message);
        let e = parse_config::<Config>(r#"{"points": 1} {"points": 2}"#).expect_err("two values");
        assert_eq!(e.code, "bad-config");
        let e = parse_config::<Config>(r#"{"points": 1, "points": 2}"#).expect_err("duplicate");
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }

    #[test]
    fn context_config_reads_the_context_text() {
        let ctx = testing::ContextBuilder::new()
            .config(serde_json::json!({"points": 7}))
            .build();
        assert_eq!(ctx.config::<Config>(), Ok(Config { points: 7 }));
    }

    #[test]
    fn context_local_calendar_uses_the_offset() {
        // 2024-03-31T20:00:00Z is Sunday in UTC, Monday 2024-04-01 04:00 in UTC+8.
        let now = date::micros_from_utc(2024, 3, 31, 20, 0, 0);
        let utc = testing::ContextBuilder::new().now(now).build();
        assert_eq!(utc.local_date(), Date::new(2024, 3, 31));
        assert_eq!(utc.local_weekday(), 7);
        let shanghai = testing::ContextBuilder::new()
            .now(now)
            .utc_offset_seconds(8 * 3600)
            .build();
        assert_eq!(shanghai.local_date(), Date::new(2024, 4, 1));
        assert_eq!(shanghai.local_weekday(), 1);
        assert_eq!(shanghai.local_month(), 4);
    }

    #[test]
    fn decision_and_action_constructors() {
        assert_eq!(TierDecision::stay("ok"), TierDecision::Stay("ok".into()));
        assert_eq!(
            TierDecision::move_to("gold", "why"),
            TierDecision::MoveTo(TierMove {
                tier: "gold".into(),
                reason: "why".into()
            })
        );
        assert_eq!(
            Action::award_points(5, "hi"),
            Action::AwardPoints(PointsAward {
                points: 5,
                reason: "hi".into()
            })
        );
        assert_eq!(Award::new(3, "x").expires_at, None);
        assert_eq!(Award::expiring(3, "x", 42).expires_at, Some(42));
    }
}
