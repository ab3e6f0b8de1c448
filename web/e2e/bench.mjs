// Measures the web UI for bench/RESULTS.md: the gzipped size of what the
// first page load fetches, and the time to first render of a collection
// page holding 1,000 items in headless Chromium against a real `atlas serve`.
//   ATLAS_BIN=… node e2e/bench.mjs
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";
import { startAtlas } from "./server.mjs";

const ITEMS = 1000;
const RUNS = 7;

function initialLoadBytes() {
  const dist = new URL("../dist/", import.meta.url);
  const html = readFileSync(new URL("index.html", dist), "utf8");
  const refs = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  let raw = 0;
  let gz = 0;
  for (const ref of refs) {
    const bytes = readFileSync(new URL(ref, dist));
    raw += bytes.length;
    gz += gzipSync(bytes, { level: 9 }).length;
  }
  return { files: refs, raw, gz };
}

async function json(url, init) {
  const r = await fetch(url, init);
  if (!r.ok) throw new Error(`${init?.method ?? "GET"} ${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const size = initialLoadBytes();
console.log(`initial load: ${size.files.join(", ")}: ${size.raw} B raw, ${size.gz} B gzipped`);

const atlas = await startAtlas();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const auth = await json(`${atlas.url}/api/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: "bench@example.org", password: "correct horse battery" }),
  });
  const headers = { "content-type": "application/json", authorization: `Bearer ${auth.access_token}` };
  const collection = await json(`${atlas.url}/api/v1/collections`, {
    method: "POST",
    headers,
    body: JSON.stringify({ name: "Thousand" }),
  });
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < ITEMS) {
        const n = next++;
        await json(`${atlas.url}/api/v1/collections/${collection.id}/items`, {
          method: "POST",
          headers,
          body: JSON.stringify({
            title: `Item ${n}: notes on distributed systems`,
            body: "Consensus, replication and the cost of coordination. ".repeat(4),
            source_url: `https://example.org/${n}`,
            tags: [`t${n % 10}`, "bench"],
          }),
        });
      }
    }),
  );
  console.log(`created ${ITEMS} items`);

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(
    ([token]) => {
      if (!localStorage.getItem("atlas.refresh_token")) localStorage.setItem("atlas.refresh_token", token);
    },
    [auth.refresh_token],
  );
  const page = await context.newPage();
  const firstRender = [];
  for (let i = 0; i < RUNS; i++) {
    await page.goto(`${atlas.url}/c/${collection.id}`, { waitUntil: "commit" });
    await page.locator("ul.items li.item").first().waitFor();
    firstRender.push(await page.evaluate(() => performance.now()));
  }
  // Every item, paged in by infinite scroll (50 a page).
  const started = Date.now();
  while ((await page.locator("ul.items li.item").count()) < ITEMS) {
    await page.mouse.wheel(0, 20_000);
    await page.waitForTimeout(20);
  }
  const allLoaded = Date.now() - started;
  const result = {
    initial_load_gzip_bytes: size.gz,
    initial_load_raw_bytes: size.raw,
    first_render_ms: { cold: Math.round(firstRender[0]), median_warm: Math.round(median(firstRender.slice(1))) },
    scroll_all_1000_ms: allLoaded,
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await browser.close();
  await atlas.stop();
}
