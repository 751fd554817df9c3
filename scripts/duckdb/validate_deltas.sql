-- Block deltas (delta_since_parent_ms) per chain: the distribution of positive deltas,
-- the worst outliers, and checks on impossible values.
--
-- Plain DuckDB CLI (data_dir defaults to 'data', relative to the working directory):
--   duckdb -cmd "SET VARIABLE data_dir = '/var/lib/blocktimesd'" \
--          -f scripts/duckdb/validate_deltas.sql
-- Optional variables (defaults in brackets): chains [every chain], e.g. ['consensus'];
-- expected_block_ms [6000]; outlier_factor [3]; min_gap_ms [500]: Autonomys refuses
-- blocks less than 500 ms after their parent; top [10]: outliers listed per chain.
-- `blocktimesd validate` runs this file unchanged; a status FAIL in the last table
-- makes it exit 1 (warn only reports).

SET VARIABLE data_dir = coalesce(getvariable('data_dir'), 'data');
SET VARIABLE expected_block_ms = coalesce(getvariable('expected_block_ms'), 6000);
SET VARIABLE outlier_factor = coalesce(getvariable('outlier_factor'), 3);
SET VARIABLE min_gap_ms = coalesce(getvariable('min_gap_ms'), 500);
SET VARIABLE top = coalesce(getvariable('top'), 10);

CREATE OR REPLACE TEMP VIEW bt AS
SELECT *
FROM read_parquet(getvariable('data_dir') || '/block_times/*/*/*.parquet',
                  hive_partitioning = false)
WHERE getvariable('chains') IS NULL OR list_contains(getvariable('chains'), chain);

-- Distribution of the positive deltas (ms).
SELECT chain,
       count(*) AS deltas,
       min(d) AS min_ms,
       quantile_disc(d, 0.5) AS p50_ms,
       quantile_disc(d, 0.9) AS p90_ms,
       quantile_disc(d, 0.99) AS p99_ms,
       max(d) AS max_ms,
       round(avg(d), 3) AS mean_ms,
       round(stddev_samp(d), 3) AS stddev_ms
FROM (SELECT chain, delta_since_parent_ms AS d FROM bt WHERE delta_since_parent_ms > 0)
GROUP BY chain
ORDER BY chain;

-- The worst outliers: deltas above expected_block_ms * outlier_factor.
SELECT chain, block_number, hash,
       strftime(epoch_ms(timestamp_ms), '%Y-%m-%dT%H:%M:%S.%gZ') AS time,
       delta_since_parent_ms AS delta_ms
FROM bt
WHERE delta_since_parent_ms > getvariable('expected_block_ms') * getvariable('outlier_factor')
QUALIFY row_number() OVER (PARTITION BY chain
                           ORDER BY delta_since_parent_ms DESC, block_number)
        <= getvariable('top')
ORDER BY chain, delta_ms DESC, block_number;

-- Delta checks.  non_positive_delta: a block not after its parent (FAIL);
-- below_min_gap: 0 < delta < min_gap_ms (warn); null_delta: no delta on a block
-- above 1, whose parent has a timestamp (warn); outliers (warn: a finding on the chain).
WITH per_chain AS MATERIALIZED (
    SELECT chain,
           count(*) FILTER (delta_since_parent_ms <= 0) AS nonpos_n,
           min(block_number, 5) FILTER (delta_since_parent_ms <= 0) AS nonpos_ex,
           count(*) FILTER (delta_since_parent_ms > 0
                            AND delta_since_parent_ms < getvariable('min_gap_ms')) AS small_n,
           min(block_number, 5) FILTER (delta_since_parent_ms > 0
                                        AND delta_since_parent_ms < getvariable('min_gap_ms'))
               AS small_ex,
           count(*) FILTER (delta_since_parent_ms IS NULL AND block_number > 1) AS null_n,
           min(block_number, 5) FILTER (delta_since_parent_ms IS NULL AND block_number > 1)
               AS null_ex,
           count(*) FILTER (delta_since_parent_ms
                            > getvariable('expected_block_ms') * getvariable('outlier_factor'))
               AS out_n,
           arg_max(block_number, delta_since_parent_ms, 5)
               FILTER (delta_since_parent_ms
                       > getvariable('expected_block_ms') * getvariable('outlier_factor'))
               AS out_ex
    FROM bt
    GROUP BY chain
),
checks AS (
    SELECT chain, 1 AS ord, 'non_positive_delta' AS check_name, 'FAIL' AS severity,
           nonpos_n AS findings, nonpos_ex::VARCHAR AS examples
    FROM per_chain
    UNION ALL
    SELECT chain, 2, 'below_min_gap', 'warn', small_n, small_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 3, 'null_delta', 'warn', null_n, null_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 4, 'outliers', 'warn', out_n, out_ex::VARCHAR FROM per_chain
)
SELECT chain, check_name,
       CASE WHEN findings > 0 THEN severity ELSE 'ok' END AS status,
       findings::BIGINT AS findings,
       coalesce(examples, '') AS examples
FROM checks
ORDER BY chain, ord;
