// The one way the browser tests start a browser: Debian's chromium (never a downloaded
// one) through playwright-core, headless, in a fresh profile that is removed afterwards.
//
//   const args = parseArgs();                      // --key value pairs
//   const browser = await openBrowser("report", { width: 1280, height: 1000 });  // [, extra flags]
//   ... browser.context ...
//   await browser.close();                         // in a finally: profile removed too
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export function parseArgs(argv = process.argv.slice(2)) {
  return Object.fromEntries(
    argv.reduce((pairs, a, i, all) => {
      if (a.startsWith("--")) pairs.push([a.slice(2), all[i + 1]]);
      return pairs;
    }, []),
  );
}

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim();
}

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

export async function openBrowser(name, viewport, extraArgs = []) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-chromium-`));
  let context;
  const close = async () => {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    // A fresh profile every run (launchPersistentContext is how playwright takes one).
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath(),
      headless: true,
      viewport,
      args: [...FLAGS, ...extraArgs],
      // A server behind basic auth (the team's MLflow server): credentials from the
      // environment, never on the command line.
      ...(process.env.BROWSER_HTTP_USERNAME
        ? { httpCredentials: { username: process.env.BROWSER_HTTP_USERNAME, password: process.env.BROWSER_HTTP_PASSWORD ?? "" } }
        : {}),
    });
  } catch (e) {
    await close();
    throw e;
  }
  return { context, close };
}

// The FiftyOne App's page, as both App tests open it: FiftyOne's own e2e flag (no
// analytics, no "Explore Enterprise" popover), loopback only (requests elsewhere are
// aborted and listed in result.blocked: the App must work offline), page errors kept
// in result.pageErrors.
export async function appPage(context, url, result) {
  await context.addInitScript(() => {
    window.IS_PLAYWRIGHT = true;
  });
  const origin = new URL(url).origin;
  result.blocked = [];
  await context.route(
    (u) => u.origin !== origin,
    (route) => {
      result.blocked.push(route.request().url());
      return route.abort();
    },
  );
  const page = context.pages()[0] ?? (await context.newPage());
  result.pageErrors = [];
  page.on("pageerror", (e) => result.pageErrors.push(String(e).slice(0, 300)));
  return page;
}
