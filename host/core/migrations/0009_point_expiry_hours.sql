-- A member's spendable points by the hour they expire in: the sum of `remaining` of the
-- member's active lots with an expiry, per `expiry_hour` = expires_at / 3,600,000,000 (unix
-- microseconds; every active lot expires after it was written, so the division is a floor).
-- The balances read answers "the next expiry and the points expiring within a day of it"
-- from at most 25 of these rows and the lots of the window's last hour, instead of summing
-- every lot in the window: a member with 1,000 purchases in a day had 1,000 lots summed by
-- every later purchase (in the ledger benchmark's one-member scenario, 43 % of SQLite's
-- writer). Kept in the same transaction as every change of a lot (`points.rs`), checked by
-- `verify`. Rows that fall to zero stay, like closed lots.

CREATE TABLE point_expiry_hours (
    merchant_id TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    expiry_hour BIGINT NOT NULL,
    points      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, member_id, expiry_hour)
);

INSERT INTO point_expiry_hours (merchant_id, member_id, expiry_hour, points)
SELECT merchant_id, member_id, expires_at / 3600000000, SUM(remaining)
FROM point_lots
WHERE state = 'active' AND remaining > 0 AND expires_at IS NOT NULL
GROUP BY merchant_id, member_id, expires_at / 3600000000;
