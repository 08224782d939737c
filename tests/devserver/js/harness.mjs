// Shared by the feature oracles (events.mjs, groups.mjs, flow.mjs): the official client and
// Receiver, a recording endpoint on loopback, polling, and one JSON line of results.
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY.
import http from "node:http";
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
export const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN, devMode: false });
const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
  devMode: false,
});

export const received = [];
// Paths starting with /fail answer 500, everything else 200 "ok".
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", async () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let verified = false;
    try {
      verified = await receiver.verify({ signature: req.headers["upstash-signature"], body, url: `${base}${req.url}` });
    } catch (error) {
      verified = `rejected: ${error.message}`;
    }
    received.push({ path: req.url, body, verified, headers: req.headers });
    res.writeHead(req.url.startsWith("/fail") ? 500 : 200);
    res.end(req.url.startsWith("/fail") ? "failed on purpose" : "ok");
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
export const base = `http://127.0.0.1:${server.address().port}`;

export { sleep, until } from "./poll.mjs";
export const at = (path) => received.filter((r) => r.path === path);
export const rejected = (promise) => promise.then(() => "accepted", (error) => `rejected: ${error.status ?? ""}`.trim());

// Runs the named sections; a failing section records its error, the others still run.
export async function run(sections) {
  const out = {};
  for (const [name, body] of Object.entries(sections)) {
    try {
      out[name] = await body();
    } catch (error) {
      out[name] = { error: String(error.stack || error.message || error) };
    }
  }
  server.close();
  console.log(JSON.stringify(out));
}
