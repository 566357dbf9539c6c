// A browser's WebSocket on pubsubd: Debian's chromium driven by
// playwright-core opens `new WebSocket("ws://…/topic")` from a page of the
// server's origin, receives events published over plain HTTP (each
// message exactly one event's JSON), closes, misses events while away,
// and reconnects with `?lastEventID=<the last cursor it saw>`: the missed
// events arrive once, in order, then live ones.
//
//   node websocket.mjs PUBLIC_URL [deflate|plain]   (what the server should
//   answer to chromium's permessage-deflate offer; default deflate)
import { fail, launch, publish as publishTo, openBlankPage } from "./common.mjs";

const [publicUrl, expect = "deflate"] = process.argv.slice(2);
if (!publicUrl) {
  console.error("usage: node websocket.mjs PUBLIC_URL");
  process.exit(2);
}
const publish = (path, body) => publishTo(publicUrl, path, body);
const wsUrl = publicUrl.replace(/^http/, "ws");

// The page is fulfilled by playwright, so chromium does not know it came
// from loopback and would treat a WebSocket to 127.0.0.1 as a public page
// reaching into the local network (Local Network Access): a test artifact,
// switched off. A real page and pubsubd share an address space.
const browser = await launch(["--disable-features=LocalNetworkAccessChecks"]);
try {
  const page = await browser.newPage();
  await openBlankPage(page, publicUrl, "ws");
  const open = (url) => page.evaluate((url) => new Promise((resolve, reject) => {
    window.got = window.got || [];
    window.ws = new WebSocket(url);
    window.ws.onmessage = (m) => window.got.push(JSON.parse(m.data));
    window.ws.onopen = () => resolve(window.ws.extensions);
    window.ws.onerror = () => reject(new Error("WebSocket error"));
  }), url);

  const extensions = await open(wsUrl + "/browser");
  if (extensions.includes("permessage-deflate") !== (expect === "deflate")) fail(`expected ${expect}; the server answered ${JSON.stringify(extensions)}`);
  for (let n = 1; n <= 3; n++) await publish("/browser/ws", { n, pad: "x".repeat(n * 1000) });
  await page.waitForFunction(() => window.got.length >= 3, null, { timeout: 10000 });
  const last = await page.evaluate(() => {
    window.ws.close(1000, "bye");
    return window.got[window.got.length - 1].pubsub_cursor;
  });
  await page.waitForFunction(() => window.ws.readyState === WebSocket.CLOSED, null, { timeout: 10000 });
  // Published while the page is away.
  for (let n = 4; n <= 5; n++) await publish("/browser", { n });
  await open(wsUrl + "/browser?lastEventID=" + encodeURIComponent(last));
  await publish("/browser", { n: 6 });
  await page.waitForFunction(() => window.got.length >= 6, null, { timeout: 10000 });
  const got = await page.evaluate(() => window.got.map((e) => e.n));
  if (JSON.stringify(got) !== JSON.stringify([1, 2, 3, 4, 5, 6])) fail("got " + JSON.stringify(got));
  const pads = await page.evaluate(() => window.got.slice(0, 3).map((e) => e.pad.length));
  if (JSON.stringify(pads) !== "[1000,2000,3000]") fail("pads " + JSON.stringify(pads));
  if (!process.exitCode) console.log("WebSocket OK: 3 events, a reconnect with lastEventID, 3 more, in order, once, over " + (extensions || "no extension"));
} finally {
  await browser.close();
}
