// Server-Sent Events over TLS in a real browser: Debian's chromium (its
// TLS stack is BoringSSL) driven by playwright-core opens an EventSource
// on pubsubd's TLS port and receives events published over plain HTTP,
// one of them larger than a TLS record. After the TLS 1.3 handshake
// pubsubd seals these records itself (src/tls/records.rs).
//
//   node sse_tls.mjs TLS_URL PUBLIC_URL
import { fail, launch, publish as publishTo, openBlankPage } from "./common.mjs";

const [tlsUrl, publicUrl] = process.argv.slice(2);
if (!tlsUrl || !publicUrl) {
  console.error("usage: node sse_tls.mjs TLS_URL PUBLIC_URL");
  process.exit(2);
}

const publish = (path, body) => publishTo(publicUrl, path, body);

// The test's throw-away CA is not in chromium's store.
const browser = await launch(["--ignore-certificate-errors"]);
try {
  const page = await browser.newPage();
  // A blank document on the TLS origin (served by playwright, not the
  // server: every path of pubsubd's is a stream), so the EventSource
  // below is same-origin and the only connection to the server.
  await openBlankPage(page, tlsUrl, "sse");
  await page.evaluate(() => {
    window.got = [];
    window.errors = 0;
    const source = new EventSource("/sse/tls");
    source.onopen = () => { window.opened = true; };
    source.onmessage = (m) => window.got.push(JSON.parse(m.data));
    source.onerror = () => { window.errors += 1; };
  });
  await page.waitForFunction(() => window.opened === true, null, { timeout: 10000 });
  const sizes = [10, 40000, 10];
  for (let i = 0; i < sizes.length; i++) {
    await publish("/sse/tls", { n: i + 1, pad: "x".repeat(sizes[i]) });
  }
  await page.waitForFunction((n) => window.got.length >= n, sizes.length, { timeout: 10000 });
  const got = await page.evaluate(() => window.got.map((e) => [e.n, e.pad.length]));
  const want = sizes.map((size, i) => [i + 1, size]);
  if (JSON.stringify(got) !== JSON.stringify(want)) fail(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  const errors = await page.evaluate(() => window.errors);
  if (errors) fail(`the EventSource reported ${errors} error(s)`);
  if (!process.exitCode) console.log("SSE over TLS OK: 3 events, one over 16 KiB, no error");
} finally {
  await browser.close();
}
