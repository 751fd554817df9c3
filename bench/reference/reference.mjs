// The seed design's backfill, with polkadot.js: one block after another, for each block
// number getBlockHash(n), api.at(hash), at.query.timestamp.now(), getHeader(hash).
// Usage: node reference.mjs WS_URL FIRST COUNT
// Prints one JSON line: {"blocks": COUNT, "seconds": S, "first": {...}, "last": {...}}
// (connecting and loading metadata are not timed; the loop is).
import { ApiPromise, WsProvider } from "@polkadot/api";

const [url, firstText, countText] = process.argv.slice(2);
const first = Number(firstText);
const count = Number(countText);

const provider = new WsProvider(url, false);
await provider.connect();
const api = await ApiPromise.create({ provider, throwOnConnect: true, noInitWarn: true });

const rows = [];
const started = process.hrtime.bigint();
for (let n = first; n < first + count; n++) {
  const hash = await api.rpc.chain.getBlockHash(n);
  const at = await api.at(hash);
  const now = await at.query.timestamp.now();
  const header = await api.rpc.chain.getHeader(hash);
  rows.push({ number: header.number.toNumber(), hash: hash.toHex(), timestampMs: now.toNumber() });
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;

process.stdout.write(
  JSON.stringify({ blocks: rows.length, seconds, first: rows[0], last: rows[rows.length - 1] }) +
    "\n",
);
await api.disconnect();
