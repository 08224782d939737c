// client.flowControl of the official @upstash/qstash client against the dev server.
import { client, base, at, sleep, until, rejected, run } from "./harness.mjs";

const key = "js-flow";
await run({
  pauseResume: async () => {
    await client.flowControl.pause(key);
    for (const n of [1, 2]) {
      await client.publishJSON({ url: `${base}/flow`, body: { n }, flowControl: { key, parallelism: 1 } });
    }
    await sleep(300);
    const held = await client.flowControl.get(key);
    const deliveredWhilePaused = at("/flow").length;
    await client.flowControl.resume(key);
    await until(() => at("/flow").length === 2, "both deliveries after resume");
    return {
      isPaused: held.isPaused,
      waitListSize: held.waitListSize,
      parallelismMax: held.parallelismMax,
      deliveredWhilePaused,
      afterResume: (await client.flowControl.get(key)).isPaused,
    };
  },
  pin: async () => {
    await client.flowControl.pin(key, { parallelism: 5, rate: 10, period: 60 });
    const pinned = await client.flowControl.get(key);
    await client.flowControl.unpin(key, { parallelism: true, rate: true });
    const unpinned = await client.flowControl.get(key);
    await client.flowControl.resetRate(key);
    return {
      pinned: [pinned.isPinnedParallelism, pinned.isPinnedRate, pinned.parallelismMax, pinned.rateMax, pinned.ratePeriod],
      unpinned: [unpinned.isPinnedParallelism, unpinned.isPinnedRate],
      rateCountAfterReset: (await client.flowControl.get(key)).rateCount,
      emptyPin: await rejected(client.flowControl.pin(key, {})),
    };
  },
  global: async () => {
    const info = await client.flowControl.getGlobalParallelism();
    return { max: info.parallelismMax, count: typeof info.parallelismCount };
  },
  unknown: async () => rejected(client.flowControl.get("never-used")),
});
