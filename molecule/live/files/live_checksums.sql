-- Checksums of the live server's data, one JSON object on stdout (prepare records it before
-- the run; the tests compute it again after). Run as postgres in osrs_data:
--   psql -X -q -At -v cutoff=EPOCH -v predictions_max=N -v actual_fills_max=N -v calibration_metrics_max=N -f live_checksums.sql
-- ML tables: rows and md5 of their rows in id order, up to the ids stored before the run (the
-- inference stand-in keeps adding predictions). price_data_5min up to the cutoff: rows (with
-- duplicates), distinct rows, and sums of every column over the distinct rows.
\set ON_ERROR_STOP on
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET extra_float_digits = 3;
SELECT json_build_object(
  'predictions', (SELECT json_build_object('rows', count(*), 'md5', md5(coalesce(string_agg(t::text, E'\n' ORDER BY t.id), '')))
                  FROM predictions AS t WHERE t.id <= :predictions_max),
  'actual_fills', (SELECT json_build_object('rows', count(*), 'md5', md5(coalesce(string_agg(t::text, E'\n' ORDER BY t.id), '')))
                   FROM actual_fills AS t WHERE t.id <= :actual_fills_max),
  'calibration_metrics', (SELECT json_build_object('rows', count(*), 'md5', md5(coalesce(string_agg(t::text, E'\n' ORDER BY t.id), '')))
                          FROM calibration_metrics AS t WHERE t.id <= :calibration_metrics_max),
  'price_data_5min', (
    SELECT json_build_object(
      'rows', (SELECT count(*) FROM price_data_5min WHERE "timestamp" <= to_timestamp(:cutoff)),
      'distinct_rows', count(*),
      'windows', count(DISTINCT d."timestamp"),
      'sum_item_id', sum(d.item_id),
      'sum_epoch', sum(extract(epoch FROM d."timestamp")::bigint),
      'sum_avg_high_price', sum(d.avg_high_price),
      'sum_high_price_volume', sum(d.high_price_volume),
      'sum_avg_low_price', sum(d.avg_low_price),
      'sum_low_price_volume', sum(d.low_price_volume))
    FROM (SELECT DISTINCT item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price, low_price_volume
          FROM price_data_5min WHERE "timestamp" <= to_timestamp(:cutoff)) AS d)
);
