// What every dashboard walk shares: Debian's Chromium, headless and offline, and a page
// that records console errors (a CSP violation is one) and answers of 400 and above.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    timeout: 30000,
  });
}

export async function watchedPage(browser, report, width) {
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  page.setDefaultTimeout(15000);
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      report.consoleErrors.push(m.text());
    }
  });
  page.on("response", (r) => {
    if (r.status() >= 400) report.failedResponses.push([new URL(r.url()).pathname, r.status()]);
  });
  return page;
}
