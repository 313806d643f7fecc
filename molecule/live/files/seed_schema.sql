-- The live server's database as it runs today (its README and plan): database osrs_data,
-- owned and written by osrs_user (the compose collectors and the ML pipeline log in as it).
-- Differences from the project's schema (roles/timescaledb/files/migrations): items.id,
-- osrs_news.pub_date, player_counts.count; price_data_5min has NO primary key, so the same
-- (item_id, "timestamp") can appear twice; the ML pipeline's own tables live here too.
-- Applied as osrs_user, so osrs_user owns every table (as on the server).

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE items (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    examine     text,
    members     boolean,
    lowalch     integer,
    highalch    integer,
    "limit"     integer,
    value       integer,
    icon        text,
    updated_at  timestamp with time zone DEFAULT now()
);

-- No primary key: duplicates possible (and present).
CREATE TABLE price_data_5min (
    item_id            integer NOT NULL,
    "timestamp"        timestamp with time zone NOT NULL,
    avg_high_price     bigint,
    high_price_volume  bigint,
    avg_low_price      bigint,
    low_price_volume   bigint
);
CREATE INDEX idx_price_data_5min_item_time ON price_data_5min (item_id, "timestamp" DESC);
CREATE INDEX idx_price_data_5min_time ON price_data_5min ("timestamp" DESC);

CREATE TABLE prices_latest_1m (
    item_id      integer NOT NULL,
    "timestamp"  timestamp with time zone NOT NULL,
    high         bigint,
    high_time    timestamp with time zone,
    low          bigint,
    low_time     timestamp with time zone,
    PRIMARY KEY (item_id, "timestamp")
);

CREATE TABLE prices_1h (
    item_id            integer NOT NULL,
    "timestamp"        timestamp with time zone NOT NULL,
    avg_high_price     bigint,
    high_price_volume  bigint,
    avg_low_price      bigint,
    low_price_volume   bigint,
    PRIMARY KEY (item_id, "timestamp")
);

CREATE TABLE osrs_news (
    guid         text PRIMARY KEY,
    title        text NOT NULL,
    link         text,
    category     text,
    description  text,
    pub_date     timestamp with time zone,
    created_at   timestamp with time zone DEFAULT now()
);
CREATE INDEX idx_osrs_news_pub_date ON osrs_news (pub_date DESC);

CREATE TABLE player_counts (
    "timestamp"  timestamp with time zone PRIMARY KEY,
    count        integer NOT NULL
);

-- The ML pipeline's tables (the project never alters, re-owns or re-grants them).
CREATE TABLE predictions (
    id               bigserial PRIMARY KEY,
    item_id          integer NOT NULL,
    created_at       timestamp with time zone NOT NULL DEFAULT now(),
    horizon_minutes  integer NOT NULL,
    predicted_high   bigint,
    predicted_low    bigint,
    confidence       double precision,
    model_version    text NOT NULL
);
CREATE INDEX idx_predictions_item_created ON predictions (item_id, created_at DESC);

CREATE TABLE actual_fills (
    id             bigserial PRIMARY KEY,
    prediction_id  bigint REFERENCES predictions (id),
    item_id        integer NOT NULL,
    filled_at      timestamp with time zone NOT NULL,
    price          bigint NOT NULL,
    quantity       integer NOT NULL
);

CREATE TABLE calibration_metrics (
    id             bigserial PRIMARY KEY,
    computed_at    timestamp with time zone NOT NULL DEFAULT now(),
    model_version  text NOT NULL,
    metric         text NOT NULL,
    value          double precision
);
