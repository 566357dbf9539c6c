// Private events over a browser's WebSocket: Debian's chromium driven by
// playwright-core. A browser WebSocket cannot send an Authorization
// header, so the page puts its token in the `access_token` query
// parameter: it receives private and public events published over plain
// HTTP, closes, misses a private event while away, and reconnects with the
// token and `lastEventID`: the missed event arrives once, then live ones.
// A socket opened with an expired token never opens (the 401 is a failed
// handshake) and receives nothing.
//
//   node ws_token.mjs PUBLIC_URL TOKEN EXPIRED_TOKEN
import { fail, launch, publish as publishTo, openBlankPage } from "./common.mjs";

const [publicUrl, token, expired] = process.argv.slice(2);
if (!publicUrl || !token || !expired) {
  console.error("usage: node ws_token.mjs PUBLIC_URL TOKEN EXPIRED_TOKEN");
  process.exit(2);
}
const publish = (path, body) => publishTo(publicUrl, path, body);
const wsUrl = (query) => publicUrl.replace(/^http/, "ws") + "/git?" + query;

// As in websocket.mjs: the page is fulfilled by playwright, so chromium's
// Local Network Access checks would refuse a socket to 127.0.0.1.
const browser = await launch(["--disable-features=LocalNetworkAccessChecks"]);
try {
  const page = await browser.newPage();
  await openBlankPage(page, publicUrl, "ws token");
  // Resolves "open" or "failed" (error or close before opening).
  const open = (name, url) => page.evaluate(([name, url]) => new Promise((resolve) => {
    window.got = window.got || {};
    window.got[name] = window.got[name] || [];
    const ws = new WebSocket(url);
    window[name] = ws;
    ws.onmessage = (m) => window.got[name].push(JSON.parse(m.data));
    ws.onopen = () => resolve("open");
    ws.onerror = () => resolve("failed");
    ws.onclose = () => resolve("failed");
  }), [name, url]);

  const q = (t, extra = "") => "access_token=" + encodeURIComponent(t) + extra;
  const staleOpened = await open("stale", wsUrl(q(expired)));
  if (staleOpened !== "failed") fail(`a socket with an expired token: ${staleOpened}`);
  if ((await open("good", wsUrl(q(token)))) !== "open") fail("the socket with the token did not open");

  await publish("/private/git/secret", { n: 1 });
  await publish("/git/public", { n: 2 });
  await page.waitForFunction(() => window.got.good.length >= 2, null, { timeout: 10000 });
  const last = await page.evaluate(() => {
    window.good.close(1000, "bye");
    return window.got.good[window.got.good.length - 1].pubsub_cursor;
  });
  await page.waitForFunction(() => window.good.readyState === WebSocket.CLOSED, null,
    { timeout: 10000 });
  await publish("/private/git/secret", { n: 3 }); // while the page is away
  const again = await open("good", wsUrl(q(token, "&lastEventID=" + encodeURIComponent(last))));
  if (again !== "open") fail("the reconnect with the token did not open");
  await publish("/git/public", { n: 4 });
  await page.waitForFunction(() => window.got.good.length >= 4, null, { timeout: 10000 });
  const got = await page.evaluate(() => window.got.good.map((e) => e.n));
  if (JSON.stringify(got) !== "[1,2,3,4]") fail("the page with the token got " + JSON.stringify(got));
  const staleGot = await page.evaluate(() => window.got.stale.length);
  if (staleGot) fail(`the socket with the expired token got ${staleGot} event(s)`);
  if (!process.exitCode) {
    console.log("WebSocket with a query token OK: private and public events, a reconnect with " +
      "lastEventID, in order, once; expired token refused");
  }
} finally {
  await browser.close();
}
