// Drives the FiftyOne App that `colorize-review app` serves, in Debian's
// chromium through playwright-core (no downloaded browser), the way a reviewer would:
// the grid shows every sample, the saved views are listed and filter the grid, and a
// sample tagged `reject` in the UI gets the tag. Prints one JSON object on stdout;
// tests/test_review_app.py asserts on it (and on the decisions.csv the App writes).
//
//   node review_app.mjs --url http://127.0.0.1:PORT --dataset NAME --expect 12 \
//        --view flagged-gray --tag reject [--index 0] [--shots DIR]
//
// Selectors are the App's own data-cy attributes (FiftyOne 1.22), as in FiftyOne's e2e
// tests: fo-grid, looker, looker-checkbox-, entry-counts, saved-views-selection,
// saved-views-*-selection-option, saved-views-btn-selection-clear,
// action-tag-sample-labels, sample-tag-input, button-Apply, action-manage-selected,
// popout.
import { appPage, openBrowser, parseArgs } from "./browser.mjs";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const args = parseArgs();
const url = args.url;
const dataset = args.dataset;
const expect = Number(args.expect);
const viewName = args.view;
const tag = args.tag ?? "reject";
const index = Number(args.index ?? 0);
const shots = args.shots ?? fs.mkdtempSync(path.join(os.tmpdir(), "review-app-shots-"));
const LONG = 90_000; // the App's first load compiles queries and builds thumbnails

const GRID = '[data-cy="fo-grid"]';
const LOOKER = `${GRID} [data-cy="looker"]`;

// The tagger lists "tag\ncount" per tag: {tag: count}.
function counts(text) {
  const lines = text.split("\n").map((s) => s.trim()).filter(Boolean);
  const out = {};
  lines.forEach((line, i) => {
    if (/^\d+$/.test(lines[i + 1] ?? "") && !/^\d+$/.test(line)) out[line] = Number(lines[i + 1]);
  });
  return out;
}

const result = { url, dataset, shots, timings: {} };
const t0 = Date.now();
const mark = (name) => (result.timings[name] = Date.now() - t0);
fs.mkdirSync(shots, { recursive: true });

let browser;
let context;
let page;
try {
  browser = await openBrowser("review-app", { width: 1600, height: 1200 });
  context = browser.context;
  page = await appPage(context, url, result);

  const datasetUrl = `${url}/datasets/${encodeURIComponent(dataset)}`;

  // Every looker the grid renders, scrolling in case it virtualises; then the counts.
  async function countLookers(want) {
    await page.waitForSelector(LOOKER, { timeout: LONG });
    // Lookers appear row by row; wait until the expected number is there (or settles).
    await page
      .waitForFunction(([sel, n]) => document.querySelectorAll(sel).length >= n, [LOOKER, want], {
        timeout: 15_000,
      })
      .catch(() => {});
    let most = await page.locator(LOOKER).count();
    for (let i = 0; i < 20 && most < want; i++) {
      await page.locator(GRID).hover();
      await page.mouse.wheel(0, 600);
      await page.waitForTimeout(300);
      most = Math.max(most, await page.locator(LOOKER).count());
    }
    // Thumbnails drawn, not just placeholders: each looker's canvas says it loaded.
    const drawn = await page
      .waitForFunction(
        (sel) => {
          const all = [...document.querySelectorAll(sel)];
          return all.length > 0 && all.every((l) => l.querySelector('canvas[canvas-loaded="true"]'));
        },
        LOOKER,
        { timeout: 30_000 },
      )
      .then(() => true, () => false);
    const entryCounts = (await page.locator('[data-cy="entry-counts"]').textContent()).trim();
    return { lookers: most, drawn, entryCounts };
  }

  // 1. The whole dataset in the grid.
  await page.goto(datasetUrl, { waitUntil: "domcontentloaded" });
  result.grid = await countLookers(expect);
  mark("grid");
  await page.screenshot({ path: path.join(shots, "1-grid.png") });

  // 2. The saved views, as the selector lists them.
  await page.locator('[data-cy="saved-views-selection"]').click();
  const options = page.locator('[data-cy^="saved-views-"][data-cy$="-selection-option"]');
  await options.first().waitFor({ timeout: LONG });
  result.savedViews = (await options.allTextContents())
    .map((t) => t.trim())
    .filter((t) => t && t !== "Unsaved view");
  await page.screenshot({ path: path.join(shots, "2-saved-views.png") });

  // 3. One of them, chosen in the selector, filters the grid.
  if (viewName) {
    await options.filter({ hasText: new RegExp(`^\\s*${viewName}\\s*$`) }).first().click();
    await page.waitForURL((u) => u.searchParams.get("view") === viewName, { timeout: LONG });
    await page.waitForFunction(
      ([sel, n]) => document.querySelectorAll(sel).length < n,
      [LOOKER, expect],
      { timeout: LONG },
    );
    result.view = { name: viewName, url: page.url(), ...(await countLookers(0)) };
    mark("view");
    await page.screenshot({ path: path.join(shots, "3-view.png") });
    // Back to the whole dataset with the selector's clear button (reloading the URL
    // would not do: the App restores the session's view).
    await page.locator('[data-cy="saved-views-selection"] [data-cy="saved-views-btn-selection-clear"]').first().click();
    await page.waitForURL((u) => !u.searchParams.has("view"), { timeout: LONG });
    await page.waitForFunction(
      ([sel, n, text]) =>
        document.querySelectorAll(sel).length >= n &&
        document.querySelector('[data-cy="entry-counts"]')?.textContent.trim() === text,
      [LOOKER, expect, `${expect} samples`],
      { timeout: LONG },
    );
    result.gridAgain = await countLookers(expect);
  } else {
    await page.keyboard.press("Escape");
  }

  // 4. Tag one sample: select its checkbox, open the tagger, type the tag, apply.
  const looker = page.locator(LOOKER).nth(index);
  const checkbox = looker.locator('[data-cy="looker-checkbox-input-"]');
  const checked = () => page.locator(`${LOOKER} [data-cy="looker-checkbox-input-"]:checked`).count();
  if ((await checked()) > 0) throw new Error("samples already selected before the test selected one");
  await looker.hover();
  await looker.locator('[data-cy="looker-checkbox-"]').click();
  await page.waitForFunction(
    (sel) => document.querySelectorAll(sel).length === 1,
    `${LOOKER} [data-cy="looker-checkbox-input-"]:checked`,
    { timeout: 15_000 },
  );
  const selectedCount = (await page.locator('[data-cy="action-manage-selected"]').first().textContent()).trim();
  if (!(await checkbox.isChecked()) || selectedCount !== "1")
    throw new Error(`expected sample ${index} alone selected, the App shows ${selectedCount}`);
  await page.locator('[data-cy="action-tag-sample-labels"]').click();
  const input = page.locator('[data-cy="sample-tag-input"]');
  await input.waitFor({ timeout: 15_000 });
  const placeholder = await input.getAttribute("placeholder");
  // Without a selection the tagger would tag the whole view: refuse that.
  if (!/selected sample$/.test(placeholder ?? ""))
    throw new Error(`the tagger would not tag just the selected sample: ${placeholder}`);
  await input.fill(tag);
  await page.keyboard.press("Enter");
  await page.screenshot({ path: path.join(shots, "4-tagger.png") });
  await page.locator('[data-cy="button-Apply"]').click();
  // Applied: the popout closes once the server has written the tag.
  await page.locator('[data-cy="popout"]').waitFor({ state: "detached", timeout: LONG });
  mark("tagged");
  // The tagger, reopened on the same selection, counts the new tag on it.
  await page.locator('[data-cy="action-tag-sample-labels"]').click();
  await input.waitFor({ timeout: 15_000 });
  const popout = page.locator('[data-cy="popout"]');
  await popout.getByText(tag, { exact: true }).waitFor({ timeout: 15_000 });
  result.tagged = {
    index,
    tag,
    selectedCount: Number(selectedCount),
    placeholder,
    tagger: counts(await popout.innerText()),
  };
  await page.screenshot({ path: path.join(shots, "5-tagged.png") });
  await page.keyboard.press("Escape");
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
