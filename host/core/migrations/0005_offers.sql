-- Offers: coupon templates and the coupons issued from them, the gift catalogue and its
-- redemptions, campaigns (a campaign-trigger plugin with a schedule, a budget and caps) with
-- their per-member counts, and member tags.

CREATE TABLE coupon_templates (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    code        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    kind        TEXT   NOT NULL, -- amount_off | percent_off
    -- amount_off: minor units; percent_off: hundredths of a percent (1500 = 15 %)
    value       BIGINT NOT NULL,
    min_spend   BIGINT NOT NULL,
    valid_days  BIGINT NOT NULL,
    store_ids   TEXT   NOT NULL, -- JSON array; empty: every store
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX coupon_templates_code ON coupon_templates (merchant_id, code);

CREATE TABLE coupons (
    merchant_id  TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    template_id  TEXT   NOT NULL,
    member_id    TEXT   NOT NULL,
    state        TEXT   NOT NULL, -- issued | redeemed
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    source       TEXT   NOT NULL, -- admin | campaign
    campaign_id  TEXT,
    -- what issued it exactly once (a campaign action's key); NULL for an admin's issue
    issue_key    TEXT,
    purchase_id  TEXT,
    redeemed_at  BIGINT,
    discount     BIGINT,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX coupons_member ON coupons (merchant_id, member_id, id);
CREATE UNIQUE INDEX coupons_issue_key ON coupons (merchant_id, issue_key) WHERE issue_key IS NOT NULL;
CREATE INDEX coupons_campaign ON coupons (merchant_id, campaign_id) WHERE campaign_id IS NOT NULL;

CREATE TABLE gifts (
    merchant_id TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    points_cost BIGINT NOT NULL,
    stock       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);

CREATE TABLE gift_redemptions (
    merchant_id    TEXT   NOT NULL,
    id             TEXT   NOT NULL,
    gift_id        TEXT   NOT NULL,
    member_id      TEXT   NOT NULL,
    store_id       TEXT   NOT NULL,
    quantity       BIGINT NOT NULL,
    points         BIGINT NOT NULL,
    transaction_id TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX gift_redemptions_gift ON gift_redemptions (merchant_id, gift_id);

CREATE TABLE campaigns (
    merchant_id     TEXT   NOT NULL,
    id              TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    store_ids       TEXT   NOT NULL, -- JSON array; empty: every store
    plugin_id       TEXT   NOT NULL,
    config          TEXT   NOT NULL,
    starts_at       BIGINT NOT NULL,
    ends_at         BIGINT NOT NULL,
    budget_points   BIGINT,          -- NULL: no limit
    budget_coupons  BIGINT,          -- NULL: no limit
    per_member_cap  BIGINT,          -- actions per member; NULL: no limit
    points_granted  BIGINT NOT NULL,
    coupons_issued  BIGINT NOT NULL,
    actions_applied BIGINT NOT NULL,
    actions_dropped BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);

CREATE TABLE campaign_members (
    merchant_id TEXT   NOT NULL,
    campaign_id TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    actions     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, campaign_id, member_id)
);

CREATE TABLE member_tags (
    merchant_id TEXT   NOT NULL,
    member_id   TEXT   NOT NULL,
    tag         TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, member_id, tag)
);
