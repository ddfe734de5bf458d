-- A member's spendable points by the hour they expire in, kept for members with many lots
-- expiring close together (`members.expiry_hours_kept` = 1): per `expiry_hour` = expires_at /
-- 3,600,000,000 (unix microseconds; every active lot expires after it was written, so the
-- division is a floor), the sum of `remaining` of the member's active lots with an expiry.
-- The balances read answers "the next expiry and the points expiring within a day of it" for
-- such a member from at most 25 of these rows and the lots of the window's last hour, instead
-- of summing up to 1,000 lots: a member with a thousand purchases a day (a shop's walk-in
-- account) had them summed by every later purchase (in the ledger benchmark's one-member
-- scenario, 43 % of SQLite's writer). A member is switched over, and their rows built from the
-- lots, by the first write that sums 100 lots for them (`points.rs`); from then on every change
-- of a lot moves its hour's row in the same transaction, and `verify` checks the rows. Members
-- with few lots keep no rows and pay nothing. Rows that fall to zero stay, like closed lots.

ALTER TABLE members ADD COLUMN expiry_hours_kept BIGINT NOT NULL DEFAULT 0;

CREATE TABLE point_expiry_hours (
    merchant_id TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    expiry_hour BIGINT NOT NULL,
    points      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, member_id, expiry_hour)
);
