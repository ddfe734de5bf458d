-- The programme a merchant runs: tiers and tier history, the outbox of domain events, webhook
-- registrations and their deliveries, and the daily tick's record per merchant and local date.
-- Same schema on SQLite and PostgreSQL.

-- The merchant's tiers, ranked (0 is the lowest). `earn_multiplier` is a decimal string.
CREATE TABLE tiers (
    merchant_id     TEXT   NOT NULL,
    code            TEXT   NOT NULL,
    tier_rank       BIGINT NOT NULL,
    name            TEXT   NOT NULL,
    benefits        TEXT   NOT NULL,
    earn_multiplier TEXT   NOT NULL,
    attributes      TEXT   NOT NULL, -- JSON object: the tier's own settings for policies
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, code)
);

-- Every change of a member's tier, with why and who decided.
CREATE TABLE tier_history (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    from_tier   TEXT,
    to_tier     TEXT,
    reason      TEXT   NOT NULL,
    source      TEXT   NOT NULL, -- purchase | refund | daily_tick | admin
    provenance  TEXT,            -- JSON: the plugin, its version and input digest
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX tier_history_member ON tier_history (merchant_id, member_id, id);

-- The outbox: written in the transaction of the change that caused the event, delivered
-- afterwards (at least once) by the dispatcher. `dedupe_key` makes an event the scheduler
-- may emit twice (a rerun day) land once.
CREATE TABLE events (
    merchant_id   TEXT   NOT NULL,
    id            TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    member_id     TEXT,
    store_id      TEXT,
    data          TEXT   NOT NULL, -- JSON object
    dedupe_key    TEXT,
    created_at    BIGINT NOT NULL,
    dispatched_at BIGINT,
    PRIMARY KEY (merchant_id, id)
);
-- Partial indexes: an event without a dedupe key, or once dispatched, costs them nothing.
CREATE UNIQUE INDEX events_dedupe ON events (merchant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX events_undispatched ON events (created_at, id) WHERE dispatched_at IS NULL;

CREATE TABLE webhooks (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    url         TEXT   NOT NULL,
    events      TEXT   NOT NULL, -- JSON array of event kinds, or ["*"]
    secret      TEXT   NOT NULL, -- the HMAC key; the merchant chose it and needs it to verify
    active      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);

-- One row per (webhook, event): its attempts so far and where it stands.
CREATE TABLE webhook_deliveries (
    merchant_id     TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    webhook_id      TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    event_kind      TEXT   NOT NULL,
    state           TEXT   NOT NULL, -- pending | delivered | failed
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (merchant_id, webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

-- The daily tick of a merchant's local date: claimed by one host, finished once. A claim
-- older than the lease is taken over (the host died mid-tick; every step is idempotent).
CREATE TABLE daily_ticks (
    merchant_id TEXT   NOT NULL,
    local_date  TEXT   NOT NULL, -- YYYY-MM-DD in the merchant's time zone
    state       TEXT   NOT NULL, -- running | done
    claimed_at  BIGINT NOT NULL,
    finished_at BIGINT,
    summary     TEXT,            -- JSON: what the tick did
    PRIMARY KEY (merchant_id, local_date)
);
