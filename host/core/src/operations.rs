//! The operations that move value. Each is validated outside the database (`prepare_*`,
//! pure, returns field errors) and then executed inside the writer's transaction
//! (`Command::execute`), which locks the member, settles due lots, checks balances, posts one
//! balanced ledger transaction and returns the response body that the idempotency record keeps.

use std::collections::BTreeMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::db::{
    format_micros, from_unix_micros, new_id, numbered_list, values_rows, Script, SqlValue,
};
use crate::earn::{Award, EarnInput, EarnLine, EarnPolicy};
use crate::error::{CoreError, FieldError};
use crate::events::{queue_event, NewEvent, PURCHASE_RECORDED, PURCHASE_REFUNDED};
use crate::ledger::{
    self, count_card_account_id, member_account_balances, member_account_id, record,
    record_and_read, BalanceSnapshot, Balances, NewTransaction, Posting, POINTS, USES,
};
use crate::merchants::Merchant;
use crate::money::{format_money, parse_money, parse_positive_money, split_largest_remainder};
use crate::points::{
    expiry_after, insert_lot, lock_and_settle, lot_share_of_credit, take_from_active_lots,
    take_from_lot, PurchaseStats, MICROS_PER_DAY,
};
use crate::session::{self, Session};
use crate::stores::{validate_code, PackageTerms};

pub const ITEMS_PER_PURCHASE_MAX: usize = 500;
pub const PAYMENTS_PER_PURCHASE_MAX: usize = 8;
pub const QUANTITY_MAX: i64 = 1_000_000;
pub const POINTS_PER_OPERATION_MAX: i64 = 1_000_000_000;
pub const REASON_LENGTH_MAX: usize = 500;
/// How far in the future a purchase's `occurred_at` may lie (clock skew of a till).
pub const OCCURRED_AT_FUTURE_MAX_MICROS: i64 = 5 * 60 * 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Card,
    StoredValue,
    Points,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
            PaymentMethod::StoredValue => "stored_value",
            PaymentMethod::Points => "points",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests as the API takes them

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    pub member_id: String,
    pub store_id: String,
    /// The till's own receipt number, unique per merchant.
    pub external_id: Option<String>,
    /// When the purchase happened (RFC 3339); default now.
    pub occurred_at: Option<String>,
    pub items: Vec<ItemRequest>,
    /// With coupons, the payments cover the total less their discounts.
    pub payments: Vec<PaymentRequest>,
    /// The member's coupons to use (at most 5), applied in this order.
    #[serde(default)]
    pub coupons: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub quantity: i64,
    /// Decimal string in the merchant's currency.
    pub unit_price: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub method: PaymentMethod,
    /// Decimal string in the merchant's currency.
    pub amount: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Items to refund; their value is the refunded amount.
    pub items: Option<Vec<RefundItemRequest>>,
    /// An amount to refund instead of items. With neither, the rest of the purchase.
    pub amount: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundItemRequest {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsRequest {
    pub points: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    pub amount: String,
    pub store_id: String,
    /// cash or card: how the member paid the merchant.
    pub payment_method: PaymentMethod,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountCardSaleRequest {
    pub package_id: String,
    pub store_id: String,
    /// cash, card or stored_value.
    pub payment_method: PaymentMethod,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumptionRequest {
    pub uses: i64,
    pub store_id: String,
}

// ---------------------------------------------------------------------------------------
// Responses (also what the idempotency record stores)

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurchaseReceipt {
    pub id: String,
    pub member_id: String,
    pub store_id: String,
    pub external_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: time::OffsetDateTime,
    pub total: String,
    pub points_awarded: i64,
    /// When the awarded points become spendable, if they are pending.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub points_pending_until: Option<time::OffsetDateTime>,
    /// Why the points were awarded, one entry per award.
    pub awards: Vec<AwardView>,
    /// Points spent as payment.
    pub points_redeemed: i64,
    /// The stored-value payment split into principal and bonus.
    pub stored_value_paid: Option<StoredValueSplit>,
    /// Coupons used and what each took off the total.
    pub coupons: Vec<crate::coupons::UsedCoupon>,
    /// What the member was asked to pay: the total less the coupons.
    pub amount_due: String,
    pub transaction_id: String,
    pub balances: Balances,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AwardView {
    pub points: i64,
    pub reason: String,
    pub source: String,
    /// When these points expire, where the earn rule's override was honoured; absent when
    /// the merchant's default expiry applies (so receipts without overrides keep their shape).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredValueSplit {
    pub principal: String,
    pub bonus: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundReceipt {
    pub id: String,
    pub purchase_id: String,
    pub amount: String,
    /// All refunds of the purchase so far, this one included.
    pub purchase_refunded_total: String,
    /// What goes back by each payment method (cash and card are the till's to pay out).
    pub returned: ReturnedPayments,
    /// Earned points taken back, from the purchase's own lots first.
    pub points_reversed: i64,
    /// Part of `points_reversed` that left the member's points negative (only when allowed).
    pub points_debt: i64,
    /// Points that should have been taken back but were already spent; not reversed.
    pub points_not_reversed: i64,
    /// Points of the reversal that had already expired into breakage; not taken again.
    pub points_expired: i64,
    pub transaction_id: String,
    pub balances: Balances,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReturnedPayments {
    pub cash: String,
    pub card: String,
    pub stored_value: StoredValueSplit,
    /// Points given back for the part paid with points.
    pub points: i64,
    /// The coupons' share of the refund: never paid, so nothing comes back for it.
    pub coupon_share: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PointsReceipt {
    pub transaction_id: String,
    pub points: i64,
    pub reason: String,
    pub balances: Balances,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopUpReceipt {
    pub transaction_id: String,
    pub amount: String,
    pub bonus: String,
    pub balances: Balances,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountCardReceipt {
    pub transaction_id: String,
    pub card: CountCardView,
    pub stored_value_paid: Option<StoredValueSplit>,
    pub balances: Balances,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CountCardView {
    pub id: String,
    pub package_id: String,
    pub name: String,
    pub uses: i64,
    pub remaining: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: time::OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumptionReceipt {
    pub transaction_id: String,
    pub card_id: String,
    pub uses: i64,
    pub remaining: i64,
    pub balances: Balances,
}

// ---------------------------------------------------------------------------------------
// Validated commands

#[derive(Debug, Clone)]
pub struct PurchaseLine {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price: i64,
    pub total: i64,
}

#[derive(Debug, Clone)]
pub struct PurchaseCommand {
    /// Chosen before the write, so the plugins deciding the awards see the purchase's id.
    pub purchase_id: String,
    pub member_id: String,
    pub store_id: String,
    pub external_id: Option<String>,
    pub occurred_at: i64,
    pub lines: Vec<PurchaseLine>,
    pub total: i64,
    /// Amount per method, each method at most once.
    pub payments: BTreeMap<PaymentMethod, i64>,
    /// Points the points payment costs.
    pub points_to_redeem: i64,
    /// Coupons to redeem with the purchase (checked and consumed by the writer).
    pub coupons: Vec<String>,
    pub awards: Vec<Award>,
    /// How the awards were decided (JSON), kept on the ledger transaction. `None`: the
    /// built-in policy, named by the awards' source.
    pub provenance: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub enum RefundScope {
    Rest,
    Amount(i64),
    Items(Vec<(String, i64)>),
}

#[derive(Debug, Clone)]
pub enum Command {
    Purchase(PurchaseCommand),
    /// `member_id` is only the writer's route (the purchase's member, read beforehand); the
    /// refund itself reads the member from the purchase under the lock.
    Refund {
        purchase_id: String,
        member_id: String,
        scope: RefundScope,
    },
    Redeem {
        member_id: String,
        points: i64,
        reason: String,
    },
    Adjust {
        member_id: String,
        points: i64,
        reason: String,
    },
    TopUp {
        member_id: String,
        store_id: String,
        amount: i64,
        method: PaymentMethod,
    },
    SellCountCard {
        member_id: String,
        store_id: String,
        package: PackageTerms,
        method: PaymentMethod,
    },
    Consume {
        member_id: String,
        card_id: String,
        store_id: String,
        uses: i64,
    },
    /// Activates and expires a member's due lots (the background job).
    Settle {
        member_id: String,
    },
    /// Moves a member to another tier (decided by a tier policy or an admin).
    ChangeTier(crate::tiers::TierChangeCommand),
    /// A campaign's actions for one member (exactly once per campaign, cause and member).
    CampaignActions(crate::campaigns::CampaignActionsCommand),
    /// The dispatcher's effects of a batch of one merchant's events.
    ApplyEvents(Vec<crate::events::EventEffect>),
    /// Counts a window of one merchant's queued purchases (event id, basket) into the item
    /// statistics.
    CountItems(Vec<(String, crate::items::Basket)>),
    /// Claims webhook deliveries (id, due time read) of the merchant until `lease_until`.
    ClaimDeliveries {
        deliveries: Vec<(String, i64)>,
        lease_until: i64,
    },
    /// Records how a delivery attempt ended.
    RecordDelivery {
        delivery_id: String,
        attempt: crate::webhooks::Attempt,
    },
    /// Enrols a member under an id chosen beforehand (the writer routes by it).
    EnrolMember {
        member_id: String,
        member: crate::members::NewMember,
    },
    /// Changes a member's profile.
    UpdateMember {
        member_id: String,
        patch: crate::members::MemberPatch,
    },
    /// Exchanges points for a gift: points and stock move together.
    RedeemGift {
        member_id: String,
        gift_id: String,
        quantity: i64,
        store_id: String,
    },
}

/// What a command returns: an HTTP-compatible status and the JSON body to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    pub body: String,
    /// The stored answer of an earlier request with the same Idempotency-Key: nothing was
    /// applied now, so nothing that follows a write (a tier evaluation) should run either.
    pub replayed: bool,
}

impl Outcome {
    /// A command's fresh answer with status 200.
    pub fn ok(body: String) -> Outcome {
        Outcome {
            status: 200,
            body,
            replayed: false,
        }
    }
}

fn created<T: Serialize>(value: &T) -> Outcome {
    Outcome {
        status: 201,
        body: serde_json::to_string(value).expect("responses serialize"),
        replayed: false,
    }
}

fn parse_rfc3339(field: &str, text: &str) -> Result<i64, FieldError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(crate::db::unix_micros)
        .map_err(|_| FieldError::new(field, "must be an RFC 3339 timestamp"))
}

fn validate_reason(reason: &str, errors: &mut Vec<FieldError>) {
    if reason.trim().is_empty() {
        errors.push(FieldError::new("reason", "must not be empty"));
    } else if reason.chars().count() > REASON_LENGTH_MAX {
        errors.push(FieldError::new(
            "reason",
            format!("must be at most {REASON_LENGTH_MAX} characters"),
        ));
    }
}

fn validate_optional_text(field: &str, text: &Option<String>, errors: &mut Vec<FieldError>) {
    if let Some(text) = text {
        if text.chars().count() > crate::merchants::NAME_LENGTH_MAX {
            errors.push(FieldError::new(field, "is too long"));
        }
    }
}

/// Validates a purchase and turns it into a command; the awards come from `policy`.
pub fn prepare_purchase(
    merchant: &Merchant,
    request: &PurchaseRequest,
    policy: &dyn EarnPolicy,
    now: i64,
) -> Result<PurchaseCommand, CoreError> {
    let exponent = merchant.currency_exponent;
    let mut errors = Vec::new();
    if request.items.is_empty() || request.items.len() > ITEMS_PER_PURCHASE_MAX {
        errors.push(FieldError::new(
            "items",
            format!("must hold 1 to {ITEMS_PER_PURCHASE_MAX} items"),
        ));
    }
    if request.coupons.len() > crate::coupons::COUPONS_PER_PURCHASE_MAX {
        errors.push(FieldError::new(
            "coupons",
            format!(
                "at most {} coupons",
                crate::coupons::COUPONS_PER_PURCHASE_MAX
            ),
        ));
    }
    for (index, coupon) in request.coupons.iter().enumerate() {
        if request.coupons[..index].contains(coupon) {
            errors.push(FieldError::new(
                format!("coupons[{index}]"),
                "appears twice",
            ));
        }
    }
    if request.payments.len() > PAYMENTS_PER_PURCHASE_MAX {
        errors.push(FieldError::new(
            "payments",
            format!("at most {PAYMENTS_PER_PURCHASE_MAX} payments"),
        ));
    }
    if let Some(external_id) = &request.external_id {
        validate_code("external_id", external_id, &mut errors);
    }
    let occurred_at = match &request.occurred_at {
        Some(text) => match parse_rfc3339("occurred_at", text) {
            Ok(at) if at > now + OCCURRED_AT_FUTURE_MAX_MICROS => {
                errors.push(FieldError::new("occurred_at", "lies in the future"));
                now
            }
            Ok(at) => at,
            Err(error) => {
                errors.push(error);
                now
            }
        },
        None => now,
    };
    let mut lines = Vec::with_capacity(request.items.len());
    let mut total: i64 = 0;
    for (index, item) in request
        .items
        .iter()
        .enumerate()
        .take(ITEMS_PER_PURCHASE_MAX)
    {
        let field = |name: &str| format!("items[{index}].{name}");
        validate_code(&field("sku"), &item.sku, &mut errors);
        validate_optional_text(&field("name"), &item.name, &mut errors);
        validate_optional_text(&field("category"), &item.category, &mut errors);
        if !(1..=QUANTITY_MAX).contains(&item.quantity) {
            errors.push(FieldError::new(
                field("quantity"),
                format!("must be between 1 and {QUANTITY_MAX}"),
            ));
            continue;
        }
        match parse_money(&field("unit_price"), &item.unit_price, exponent) {
            Ok(price) if price < 0 => {
                errors.push(FieldError::new(field("unit_price"), "must not be negative"))
            }
            Ok(price) => {
                let line_total = price.checked_mul(item.quantity);
                match line_total.and_then(|line_total| total.checked_add(line_total)) {
                    Some(sum)
                        if sum <= crate::money::MONEY_MAJOR_UNITS_MAX * 10_i64.pow(exponent) =>
                    {
                        total = sum;
                        lines.push(PurchaseLine {
                            sku: item.sku.clone(),
                            name: item.name.clone(),
                            category: item.category.clone(),
                            quantity: item.quantity,
                            unit_price: price,
                            total: line_total.expect("checked above"),
                        });
                    }
                    _ => errors.push(FieldError::new(field("quantity"), "the total is too large")),
                }
            }
            Err(error) => errors.push(error),
        }
    }
    let mut payments = BTreeMap::new();
    for (index, payment) in request.payments.iter().enumerate() {
        let field = format!("payments[{index}].amount");
        match parse_positive_money(&field, &payment.amount, exponent) {
            Ok(amount) => {
                if payments.insert(payment.method, amount).is_some() {
                    errors.push(FieldError::new(
                        format!("payments[{index}].method"),
                        "each method may appear once",
                    ));
                }
            }
            Err(error) => errors.push(error),
        }
    }
    let mut points_to_redeem = 0;
    if let Some(amount) = payments.get(&PaymentMethod::Points) {
        let value = Decimal::new(*amount, exponent);
        let points = value / merchant.settings.currency_per_point;
        if points.fract() != Decimal::ZERO {
            errors.push(FieldError::new(
                "payments",
                format!(
                    "the points payment {} is not a whole number of points at {} per point",
                    value, merchant.settings.currency_per_point
                ),
            ));
        } else {
            points_to_redeem = points.to_i64().unwrap_or(i64::MAX);
            if points_to_redeem > POINTS_PER_OPERATION_MAX {
                errors.push(FieldError::new(
                    "payments",
                    "the points payment is too large",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(CoreError::Validation(errors));
    }
    let paid: i64 = payments.values().sum();
    // With coupons the rest is their discount, which the writer checks exactly.
    if paid > total || (paid != total && request.coupons.is_empty()) {
        return Err(CoreError::field(
            "payments",
            format!(
                "payments sum to {} but the items total {}",
                format_money(paid, exponent),
                format_money(total, exponent)
            ),
        ));
    }
    let earn_lines: Vec<EarnLine> = lines
        .iter()
        .map(|line| EarnLine {
            sku: &line.sku,
            category: line.category.as_deref(),
            quantity: line.quantity,
            total: line.total,
        })
        .collect();
    let awards = policy.awards(&EarnInput {
        settings: &merchant.settings,
        currency_exponent: exponent,
        member_id: &request.member_id,
        lines: &earn_lines,
        total,
        paid_with_points: payments.get(&PaymentMethod::Points).copied().unwrap_or(0),
        discount: total - paid,
        occurred_at,
    });
    Ok(PurchaseCommand {
        purchase_id: new_id("pur"),
        member_id: request.member_id.clone(),
        store_id: request.store_id.clone(),
        external_id: request.external_id.clone(),
        occurred_at,
        lines,
        total,
        payments,
        points_to_redeem,
        coupons: request.coupons.clone(),
        awards: cap_awards(awards, merchant.settings.points_per_purchase_max),
        provenance: None,
    })
}

/// Host caps on awards: none negative, and the sum within the merchant's per-purchase cap
/// (later awards are cut first).
pub fn cap_awards(awards: Vec<Award>, maximum: Option<i64>) -> Vec<Award> {
    let mut left = maximum
        .unwrap_or(POINTS_PER_OPERATION_MAX)
        .min(POINTS_PER_OPERATION_MAX);
    let mut capped = Vec::with_capacity(awards.len());
    for mut award in awards {
        award.points = award.points.clamp(0, left);
        left -= award.points;
        if award.points > 0 {
            capped.push(award);
        }
    }
    capped
}

pub fn prepare_refund(
    merchant: &Merchant,
    request: &RefundRequest,
) -> Result<RefundScope, CoreError> {
    match (&request.items, &request.amount) {
        (Some(_), Some(_)) => Err(CoreError::field("amount", "give items or amount, not both")),
        (None, None) => Ok(RefundScope::Rest),
        (None, Some(amount)) => parse_positive_money("amount", amount, merchant.currency_exponent)
            .map(RefundScope::Amount)
            .map_err(|error| CoreError::Validation(vec![error])),
        (Some(items), None) => {
            let mut errors = Vec::new();
            if items.is_empty() || items.len() > ITEMS_PER_PURCHASE_MAX {
                errors.push(FieldError::new(
                    "items",
                    format!("must hold 1 to {ITEMS_PER_PURCHASE_MAX} items"),
                ));
            }
            for (index, item) in items.iter().enumerate() {
                validate_code(&format!("items[{index}].sku"), &item.sku, &mut errors);
                if !(1..=QUANTITY_MAX).contains(&item.quantity) {
                    errors.push(FieldError::new(
                        format!("items[{index}].quantity"),
                        format!("must be between 1 and {QUANTITY_MAX}"),
                    ));
                }
            }
            if errors.is_empty() {
                Ok(RefundScope::Items(
                    items
                        .iter()
                        .map(|item| (item.sku.clone(), item.quantity))
                        .collect(),
                ))
            } else {
                Err(CoreError::Validation(errors))
            }
        }
    }
}

pub fn prepare_points(request: &PointsRequest, adjustment: bool) -> Result<(), CoreError> {
    let mut errors = Vec::new();
    validate_reason(&request.reason, &mut errors);
    let valid = if adjustment {
        request.points != 0 && request.points.abs() <= POINTS_PER_OPERATION_MAX
    } else {
        (1..=POINTS_PER_OPERATION_MAX).contains(&request.points)
    };
    if !valid {
        errors.push(FieldError::new(
            "points",
            if adjustment {
                format!("must be non-zero and at most {POINTS_PER_OPERATION_MAX} either way")
            } else {
                format!("must be between 1 and {POINTS_PER_OPERATION_MAX}")
            },
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Validation(errors))
    }
}

pub fn prepare_top_up(merchant: &Merchant, request: &TopUpRequest) -> Result<i64, CoreError> {
    let mut errors = Vec::new();
    if !matches!(
        request.payment_method,
        PaymentMethod::Cash | PaymentMethod::Card
    ) {
        errors.push(FieldError::new("payment_method", "must be cash or card"));
    }
    let amount = parse_positive_money("amount", &request.amount, merchant.currency_exponent)
        .map_err(|error| errors.push(error))
        .unwrap_or(0);
    if errors.is_empty() {
        Ok(amount)
    } else {
        Err(CoreError::Validation(errors))
    }
}

pub fn prepare_count_card_sale(request: &CountCardSaleRequest) -> Result<(), CoreError> {
    if matches!(request.payment_method, PaymentMethod::Points) {
        return Err(CoreError::field(
            "payment_method",
            "must be cash, card or stored_value",
        ));
    }
    Ok(())
}

pub fn prepare_consumption(request: &ConsumptionRequest) -> Result<(), CoreError> {
    if !(1..=crate::stores::COUNT_CARD_USES_MAX).contains(&request.uses) {
        return Err(CoreError::field(
            "uses",
            format!(
                "must be between 1 and {}",
                crate::stores::COUNT_CARD_USES_MAX
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Execution inside the writer's transaction

impl Command {
    /// Checks, before the command is queued, the references that stay valid once they are:
    /// the store (stores are never deleted). Keeps these reads out of the writer's lane.
    pub async fn check_references(
        &self,
        pool: &sqlx::AnyPool,
        merchant_id: &str,
    ) -> Result<(), CoreError> {
        if let Some(store_id) = self.store_id() {
            let found: Option<String> =
                sqlx::query_scalar("SELECT id FROM stores WHERE merchant_id = $1 AND id = $2")
                    .bind(merchant_id)
                    .bind(store_id)
                    .fetch_optional(pool)
                    .await?;
            found.ok_or(CoreError::NotFound("store"))?;
        }
        Ok(())
    }

    /// The store the command names, if any.
    pub fn store_id(&self) -> Option<&str> {
        match self {
            Command::Purchase(command) => Some(&command.store_id),
            Command::TopUp { store_id, .. }
            | Command::SellCountCard { store_id, .. }
            | Command::Consume { store_id, .. }
            | Command::RedeemGift { store_id, .. } => Some(store_id),
            _ => None,
        }
    }

    /// The member whose lock the command takes; the writer routes by it.
    pub fn route_key(&self) -> &str {
        match self {
            Command::Purchase(command) => &command.member_id,
            Command::Refund { member_id, .. }
            | Command::Redeem { member_id, .. }
            | Command::Adjust { member_id, .. }
            | Command::TopUp { member_id, .. }
            | Command::SellCountCard { member_id, .. }
            | Command::Consume { member_id, .. }
            | Command::Settle { member_id } => member_id,
            Command::ChangeTier(change) => &change.member_id,
            Command::RedeemGift { member_id, .. }
            | Command::EnrolMember { member_id, .. }
            | Command::UpdateMember { member_id, .. } => member_id,
            Command::CampaignActions(command) => &command.member_id,
            // Not a member's: one route for the outbox keeps its batches in order.
            Command::ApplyEvents(_)
            | Command::CountItems(_)
            | Command::ClaimDeliveries { .. }
            | Command::RecordDelivery { .. } => "outbox",
        }
    }

    /// Runs the command: reads and row-locking updates go to `connection` at once; inserts
    /// nobody reads back are queued in `script`, which the caller flushes (with its own
    /// Idempotency-Key row) in the same savepoint.
    pub async fn execute(
        &self,
        connection: &mut Session<'_>,
        script: &mut Script,
        merchant: &Merchant,
        idempotency_key: Option<&str>,
        now: i64,
    ) -> Result<Outcome, CoreError> {
        let context = Context {
            merchant,
            idempotency_key,
            now,
        };
        match self {
            Command::Purchase(command) => purchase(connection, script, &context, command).await,
            Command::Refund {
                purchase_id,
                member_id,
                scope,
            } => refund(connection, script, &context, purchase_id, member_id, scope).await,
            Command::Redeem {
                member_id,
                points,
                reason,
            } => redeem(connection, script, &context, member_id, *points, reason).await,
            Command::Adjust {
                member_id,
                points,
                reason,
            } => adjust(connection, script, &context, member_id, *points, reason).await,
            Command::TopUp {
                member_id,
                store_id,
                amount,
                method,
            } => {
                top_up(
                    connection, script, &context, member_id, store_id, *amount, *method,
                )
                .await
            }
            Command::SellCountCard {
                member_id,
                store_id,
                package,
                method,
            } => {
                sell_count_card(
                    connection, script, &context, member_id, store_id, package, *method,
                )
                .await
            }
            Command::Consume {
                member_id,
                card_id,
                store_id,
                uses,
            } => {
                consume(
                    connection, script, &context, member_id, card_id, store_id, *uses,
                )
                .await
            }
            Command::ChangeTier(change) => {
                crate::tiers::change_tier(connection, script, &merchant.id, change, now).await
            }
            Command::CampaignActions(command) => {
                campaign_actions(connection, script, &context, command).await
            }
            Command::ApplyEvents(effects) => {
                crate::events::apply_effects(connection, script, &merchant.id, effects, now).await
            }
            Command::CountItems(window) => {
                script.flush(connection).await?;
                let purchases: Vec<(&str, &crate::items::Basket)> = window
                    .iter()
                    .map(|(event_id, basket)| (event_id.as_str(), basket))
                    .collect();
                let counted =
                    crate::items::count_purchases(connection, &merchant.id, &purchases).await?;
                Ok(Outcome::ok(
                    serde_json::json!({"purchases": counted}).to_string(),
                ))
            }
            Command::ClaimDeliveries {
                deliveries,
                lease_until,
            } => {
                script.flush(connection).await?;
                let claimed =
                    crate::webhooks::claim_on(connection, &merchant.id, deliveries, *lease_until)
                        .await?;
                Ok(Outcome::ok(
                    serde_json::to_string(&claimed).expect("ids serialize"),
                ))
            }
            Command::RecordDelivery {
                delivery_id,
                attempt,
            } => {
                script.flush(connection).await?;
                crate::webhooks::record_attempt_on(
                    connection,
                    &merchant.id,
                    delivery_id,
                    attempt,
                    now,
                )
                .await?;
                Ok(Outcome::ok("{}".to_string()))
            }
            Command::RedeemGift {
                member_id,
                gift_id,
                quantity,
                store_id,
            } => {
                redeem_gift(
                    connection, script, &context, member_id, gift_id, *quantity, store_id,
                )
                .await
            }
            Command::EnrolMember { member_id, member } => {
                // The command's savepoint goes first; the statements below run on the connection.
                script.flush(connection).await?;
                let member =
                    crate::members::enrol_on(connection, merchant, member_id, member, now).await?;
                Ok(created(&member))
            }
            Command::UpdateMember { member_id, patch } => {
                script.flush(connection).await?;
                let member =
                    crate::members::update_member_on(connection, merchant, member_id, patch, now)
                        .await?;
                Ok(Outcome::ok(
                    serde_json::to_string(&member).expect("a member serializes"),
                ))
            }
            Command::Settle { member_id } => {
                let (activated, expired) =
                    lock_and_settle(connection, script, &merchant.id, member_id, None, now).await?;
                Ok(Outcome::ok(
                    serde_json::json!({"activated": activated, "expired": expired}).to_string(),
                ))
            }
        }
    }
}

struct Context<'a> {
    merchant: &'a Merchant,
    idempotency_key: Option<&'a str>,
    now: i64,
}

impl Context<'_> {
    fn transaction(&self, kind: &'static str, member_id: &str) -> NewTransaction {
        NewTransaction {
            kind,
            member_id: Some(member_id.to_string()),
            idempotency_key: self.idempotency_key.map(str::to_string),
            ..Default::default()
        }
    }
    fn money(&self, minor: i64) -> String {
        format_money(minor, self.merchant.currency_exponent)
    }
    /// Balances from those the command's ledger update gave; `queued_lots` (remaining,
    /// expires_at) are its lots not yet written.
    async fn balances_from(
        &self,
        connection: &mut Session<'_>,
        snapshot: BalanceSnapshot,
        member_id: &str,
        queued_lots: &[(i64, Option<i64>)],
    ) -> Result<Balances, CoreError> {
        crate::ledger::balances_from_snapshot(
            connection,
            snapshot,
            &self.merchant.id,
            member_id,
            self.merchant.currency_exponent,
            queued_lots,
        )
        .await
    }
}

/// Locks the member and brings their lots up to date, so every check sees current balances.
async fn begin_member_write(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
) -> Result<(), CoreError> {
    lock_and_settle(
        connection,
        script,
        &context.merchant.id,
        member_id,
        None,
        context.now,
    )
    .await?;
    Ok(())
}

/// Draws `amount` of stored value from principal and bonus in proportion to their balances
/// (those the batch remembers for the member, or read).
async fn stored_value_draw(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    amount: i64,
) -> Result<(i64, i64), CoreError> {
    let remembered = script
        .remembered()
        .accounts(&context.merchant.id, member_id)
        .cloned();
    let accounts = match remembered {
        Some(accounts) => {
            #[cfg(debug_assertions)]
            {
                let read =
                    member_account_balances(connection, &context.merchant.id, member_id).await?;
                assert!(
                    accounts
                        .iter()
                        .all(|(account_id, balance)| read.get(account_id) == Some(balance)),
                    "remembered balances of {member_id} differ from the database's"
                );
            }
            accounts
        }
        None => member_account_balances(connection, &context.merchant.id, member_id).await?,
    };
    let principal = accounts
        .get(&member_account_id(member_id, "stored_value_principal"))
        .copied()
        .unwrap_or(0);
    let bonus = accounts
        .get(&member_account_id(member_id, "stored_value_bonus"))
        .copied()
        .unwrap_or(0);
    if principal + bonus < amount {
        return Err(CoreError::Unprocessable(format!(
            "stored value balance {} is less than {}",
            context.money(principal + bonus),
            context.money(amount)
        )));
    }
    let parts = split_largest_remainder(amount, &[principal, bonus]);
    Ok((parts[0], parts[1]))
}

fn stored_value_postings(
    context: &Context<'_>,
    member_id: &str,
    principal: i64,
    bonus: i64,
) -> Vec<Posting> {
    let currency = &context.merchant.currency;
    vec![
        Posting::member(
            member_account_id(member_id, "stored_value_principal"),
            currency,
            -principal,
        ),
        Posting::merchant("stored_value_redeemed", currency, principal),
        Posting::member(
            member_account_id(member_id, "stored_value_bonus"),
            currency,
            -bonus,
        ),
        Posting::merchant("stored_value_bonus_redeemed", currency, bonus),
    ]
}

/// Payments of a purchase as stored with it, so refunds can return them in proportion.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PaymentRecord {
    methods: BTreeMap<PaymentMethod, i64>,
    stored_value_principal: i64,
    stored_value_bonus: i64,
    points_paid: i64,
    points_paid_expires_at: Option<i64>,
    refunded_methods: BTreeMap<PaymentMethod, i64>,
    refunded_principal: i64,
    refunded_bonus: i64,
    refunded_points: i64,
    awards: Vec<AwardView>,
    /// Expired points of the purchase's lots already excused from reversals.
    #[serde(default)]
    expired_forgiven: i64,
    /// The purchase's lots for awards with an honoured expiry override, soonest first (the
    /// main lot is `purchases.lot_id`). Kept here so a refund finds them by key, without a
    /// scan of the member's lots or a new index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    override_lots: Vec<String>,
    /// Coupons used, and what they took off in all; refunds give that part back to no one
    /// (it was never paid), in proportion like every payment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    coupons: Vec<String>,
    #[serde(default)]
    coupon_discount: i64,
    #[serde(default)]
    refunded_coupon: i64,
}

/// Latest expiry a lot may carry: the end of year 9999, the last instant RFC 3339 (and so
/// every receipt and balance) can show.
pub const EXPIRES_AT_MAX: i64 = 253_402_300_799_999_999;

/// The expiry override of an award as the host honours it: only one after the points
/// activate (an override at or before `activates_at` would make the points expire before
/// they could be spent) and one a receipt can show. `None`: the merchant's default applies.
pub fn honoured_expiry(expires_at: Option<i64>, activates_at: i64) -> Option<i64> {
    expires_at.filter(|at| *at > activates_at && *at <= EXPIRES_AT_MAX)
}

async fn purchase(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    command: &PurchaseCommand,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    let settings = &merchant.settings;
    let member_id = &command.member_id;
    lock_and_settle(
        connection,
        script,
        &merchant.id,
        member_id,
        Some(PurchaseStats {
            total: command.total,
            occurred_at: command.occurred_at,
        }),
        context.now,
    )
    .await?;
    let mut transaction = context.transaction("purchase", member_id);
    let purchase_id = command.purchase_id.clone();
    transaction.reference = Some(purchase_id.clone());
    let mut record_payments = PaymentRecord {
        methods: command.payments.clone(),
        ..Default::default()
    };
    let mut used_coupons = Vec::new();
    if !command.coupons.is_empty() {
        let (used, discount) = crate::coupons::redeem(
            connection,
            script,
            merchant,
            member_id,
            &command.store_id,
            &purchase_id,
            command.total,
            &command.coupons,
            context.now,
        )
        .await?;
        let paid: i64 = command.payments.values().sum();
        if paid + discount != command.total {
            return Err(CoreError::field(
                "payments",
                format!(
                    "payments sum to {} but the items total {} less coupons of {} is {}",
                    context.money(paid),
                    context.money(command.total),
                    context.money(discount),
                    context.money(command.total - discount)
                ),
            ));
        }
        record_payments.coupons = command.coupons.clone();
        record_payments.coupon_discount = discount;
        used_coupons = used;
    }
    let mut stored_value_paid = None;
    if let Some(amount) = command.payments.get(&PaymentMethod::StoredValue) {
        let (principal, bonus) =
            stored_value_draw(connection, script, context, member_id, *amount).await?;
        transaction
            .postings
            .extend(stored_value_postings(context, member_id, principal, bonus));
        record_payments.stored_value_principal = principal;
        record_payments.stored_value_bonus = bonus;
        stored_value_paid = Some(StoredValueSplit {
            principal: context.money(principal),
            bonus: context.money(bonus),
        });
    }
    let points_account = member_account_id(member_id, "points");
    if command.points_to_redeem > 0 {
        // The latest finite expiry, as the last lot in expiry order rather than MAX(): an
        // aggregate beside the lot filters can be planned over all the member's lots (see
        // ledger::balances_sql).
        let expires_at: Option<i64> = session::query_scalar(
            "SELECT expires_at FROM point_lots WHERE merchant_id = $1 AND member_id = $2 \
             AND state = 'active' AND remaining > 0 AND expires_at IS NOT NULL \
             ORDER BY expires_at DESC LIMIT 1",
        )
        .bind(&merchant.id)
        .bind(member_id)
        .fetch_optional(&mut *connection)
        .await?;
        let taken = take_from_active_lots(
            connection,
            script,
            &merchant.id,
            member_id,
            command.points_to_redeem,
        )
        .await?;
        if taken < command.points_to_redeem {
            return Err(CoreError::Unprocessable(format!(
                "the member has {taken} points available, the payment needs {}",
                command.points_to_redeem
            )));
        }
        transaction
            .postings
            .push(Posting::member(points_account.clone(), POINTS, -taken));
        transaction
            .postings
            .push(Posting::merchant("points_redeemed", POINTS, taken));
        record_payments.points_paid = taken;
        record_payments.points_paid_expires_at = expires_at;
    }
    let points_awarded: i64 = command.awards.iter().map(|award| award.points).sum();
    let activates_at =
        command.occurred_at + i64::from(settings.points_pending_days) * MICROS_PER_DAY;
    let pending = activates_at > context.now;
    let earn_account = if pending {
        member_account_id(member_id, "points_pending")
    } else {
        points_account.clone()
    };
    if points_awarded > 0 {
        transaction
            .postings
            .push(Posting::merchant("points_issued", POINTS, -points_awarded));
        transaction.postings.push(Posting::member(
            earn_account.clone(),
            POINTS,
            points_awarded,
        ));
    }
    record_payments.awards = command
        .awards
        .iter()
        .map(|award| AwardView {
            points: award.points,
            reason: award.reason.clone(),
            source: award.source.clone(),
            expires_at: honoured_expiry(award.expires_at, activates_at).map(from_unix_micros),
        })
        .collect();
    transaction.reason = Some(
        record_payments
            .awards
            .iter()
            .map(|award| award.reason.as_str())
            .collect::<Vec<_>>()
            .join("; "),
    )
    .filter(|reason| !reason.is_empty());
    transaction.provenance = Some(match &command.provenance {
        Some(provenance) => provenance.to_string(),
        None => serde_json::json!({"earn_policy": command.awards.first().map(|award| award.source.as_str()).unwrap_or("none")})
            .to_string(),
    });
    // A debt is repaid by new points before they form a lot, so the earning may go through
    // a negative balance (only possible when the merchant allows debts).
    transaction.negative_allowed = vec![points_account.clone()];
    let (transaction_id, new_balances, mut balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    let mut lot_id = None;
    let mut queued_lots = Vec::new();
    if points_awarded > 0 {
        // The purchase's lots, in the order refunds take from them: the main lot for awards
        // on the merchant's default expiry, then one lot per honoured override, soonest first.
        // Every lot has the purchase's state and activation; only the expiry differs.
        let mut main_points = 0;
        let mut overrides: BTreeMap<i64, i64> = BTreeMap::new();
        for award in &command.awards {
            match honoured_expiry(award.expires_at, activates_at) {
                Some(at) => *overrides.entry(at).or_default() += award.points,
                None => main_points += award.points,
            }
        }
        let default_expires_at = expiry_after(activates_at, settings.points_expiry_days);
        let lots = std::iter::once((true, main_points, default_expires_at))
            .chain(
                overrides
                    .iter()
                    .map(|(at, points)| (false, *points, Some(*at))),
            )
            .filter(|(_, points, _)| *points > 0);
        // A debt is repaid before the points form lots; the lots give it up in their order.
        let balance_after = new_balances.get(&earn_account).copied().unwrap_or(0);
        let mut debt_to_repay = if pending {
            0
        } else {
            points_awarded - lot_share_of_credit(points_awarded, balance_after)
        };
        let mut expired_lots = Vec::new();
        for (main, points, expires_at) in lots {
            let repaid = debt_to_repay.min(points);
            debt_to_repay -= repaid;
            let mut remaining = points - repaid;
            // A back-dated purchase whose points have already expired: they go to breakage at
            // once instead of showing as available until the next lifecycle run.
            let expired_on_arrival =
                !pending && remaining > 0 && expires_at.is_some_and(|at| at <= context.now);
            let expired = if expired_on_arrival { remaining } else { 0 };
            remaining -= expired;
            if !pending {
                queued_lots.push((remaining, expires_at));
            }
            let id = insert_lot(
                script,
                &merchant.id,
                member_id,
                &transaction_id,
                pending,
                points,
                remaining,
                activates_at,
                expires_at,
                context.now,
            );
            if expired > 0 {
                expired_lots.push((id.clone(), expired));
            }
            if main {
                lot_id = Some(id);
            } else {
                record_payments.override_lots.push(id);
            }
        }
        for (id, expired) in &expired_lots {
            let mut expiry = context.transaction("points.expiry", member_id);
            expiry.idempotency_key = None;
            expiry.reference = Some(id.clone());
            expiry.reason = Some("points expired before the purchase was recorded".into());
            expiry.postings = vec![
                Posting::member(points_account.clone(), POINTS, -expired),
                Posting::merchant("points_breakage", POINTS, *expired),
            ];
            record(connection, script, &merchant.id, context.now, expiry).await?;
        }
        if !expired_lots.is_empty() {
            // the balances read with the purchase no longer hold; the re-read flushes the
            // script first, so the lots are stored and no longer queued
            balances_after = crate::ledger::read_balances(
                connection,
                script,
                &merchant.id,
                member_id,
                context.now,
            )
            .await?;
            queued_lots.clear();
        }
    }
    script.push(
        "INSERT INTO purchases (merchant_id, id, member_id, store_id, external_id, occurred_at, \
         total, refunded, points_awarded, points_reversed, lot_id, transaction_id, payments, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 0, $9, $10, $11, $12)",
        vec![
            (&merchant.id).into(),
            (&purchase_id).into(),
            member_id.into(),
            (&command.store_id).into(),
            (&command.external_id).into(),
            command.occurred_at.into(),
            command.total.into(),
            points_awarded.into(),
            lot_id.into(),
            (&transaction_id).into(),
            serde_json::to_string(&record_payments)
                .expect("payments serialize")
                .into(),
            context.now.into(),
        ],
    );
    queue_lines(script, &merchant.id, &purchase_id, &command.lines);
    queue_event(
        script,
        &merchant.id,
        NewEvent::member(
            PURCHASE_RECORDED,
            member_id,
            serde_json::json!({
                "purchase_id": purchase_id,
                "member_id": member_id,
                "store_id": command.store_id,
                "external_id": command.external_id,
                "occurred_at": format_micros(command.occurred_at),
                "total": context.money(command.total),
                "points_awarded": points_awarded,
                "transaction_id": transaction_id,
            }),
        )
        .at_store(&command.store_id),
        context.now,
    );
    let receipt = PurchaseReceipt {
        id: purchase_id,
        member_id: member_id.clone(),
        store_id: command.store_id.clone(),
        external_id: command.external_id.clone(),
        occurred_at: from_unix_micros(command.occurred_at),
        total: context.money(command.total),
        points_awarded,
        points_pending_until: (pending && points_awarded > 0)
            .then(|| from_unix_micros(activates_at)),
        awards: record_payments.awards.clone(),
        points_redeemed: record_payments.points_paid,
        stored_value_paid,
        amount_due: context.money(command.total - record_payments.coupon_discount),
        coupons: used_coupons,
        transaction_id,
        balances: context
            .balances_from(connection, balances_after, member_id, &queued_lots)
            .await?,
    };
    Ok(created(&receipt))
}

/// Lines go in with multi-row INSERTs of at most this many rows.
const LINES_PER_INSERT_MAX: usize = 50;

fn queue_lines(script: &mut Script, merchant_id: &str, purchase_id: &str, lines: &[PurchaseLine]) {
    for (chunk_index, chunk) in lines.chunks(LINES_PER_INSERT_MAX).enumerate() {
        let sql = format!(
            "INSERT INTO purchase_items (merchant_id, purchase_id, line, sku, name, category, \
             quantity, unit_price, total, refunded_quantity) VALUES {}",
            values_rows(2, 7, chunk.len(), ", 0")
        );
        let mut values: Vec<SqlValue> = vec![merchant_id.into(), purchase_id.into()];
        for (index, line) in chunk.iter().enumerate() {
            let number = chunk_index * LINES_PER_INSERT_MAX + index;
            values.push(i64::try_from(number).expect("few lines").into());
            values.push((&line.sku).into());
            values.push((&line.name).into());
            values.push((&line.category).into());
            values.push(line.quantity.into());
            values.push(line.unit_price.into());
            values.push(line.total.into());
        }
        script.push(&sql, values);
    }
}

/// Maps the unique violations a command's queued inserts can hit to 409s.
pub fn map_script_error(error: CoreError) -> CoreError {
    crate::stores::conflict_on(
        error,
        "purchases_external_id",
        "external_id",
        "a purchase with this external_id already exists",
    )
}

async fn refund(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    purchase_id: &str,
    routed_member_id: &str,
    scope: &RefundScope,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    // The route is the purchase's member as read before the command was queued; a purchase
    // never changes member, so locking it and then reading the purchase is consistent.
    begin_member_write(connection, script, context, routed_member_id).await?;
    let row = session::query(
        "SELECT member_id, store_id, total, refunded, points_awarded, points_reversed, lot_id, \
         payments FROM purchases WHERE merchant_id = $1 AND id = $2",
    )
    .bind(&merchant.id)
    .bind(purchase_id)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or(CoreError::NotFound("purchase"))?;
    let member_id: String = row.try_get("member_id")?;
    if member_id != routed_member_id {
        return Err(CoreError::NotFound("purchase"));
    }
    let store_id: String = row.try_get("store_id")?;
    let total: i64 = row.try_get("total")?;
    let refunded: i64 = row.try_get("refunded")?;
    let points_awarded: i64 = row.try_get("points_awarded")?;
    let points_reversed_before: i64 = row.try_get("points_reversed")?;
    let lot_id: Option<String> = row.try_get("lot_id")?;
    let payments_text: String = row.try_get("payments")?;
    let mut payments: PaymentRecord = serde_json::from_str(&payments_text)
        .map_err(|error| CoreError::Internal(format!("stored payments unreadable: {error}")))?;
    let refundable = total - refunded;

    let mut item_updates: Vec<(i64, i64)> = Vec::new();
    let amount = match scope {
        RefundScope::Rest => refundable,
        RefundScope::Amount(amount) => *amount,
        RefundScope::Items(items) => {
            let lines = session::query(
                "SELECT line, sku, quantity, unit_price, refunded_quantity FROM purchase_items \
                 WHERE merchant_id = $1 AND purchase_id = $2 ORDER BY line",
            )
            .bind(&merchant.id)
            .bind(purchase_id)
            .fetch_all(&mut *connection)
            .await?;
            let mut open: Vec<(i64, String, i64, i64)> = Vec::with_capacity(lines.len());
            for line in &lines {
                let quantity: i64 = line.try_get("quantity")?;
                let refunded_quantity: i64 = line.try_get("refunded_quantity")?;
                open.push((
                    line.try_get("line")?,
                    line.try_get("sku")?,
                    quantity - refunded_quantity,
                    line.try_get("unit_price")?,
                ));
            }
            let mut amount = 0_i64;
            for (index, (sku, quantity)) in items.iter().enumerate() {
                let mut wanted = *quantity;
                for (line, line_sku, left, unit_price) in open.iter_mut() {
                    if wanted == 0 {
                        break;
                    }
                    if line_sku != sku || *left == 0 {
                        continue;
                    }
                    let take = wanted.min(*left);
                    *left -= take;
                    wanted -= take;
                    amount += take * *unit_price;
                    item_updates.push((*line, take));
                }
                if wanted > 0 {
                    return Err(CoreError::Validation(vec![FieldError::new(
                        format!("items[{index}].quantity"),
                        format!("the purchase has fewer than {quantity} unrefunded of {sku}"),
                    )]));
                }
            }
            amount
        }
    };
    if amount <= 0 {
        return Err(CoreError::Unprocessable(if refundable == 0 {
            "the purchase is already fully refunded".to_string()
        } else {
            "the refund amount must be greater than zero".to_string()
        }));
    }
    if amount > refundable {
        return Err(CoreError::Unprocessable(format!(
            "the refund {} exceeds what is left to refund ({})",
            context.money(amount),
            context.money(refundable)
        )));
    }
    let refund_id = new_id("ref");
    let mut transaction = context.transaction("refund", &member_id);
    transaction.reference = Some(purchase_id.to_string());
    transaction.reason = Some(format!("refund {refund_id}"));
    // Payments come back in proportion to what of each is still unrefunded.
    let methods: Vec<PaymentMethod> = payments.methods.keys().copied().collect();
    let mut remaining_by_method: Vec<i64> = methods
        .iter()
        .map(|method| {
            payments.methods[method] - payments.refunded_methods.get(method).copied().unwrap_or(0)
        })
        .collect();
    // The coupons' part takes its share of every refund and goes back to no one.
    remaining_by_method.push(payments.coupon_discount - payments.refunded_coupon);
    let mut parts = if remaining_by_method.iter().sum::<i64>() == 0 {
        vec![0; remaining_by_method.len()]
    } else {
        split_largest_remainder(amount, &remaining_by_method)
    };
    let coupon_part = parts.pop().expect("the coupons' slot");
    payments.refunded_coupon += coupon_part;
    let mut returned = ReturnedPayments {
        cash: context.money(0),
        card: context.money(0),
        stored_value: StoredValueSplit {
            principal: context.money(0),
            bonus: context.money(0),
        },
        points: 0,
        coupon_share: context.money(coupon_part),
    };
    let points_account = member_account_id(&member_id, "points");
    let mut returned_points_lot: Option<i64> = None;
    for (method, part) in methods.iter().zip(&parts) {
        *payments.refunded_methods.entry(*method).or_default() += part;
        match method {
            PaymentMethod::Cash => returned.cash = context.money(*part),
            PaymentMethod::Card => returned.card = context.money(*part),
            PaymentMethod::StoredValue => {
                let split = split_largest_remainder(
                    *part,
                    &[
                        payments.stored_value_principal - payments.refunded_principal,
                        payments.stored_value_bonus - payments.refunded_bonus,
                    ],
                );
                payments.refunded_principal += split[0];
                payments.refunded_bonus += split[1];
                transaction.postings.extend(stored_value_postings(
                    context, &member_id, -split[0], -split[1],
                ));
                returned.stored_value = StoredValueSplit {
                    principal: context.money(split[0]),
                    bonus: context.money(split[1]),
                };
            }
            PaymentMethod::Points => {
                let method_left =
                    payments.methods[method] - (payments.refunded_methods[method] - part);
                let points_left = payments.points_paid - payments.refunded_points;
                let points = split_largest_remainder(points_left, &[*part, method_left - part])[0];
                payments.refunded_points += points;
                returned.points = points;
                if points > 0 {
                    transaction.postings.push(Posting::merchant(
                        "points_redeemed",
                        POINTS,
                        -points,
                    ));
                    transaction.postings.push(Posting::member(
                        points_account.clone(),
                        POINTS,
                        points,
                    ));
                    returned_points_lot = Some(points);
                }
            }
        }
    }

    // Earned points are reversed in proportion to the refund, from the purchase's own lots
    // first (the main lot, then its override lots soonest first), then from other available
    // points; what cannot be taken becomes a debt if the merchant allows it, or is reported
    // as not reversed.
    let points_left_to_reverse = points_awarded - points_reversed_before;
    let reversal =
        split_largest_remainder(points_left_to_reverse, &[amount, refundable - amount])[0];
    let purchase_lots: Vec<&String> = lot_id.iter().chain(&payments.override_lots).collect();
    let mut taken_from_lot = 0;
    let mut taken_pending = 0;
    if reversal > 0 {
        for lot_id in &purchase_lots {
            let wanted = reversal - taken_from_lot - taken_pending;
            if wanted == 0 {
                break;
            }
            let (state, taken) =
                take_from_lot(connection, script, &merchant.id, lot_id, wanted).await?;
            if state == "pending" {
                taken_pending += taken;
            } else {
                taken_from_lot += taken;
            }
        }
    }
    let mut rest = reversal - taken_from_lot - taken_pending;
    // Points of the purchase's lots that already expired went to breakage: the merchant kept
    // them, so they are not taken again from the member's other points.
    let mut points_expired = 0;
    if rest > 0 && !purchase_lots.is_empty() {
        // A lot may have expired in this very command's settlement, still queued.
        script.flush(connection).await?;
        let lot_params = numbered_list(4, purchase_lots.len());
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(p.amount), 0) AS BIGINT) FROM postings p \
             JOIN transactions t ON t.merchant_id = p.merchant_id AND t.id = p.transaction_id \
             WHERE t.merchant_id = $1 AND t.member_id = $2 AND t.kind = 'points.expiry' \
             AND p.account_id = $3 AND t.reference IN ({lot_params})"
        );
        let mut query = session::query_scalar(&sql)
            .bind(&merchant.id)
            .bind(&member_id)
            .bind(crate::ledger::merchant_account_id("points_breakage"));
        for lot_id in &purchase_lots {
            query = query.bind(*lot_id);
        }
        let expired_of_lots: i64 = query.fetch_one(&mut *connection).await?;
        points_expired = rest.min(expired_of_lots - payments.expired_forgiven).max(0);
        payments.expired_forgiven += points_expired;
        rest -= points_expired;
    }
    let taken_elsewhere =
        take_from_active_lots(connection, script, &merchant.id, &member_id, rest).await?;
    let shortfall = rest - taken_elsewhere;
    let (points_debt, points_not_reversed) = if merchant.settings.allow_negative_points {
        (shortfall, 0)
    } else {
        (0, shortfall)
    };
    let reversed_available = taken_from_lot + taken_elsewhere + points_debt;
    if taken_pending > 0 {
        transaction.postings.push(Posting::member(
            member_account_id(&member_id, "points_pending"),
            POINTS,
            -taken_pending,
        ));
    }
    if reversed_available > 0 {
        transaction.postings.push(Posting::member(
            points_account.clone(),
            POINTS,
            -reversed_available,
        ));
    }
    transaction.postings.push(Posting::merchant(
        "points_issued",
        POINTS,
        taken_pending + reversed_available,
    ));
    if points_debt > 0 {
        transaction.negative_allowed = vec![points_account.clone()];
    }
    let (transaction_id, new_balances, balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        &member_id,
    )
    .await?;
    let mut queued_lots = Vec::new();
    if let Some(points) = returned_points_lot {
        // Points paid come back as a lot with the latest expiry of the lots they came from.
        let balance_after = new_balances.get(&points_account).copied().unwrap_or(0);
        let remaining = lot_share_of_credit(points, balance_after);
        let expires_at = payments
            .points_paid_expires_at
            .filter(|at| *at > context.now)
            .or_else(|| expiry_after(context.now, merchant.settings.points_expiry_days));
        insert_lot(
            script,
            &merchant.id,
            &member_id,
            &transaction_id,
            false,
            points,
            remaining,
            context.now,
            expires_at,
            context.now,
        );
        queued_lots.push((remaining, expires_at));
    }
    let points_reversed = taken_pending + reversed_available;
    if refunded + amount == total && !payments.coupons.is_empty() {
        // A full refund gives the coupons back while they are still valid.
        crate::coupons::queue_restore(script, &merchant.id, &payments.coupons, context.now);
    }
    script.push(
        "UPDATE purchases SET refunded = refunded + $3, points_reversed = points_reversed + $4, \
         payments = $5 WHERE merchant_id = $1 AND id = $2",
        vec![
            (&merchant.id).into(),
            purchase_id.into(),
            amount.into(),
            reversal.into(),
            serde_json::to_string(&payments)
                .expect("payments serialize")
                .into(),
        ],
    );
    for (line, quantity) in &item_updates {
        script.push(
            "UPDATE purchase_items SET refunded_quantity = refunded_quantity + $4 \
             WHERE merchant_id = $1 AND purchase_id = $2 AND line = $3",
            vec![
                (&merchant.id).into(),
                purchase_id.into(),
                (*line).into(),
                (*quantity).into(),
            ],
        );
    }
    script.push(
        "INSERT INTO refunds (merchant_id, id, purchase_id, amount, points_reversed, points_shortfall, \
         transaction_id, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            (&merchant.id).into(),
            (&refund_id).into(),
            purchase_id.into(),
            amount.into(),
            points_reversed.into(),
            points_not_reversed.into(),
            (&transaction_id).into(),
            serde_json::to_string(&returned).expect("serializes").into(),
            context.now.into(),
        ],
    );
    script.push(
        "UPDATE members SET lifetime_spend = lifetime_spend - $3 WHERE merchant_id = $1 AND id = $2",
        vec![(&merchant.id).into(), (&member_id).into(), amount.into()],
    );
    queue_event(
        script,
        &merchant.id,
        NewEvent::member(
            PURCHASE_REFUNDED,
            &member_id,
            serde_json::json!({
                "refund_id": refund_id,
                "purchase_id": purchase_id,
                "member_id": member_id,
                "amount": context.money(amount),
                "purchase_refunded_total": context.money(refunded + amount),
                "points_reversed": points_reversed,
                "transaction_id": transaction_id,
            }),
        )
        .at_store(&store_id),
        context.now,
    );
    let balances = context
        .balances_from(connection, balances_after, &member_id, &queued_lots)
        .await?;
    let receipt_body = |balances: Balances| RefundReceipt {
        id: refund_id.clone(),
        purchase_id: purchase_id.to_string(),
        amount: context.money(amount),
        purchase_refunded_total: context.money(refunded + amount),
        returned: returned.clone(),
        points_reversed,
        points_debt,
        points_not_reversed,
        points_expired,
        transaction_id: transaction_id.clone(),
        balances,
    };
    Ok(created(&receipt_body(balances)))
}

async fn redeem(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    points: i64,
    reason: &str,
) -> Result<Outcome, CoreError> {
    let merchant_id = &context.merchant.id;
    begin_member_write(connection, script, context, member_id).await?;
    let taken = take_from_active_lots(connection, script, merchant_id, member_id, points).await?;
    if taken < points {
        return Err(CoreError::Unprocessable(format!(
            "the member has {taken} points available, {points} requested"
        )));
    }
    let mut transaction = context.transaction("points.redemption", member_id);
    transaction.reason = Some(reason.trim().to_string());
    transaction.postings = vec![
        Posting::member(member_account_id(member_id, "points"), POINTS, -points),
        Posting::merchant("points_redeemed", POINTS, points),
    ];
    let (transaction_id, _, balances_after) = record_and_read(
        connection,
        script,
        merchant_id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    Ok(created(&PointsReceipt {
        transaction_id,
        points,
        reason: reason.trim().to_string(),
        balances: context
            .balances_from(connection, balances_after, member_id, &[])
            .await?,
    }))
}

/// Applies a campaign's actions for a member: once per (campaign, cause, member); each action
/// within the member cap and the campaign's budget, else dropped and counted.
async fn campaign_actions(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    command: &crate::campaigns::CampaignActionsCommand,
) -> Result<Outcome, CoreError> {
    use crate::campaigns::{CampaignAction, CampaignActionsOutcome};
    let merchant = context.merchant;
    let member_id = &command.member_id;
    begin_member_write(connection, script, context, member_id).await?;
    let effect = format!("campaign:{}:{}", command.campaign_id, member_id);
    let claimed = script
        .fetch_after(
            connection,
            "INSERT INTO event_effects (merchant_id, event_id, effect, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, event_id, effect) DO NOTHING \
             RETURNING event_id",
            vec![
                (&merchant.id).into(),
                (&command.cause).into(),
                (&effect).into(),
                context.now.into(),
            ],
        )
        .await?;
    if claimed.is_empty() {
        let outcome = CampaignActionsOutcome {
            first_time: false,
            applied: 0,
            dropped: Vec::new(),
        };
        return Ok(Outcome::ok(
            serde_json::to_string(&outcome).expect("outcomes serialize"),
        ));
    }
    let mut applied = 0_i64;
    let mut dropped: Vec<String> = (0..command.refused)
        .map(|_| "refused: malformed or too many actions".to_string())
        .collect();
    let mut coupons_issued = 0_i64;
    for (index, action) in command.actions.iter().enumerate() {
        // The member's cap first: only this member's lane touches the row, so it can be
        // given back if the campaign's budget then refuses.
        let counted = script
            .fetch_after(
                connection,
                "INSERT INTO campaign_members (merchant_id, campaign_id, member_id, actions) \
                 SELECT $1, $2, $3, 1 FROM campaigns c WHERE c.merchant_id = $1 AND c.id = $2 \
                 AND (c.per_member_cap IS NULL OR c.per_member_cap >= 1) \
                 ON CONFLICT (merchant_id, campaign_id, member_id) DO UPDATE \
                 SET actions = campaign_members.actions + 1 \
                 WHERE campaign_members.actions < (SELECT COALESCE(c.per_member_cap, 9223372036854775807) \
                   FROM campaigns c WHERE c.merchant_id = $1 AND c.id = $2) \
                 RETURNING actions",
                vec![
                    (&merchant.id).into(),
                    (&command.campaign_id).into(),
                    member_id.into(),
                ],
            )
            .await?;
        if counted.is_empty() {
            dropped.push(format!("action {index}: the member's cap is reached"));
            continue;
        }
        let budget_ok = match action {
            CampaignAction::AwardPoints { points, .. } => !script
                .fetch_after(
                    connection,
                    "UPDATE campaigns SET points_granted = points_granted + $3 \
                     WHERE merchant_id = $1 AND id = $2 \
                     AND (budget_points IS NULL OR points_granted + $3 <= budget_points) RETURNING id",
                    vec![
                        (&merchant.id).into(),
                        (&command.campaign_id).into(),
                        (*points).into(),
                    ],
                )
                .await?
                .is_empty(),
            CampaignAction::IssueCoupon { .. } => !script
                .fetch_after(
                    connection,
                    "UPDATE campaigns SET coupons_issued = coupons_issued + 1 \
                     WHERE merchant_id = $1 AND id = $2 \
                     AND (budget_coupons IS NULL OR coupons_issued + 1 <= budget_coupons) RETURNING id",
                    vec![(&merchant.id).into(), (&command.campaign_id).into()],
                )
                .await?
                .is_empty(),
            _ => true,
        };
        let template = match action {
            CampaignAction::IssueCoupon { template_code } if budget_ok => {
                script.flush(connection).await?;
                crate::coupons::template_by_code(connection, &merchant.id, template_code).await?
            }
            _ => None,
        };
        let refusal = match action {
            _ if !budget_ok => Some("the campaign's budget is spent"),
            CampaignAction::IssueCoupon { .. } if template.is_none() => {
                Some("no coupon template with that code")
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            dropped.push(format!("action {index}: {refusal}"));
            // Give back what this action took of the cap (and of the coupon budget).
            script.push(
                "UPDATE campaign_members SET actions = actions - 1 \
                 WHERE merchant_id = $1 AND campaign_id = $2 AND member_id = $3",
                vec![
                    (&merchant.id).into(),
                    (&command.campaign_id).into(),
                    member_id.into(),
                ],
            );
            if budget_ok {
                script.push(
                    "UPDATE campaigns SET coupons_issued = coupons_issued - 1 \
                     WHERE merchant_id = $1 AND id = $2",
                    vec![(&merchant.id).into(), (&command.campaign_id).into()],
                );
            }
            continue;
        }
        match action {
            CampaignAction::AwardPoints { points, reason } => {
                let points_account = member_account_id(member_id, "points");
                let mut transaction = context.transaction("campaign.award", member_id);
                transaction.idempotency_key = None;
                transaction.reference = Some(command.campaign_id.clone());
                transaction.reason = Some(reason.clone());
                transaction.provenance = Some(
                    serde_json::json!({
                        "campaign_id": command.campaign_id,
                        "cause": command.cause,
                        "plugin": command.provenance,
                    })
                    .to_string(),
                );
                transaction.postings = vec![
                    Posting::merchant("points_issued", POINTS, -points),
                    Posting::member(points_account.clone(), POINTS, *points),
                ];
                let (transaction_id, balances) =
                    record(connection, script, &merchant.id, context.now, transaction).await?;
                let balance_after = balances.get(&points_account).copied().unwrap_or(0);
                let expires_at = expiry_after(context.now, merchant.settings.points_expiry_days);
                insert_lot(
                    script,
                    &merchant.id,
                    member_id,
                    &transaction_id,
                    false,
                    *points,
                    lot_share_of_credit(*points, balance_after),
                    context.now,
                    expires_at,
                    context.now,
                );
            }
            CampaignAction::IssueCoupon { .. } => {
                let (template_id, valid_days) = template.clone().expect("checked above");
                crate::coupons::queue_issue(
                    script,
                    &merchant.id,
                    &crate::coupons::Issue {
                        template_id,
                        valid_days,
                        member_id: member_id.clone(),
                        source: "campaign",
                        campaign_id: Some(command.campaign_id.clone()),
                        issue_key: Some(format!("{}:{effect}:{index}", command.cause)),
                    },
                    context.now,
                );
                coupons_issued += 1;
            }
            CampaignAction::TagMember { tag } => script.push(
                "INSERT INTO member_tags (merchant_id, member_id, tag, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, member_id, tag) DO NOTHING",
                vec![
                    (&merchant.id).into(),
                    member_id.into(),
                    tag.into(),
                    context.now.into(),
                ],
            ),
            CampaignAction::SendMessage {
                channel,
                template,
                variables,
            } => {
                let variables: serde_json::Map<String, serde_json::Value> = variables
                    .iter()
                    .map(|(name, value)| (name.clone(), serde_json::Value::from(value.clone())))
                    .collect();
                queue_event(
                    script,
                    &merchant.id,
                    NewEvent::member(
                        crate::events::MESSAGE_REQUESTED,
                        member_id,
                        serde_json::json!({
                            "member_id": member_id,
                            "campaign_id": command.campaign_id,
                            "channel": channel,
                            "template": template,
                            "variables": variables,
                        }),
                    ),
                    context.now,
                );
            }
        }
        applied += 1;
    }
    debug_assert!(
        coupons_issued <= applied,
        "every issued coupon is an applied action"
    );
    script.push(
        "UPDATE campaigns SET actions_applied = actions_applied + $3, \
         actions_dropped = actions_dropped + $4 WHERE merchant_id = $1 AND id = $2",
        vec![
            (&merchant.id).into(),
            (&command.campaign_id).into(),
            applied.into(),
            i64::try_from(dropped.len()).expect("few actions").into(),
        ],
    );
    let outcome = CampaignActionsOutcome {
        first_time: true,
        applied,
        dropped,
    };
    Ok(Outcome::ok(
        serde_json::to_string(&outcome).expect("outcomes serialize"),
    ))
}

/// What a gift redemption answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GiftRedemptionReceipt {
    pub id: String,
    pub gift_id: String,
    pub gift_name: String,
    pub quantity: i64,
    pub points: i64,
    /// Units left after this redemption.
    pub stock_left: i64,
    pub transaction_id: String,
    pub balances: Balances,
}

async fn redeem_gift(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    gift_id: &str,
    quantity: i64,
    store_id: &str,
) -> Result<Outcome, CoreError> {
    let merchant_id = &context.merchant.id;
    begin_member_write(connection, script, context, member_id).await?;
    // The conditional decrement is the stock's guard: concurrent redemptions queue on the
    // gift's row and none takes what is not there.
    let rows = script
        .fetch_after(
            connection,
            "UPDATE gifts SET stock = stock - $3 WHERE merchant_id = $1 AND id = $2 \
             AND stock >= $3 RETURNING name, points_cost, stock",
            vec![merchant_id.into(), gift_id.into(), quantity.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        let stock: Option<i64> =
            session::query_scalar("SELECT stock FROM gifts WHERE merchant_id = $1 AND id = $2")
                .bind(merchant_id)
                .bind(gift_id)
                .fetch_optional(&mut *connection)
                .await?;
        return Err(match stock {
            None => CoreError::field("gift_id", "no such gift"),
            Some(stock) => CoreError::Unprocessable(format!(
                "only {stock} left in stock, {quantity} requested"
            )),
        });
    };
    let name: String = row.try_get("name")?;
    let points_cost: i64 = row.try_get("points_cost")?;
    let stock_left: i64 = row.try_get("stock")?;
    debug_assert!(stock_left >= 0, "the guard keeps stock from going negative");
    let points = points_cost * quantity;
    let taken = take_from_active_lots(connection, script, merchant_id, member_id, points).await?;
    if taken < points {
        return Err(CoreError::Unprocessable(format!(
            "the member has {taken} points available, the gift needs {points}"
        )));
    }
    let redemption_id = new_id("gfr");
    let mut transaction = context.transaction("gift.redemption", member_id);
    transaction.reference = Some(redemption_id.clone());
    transaction.reason = Some(format!("{quantity} × {name}"));
    transaction.postings = vec![
        Posting::member(member_account_id(member_id, "points"), POINTS, -points),
        Posting::merchant("points_redeemed", POINTS, points),
    ];
    let (transaction_id, _, balances_after) = record_and_read(
        connection,
        script,
        merchant_id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    script.push(
        "INSERT INTO gift_redemptions (merchant_id, id, gift_id, member_id, store_id, quantity, \
         points, transaction_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            merchant_id.into(),
            (&redemption_id).into(),
            gift_id.into(),
            member_id.into(),
            store_id.into(),
            quantity.into(),
            points.into(),
            (&transaction_id).into(),
            context.now.into(),
        ],
    );
    Ok(created(&GiftRedemptionReceipt {
        id: redemption_id,
        gift_id: gift_id.to_string(),
        gift_name: name,
        quantity,
        points,
        stock_left,
        transaction_id,
        balances: context
            .balances_from(connection, balances_after, member_id, &[])
            .await?,
    }))
}

async fn adjust(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    points: i64,
    reason: &str,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    begin_member_write(connection, script, context, member_id).await?;
    let points_account = member_account_id(member_id, "points");
    let mut transaction = context.transaction("points.adjustment", member_id);
    transaction.reason = Some(reason.trim().to_string());
    transaction.postings = vec![
        Posting::member(points_account.clone(), POINTS, points),
        Posting::merchant("points_adjusted", POINTS, -points),
    ];
    transaction.negative_allowed = vec![points_account.clone()];
    if points < 0 {
        let wanted = -points;
        let taken =
            take_from_active_lots(connection, script, &merchant.id, member_id, wanted).await?;
        if taken < wanted && !merchant.settings.allow_negative_points {
            return Err(CoreError::Unprocessable(format!(
                "the member has {taken} points available; the merchant does not allow negative points"
            )));
        }
    }
    let (transaction_id, new_balances, balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    let mut queued_lots = Vec::new();
    if points > 0 {
        let balance_after = new_balances.get(&points_account).copied().unwrap_or(0);
        let remaining = lot_share_of_credit(points, balance_after);
        insert_lot(
            script,
            &merchant.id,
            member_id,
            &transaction_id,
            false,
            points,
            remaining,
            context.now,
            expiry_after(context.now, merchant.settings.points_expiry_days),
            context.now,
        );
        queued_lots.push((
            remaining,
            expiry_after(context.now, merchant.settings.points_expiry_days),
        ));
    }
    Ok(created(&PointsReceipt {
        transaction_id,
        points,
        reason: reason.trim().to_string(),
        balances: context
            .balances_from(connection, balances_after, member_id, &queued_lots)
            .await?,
    }))
}

async fn top_up(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    store_id: &str,
    amount: i64,
    method: PaymentMethod,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    begin_member_write(connection, script, context, member_id).await?;
    let bonus = merchant.settings.top_up_bonus(amount);
    let currency = &merchant.currency;
    let mut transaction = context.transaction("stored_value.top_up", member_id);
    transaction.reference = Some(store_id.to_string());
    transaction.reason = Some(format!("top-up by {}", method.as_str()));
    transaction.postings = vec![
        Posting::merchant("stored_value_paid_in", currency, -amount),
        Posting::member(
            member_account_id(member_id, "stored_value_principal"),
            currency,
            amount,
        ),
        Posting::merchant("stored_value_bonus_issued", currency, -bonus),
        Posting::member(
            member_account_id(member_id, "stored_value_bonus"),
            currency,
            bonus,
        ),
    ];
    let (transaction_id, _, balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    Ok(created(&TopUpReceipt {
        transaction_id,
        amount: context.money(amount),
        bonus: context.money(bonus),
        balances: context
            .balances_from(connection, balances_after, member_id, &[])
            .await?,
    }))
}

async fn sell_count_card(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    store_id: &str,
    package: &PackageTerms,
    method: PaymentMethod,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    begin_member_write(connection, script, context, member_id).await?;
    let card_id = new_id("card");
    let account_id = count_card_account_id(&card_id);
    // A new card is listed with the member's balances: the next read must see it.
    script.remembered().forget(&merchant.id, member_id);
    let expires_at = context.now + package.valid_days * MICROS_PER_DAY;
    session::query(
        "INSERT INTO accounts (merchant_id, id, member_id, asset, kind, balance, version, created_at) \
         VALUES ($1, $2, $3, $4, 'count_card', 0, 0, $5)",
    )
    .bind(&merchant.id)
    .bind(&account_id)
    .bind(member_id)
    .bind(USES)
    .bind(context.now)
    .execute(&mut *connection)
    .await?;
    session::query(
        "INSERT INTO count_cards (merchant_id, id, member_id, package_id, account_id, name, uses, \
         expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&merchant.id)
    .bind(&card_id)
    .bind(member_id)
    .bind(&package.id)
    .bind(&account_id)
    .bind(&package.name)
    .bind(package.uses)
    .bind(expires_at)
    .bind(context.now)
    .execute(&mut *connection)
    .await?;
    let mut transaction = context.transaction("count_card.purchase", member_id);
    transaction.reference = Some(card_id.clone());
    transaction.reason = Some(format!(
        "{} by {} at store {store_id}",
        package.name,
        method.as_str()
    ));
    transaction.postings = vec![
        Posting::merchant("count_card_uses_issued", USES, -package.uses),
        Posting::member(account_id, USES, package.uses),
    ];
    let mut stored_value_paid = None;
    if method == PaymentMethod::StoredValue && package.price > 0 {
        let (principal, bonus) =
            stored_value_draw(connection, script, context, member_id, package.price).await?;
        transaction
            .postings
            .extend(stored_value_postings(context, member_id, principal, bonus));
        stored_value_paid = Some(StoredValueSplit {
            principal: context.money(principal),
            bonus: context.money(bonus),
        });
    }
    let (transaction_id, _, balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    Ok(created(&CountCardReceipt {
        transaction_id,
        card: CountCardView {
            id: card_id,
            package_id: package.id.clone(),
            name: package.name.clone(),
            uses: package.uses,
            remaining: package.uses,
            expires_at: from_unix_micros(expires_at),
        },
        stored_value_paid,
        balances: context
            .balances_from(connection, balances_after, member_id, &[])
            .await?,
    }))
}

async fn consume(
    connection: &mut Session<'_>,
    script: &mut Script,
    context: &Context<'_>,
    member_id: &str,
    card_id: &str,
    store_id: &str,
    uses: i64,
) -> Result<Outcome, CoreError> {
    let merchant = context.merchant;
    begin_member_write(connection, script, context, member_id).await?;
    let card = session::query(
        "SELECT c.account_id, c.expires_at, a.balance FROM count_cards c \
         JOIN accounts a ON a.merchant_id = c.merchant_id AND a.id = c.account_id \
         WHERE c.merchant_id = $1 AND c.id = $2 AND c.member_id = $3",
    )
    .bind(&merchant.id)
    .bind(card_id)
    .bind(member_id)
    .fetch_optional(&mut *connection)
    .await?
    .ok_or(CoreError::NotFound("count card"))?;
    let account_id: String = card.try_get("account_id")?;
    let expires_at: i64 = card.try_get("expires_at")?;
    let balance: i64 = card.try_get("balance")?;
    if expires_at <= context.now {
        return Err(CoreError::Unprocessable(format!(
            "the count card expired at {}",
            from_unix_micros(expires_at)
        )));
    }
    if balance < uses {
        return Err(CoreError::Unprocessable(format!(
            "the count card has {balance} uses left, {uses} requested"
        )));
    }
    let mut transaction = context.transaction("count_card.consumption", member_id);
    transaction.reference = Some(card_id.to_string());
    transaction.reason = Some(format!("{uses} use(s) at store {store_id}"));
    transaction.postings = vec![
        Posting::member(account_id, USES, -uses),
        Posting::merchant("count_card_uses_consumed", USES, uses),
    ];
    let (transaction_id, _, balances_after) = record_and_read(
        connection,
        script,
        &merchant.id,
        context.now,
        transaction,
        member_id,
    )
    .await?;
    Ok(created(&ConsumptionReceipt {
        transaction_id,
        card_id: card_id.to_string(),
        uses,
        remaining: balance - uses,
        balances: context
            .balances_from(connection, balances_after, member_id, &[])
            .await?,
    }))
}

pub use ledger::LedgerEntry;

/// The member a purchase belongs to (the writer routes refunds by it).
/// The member and the store of a purchase.
pub async fn purchase_member(
    pool: &sqlx::AnyPool,
    merchant_id: &str,
    purchase_id: &str,
) -> Result<(String, String), CoreError> {
    sqlx::query_as("SELECT member_id, store_id FROM purchases WHERE merchant_id = $1 AND id = $2")
        .bind(merchant_id)
        .bind(purchase_id)
        .fetch_optional(pool)
        .await?
        .ok_or(CoreError::NotFound("purchase"))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurchaseDetail {
    pub id: String,
    pub member_id: String,
    pub store_id: String,
    pub external_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: time::OffsetDateTime,
    pub total: String,
    pub refunded: String,
    pub points_awarded: i64,
    pub points_reversed: i64,
    pub items: Vec<PurchaseItemView>,
    pub payments: Vec<PaymentView>,
    pub refunds: Vec<RefundSummary>,
    pub transaction_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurchaseItemView {
    pub sku: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price: String,
    pub total: String,
    pub refunded_quantity: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    pub method: PaymentMethod,
    pub amount: String,
    pub refunded: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundSummary {
    pub id: String,
    pub amount: String,
    pub points_reversed: i64,
    pub points_not_reversed: i64,
    pub transaction_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: time::OffsetDateTime,
}

pub async fn get_purchase(
    pool: &sqlx::AnyPool,
    merchant: &Merchant,
    purchase_id: &str,
) -> Result<PurchaseDetail, CoreError> {
    let money = |minor: i64| format_money(minor, merchant.currency_exponent);
    let row = sqlx::query(
        "SELECT id, member_id, store_id, external_id, occurred_at, total, refunded, points_awarded, \
         points_reversed, transaction_id, payments FROM purchases WHERE merchant_id = $1 AND id = $2",
    )
    .bind(&merchant.id)
    .bind(purchase_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("purchase"))?;
    let payments_text: String = row.try_get("payments")?;
    let payments: PaymentRecord = serde_json::from_str(&payments_text)
        .map_err(|error| CoreError::Internal(format!("stored payments unreadable: {error}")))?;
    let items = sqlx::query(
        "SELECT sku, name, category, quantity, unit_price, total, refunded_quantity FROM purchase_items \
         WHERE merchant_id = $1 AND purchase_id = $2 ORDER BY line",
    )
    .bind(&merchant.id)
    .bind(purchase_id)
    .fetch_all(pool)
    .await?;
    let refunds = sqlx::query(
        "SELECT id, amount, points_reversed, points_shortfall, transaction_id, created_at FROM refunds \
         WHERE merchant_id = $1 AND purchase_id = $2 ORDER BY id",
    )
    .bind(&merchant.id)
    .bind(purchase_id)
    .fetch_all(pool)
    .await?;
    let mut item_views = Vec::with_capacity(items.len());
    for item in &items {
        item_views.push(PurchaseItemView {
            sku: item.try_get("sku")?,
            name: item.try_get("name")?,
            category: item.try_get("category")?,
            quantity: item.try_get("quantity")?,
            unit_price: money(item.try_get("unit_price")?),
            total: money(item.try_get("total")?),
            refunded_quantity: item.try_get("refunded_quantity")?,
        });
    }
    let mut refund_views = Vec::with_capacity(refunds.len());
    for refund in &refunds {
        refund_views.push(RefundSummary {
            id: refund.try_get("id")?,
            amount: money(refund.try_get("amount")?),
            points_reversed: refund.try_get("points_reversed")?,
            points_not_reversed: refund.try_get("points_shortfall")?,
            transaction_id: refund.try_get("transaction_id")?,
            created_at: from_unix_micros(refund.try_get("created_at")?),
        });
    }
    Ok(PurchaseDetail {
        id: row.try_get("id")?,
        member_id: row.try_get("member_id")?,
        store_id: row.try_get("store_id")?,
        external_id: row.try_get("external_id")?,
        occurred_at: from_unix_micros(row.try_get("occurred_at")?),
        total: money(row.try_get("total")?),
        refunded: money(row.try_get("refunded")?),
        points_awarded: row.try_get("points_awarded")?,
        points_reversed: row.try_get("points_reversed")?,
        items: item_views,
        payments: payments
            .methods
            .iter()
            .map(|(method, amount)| PaymentView {
                method: *method,
                amount: money(*amount),
                refunded: money(payments.refunded_methods.get(method).copied().unwrap_or(0)),
            })
            .collect(),
        refunds: refund_views,
        transaction_id: row.try_get("transaction_id")?,
    })
}

/// A recorded purchase as plugins see it (campaign triggers are asked after the write).
#[derive(Debug, Clone)]
pub struct RecordedPurchase {
    pub id: String,
    pub store_id: String,
    pub occurred_at: i64,
    pub total: i64,
    pub lines: Vec<PurchaseLine>,
}

pub async fn recorded_purchase(
    pool: &sqlx::AnyPool,
    merchant_id: &str,
    purchase_id: &str,
) -> Result<RecordedPurchase, CoreError> {
    let (store_id, occurred_at, total): (String, i64, i64) = sqlx::query_as(
        "SELECT store_id, occurred_at, total FROM purchases WHERE merchant_id = $1 AND id = $2",
    )
    .bind(merchant_id)
    .bind(purchase_id)
    .fetch_optional(pool)
    .await?
    .ok_or(CoreError::NotFound("purchase"))?;
    let rows = sqlx::query(
        "SELECT sku, name, category, quantity, unit_price, total FROM purchase_items \
         WHERE merchant_id = $1 AND purchase_id = $2 ORDER BY line",
    )
    .bind(merchant_id)
    .bind(purchase_id)
    .fetch_all(pool)
    .await?;
    let lines = rows
        .iter()
        .map(|row| {
            Ok(PurchaseLine {
                sku: row.try_get("sku")?,
                name: row.try_get("name")?,
                category: row.try_get("category")?,
                quantity: row.try_get("quantity")?,
                unit_price: row.try_get("unit_price")?,
                total: row.try_get("total")?,
            })
        })
        .collect::<Result<Vec<_>, CoreError>>()?;
    Ok(RecordedPurchase {
        id: purchase_id.to_string(),
        store_id,
        occurred_at,
        total,
        lines,
    })
}
