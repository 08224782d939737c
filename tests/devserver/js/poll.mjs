// Polling, shared by every oracle. No side effects: harness.mjs starts an endpoint when
// imported, which oracle.mjs (its own endpoint) must not.
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await check();
    if (value) return value;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}
