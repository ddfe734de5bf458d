//! A merchant's programme settings: earn rate, redemption value, pending and expiry windows,
//! stored-value bonus rules, and whether points may go negative.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{CoreError, FieldError};
use crate::money::{format_money, parse_money};

/// Upper bound of any points rate, so `amount × rate` stays far from overflow.
pub const POINTS_RATE_MAX: i64 = 10_000;
/// Longest pending or expiry window, in days.
pub const WINDOW_DAYS_MAX: u32 = 3_650;
/// Most stored-value bonus rules a merchant may configure.
pub const BONUS_RULES_MAX: usize = 32;

/// Settings as stored: money in minor units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MerchantSettings {
    pub points_per_currency_unit: Decimal,
    pub currency_per_point: Decimal,
    pub points_pending_days: u32,
    pub points_expiry_days: Option<u32>,
    pub stored_value_bonus_rules: Vec<BonusRule>,
    pub allow_negative_points: bool,
    pub points_per_purchase_max: Option<i64>,
    /// Days before points expire that the daily tick emits `points.expiring`; 0: never.
    #[serde(default = "expiry_notice_days_default")]
    pub points_expiry_notice_days: u32,
}

/// Default of [`MerchantSettings::points_expiry_notice_days`].
pub const EXPIRY_NOTICE_DAYS_DEFAULT: u32 = 7;

fn expiry_notice_days_default() -> u32 {
    EXPIRY_NOTICE_DAYS_DEFAULT
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BonusRule {
    pub min_top_up: i64,
    pub bonus: i64,
}

impl Default for MerchantSettings {
    fn default() -> Self {
        MerchantSettings {
            points_per_currency_unit: Decimal::ONE,
            currency_per_point: Decimal::new(1, 2),
            points_pending_days: 0,
            points_expiry_days: Some(365),
            stored_value_bonus_rules: Vec::new(),
            allow_negative_points: false,
            points_per_purchase_max: None,
            points_expiry_notice_days: EXPIRY_NOTICE_DAYS_DEFAULT,
        }
    }
}

impl MerchantSettings {
    /// The bonus a top-up of `amount` minor units earns: the rule with the highest threshold
    /// the amount reaches (充500送100).
    pub fn top_up_bonus(&self, amount: i64) -> i64 {
        self.stored_value_bonus_rules
            .iter()
            .filter(|rule| amount >= rule.min_top_up)
            .max_by_key(|rule| rule.min_top_up)
            .map(|rule| rule.bonus)
            .unwrap_or(0)
    }

    pub fn view(&self, exponent: u32) -> SettingsView {
        SettingsView {
            points_per_currency_unit: self.points_per_currency_unit.normalize().to_string(),
            currency_per_point: self.currency_per_point.normalize().to_string(),
            points_pending_days: self.points_pending_days,
            points_expiry_days: self.points_expiry_days,
            stored_value_bonus_rules: self
                .stored_value_bonus_rules
                .iter()
                .map(|rule| BonusRuleView {
                    min_top_up: format_money(rule.min_top_up, exponent),
                    bonus: format_money(rule.bonus, exponent),
                })
                .collect(),
            allow_negative_points: self.allow_negative_points,
            points_per_purchase_max: self.points_per_purchase_max,
            points_expiry_notice_days: self.points_expiry_notice_days,
        }
    }

    /// Applies a patch, validating every field; on any error nothing changes.
    pub fn patched(&self, patch: &SettingsPatch, exponent: u32) -> Result<Self, CoreError> {
        let mut next = self.clone();
        let mut errors = Vec::new();
        if let Some(text) = &patch.points_per_currency_unit {
            match parse_rate("settings.points_per_currency_unit", text, true) {
                Ok(rate) => next.points_per_currency_unit = rate,
                Err(error) => errors.push(error),
            }
        }
        if let Some(text) = &patch.currency_per_point {
            match parse_rate("settings.currency_per_point", text, false) {
                Ok(rate) => next.currency_per_point = rate,
                Err(error) => errors.push(error),
            }
        }
        if let Some(days) = patch.points_pending_days {
            if days > WINDOW_DAYS_MAX {
                errors.push(FieldError::new(
                    "settings.points_pending_days",
                    format!("must be at most {WINDOW_DAYS_MAX}"),
                ));
            } else {
                next.points_pending_days = days;
            }
        }
        if let Some(days) = patch.points_expiry_days {
            match days {
                Some(0) => errors.push(FieldError::new(
                    "settings.points_expiry_days",
                    "must be at least 1, or null for points that never expire",
                )),
                Some(days) if days > WINDOW_DAYS_MAX => errors.push(FieldError::new(
                    "settings.points_expiry_days",
                    format!("must be at most {WINDOW_DAYS_MAX}"),
                )),
                _ => next.points_expiry_days = days,
            }
        }
        if let Some(rules) = &patch.stored_value_bonus_rules {
            if rules.len() > BONUS_RULES_MAX {
                errors.push(FieldError::new(
                    "settings.stored_value_bonus_rules",
                    format!("at most {BONUS_RULES_MAX} rules"),
                ));
            } else {
                let mut parsed = Vec::with_capacity(rules.len());
                for (index, rule) in rules.iter().enumerate() {
                    let prefix = format!("settings.stored_value_bonus_rules[{index}]");
                    let min =
                        parse_money(&format!("{prefix}.min_top_up"), &rule.min_top_up, exponent);
                    let bonus = parse_money(&format!("{prefix}.bonus"), &rule.bonus, exponent);
                    match (min, bonus) {
                        (Ok(min), Ok(bonus)) if min > 0 && bonus >= 0 => parsed.push(BonusRule {
                            min_top_up: min,
                            bonus,
                        }),
                        (Ok(_), Ok(_)) => errors.push(FieldError::new(
                            prefix,
                            "min_top_up must be positive and bonus not negative",
                        )),
                        (min, bonus) => {
                            errors.extend(min.err());
                            errors.extend(bonus.err());
                        }
                    }
                }
                let mut thresholds: Vec<i64> = parsed.iter().map(|rule| rule.min_top_up).collect();
                thresholds.sort_unstable();
                thresholds.dedup();
                if thresholds.len() != parsed.len() {
                    errors.push(FieldError::new(
                        "settings.stored_value_bonus_rules",
                        "two rules have the same min_top_up",
                    ));
                }
                next.stored_value_bonus_rules = parsed;
            }
        }
        if let Some(days) = patch.points_expiry_notice_days {
            if days > WINDOW_DAYS_MAX {
                errors.push(FieldError::new(
                    "settings.points_expiry_notice_days",
                    format!("must be at most {WINDOW_DAYS_MAX}"),
                ));
            } else {
                next.points_expiry_notice_days = days;
            }
        }
        if let Some(allow) = patch.allow_negative_points {
            next.allow_negative_points = allow;
        }
        if let Some(maximum) = patch.points_per_purchase_max {
            match maximum {
                Some(maximum) if maximum < 0 => errors.push(FieldError::new(
                    "settings.points_per_purchase_max",
                    "must not be negative",
                )),
                _ => next.points_per_purchase_max = maximum,
            }
        }
        if errors.is_empty() {
            Ok(next)
        } else {
            Err(CoreError::Validation(errors))
        }
    }
}

fn parse_rate(field: &str, text: &str, zero_allowed: bool) -> Result<Decimal, FieldError> {
    let rate: Decimal = text
        .parse()
        .map_err(|_| FieldError::new(field, "must be a decimal string such as \"1.5\""))?;
    if rate.is_sign_negative() || (!zero_allowed && rate.is_zero()) {
        return Err(FieldError::new(
            field,
            if zero_allowed {
                "must not be negative"
            } else {
                "must be greater than zero"
            },
        ));
    }
    if rate > Decimal::from(POINTS_RATE_MAX) || rate.scale() > 6 {
        return Err(FieldError::new(
            field,
            format!("must be at most {POINTS_RATE_MAX} with at most 6 decimals"),
        ));
    }
    Ok(rate)
}

/// Settings as the API shows them: money and rates as decimal strings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettingsView {
    /// Points earned per whole unit of currency spent ("1" = 1 point per 1.00).
    pub points_per_currency_unit: String,
    /// What one point is worth when paying with points ("0.01" = 100 points per 1.00).
    pub currency_per_point: String,
    /// Days earned points stay pending (the return window) before they can be spent.
    pub points_pending_days: u32,
    /// Days points stay spendable after they activate; null: they never expire.
    pub points_expiry_days: Option<u32>,
    /// Top-up bonus rules: a top-up of at least `min_top_up` earns `bonus` (the highest rule reached).
    pub stored_value_bonus_rules: Vec<BonusRuleView>,
    /// Whether refunds may leave a member's points negative (a debt later earnings repay).
    pub allow_negative_points: bool,
    /// Most points one purchase may earn; null: no cap.
    pub points_per_purchase_max: Option<i64>,
    /// Days ahead of an expiry that the daily tick emits `points.expiring` (0: never).
    pub points_expiry_notice_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BonusRuleView {
    pub min_top_up: String,
    pub bonus: String,
}

/// A partial update of the settings: absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub points_per_currency_unit: Option<String>,
    pub currency_per_point: Option<String>,
    pub points_pending_days: Option<u32>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub points_expiry_days: Option<Option<u32>>,
    pub stored_value_bonus_rules: Option<Vec<BonusRuleView>>,
    pub allow_negative_points: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub points_per_purchase_max: Option<Option<i64>>,
    pub points_expiry_notice_days: Option<u32>,
}

/// Tells an absent field (outer None) from an explicit null (Some(None)).
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
