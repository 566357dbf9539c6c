// A gzip-encoded Server-Sent Events stream in a real browser: Debian's
// chromium (driven by playwright-core) opens an EventSource on pubsubd;
// chromium sends `Accept-Encoding: gzip, …` as it does for every request,
// so the stream comes compressed (the response says `Content-Encoding:
// gzip`), and each event must still reach the page as it is published.
//
//   node sse_gzip.mjs PUBLIC_URL
import { fail, launch, publish as publishTo, openBlankPage } from "./common.mjs";

const [publicUrl] = process.argv.slice(2);
if (!publicUrl) {
  console.error("usage: node sse_gzip.mjs PUBLIC_URL");
  process.exit(2);
}
const publish = (path, body) => publishTo(publicUrl, path, body);

const browser = await launch();
try {
  const page = await browser.newPage();
  const encodings = [];
  page.on("response", async (r) => {
    if (r.url().includes("/gzip/sse")) encodings.push((await r.allHeaders())["content-encoding"]);
  });
  await openBlankPage(page, publicUrl, "sse");
  await page.evaluate(() => {
    window.got = [];
    window.errors = 0;
    const source = new EventSource("/gzip/sse");
    source.onopen = () => { window.opened = true; };
    source.onmessage = (m) => window.got.push(JSON.parse(m.data));
    source.onerror = () => { window.errors += 1; };
  });
  await page.waitForFunction(() => window.opened === true, null, { timeout: 10000 });
  // One at a time: each must arrive before the next is published.
  for (let n = 1; n <= 3; n++) {
    await publish("/gzip/sse", { n, text: "repeat ".repeat(100 * n) });
    await page.waitForFunction((n) => window.got.length >= n, n, { timeout: 10000 });
  }
  const got = await page.evaluate(() => window.got.map((e) => [e.n, e.text.length]));
  if (JSON.stringify(got) !== JSON.stringify([[1, 700], [2, 1400], [3, 2100]])) fail("got " + JSON.stringify(got));
  if (JSON.stringify(encodings) !== '["gzip"]') fail("content-encoding " + JSON.stringify(encodings));
  const errors = await page.evaluate(() => window.errors);
  if (errors) fail(`the EventSource reported ${errors} error(s)`);
  if (!process.exitCode) console.log("gzip EventSource OK: 3 events, each as published, Content-Encoding gzip");
} finally {
  await browser.close();
}
