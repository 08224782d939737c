// client.logs (GET /v2/events) of the official @upstash/qstash client against the dev server.
import { client, base, until, rejected, run } from "./harness.mjs";

const statesOf = async (messageId) => (await client.logs({ messageIds: [messageId] })).logs.map((e) => e.state);
const settled = (messageId, last) =>
  until(async () => {
    const states = await statesOf(messageId);
    return states[0] === last ? states : null;
  }, `${messageId} ${last}`);

await run({
  delivered: async () => {
    const { messageId } = await client.publishJSON({ url: `${base}/ok`, body: { e: 1 }, label: "js-label" });
    const states = await settled(messageId, "DELIVERED");
    const { logs } = await client.logs({ filter: { state: "DELIVERED", label: "js-label" } });
    return {
      states,
      byStateAndLabel: logs.map((e) => e.messageId === messageId),
      status: logs[0].responseStatus,
      body: Buffer.from(logs[0].body, "base64").toString("utf8"),
    };
  },
  failed: async () => {
    const { messageId } = await client.publishJSON({ url: `${base}/fail`, body: {}, retries: 1 });
    const states = await settled(messageId, "FAILED");
    const { logs } = await client.logs({ messageIds: [messageId] });
    const retry = logs.find((e) => e.state === "RETRY");
    return {
      states,
      status: logs[0].responseStatus,
      responseBody: logs[0].responseBody,
      retryHasNextDelivery: typeof retry.nextDeliveryTime === "number",
    };
  },
  paging: async () => {
    const first = await client.logs({ count: 2 });
    const second = await client.logs({ count: 2, cursor: first.cursor });
    const firstIds = first.logs.map((e) => `${e.messageId}/${e.state}/${e.time}`);
    return {
      sizes: [first.logs.length, second.logs.length],
      cursor: typeof first.cursor,
      disjoint: second.logs.every((e) => !firstIds.includes(`${e.messageId}/${e.state}/${e.time}`)),
    };
  },
  typo: async () => rejected(client.logs({ filter: { labeel: "x" } })),
});
