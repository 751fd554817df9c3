// Connects polkadot.js to one node and prints, as JSON, what it decodes there.
// Usage: node pjs_check.mjs WS_URL CHAIN_KIND BLOCK_NUMBER...
// CHAIN_KIND is "consensus" (events in System.Events) or "auto-evm" (System.EventSegments).
import { ApiPromise, WsProvider } from "@polkadot/api";

const [url, kind, ...numbers] = process.argv.slice(2);

const provider = new WsProvider(url, false);
await provider.connect();
const api = await ApiPromise.create({ provider, throwOnConnect: true, noInitWarn: true });

const out = {
  chain: (await api.rpc.system.chain()).toString(),
  genesis: api.genesisHash.toHex(),
  specName: api.runtimeVersion.specName.toString(),
  specVersion: api.runtimeVersion.specVersion.toNumber(),
  pallets: api.runtimeMetadata.asLatest.pallets.map((p) => [p.name.toString(), p.index.toNumber()]),
  blocks: [],
};

for (const n of numbers.map(Number)) {
  const hash = await api.rpc.chain.getBlockHash(n);
  const signed = await api.rpc.chain.getBlock(hash);
  const block = signed.block;
  const at = await api.at(hash);
  const now = await at.query.timestamp.now();
  let events;
  if (kind === "consensus") {
    events = await at.query.system.events();
  } else {
    const count = (await at.query.system.eventCount()).toNumber();
    const segment = await at.query.system.eventSegments(0);
    const records = segment.isSome === undefined ? segment : segment.unwrapOr([]);
    events = Array.from(records).slice(0, count);
  }
  const version = await api.rpc.state.getRuntimeVersion(block.header.parentHash);
  out.blocks.push({
    number: block.header.number.toNumber(),
    hash: hash.toHex(),
    headerHash: block.header.hash.toHex(),
    parentHash: block.header.parentHash.toHex(),
    timestamp: now.toNumber(),
    bodySpecVersion: version.specVersion.toNumber(),
    digest: block.header.digest.logs.map((log) => log.type),
    extrinsics: block.extrinsics.map((ex) => ({
      version: ex.version,
      signed: ex.isSigned,
      call: `${ex.method.section}.${ex.method.method}`,
      args: ex.method.section === "timestamp" ? ex.method.args[0].toString() : null,
    })),
    events: events.map((record) => `${record.event.section}.${record.event.method}`),
    bundleHashes: events
      .filter((r) => r.event.section === "domains" && r.event.method === "BundleStored")
      .map((r) => r.event.data[1].toHex()),
  });
}

await api.disconnect();
// Exit only once stdout is flushed: a pipe takes 64 KiB at a time.
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
