// @subsquid/substrate-processor (https://docs.sqd.ai): a SubstrateBatchProcessor fed by
// the node's RPC only (no SQD Network gateway: none is reachable here), selecting every
// block of the range, into a database kept in memory (the processor asks for one; a
// squid would use TypeORM and Postgres).  The chain's finality is far behind its head
// (CHAIN_FACTS), so blocks count as final at `setFinalityConfirmation` depth.
//
// Timestamp.Now is read from storage the way typegen's storage classes read it
// (`block._runtime.getStorage(hash, "Timestamp.Now")`), not with the block's `timestamp`
// field: that field decodes the block's extrinsics, and 8.5.1's decoder stops at the
// first v5 General extrinsic (0x45: votes and bundles, in every Autonomys consensus block
// since spec 3) with "unsupported extrinsic version".  The processor reads the range in
// its own batches; CONCURRENCY is its RPC endpoint's `capacity` (requests in flight).
import { isMain, main } from "./common.mjs";

export async function fetchRows({ squid }, { url, first, last, concurrency }) {
  const rows = [];
  const processor = new squid.SubstrateBatchProcessor()
    .setRpcEndpoint({ url, capacity: concurrency })
    .setFinalityConfirmation(1)
    .setBlockRange({ from: first, to: last })
    .setFields({ block: { timestamp: false } })
    .includeAllBlocks({ from: first, to: last });
  let state = { height: -1, hash: "0x" };
  const database = {
    supportsHotBlocks: false,
    async connect() {
      return state;
    },
    async transact(info, write) {
      await write({});
      state = info.nextHead;
    },
  };
  // run() returns nothing and ends the process itself, on an error or once the range is
  // done; so the handler says when the last block is in, and then holds the processor
  // (never returns) so that it cannot end the process before the rows are written out.
  await new Promise((resolve) => {
    processor.run(database, async (ctx) => {
      const batch = await Promise.all(
        ctx.blocks.map(async ({ header }) => {
          const now = await header._runtime.getStorage(header.hash, "Timestamp.Now");
          return [header.height, header.hash, header.parentHash, Number(now)];
        }),
      );
      rows.push(...batch);
      if (rows.length && rows[rows.length - 1][0] >= last) {
        resolve();
        await new Promise(() => {});
      }
    });
  });
  return rows;
}

if (isMain(import.meta)) {
  await main(fetchRows, { squid: await import("@subsquid/substrate-processor") });
}
