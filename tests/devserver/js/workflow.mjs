// The official @upstash/workflow SDK against the dev server: workflows served by its `serve`
// on a loopback Node endpoint, started and notified with its Client, one section per feature.
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY.
import http from "node:http";
import { Client, WorkflowNonRetryableError, serve } from "@upstash/workflow";
import { createWorkflow, serveMany } from "@upstash/workflow/astro";
import { sleep, until } from "./poll.mjs";

const client = new Client({ baseUrl: process.env.QSTASH_URL, token: process.env.QSTASH_TOKEN });
const thirdParty = []; // the bodies context.call sent to /third
const trace = {}; // run id → what its workflow saw, filled by the route functions below
const note = (context, key, value) => {
  trace[context.workflowRunId] ??= { ran: {} };
  trace[context.workflowRunId][key] = value;
};
const ran = (context, name) => {
  trace[context.workflowRunId] ??= { ran: {} };
  const counts = trace[context.workflowRunId].ran;
  counts[name] = (counts[name] ?? 0) + 1;
};

const workflows = {
  // run → waitForEvent → run: the event's data reaches the step after the wait.
  wait: async (context) => {
    const eventId = await context.run("event-id", () => `evt-${context.requestPayload.n}`);
    note(context, "createdAt", context.workflowRunCreatedAt);
    const { eventData, timeout } = await context.waitForEvent("wait", eventId, { timeout: "1d" });
    await context.run("after", () => ran(context, "after"));
    note(context, "result", { eventData, timeout });
  },
  // A wait nobody notifies: it times out (10 s of QStash time, 0.1 s at the test's scale).
  timeout: async (context) => {
    const { eventData, timeout } = await context.waitForEvent("wait", "evt-never", { timeout: 10 });
    note(context, "result", { eventData: eventData ?? null, timeout });
  },
  // Promise.all of context.run: each branch once, results in order, then the next step.
  parallel: async (context) => {
    const branch = (name, value) => context.run(name, () => (ran(context, name), value));
    const results = await Promise.all([branch("a", 1), branch("b", 2), branch("c", 3)]);
    const sum = await context.run("sum", () => (ran(context, "sum"), results[0] + results[1] + results[2]));
    note(context, "result", { results, sum });
  },
  // sleepUntil 100 s of QStash time ahead (1 s at the test's time scale), then a run.
  until: async (context) => {
    const at = await context.run("when", () => Math.floor(Date.now() / 1000) + 100);
    await context.sleepUntil("until", at);
    const woke = await context.run("woke", () => Date.now());
    note(context, "result", { sleptMs: woke - at * 1000 + 100000 });
  },
  // A sleep, a call and a run in parallel: the sleep's plan step is delayed, the call's
  // result comes back through its callback as the branch's result.
  parallelKinds: async (context) => {
    const [, answer, value] = await Promise.all([
      context.sleep("nap", 2),
      context.call("ask", { url: `${base}/third`, method: "POST", body: JSON.stringify({ n: 5 }) }),
      context.run("work", () => (ran(context, "work"), "done")),
    ]);
    await context.run("after", () => ran(context, "after"));
    note(context, "result", { status: answer.status, body: answer.body, value });
  },
  // A wait and a run in parallel, then a sleep: the run goes on only when both are done.
  mixed: async (context) => {
    const [event, value] = await Promise.all([
      context.waitForEvent("wait", `mixed-${context.requestPayload.n}`, { timeout: "1d" }),
      context.run("work", () => (ran(context, "work"), "done")),
    ]);
    await context.sleep("pause", 1);
    note(context, "result", { eventData: event.eventData, timeout: event.timeout, value });
  },
  // context.call to a third party (its answer comes back through a callback), then a sleep.
  call: async (context) => {
    const answer = await context.call("third", { url: `${base}/third`, method: "POST", body: JSON.stringify({ n: 21 }) });
    await context.sleep("pause", 1);
    await context.run("after", () => ran(context, "after"));
    note(context, "result", { status: answer.status, body: answer.body });
    return { called: true };
  },
  // A step that throws with retries: 0, and one that throws WorkflowNonRetryableError with
  // the default retries: each run's failureFunction gets the run and the error.
  failing: async (context) => {
    await context.run("boom", () => {
      ran(context, "boom");
      if (context.requestPayload.final) throw new WorkflowNonRetryableError("no point retrying");
      throw new Error("the step broke");
    });
  },
  // context.notify from inside a workflow: it resumes the run waiting in `wait`.
  notifier: async (context) => {
    const { eventId, eventData, notifyResponse } = await context.notify(
      "notify",
      context.requestPayload.eventId,
      { from: "notifier" },
    );
    note(context, "result", { eventId, eventData, notified: notifyResponse.length });
  },
};

// context.invoke needs workflows served together (serveMany), each at /many/<its id>.
const squared = createWorkflow(async (context) => {
  const value = await context.run("square", () => (ran(context, "square"), context.requestPayload.n ** 2));
  return { squared: value };
});
const refusing = createWorkflow(async (context) => {
  await context.run("refuse", () => {
    throw new WorkflowNonRetryableError("will not");
  });
});
const invoker = createWorkflow(async (context) => {
  const { workflow } = context.requestPayload;
  const answer = await context.invoke("invoke", { workflow: { squared, refusing }[workflow], body: { n: 4 } });
  await context.run("after", () => ran(context, "after"));
  note(context, "result", answer);
});
const many = serveMany({ squared, refusing, invoker });

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    if (req.url === "/third") {
      thirdParty.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ doubled: thirdParty.at(-1).n * 2 }));
    }
    const name = req.url.split("/").pop();
    const headers = new Headers();
    for (const [key, value] of Object.entries(req.headers)) headers.set(key, String(value));
    const body = Buffer.concat(chunks);
    const request = new Request(`${base}${req.url}`, {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const response = req.url.startsWith("/many/") ? await many.POST({ request }) : await handlers[name](request);
    res.writeHead(response.status, Object.fromEntries(response.headers.entries()));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const failureFunction = async ({ context, failStatus, failResponse }) => {
  note(context, "result", { payload: context.requestPayload, failStatus, failResponse });
};
const handlers = Object.fromEntries(
  Object.entries(workflows).map(([name, fn]) => [
    name,
    serve(fn, { url: `${base}/wf/${name}`, failureFunction }).handler,
  ]),
);

const finished = (runId, what) => until(() => trace[runId]?.result, what, 15000);
const start = async (name, body) => (await client.trigger({ url: `${base}/wf/${name}`, body })).workflowRunId;
const waitersOf = (eventId) => until(async () => {
  const waiters = await client.getWaiters({ eventId });
  return waiters.length ? waiters : null;
}, `a waiter for ${eventId}`);

const out = {};
async function section(name, body) {
  try {
    out[name] = await body();
  } catch (error) {
    out[name] = { error: String(error.stack || error.message || error) };
  }
}

await section("waitForEvent", async () => {
  const started = Date.now();
  const runId = await start("wait", { n: 1 });
  const [waiter] = await waitersOf("evt-1");
  const notified = await client.notify({ eventId: "evt-1", eventData: { paid: true } });
  const result = await finished(runId, "the waiting run");
  const again = await client.notify({ eventId: "evt-1", eventData: {} });
  return {
    result,
    ran: trace[runId].ran,
    createdAtMs: Math.abs(trace[runId].createdAt - started) < 60000,
    waiter: { url: waiter.url, deadlineInSeconds: waiter.deadline < 1e11, runId: waiter.headers["Upstash-Workflow-Runid"] },
    notified: notified.map((n) => ({ runId: n.waiter.headers["Upstash-Workflow-Runid"]?.[0], hasMessageId: typeof n.messageId === "string" })),
    afterwards: { waiters: (await client.getWaiters({ eventId: "evt-1" })).length, notified: again.length },
  };
});

await section("timeout", async () => {
  const runId = await start("timeout", {});
  return { result: await finished(runId, "the timed-out run"), waiters: (await client.getWaiters({ eventId: "evt-never" })).length };
});

await section("parallel", async () => {
  const runId = await start("parallel", {});
  const result = await finished(runId, "the parallel run");
  await sleep(200); // a branch delivered twice would show here
  return { result, ran: trace[runId].ran };
});

await section("sleepUntil", async () => {
  const runId = await start("until", {});
  const { sleptMs } = await finished(runId, "the run sleeping until a time");
  return { sleptAboutOneSecond: sleptMs >= 900 && sleptMs < 5000, sleptMs };
});

await section("parallelKinds", async () => {
  const runId = await start("parallelKinds", {});
  const result = await finished(runId, "the parallel sleep/call/run");
  await sleep(200);
  return { result, ran: trace[runId].ran, calls: thirdParty.filter((body) => body.n === 5).length };
});

await section("mixed", async () => {
  const runId = await start("mixed", { n: 7 });
  await waitersOf("mixed-7");
  await client.notify({ eventId: "mixed-7", eventData: "go" });
  return { result: await finished(runId, "the mixed run"), ran: trace[runId].ran };
});

await section("contextNotify", async () => {
  const waiting = await start("wait", { n: 2 });
  await waitersOf("evt-2");
  const notifier = await start("notifier", { eventId: "evt-2" });
  return { notifier: await finished(notifier, "the notifier"), waiting: await finished(waiting, "the notified run") };
});

await section("lookback", async () => {
  const id = `lookback-${Date.now()}`;
  const runId = `wfr_${id}`;
  const early = await client.notify({ eventId: "evt-3", eventData: "early", workflowRunId: runId });
  await client.trigger({ url: `${base}/wf/wait`, body: { n: 3 }, workflowRunId: id });
  return { early: typeof early, result: await finished(runId, "the run notified before it waited") };
});

await section("call", async () => {
  const runId = await start("call", {});
  const result = await finished(runId, "the calling run");
  return { result, ran: trace[runId].ran, thirdParty: thirdParty.filter((body) => body.n === 21) };
});

await section("failure", async () => {
  const { workflowRunId: thrown } = await client.trigger({ url: `${base}/wf/failing`, body: { final: false }, retries: 0 });
  const { workflowRunId: final } = await client.trigger({ url: `${base}/wf/failing`, body: { final: true } });
  return {
    thrown: { ...(await finished(thrown, "the failed run's failure function")), ran: trace[thrown].ran },
    final: { ...(await finished(final, "the non-retryable run's failure function")), ran: trace[final].ran },
  };
});

await section("invoke", async () => {
  const invoke = async (workflow) => {
    const { workflowRunId } = await client.trigger({ url: `${base}/many/invoker`, body: { workflow } });
    return { ...(await finished(workflowRunId, `the run invoking ${workflow}`)), ran: trace[workflowRunId].ran };
  };
  const result = { squared: await invoke("squared"), refusing: await invoke("refusing") };
  result.squareRan = Object.values(trace).reduce((n, t) => n + (t.ran.square ?? 0), 0);
  return result;
});

await section("logs", async () => {
  const runId = Object.keys(trace).find((id) => trace[id].result?.body?.doubled === 42);
  const ended = await until(async () => {
    const { runs } = await client.logs({ workflowRunId: runId });
    return runs[0]?.workflowState === "RUN_SUCCESS" ? runs[0] : null;
  }, "the call run's log");
  return {
    steps: ended.steps.map((group) => group.steps.map((step) => `${step.stepName}:${step.stepType}`).join("+")),
    response: ended.workflowRunResponse,
  };
});

await section("cancel", async () => {
  const ids = [];
  for (const n of [10, 11, 12]) {
    ids.push(await start("wait", { n }));
    await waitersOf(`evt-${n}`);
  }
  const byId = await client.cancel({ ids: ids[0] });
  const byUrl = await client.cancel({ urlStartingWith: `${base}/wf/wai` });
  const all = await client.cancel({ all: true });
  const waiters = [];
  for (const n of [10, 11, 12]) waiters.push((await client.getWaiters({ eventId: `evt-${n}` })).length);
  return { byId, byUrl, all: typeof all.cancelled, waiters };
});

server.close();
console.log(JSON.stringify(out));
