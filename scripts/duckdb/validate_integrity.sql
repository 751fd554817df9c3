-- Dataset integrity of block_times, per chain: duplicates, missing block numbers,
-- parent links, deltas recomputed, rows in the right partition.
--
-- Plain DuckDB CLI, from anywhere (data_dir defaults to 'data', relative to the
-- working directory):
--   duckdb -cmd "SET VARIABLE data_dir = '/var/lib/blocktimesd'" \
--          -f scripts/duckdb/validate_integrity.sql
-- Optional: SET VARIABLE chains = ['consensus'];   (default: every chain)
-- `blocktimesd validate` runs this file unchanged; a status FAIL in the last table
-- makes it exit 1.  docs/runbook/backfill.md explains each check.

SET VARIABLE data_dir = coalesce(getvariable('data_dir'), 'data');

CREATE OR REPLACE TEMP VIEW bt AS
SELECT *
FROM read_parquet(getvariable('data_dir') || '/block_times/*/*/*.parquet',
                  hive_partitioning = false, filename = true)
WHERE getvariable('chains') IS NULL OR list_contains(getvariable('chains'), chain);

-- Rows on disk, per chain.
SELECT chain,
       count(*) AS rows_on_disk,
       min(block_number) AS first_block,
       max(block_number) AS last_block,
       strftime(epoch_ms(min(timestamp_ms)), '%Y-%m-%dT%H:%M:%SZ') AS first_time,
       strftime(epoch_ms(max(timestamp_ms)), '%Y-%m-%dT%H:%M:%SZ') AS last_time,
       count(DISTINCT filename) AS files
FROM bt
GROUP BY chain
ORDER BY chain;

-- Integrity checks: one line per chain and check; any FAIL is a broken dataset.
-- findings: extra rows (duplicate_block_number), hashes seen twice (duplicate_hash),
-- block numbers absent between the first and the last (missing_block_numbers), rows
-- (the others); examples: the lowest block numbers (or hashes, or missing ranges).
-- Consecutive rows are N - 1 and N; with duplicates, each copy of N is compared with
-- each copy of N - 1.
WITH pairs AS (
    -- Each row N next to the row N - 1 (a hash join, not a sort: memory stays small).
    -- Hashes are compared by their 64-bit hash(): 8 bytes a row instead of 66 (a broken
    -- link hides only if two different hashes collide, about 2^-64 a row).  BIGINT:
    -- differences of uint32 block numbers must not overflow below 0.  The unmatched
    -- sides of the full join are the first and the last block of each run of numbers.
    SELECT coalesce(a.chain, b.chain) AS chain, a.n, b.n - 1 AS prev_n,
           a.parent_key, b.key AS prev_key, a.ts, b.ts AS prev_ts, a.delta
    FROM (SELECT chain, block_number::BIGINT AS n, hash(parent_hash) AS parent_key,
                 timestamp_ms AS ts, delta_since_parent_ms AS delta FROM bt) AS a
    FULL JOIN (SELECT chain, block_number::BIGINT + 1 AS n, hash(hash) AS key,
                      timestamp_ms AS ts FROM bt) AS b
           ON a.chain = b.chain AND a.n = b.n
),
per_chain AS MATERIALIZED (
    SELECT chain,
           count(*) FILTER (parent_key <> prev_key) AS link_n,
           min(n, 5) FILTER (parent_key <> prev_key) AS link_ex,
           count(*) FILTER (prev_n IS NOT NULL AND delta IS DISTINCT FROM ts - prev_ts)
               AS delta_n,
           min(n, 5) FILTER (prev_n IS NOT NULL AND delta IS DISTINCT FROM ts - prev_ts)
               AS delta_ex,
           list_sort(list(DISTINCT n) FILTER (prev_n IS NULL)) AS run_firsts,
           list_sort(list(DISTINCT prev_n) FILTER (n IS NULL)) AS run_lasts
    FROM pairs
    GROUP BY chain
),
runs AS (
    SELECT chain, unnest(run_firsts) AS first_n, unnest(run_lasts) AS last_n FROM per_chain
),
gaps AS (
    SELECT chain, prev_last + 1 AS first_missing, first_n - 1 AS last_missing
    FROM (SELECT chain, first_n,
                 lag(last_n) OVER (PARTITION BY chain ORDER BY first_n) AS prev_last
          FROM runs)
    WHERE prev_last IS NOT NULL
),
gap_totals AS (
    SELECT chain, sum(last_missing - first_missing + 1) AS gap_n,
           arg_min(format('{}..{}', first_missing, last_missing), first_missing, 5) AS gap_ex
    FROM gaps GROUP BY chain
),
dup_numbers AS (
    SELECT chain, sum(copies - 1) AS dup_n, min(block_number, 5) AS dup_ex
    FROM (SELECT chain, block_number, count(*) AS copies FROM bt
          GROUP BY ALL HAVING count(*) > 1)
    GROUP BY chain
),
placement AS MATERIALIZED (
    SELECT chain,
           count(*) FILTER (NOT placed) AS place_n,
           min(block_number, 5) FILTER (NOT placed) AS place_ex
    FROM (SELECT chain, block_number,
                 contains(filename, '/chain=' || chain || '/date='
                          || strftime(epoch_ms(timestamp_ms), '%Y-%m-%d') || '/') AS placed
          FROM bt)
    GROUP BY chain
),
-- Candidates by 64-bit hash() first (8 bytes a row), then confirmed on the hashes.
dup_keys AS (
    SELECT chain, hash(hash) AS key FROM bt GROUP BY ALL HAVING count(*) > 1
),
dup_hashes AS (
    SELECT chain, count(*) AS n, min(hash, 5) AS ex
    FROM (SELECT chain, hash FROM bt
          WHERE hash(hash) IN (SELECT key FROM dup_keys)
          GROUP BY chain, hash HAVING count(*) > 1)
    GROUP BY chain
),
checks AS (
    SELECT chain, 1 AS ord, 'duplicate_block_number' AS check_name,
           coalesce(d.dup_n, 0) AS findings, d.dup_ex::VARCHAR AS examples
    FROM per_chain LEFT JOIN dup_numbers AS d USING (chain)
    UNION ALL
    SELECT chain, 2, 'duplicate_hash', coalesce(d.n, 0), d.ex::VARCHAR
    FROM per_chain LEFT JOIN dup_hashes AS d USING (chain)
    UNION ALL
    SELECT chain, 3, 'missing_block_numbers', coalesce(g.gap_n, 0), g.gap_ex::VARCHAR
    FROM per_chain LEFT JOIN gap_totals AS g USING (chain)
    UNION ALL
    SELECT chain, 4, 'broken_parent_link', link_n, link_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 5, 'wrong_delta', delta_n, delta_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 6, 'wrong_partition', place_n, place_ex::VARCHAR
    FROM per_chain JOIN placement USING (chain)
)
SELECT chain, check_name,
       CASE WHEN findings > 0 THEN 'FAIL' ELSE 'ok' END AS status,
       findings::BIGINT AS findings,
       coalesce(examples, '') AS examples
FROM checks
ORDER BY chain, ord;
