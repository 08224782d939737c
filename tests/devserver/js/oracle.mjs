// The official @upstash/qstash client and Receiver against the dev server.
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY.
// Prints one JSON object with what it observed; exits 1 with the error on any failure.
import http from "node:http";
import { Client, Receiver } from "@upstash/qstash";
import { until } from "./poll.mjs";

const env = process.env;
const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN, devMode: false });
const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
  devMode: false,
});

const received = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    const body = Buffer.concat(chunks).toString("utf8");
    const url = `${base}${req.url}`;
    let verified = false;
    try {
      verified = await receiver.verify({ signature: req.headers["upstash-signature"], body, url });
    } catch (error) {
      verified = `rejected: ${error.message}`;
    }
    received.push({ path: req.url, body, verified, headers: req.headers });
    if (req.url.startsWith("/dead")) {
      res.writeHead(489, { "Upstash-NonRetryable-Error": "true" });
      res.end("gone");
    } else {
      res.end("ok");
    }
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const at = (path) => received.filter((r) => r.path === path);
// Runs one part of the oracle; a failure is recorded in its result, the others still run.
async function section(name, run) {
  try {
    out[name] = await run();
  } catch (error) {
    out[name] = { error: String(error.message || error) };
  }
}
const rejected = (promise) => promise.then(() => "accepted", () => "rejected");

const out = {};
try {
  const published = await client.publishJSON({ url: `${base}/publish?x=1`, body: { hello: "js" } });
  const delivery = (await until(() => at("/publish?x=1")[0], "the publish delivery"));
  out.publish = {
    sameId: delivery.headers["upstash-message-id"] === published.messageId,
    verified: delivery.verified,
    body: delivery.body,
  };

  const batch = await client.batchJSON([
    { url: `${base}/batch`, body: { n: 1 } },
    { url: `${base}/batch`, body: { n: 2 } },
  ]);
  await until(() => at("/batch").length === 2, "the batch deliveries");
  out.batch = { ids: batch.length, verified: at("/batch").every((r) => r.verified === true) };

  const { scheduleId } = await client.schedules.create({ destination: `${base}/cron`, cron: "* * * * *" });
  const schedule = await client.schedules.get(scheduleId);
  await client.schedules.pause({ schedule: scheduleId });
  const paused = (await client.schedules.get(scheduleId)).isPaused;
  await client.schedules.resume({ schedule: scheduleId });
  const fired = await until(() => at("/cron")[0], "a schedule firing");
  const listed = (await client.schedules.list()).map((s) => s.scheduleId);
  await client.schedules.delete(scheduleId);
  out.schedules = {
    cron: schedule.cron,
    paused,
    listed: listed.includes(scheduleId),
    firedWithId: fired.headers["upstash-schedule-id"] === scheduleId,
    verified: fired.verified,
    afterDelete: (await client.schedules.list()).length,
  };

  const queue = client.queue({ queueName: "js-queue" });
  await queue.upsert({ parallelism: 2 });
  await queue.pause();
  await queue.enqueueJSON({ url: `${base}/queued`, body: { q: 1 } });
  const held = await queue.get();
  await queue.resume();
  await until(() => at("/queued")[0], "the queued delivery");
  const queues = (await queue.list()).map((q) => q.name);
  await queue.delete();
  out.queues = { parallelism: held.parallelism, paused: held.paused, lag: held.lag, listed: queues, verified: at("/queued")[0].verified };

  const dead = await client.publishJSON({ url: `${base}/dead`, body: { d: 1 } });
  const dlq = await until(async () => {
    const { messages } = await client.dlq.listMessages();
    return messages.length ? messages : null;
  }, "the DLQ entry");
  await client.dlq.delete(dlq[0].dlqId);
  out.dlq = {
    sameId: dlq[0].messageId === dead.messageId,
    status: dlq[0].responseStatus,
    attempts: at("/dead").length,
    afterDelete: (await client.dlq.listMessages()).messages.length,
  };

  // Bulk cancel names messages by filter or count; a misspelt filter is refused.
  await section("bulkCancel", async () => {
    const held = (extra) => client.publishJSON({ url: `${base}/held`, body: {}, delay: "1d", ...extra });
    await held({ flowControl: { key: "keep-me", parallelism: 1 } });
    await held({ flowControl: { key: "cancel-me", parallelism: 1 } });
    const byKey = (await client.messages.cancel({ filter: { flowControlKey: "cancel-me" }, count: 100 })).cancelled;
    await held({});
    const typo = await rejected(client.messages.cancel({ filter: { labeel: "x" } }));
    const oneOfAll = (await client.messages.cancel({ all: true, count: 1 })).cancelled;
    const rest = (await client.messages.cancel({ all: true })).cancelled;
    return { byKey, typo, oneOfAll, rest };
  });

  // DLQ bulk delete and retry act only on what their filters name.
  await section("dlqFilters", async () => {
    const die = (path, extra) => client.publishJSON({ url: `${base}/dead-${path}`, body: {}, ...extra });
    await die("f1", { label: "l1" });
    await die("f2", { label: "l2" });
    await die("f3", { flowControl: { key: "fk", parallelism: 1 } });
    await until(async () => (await client.dlq.listMessages()).messages.length === 3, "three DLQ entries");
    const none = await client.dlq.delete({ filter: { url: "http://nowhere.example/" }, count: 100 });
    const typo = await rejected(client.dlq.delete({ filter: { labeel: "l1" } }));
    const either = (await client.dlq.listMessages({ filter: { label: ["l1", "l2"] } })).messages.length;
    const byKey = (await client.dlq.delete({ filter: { flowControlKey: "fk" } })).deleted;
    const retried = (await client.dlq.retry({ filter: { label: "l1" } })).responses.length;
    const countOne = (await client.dlq.delete({ all: true, count: 1 })).deleted;
    await client.dlq.delete({ all: true });
    return { noMatch: none.deleted, noCursor: none.cursor === undefined, typo, either, byKey, retried, countOne };
  });

  // Several labels: a list goes out as "a,b"; QStash answers label "a" and labels ["a","b"].
  await section("labels", async () => {
    const { messageId } = await client.publishJSON({ url: `${base}/held`, body: {}, delay: "1d", label: ["a", "b"] });
    const message = await client.messages.get(messageId);
    const cancelled = (await client.messages.cancel({ filter: { label: "b" } })).cancelled;
    return { label: message.label, labels: message.labels, cancelled };
  });

  const forged = await receiver
    .verify({ signature: delivery.headers["upstash-signature"], body: '{"hello":"forged"}', url: `${base}/publish?x=1` })
    .then(() => "accepted", (error) => "rejected");
  out.forgedBodyRejected = forged === "rejected";
  console.log(JSON.stringify(out));
} catch (error) {
  console.error(error.stack || String(error));
  console.log(JSON.stringify(out));
  process.exitCode = 1;
} finally {
  server.close();
}
