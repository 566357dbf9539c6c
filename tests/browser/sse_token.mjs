// Private events in a real browser: Debian's chromium driven by
// playwright-core. A page whose origin holds the `pubsub_token` cookie
// opens an EventSource (which cannot send an Authorization header) and
// receives private events published over plain HTTP; a page whose cookie
// holds an expired token gets the 401 as an EventSource error and the
// source stays closed (no reconnect loop).
//
//   node sse_token.mjs URL TOKEN EXPIRED_TOKEN
import { fail, launch, publish as publishTo, openBlankPage } from "./common.mjs";

const [url, token, expired] = process.argv.slice(2);
if (!url || !token || !expired) {
  console.error("usage: node sse_token.mjs URL TOKEN EXPIRED_TOKEN");
  process.exit(2);
}

const publish = (path, body) => publishTo(url, path, body);

/** A page on the server's origin (served by playwright: every path of
 * pubsubd's is a stream) whose cookie jar holds `pubsub_token=value`. */
async function pageWithCookie(browser, value) {
  const context = await browser.newContext();
  await context.addCookies([{ name: "pubsub_token", value, url }]);
  const page = await context.newPage();
  await openBlankPage(page, url, "token");
  await page.evaluate(() => {
    window.got = [];
    window.errors = 0;
    const source = new EventSource("/git");
    window.source = source;
    source.onopen = () => { window.opened = true; };
    source.onmessage = (m) => window.got.push(JSON.parse(m.data));
    source.onerror = () => { window.errors += 1; };
  });
  return page;
}

const browser = await launch();
try {
  const good = await pageWithCookie(browser, token);
  await good.waitForFunction(() => window.opened === true, null, { timeout: 10000 });
  const stale = await pageWithCookie(browser, expired);
  // A 401 fails the EventSource for good: readyState CLOSED (2).
  await stale.waitForFunction(() => window.errors > 0 && window.source.readyState === 2, null,
    { timeout: 10000 });

  await publish("/private/git/secret", { n: 1 });
  await publish("/git/public", { n: 2 });
  await good.waitForFunction(() => window.got.length >= 2, null, { timeout: 10000 });
  const got = await good.evaluate(() => window.got.map((e) => e.n));
  if (JSON.stringify(got) !== "[1,2]") fail(`the page with the cookie got ${JSON.stringify(got)}`);
  const errors = await good.evaluate(() => window.errors);
  if (errors) fail(`the page with the cookie saw ${errors} error(s)`);
  const staleGot = await stale.evaluate(() => window.got.length);
  if (staleGot) fail(`the page with the expired token got ${staleGot} event(s)`);
  if (!process.exitCode) {
    console.log("EventSource with a token cookie OK: private and public events; expired token closed");
  }
} finally {
  await browser.close();
}
