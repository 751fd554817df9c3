#!/usr/bin/env bash
# A newcomer's quick start, scripted (issue 13, "done when"): from a fresh clone of this
# repository, offline, `make run` for MINUTES, Ctrl-C, `make run` again, Ctrl-C.
#
# It passes when
#   - both runs exit 0 (blocktimesd exits 0 on Ctrl-C, and make with it);
#   - the first run has rows on disk within 2 minutes of the daemon's start;
#   - each simulated dataset (data/devnet/<genesis>-<start>/) holds every block from its
#     first to its last exactly once (`blocktimesd validate`, and a DuckDB count);
#   - the real chains' dataset (data/ outside data/devnet/) is untouched.
#
# usage: scripts/newcomer.sh [--copy] [MINUTES]
#   MINUTES  how long each run lasts (default: $NEWCOMER_MINUTES, else 3).  The first
#            run lasts at least until its first rows are on disk (at most 2 minutes), so
#            MINUTES=1 (CI) costs about 3 minutes with the set-up.
#   --copy   try the working tree as it is, uncommitted changes included, instead of a
#            git clone of HEAD.
# Environment: NEWCOMER_DIR: where to clone (default: a temporary directory, removed
# afterwards unless NEWCOMER_KEEP=1).  Offline is made sure of: both endpoints point at
# a closed local port, so the quick start falls back to the simulated network even on a
# machine that can reach mainnet; METRICS_ADDR defaults to a free port.
set -euo pipefail

copy=0
if [[ ${1:-} == --copy ]]; then
    copy=1
    shift
fi
minutes=${1:-${NEWCOMER_MINUTES:-3}}
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "usage: $0 [--copy] [MINUTES]" >&2; exit 2; }
run_s=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
first_rows_s=120

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${NEWCOMER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/newcomer.XXXXXX")}
cleanup() {
    local pid
    for pid in ${running:-}; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    if [[ -z ${NEWCOMER_DIR:-} && ${NEWCOMER_KEEP:-0} != 1 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
running=""

say() { printf '[newcomer %4ds] %s\n' "$SECONDS" "$*"; }
fail() {
    say "FAIL: $*"
    for log in "$work"/newcomer-run*.log; do
        [[ -f $log ]] && { echo "--- last lines of $log"; tail -n 30 "$log"; }
    done
    exit 1
}

# -- a fresh clone ------------------------------------------------------------------------
mkdir -p "$work"
if [[ $copy == 0 ]] && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git clone --quiet --no-hardlinks "$repo" "$work/repo"
    say "cloned $(git -C "$work/repo" rev-parse --short HEAD) into $work/repo"
else
    mkdir -p "$work/repo"
    tar -C "$repo" --exclude=./.venv --exclude=./data --exclude='*/node_modules' \
        --exclude='./.*_cache' --exclude='*.egg-info' --exclude='__pycache__' -cf - . |
        tar -C "$work/repo" -xf -
    say "copied the working tree into $work/repo"
fi
cd "$work/repo"
[[ ! -e data ]] || fail "a fresh clone has no data/ directory"

export CONSENSUS_RPC_WS=ws://127.0.0.1:9 AUTO_EVM_RPC_WS=ws://127.0.0.1:9  # discard port
export METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:0}
unset DATA_DIR

datasets() { if [[ -d data/devnet ]]; then find data/devnet -mindepth 1 -maxdepth 1 -type d | sort; fi; }
parquet_files() { if [[ -d $1 ]]; then find "$1" -name "*.parquet" | wc -l; else echo 0; fi; }

scrape() {  # the writer's metrics, from the URL the daemon printed
    local url
    url=$(sed -n 's/^  metrics  //p' "$1" | tail -n 1)
    [[ -n $url ]] || return 0
    .venv/bin/python - "$url" <<'EOF' || true
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("blocktimes_writer_rows_pending", "blocktimes_rows_written_total",
                        "blocktimes_files_written_total")):
        print("    " + line)
EOF
}

# One `make run`, stopped as Ctrl-C does: SIGINT to its whole process group.
make_run() {
    local n=$1 log="$work/newcomer-run$1.log" pid started="" first="" before code
    before=$(datasets)
    setsid make run >"$log" 2>&1 &
    pid=$!
    running=$pid
    say "run $n: make run (pid $pid), for ${run_s} s"
    while :; do
        sleep 1
        kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; fail "run $n: make run ended by itself"; }
        if [[ -z $started ]] && grep -q '^blocktimesd is connecting' "$log"; then
            started=$SECONDS
            say "run $n: the daemon started"
        fi
        [[ -n $started ]] || continue
        local dataset
        dataset=$(comm -13 <(echo "$before") <(datasets) | head -n 1)
        if [[ -z $first && -n $dataset && $(parquet_files "$dataset/block_times") -gt 0 ]]; then
            first=$((SECONDS - started))
            say "run $n: first rows on disk $first s after the daemon started"
            scrape "$log"
        fi
        if [[ $n == 1 && -z $first && $((SECONDS - started)) -gt $first_rows_s ]]; then
            scrape "$log"
            fail "run 1: no rows on disk ${first_rows_s} s after the daemon started"
        fi
        if ((SECONDS - started >= run_s)) && [[ $n != 1 || -n $first ]]; then
            break
        fi
    done
    grep -q '^blocktimesd is following' "$log" || fail "run $n: never said it was following"
    say "run $n: Ctrl-C"
    kill -INT -- "-$pid"
    code=0
    wait "$pid" || code=$?
    running=""
    [[ $code == 0 ]] || fail "run $n: make run exited $code after Ctrl-C (expected 0)"
    say "run $n: exit 0"
}

make_run 1
make_run 2

# -- the datasets -------------------------------------------------------------------------
mapfile -t found < <(datasets)
[[ ${#found[@]} == 2 ]] || fail "expected 2 simulated datasets (one per run), found ${#found[@]}"
extra=$(find data -mindepth 1 -maxdepth 1 ! -name devnet)
[[ -z $extra ]] || fail "the real chains' dataset was touched: $extra"
say "data/ holds only data/devnet/: the real chains' dataset is untouched"
for dataset in "${found[@]}"; do
    .venv/bin/blocktimesd validate --data "$dataset" >"$work/validate.log" 2>&1 ||
        { cat "$work/validate.log"; fail "blocktimesd validate failed on $dataset"; }
    .venv/bin/python - "$dataset" <<'EOF' || fail "duplicate or missing blocks in $dataset"
import sys
import duckdb
rows = duckdb.sql(
    "SELECT chain, count(*), count(DISTINCT block_number), min(block_number), "
    "max(block_number) FROM read_parquet(?, hive_partitioning = true) GROUP BY chain "
    "ORDER BY chain",
    params=[f"{sys.argv[1]}/block_times/**/*.parquet"],
).fetchall()
ok = len(rows) == 2
for chain, n, distinct, low, high in rows:
    span = high - low + 1
    print(f"    {chain}: {n} rows, blocks {low}..{high}, {distinct} distinct, {span - distinct} missing")
    ok = ok and n == distinct == span
sys.exit(0 if ok else 1)
EOF
    say "$(basename "$dataset"): $(parquet_files "$dataset/block_times") files, validate ok, each block once"
done
say "PASS"
