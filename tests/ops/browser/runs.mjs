// Walk the dashboard's workflow pages in Debian's Chromium and report what they showed as
// JSON on stdout. Usage: node runs.mjs BASE_URL TOKEN OUT.png
import { launch, watchedPage } from "./browser.mjs";

const [base, token, screenshot] = process.argv.slice(2);
const browser = await launch();
const report = { consoleErrors: [], failedResponses: [] };
try {
  // A CSP violation (an inline style, a script) is a console error: none may happen.
  const page = await watchedPage(browser, report, 1400);
  const rows = (selector) => page.$$eval(`${selector} tbody tr`, (trs) =>
    trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.innerText.trim())));

  await page.goto(`${base}/dashboard/runs`);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#runs");
  report.afterLogin = new URL(page.url()).pathname;
  report.runs = await rows("#runs");
  report.counts = await page.$$eval("#counts a", (links) =>
    Object.fromEntries(links.map((a) => [a.dataset.state, a.querySelector("b").innerText])));

  await page.click('#counts a[data-state="failed"]');
  await page.waitForSelector("#runs");
  report.failedFilter = { search: new URL(page.url()).search, runs: await rows("#runs") };

  await page.click('nav.sections a:text("Deliveries")');
  await page.waitForSelector("#jobs");
  report.deliveriesPath = new URL(page.url()).pathname;
  await page.click('nav.sections a:text("Workflow runs")');
  await page.waitForSelector("#runs");

  // The completed run: every kind of step, branches included.
  const completed = report.runs.find((r) => r[2] === "completed")[0];
  await page.click(`#runs a[href="/dashboard/runs/${completed}"]`);
  await page.waitForSelector("#steps");
  report.runPath = new URL(page.url()).pathname;
  report.steps = await rows("#steps");
  report.branchIndent = await page.$$eval("#steps tr", (trs) =>
    Object.fromEntries(trs.filter((tr) => tr.dataset.label).map((tr) =>
      [tr.dataset.label, tr.querySelector("td.name").getBoundingClientRect().left +
        parseFloat(getComputedStyle(tr.querySelector("td.name")).paddingLeft)])));
  report.bars = await page.$$eval("#steps svg.bar rect.done, #steps svg.bar rect.open", (rects) =>
    rects.map((r) => ({ fill: getComputedStyle(r).fill, width: r.getBoundingClientRect().width })));
  const box = async (selector) => (await page.locator(selector).boundingBox());
  report.boxes = { steps: await box("#steps"), run: await box("#run") };
  await page.screenshot({ path: screenshot, fullPage: true });

  // The waiting run shows its current wait.
  await page.goto(`${base}/dashboard/runs?state=waiting`);
  const waiting = (await rows("#runs"))[0][0];
  await page.click(`#runs a[href="/dashboard/runs/${waiting}"]`);
  await page.waitForSelector("#waiting");
  report.waitingFor = await page.textContent("#waiting");
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
