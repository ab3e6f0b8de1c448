// End-to-end test of the web UI in headless Chromium against a real
// `atlas serve`: the whole flow of issue #9, an axe-core pass on each main
// page, and a screenshot of each in e2e/screenshots/ (CI keeps them).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { AxeBuilder } from "@axe-core/playwright";
import { chromium } from "playwright-core";
import { startAtlas, startPageServer } from "./server.mjs";

const SHOTS = new URL("./screenshots/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });
const TIMEOUT = 15_000;
const violations = [];
let stepNo = 0;

function step(name) {
  stepNo += 1;
  console.log(`e2e ${String(stepNo).padStart(2, "0")} ${name}`);
}

/** Screenshot `page` as `name` and record axe's serious/critical findings. */
async function check(page, name) {
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
  const result = await new AxeBuilder({ page }).analyze();
  for (const v of result.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      violations.push(`${name}: ${v.id} (${v.impact}) ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    }
  }
}

const atlas = await startAtlas();
const pages = await startPageServer();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let failed = false;
try {
  const newContext = (opts = {}) =>
    browser.newContext({ baseURL: atlas.url, viewport: { width: 1100, height: 800 }, ...opts });
  const alice = await (await newContext()).newPage();
  const bob = await (await newContext()).newPage();
  for (const p of [alice, bob]) p.setDefaultTimeout(TIMEOUT);

  step("the UI is served with its security headers");
  const root = await fetch(atlas.url + "/");
  assert.equal(root.status, 200);
  assert.match(root.headers.get("content-security-policy") ?? "", /script-src 'self'/);
  assert.equal(root.headers.get("cache-control"), "no-cache");

  step("an unknown page asks to sign in, and comes back after");
  await alice.goto("/jobs");
  await alice.waitForURL(/\/signin\?next=%2Fjobs/);
  await check(alice, "01-sign-in");

  step("register two users");
  await alice.getByRole("link", { name: "Create one" }).click();
  await alice.getByLabel("Email").fill("alice@example.org");
  await alice.getByLabel("Display name").fill("Alice");
  await alice.getByLabel("Password").fill("correct horse battery");
  await alice.getByRole("button", { name: "Create account" }).click();
  await alice.waitForURL(/\/jobs$/);
  await bob.goto("/register");
  await bob.getByLabel("Email").fill("bob@example.org");
  await bob.getByLabel("Password").fill("correct horse battery");
  await bob.getByRole("button", { name: "Create account" }).click();
  await bob.getByRole("heading", { name: "Your collections" }).waitFor();
  await bob.getByText("You have no collections yet").waitFor();

  step("create a collection");
  await alice.getByRole("link", { name: "Collections" }).click();
  await alice.getByLabel("Name").fill("Reading list");
  await alice.getByLabel("Description").fill("Things worth reading");
  await alice.getByRole("button", { name: "Create collection" }).click();
  await alice.getByRole("heading", { name: /Reading list/ }).waitFor();
  const collectionUrl = alice.url();
  await check(alice, "03-collection-empty");

  step("add an item with tags and see it in the list");
  await alice.getByText("Add an item").click();
  const form = alice.getByRole("form", { name: "New item" });
  await form.getByLabel("Title", { exact: true }).fill("Rust async book");
  await form.getByLabel("Source URL").fill(pages.url);
  await form.getByLabel("Tags").fill("Rust, async");
  await form.getByLabel("Body").fill("How futures and executors cooperate in Rust.");
  await form.getByRole("button", { name: "Add item" }).click();
  const list = alice.getByRole("list", { name: "Items" });
  await list.getByRole("link", { name: "Rust async book" }).waitFor();
  assert.equal(await list.getByRole("button", { name: "Filter by tag rust" }).count(), 1);
  await check(alice, "04-collection");

  step("edit it");
  await list.getByRole("link", { name: "Rust async book" }).click();
  await alice.getByRole("link", { name: "Edit" }).click();
  await alice.getByLabel("Title", { exact: true }).fill("Rust async book, second edition");
  await check(alice, "05-item-editor");
  await alice.getByRole("button", { name: "Save" }).click();
  await alice.getByRole("heading", { name: "Rust async book, second edition" }).waitFor();
  await alice.getByText("version 2").waitFor();
  const itemUrl = alice.url();
  await check(alice, "06-item");

  step("find it in search with a highlight");
  let found = false;
  for (let i = 0; i < 30 && !found; i++) {
    await alice.goto("/search?q=executors");
    found = await alice
      .locator("ol.results mark", { hasText: "executors" })
      .first()
      .waitFor({ timeout: 1_000 })
      .then(() => true, () => false);
  }
  assert.ok(found, "the item is found with <mark>executors</mark>");
  await alice.locator("ol.results").getByRole("link", { name: /second edition/ }).waitFor();
  await check(alice, "07-search");

  step("invite a second user as viewer");
  await alice.goto(collectionUrl + "?tab=members");
  const add = alice.getByRole("form", { name: "Add a member" });
  await add.getByLabel("Email").fill("bob@example.org");
  await add.getByLabel("Role").selectOption("viewer");
  await add.getByRole("button", { name: "Add member" }).click();
  await alice.getByRole("cell", { name: "bob@example.org", exact: true }).waitFor();
  step("the last owner cannot be demoted");
  await alice.getByLabel("Role of alice@example.org").selectOption("viewer");
  await alice.getByRole("alert").filter({ hasText: /owner/i }).waitFor();
  await check(alice, "08-members");

  step("rules: validation errors at their line, versions, dry run");
  await alice.goto(collectionUrl + "?tab=rules");
  await alice.getByRole("button", { name: "New rule" }).click();
  const yaml = alice.getByLabel("Rule (YAML)");
  await yaml.fill("name: tag-rust\non: [ItemCreated]\nwhn: 'true'\ndo:\n  - add_tags: [rust]\n");
  const problems = alice.getByRole("list", { name: "Problems" });
  await problems.getByText(/line 3, column 1/).waitFor();
  await alice.locator(".gutter .bad", { hasText: "3" }).waitFor();
  await check(alice, "09-rule-invalid");
  await yaml.fill("name: tag-rust\non: [ItemCreated]\nwhen: 'event.data.title.lowerAscii().contains(\"rust\")'\ndo:\n  - add_tags: [rust]\n");
  await alice.getByText("Valid.").waitFor();
  await alice.getByRole("button", { name: "Create rule" }).click();
  await alice.getByRole("heading", { name: "tag-rust (version 1)" }).waitFor();
  await yaml.fill("name: tag-rust\non: [ItemCreated, ItemUpdated]\nwhen: 'event.data.title.lowerAscii().contains(\"rust\")'\ndo:\n  - add_tags: [rust, lang]\n");
  await alice.getByRole("button", { name: "Save new version" }).click();
  await alice.getByRole("heading", { name: "tag-rust (version 2)" }).waitFor();
  await alice.waitForFunction(() => document.querySelector("#rule-yaml")?.value.includes("[rust, lang]"));
  await alice.getByText("Versions").click();
  assert.equal(await alice.getByRole("list", { name: "Versions" }).getByRole("listitem").count(), 2);
  await alice.getByText("Dry run against a sample event").click();
  await alice.getByRole("button", { name: "Dry run", exact: true }).click();
  await alice.getByRole("list", { name: "Planned actions" }).getByText('["rust","lang"]').waitFor();
  await check(alice, "10-rules");

  step("the viewer sees the item but no edit controls");
  await bob.goto(collectionUrl);
  await bob.getByRole("link", { name: "Rust async book, second edition" }).waitFor();
  assert.equal(await bob.getByText("Add an item").count(), 0);
  await check(bob, "11-collection-viewer");
  await bob.goto(itemUrl);
  await bob.getByRole("heading", { name: "Rust async book, second edition" }).waitFor();
  assert.equal(await bob.getByRole("link", { name: "Edit" }).count(), 0);
  assert.equal(await bob.getByRole("button", { name: "Delete" }).count(), 0);

  step("the viewer's direct write attempt shows the server's 403 message");
  await bob.goto(itemUrl + "/edit");
  await bob.getByLabel("Title", { exact: true }).fill("Bob was here");
  const refused = bob.waitForResponse((r) => r.request().method() === "PATCH");
  await bob.getByRole("button", { name: "Save" }).click();
  const response = await refused;
  assert.equal(response.status(), 403);
  const { message } = await response.json();
  await bob.getByRole("alert").filter({ hasText: message }).waitFor();
  await check(bob, "12-viewer-refused");

  step("a second browser sees a new item appear live");
  await bob.goto(collectionUrl);
  await bob.getByRole("link", { name: "Rust async book, second edition" }).waitFor();
  await bob.locator(".live-open").waitFor();
  await alice.goto(collectionUrl);
  await alice.getByText("Add an item").click();
  await alice.getByRole("form", { name: "New item" }).getByLabel("Title", { exact: true }).fill("Appears live");
  await alice.getByRole("form", { name: "New item" }).getByRole("button", { name: "Add item" }).click();
  await bob.getByRole("list", { name: "Items" }).getByRole("link", { name: "Appears live" }).waitFor();

  step("a job's status moves to succeeded");
  await alice.goto(itemUrl);
  await alice.getByRole("button", { name: "Enrich from URL" }).click();
  await alice.waitForURL(/\/jobs$/);
  const row = alice.getByRole("table", { name: "Jobs" }).getByRole("row").filter({ hasText: "ENRICH_URL" });
  await row.locator(".badge-succeeded").waitFor({ timeout: 30_000 });
  await check(alice, "13-jobs");

  step("a workflow shows its steps");
  await alice.goto(itemUrl);
  await alice.getByRole("button", { name: "Run intake workflow" }).click();
  await alice.waitForURL(/\/workflows\//);
  await alice.getByRole("list", { name: "Steps" }).waitFor();
  await alice.getByRole("heading", { name: /ITEM_INTAKE/ }).locator(".badge-succeeded").waitFor({ timeout: 30_000 });
  await check(alice, "14-workflow");

  step("an edit that crossed another one offers reload or overwrite");
  const second = await alice.context().newPage();
  second.setDefaultTimeout(TIMEOUT);
  await alice.goto(itemUrl + "/edit");
  await alice.getByLabel("Title", { exact: true }).waitFor();
  await second.goto(itemUrl + "/edit");
  await second.getByLabel("Body").fill("Changed in another tab.");
  await second.getByRole("button", { name: "Save" }).click();
  await second.waitForURL(itemUrl);
  await second.close();
  await alice.getByLabel("Tags").fill("rust, async, books");
  await alice.getByRole("button", { name: "Save" }).click();
  await alice.getByRole("alert").filter({ hasText: "changed elsewhere" }).waitFor();
  await check(alice, "15-conflict");
  await alice.getByRole("button", { name: "Overwrite" }).click();
  await alice.waitForURL(itemUrl);
  await alice.locator(".tags").getByText("books").waitFor();

  step("the audit viewer lists these actions");
  await alice.goto("/audit");
  const audit = alice.getByRole("table", { name: "Audit rows" });
  for (const type of ["CollectionCreated", "ItemCreated", "ItemUpdated", "MembershipAdded"]) {
    await audit.getByRole("cell", { name: type, exact: true }).first().waitFor({ timeout: 20_000 });
  }
  await check(alice, "16-audit");

  step("an administrator sees the audit chain verified");
  await atlas.createAdmin("admin@example.org", "correct horse battery");
  const admin = await (await newContext()).newPage();
  admin.setDefaultTimeout(TIMEOUT);
  await admin.goto("/signin?next=%2Faudit");
  await admin.getByLabel("Email").fill("admin@example.org");
  await admin.getByLabel("Password").fill("correct horse battery");
  await admin.getByRole("button", { name: "Sign in" }).click();
  await admin.waitForURL(/\/audit$/);
  await admin.getByText(/Hash chain verified: \d+ rows intact/).waitFor({ timeout: 20_000 });
  await check(admin, "17-audit-admin");

  step("dashboard and narrow screens");
  await alice.goto("/");
  await alice.getByRole("link", { name: "Reading list" }).waitFor();
  await check(alice, "02-dashboard");
  await alice.setViewportSize({ width: 375, height: 740 });
  await alice.goto(collectionUrl);
  await alice.getByRole("link", { name: /second edition/ }).waitFor();
  await check(alice, "18-collection-375px");
  for (const path of ["/", collectionUrl, collectionUrl + "?tab=members", collectionUrl + "?tab=rules", itemUrl, itemUrl + "/edit", "/search?q=rust", "/jobs", "/audit"]) {
    await alice.goto(path);
    await alice.locator("main h1").first().waitFor();
    await alice.waitForLoadState("networkidle").catch(() => undefined);
    const overflow = await alice.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 375 px on ${path} (overflow ${overflow}px)`);
  }

  step("signing out returns to sign-in; an ended session remembers the page");
  await alice.getByRole("button", { name: "Sign out" }).click();
  await alice.waitForURL(/\/signin$/);
  await bob.evaluate(() => localStorage.setItem("atlas.refresh_token", "revoked"));
  await bob.goto("/jobs");
  await bob.waitForURL(/\/signin\?expired=1&next=%2Fjobs/);
  await bob.getByText("Your session has ended").waitFor();

  if (violations.length) {
    throw new Error(`axe found serious or critical violations:\n${violations.join("\n")}`);
  }
  console.log(`e2e passed: ${stepNo} steps, screenshots in e2e/screenshots/`);
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  await browser.close();
  pages.stop();
  await atlas.stop();
}
process.exit(failed ? 1 : 0);
