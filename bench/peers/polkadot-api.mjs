// polkadot-api (https://papi.how): createClient over the WebSocket provider of
// `polkadot-api/ws` (given the `ws` package's WebSocket, as its docs say for Node.js
// before 22), with the unsafe API (no descriptors are generated for this chain).  The
// provider's middleware serves the new JSON-RPC from the node's legacy methods.  Per
// block: the hash by number (a raw request: the client has no call for it), the header,
// and Timestamp.Now at that block.
import { fetchAll, isMain, main } from "./common.mjs";

export async function fetchRows({ papi, papiWs, ws }, { url, first, last, concurrency }) {
  const client = papi.createClient(papiWs.getWsProvider(url, { websocketClass: ws.WebSocket }));
  try {
    const api = client.getUnsafeApi();
    return await fetchAll(first, last, concurrency, async (n) => {
      const hash = await client._request("chain_getBlockHash", [n]);
      const [header, now] = await Promise.all([
        client.getBlockHeader(hash),
        api.query.Timestamp.Now.getValue({ at: hash }),
      ]);
      return [header.number, hash, header.parentHash, Number(now)];
    });
  } finally {
    client.destroy();
  }
}

if (isMain(import.meta)) {
  await main(fetchRows, {
    papi: await import("polkadot-api"),
    papiWs: await import("polkadot-api/ws"),
    ws: await import("ws"),
  });
}
