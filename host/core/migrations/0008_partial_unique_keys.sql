-- Unique keys a row may lack (a purchase's external_id; a member's phone, email and external
-- id) are indexed only where present. Uniqueness is unchanged (NULLs never collided), but a
-- lookup by primary key (merchant_id, id) can no longer be planned through them:
-- PostgreSQL's writer lanes, with generic plans cached while the tables were young (every
-- estimate one row, and sequential scans ruled out), locked the member through
-- members_external_id and read a refunded purchase through purchases_external_id, both with
-- only merchant_id as the index condition and the id as a filter, a walk over all of the
-- merchant's members or purchases (auto_explain under the ledger benchmark: 0.82 ms at the
-- median for the purchase against 0.011 ms through its primary key, and growing with the
-- merchant). A partial index serves only queries that name its column, so the planner has
-- nothing to confuse. Purchases without an external_id also stop paying for an index entry.

DROP INDEX purchases_external_id;
CREATE UNIQUE INDEX purchases_external_id ON purchases (merchant_id, external_id)
    WHERE external_id IS NOT NULL;
DROP INDEX members_phone;
CREATE UNIQUE INDEX members_phone ON members (merchant_id, phone) WHERE phone IS NOT NULL;
DROP INDEX members_email;
CREATE UNIQUE INDEX members_email ON members (merchant_id, email) WHERE email IS NOT NULL;
DROP INDEX members_external_id;
CREATE UNIQUE INDEX members_external_id ON members (merchant_id, external_id)
    WHERE external_id IS NOT NULL;
