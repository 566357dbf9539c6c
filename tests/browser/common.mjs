// What the browser scripts share: failing without throwing (so the browser
// still closes), publishing over plain HTTP, launching Debian's chromium
// headless through playwright-core (no browser download), and a blank page
// on the server's origin.
import { chromium } from "playwright-core";

export const fail = (why) => {
  console.error("FAIL: " + why);
  process.exitCode = 1;
};

/** PUTs `body` as JSON to `publicUrl + path`; throws unless 202. */
export async function publish(publicUrl, path, body) {
  const r = await fetch(publicUrl + path, { method: "PUT", body: JSON.stringify(body) });
  if (r.status !== 202) throw new Error(`publish ${path}: ${r.status}`);
}

/** chromium, headless, quiet (no QUIC, no background traffic), with `extraArgs`. */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/**
 * Shows `page` a blank page on `origin` (served by playwright: every path
 * of pubsubd's is a stream), so what the page opens is same-origin.
 */
export async function openBlankPage(page, origin, title) {
  await page.route(origin + "/page.html", (route) =>
    route.fulfill({ contentType: "text/html", body: `<!doctype html><title>${title}</title>` }));
  await page.goto(origin + "/page.html", { waitUntil: "load", timeout: 10000 });
}
