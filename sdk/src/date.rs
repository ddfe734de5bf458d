//! The merchant's local calendar, by integer arithmetic (no time-zone database: the host
//! passes the offset in force at `now` as [`Context::utc_offset_seconds`](crate::Context)).
//!
//! Days are counted from 1970-01-01 with Howard Hinnant's `days_from_civil` /
//! `civil_from_days` algorithms (proleptic Gregorian calendar), exact for every date an `i64`
//! of microseconds can reach.

use crate::{Date, Timestamp, MICROS_PER_DAY};

/// Microseconds in one second.
const MICROS_PER_SECOND: i64 = 1_000_000;

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1 to 12) of `year`; 0 for a month out of range.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to `year`-`month`-`day` (negative before 1970). `month` and `day`
/// are not validated: out-of-range values roll over as the arithmetic gives.
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    // Years start in March so that the leap day is the last day of a year.
    let y = i64::from(year) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date `days` days after 1970-01-01 (before it when negative).
pub fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        // An i64 of microseconds spans about ±292,000 years, well inside i32.
        year: i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX }),
        month: u8::try_from(month).expect("month is in 1..=12"),
        day: u8::try_from(day).expect("day is in 1..=31"),
    }
}

/// Whole local days since 1970-01-01 at `now` for a zone `utc_offset_seconds` east of UTC.
pub fn local_days(now: Timestamp, utc_offset_seconds: i32) -> i64 {
    let local = now.saturating_add(i64::from(utc_offset_seconds) * MICROS_PER_SECOND);
    // Floor, not truncation: an instant before 1970 belongs to the day that started earlier.
    local.div_euclid(MICROS_PER_DAY)
}

/// The local calendar date at `now` for a zone `utc_offset_seconds` east of UTC.
pub fn local_date(now: Timestamp, utc_offset_seconds: i32) -> Date {
    civil_from_days(local_days(now, utc_offset_seconds))
}

/// The local ISO weekday at `now` (1 is Monday, 7 is Sunday).
pub fn local_weekday(now: Timestamp, utc_offset_seconds: i32) -> u8 {
    weekday_from_days(local_days(now, utc_offset_seconds))
}

/// The ISO weekday (1 is Monday, 7 is Sunday) of the day `days` after 1970-01-01.
pub fn weekday_from_days(days: i64) -> u8 {
    // 1970-01-01 was a Thursday (4).
    u8::try_from((days + 3).rem_euclid(7) + 1).expect("weekday is in 1..=7")
}

/// The timestamp of `year`-`month`-`day` `hour`:`minute`:`second` UTC (handy in tests).
pub fn micros_from_utc(
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
) -> Timestamp {
    let seconds = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3_600
        + i64::from(minute) * 60
        + i64::from(second);
    seconds * MICROS_PER_SECOND
}

/// Whether `today` is the anniversary of `birthday` (month and day match). A 29 February
/// birthday is celebrated on 28 February in years without a 29 February.
pub fn is_anniversary(birthday: &Date, today: &Date) -> bool {
    if birthday.month == 2 && birthday.day == 29 && !is_leap_year(today.year) {
        return today.month == 2 && today.day == 28;
    }
    birthday.month == today.month && birthday.day == today.day
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1900, 1, 1), -25_567);
        assert_eq!(civil_from_days(19_782), Date::new(2024, 2, 29));
        assert_eq!(civil_from_days(19_783), Date::new(2024, 3, 1));
        assert_eq!(civil_from_days(-1), Date::new(1969, 12, 31));
        assert_eq!(civil_from_days(-25_567), Date::new(1900, 1, 1));
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        // 1600-03-01 to 2400-03-01 covers both the 400-year and the 100-year leap rules.
        let (start, end) = (days_from_civil(1600, 3, 1), days_from_civil(2400, 3, 1));
        let mut expected = Date::new(1600, 3, 1);
        for days in start..end {
            let date = civil_from_days(days);
            assert_eq!(date, expected, "day {days}");
            assert_eq!(days_from_civil(date.year, date.month, date.day), days);
            // Step the expected date by hand so the test does not trust the algorithm.
            expected.day += 1;
            if expected.day > days_in_month(expected.year, expected.month) {
                expected.day = 1;
                expected.month += 1;
                if expected.month > 12 {
                    expected.month = 1;
                    expected.year += 1;
                }
            }
        }
    }

    #[test]
    fn leap_years() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2023));
        assert!(!is_leap_year(2100));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2023, 13), 0);
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday_from_days(0), 4); // 1970-01-01, Thursday
        assert_eq!(weekday_from_days(-1), 3); // 1969-12-31, Wednesday
        assert_eq!(weekday_from_days(days_from_civil(2024, 2, 29)), 4); // Thursday
        assert_eq!(weekday_from_days(days_from_civil(2000, 1, 1)), 6); // Saturday
        assert_eq!(weekday_from_days(days_from_civil(2023, 1, 1)), 7); // Sunday
        assert_eq!(weekday_from_days(days_from_civil(2024, 1, 15)), 1); // Monday
    }

    #[test]
    fn local_date_with_offsets() {
        // 2024-02-29T23:30:00Z
        let now = micros_from_utc(2024, 2, 29, 23, 30, 0);
        assert_eq!(local_date(now, 0), Date::new(2024, 2, 29));
        assert_eq!(local_date(now, 8 * 3600), Date::new(2024, 3, 1)); // Shanghai
        assert_eq!(local_date(now, 1800), Date::new(2024, 3, 1)); // +00:30
        assert_eq!(local_weekday(now, 8 * 3600), 5); // Friday
                                                     // 2024-01-01T03:00:00Z is still 2023-12-31 in New York (−05:00).
        let new_year = micros_from_utc(2024, 1, 1, 3, 0, 0);
        assert_eq!(local_date(new_year, -5 * 3600), Date::new(2023, 12, 31));
        assert_eq!(local_weekday(new_year, -5 * 3600), 7);
        assert_eq!(local_date(new_year, 0), Date::new(2024, 1, 1));
        // Before the epoch a negative offset must floor, not truncate, to the earlier day.
        let early = micros_from_utc(1970, 1, 1, 2, 0, 0);
        assert_eq!(local_date(early, -3 * 3600), Date::new(1969, 12, 31));
        assert_eq!(local_date(-1, 0), Date::new(1969, 12, 31));
        // Exactly midnight belongs to the new day.
        assert_eq!(
            local_date(micros_from_utc(2023, 3, 1, 0, 0, 0), 0),
            Date::new(2023, 3, 1)
        );
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let _ = local_date(i64::MAX, 14 * 3600);
        let _ = local_date(i64::MIN, -12 * 3600);
        let _ = local_weekday(i64::MIN, 0);
    }

    #[test]
    fn anniversaries() {
        let leapling = Date::new(2000, 2, 29);
        assert!(is_anniversary(&leapling, &Date::new(2024, 2, 29)));
        assert!(!is_anniversary(&leapling, &Date::new(2024, 2, 28)));
        assert!(is_anniversary(&leapling, &Date::new(2023, 2, 28)));
        assert!(!is_anniversary(&leapling, &Date::new(2023, 3, 1)));
        assert!(is_anniversary(&leapling, &Date::new(2100, 2, 28)));
        let may = Date::new(1990, 5, 17);
        assert!(is_anniversary(&may, &Date::new(2025, 5, 17)));
        assert!(!is_anniversary(&may, &Date::new(2025, 5, 18)));
        assert!(!is_anniversary(&may, &Date::new(2025, 6, 17)));
    }
}
