// dedot (https://docs.dedot.dev): DedotClient over a WsProvider, as its README shows; it
// finds that the node speaks only the legacy JSON-RPC and uses that.  Per block: the hash
// by number, the header, and Timestamp.Now read through `client.at(hash)`.
import { fetchAll, isMain, main } from "./common.mjs";

export async function fetchRows({ dedot }, { url, first, last, concurrency }) {
  const client = await dedot.DedotClient.new(new dedot.WsProvider(url));
  try {
    return await fetchAll(first, last, concurrency, async (n) => {
      const hash = await client.rpc.chain_getBlockHash(n);
      const [header, at] = await Promise.all([client.rpc.chain_getHeader(hash), client.at(hash)]);
      const now = await at.query.timestamp.now();
      return [header.number, hash, header.parentHash, Number(now)];
    });
  } finally {
    await client.disconnect();
  }
}

if (isMain(import.meta)) {
  await main(fetchRows, { dedot: await import("dedot") });
}
