//! Money and points with integer arithmetic only.
//!
//! An amount is an `i64` count of the currency's minor units; the currency's exponent (the
//! digits after the decimal point: 2 for CNY, 0 for JPY) is
//! [`Context::currency_exponent`](crate::Context). Intermediate products are computed in
//! `i128`, so `amount × rate` never overflows; a result beyond `i64` saturates.

use serde::Deserialize;

/// How to round a fractional number of points.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Toward zero (floor, for the non-negative amounts points are computed from).
    #[default]
    Down,
    /// To the nearest whole point; exactly half rounds up.
    Nearest,
    /// Away from zero (ceiling).
    Up,
}

/// Minor units in one whole unit: 10^`exponent` (an exponent above 38 is treated as 38, the
/// most an `i128` holds; real currencies use 0 to 4).
pub fn minor_per_unit(exponent: u8) -> i128 {
    10i128.pow(u32::from(exponent.min(38)))
}

/// `amount × numerator / denominator`, rounded per `rounding`, computed exactly in `i128`.
///
/// Meant for points, which are never negative: a product ≤ 0 or a `denominator` ≤ 0 gives 0,
/// and a result beyond `i64::MAX` (or a product beyond `i128`) saturates at `i64::MAX`.
pub fn mul_div(amount: i64, numerator: i128, denominator: i128, rounding: Rounding) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    let Some(product) = i128::from(amount).checked_mul(numerator) else {
        // Overflow of i128 only happens for huge positive or negative products.
        return if (amount > 0) == (numerator > 0) {
            i64::MAX
        } else {
            0
        };
    };
    if product <= 0 {
        return 0;
    }
    let (quotient, remainder) = (product / denominator, product % denominator);
    let rounded = match rounding {
        Rounding::Down => quotient,
        Rounding::Up if remainder > 0 => quotient + 1,
        Rounding::Up => quotient,
        // remainder ≥ denominator − remainder ⇔ the fraction is at least one half.
        Rounding::Nearest if remainder >= denominator - remainder => quotient + 1,
        Rounding::Nearest => quotient,
    };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// Points for `amount` minor units at `points_per_unit` points per whole currency unit,
/// floored: `floor(amount × points_per_unit / 10^exponent)`. 0 when `amount` or
/// `points_per_unit` is not positive.
pub fn points_for(amount: i64, points_per_unit: i64, exponent: u8) -> i64 {
    points_for_rounded(amount, points_per_unit, exponent, Rounding::Down)
}

/// Like [`points_for`], rounded per `rounding` instead of floored.
pub fn points_for_rounded(
    amount: i64,
    points_per_unit: i64,
    exponent: u8,
    rounding: Rounding,
) -> i64 {
    mul_div(
        amount,
        i128::from(points_per_unit),
        minor_per_unit(exponent),
        rounding,
    )
}

/// The whole units in `amount` minor units, truncated toward zero (1999 at exponent 2 is 19).
pub fn whole_units(amount: i64, exponent: u8) -> i64 {
    // |quotient| ≤ |amount|, so it fits i64.
    i64::try_from(i128::from(amount) / minor_per_unit(exponent)).expect("quotient fits i64")
}

/// `amount` minor units as decimal text with `exponent` fraction digits: `-1205` at exponent
/// 2 is `"-12.05"`, `500` at exponent 0 is `"500"`.
pub fn format_amount(amount: i64, exponent: u8) -> String {
    let scale = minor_per_unit(exponent);
    let magnitude = i128::from(amount).abs();
    let sign = if amount < 0 { "-" } else { "" };
    let whole = magnitude / scale;
    if exponent == 0 {
        return format!("{sign}{whole}");
    }
    let fraction = magnitude % scale;
    let width = usize::from(exponent.min(38));
    format!("{sign}{whole}.{fraction:0width$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_floor_per_exponent() {
        assert_eq!(points_for(1_999, 1, 2), 19); // CNY 19.99 at 1 per yuan
        assert_eq!(points_for(1_999, 3, 2), 59); // 59.97
        assert_eq!(points_for(1_999, 1, 0), 1_999); // JPY
        assert_eq!(points_for(12_345, 1, 3), 12); // KWD 12.345
        assert_eq!(points_for(99, 1, 2), 0);
        assert_eq!(points_for(0, 5, 2), 0);
        assert_eq!(points_for(-500, 1, 2), 0, "a refund earns nothing");
        assert_eq!(points_for(500, -1, 2), 0, "a negative rate earns nothing");
        assert_eq!(points_for(500, 0, 2), 0);
    }

    #[test]
    fn rounding_modes() {
        assert_eq!(points_for_rounded(1_949, 1, 2, Rounding::Down), 19);
        assert_eq!(points_for_rounded(1_949, 1, 2, Rounding::Nearest), 19);
        assert_eq!(
            points_for_rounded(1_950, 1, 2, Rounding::Nearest),
            20,
            "half rounds up"
        );
        assert_eq!(points_for_rounded(1_901, 1, 2, Rounding::Up), 20);
        assert_eq!(points_for_rounded(1_900, 1, 2, Rounding::Up), 19);
        assert_eq!(points_for_rounded(1_900, 1, 2, Rounding::Nearest), 19);
        // Odd denominators: 1/3 rounds down, 2/3 up.
        assert_eq!(mul_div(1, 1, 3, Rounding::Nearest), 0);
        assert_eq!(mul_div(2, 1, 3, Rounding::Nearest), 1);
        assert_eq!(mul_div(10, 1, 0, Rounding::Up), 0);
    }

    #[test]
    fn no_overflow() {
        assert_eq!(points_for(i64::MAX, i64::MAX, 0), i64::MAX);
        assert_eq!(points_for(i64::MAX, 100, 2), i64::MAX);
        assert_eq!(points_for(i64::MAX, 1, 2), i64::MAX / 100);
        assert_eq!(mul_div(i64::MAX, i128::MAX, 1, Rounding::Down), i64::MAX);
        assert_eq!(mul_div(i64::MIN, i128::MAX, 1, Rounding::Down), 0);
        assert_eq!(
            points_for(1_000, 1, 255),
            0,
            "absurd exponent does not panic"
        );
    }

    #[test]
    fn whole_units_and_formatting() {
        assert_eq!(whole_units(1_999, 2), 19);
        assert_eq!(whole_units(-1_999, 2), -19);
        assert_eq!(whole_units(1_999, 0), 1_999);
        assert_eq!(format_amount(1_205, 2), "12.05");
        assert_eq!(format_amount(-1_205, 2), "-12.05");
        assert_eq!(format_amount(5, 2), "0.05");
        assert_eq!(format_amount(500, 0), "500");
        assert_eq!(format_amount(12_345, 3), "12.345");
        assert_eq!(format_amount(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn rounding_reads_from_config_json() {
        let r: Rounding = serde_json::from_str(r#""nearest""#).expect("valid");
        assert_eq!(r, Rounding::Nearest);
        assert!(serde_json::from_str::<Rounding>(r#""sideways""#).is_err());
    }
}
