//! A native test harness: builders with sensible defaults for the values the host passes,
//! and the lines the plugin logged. Only on non-wasm targets, for `cargo test`.
//!
//! ```
//! use loyalty_sdk::testing::{ContextBuilder, MemberBuilder, PurchaseBuilder};
//!
//! let ctx = ContextBuilder::new()
//!     .config(serde_json::json!({"points": 10}))
//!     .now_utc(2024, 5, 17, 9, 30, 0)
//!     .utc_offset_seconds(8 * 3600)
//!     .build();
//! let member = MemberBuilder::new().tier("gold").birthday(1990, 5, 17).build();
//! let purchase = PurchaseBuilder::new().line("latte", Some("coffee"), 2, 1_550).build();
//! assert_eq!(purchase.total, 3_100);
//! assert_eq!(ctx.local_date(), loyalty_sdk::Date::new(2024, 5, 17));
//! # let _ = member;
//! ```

use crate::{
    date, Candidate, Context, Date, HistoryLine, LogLevel, Member, MemberStats, Purchase,
    PurchaseLine, Timestamp,
};

/// The default `now` of [`ContextBuilder`]: 2024-01-15T12:00:00Z, a Monday.
pub const DEFAULT_NOW: Timestamp = 1_705_320_000_000_000;

/// The lines logged on this thread since the last call, oldest first, and forgets them.
pub fn take_logs() -> Vec<(LogLevel, String)> {
    crate::log::imp::CAPTURED.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
}

/// The lines logged on this thread since the last [`take_logs`], oldest first.
pub fn logs() -> Vec<(LogLevel, String)> {
    crate::log::imp::CAPTURED.with(|lines| lines.borrow().clone())
}

/// Builds a [`Context`]. Defaults: merchant `mer_test`, store `sto_test`, now
/// [`DEFAULT_NOW`], time zone `UTC` (offset 0), config `{}`, currency `CNY` with exponent 2.
#[derive(Clone, Debug)]
pub struct ContextBuilder(Context);

impl Default for ContextBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self(Context {
            merchant_id: "mer_test".into(),
            store_id: Some("sto_test".into()),
            now: DEFAULT_NOW,
            timezone: "UTC".into(),
            utc_offset_seconds: 0,
            config: "{}".into(),
            currency: "CNY".into(),
            currency_exponent: 2,
        })
    }

    /// The merchant's id.
    pub fn merchant_id(mut self, id: &str) -> Self {
        self.0.merchant_id = id.into();
        self
    }

    /// The store, or none.
    pub fn store_id(mut self, id: Option<&str>) -> Self {
        self.0.store_id = id.map(Into::into);
        self
    }

    /// The host's time, in microseconds since the Unix epoch.
    pub fn now(mut self, now: Timestamp) -> Self {
        self.0.now = now;
        self
    }

    /// The host's time as a UTC date and time.
    pub fn now_utc(self, year: i32, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Self {
        self.now(date::micros_from_utc(
            year, month, day, hour, minute, second,
        ))
    }

    /// The IANA time-zone name (informational: plugins compute with the offset).
    pub fn timezone(mut self, name: &str) -> Self {
        self.0.timezone = name.into();
        self
    }

    /// The offset from UTC in seconds, east positive.
    pub fn utc_offset_seconds(mut self, seconds: i32) -> Self {
        self.0.utc_offset_seconds = seconds;
        self
    }

    /// The configuration, as a JSON value.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.0.config = config.to_string();
        self
    }

    /// The configuration, as raw text (to test invalid JSON).
    pub fn config_text(mut self, text: &str) -> Self {
        self.0.config = text.into();
        self
    }

    /// The currency code and its exponent.
    pub fn currency(mut self, code: &str, exponent: u8) -> Self {
        self.0.currency = code.into();
        self.0.currency_exponent = exponent;
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        self.0
    }
}

/// Builds a [`Member`]. Defaults: id `mem_test`, no tier, joined 2023-01-01T00:00:00Z, no
/// birthday, attributes `{}`, all stats zero and no last purchase.
#[derive(Clone, Debug)]
pub struct MemberBuilder(Member);

impl Default for MemberBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MemberBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self(Member {
            id: "mem_test".into(),
            tier: None,
            joined_at: date::micros_from_utc(2023, 1, 1, 0, 0, 0),
            birthday: None,
            attributes: "{}".into(),
            stats: MemberStats {
                lifetime_spend: 0,
                spend_12_months: 0,
                orders_count: 0,
                last_purchase_at: None,
                points_available: 0,
            },
        })
    }

    /// The member's id.
    pub fn id(mut self, id: &str) -> Self {
        self.0.id = id.into();
        self
    }

    /// The member's tier code.
    pub fn tier(mut self, tier: &str) -> Self {
        self.0.tier = Some(tier.into());
        self
    }

    /// The member's tier with its definition, as the host passes it: the code, and in the
    /// attributes under `$tier` the name, rank and earn multiplier (a decimal string, "1.5").
    pub fn tier_with(mut self, code: &str, name: &str, rank: u32, earn_multiplier: &str) -> Self {
        self.0.tier = Some(code.into());
        let mut attributes: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.0.attributes).unwrap_or_default();
        attributes.insert(
            crate::TIER_ATTRIBUTE.into(),
            serde_json::json!({
                "code": code, "name": name, "rank": rank, "earn_multiplier": earn_multiplier,
            }),
        );
        self.0.attributes = serde_json::Value::Object(attributes).to_string();
        self
    }

    /// When the member joined.
    pub fn joined_at(mut self, at: Timestamp) -> Self {
        self.0.joined_at = at;
        self
    }

    /// The member's birthday.
    pub fn birthday(mut self, year: i32, month: u8, day: u8) -> Self {
        self.0.birthday = Some(Date::new(year, month, day));
        self
    }

    /// The merchant's attributes of the member, as a JSON value.
    pub fn attributes(mut self, attributes: serde_json::Value) -> Self {
        self.0.attributes = attributes.to_string();
        self
    }

    /// Lifetime spend in minor units.
    pub fn lifetime_spend(mut self, amount: i64) -> Self {
        self.0.stats.lifetime_spend = amount;
        self
    }

    /// Spend over the last 12 months in minor units.
    pub fn spend_12_months(mut self, amount: i64) -> Self {
        self.0.stats.spend_12_months = amount;
        self
    }

    /// Purchases recorded.
    pub fn orders_count(mut self, count: u32) -> Self {
        self.0.stats.orders_count = count;
        self
    }

    /// When the last purchase happened.
    pub fn last_purchase_at(mut self, at: Timestamp) -> Self {
        self.0.stats.last_purchase_at = Some(at);
        self
    }

    /// Points the member can spend now.
    pub fn points_available(mut self, points: i64) -> Self {
        self.0.stats.points_available = points;
        self
    }

    /// The member.
    pub fn build(self) -> Member {
        self.0
    }
}

/// One purchase line: `quantity` × `unit_price` (minor units), total computed.
pub fn line(sku: &str, category: Option<&str>, quantity: u32, unit_price: i64) -> PurchaseLine {
    PurchaseLine {
        sku: sku.into(),
        name: None,
        category: category.map(Into::into),
        quantity,
        unit_price,
        total: i64::from(quantity) * unit_price,
    }
}

/// Builds a [`Purchase`]. Defaults: id `pur_test`, store `sto_test`, channel `pos`, occurred
/// at [`DEFAULT_NOW`], currency `CNY`, no lines; the total is the sum of the lines unless
/// set with [`PurchaseBuilder::total`].
#[derive(Clone, Debug)]
pub struct PurchaseBuilder {
    purchase: Purchase,
    total: Option<i64>,
}

impl Default for PurchaseBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PurchaseBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self {
            purchase: Purchase {
                id: "pur_test".into(),
                store_id: "sto_test".into(),
                channel: "pos".into(),
                occurred_at: DEFAULT_NOW,
                currency: "CNY".into(),
                lines: Vec::new(),
                total: 0,
            },
            total: None,
        }
    }

    /// The purchase's id.
    pub fn id(mut self, id: &str) -> Self {
        self.purchase.id = id.into();
        self
    }

    /// The sales channel.
    pub fn channel(mut self, channel: &str) -> Self {
        self.purchase.channel = channel.into();
        self
    }

    /// When it happened.
    pub fn occurred_at(mut self, at: Timestamp) -> Self {
        self.purchase.occurred_at = at;
        self
    }

    /// The currency code.
    pub fn currency(mut self, code: &str) -> Self {
        self.purchase.currency = code.into();
        self
    }

    /// Adds a line of `quantity` × `unit_price` (see [`line()`]).
    pub fn line(self, sku: &str, category: Option<&str>, quantity: u32, unit_price: i64) -> Self {
        self.push_line(line(sku, category, quantity, unit_price))
    }

    /// Adds a line as given.
    pub fn push_line(mut self, line: PurchaseLine) -> Self {
        self.purchase.lines.push(line);
        self
    }

    /// Sets the total instead of summing the lines.
    pub fn total(mut self, total: i64) -> Self {
        self.total = Some(total);
        self
    }

    /// The purchase.
    pub fn build(mut self) -> Purchase {
        self.purchase.total = self
            .total
            .unwrap_or_else(|| self.purchase.lines.iter().map(|l| l.total).sum());
        self.purchase
    }
}

/// A history line: one unit of `sku` at price 0, bought at `occurred_at`.
pub fn history_line(sku: &str, category: Option<&str>, occurred_at: Timestamp) -> HistoryLine {
    HistoryLine {
        line: line(sku, category, 1, 0),
        occurred_at,
    }
}

/// A recommendation candidate with no name and price 0.
pub fn candidate(
    sku: &str,
    category: Option<&str>,
    popularity: u32,
    co_purchase_count: u32,
) -> Candidate {
    Candidate {
        sku: sku.into(),
        name: None,
        category: category.map(Into::into),
        price: 0,
        popularity,
        co_purchase_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_now_is_the_documented_monday() {
        assert_eq!(DEFAULT_NOW, date::micros_from_utc(2024, 1, 15, 12, 0, 0));
        assert_eq!(ContextBuilder::new().build().local_weekday(), 1);
    }

    #[test]
    fn purchase_total_sums_lines_unless_set() {
        let p = PurchaseBuilder::new()
            .line("a", None, 3, 250)
            .line("b", Some("x"), 1, 100)
            .build();
        assert_eq!(p.total, 850);
        assert_eq!(p.lines[0].total, 750);
        assert_eq!(
            PurchaseBuilder::new()
                .line("a", None, 1, 100)
                .total(90)
                .build()
                .total,
            90
        );
    }

    #[test]
    fn logs_are_captured_per_thread() {
        let _ = take_logs();
        crate::log::info("one");
        crate::log::error("two");
        assert_eq!(logs().len(), 2);
        assert_eq!(
            take_logs(),
            vec![
                (LogLevel::Info, "one".to_owned()),
                (LogLevel::Error, "two".to_owned())
            ]
        );
        assert!(take_logs().is_empty());
        std::thread::spawn(|| crate::log::warn("elsewhere"))
            .join()
            .expect("thread ran");
        assert!(take_logs().is_empty(), "another thread's lines are its own");
    }
}
