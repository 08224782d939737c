// The redact option of the official @upstash/qstash client against the dev server: what the
// API shows (messages.get, logs, dlq.listMessages, schedules.get) and what the endpoint gets.
import { client, base, until, at, run } from "./harness.mjs";

const TOKEN = "Bearer tok-secret";
const body = { card: "4111-secret" };
const headers = { Authorization: TOKEN, "X-Public": "visible" };
const redact = { body: true, header: ["Authorization"] };
// The client sends header names lowercased (fetch's Headers): look them up in any case.
const header = (shown, name) =>
  Object.entries(shown ?? {}).find(([key]) => key.toLowerCase() === name.toLowerCase())?.[1];

await run({
  publish: async () => {
    const pending = await client.publishJSON({ url: `${base}/later`, body, headers, redact, delay: 86400 });
    const shown = await client.messages.get(pending.messageId);
    const { messageId } = await client.publishJSON({ url: `${base}/ok`, body, headers, redact });
    const [received] = await until(async () => at("/ok").length && at("/ok"), "/ok");
    const logs = await until(async () => {
      const page = await client.logs({ filter: { messageId } });
      return page.logs[0]?.state === "DELIVERED" && page.logs;
    }, "delivered");
    return {
      pendingBody: shown.body,
      pendingAuthorization: header(shown.header, "Authorization"),
      pendingPublic: header(shown.header, "X-Public"),
      receivedBody: received.body,
      receivedAuthorization: received.headers.authorization,
      loggedBodies: [...new Set(logs.map((e) => Buffer.from(e.body, "base64").toString("utf8")))],
      loggedAuthorization: [...new Set(logs.map((e) => JSON.stringify(header(e.header, "Authorization"))))].map(JSON.parse),
    };
  },
  dlq: async () => {
    await client.publishJSON({ url: `${base}/fail-redact`, body, headers, redact, retries: 0 });
    // An empty list is truthy in JS: wait for an entry, not for the list.
    const [entry] = await until(async () => {
      const { messages } = await client.dlq.listMessages();
      return messages.length && messages;
    }, "dlq");
    await client.dlq.retry(entry.dlqId);
    const again = await until(async () => at("/fail-redact")[1], "retried");
    return { listedBody: entry.body, retriedBody: again.body, retriedAuthorization: again.headers.authorization };
  },
  schedule: async () => {
    const { scheduleId } = await client.schedules.create({
      destination: `${base}/cron`,
      cron: "0 0 1 1 *",
      body: JSON.stringify(body),
      headers,
      redact,
    });
    const shown = await client.schedules.get(scheduleId);
    return { body: shown.body, authorization: header(shown.header, "Authorization") };
  },
});
