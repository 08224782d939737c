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

  // Start a run through the form: bad JSON first (the form again, 400, with the error and
  // what was typed), then a good input.
  await page.goto(`${base}/dashboard/runs`);
  await page.selectOption("#start select[name=workflow]", "order");
  await page.fill("#start textarea[name=input]", '{"order": ');
  await page.fill("#start input[name=run_id]", "browser-run");
  await page.click("#start button[type=submit]");
  await page.waitForSelector("#start-errors");
  report.badStart = {
    errors: await page.textContent("#start-errors"),
    input: await page.inputValue("#start textarea[name=input]"),
    runId: await page.inputValue("#start input[name=run_id]"),
  };
  await page.fill("#start textarea[name=input]", '{"order": "o-browser"}');
  await page.click("#start button[type=submit]");
  await page.waitForSelector("#done");
  const startedUrl = new URL(page.url());
  report.started = { path: startedUrl.pathname, search: startedUrl.search };
  // The dev server delivers the start to gunicorn: reload until the run shows, waiting
  // in its one-hour sleep.
  for (let i = 0; i < 100 && !(await page.$("#cancel")); i++) {
    await page.waitForTimeout(100);
    await page.reload();
  }
  report.started.notice = await page.textContent("#done");
  report.started.state = await page.textContent("h2 .state");

  await page.click("#cancel button[type=submit]");
  await page.waitForSelector("#done");
  const cancelledUrl = new URL(page.url());
  report.cancelled = {
    path: cancelledUrl.pathname,
    search: cancelledUrl.search,
    notice: await page.textContent("#done"),
    state: await page.textContent("h2 .state"),
    actions: await page.$$eval("#cancel, #resume", (forms) => forms.length),
  };
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
