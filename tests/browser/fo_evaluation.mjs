// Drives the FiftyOne App of an evaluated project (`colorize-review app`) in Debian's
// chromium through playwright-core, as someone looking at the model's results would:
// the saved view of the worst test images first, the first of them opened (the modal
// shows its gray | prediction | truth, colorize/evaluation/fo_results.py), then the
// Embeddings panel with the relevance map, coloured by relevance. Prints one JSON
// object on stdout; tests/test_fo_evaluation.py asserts on it.
//
//   node fo_evaluation.mjs --url http://127.0.0.1:PORT --dataset NAME --view worst-test-first \
//        --expect 18 --map relevance_map --colour relevance [--shots DIR]
//
// Selectors are the App's own (FiftyOne 1.22): data-cy fo-grid, looker, entry-counts,
// saved-views-*, modal, modal-looker-container, looker-error-info, new-panel-btn,
// new-panel-option-Embeddings; the Embeddings panel's emb-* classes.
import { appPage, openBrowser, parseArgs } from "./browser.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const args = parseArgs();
const url = args.url;
const dataset = args.dataset;
const viewName = args.view;
const expect = Number(args.expect);
const mapKey = args.map;
const colour = args.colour;
const shots = args.shots ?? fs.mkdtempSync(path.join(os.tmpdir(), "fo-evaluation-shots-"));
const LONG = 90_000; // the App's first load compiles queries and builds thumbnails

const GRID = '[data-cy="fo-grid"]';
const LOOKER = `${GRID} [data-cy="looker"]`;
const MODAL = '[data-cy="modal"]';

const result = { url, dataset, shots, timings: {} };
const t0 = Date.now();
const mark = (name) => (result.timings[name] = Date.now() - t0);
fs.mkdirSync(shots, { recursive: true });

let browser;
let page;
try {
  // WebGL (the Embeddings panel's plot is three.js) from SwiftShader: no GPU here.
  browser = await openBrowser("fo-evaluation", { width: 1600, height: 1000 }, ["--enable-unsafe-swiftshader"]);
  const context = browser.context;
  page = await appPage(context, url, result);
  // Every media file the App loads, once recording starts (the modal's).
  let media = null;
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (media && u.pathname === "/media" && u.searchParams.get("filepath"))
      media.push({ filepath: u.searchParams.get("filepath"), status: r.status(), type: r.headers()["content-type"] ?? "" });
  });

  // 1. The saved view, chosen in the selector: the tested images, worst first.
  await page.goto(`${url}/datasets/${encodeURIComponent(dataset)}`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector(LOOKER, { timeout: LONG });
  await page.locator('[data-cy="saved-views-selection"]').click();
  const options = page.locator('[data-cy^="saved-views-"][data-cy$="-selection-option"]');
  await options.first().waitFor({ timeout: LONG });
  await options.filter({ hasText: new RegExp(`^\\s*${viewName}\\s*$`) }).first().click();
  await page.waitForURL((u) => u.searchParams.get("view") === viewName, { timeout: LONG });
  const counts = `${expect} samples`;
  await page.waitForFunction(
    (text) => document.querySelector('[data-cy="entry-counts"]')?.textContent.trim() === text,
    counts,
    { timeout: LONG },
  );
  await page.waitForFunction(
    (sel) => {
      const all = [...document.querySelectorAll(sel)];
      return all.length > 0 && all.every((l) => l.querySelector('canvas[canvas-loaded="true"]'));
    },
    LOOKER,
    { timeout: LONG },
  );
  result.view = {
    name: viewName,
    lookers: await page.locator(LOOKER).count(),
    entryCounts: (await page.locator('[data-cy="entry-counts"]').textContent()).trim(),
  };
  mark("view");
  await page.screenshot({ path: path.join(shots, "1-worst-first.png") });

  // 2. The first sample of the view, opened: the modal draws its comparison image.
  media = [];
  await page.locator(LOOKER).first().click();
  await page.locator(MODAL).waitFor({ timeout: LONG });
  const drawn = await page
    .waitForFunction(
      (sel) => document.querySelector(sel)?.querySelector('canvas[canvas-loaded="true"]'),
      `${MODAL} [data-cy="modal-looker-container"]`,
      { timeout: LONG },
    )
    .then(() => true, () => false);
  await page.waitForTimeout(500); // let the media response be recorded
  const error = await page.locator(`${MODAL} [data-cy="looker-error-info"]`).count();
  result.modal = { drawn, error: error > 0, media: media.filter((m) => m.filepath.includes("/media/evaluation/")) };
  media = null;
  mark("modal");
  await page.screenshot({ path: path.join(shots, "2-prediction.png") });
  await page.keyboard.press("Escape");
  await page.locator(MODAL).waitFor({ state: "detached", timeout: 15_000 }).catch(() => {});

  // 3. Back to the whole dataset (the selector's clear button), then the Embeddings panel
  // beside the grid: the relevance map of every scored image, coloured by relevance.
  await page.locator('[data-cy="saved-views-selection"] [data-cy="saved-views-btn-selection-clear"]').first().click();
  await page.waitForURL((u) => !u.searchParams.has("view"), { timeout: LONG });
  await page.waitForFunction(
    (text) => document.querySelector('[data-cy="entry-counts"]')?.textContent.trim() !== text,
    counts,
    { timeout: LONG },
  );
  await page.locator('[data-cy="new-panel-btn"]').first().click();
  await page.locator('[data-cy="new-panel-option-Embeddings"]').click();
  const card = page.locator(".emb-run-card", { has: page.locator(".emb-run-card-title", { hasText: mapKey }) });
  await card.first().waitFor({ timeout: LONG });
  await page.locator('.emb-run-card[data-interactive="true"]').first().waitFor({ timeout: LONG });
  await card.first().click();
  await page.locator(".emb-plot").waitFor({ timeout: LONG });
  await page.waitForFunction(
    () =>
      document.querySelector(".emb-plot-error") ||
      (document.querySelector(".emb-plot-scene canvas") && /points/.test(document.querySelector(".emb-plot-counter")?.textContent ?? "")),
    null,
    { timeout: LONG },
  );
  const plotError = await page.locator(".emb-plot-error").count();
  result.map = {
    title: (await page.locator(".emb-plot-title").first().textContent())?.trim(),
    error: plotError ? (await page.locator(".emb-plot-error").first().textContent()).trim() : null,
    counter: plotError ? null : (await page.locator(".emb-plot-counter").first().textContent()).trim(),
  };
  if (!plotError && colour) {
    // The trigger is disabled until the colour-by fields load, and the panel can re-render
    // the header after that (closing the menu): on a slow machine one click was lost. So click
    // until the menu's input shows, a few times, then type.
    const input = page.locator("input.emb-colorby-input");
    for (let attempt = 1; ; attempt++) {
      await page.locator('button.emb-facet-trigger[aria-label="Color by"]').click({ timeout: LONG });
      const open = await input.waitFor({ timeout: 10_000 }).then(() => true, () => false);
      result.map.colourClicks = attempt;
      if (open && (await input.fill(colour, { timeout: 10_000 }).then(() => true, () => false))) break;
      if (attempt === 5) throw new Error(`the Color by menu did not open after ${attempt} clicks`);
    }
    const option = page.locator('button[role="option"].emb-facet-row', {
      has: page.locator(".emb-facet-row-label", { hasText: new RegExp(`^\\s*${colour}\\s*$`) }),
    });
    await option.first().click();
    await page.waitForFunction(
      (c) => document.querySelector('button.emb-facet-trigger[aria-label="Color by"]')?.textContent.includes(c),
      colour,
      { timeout: 15_000 },
    );
    result.map.colouredBy = colour;
    await page.waitForTimeout(1000); // the points recoloured
  }
  mark("map");
  await page.screenshot({ path: path.join(shots, "3-embeddings.png") });
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e?.stack ?? e).slice(0, 2000);
  if (page) await page.screenshot({ path: path.join(shots, "error.png") }).catch(() => {});
} finally {
  mark("total");
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(result.ok ? 0 : 1);
