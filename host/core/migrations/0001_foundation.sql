-- The foundation schema. One file serves SQLite and PostgreSQL: only BIGINT and TEXT
-- columns, timestamps as unix microseconds, money as integer minor units, JSON as TEXT.
-- Every primary key starts with merchant_id so a merchant's rows can live on one shard.

CREATE TABLE merchants (
    merchant_id      TEXT   NOT NULL PRIMARY KEY,
    name             TEXT   NOT NULL,
    currency         TEXT   NOT NULL,
    currency_exponent BIGINT NOT NULL,
    timezone         TEXT   NOT NULL,
    default_region   TEXT   NOT NULL,
    settings         TEXT   NOT NULL,
    created_at       BIGINT NOT NULL
);

CREATE TABLE api_keys (
    merchant_id  TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    key_hash     TEXT   NOT NULL,
    key_prefix   TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);

CREATE TABLE stores (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    code        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX stores_code ON stores (merchant_id, code);

CREATE TABLE members (
    merchant_id       TEXT   NOT NULL,
    id                TEXT   NOT NULL,
    phone             TEXT,
    email             TEXT,
    name              TEXT,
    birthday          TEXT,
    external_id       TEXT,
    attributes        TEXT   NOT NULL,
    tier              TEXT,
    joined_at         BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    lifetime_spend    BIGINT NOT NULL DEFAULT 0,
    orders_count      BIGINT NOT NULL DEFAULT 0,
    last_purchase_at  BIGINT,
    -- bumped by every write that touches the member: the row lock that serialises them
    version           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX members_phone ON members (merchant_id, phone);
CREATE UNIQUE INDEX members_email ON members (merchant_id, email);
CREATE UNIQUE INDEX members_external_id ON members (merchant_id, external_id);

-- Member accounts carry a cached balance; merchant-side accounts never do (their balance is
-- the sum of their postings), so no hot row is updated on the write path.
CREATE TABLE accounts (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    member_id   TEXT,
    asset       TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0,
    version     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX accounts_member ON accounts (merchant_id, member_id);

CREATE TABLE transactions (
    merchant_id     TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    member_id       TEXT,
    idempotency_key TEXT,
    reference       TEXT,
    reason          TEXT,
    provenance      TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX transactions_member ON transactions (merchant_id, member_id, id);

CREATE TABLE postings (
    merchant_id    TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    seq            BIGINT NOT NULL,
    account_id     TEXT   NOT NULL,
    asset          TEXT   NOT NULL,
    amount         BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, transaction_id, seq)
);
-- No index by account: member accounts cache their balance, and the merchant-side
-- balances are summed by `verify` and reports, which scan anyway.

CREATE TABLE point_lots (
    merchant_id    TEXT   NOT NULL,
    id             TEXT   NOT NULL,
    member_id      TEXT   NOT NULL,
    transaction_id TEXT   NOT NULL,
    state          TEXT   NOT NULL, -- pending | active | closed
    earned         BIGINT NOT NULL,
    remaining      BIGINT NOT NULL,
    activates_at   BIGINT NOT NULL,
    expires_at     BIGINT,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
-- covers the next-expiry sum and the FIFO spend order without touching the table
CREATE INDEX point_lots_member ON point_lots (merchant_id, member_id, state, expires_at, remaining);
-- per member: the settlement of one member must not walk the merchant-wide index below
CREATE INDEX point_lots_member_activation ON point_lots (merchant_id, member_id, state, activates_at);
CREATE INDEX point_lots_activation ON point_lots (state, activates_at);
CREATE INDEX point_lots_expiry ON point_lots (state, expires_at);

CREATE TABLE purchases (
    merchant_id         TEXT   NOT NULL,
    id                  TEXT   NOT NULL,
    member_id           TEXT   NOT NULL,
    store_id            TEXT   NOT NULL,
    external_id         TEXT,
    occurred_at         BIGINT NOT NULL,
    total               BIGINT NOT NULL,
    refunded            BIGINT NOT NULL DEFAULT 0,
    points_awarded      BIGINT NOT NULL,
    points_reversed     BIGINT NOT NULL DEFAULT 0,
    lot_id              TEXT,
    transaction_id      TEXT   NOT NULL,
    payments            TEXT   NOT NULL, -- JSON: per method amount, stored-value split, points
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX purchases_external_id ON purchases (merchant_id, external_id);
CREATE INDEX purchases_member ON purchases (merchant_id, member_id, occurred_at);

CREATE TABLE purchase_items (
    merchant_id  TEXT   NOT NULL,
    purchase_id  TEXT   NOT NULL,
    line         BIGINT NOT NULL,
    sku          TEXT   NOT NULL,
    name         TEXT,
    category     TEXT,
    quantity     BIGINT NOT NULL,
    unit_price   BIGINT NOT NULL,
    total        BIGINT NOT NULL,
    refunded_quantity BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, purchase_id, line)
);

CREATE TABLE refunds (
    merchant_id     TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    purchase_id     TEXT   NOT NULL,
    amount          BIGINT NOT NULL,
    points_reversed BIGINT NOT NULL,
    points_shortfall BIGINT NOT NULL,
    transaction_id  TEXT   NOT NULL,
    detail          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX refunds_purchase ON refunds (merchant_id, purchase_id);

CREATE TABLE count_card_packages (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    sku         TEXT   NOT NULL,
    uses        BIGINT NOT NULL,
    price       BIGINT NOT NULL,
    valid_days  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX count_card_packages_sku ON count_card_packages (merchant_id, sku);

CREATE TABLE count_cards (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    package_id  TEXT   NOT NULL,
    account_id  TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    uses        BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX count_cards_member ON count_cards (merchant_id, member_id);

-- One row per applied Idempotency-Key; the stored response is returned byte for byte.
CREATE TABLE idempotency_keys (
    merchant_id     TEXT   NOT NULL,
    key             TEXT   NOT NULL,
    request_digest  TEXT   NOT NULL,
    status          BIGINT NOT NULL,
    response        TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
