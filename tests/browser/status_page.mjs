// The status page in a real browser: Debian's chromium driven by
// playwright-core (no browser download). Loads the page from the admin
// listener, publishes events to the public port, and checks that they
// appear in the tail, that the counters move, that a private event never
// shows, and that the page logs no console error. Optionally saves a
// screenshot.
//
//   node status_page.mjs ADMIN_URL PUBLIC_URL [SCREENSHOT.png]
import { fail, launch, publish as publishTo } from "./common.mjs";

const [adminUrl, publicUrl, screenshot] = process.argv.slice(2);
if (!adminUrl || !publicUrl) {
  console.error("usage: node status_page.mjs ADMIN_URL PUBLIC_URL [SCREENSHOT.png]");
  process.exit(2);
}

const publish = (path, body) => publishTo(publicUrl, path, body);

// The page's WebSocket to the public port (another loopback origin) is
// not a public page reaching into the local network: see websocket.mjs.
const browser = await launch(["--disable-features=LocalNetworkAccessChecks"]);
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 820 } });
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.origin !== new URL(adminUrl).origin && url.origin !== new URL(publicUrl).origin) errors.push("external request: " + r.url());
  });
  await page.goto(adminUrl, { waitUntil: "load", timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("state").textContent === "live", null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById("events").textContent !== "–", null, { timeout: 10000 });
  const before = Number((await page.textContent("#events")).replace(/,/g, ""));

  await publish("/private/secret/x", { secret: "never shown" });
  for (let i = 1; i <= 5; i++) await publish(`/builds/project${i % 2}`, { build: i, status: "passed" });
  await publish("/commits/pubsubd", { commit: "abc123", author: "alice" });

  await page.waitForFunction(() => document.querySelectorAll("#tail li:not(.empty)").length >= 6, null, { timeout: 10000 });
  const tail = await page.$$eval("#tail li", (lis) => lis.map((li) => li.textContent));
  if (!tail[0].includes("/commits/pubsubd") || !tail[0].includes("abc123")) fail("newest event not first: " + tail[0]);
  if (tail.some((t) => t.includes("never shown") || t.includes("/private"))) fail("a private event reached the page");

  await page.waitForFunction(
    (n) => Number(document.getElementById("events").textContent.replace(/,/g, "")) >= n,
    before + 7,
    { timeout: 10000 },
  );
  await page.waitForFunction(() => document.querySelectorAll("#topics tr td").length >= 4 && document.querySelector("#topics").textContent.includes("builds"), null, { timeout: 10000 });

  // The counters agree with the tail within a second of an event, not at
  // the next ping (the server's ping interval here is 30 s).
  const shown = Number((await page.textContent("#events")).replace(/,/g, ""));
  await publish("/fresh/topic", { fresh: true });
  await page.waitForFunction(() => document.querySelector("#tail li").textContent.includes("/fresh/topic"), null, { timeout: 10000 });
  const seenAt = Date.now();
  await page.waitForFunction(
    (n) => Number(document.getElementById("events").textContent.replace(/,/g, "")) >= n &&
      document.querySelector("#topics").textContent.includes("fresh"),
    shown + 1,
    { timeout: 10000, polling: 50 },
  );
  const lag = Date.now() - seenAt;
  if (lag > 1000) fail(`the counters caught up with the tail ${lag} ms after it`);
  // Subscribers by transport: this page's own feed is an SSE stream, plus
  // a WebSocket the page opens.
  await page.evaluate((url) => { window.ws = new WebSocket(url); }, publicUrl.replace(/^http/, "ws") + "/fresh");
  await page.waitForFunction(() => /WebSocket 1\b/.test(document.getElementById("transports").textContent) &&
    /SSE [1-9]/.test(document.getElementById("transports").textContent), null, { timeout: 10000 });
  const subscribers = Number(await page.textContent("#subscribers"));
  if (!(subscribers >= 1)) fail("the page's own feed is not counted: " + subscribers);
  if (screenshot) {
    // A little history for the chart, then the picture.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  if (errors.length) fail("console errors: " + errors.join(" | "));
  if (!process.exitCode) console.log("status page OK: tail, counters, topics, no private event, no console error");
} finally {
  await browser.close();
}
