-- The live server's rows, generated in the database (psql, as osrs_user, after seed_schema.sql):
--   psql -v mapping_file=F -v items=N -v days=D -v window=W -v history_end=EPOCH -f seed_data.sql
-- items            the OSRS API's /mapping (JSON file F), as the old items job stored it
-- price_data_5min  D days of W-second windows for the first N items up to the window starting
--                  at EPOCH (its last), ~5 % of item-windows not traded (null prices, as the API
--                  answers), and DUPLICATES: four whole windows stored twice (a collector restarted
--                  mid-window) and a scatter of single rows stored twice
-- prices_1h, prices_latest_1m, player_counts, osrs_news   rows of the same period
-- predictions, actual_fills, calibration_metrics          the ML pipeline's rows
\set ON_ERROR_STOP on
SET TimeZone = 'UTC';

\set mapping `cat :mapping_file`
INSERT INTO items (id, name, examine, members, lowalch, highalch, "limit", value, icon)
SELECT (m->>'id')::int, m->>'name', m->>'examine', (m->>'members')::boolean, (m->>'lowalch')::int,
       (m->>'highalch')::int, (m->>'limit')::int, (m->>'value')::int, m->>'icon'
FROM json_array_elements(:'mapping'::json) AS m;

CREATE TEMP TABLE seed_items AS
SELECT id AS item_id, row_number() OVER (ORDER BY id) AS n, 100 + (abs(hashint4(id)) % 500000) AS base
FROM items ORDER BY id LIMIT :items;

CREATE TEMP TABLE seed_windows AS
SELECT to_timestamp(t) AS ts, t
FROM generate_series(:history_end::bigint - (:days::bigint * 86400) + :window, :history_end::bigint, :window) AS t;

INSERT INTO price_data_5min (item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price, low_price_volume)
SELECT i.item_id, w.ts,
       CASE WHEN abs(hashint8(w.t * 7 + i.item_id)) % 20 = 0 THEN NULL
            ELSE round(i.base * (1.02 + 0.05 * sin(w.t / 7200.0 + i.n)))::bigint END,
       abs(hashint8(w.t + i.item_id)) % 400,
       CASE WHEN abs(hashint8(w.t * 11 + i.item_id)) % 20 = 0 THEN NULL
            ELSE round(i.base * (0.98 + 0.05 * sin(w.t / 7200.0 + i.n)))::bigint END,
       abs(hashint8(w.t - i.item_id)) % 500
FROM seed_windows AS w CROSS JOIN seed_items AS i;

-- Duplicates: whole windows stored twice, and single rows.
INSERT INTO price_data_5min
SELECT p.* FROM price_data_5min AS p
WHERE p."timestamp" IN (SELECT ts FROM seed_windows ORDER BY t DESC OFFSET 3 LIMIT 4)
   OR abs(hashint8(extract(epoch FROM p."timestamp")::bigint * 13 + p.item_id)) % 1000 = 0;

INSERT INTO prices_1h (item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price, low_price_volume)
SELECT item_id, date_trunc('hour', "timestamp"), avg(avg_high_price)::bigint, sum(high_price_volume),
       avg(avg_low_price)::bigint, sum(low_price_volume)
FROM price_data_5min
WHERE "timestamp" < date_trunc('hour', to_timestamp(:history_end))
GROUP BY 1, 2;

INSERT INTO prices_latest_1m (item_id, "timestamp", high, high_time, low, low_time)
SELECT i.item_id, m, round(i.base * 1.03)::bigint, m - interval '20 seconds', round(i.base * 0.97)::bigint,
       m - interval '40 seconds'
FROM seed_items AS i
CROSS JOIN generate_series(to_timestamp(:history_end) - interval '1 day', to_timestamp(:history_end), interval '1 minute') AS m
WHERE i.n <= 100;

INSERT INTO player_counts ("timestamp", count)
SELECT m, 60000 + (abs(hashint8(extract(epoch FROM m)::bigint)) % 40000)::int
FROM generate_series(to_timestamp(:history_end) - make_interval(days => :days), to_timestamp(:history_end), interval '1 minute') AS m;

INSERT INTO osrs_news (guid, title, link, category, description, pub_date)
SELECT 'https://secure.runescape.com/m=news/seed-' || g, 'News item ' || g,
       'https://secure.runescape.com/m=news/seed-' || g, (ARRAY['Game Updates', 'Community', 'Events'])[1 + g % 3],
       'What changed in week ' || g, to_timestamp(:history_end) - make_interval(days => g)
FROM generate_series(1, 40) AS g;

INSERT INTO predictions (item_id, created_at, horizon_minutes, predicted_high, predicted_low, confidence, model_version)
SELECT i.item_id, to_timestamp(:history_end) - make_interval(mins => g), (ARRAY[30, 60, 240])[1 + g % 3],
       round(i.base * 1.04)::bigint, round(i.base * 0.96)::bigint, (g % 100) / 100.0, 'lgbm-2025.11'
FROM generate_series(1, 20000) AS g
JOIN seed_items AS i ON i.n = 1 + g % :items;

INSERT INTO actual_fills (prediction_id, item_id, filled_at, price, quantity)
SELECT p.id, p.item_id, p.created_at + interval '7 minutes', p.predicted_low + p.id % 17, 1 + (p.id % 50)::int
FROM predictions AS p
WHERE p.id % 4 = 0;

INSERT INTO calibration_metrics (computed_at, model_version, metric, value)
SELECT to_timestamp(:history_end) - make_interval(hours => g), 'lgbm-2025.11',
       (ARRAY['mae', 'coverage_90', 'fill_rate'])[1 + g % 3], (g % 97) / 97.0
FROM generate_series(1, 500) AS g;

ANALYZE;
