//! Bulk import of real purchase data into a merchant (`loyalty import`), through the same
//! pipeline as the API: members and stores through the same core functions as their
//! endpoints, every purchase and refund validated by the same `prepare_*` functions, its
//! points decided by the store's earn rules exactly as the purchase endpoint does
//! (`api::purchases::purchase_command`), and written by the writer under an Idempotency-Key,
//! with the data's own timestamps as the operation's `now`.
//!
//! A source turns its file into a [`Plan`] (pure: no database); [`run`] applies a plan.
//! Sources: [`online_retail`] (the UCI Online Retail data set).

pub mod online_retail;
mod run;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use loyalty_core::merchants::{self, CreatedApiKey, Merchant, NewMerchant};
use loyalty_core::CoreError;

pub use run::{register_component, run, PLUGIN_VERSION};

use crate::AppState;

/// The currency of the Online Retail data set.
pub const ONLINE_RETAIL_CURRENCY: &str = "GBP";
/// Where the Online Retail shop was: its timestamps are local times there.
pub const ONLINE_RETAIL_TIMEZONE: &str = "Europe/London";

/// Imports the UCI Online Retail data set (CSV, or CSV.gz) from `file` into the merchant
/// `merchant_id`, whose currency must be GBP (the data's). Running it again imports nothing
/// twice.
pub async fn import_online_retail(
    state: &AppState,
    merchant_id: &str,
    file: &Path,
    options: &ImportOptions,
) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let merchant = match merchants::get_merchant(&state.database.pool, merchant_id).await {
        Ok(merchant) => merchant,
        Err(CoreError::NotFound(_)) => bail!("there is no merchant {merchant_id}"),
        Err(error) => return Err(error).context("reading the merchant"),
    };
    if merchant.currency != ONLINE_RETAIL_CURRENCY {
        bail!(
            "merchant {merchant_id} keeps its books in {}, but the Online Retail data set is \
             priced in {ONLINE_RETAIL_CURRENCY}: import it into a {ONLINE_RETAIL_CURRENCY} merchant \
             (`--create-merchant <name>` makes one)",
            merchant.currency
        );
    }
    let zone = jiff::tz::TimeZone::get(&merchant.timezone).with_context(|| {
        format!(
            "the merchant's time zone {} is not in this system's time-zone database",
            merchant.timezone
        )
    })?;
    let exponent = merchant.currency_exponent;
    let file = file.to_path_buf();
    let plan = tokio::task::spawn_blocking(move || {
        let text = online_retail::read_file(&file)?;
        online_retail::plan(&text, exponent, &zone)
    })
    .await
    .context("the reading thread failed")??;
    let mut plan = plan;
    if let Some(end_at) = options.end_at {
        shift(&mut plan, end_at);
    }
    let mut summary = ImportSummary {
        source: online_retail::SOURCE.to_string(),
        merchant_id: merchant.id.clone(),
        currency: merchant.currency.clone(),
        lines_read: plan.lines_read,
        invoices: plan.invoices,
        sales: plan.sales,
        cancellations: plan.cancellations,
        skipped: plan.skipped.clone(),
        notes: plan.notes.clone(),
        plan_elapsed: started.elapsed(),
        ..ImportSummary::default()
    };
    run(state, &merchant, plan, options, &mut summary).await?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Moves every time of `plan` so that its last operation happens at `end_at`.
fn shift(plan: &mut Plan, end_at: i64) {
    let Some(last) = plan
        .ops()
        .map(|op| match op {
            Op::Purchase(purchase) => purchase.at,
            Op::Refund(refund) => refund.at,
        })
        .max()
    else {
        return;
    };
    let delta = end_at - last;
    for store in &mut plan.stores {
        store.first_at += delta;
    }
    for member in &mut plan.members {
        member.first_at += delta;
        for op in &mut member.ops {
            match op {
                Op::Purchase(purchase) => purchase.at += delta,
                Op::Refund(refund) => refund.at += delta,
            }
        }
    }
}

/// A merchant for the Online Retail data set (GBP, Europe/London) with its admin key, as
/// `POST /v1/merchants` makes one.
pub async fn create_online_retail_merchant(
    state: &AppState,
    name: &str,
) -> anyhow::Result<(Merchant, CreatedApiKey)> {
    let input = NewMerchant {
        name: name.to_string(),
        currency: ONLINE_RETAIL_CURRENCY.to_string(),
        timezone: Some(ONLINE_RETAIL_TIMEZONE.to_string()),
        default_region: None,
    };
    merchants::create_merchant(&state.database, &input, state.clock.now())
        .await
        .context("creating the merchant")
}

/// Counts by reason, in reason order.
pub type Counts = BTreeMap<String, u64>;

/// Adds `count` under `reason`.
pub fn count(counts: &mut Counts, reason: impl Into<String>, count: u64) {
    if count > 0 {
        *counts.entry(reason.into()).or_default() += count;
    }
}

/// What an import will do, derived from the file alone.
#[derive(Debug, Default)]
pub struct Plan {
    /// Prefix of every Idempotency-Key the import uses (no LIKE wildcards in it).
    pub key_prefix: String,
    /// Data lines read (the header not counted).
    pub lines_read: u64,
    /// Distinct invoices in the file.
    pub invoices: u64,
    pub sales: u64,
    pub cancellations: u64,
    /// Lines left out, by reason.
    pub skipped: Counts,
    /// Lines imported with an adjustment, or other remarks, by kind.
    pub notes: Counts,
    pub stores: Vec<StorePlan>,
    /// In order of first appearance.
    pub members: Vec<MemberPlan>,
}

impl Plan {
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.members.iter().flat_map(|member| member.ops.iter())
    }

    /// Lines skipped before anything is written.
    pub fn lines_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    pub code: String,
    pub name: String,
    /// The first purchase there (the store's creation time when the import creates it).
    pub first_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlan {
    /// The member's `external_id` (the data's customer id).
    pub external_id: String,
    /// The member's first line (their `joined_at` when the import enrols them).
    pub first_at: i64,
    /// The member's purchases and refunds, strictly in this order.
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Purchase(PurchaseOp),
    Refund(RefundOp),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Purchase(purchase) => &purchase.key,
            Op::Refund(refund) => &refund.key,
        }
    }

    /// Data lines this operation carries (for progress and the line tally).
    pub fn lines(&self) -> u64 {
        match self {
            Op::Purchase(purchase) => purchase.lines,
            Op::Refund(refund) => refund.lines,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOp {
    pub key: String,
    pub external_id: String,
    /// When it happened: its `occurred_at` and the ledger's `now` for it (unix µs).
    pub at: i64,
    pub store_code: String,
    pub items: Vec<Item>,
    pub lines: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub name: Option<String>,
    pub quantity: i64,
    /// Minor units of the merchant's currency.
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOp {
    pub key: String,
    /// The cancellation this refund belongs to (one cancellation may refund several
    /// purchases: one refund each).
    pub cancellation: String,
    /// The Idempotency-Key of the purchase it refunds.
    pub purchase_key: String,
    pub at: i64,
    /// (sku, quantity), each sku once.
    pub items: Vec<(String, i64)>,
    pub lines: u64,
}

/// Operations an import keeps in flight by default. Measured on the full Online Retail
/// import (2 cores, SQLite): 32 → 19.4 s, 64 → 18.2–20.6 s, 256 → 16.7–17.3 s, 1,024 → 18.2 s;
/// more in flight fills the writer's group commits, until waiting members crowd the queue.
pub const CONCURRENCY_DEFAULT: usize = 256;

/// How to run an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Operations in flight at once, taken in the data's time order; never two of one
    /// member at once (a member's operations run strictly in order).
    pub concurrency: usize,
    /// Draw a progress bar (on stderr).
    pub progress: bool,
    /// Plugin components to register and enable on every store of the import.
    pub plugins: Vec<PathBuf>,
    /// Configuration per plugin name (the file name, `earn_base_rate.wasm` → `earn-base-rate`);
    /// `{}` for the others.
    pub plugin_configs: BTreeMap<String, serde_json::Value>,
    /// Move every time of the data by the same amount so that its last line lies at this
    /// instant (unix µs): a demo of old data that looks recent. `None`: the data's own times.
    pub end_at: Option<i64>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            concurrency: CONCURRENCY_DEFAULT,
            progress: false,
            plugins: Vec::new(),
            plugin_configs: BTreeMap::new(),
            end_at: None,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone)]
pub struct ImportSummary {
    pub source: String,
    pub merchant_id: String,
    pub currency: String,
    pub lines_read: u64,
    pub invoices: u64,
    pub sales: u64,
    pub cancellations: u64,
    pub stores_created: u64,
    pub stores_reused: u64,
    pub members_created: u64,
    pub members_reused: u64,
    /// Plugin versions enabled on the import's stores (name@version).
    pub plugins: Vec<String>,
    pub purchases_imported: u64,
    pub purchases_present: u64,
    pub purchases_refused: u64,
    pub refunds_imported: u64,
    pub refunds_present: u64,
    pub refunds_refused: u64,
    pub points_issued: i64,
    pub points_reversed: i64,
    /// Lines of new purchases and refunds.
    pub lines_imported: u64,
    /// Lines of purchases and refunds an earlier run (or the API) already recorded.
    pub lines_present: u64,
    /// Lines left out, by reason (the plan's and those of refused operations).
    pub skipped: Counts,
    pub notes: Counts,
    pub elapsed: Duration,
    /// Of `elapsed`: reading and planning, then stores, plugins and members.
    pub plan_elapsed: Duration,
    pub setup_elapsed: Duration,
}

impl ImportSummary {
    pub fn lines_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn lines_per_second(&self) -> f64 {
        per_second(self.lines_read, self.elapsed)
    }

    pub fn purchases_per_second(&self) -> f64 {
        per_second(self.purchases_imported, self.elapsed)
    }

    /// Whether the run changed nothing in the ledger.
    pub fn nothing_new(&self) -> bool {
        self.purchases_imported == 0 && self.refunds_imported == 0
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(value: impl Into<i128>) -> String {
    let value: i128 = value.into();
    let digits = value.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        grouped.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |value: u64| thousands(value);
        writeln!(
            f,
            "import {} into merchant {} ({})",
            self.source, self.merchant_id, self.currency
        )?;
        writeln!(
            f,
            "  lines      {} read: {} imported, {} already imported, {} skipped",
            t(self.lines_read),
            t(self.lines_imported),
            t(self.lines_present),
            t(self.lines_skipped())
        )?;
        writeln!(
            f,
            "  invoices   {} ({} sales, {} cancellations)",
            t(self.invoices),
            t(self.sales),
            t(self.cancellations)
        )?;
        writeln!(
            f,
            "  stores     {} created, {} reused",
            t(self.stores_created),
            t(self.stores_reused)
        )?;
        if !self.plugins.is_empty() {
            writeln!(f, "  plugins    {}", self.plugins.join(", "))?;
        }
        writeln!(
            f,
            "  members    {} created, {} reused",
            t(self.members_created),
            t(self.members_reused)
        )?;
        writeln!(
            f,
            "  purchases  {} imported, {} already present, {} refused",
            t(self.purchases_imported),
            t(self.purchases_present),
            t(self.purchases_refused)
        )?;
        writeln!(
            f,
            "  refunds    {} imported, {} already present, {} refused",
            t(self.refunds_imported),
            t(self.refunds_present),
            t(self.refunds_refused)
        )?;
        writeln!(
            f,
            "  points     {} issued, {} reversed by refunds",
            thousands(self.points_issued),
            thousands(self.points_reversed)
        )?;
        if self.nothing_new() {
            writeln!(
                f,
                "  nothing new: every purchase and refund of the file was already imported"
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped lines by reason:")?;
            for (reason, count) in &self.skipped {
                writeln!(f, "    {:>9}  {reason}", t(*count))?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "  notes:")?;
            for (note, count) in &self.notes {
                writeln!(f, "    {:>9}  {note}", t(*count))?;
            }
        }
        write!(
            f,
            "  time       {:.1} s ({:.1} s reading and planning, {:.1} s stores and members): \
             {} lines/s, {} purchases/s",
            self.elapsed.as_secs_f64(),
            self.plan_elapsed.as_secs_f64(),
            self.setup_elapsed.as_secs_f64(),
            thousands(self.lines_per_second().round() as i64),
            thousands(self.purchases_per_second().round() as i64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(541_909), "541,909");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }
}
