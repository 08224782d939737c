// client.urlGroups and publishing to a URL group with the official @upstash/qstash client.
import { client, base, at, until, rejected, run } from "./harness.mjs";

await run({
  lifecycle: async () => {
    await client.urlGroups.addEndpoints({
      name: "js-group",
      endpoints: [{ url: `${base}/g/a`, name: "a" }, { url: `${base}/g/b` }],
    });
    const group = await client.urlGroups.get("js-group");
    const listed = (await client.urlGroups.list()).map((g) => g.name);
    await client.urlGroups.removeEndpoints({ name: "js-group", endpoints: [{ name: "a" }] });
    const left = (await client.urlGroups.get("js-group")).endpoints.map((e) => e.url.replace(base, ""));
    await client.urlGroups.removeEndpoints({ name: "js-group", endpoints: [{ url: `${base}/g/b` }] });
    const afterLast = await rejected(client.urlGroups.get("js-group"));
    await client.urlGroups.addEndpoints({ name: "js-gone", endpoints: [{ url: `${base}/g/x` }] });
    await client.urlGroups.delete("js-gone");
    return {
      endpoints: group.endpoints.map((e) => [e.url.replace(base, ""), e.name ?? null]),
      createdAt: typeof group.createdAt,
      listed,
      left,
      afterLast,
      afterDelete: (await client.urlGroups.list()).length,
      badName: await rejected(client.urlGroups.addEndpoints({ name: "no spaces", endpoints: [{ url: `${base}/g/x` }] })),
    };
  },
  fanOut: async () => {
    await client.urlGroups.addEndpoints({
      name: "js-fan",
      endpoints: [{ url: `${base}/fan/1`, name: "one" }, { url: `${base}/fan/2`, name: "two" }],
    });
    const published = await client.publishJSON({ urlGroup: "js-fan", body: { f: 1 } });
    await until(() => at("/fan/1").length && at("/fan/2").length, "both endpoints");
    const batch = await client.batchJSON([
      { urlGroup: "js-fan", body: { f: 2 } },
      { url: `${base}/fan/solo`, body: { f: 3 } },
    ]);
    await until(() => at("/fan/1").length === 2 && at("/fan/2").length === 2 && at("/fan/solo").length, "the batch");
    const delivered = [...at("/fan/1"), ...at("/fan/2")];
    const logs = await until(async () => {
      const { logs } = await client.logs({ filter: { urlGroup: "js-fan", state: "DELIVERED" } });
      return logs.length === 4 ? logs : null;
    }, "four DELIVERED events of the group");
    return {
      published: published.map((p) => p.url.replace(base, "")),
      distinctIds: new Set(published.map((p) => p.messageId)).size,
      idsDelivered: published.every((p) => delivered.some((r) => r.headers["upstash-message-id"] === p.messageId)),
      verified: delivered.every((r) => r.verified === true),
      batchShape: batch.map((item) => (Array.isArray(item) ? item.length : "one")),
      logged: [...new Set(logs.map((e) => `${e.urlGroup}/${e.endpointName}`))].sort(),
      missing: await rejected(client.publishJSON({ urlGroup: "js-nothing", body: {} })),
    };
  },
  deadLetter: async () => {
    await client.urlGroups.addEndpoints({
      name: "js-dlq",
      endpoints: [{ url: `${base}/ok/dlq` }, { url: `${base}/fail/dlq` }],
    });
    await client.publishJSON({ urlGroup: "js-dlq", body: {}, retries: 0 });
    const entries = await until(async () => {
      const { messages } = await client.dlq.listMessages({ filter: { urlGroup: "js-dlq" } });
      return messages.length ? messages : null;
    }, "the DLQ entry");
    await until(() => at("/ok/dlq").length, "the healthy endpoint");
    return { dlq: entries.map((m) => [m.url.replace(base, ""), m.topicName]), okDelivered: at("/ok/dlq").length };
  },
});
