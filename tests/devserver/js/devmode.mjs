// The official @upstash/qstash in dev mode (QSTASH_DEV=1), configured by nothing but the
// environment: it must find the dev server from what the banner printed. A dev-mode SDK
// that finds no server on its port downloads Upstash's own binary instead, so every HTTPS
// request is refused here and reported: this test never reaches the internet.
// Prints one JSON object: whether a publish was delivered and verified, and the refused URLs.
import http from "node:http";
import https from "node:https";
import { syncBuiltinESMExports } from "node:module";

const refused = [];
const refuse = (...args) => {
  refused.push(String(args[0]?.href ?? args[0]?.hostname ?? args[0]));
  throw new Error("the test refuses internet access");
};
https.get = refuse;
https.request = refuse;
syncBuiltinESMExports();
const { Client, Receiver } = await import("@upstash/qstash");

const received = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    received.push({ path: req.url, body: Buffer.concat(chunks).toString("utf8"), headers: req.headers });
    res.end("ok");
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const out = {};
try {
  const client = new Client();
  const { messageId } = await client.publishJSON({ url: `${base}/dev`, body: { dev: true } });
  const deadline = Date.now() + 5000;
  while (!received.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const [delivery] = received;
  out.delivered = delivery?.headers["upstash-message-id"] === messageId;
  out.verified = delivery
    ? await new Receiver().verify({ signature: delivery.headers["upstash-signature"], body: delivery.body, url: `${base}/dev` })
    : false;
} catch (error) {
  out.error = String(error.message || error);
} finally {
  server.close();
}
out.refused = refused;
console.log(JSON.stringify(out));
process.exit(0); // a dev-mode client may keep a timer alive
