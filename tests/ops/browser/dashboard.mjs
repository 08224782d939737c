// Walk through the dashboard in Debian's Chromium, as a person would, and report what
// the page showed as JSON on stdout. Usage: node dashboard.mjs BASE_URL TOKEN OUT.png
import { launch, watchedPage } from "./browser.mjs";

const [base, token, screenshot] = process.argv.slice(2);
const browser = await launch();
const report = { consoleErrors: [], failedResponses: [] };
try {
  // Responses >= 400 are listed apart (the wrong-token attempt is one); console errors
  // such as a CSP violation must not happen at all.
  const page = await watchedPage(browser, report, 1200);

  await page.goto(`${base}/dashboard/`);
  report.redirectedToLogin = new URL(page.url()).pathname === "/dashboard/login";

  await page.fill("#token", "not-the-token-at-all");
  await page.click("button[type=submit]");
  report.wrongTokenMessage = (await page.textContent(".error")) || "";

  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#chart").catch(async (error) => {
    throw new Error(`no chart at ${page.url()}: ${(await page.textContent("main")).trim()}`, { cause: error });
  });
  report.afterLogin = new URL(page.url()).pathname;
  report.series = await page.$$eval("#chart polyline.series", (lines) =>
    lines.map((l) => ({ label: l.dataset.label, color: l.getAttribute("stroke") })));
  const rows = (selector) => page.$$eval(`${selector} tbody tr`, (trs) =>
    trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.innerText.trim())));
  report.jobs = await rows("#jobs");
  report.failures = await rows("#failures");
  report.schedules = await rows("#schedules");
  const box = async (selector) => (await page.locator(selector).boundingBox());
  report.boxes = { chart: await box("#chart"), jobs: await box("#jobs"), failures: await box("#failures") };
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.click("form.logout button");
  await page.goto(`${base}/dashboard/`);
  report.afterLogout = new URL(page.url()).pathname;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
