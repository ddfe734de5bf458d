//! The earn-policy seam: the purchase service asks a policy for awards before it writes.
//! Today's only policy is the merchant's base rate; plugins plug in here later.

use rust_decimal::Decimal;

use crate::money::multiply_floor;
use crate::settings::MerchantSettings;

/// One award of points with the reason a member can read and the policy that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Award {
    pub points: i64,
    pub reason: String,
    /// Which policy made the award (kept as the transaction's provenance).
    pub source: String,
    /// When these points expire (unix microseconds), if not on the merchant's default
    /// schedule. The purchase honours it only after the points activate (see
    /// `operations::honoured_expiry`).
    pub expires_at: Option<i64>,
}

pub struct EarnLine<'a> {
    pub sku: &'a str,
    pub category: Option<&'a str>,
    pub quantity: i64,
    /// Line total in minor units.
    pub total: i64,
}

/// What a policy sees of a purchase.
pub struct EarnInput<'a> {
    pub settings: &'a MerchantSettings,
    pub currency_exponent: u32,
    pub member_id: &'a str,
    pub lines: &'a [EarnLine<'a>],
    /// Purchase total in minor units.
    pub total: i64,
    /// The part of the total paid with points, in minor units; it earns nothing.
    pub paid_with_points: i64,
    /// The part of the total the member's coupons take off; it earns nothing either.
    pub discount: i64,
    pub occurred_at: i64,
}

pub trait EarnPolicy: Send + Sync {
    /// The awards for a purchase. The host caps them (none negative, per-purchase maximum).
    fn awards(&self, input: &EarnInput<'_>) -> Vec<Award>;
}

/// `points_per_currency_unit` points per whole currency unit of the total not paid with
/// points nor taken off by coupons, rounded down.
pub struct BaseRate;

impl EarnPolicy for BaseRate {
    fn awards(&self, input: &EarnInput<'_>) -> Vec<Award> {
        let eligible = input.total - input.paid_with_points - input.discount;
        let rate = input.settings.points_per_currency_unit;
        // minor units → major units × rate, floored once
        let per_minor = rate / Decimal::from(10_i64.pow(input.currency_exponent));
        let points = multiply_floor(eligible.max(0), per_minor);
        if points <= 0 {
            return Vec::new();
        }
        vec![Award {
            points,
            reason: format!("{} point(s) per currency unit", rate.normalize()),
            source: "base_rate".to_string(),
            expires_at: None,
        }]
    }
}
