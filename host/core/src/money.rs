//! Money as integer minor units, parsed from and printed as decimal strings, and the one
//! rounding rule for proportional splits (largest remainder).

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::str::FromStr;

use crate::error::FieldError;

/// Largest amount of money accepted in one field, in major units: keeps every sum far
/// below i64 overflow even after multiplying by a points rate.
pub const MONEY_MAJOR_UNITS_MAX: i64 = 1_000_000_000;

/// ISO 4217 minor-unit exponents of the currencies a merchant may use.
pub fn currency_exponent(code: &str) -> Option<u32> {
    let exponent = match code {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "AED" | "ARS" | "AUD" | "BRL" | "CAD" | "CHF" | "CNY" | "CZK" | "DKK" | "EGP" | "EUR"
        | "GBP" | "HKD" | "HUF" | "IDR" | "ILS" | "INR" | "MOP" | "MXN" | "MYR" | "NOK" | "NZD"
        | "PHP" | "PKR" | "PLN" | "QAR" | "RON" | "RUB" | "SAR" | "SEK" | "SGD" | "THB" | "TRY"
        | "TWD" | "UAH" | "USD" | "ZAR" => 2,
        _ => return None,
    };
    Some(exponent)
}

/// The region used to read phone numbers written without a country code.
pub fn default_region_for_currency(code: &str) -> &'static str {
    match code {
        "CNY" => "CN",
        "HKD" => "HK",
        "MOP" => "MO",
        "TWD" => "TW",
        "JPY" => "JP",
        "KRW" => "KR",
        "SGD" => "SG",
        "GBP" => "GB",
        "EUR" => "DE",
        "AUD" => "AU",
        "CAD" => "CA",
        "CHF" => "CH",
        "INR" => "IN",
        "MYR" => "MY",
        "THB" => "TH",
        "NZD" => "NZ",
        _ => "US",
    }
}

/// Parses a decimal string ("12.50") into minor units of a currency with `exponent` decimals.
/// More decimals than the currency has, a non-number, or an absurd size is an error naming
/// `field`.
pub fn parse_money(field: &str, text: &str, exponent: u32) -> Result<i64, FieldError> {
    if !is_plain_decimal(text) {
        return Err(FieldError::new(
            field,
            "must be a decimal string such as \"12.50\"",
        ));
    }
    let trimmed = text;
    let value = Decimal::from_str(trimmed)
        .map_err(|_| FieldError::new(field, "must be a decimal string such as \"12.50\""))?;
    if value.scale() > exponent {
        return Err(FieldError::new(
            field,
            format!("has more than {exponent} decimal places for this currency"),
        ));
    }
    if value.abs() > Decimal::from(MONEY_MAJOR_UNITS_MAX) {
        return Err(FieldError::new(field, "is too large"));
    }
    let minor = value * Decimal::from(10_i64.pow(exponent));
    minor
        .to_i64()
        .ok_or_else(|| FieldError::new(field, "is too large"))
}

/// `-?digits(.digits)?`: no exponent, no sign `+`, no spaces, no bare point.
fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// Parses a money field that must be strictly positive.
pub fn parse_positive_money(field: &str, text: &str, exponent: u32) -> Result<i64, FieldError> {
    let minor = parse_money(field, text, exponent)?;
    if minor <= 0 {
        return Err(FieldError::new(field, "must be greater than zero"));
    }
    Ok(minor)
}

/// Prints minor units as a decimal string with exactly `exponent` decimals.
pub fn format_money(minor: i64, exponent: u32) -> String {
    Decimal::new(minor, exponent).to_string()
}

/// Splits `total` into parts proportional to `weights` by the largest-remainder rule: every
/// part is first floored, then the units left over go one each to the parts with the largest
/// fractional remainders (ties to the earlier part). The parts always sum to `total`, and a
/// part whose weight is zero gets nothing. All weights zero gives everything to nothing: the
/// caller must not ask for that with a non-zero total.
pub fn split_largest_remainder(total: i64, weights: &[i64]) -> Vec<i64> {
    assert!(total >= 0, "split of a negative total");
    assert!(weights.iter().all(|weight| *weight >= 0), "negative weight");
    let weight_sum: i128 = weights.iter().map(|weight| i128::from(*weight)).sum();
    if weight_sum == 0 {
        assert_eq!(
            total, 0,
            "a non-zero total cannot be split over zero weights"
        );
        return vec![0; weights.len()];
    }
    let total_wide = i128::from(total);
    let mut parts: Vec<i64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let numerator = total_wide * i128::from(*weight);
        parts.push(i64::try_from(numerator / weight_sum).expect("a part is at most the total"));
        remainders.push((numerator % weight_sum, index));
    }
    let assigned: i64 = parts.iter().sum();
    let mut left_over = total - assigned;
    // Largest remainder first; equal remainders keep their order (stable sort).
    remainders.sort_by_key(|(remainder, _)| std::cmp::Reverse(*remainder));
    for (remainder, index) in remainders {
        if left_over == 0 {
            break;
        }
        if remainder > 0 {
            parts[index] += 1;
            left_over -= 1;
        }
    }
    assert_eq!(left_over, 0, "largest remainder left units unassigned");
    debug_assert_eq!(parts.iter().sum::<i64>(), total);
    parts
}

/// `amount × rate`, rounded down to a whole number: points earned never exceed the rate.
pub fn multiply_floor(amount: i64, rate: Decimal) -> i64 {
    (Decimal::from(amount) * rate)
        .floor()
        .to_i64()
        .expect("rates are bounded so the product fits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_money_with_the_currency_precision() {
        assert_eq!(parse_money("amount", "12.50", 2), Ok(1250));
        assert_eq!(parse_money("amount", "12", 2), Ok(1200));
        assert_eq!(parse_money("amount", "500", 0), Ok(500));
        assert!(parse_money("amount", "12.505", 2).is_err());
        assert!(parse_money("amount", "1.5", 0).is_err());
        assert!(parse_money("amount", "abc", 2).is_err());
        assert!(parse_money("amount", " 1", 2).is_err());
        assert!(parse_money("amount", "1e3", 2).is_err());
        assert!(parse_money("amount", "+1", 2).is_err());
        assert!(parse_money("amount", ".5", 2).is_err());
        assert!(parse_money("amount", "5.", 2).is_err());
        assert_eq!(parse_money("amount", "-0.50", 2), Ok(-50));
        assert!(parse_money("amount", "99999999999999", 2).is_err());
        assert_eq!(format_money(1250, 2), "12.50");
        assert_eq!(format_money(-5, 2), "-0.05");
        assert_eq!(format_money(7, 0), "7");
    }

    #[test]
    fn largest_remainder_examples() {
        assert_eq!(split_largest_remainder(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(split_largest_remainder(10, &[500, 100]), vec![8, 2]);
        assert_eq!(split_largest_remainder(7, &[0, 5]), vec![0, 7]);
        assert_eq!(split_largest_remainder(0, &[0, 0]), vec![0, 0]);
    }

    proptest! {
        #[test]
        fn largest_remainder_parts_sum_to_the_whole(
            total in 0_i64..1_000_000_000,
            weights in proptest::collection::vec(0_i64..1_000_000_000, 1..8),
        ) {
            prop_assume!(weights.iter().any(|weight| *weight > 0));
            let parts = split_largest_remainder(total, &weights);
            prop_assert_eq!(parts.iter().sum::<i64>(), total);
            let weight_sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (part, weight) in parts.iter().zip(&weights) {
                let exact = i128::from(total) * i128::from(*weight);
                // each part is its exact share rounded down or up
                prop_assert!(i128::from(*part) * weight_sum <= exact + weight_sum);
                prop_assert!(i128::from(*part) * weight_sum >= exact - weight_sum);
                if *weight == 0 { prop_assert_eq!(*part, 0); }
            }
        }
    }
}
