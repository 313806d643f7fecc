-- 001: base schema. Plain PostgreSQL (no TimescaleDB calls): hypertables, compression,
-- retention and aggregates are applied by the timescaledb role after detecting the edition.
-- All times are UTC timestamptz. Every price table has PRIMARY KEY (item_id, "timestamp").

CREATE TABLE IF NOT EXISTS items (
    item_id     integer PRIMARY KEY,
    name        text        NOT NULL,
    examine     text,
    members     boolean,
    lowalch     integer,
    highalch    integer,
    ge_limit    integer,
    value       integer,
    icon        text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- /5m windows: "timestamp" is the window's start (the API's top-level timestamp).
CREATE TABLE IF NOT EXISTS price_data_5min (
    item_id            integer     NOT NULL,
    "timestamp"        timestamptz NOT NULL,
    avg_high_price     bigint,
    high_price_volume  bigint      NOT NULL DEFAULT 0,
    avg_low_price      bigint,
    low_price_volume   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, "timestamp")
);

-- /1h windows, same shape as price_data_5min.
CREATE TABLE IF NOT EXISTS prices_1h (
    item_id            integer     NOT NULL,
    "timestamp"        timestamptz NOT NULL,
    avg_high_price     bigint,
    high_price_volume  bigint      NOT NULL DEFAULT 0,
    avg_low_price      bigint,
    low_price_volume   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, "timestamp")
);

-- /latest every minute: "timestamp" is the collection minute (UTC, truncated to the minute).
CREATE TABLE IF NOT EXISTS prices_latest_1m (
    item_id      integer     NOT NULL,
    "timestamp"  timestamptz NOT NULL,
    high         bigint,
    high_time    timestamptz,
    low          bigint,
    low_time     timestamptz,
    PRIMARY KEY (item_id, "timestamp")
);

CREATE TABLE IF NOT EXISTS player_counts (
    "timestamp"  timestamptz NOT NULL PRIMARY KEY,
    player_count integer     NOT NULL CHECK (player_count >= 0)
);

CREATE TABLE IF NOT EXISTS osrs_news (
    guid          text PRIMARY KEY,
    source        text        NOT NULL,            -- 'osrs_news' | 'wiki_recent_changes'
    title         text        NOT NULL,
    link          text,
    category      text,
    description   text,
    published_at  timestamptz,
    fetched_at    timestamptz NOT NULL DEFAULT now()
);

-- Ledger of API windows fetched, empty ones included, so a gap is found by a query and an
-- empty window is never asked for again. series: '5m' | '1h'.
CREATE TABLE IF NOT EXISTS collection_windows (
    series        text        NOT NULL CHECK (series IN ('5m', '1h')),
    window_start  timestamptz NOT NULL,
    item_count    integer     NOT NULL,
    fetched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series, window_start)
);

CREATE INDEX IF NOT EXISTS price_data_5min_timestamp_idx ON price_data_5min ("timestamp" DESC);
CREATE INDEX IF NOT EXISTS prices_1h_timestamp_idx ON prices_1h ("timestamp" DESC);
CREATE INDEX IF NOT EXISTS prices_latest_1m_timestamp_idx ON prices_latest_1m ("timestamp" DESC);
CREATE INDEX IF NOT EXISTS osrs_news_published_at_idx ON osrs_news (published_at DESC);
