// Opens MLflow's compare-runs page in Debian's chromium through playwright-core (no
// downloaded browser) and waits, in real time, until every expected string is in the
// rendered page text. Prints one JSON object on stdout; tests/test_mlflow_ui.py asserts
// on it.
//
//   node mlflow_compare.mjs URL '["unet-run", "val_psnr", ...]' [SCREENSHOT.png]
//
// URL is the compare page, as the UI's "Compare" button builds it (MLflow 3.17):
//   http://127.0.0.1:PORT/#/compare-runs?runs=["<id1>","<id2>"]&experiments=["<exp_id>"]
// Every request the page makes is recorded; one to any host but the URL's is aborted
// and listed under `external`.
import { openBrowser, parseArgs } from "./browser.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, expectedJson, shotArg] = process.argv.slice(2);
if (!url || !expectedJson) {
  process.stderr.write("usage: node mlflow_compare.mjs URL EXPECTED_JSON [SCREENSHOT]\n");
  process.exit(2);
}
const expected = JSON.parse(expectedJson);
const screenshot = shotArg ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mlflow-compare-")), "compare.png");
const TIMEOUT = Number(process.env.MLFLOW_COMPARE_TIMEOUT_MS ?? 60_000);

const origin = new URL(url).origin;
const allowed = (u) => {
  try {
    const parsed = new URL(u);
    if (parsed.protocol === "data:" || parsed.protocol === "blob:" || parsed.protocol === "about:") return true;
    return parsed.hostname === "127.0.0.1";
  } catch {
    return false;
  }
};

const result = {
  url,
  expected,
  screenshot,
  found: [],
  missing: [...expected],
  consoleErrors: [],
  pageErrors: [],
  requests: [],
  external: [],
  failedRequests: [],
  badResponses: [],
  tableRows: [],
  gridRows: [],
  charts: {},
  timings: {},
};
const t0 = Date.now();
const mark = (name) => (result.timings[name] = Date.now() - t0);
fs.mkdirSync(path.dirname(screenshot), { recursive: true });

const record = (u) => {
  result.requests.push(u);
  if (!allowed(u) && !result.external.includes(u)) result.external.push(u);
};

let browser;
let context;
let page;
try {
  browser = await openBrowser("mlflow-compare", { width: 1600, height: 1200 });
  context = browser.context;
  // Loopback only: whatever goes elsewhere is recorded and never leaves the machine.
  await context.route(
    (u) => !allowed(u.href),
    (route) => route.abort(),
  );
  context.on("request", (r) => record(r.url()));
  context.on("requestfailed", (r) => {
    if (allowed(r.url())) result.failedRequests.push(`${r.url()} ${r.failure()?.errorText ?? ""}`);
  });
  context.on("response", (r) => {
    if (r.status() >= 400) result.badResponses.push({ url: r.url(), status: r.status() });
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") result.consoleErrors.push(m.text().slice(0, 500));
  });
  page.on("pageerror", (e) => result.pageErrors.push(String(e).slice(0, 500)));
  page.on("websocket", (ws) => record(ws.url()));
  page.on("worker", (w) => record(w.url()));

  await page.goto(url, { waitUntil: "domcontentloaded", timeout: TIMEOUT });
  mark("loaded");
  // Real waiting: the page fetches the runs, then renders tables and charts.
  const textHasAll = (want) => {
    const text = document.body?.innerText ?? "";
    return want.every((s) => text.includes(s));
  };
  const complete = await page
    .waitForFunction(textHasAll, expected, { timeout: TIMEOUT, polling: 250 })
    .then(() => true, () => false);
  mark(complete ? "rendered" : "gave-up");
  const text = await page.evaluate(() => document.body?.innerText ?? "");
  result.found = expected.filter((s) => text.includes(s));
  result.missing = expected.filter((s) => !text.includes(s));
  result.title = await page.title();
  result.finalUrl = page.url();
  // The charts: plotly draws the parallel coordinates plot once its bundle is loaded.
  result.charts.drawn = await page
    .waitForFunction(() => document.querySelector(".js-plotly-plot svg.main-svg"), null, {
      timeout: complete ? TIMEOUT : 1000,
      polling: 250,
    })
    .then(() => true, () => false);
  mark("chart");
  Object.assign(
    result.charts,
    await page.evaluate(() => ({
      plotly: document.querySelectorAll(".js-plotly-plot").length,
      parcoords: document.querySelectorAll(".js-plotly-plot .parcoords").length,
      text: [...document.querySelectorAll(".js-plotly-plot text")].map((t) => t.textContent.trim()).filter(Boolean),
    })),
  );
  // The tables as rows of cell texts: <tr>s (run details, parameters), and the
  // react-virtualized grids of the metrics section (a grid of names beside a grid of
  // values, their cells absolutely placed: a row is the cells at one `top`).
  result.tableRows = await page.evaluate(() =>
    [...document.querySelectorAll("tr")].map((tr) => [...tr.querySelectorAll("th,td")].map((c) => c.innerText.trim())),
  );
  result.gridRows = await page.evaluate(() => {
    const sections = new Map();
    for (const grid of document.querySelectorAll(".ReactVirtualized__Grid")) {
      const section = grid.closest('[class*="collapse-content"]') ?? document.body;
      if (!sections.has(section)) sections.set(section, []);
      sections.get(section).push(grid);
    }
    const rows = [];
    for (const grids of sections.values()) {
      const byTop = new Map();
      grids.forEach((grid, g) => {
        for (const cell of grid.querySelectorAll(".ReactVirtualized__Grid__innerScrollContainer > div")) {
          const top = parseFloat(cell.style.top);
          const left = parseFloat(cell.style.left);
          if (!byTop.has(top)) byTop.set(top, []);
          byTop.get(top).push({ g, left, text: cell.innerText.trim() });
        }
      });
      for (const top of [...byTop.keys()].sort((a, b) => a - b)) {
        rows.push(byTop.get(top).sort((a, b) => a.g - b.g || a.left - b.left).map((c) => c.text));
      }
    }
    return rows;
  });
  if (!complete) result.text = text.slice(0, 4000);
  await page.screenshot({ path: screenshot, fullPage: true });
  result.ok = complete;
} catch (e) {
  result.ok = false;
  result.error = String(e?.stack ?? e).slice(0, 2000);
  if (page) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
} finally {
  mark("total");
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
