// Opens the pipeline's HTML report (python -m colorize.stages.report) from disk in Debian's
// chromium through playwright-core, and checks that it works offline: every request
// the page makes is recorded (anything that is not file: or data: is also aborted, so
// the check itself never reaches the network), every <img> is decoded, and the metrics
// table's text is read back. Prints one JSON object on stdout; tests/test_report.py
// asserts on it.
//
//   node report_offline.mjs --file /abs/path/report.html [--shot /abs/path/shot.png]
import { openBrowser, parseArgs } from "./browser.mjs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = parseArgs();
const file = path.resolve(args.file);
const url = pathToFileURL(file).href;
const LOCAL = new Set(["file:", "data:"]);

const result = { url, requests: [], external: [], blocked: [], failed: [], consoleErrors: [], pageErrors: [] };
const t0 = Date.now();

let browser;
let context;
try {
  browser = await openBrowser("report", { width: 1280, height: 1000 });
  context = browser.context;
  // Every request of every page (and worker) of the context, whatever its scheme.
  context.on("request", (r) => {
    const u = r.url();
    result.requests.push(u.startsWith("data:") ? u.slice(0, 40) : u);
    if (!LOCAL.has(new URL(u).protocol)) result.external.push(u);
  });
  context.on("requestfailed", (r) => result.failed.push(`${r.url().slice(0, 200)} ${r.failure()?.errorText}`));
  // Nothing leaves the machine, even if the report asked for it (it is still recorded).
  await context.route(
    (u) => !LOCAL.has(u.protocol),
    (route) => {
      result.blocked.push(route.request().url());
      return route.abort();
    },
  );
  const page = context.pages()[0] ?? (await context.newPage());
  // A Content-Security-Policy violation (something the report tried to load) is a console error.
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") result.consoleErrors.push(m.text().slice(0, 300));
  });
  page.on("pageerror", (e) => result.pageErrors.push(String(e).slice(0, 300)));

  await page.goto(url, { waitUntil: "load" });
  await page.waitForLoadState("networkidle");
  result.title = await page.title();
  result.images = await page.evaluate(async () => {
    const imgs = [...document.images];
    await Promise.all(imgs.map((img) => img.decode().catch(() => {})));
    return imgs.map((img) => ({
      alt: img.alt,
      scheme: img.currentSrc.split(":")[0],
      complete: img.complete,
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
      shownWidth: img.getBoundingClientRect().width,
    }));
  });
  result.nImages = result.images.length;
  result.metricsTable = await page
    .locator("#metrics-table")
    .innerText({ timeout: 5_000 })
    .catch(() => null);
  result.sections = await page.locator("h2").allInnerTexts();
  result.notAvailable = await page.locator(".na").allInnerTexts();
  result.scripts = await page.evaluate(() => document.scripts.length);
  if (args.shot) await page.screenshot({ path: args.shot, fullPage: true });

  const problems = [];
  const undecoded = result.images.filter((i) => !(i.complete && i.naturalWidth > 0));
  if (undecoded.length) problems.push(`${undecoded.length} image(s) not decoded: ${undecoded.map((i) => i.alt)}`);
  if (result.external.length) problems.push(`network requests: ${result.external}`);
  if (!result.metricsTable) problems.push("no #metrics-table");
  result.problems = problems;
  result.ok = problems.length === 0;
} catch (e) {
  result.ok = false;
  result.error = String(e?.stack ?? e).slice(0, 2000);
} finally {
  result.ms = Date.now() - t0;
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
