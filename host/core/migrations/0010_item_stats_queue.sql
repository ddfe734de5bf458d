-- Purchases waiting to be counted into the item statistics. The dispatcher queues a purchase
-- when it dispatches its `purchase.recorded` event, and the counting takes up to thousands of
-- them at a time: a pair of items bought together in many of them is one upsert, where a
-- dispatcher pass of a few hundred purchases upserted nearly every pair it saw (under the
-- ledger benchmark, with 200 SKUs, the pairs' upserts were a fifth of SQLite's writer and of
-- PostgreSQL's statement time). A row is deleted in the transaction that counts it, so it is
-- counted once; the `event_effects` rows that used to mark counted purchases are not needed.

CREATE TABLE item_stats_queue (
    merchant_id TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    purchase_id TEXT   NOT NULL,
    queued_at   BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, event_id)
);

DELETE FROM event_effects WHERE effect = 'item_stats';
