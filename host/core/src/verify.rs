//! Ledger invariants, checked over the whole database by `loyalty verify` and by the tests.

use sqlx::{AnyPool, Row};

use crate::error::CoreError;

/// Violations listed per check at most; the count is always complete.
pub const VIOLATIONS_SHOWN_MAX: usize = 20;

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    /// How many rows the check looked at.
    pub examined: i64,
    pub violations: Vec<String>,
    pub violation_count: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|check| check.violation_count == 0)
    }
}

struct Spec {
    name: &'static str,
    /// Counts what is examined.
    examined: &'static str,
    /// Returns one row per violation, with a text column `violation`.
    violations: &'static str,
}

const CHECKS: &[Spec] = &[
    Spec {
        name: "every transaction sums to zero per asset",
        examined: "SELECT COUNT(*) FROM transactions",
        violations: "SELECT merchant_id || ' ' || transaction_id || ' ' || asset || ' sums to ' \
             || CAST(CAST(SUM(amount) AS BIGINT) AS TEXT) AS violation FROM postings \
             GROUP BY merchant_id, transaction_id, asset HAVING SUM(amount) <> 0",
    },
    Spec {
        name: "conservation: each merchant's postings sum to zero per asset",
        examined: "SELECT COUNT(*) FROM merchants",
        violations: "SELECT merchant_id || ' ' || asset || ' sums to ' \
             || CAST(CAST(SUM(amount) AS BIGINT) AS TEXT) AS violation FROM postings \
             GROUP BY merchant_id, asset HAVING SUM(amount) <> 0",
    },
    Spec {
        name: "every posting names an account of its merchant with the same asset",
        examined: "SELECT COUNT(*) FROM postings",
        violations: "SELECT p.merchant_id || ' ' || p.transaction_id || ' posts to ' || p.account_id \
             AS violation FROM postings p LEFT JOIN accounts a \
             ON a.merchant_id = p.merchant_id AND a.id = p.account_id \
             WHERE a.id IS NULL OR a.asset <> p.asset",
    },
    Spec {
        name: "every member account's cached balance equals the sum of its postings",
        examined: "SELECT COUNT(*) FROM accounts WHERE member_id IS NOT NULL",
        violations: "SELECT a.merchant_id || ' ' || a.id || ' caches ' || CAST(a.balance AS TEXT) \
             || ' but postings sum to ' || CAST(COALESCE(CAST(s.total AS BIGINT), 0) AS TEXT) AS violation \
             FROM accounts a LEFT JOIN (SELECT merchant_id, account_id, SUM(amount) AS total \
             FROM postings GROUP BY merchant_id, account_id) s \
             ON s.merchant_id = a.merchant_id AND s.account_id = a.id \
             WHERE a.member_id IS NOT NULL AND a.balance <> COALESCE(s.total, 0)",
    },
    Spec {
        name: "merchant-side accounts keep no cached balance (derived from postings)",
        examined: "SELECT COUNT(*) FROM accounts WHERE member_id IS NULL",
        violations: "SELECT merchant_id || ' ' || id AS violation FROM accounts \
             WHERE member_id IS NULL AND balance <> 0",
    },
    Spec {
        name: "no member balance below zero (points only where the merchant allows a debt)",
        examined: "SELECT COUNT(*) FROM accounts WHERE member_id IS NOT NULL",
        violations: "SELECT a.merchant_id || ' ' || a.id || ' is ' || CAST(a.balance AS TEXT) AS violation \
             FROM accounts a JOIN merchants m ON m.merchant_id = a.merchant_id \
             WHERE a.member_id IS NOT NULL AND a.balance < 0 \
             AND NOT (a.kind = 'points' AND m.settings LIKE '%\"allow_negative_points\":true%')",
    },
    Spec {
        name: "pending lots sum to the pending balance",
        examined: "SELECT COUNT(*) FROM accounts WHERE kind = 'points_pending'",
        violations: "SELECT a.merchant_id || ' ' || a.id AS violation FROM accounts a \
             LEFT JOIN (SELECT merchant_id, member_id, SUM(remaining) AS total FROM point_lots \
             WHERE state = 'pending' GROUP BY merchant_id, member_id) l \
             ON l.merchant_id = a.merchant_id AND l.member_id = a.member_id \
             WHERE a.kind = 'points_pending' AND a.balance <> COALESCE(l.total, 0)",
    },
    Spec {
        name: "active lots sum to the available balance (zero while in debt)",
        examined: "SELECT COUNT(*) FROM accounts WHERE kind = 'points'",
        violations: "SELECT a.merchant_id || ' ' || a.id AS violation FROM accounts a \
             LEFT JOIN (SELECT merchant_id, member_id, SUM(remaining) AS total FROM point_lots \
             WHERE state = 'active' GROUP BY merchant_id, member_id) l \
             ON l.merchant_id = a.merchant_id AND l.member_id = a.member_id \
             WHERE a.kind = 'points' AND COALESCE(l.total, 0) <> \
             CASE WHEN a.balance < 0 THEN 0 ELSE a.balance END",
    },
    Spec {
        name: "expiring points by hour equal the active lots expiring in that hour (members who keep them)",
        examined: "SELECT COUNT(*) FROM point_expiry_hours h JOIN members m \
             ON m.merchant_id = h.merchant_id AND m.id = h.member_id WHERE m.expiry_hours_kept = 1",
        violations: "SELECT merchant_id || ' ' || member_id || ' hour ' || CAST(expiry_hour AS TEXT) \
             || ' is off by ' || CAST(total AS TEXT) AS violation FROM ( \
             SELECT merchant_id, member_id, expiry_hour, SUM(points) AS total FROM ( \
             SELECT h.merchant_id, h.member_id, h.expiry_hour, h.points FROM point_expiry_hours h \
             JOIN members m ON m.merchant_id = h.merchant_id AND m.id = h.member_id \
             WHERE m.expiry_hours_kept = 1 \
             UNION ALL SELECT l.merchant_id, l.member_id, l.expires_at / 3600000000, -l.remaining \
             FROM point_lots l JOIN members m ON m.merchant_id = l.merchant_id AND m.id = l.member_id \
             WHERE m.expiry_hours_kept = 1 AND l.state = 'active' AND l.remaining > 0 \
             AND l.expires_at IS NOT NULL \
             ) AS both_sides GROUP BY merchant_id, member_id, expiry_hour) AS differences \
             WHERE total <> 0",
    },
    Spec {
        name: "lots are well-formed (0 <= remaining <= earned, closed lots empty)",
        examined: "SELECT COUNT(*) FROM point_lots",
        violations: "SELECT merchant_id || ' ' || id AS violation FROM point_lots \
             WHERE remaining < 0 OR remaining > earned OR (state = 'closed' AND remaining <> 0) \
             OR state NOT IN ('pending', 'active', 'closed')",
    },
    Spec {
        name: "an Idempotency-Key is applied once",
        examined: "SELECT COUNT(*) FROM idempotency_keys",
        violations: "SELECT merchant_id || ' ' || idempotency_key || ' applied ' \
             || CAST(COUNT(*) AS TEXT) || ' times' AS violation FROM transactions \
             WHERE idempotency_key IS NOT NULL GROUP BY merchant_id, idempotency_key HAVING COUNT(*) > 1",
    },
    Spec {
        name: "refunds never exceed their purchase, nor reverse more points than it earned",
        examined: "SELECT COUNT(*) FROM purchases",
        violations: "SELECT p.merchant_id || ' ' || p.id AS violation FROM purchases p \
             LEFT JOIN (SELECT merchant_id, purchase_id, SUM(amount) AS total FROM refunds \
             GROUP BY merchant_id, purchase_id) r ON r.merchant_id = p.merchant_id AND r.purchase_id = p.id \
             WHERE p.refunded < 0 OR p.refunded > p.total OR p.refunded <> COALESCE(r.total, 0) \
             OR p.points_reversed < 0 OR p.points_reversed > p.points_awarded",
    },
    Spec {
        name: "purchase lines sum to the purchase total",
        examined: "SELECT COUNT(*) FROM purchases",
        violations: "SELECT p.merchant_id || ' ' || p.id AS violation FROM purchases p \
             LEFT JOIN (SELECT merchant_id, purchase_id, SUM(total) AS total FROM purchase_items \
             GROUP BY merchant_id, purchase_id) i ON i.merchant_id = p.merchant_id AND i.purchase_id = p.id \
             WHERE p.total <> COALESCE(i.total, 0)",
    },
];

pub async fn verify(pool: &AnyPool) -> Result<Report, CoreError> {
    let mut checks = Vec::with_capacity(CHECKS.len());
    for spec in CHECKS {
        let examined: i64 = sqlx::query_scalar(spec.examined).fetch_one(pool).await?;
        let rows = sqlx::query(spec.violations).fetch_all(pool).await?;
        let mut violations = Vec::new();
        for row in rows.iter().take(VIOLATIONS_SHOWN_MAX) {
            violations.push(row.try_get::<String, _>("violation")?);
        }
        checks.push(Check {
            name: spec.name,
            examined,
            violations,
            violation_count: rows.len(),
        });
    }
    Ok(Report { checks })
}

#[cfg(test)]
mod tests {
    /// The expiry-hour check spells the hour as a literal (its SQL is a constant); it must be
    /// the hour the writer keeps the rows by.
    #[test]
    fn expiry_hour_check_uses_the_writers_hour() {
        let check = super::CHECKS
            .iter()
            .find(|spec| spec.name.starts_with("expiring points by hour"))
            .expect("the expiry-hour check");
        let hour = format!("expires_at / {}", crate::db::EXPIRY_HOUR_MICROS);
        assert!(check.violations.contains(&hour), "{}", check.violations);
    }
}
