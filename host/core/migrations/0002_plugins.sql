-- The plugin registry: component bytes by content, each merchant's plugin versions, and which
-- versions each store runs for each world. Same schema on SQLite and PostgreSQL.

-- Component bytes, stored once per content hash whoever uploaded them. Never read across
-- merchants: every lookup goes through a merchant's own `plugins` row first.
CREATE TABLE plugin_components (
    sha256      TEXT   NOT NULL PRIMARY KEY,
    size_bytes  BIGINT NOT NULL,
    -- BYTEA is PostgreSQL's binary type; SQLite stores a blob as given whatever the type name.
    bytes       BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE plugins (
    merchant_id    TEXT   NOT NULL REFERENCES merchants (merchant_id),
    id             TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    version        TEXT   NOT NULL,
    world          TEXT   NOT NULL,
    wit_version    TEXT   NOT NULL,
    description    TEXT   NOT NULL,
    -- JSON Schema (text) the store configuration must satisfy.
    config_schema  TEXT   NOT NULL,
    -- JSON object (text) of limit overrides the manifest asked for, within the operator's.
    limits         TEXT   NOT NULL,
    sha256         TEXT   NOT NULL REFERENCES plugin_components (sha256),
    size_bytes     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE UNIQUE INDEX plugins_name_version ON plugins (merchant_id, name, version);

-- Which plugin versions a store runs for a world, with configuration and priority (lower
-- runs first). The circuit opens after consecutive failures; an admin's PUT closes it.
CREATE TABLE store_plugins (
    merchant_id           TEXT   NOT NULL,
    store_id              TEXT   NOT NULL,
    world                 TEXT   NOT NULL,
    plugin_id             TEXT   NOT NULL,
    config                TEXT   NOT NULL,
    priority              BIGINT NOT NULL,
    consecutive_failures  BIGINT NOT NULL,
    circuit_opened_at     BIGINT,
    updated_at            BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, store_id, world, plugin_id),
    FOREIGN KEY (merchant_id, store_id) REFERENCES stores (merchant_id, id),
    FOREIGN KEY (merchant_id, plugin_id) REFERENCES plugins (merchant_id, id)
);
CREATE INDEX store_plugins_plugin ON store_plugins (merchant_id, plugin_id);
