//! Property test: random sequences of value-moving operations over HTTP against a simple
//! in-memory model of the ledger's documented rules, on SQLite and PostgreSQL.
//!
//! The model replays the host's rules exactly: the base rate floored once on the total not
//! paid with points, largest-remainder splits (stored value principal/bonus, refunds over
//! payment methods, points reversed pro rata), point lots consumed first-to-expire first,
//! pending lots that activate after the return window, expiry into breakage, debts repaid
//! by later credits, top-up bonus rules, count cards. Every response is checked against it
//! (status, the receipt's figures and balances); a request the model expects to be refused
//! must get a 4xx and change nothing. After every sequence the balances of every member match
//! the model and `verify` passes.
//!
//! One server per backend serves all cases; each case gets its own merchant. Cases:
//! `MODEL_CASES` (default 20).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use loyalty_tests::{json, Backend, Merchant, Response, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// Model time: whole days of the host clock times this, plus a sequence number per request.
/// Real time inside a case is far below a day, so this orders events as the host does.
const DAY: i64 = 1_000_000;
const MEMBERS: usize = 2;
const OPS_MAX: usize = 25;

// ---------------------------------------------------------------------------------------
// Generated input

#[derive(Debug, Clone)]
struct CaseSettings {
    /// (text, numerator, denominator) of points_per_currency_unit.
    rate: (&'static str, i64, i64),
    /// Minor units per point (currency_per_point 0.01 or 0.02).
    cents_per_point: i64,
    pending_days: i64,
    expiry_days: Option<i64>,
    allow_negative: bool,
    cap: Option<i64>,
}

const RATES: &[(&str, i64, i64)] = &[("1", 1, 1), ("1.5", 3, 2), ("0.3", 3, 10), ("2", 2, 1)];
/// (min_top_up, bonus) in minor units: 充100送20, 充500送150, and an odd one.
const BONUS_RULES: &[(i64, i64)] = &[(10_000, 2_000), (50_000, 15_000), (3_333, 333)];
/// (uses, price, valid_days) of the two count-card packages.
const PACKAGES: &[(i64, i64, i64)] = &[(5, 3_000, 5), (10, 0, 12)];
const SKUS: &[&str] = &["TEA", "CAKE", "BUN"];

fn settings_strategy() -> impl Strategy<Value = CaseSettings> {
    (
        0..RATES.len(),
        prop_oneof![Just(1_i64), Just(2_i64)],
        prop_oneof![Just(0_i64), Just(2_i64)],
        prop_oneof![Just(Some(10_i64)), Just(Some(3_i64)), Just(None)],
        any::<bool>(),
        prop_oneof![3 => Just(None), 1 => Just(Some(40_i64))],
    )
        .prop_map(
            |(rate, cents_per_point, pending_days, expiry_days, allow_negative, cap)| {
                CaseSettings {
                    rate: RATES[rate],
                    cents_per_point,
                    pending_days,
                    expiry_days,
                    allow_negative,
                    cap,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum RefundKind {
    Rest,
    /// Per mille of what is left to refund (above 1000: more than is left).
    Amount(u16),
    Items {
        line: usize,
        quantity: i64,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Purchase {
        member: usize,
        /// (unit price, quantity, sku index)
        items: Vec<(i64, i64, usize)>,
        /// Bits: cash, card, stored value, points.
        methods: u8,
        weights: [u16; 4],
        /// Keep stored value and points within the balances (else they may overdraw).
        fit: bool,
    },
    /// A purchase paid partly with points that earns exactly the points it spends.
    EchoPurchase {
        member: usize,
        points: i64,
    },
    Refund {
        purchase: usize,
        kind: RefundKind,
    },
    Redeem {
        member: usize,
        per_mille: u16,
    },
    Adjust {
        member: usize,
        points: i64,
    },
    TopUp {
        member: usize,
        amount: i64,
    },
    SellCard {
        member: usize,
        package: usize,
        method: usize,
    },
    Consume {
        member: usize,
        card: usize,
        uses: i64,
        /// Ask on the other member's path (a card that is not theirs: 404).
        wrong_member: bool,
    },
    Advance {
        days: i64,
        lifecycle: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS;
    let price = prop_oneof![1 => Just(0_i64), 12 => 1_i64..20_000];
    prop_oneof![
        8 => (
            member.clone(),
            prop::collection::vec((price, 1_i64..=3, 0..SKUS.len()), 1..=4),
            1_u8..16,
            prop::array::uniform4(0_u16..1000),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(member, items, methods, weights, fit)| Op::Purchase {
                member,
                items,
                methods,
                weights,
                fit
            }),
        1 => (member.clone(), 1_i64..40).prop_map(|(member, points)| Op::EchoPurchase { member, points }),
        4 => (
            any::<usize>(),
            prop_oneof![
                1 => Just(RefundKind::Rest),
                2 => (1_u16..=1100).prop_map(RefundKind::Amount),
                1 => (0_usize..4, 1_i64..=3).prop_map(|(line, quantity)| RefundKind::Items { line, quantity }),
            ],
        )
            .prop_map(|(purchase, kind)| Op::Refund { purchase, kind }),
        2 => (member.clone(), 1_u16..=1200).prop_map(|(member, per_mille)| Op::Redeem { member, per_mille }),
        2 => (member.clone(), prop_oneof![-200_i64..0, 1_i64..200])
            .prop_map(|(member, points)| Op::Adjust { member, points }),
        3 => (
            member.clone(),
            prop_oneof![
                Just(10_000_i64),
                Just(9_999_i64),
                Just(50_000_i64),
                Just(3_333_i64),
                1_i64..30_000
            ],
        )
            .prop_map(|(member, amount)| Op::TopUp { member, amount }),
        2 => (member.clone(), 0..PACKAGES.len(), 0_usize..3)
            .prop_map(|(member, package, method)| Op::SellCard { member, package, method }),
        2 => (member.clone(), any::<usize>(), 1_i64..=4, prop::bool::weighted(0.1)).prop_map(
            |(member, card, uses, wrong_member)| Op::Consume { member, card, uses, wrong_member }
        ),
        2 => (1_i64..=4, prop::bool::weighted(0.8))
            .prop_map(|(days, lifecycle)| Op::Advance { days, lifecycle }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    settings: CaseSettings,
    /// (operation, send it twice with the same Idempotency-Key)
    ops: Vec<(Op, bool)>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        settings_strategy(),
        prop::collection::vec((op_strategy(), prop::bool::weighted(0.1)), 1..=OPS_MAX),
    )
        .prop_map(|(settings, ops)| Case { settings, ops })
}

// ---------------------------------------------------------------------------------------
// The model

const CASH: usize = 0;
const CARD: usize = 1;
const STORED_VALUE: usize = 2;
const POINTS: usize = 3;
const METHOD_NAMES: [&str; 4] = ["cash", "card", "stored_value", "points"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LotState {
    Pending,
    Active,
    Closed,
}

#[derive(Debug, Clone)]
struct Lot {
    /// Creation order (the host's lot ids are time-ordered).
    seq: i64,
    state: LotState,
    remaining: i64,
    activates: i64,
    expires: Option<i64>,
    /// Points that expired from this lot into breakage.
    expired: i64,
}

#[derive(Debug, Clone)]
struct Card {
    id: String,
    seq: i64,
    remaining: i64,
    expires: i64,
}

#[derive(Debug, Clone, Default)]
struct Member {
    id: String,
    points: i64,
    pending: i64,
    principal: i64,
    bonus: i64,
    lots: Vec<Lot>,
    cards: Vec<Card>,
}

#[derive(Debug, Clone)]
struct Line {
    sku: String,
    quantity: i64,
    unit_price: i64,
    refunded_quantity: i64,
}

#[derive(Debug, Clone)]
struct Purchase {
    id: String,
    member: usize,
    total: i64,
    refunded: i64,
    awarded: i64,
    reversed: i64,
    lot: Option<usize>,
    methods: BTreeMap<usize, i64>,
    refunded_methods: BTreeMap<usize, i64>,
    sv_principal: i64,
    sv_bonus: i64,
    refunded_principal: i64,
    refunded_bonus: i64,
    points_paid: i64,
    points_paid_expires: Option<i64>,
    refunded_points: i64,
    /// Expired points of the purchase's lot already excused from reversals.
    expired_forgiven: i64,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Model {
    settings: CaseSettings,
    members: Vec<Member>,
    purchases: Vec<Purchase>,
}

/// The host's rounding rule: floor every share, then one unit each to the largest
/// remainders (ties to the earlier part).
fn split(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|weight| i128::from(*weight)).sum();
    if sum == 0 {
        assert_eq!(total, 0, "model: split of {total} over zero weights");
        return vec![0; weights.len()];
    }
    let mut parts = Vec::new();
    let mut remainders = Vec::new();
    for (index, weight) in weights.iter().enumerate() {
        let numerator = i128::from(total) * i128::from(*weight);
        parts.push(i64::try_from(numerator / sum).unwrap());
        remainders.push((numerator % sum, index));
    }
    let mut left = total - parts.iter().sum::<i64>();
    remainders.sort_by_key(|remainder| std::cmp::Reverse(remainder.0));
    for (remainder, index) in remainders {
        if left == 0 {
            break;
        }
        if remainder > 0 {
            parts[index] += 1;
            left -= 1;
        }
    }
    assert_eq!(left, 0);
    parts
}

fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
}

/// A refusal the model expects: the status.
type Refused = u16;

#[derive(Debug, Clone, Default)]
struct Expected {
    fields: Vec<(&'static str, Value)>,
}

impl Expected {
    fn with(mut self, pointer: &'static str, value: Value) -> Self {
        self.fields.push((pointer, value));
        self
    }
}

impl Member {
    fn insert_lot(
        &mut self,
        seq: i64,
        state: LotState,
        remaining: i64,
        activates: i64,
        expires: Option<i64>,
    ) -> usize {
        let state = if state == LotState::Active && remaining == 0 {
            LotState::Closed
        } else {
            state
        };
        self.lots.push(Lot {
            seq,
            state,
            remaining,
            activates,
            expires,
            expired: 0,
        });
        self.lots.len() - 1
    }

    /// Activates due pending lots and expires due active lots (the host's `settle_due_lots`).
    fn settle(&mut self, now: i64) -> (i64, i64) {
        let mut due: Vec<usize> = (0..self.lots.len())
            .filter(|index| {
                let lot = &self.lots[*index];
                (lot.state == LotState::Pending && lot.activates <= now)
                    || (lot.state == LotState::Active && lot.expires.is_some_and(|at| at <= now))
            })
            .collect();
        due.sort_by_key(|index| (self.lots[*index].activates, self.lots[*index].seq));
        let (mut activated, mut expired) = (0, 0);
        for index in due {
            if self.lots[index].state == LotState::Pending {
                let remaining = self.lots[index].remaining;
                self.pending -= remaining;
                self.points += remaining;
                activated += remaining;
                let share = remaining.min(self.points.max(0));
                let lot = &mut self.lots[index];
                lot.remaining = share;
                lot.state = if share == 0 {
                    LotState::Closed
                } else {
                    LotState::Active
                };
            }
            let lot = &mut self.lots[index];
            if lot.state == LotState::Active && lot.expires.is_some_and(|at| at <= now) {
                self.points -= lot.remaining;
                expired += lot.remaining;
                lot.expired += lot.remaining;
                lot.remaining = 0;
                lot.state = LotState::Closed;
            }
        }
        (activated, expired)
    }

    /// Takes up to `points` from active lots, first to expire first; returns what it took.
    fn take_active(&mut self, points: i64) -> i64 {
        let mut order: Vec<usize> = (0..self.lots.len())
            .filter(|index| {
                self.lots[*index].state == LotState::Active && self.lots[*index].remaining > 0
            })
            .collect();
        order.sort_by_key(|index| {
            let lot = &self.lots[*index];
            (
                lot.expires.is_none(),
                lot.expires.unwrap_or(0),
                lot.activates,
                lot.seq,
            )
        });
        let mut taken = 0;
        for index in order {
            if taken == points {
                break;
            }
            let lot = &mut self.lots[index];
            let take = lot.remaining.min(points - taken);
            lot.remaining -= take;
            if lot.remaining == 0 {
                lot.state = LotState::Closed;
            }
            taken += take;
        }
        taken
    }

    fn latest_active_expiry(&self) -> Option<i64> {
        self.lots
            .iter()
            .filter(|lot| lot.state == LotState::Active && lot.remaining > 0)
            .filter_map(|lot| lot.expires)
            .max()
    }

    /// The points expiring within a day of the earliest expiry, as the host reports them.
    fn expiring_next(&self) -> Option<i64> {
        let at = self
            .lots
            .iter()
            .filter(|lot| lot.state == LotState::Active && lot.remaining > 0)
            .filter_map(|lot| lot.expires)
            .min()?;
        Some(
            self.lots
                .iter()
                .filter(|lot| {
                    lot.state == LotState::Active
                        && lot.remaining > 0
                        && lot.expires.is_some_and(|expires| expires < at + DAY)
                })
                .map(|lot| lot.remaining)
                .sum(),
        )
    }

    fn draw_stored_value(&mut self, amount: i64) -> Result<(i64, i64), Refused> {
        if self.principal + self.bonus < amount {
            return Err(422);
        }
        let parts = split(amount, &[self.principal, self.bonus]);
        self.principal -= parts[0];
        self.bonus -= parts[1];
        Ok((parts[0], parts[1]))
    }

    /// Checks a `balances` object of the API against this member at `now`.
    fn check_balances(&self, balances: &Value, now: i64, context: &str) {
        assert_eq!(
            balances["points"]["available"],
            json!(self.points),
            "{context}: points available; {balances}"
        );
        assert_eq!(
            balances["points"]["pending"],
            json!(self.pending),
            "{context}: points pending; {balances}"
        );
        assert_eq!(
            balances["stored_value"]["principal"],
            json!(money(self.principal)),
            "{context}: principal; {balances}"
        );
        assert_eq!(
            balances["stored_value"]["bonus"],
            json!(money(self.bonus)),
            "{context}: bonus; {balances}"
        );
        assert_eq!(
            balances["stored_value"]["total"],
            json!(money(self.principal + self.bonus)),
            "{context}: stored value total; {balances}"
        );
        match self.expiring_next() {
            Some(points) => assert_eq!(
                balances["points"]["expiring_next"]["points"],
                json!(points),
                "{context}: expiring_next; {balances}"
            ),
            None => assert!(
                balances["points"]["expiring_next"].is_null(),
                "{context}: expiring_next; {balances}"
            ),
        }
        let mut cards: Vec<&Card> = self
            .cards
            .iter()
            .filter(|card| card.remaining > 0 && card.expires > now)
            .collect();
        cards.sort_by_key(|card| (card.expires, card.seq));
        let expected: Vec<(String, i64)> = cards
            .iter()
            .map(|card| (card.id.clone(), card.remaining))
            .collect();
        let actual: Vec<(String, i64)> = balances["count_cards"]
            .as_array()
            .unwrap_or_else(|| panic!("{context}: count_cards; {balances}"))
            .iter()
            .map(|card| {
                (
                    card["id"].as_str().unwrap().to_string(),
                    card["remaining"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(actual, expected, "{context}: count cards; {balances}");
    }
}

impl Model {
    fn member(&mut self, index: usize) -> &mut Member {
        &mut self.members[index]
    }

    fn award(&self, eligible: i64) -> i64 {
        let (_, numerator, denominator) = self.settings.rate;
        let points = eligible.max(0) * numerator / (denominator * 100);
        match self.settings.cap {
            Some(cap) => points.min(cap),
            None => points,
        }
    }

    fn expiry_after(&self, at: i64) -> Option<i64> {
        self.settings.expiry_days.map(|days| at + days * DAY)
    }

    fn top_up_bonus(amount: i64) -> i64 {
        BONUS_RULES
            .iter()
            .filter(|(min, _)| amount >= *min)
            .max_by_key(|(min, _)| *min)
            .map(|(_, bonus)| *bonus)
            .unwrap_or(0)
    }

    /// Applies a purchase; returns the purchase (without id) and the expected receipt.
    fn purchase(
        &mut self,
        member_index: usize,
        lines: Vec<Line>,
        payments: &BTreeMap<usize, i64>,
        now: i64,
    ) -> Result<(Purchase, Expected), Refused> {
        let total: i64 = lines
            .iter()
            .map(|line| line.quantity * line.unit_price)
            .sum();
        assert_eq!(
            payments.values().sum::<i64>(),
            total,
            "model: payments must add up"
        );
        let points_amount = payments.get(&POINTS).copied().unwrap_or(0);
        if points_amount % self.settings.cents_per_point != 0 {
            return Err(422);
        }
        let points_to_redeem = points_amount / self.settings.cents_per_point;
        let awarded = self.award(total - points_amount);
        let pending_days = self.settings.pending_days;
        let expiry_days = self.settings.expiry_days;
        let member = self.member(member_index);
        member.settle(now);
        let mut purchase = Purchase {
            id: String::new(),
            member: member_index,
            total,
            refunded: 0,
            awarded,
            reversed: 0,
            lot: None,
            methods: payments.clone(),
            refunded_methods: BTreeMap::new(),
            sv_principal: 0,
            sv_bonus: 0,
            refunded_principal: 0,
            refunded_bonus: 0,
            points_paid: 0,
            points_paid_expires: None,
            refunded_points: 0,
            expired_forgiven: 0,
            lines,
        };
        let mut expected = Expected::default()
            .with("/total", json!(money(total)))
            .with("/points_awarded", json!(awarded))
            .with("/points_redeemed", json!(points_to_redeem));
        match payments.get(&STORED_VALUE) {
            Some(amount) => {
                let (principal, bonus) = member.draw_stored_value(*amount)?;
                purchase.sv_principal = principal;
                purchase.sv_bonus = bonus;
                expected = expected
                    .with("/stored_value_paid/principal", json!(money(principal)))
                    .with("/stored_value_paid/bonus", json!(money(bonus)));
            }
            None => expected = expected.with("/stored_value_paid", Value::Null),
        }
        if points_to_redeem > 0 {
            purchase.points_paid_expires = member.latest_active_expiry();
            let taken = member.take_active(points_to_redeem);
            if taken < points_to_redeem {
                return Err(422);
            }
            member.points -= taken;
            purchase.points_paid = taken;
        }
        if awarded > 0 {
            let activates = now + pending_days * DAY;
            let expires = expiry_days.map(|days| activates + days * DAY);
            let seq = now;
            purchase.lot = Some(if pending_days > 0 {
                member.pending += awarded;
                member.insert_lot(seq, LotState::Pending, awarded, activates, expires)
            } else {
                member.points += awarded;
                let remaining = awarded.min(member.points.max(0));
                member.insert_lot(seq, LotState::Active, remaining, activates, expires)
            });
        }
        Ok((purchase, expected))
    }

    fn refund(
        &mut self,
        purchase_index: usize,
        kind: &RefundKind,
        now: i64,
    ) -> Result<Expected, Refused> {
        let allow_negative = self.settings.allow_negative;
        let expiry = self.expiry_after(now);
        let mut purchase = self.purchases[purchase_index].clone();
        let member = &mut self.members[purchase.member];
        member.settle(now);
        let refundable = purchase.total - purchase.refunded;
        let mut line_updates = Vec::new();
        let amount = match kind {
            RefundKind::Rest => refundable,
            RefundKind::Amount(per_mille) => (refundable * i64::from(*per_mille) / 1000).max(1),
            RefundKind::Items { line, quantity } => {
                let sku = purchase.lines[line % purchase.lines.len()].sku.clone();
                let mut open: Vec<i64> = purchase
                    .lines
                    .iter()
                    .map(|line| line.quantity - line.refunded_quantity)
                    .collect();
                let mut wanted = *quantity;
                let mut amount = 0;
                for (index, line) in purchase.lines.iter().enumerate() {
                    if wanted == 0 {
                        break;
                    }
                    if line.sku != sku || open[index] == 0 {
                        continue;
                    }
                    let take = wanted.min(open[index]);
                    open[index] -= take;
                    wanted -= take;
                    amount += take * line.unit_price;
                    line_updates.push((index, take));
                }
                if wanted > 0 {
                    return Err(422);
                }
                amount
            }
        };
        if amount <= 0 || amount > refundable {
            return Err(422);
        }
        let methods: Vec<usize> = purchase.methods.keys().copied().collect();
        let remaining: Vec<i64> = methods
            .iter()
            .map(|method| {
                purchase.methods[method]
                    - purchase.refunded_methods.get(method).copied().unwrap_or(0)
            })
            .collect();
        let parts = if remaining.iter().sum::<i64>() == 0 {
            vec![0; methods.len()]
        } else {
            split(amount, &remaining)
        };
        let mut returned = [0_i64; 3]; // cash, card, -
        let (mut returned_principal, mut returned_bonus, mut returned_points) = (0, 0, 0);
        for (method, part) in methods.iter().zip(&parts) {
            *purchase.refunded_methods.entry(*method).or_default() += part;
            match *method {
                CASH | CARD => returned[*method] = *part,
                STORED_VALUE => {
                    let shares = split(
                        *part,
                        &[
                            purchase.sv_principal - purchase.refunded_principal,
                            purchase.sv_bonus - purchase.refunded_bonus,
                        ],
                    );
                    purchase.refunded_principal += shares[0];
                    purchase.refunded_bonus += shares[1];
                    member.principal += shares[0];
                    member.bonus += shares[1];
                    returned_principal = shares[0];
                    returned_bonus = shares[1];
                }
                _ => {
                    let method_left =
                        purchase.methods[method] - (purchase.refunded_methods[method] - part);
                    let points_left = purchase.points_paid - purchase.refunded_points;
                    let points = split(points_left, &[*part, method_left - part])[0];
                    purchase.refunded_points += points;
                    returned_points = points;
                    member.points += points;
                }
            }
        }
        let reversal = split(
            purchase.awarded - purchase.reversed,
            &[amount, refundable - amount],
        )[0];
        let (mut taken_from_lot, mut taken_pending) = (0, 0);
        if reversal > 0 {
            if let Some(lot_index) = purchase.lot {
                let lot = &mut member.lots[lot_index];
                if lot.state != LotState::Closed && lot.remaining > 0 {
                    let take = lot.remaining.min(reversal);
                    let was_pending = lot.state == LotState::Pending;
                    lot.remaining -= take;
                    if lot.remaining == 0 {
                        lot.state = LotState::Closed;
                    }
                    if was_pending {
                        taken_pending = take;
                    } else {
                        taken_from_lot = take;
                    }
                }
            }
        }
        let mut rest = reversal - taken_from_lot - taken_pending;
        // Points of the purchase's lot that already expired are not taken again.
        let mut points_expired = 0;
        if rest > 0 {
            if let Some(lot_index) = purchase.lot {
                let expired = member.lots[lot_index].expired;
                points_expired = rest.min(expired - purchase.expired_forgiven).max(0);
                purchase.expired_forgiven += points_expired;
                rest -= points_expired;
            }
        }
        let taken_elsewhere = member.take_active(rest);
        let shortfall = rest - taken_elsewhere;
        let (debt, not_reversed) = if allow_negative {
            (shortfall, 0)
        } else {
            (0, shortfall)
        };
        let reversed_available = taken_from_lot + taken_elsewhere + debt;
        member.pending -= taken_pending;
        member.points -= reversed_available;
        if returned_points > 0 {
            let remaining = returned_points.min(member.points.max(0));
            let expires = purchase
                .points_paid_expires
                .filter(|at| *at > now)
                .or(expiry);
            member.insert_lot(now, LotState::Active, remaining, now, expires);
        }
        for (index, quantity) in line_updates {
            purchase.lines[index].refunded_quantity += quantity;
        }
        purchase.refunded += amount;
        purchase.reversed += reversal;
        let expected = Expected::default()
            .with("/purchase_id", json!(purchase.id))
            .with("/amount", json!(money(amount)))
            .with("/purchase_refunded_total", json!(money(purchase.refunded)))
            .with(
                "/points_reversed",
                json!(taken_pending + reversed_available),
            )
            .with("/points_debt", json!(debt))
            .with("/points_not_reversed", json!(not_reversed))
            .with("/points_expired", json!(points_expired))
            .with("/returned/cash", json!(money(returned[CASH])))
            .with("/returned/card", json!(money(returned[CARD])))
            .with(
                "/returned/stored_value/principal",
                json!(money(returned_principal)),
            )
            .with("/returned/stored_value/bonus", json!(money(returned_bonus)))
            .with("/returned/points", json!(returned_points));
        self.purchases[purchase_index] = purchase;
        Ok(expected)
    }

    fn redeem(&mut self, member_index: usize, points: i64, now: i64) -> Result<Expected, Refused> {
        let member = self.member(member_index);
        member.settle(now);
        if member.take_active(points) < points {
            return Err(422);
        }
        member.points -= points;
        Ok(Expected::default().with("/points", json!(points)))
    }

    fn adjust(&mut self, member_index: usize, points: i64, now: i64) -> Result<Expected, Refused> {
        let allow_negative = self.settings.allow_negative;
        let expires = self.expiry_after(now);
        let member = self.member(member_index);
        member.settle(now);
        if points < 0 && member.take_active(-points) < -points && !allow_negative {
            return Err(422);
        }
        member.points += points;
        if points > 0 {
            let remaining = points.min(member.points.max(0));
            member.insert_lot(now, LotState::Active, remaining, now, expires);
        }
        Ok(Expected::default().with("/points", json!(points)))
    }

    fn top_up(&mut self, member_index: usize, amount: i64, now: i64) -> Result<Expected, Refused> {
        let bonus = Model::top_up_bonus(amount);
        let member = self.member(member_index);
        member.settle(now);
        member.principal += amount;
        member.bonus += bonus;
        Ok(Expected::default()
            .with("/amount", json!(money(amount)))
            .with("/bonus", json!(money(bonus))))
    }

    fn sell_card(
        &mut self,
        member_index: usize,
        package: usize,
        method: usize,
        now: i64,
    ) -> Result<Expected, Refused> {
        let (uses, price, valid_days) = PACKAGES[package];
        let member = self.member(member_index);
        member.settle(now);
        let mut expected = Expected::default()
            .with("/card/uses", json!(uses))
            .with("/card/remaining", json!(uses));
        if method == STORED_VALUE && price > 0 {
            let (principal, bonus) = member.draw_stored_value(price)?;
            expected = expected
                .with("/stored_value_paid/principal", json!(money(principal)))
                .with("/stored_value_paid/bonus", json!(money(bonus)));
        } else {
            expected = expected.with("/stored_value_paid", Value::Null);
        }
        member.cards.push(Card {
            id: String::new(),
            seq: now,
            remaining: uses,
            expires: now + valid_days * DAY,
        });
        Ok(expected)
    }

    fn consume(
        &mut self,
        member_index: usize,
        card: usize,
        uses: i64,
        now: i64,
    ) -> Result<Expected, Refused> {
        let member = self.member(member_index);
        member.settle(now);
        let card = &mut member.cards[card];
        if card.expires <= now || card.remaining < uses {
            return Err(422);
        }
        card.remaining -= uses;
        Ok(Expected::default()
            .with("/uses", json!(uses))
            .with("/remaining", json!(card.remaining)))
    }
}

// ---------------------------------------------------------------------------------------
// Running a case against the server

struct Fixture<'a> {
    server: &'a TestServer,
    merchant: Merchant,
    store: String,
    packages: Vec<String>,
    case_number: u64,
    sends: u64,
}

impl Fixture<'_> {
    fn key(&mut self) -> String {
        self.sends += 1;
        format!("model-{}-{}", self.case_number, self.sends)
    }

    /// A value-moving POST; with `twice`, the same request again under the same key, which
    /// must answer the same status and byte-identical body.
    async fn send(&mut self, path: &str, body: &Value, twice: bool) -> Response {
        let key = self.key();
        let first = self
            .server
            .post_idem(path, &self.merchant.key, &key, body)
            .await;
        assert!(
            first.status < 500,
            "POST {path} {body}: {} {}",
            first.status,
            first.text
        );
        if twice {
            let again = self
                .server
                .post_idem(path, &self.merchant.key, &key, body)
                .await;
            assert_eq!(
                again.status, first.status,
                "replay of POST {path} {body}: {}",
                again.text
            );
            assert_eq!(again.text, first.text, "replay of POST {path} {body}");
        }
        first
    }
}

/// Splits `total` over the chosen methods; with `fit`, keeps stored value and points within
/// what the member has (the rest is paid in cash). Amounts are positive.
fn payments_for(
    total: i64,
    methods: u8,
    weights: [u16; 4],
    fit: bool,
    member: &Member,
    cents_per_point: i64,
) -> BTreeMap<usize, i64> {
    let mut payments = BTreeMap::new();
    if total == 0 {
        return payments;
    }
    let chosen: Vec<usize> = (0..4).filter(|bit| methods & (1 << bit) != 0).collect();
    let weights: Vec<i64> = chosen
        .iter()
        .map(|method| i64::from(weights[*method]) + 1)
        .collect();
    let shares = split(total, &weights);
    let mut cash = 0;
    for (method, mut share) in chosen.into_iter().zip(shares) {
        if fit && method == STORED_VALUE {
            let limit = (member.principal + member.bonus).max(0);
            cash += share - share.min(limit);
            share = share.min(limit);
        }
        if fit && method == POINTS {
            let limit = member.points.max(0) * cents_per_point;
            let fitted = share.min(limit) / cents_per_point * cents_per_point;
            cash += share - fitted;
            share = fitted;
        }
        if method == CASH {
            cash += share;
        } else if share > 0 {
            payments.insert(method, share);
        }
    }
    if cash > 0 {
        payments.insert(CASH, cash);
    }
    payments
}

fn check_expected(response: &Response, expected: &Expected, context: &str) {
    for (pointer, value) in &expected.fields {
        assert_eq!(
            response.json.pointer(pointer).unwrap_or(&Value::Null),
            value,
            "{context}: {pointer} in {}",
            response.text
        );
    }
}

async fn run_case(server: &TestServer, case_number: u64, case: &Case) {
    let settings = &case.settings;
    let merchant = server
        .merchant(&format!("Model {case_number}"), "CNY")
        .await;
    let patch = json!({"settings": {
        "points_per_currency_unit": settings.rate.0,
        "currency_per_point": if settings.cents_per_point == 1 { "0.01" } else { "0.02" },
        "points_pending_days": settings.pending_days,
        "points_expiry_days": settings.expiry_days,
        "allow_negative_points": settings.allow_negative,
        "points_per_purchase_max": settings.cap,
        "stored_value_bonus_rules": BONUS_RULES.iter().map(|(min, bonus)| json!({"min_top_up": money(*min), "bonus": money(*bonus)})).collect::<Vec<_>>(),
    }});
    server
        .patch("/v1/merchant", &merchant.key, &patch)
        .await
        .ok(200);
    let store = server.store(&merchant.key).await;
    let mut packages = Vec::new();
    for (index, (uses, price, valid_days)) in PACKAGES.iter().enumerate() {
        let response = server
            .post(
                "/v1/count-card-packages",
                &merchant.key,
                &json!({"name": format!("Package {index}"), "sku": format!("PKG{index}"), "uses": uses, "price": money(*price), "valid_days": valid_days}),
            )
            .await;
        packages.push(response.ok(201)["id"].as_str().unwrap().to_string());
    }
    let mut members = Vec::new();
    for index in 0..MEMBERS {
        let response = server
            .post(
                "/v1/members",
                &merchant.key,
                &json!({"external_id": format!("m{case_number}x{index}")}),
            )
            .await;
        members.push(Member {
            id: response.id(),
            ..Default::default()
        });
    }
    let mut model = Model {
        settings: settings.clone(),
        members,
        purchases: Vec::new(),
    };
    let mut fixture = Fixture {
        server,
        merchant,
        store,
        packages,
        case_number,
        sends: 0,
    };
    let mut day = 0_i64;
    let mut seq = 0_i64;
    let mut tick = |day: i64| {
        seq += 1;
        day * DAY + seq
    };

    for (step, (op, twice)) in case.ops.iter().enumerate() {
        let at = tick(day);
        let context = format!("case {case_number} step {step} {op:?} (settings {settings:?})");
        match op {
            Op::Purchase {
                member,
                items,
                methods,
                weights,
                fit,
            } => {
                let lines: Vec<Line> = items
                    .iter()
                    .map(|(price, quantity, sku)| Line {
                        sku: SKUS[*sku].to_string(),
                        quantity: *quantity,
                        unit_price: *price,
                        refunded_quantity: 0,
                    })
                    .collect();
                let total: i64 = lines
                    .iter()
                    .map(|line| line.quantity * line.unit_price)
                    .sum();
                let payments = payments_for(
                    total,
                    *methods,
                    *weights,
                    *fit,
                    &model.members[*member],
                    settings.cents_per_point,
                );
                purchase_step(
                    &mut fixture,
                    &mut model,
                    *member,
                    lines,
                    payments,
                    at,
                    *twice,
                    &context,
                )
                .await;
            }
            Op::EchoPurchase { member, points } => {
                let points = (*points).min(model.members[*member].points);
                let (_, numerator, denominator) = settings.rate;
                let (lines, payments) = if points > 0 {
                    let paid = points * settings.cents_per_point;
                    let cash = (points * 100 * denominator + numerator - 1) / numerator;
                    let line = Line {
                        sku: "ECHO".into(),
                        quantity: 1,
                        unit_price: paid + cash,
                        refunded_quantity: 0,
                    };
                    (vec![line], BTreeMap::from([(CASH, cash), (POINTS, paid)]))
                } else {
                    let line = Line {
                        sku: "ECHO".into(),
                        quantity: 1,
                        unit_price: 500,
                        refunded_quantity: 0,
                    };
                    (vec![line], BTreeMap::from([(CARD, 500)]))
                };
                purchase_step(
                    &mut fixture,
                    &mut model,
                    *member,
                    lines,
                    payments,
                    at,
                    *twice,
                    &context,
                )
                .await;
            }
            Op::Refund { purchase, kind } => {
                if model.purchases.is_empty() {
                    let response = fixture
                        .send("/v1/purchases/pur_0000/refunds", &json!({}), *twice)
                        .await;
                    response.problem(404);
                    continue;
                }
                let index = purchase % model.purchases.len();
                let body = match kind {
                    RefundKind::Rest => json!({}),
                    RefundKind::Amount(per_mille) => {
                        let purchase = &model.purchases[index];
                        let amount = ((purchase.total - purchase.refunded) * i64::from(*per_mille)
                            / 1000)
                            .max(1);
                        json!({"amount": money(amount)})
                    }
                    RefundKind::Items { line, quantity } => {
                        let purchase = &model.purchases[index];
                        let sku = &purchase.lines[line % purchase.lines.len()].sku;
                        json!({"items": [{"sku": sku, "quantity": quantity}]})
                    }
                };
                let mut next = model.clone();
                let expected = next.refund(index, kind, at);
                let path = format!("/v1/purchases/{}/refunds", model.purchases[index].id);
                let response = fixture.send(&path, &body, *twice).await;
                let member = model.purchases[index].member;
                settle_outcome(&mut model, next, expected, &response, member, at, &context);
            }
            Op::Redeem { member, per_mille } => {
                let available = model.members[*member].points.max(0);
                let points = (available * i64::from(*per_mille) / 1000).max(1);
                let mut next = model.clone();
                let expected = next.redeem(*member, points, at);
                let path = format!(
                    "/v1/members/{}/points/redemptions",
                    model.members[*member].id
                );
                let response = fixture
                    .send(&path, &json!({"points": points, "reason": "gift"}), *twice)
                    .await;
                settle_outcome(&mut model, next, expected, &response, *member, at, &context);
            }
            Op::Adjust { member, points } => {
                let mut next = model.clone();
                let expected = next.adjust(*member, *points, at);
                let path = format!(
                    "/v1/members/{}/points/adjustments",
                    model.members[*member].id
                );
                let response = fixture
                    .send(
                        &path,
                        &json!({"points": points, "reason": "goodwill"}),
                        *twice,
                    )
                    .await;
                settle_outcome(&mut model, next, expected, &response, *member, at, &context);
            }
            Op::TopUp { member, amount } => {
                let mut next = model.clone();
                let expected = next.top_up(*member, *amount, at);
                let path = format!(
                    "/v1/members/{}/stored-value/top-ups",
                    model.members[*member].id
                );
                let body = json!({"amount": money(*amount), "store_id": fixture.store, "payment_method": if amount % 2 == 0 { "cash" } else { "card" }});
                let response = fixture.send(&path, &body, *twice).await;
                settle_outcome(&mut model, next, expected, &response, *member, at, &context);
            }
            Op::SellCard {
                member,
                package,
                method,
            } => {
                let mut next = model.clone();
                let expected = next.sell_card(*member, *package, *method, at);
                let path = format!("/v1/members/{}/count-cards", model.members[*member].id);
                let body = json!({"package_id": fixture.packages[*package], "store_id": fixture.store, "payment_method": METHOD_NAMES[*method]});
                let response = fixture.send(&path, &body, *twice).await;
                if response.status == 201 {
                    let card = next.members[*member]
                        .cards
                        .last_mut()
                        .expect("the model sold a card");
                    card.id = response.json["card"]["id"]
                        .as_str()
                        .expect("card id")
                        .to_string();
                }
                settle_outcome(&mut model, next, expected, &response, *member, at, &context);
            }
            Op::Consume {
                member,
                card,
                uses,
                wrong_member,
            } => {
                let cards = model.members[*member].cards.len();
                if cards == 0 {
                    continue;
                }
                let card_index = card % cards;
                let card_id = model.members[*member].cards[card_index].id.clone();
                let body = json!({"uses": uses, "store_id": fixture.store});
                if *wrong_member {
                    let other = &model.members[(member + 1) % MEMBERS].id;
                    let path = format!("/v1/members/{other}/count-cards/{card_id}/consumptions");
                    fixture.send(&path, &body, *twice).await.problem(404);
                    continue;
                }
                let mut next = model.clone();
                let expected = next.consume(*member, card_index, *uses, at);
                let path = format!(
                    "/v1/members/{}/count-cards/{card_id}/consumptions",
                    model.members[*member].id
                );
                let response = fixture.send(&path, &body, *twice).await;
                settle_outcome(&mut model, next, expected, &response, *member, at, &context);
            }
            Op::Advance { days, lifecycle } => {
                server
                    .clock
                    .advance(Duration::from_secs(86_400 * u64::try_from(*days).unwrap()));
                day += days;
                if *lifecycle {
                    let at = tick(day);
                    let (mut activated, mut expired) = (0, 0);
                    for member in &mut model.members {
                        let (a, e) = member.settle(at);
                        activated += a;
                        expired += e;
                    }
                    let run = server.run_lifecycle().await;
                    // The job covers every merchant of the server; earlier cases add to it.
                    assert!(
                        run["points_activated"].as_i64().unwrap() >= activated,
                        "{context}: {run}"
                    );
                    assert!(
                        run["points_expired"].as_i64().unwrap() >= expired,
                        "{context}: {run}"
                    );
                }
            }
        }
    }
    let at = tick(day);
    for (index, member) in model.members.iter().enumerate() {
        let response = server
            .get(
                &format!("/v1/members/{}/balances", member.id),
                &fixture.merchant.key,
            )
            .await;
        member.check_balances(
            response.ok(200),
            at,
            &format!("case {case_number} final balances of member {index}"),
        );
    }
    server.verify().await;
}

#[allow(clippy::too_many_arguments)]
async fn purchase_step(
    fixture: &mut Fixture<'_>,
    model: &mut Model,
    member: usize,
    lines: Vec<Line>,
    payments: BTreeMap<usize, i64>,
    at: i64,
    twice: bool,
    context: &str,
) {
    let body = json!({
        "member_id": model.members[member].id,
        "store_id": fixture.store,
        "items": lines.iter().map(|line| json!({"sku": line.sku, "quantity": line.quantity, "unit_price": money(line.unit_price)})).collect::<Vec<_>>(),
        "payments": payments.iter().map(|(method, amount)| json!({"method": METHOD_NAMES[*method], "amount": money(*amount)})).collect::<Vec<_>>(),
    });
    let mut next = model.clone();
    let outcome = next.purchase(member, lines, &payments, at);
    let response = fixture.send("/v1/purchases", &body, twice).await;
    let context = format!("{context} body {body}");
    let expected = match outcome {
        Ok((mut purchase, expected)) => {
            if response.status == 201 {
                purchase.id = response.id();
                next.purchases.push(purchase);
            }
            Ok(expected)
        }
        Err(status) => Err(status),
    };
    settle_outcome(model, next, expected, &response, member, at, &context);
}

/// Compares a response with the model's expectation; on success the model moves on.
fn settle_outcome(
    model: &mut Model,
    next: Model,
    expected: Result<Expected, Refused>,
    response: &Response,
    member: usize,
    at: i64,
    context: &str,
) {
    count(context, response.status);
    match expected {
        Ok(expected) => {
            assert_eq!(
                response.status, 201,
                "{context}: expected success, got {}",
                response.text
            );
            check_expected(response, &expected, context);
            *model = next;
            model.members[member].check_balances(&response.json["balances"], at, context);
        }
        Err(status) => {
            response.problem(status);
            let _ = context;
        }
    }
}

/// How often each kind of operation got each status, over a run (printed at the end).
static OUTCOMES: std::sync::Mutex<BTreeMap<(String, u16), u64>> =
    std::sync::Mutex::new(BTreeMap::new());

fn count(context: &str, status: u16) {
    // The context reads "case N step M Kind {…": take the kind.
    let kind = context
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .to_string();
    *OUTCOMES.lock().unwrap().entry((kind, status)).or_default() += 1;
}

/// Sequences worth running every time, before the random ones.
fn fixed_cases() -> Vec<Case> {
    let settings = CaseSettings {
        rate: RATES[0],
        cents_per_point: 1,
        pending_days: 2,
        expiry_days: Some(10),
        allow_negative: true,
        cap: None,
    };
    vec![
        // A refund that gives paid points back to a member in debt: the balance stays
        // negative though the refund itself takes nothing.
        Case {
            settings: settings.clone(),
            ops: vec![
                (
                    Op::Adjust {
                        member: 0,
                        points: 100,
                    },
                    false,
                ),
                (
                    Op::EchoPurchase {
                        member: 0,
                        points: 50,
                    },
                    false,
                ),
                (
                    Op::Adjust {
                        member: 0,
                        points: -200,
                    },
                    false,
                ),
                (
                    Op::Refund {
                        purchase: 0,
                        kind: RefundKind::Rest,
                    },
                    true,
                ),
            ],
        },
        // Paying with points and earning the same points at once (no pending window).
        Case {
            settings: CaseSettings {
                pending_days: 0,
                allow_negative: false,
                ..settings
            },
            ops: vec![
                (
                    Op::Adjust {
                        member: 1,
                        points: 30,
                    },
                    false,
                ),
                (
                    Op::EchoPurchase {
                        member: 1,
                        points: 30,
                    },
                    false,
                ),
                (
                    Op::Refund {
                        purchase: 0,
                        kind: RefundKind::Rest,
                    },
                    false,
                ),
                (
                    Op::Advance {
                        days: 11,
                        lifecycle: true,
                    },
                    false,
                ),
            ],
        },
    ]
}

fn run(backend: Backend) {
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // One server serves every case while they pass; a failed case leaves its merchant's
    // data behind (and `verify` checks the whole database), so the next case gets a new one.
    let server: RefCell<Option<TestServer>> = RefCell::new(None);
    let tainted = Cell::new(false);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let counter = Cell::new(0_u64);
    {
        let fixed_server = runtime.block_on(TestServer::start(backend));
        for case in fixed_cases() {
            let number = counter.get();
            counter.set(number + 1);
            runtime.block_on(run_case(&fixed_server, number, &case));
        }
    }
    let result = runner.run(&case_strategy(), |case| {
        if tainted.get() {
            server.borrow_mut().take();
        }
        if server.borrow().is_none() {
            *server.borrow_mut() = Some(runtime.block_on(TestServer::start(backend)));
        }
        let number = counter.get();
        counter.set(number + 1);
        tainted.set(true);
        let guard = server.borrow();
        runtime.block_on(run_case(guard.as_ref().expect("a server"), number, &case));
        tainted.set(false);
        Ok(())
    });
    server.borrow_mut().take();
    eprintln!(
        "{backend:?}: outcomes so far in this process {:?}",
        OUTCOMES.lock().unwrap()
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn postgres() {
    if loyalty_tests::postgres_url().is_none() {
        eprintln!("TEST_DATABASE_URL is not set: PostgreSQL test skipped");
        return;
    }
    run(Backend::Postgres);
}
