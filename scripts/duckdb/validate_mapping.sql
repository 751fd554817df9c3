-- Domain -> consensus mapping: every domain row joined to the consensus row it names
-- (consensus_block_hash = hash).  A domain block's timestamp is copied from its
-- consensus block, so the two timestamps must be equal (docs/runbook/domain-stream.md).
--
-- Plain DuckDB CLI (data_dir defaults to 'data', relative to the working directory):
--   duckdb -cmd "SET VARIABLE data_dir = '/var/lib/blocktimesd'" \
--          -f scripts/duckdb/validate_mapping.sql
-- Optional variables (defaults in brackets): chains [every chain]: the domain chains
-- to check, e.g. ['auto-evm']; domain_chains [['auto-evm']]: chains that are domains
-- even when none of their rows names a consensus block; top [10].
-- Domain chains: chains whose rows have no slot (consensus rows always have one) and
-- that are named in domain_chains or name a consensus block in some row.  Consensus
-- rows: every row with a slot, of any chain, whatever `chains` says.
-- `blocktimesd validate` runs this file unchanged; a status FAIL in the last table
-- makes it exit 1 (warn only reports).

SET VARIABLE data_dir = coalesce(getvariable('data_dir'), 'data');
SET VARIABLE domain_chains = coalesce(getvariable('domain_chains'), ['auto-evm']);
SET VARIABLE top = coalesce(getvariable('top'), 10);

CREATE OR REPLACE TEMP VIEW bt_all AS
SELECT *
FROM read_parquet(getvariable('data_dir') || '/block_times/*/*/*.parquet',
                  hive_partitioning = false);

CREATE OR REPLACE TEMP TABLE kinds AS
SELECT chain,
       bool_or(slot IS NOT NULL) AS is_consensus,
       bool_or(consensus_block_number IS NOT NULL) AS names_source
FROM bt_all
GROUP BY chain;

CREATE OR REPLACE TEMP VIEW domain_rows AS
SELECT r.chain, r.block_number, r.hash, r.timestamp_ms,
       r.consensus_block_hash, r.consensus_block_number
FROM bt_all AS r JOIN kinds AS k USING (chain)
WHERE NOT k.is_consensus
  AND (k.names_source OR list_contains(getvariable('domain_chains'), r.chain))
  AND (getvariable('chains') IS NULL OR list_contains(getvariable('chains'), r.chain));

CREATE OR REPLACE TEMP VIEW consensus_rows AS
SELECT hash, block_number, timestamp_ms FROM bt_all WHERE slot IS NOT NULL;

CREATE OR REPLACE TEMP TABLE consensus_span AS
SELECT min(block_number) AS first_block, max(block_number) AS last_block
FROM consensus_rows;

-- Each domain row with the consensus row it names.  Found first at the number the
-- row claims, the hashes compared by their 64-bit hash() (8 bytes a row to hold, not
-- 66); a named hash not at that number is then looked up among all consensus rows
-- by the hash itself (few rows, so little memory).  A false match needs the same
-- number and two different hashes colliding: about 2^-64 a row.
CREATE OR REPLACE TEMP TABLE by_number AS
SELECT d.chain, d.block_number, d.timestamp_ms, d.consensus_block_number,
       d.consensus_block_hash IS NOT NULL AS has_hash,
       c.block_number AS c_number, c.timestamp_ms AS c_ts
FROM domain_rows AS d
LEFT JOIN (SELECT block_number, timestamp_ms, hash(hash) AS key FROM consensus_rows) AS c
       ON c.block_number = d.consensus_block_number AND c.key = hash(d.consensus_block_hash);

CREATE OR REPLACE TEMP TABLE by_hash AS
SELECT d.chain, d.block_number, c.block_number AS c_number, c.timestamp_ms AS c_ts
FROM (SELECT chain, block_number, consensus_block_hash FROM domain_rows
      SEMI JOIN (SELECT chain, block_number FROM by_number
                 WHERE has_hash AND c_number IS NULL) USING (chain, block_number)) AS d
JOIN consensus_rows AS c ON c.hash = d.consensus_block_hash;

CREATE OR REPLACE TEMP TABLE joined AS
SELECT n.chain, n.block_number, n.timestamp_ms, n.consensus_block_number, n.has_hash,
       coalesce(n.c_number, h.c_number) AS c_number,
       coalesce(n.c_ts, h.c_ts) AS c_ts,
       n.timestamp_ms - coalesce(n.c_ts, h.c_ts) AS latency_ms,
       n.consensus_block_number BETWEEN s.first_block AND s.last_block AS in_span
FROM by_number AS n
LEFT JOIN by_hash AS h USING (chain, block_number)
CROSS JOIN consensus_span AS s;

-- Domain rows against their consensus rows.  mapped: names a consensus block;
-- matched: that block is on disk; latency: domain - consensus timestamp (0 if healthy).
SELECT chain,
       count(*) AS rows_on_disk,
       count(*) FILTER (has_hash) AS mapped,
       count(c_number) AS matched,
       min(latency_ms) AS min_latency_ms,
       max(latency_ms) AS max_latency_ms,
       count(*) FILTER (latency_ms <> 0) AS nonzero_latency
FROM joined
GROUP BY chain
ORDER BY chain;

-- Timestamp disagreements, the largest first.
WITH listed AS (
    SELECT chain, block_number, consensus_block_number, timestamp_ms, c_ts, latency_ms
    FROM joined
    WHERE latency_ms <> 0
    QUALIFY row_number() OVER (PARTITION BY chain
                               ORDER BY abs(latency_ms) DESC, block_number)
            <= getvariable('top')
)
SELECT l.chain, l.block_number, d.hash, l.consensus_block_number, d.consensus_block_hash,
       l.timestamp_ms, l.c_ts AS consensus_timestamp_ms, l.latency_ms
FROM listed AS l
JOIN domain_rows AS d USING (chain, block_number)
ORDER BY l.chain, abs(l.latency_ms) DESC, l.block_number;

-- Mapping checks.  null_mapping: no consensus block hash or number (FAIL; see the
-- reconciliation records); number_mismatch: consensus_block_number differs from the
-- named consensus row's block_number (FAIL); timestamp_disagreement (FAIL);
-- shared_source: domain rows naming a consensus block (on disk) that another domain
-- row names too (FAIL: at most one domain block per consensus block); source_missing: the named consensus block is not on disk
-- although its number lies within the consensus rows on disk (FAIL: orphaned source or
-- a consensus gap); source_outside_dataset: not on disk and outside them (warn: back
-- fill the consensus chain to check these).
WITH per_chain AS MATERIALIZED (
    SELECT chain,
           count(*) FILTER (NOT has_hash OR consensus_block_number IS NULL) AS null_n,
           min(block_number, 5) FILTER (NOT has_hash OR consensus_block_number IS NULL)
               AS null_ex,
           count(*) FILTER (consensus_block_number <> c_number) AS num_n,
           min(block_number, 5) FILTER (consensus_block_number <> c_number) AS num_ex,
           count(*) FILTER (latency_ms <> 0) AS ts_n,
           min(block_number, 5) FILTER (latency_ms <> 0) AS ts_ex,
           count(*) FILTER (has_hash AND c_number IS NULL AND coalesce(in_span, false))
               AS missing_n,
           min(block_number, 5)
               FILTER (has_hash AND c_number IS NULL AND coalesce(in_span, false))
               AS missing_ex,
           count(*) FILTER (has_hash AND c_number IS NULL AND NOT coalesce(in_span, false))
               AS outside_n,
           min(block_number, 5)
               FILTER (has_hash AND c_number IS NULL AND NOT coalesce(in_span, false))
               AS outside_ex
    FROM joined
    GROUP BY chain
),
shared_sources AS (
    SELECT chain, c_number FROM joined WHERE c_number IS NOT NULL
    GROUP BY ALL HAVING count(*) > 1
),
shared AS (
    -- Rows naming a consensus block on disk that another row names too.
    SELECT chain, count(*) AS n, min(block_number, 5) AS ex
    FROM joined SEMI JOIN shared_sources USING (chain, c_number)
    GROUP BY chain
),
checks AS (
    SELECT chain, 1 AS ord, 'null_mapping' AS check_name, 'FAIL' AS severity,
           null_n AS findings, null_ex::VARCHAR AS examples
    FROM per_chain
    UNION ALL
    SELECT chain, 2, 'number_mismatch', 'FAIL', num_n, num_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 3, 'timestamp_disagreement', 'FAIL', ts_n, ts_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 4, 'shared_source', 'FAIL', coalesce(s.n, 0), s.ex::VARCHAR
    FROM per_chain LEFT JOIN shared AS s USING (chain)
    UNION ALL
    SELECT chain, 5, 'source_missing', 'FAIL', missing_n, missing_ex::VARCHAR FROM per_chain
    UNION ALL
    SELECT chain, 6, 'source_outside_dataset', 'warn', outside_n, outside_ex::VARCHAR
    FROM per_chain
)
SELECT chain, check_name,
       CASE WHEN findings > 0 THEN severity ELSE 'ok' END AS status,
       findings::BIGINT AS findings,
       coalesce(examples, '') AS examples
FROM checks
ORDER BY chain, ord;
