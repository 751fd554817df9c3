// What every Node.js peer shares: its arguments, a bounded pool of workers over the
// block numbers, and the one JSON line it prints.
//
// A peer runs as `node PEER.mjs WS_URL FIRST LAST [CONCURRENCY]` and prints
// {"blocks": N, "seconds": S, "rows": [[number, hash, parentHash, timestampMs], ...]} for
// the blocks FIRST..LAST (inclusive), in order.  The time runs from before the client
// connects until the last row is in (the process's own start-up is not counted).
//
// Each peer module exports `fetchRows(libraries, args)` and imports its libraries only
// when run as a program, so that tests/js can run the same code with its own installs.

export function parseArgs(argv = process.argv.slice(2)) {
  const [url, first, last, concurrency = "64"] = argv;
  if (!url || first === undefined || last === undefined) {
    throw new Error("usage: node PEER.mjs WS_URL FIRST LAST [CONCURRENCY]");
  }
  return { url, first: Number(first), last: Number(last), concurrency: Number(concurrency) };
}

export function isMain(meta) {
  return meta.url === `file://${process.argv[1]}`;
}

// Runs fetchRow(n) for every n in first..last with at most `concurrency` at once.
export async function fetchAll(first, last, concurrency, fetchRow) {
  const rows = new Array(last - first + 1);
  let next = first;
  const worker = async () => {
    while (next <= last) {
      const n = next++;
      rows[n - first] = await fetchRow(n);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return rows;
}

export async function main(fetchRows, libraries) {
  const args = parseArgs();
  const started = process.hrtime.bigint();
  const rows = await fetchRows(libraries, args);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const out = JSON.stringify({ blocks: rows.length, seconds, rows }) + "\n";
  // Exit only once stdout is flushed: a pipe takes 64 KiB at a time.
  process.stdout.write(out, () => process.exit(0));
}
