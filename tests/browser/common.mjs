// What the browser scripts share: failing without throwing (so the browser
// still closes), publishing over plain HTTP, and launching Debian's
// chromium headless through playwright-core (no browser download).
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
