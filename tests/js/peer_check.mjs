// Runs one of the Node.js peers of bench/peers (the same code the benchmark times) with
// the libraries installed here, and prints its JSON line.
// Usage: node peer_check.mjs PEER WS_URL FIRST LAST [CONCURRENCY]
// PEER is "dedot" or "polkadot-api".
const [peer, ...args] = process.argv.slice(2);
const libraries = {
  dedot: async () => ({ dedot: await import("dedot") }),
  "polkadot-api": async () => ({
    papi: await import("polkadot-api"),
    papiWs: await import("polkadot-api/ws"),
    ws: await import("ws"),
  }),
};
if (!(peer in libraries)) throw new Error(`unknown peer ${peer}; known: ${Object.keys(libraries)}`);

const { fetchRows } = await import(`../../bench/peers/${peer}.mjs`);
const { parseArgs } = await import("../../bench/peers/common.mjs");
const rows = await fetchRows(await libraries[peer](), parseArgs(args));
process.stdout.write(JSON.stringify({ blocks: rows.length, rows }) + "\n", () => process.exit(0));
