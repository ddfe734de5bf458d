-- What the merchant sells, learned from purchases (for recommendations), and which effects of
-- which events were applied (so a redelivered event applies nothing twice).

CREATE TABLE item_stats (
    merchant_id     TEXT   NOT NULL,
    sku             TEXT   NOT NULL,
    name            TEXT,
    category        TEXT,
    last_unit_price BIGINT NOT NULL,
    units_sold      BIGINT NOT NULL,
    orders_count    BIGINT NOT NULL,
    last_sold_at    BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, sku)
);
CREATE INDEX item_stats_popular ON item_stats (merchant_id, units_sold);

-- Orders holding both `sku` and `other_sku`, stored in both directions.
CREATE TABLE co_purchases (
    merchant_id  TEXT   NOT NULL,
    sku          TEXT   NOT NULL,
    other_sku    TEXT   NOT NULL,
    orders_count BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, sku, other_sku)
);

CREATE TABLE event_effects (
    merchant_id TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    effect      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, event_id, effect)
);
