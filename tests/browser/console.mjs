// Drives the web console of a two-node mesh in headless Chromium, as a
// person would: sign in, find a collection, create a record (a validation
// error first), edit it, search for it, delete it, read the types, call a
// registered Wasm method, read its log line, check the mesh and metrics
// screens. Screenshots go to $SHOTS for a person to look at.
//
// Started by tests/tests/node/console.rs with: NODE_A, NODE_B (base URLs),
// KEY (an operator key), SHOTS (a directory), CHROMIUM (the browser).
import { chromium } from "playwright-core";

const { NODE_A, NODE_B, KEY, SHOTS, CHROMIUM } = process.env;
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // This machine's network is closed: no background connections.
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
page.setDefaultTimeout(15000);
let step = "start";
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
const check = (ok, what) => { if (!ok) throw new Error(`${step}: ${what}`); };
const text = (sel) => page.locator(sel).innerText();

try {
  step = "sign in";
  await page.goto(`${NODE_A}/console`);
  check(page.url().endsWith("/console/login"), `not sent to sign in: ${page.url()}`);
  await page.fill("input[name=key]", "ck_0000000000000000_nope");
  await page.click("button[type=submit]");
  check((await text(".problem")).includes("Unauthenticated"), "a wrong key is refused");
  await shot("01-sign-in-refused");
  await page.fill("input[name=key]", KEY);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/collections$/);

  step = "collections";
  const listing = await text("main table");
  check(listing.includes("orders") && listing.includes("products"), `A's collections: ${listing}`);
  check(listing.includes("archive"), `B's collection is listed through A: ${listing}`);
  await shot("02-collections");

  step = "new record";
  await page.click("a:text-is('orders')");
  await page.waitForURL(/\/console\/c\/shop\/orders$/);
  await page.click("a:text('New record')");
  await page.fill("input[name=id]", "lamp-7");
  await page.fill("textarea[name=json]", '{"customer": 5}');
  await page.click("button:text('Create')");
  const invalid = await text(".problem");
  check(invalid.includes("InvalidArgument") && invalid.includes("orders.Order"), `validation: ${invalid}`);
  await shot("03-record-invalid");
  await page.fill("textarea[name=json]",
    '{"customer": "grace", "status": "open", "note": "walnut desk lamp", "totalCents": "4950"}');
  await page.fill("textarea[name=labels]", "team=web");
  await page.click("button:text('Create')");
  await page.waitForURL(/\/r\/lamp-7$/);
  check((await text("pre.json")).includes("walnut desk lamp"), "the record's JSON is shown");

  step = "edit";
  const json = await page.inputValue("textarea[name=json]");
  await page.fill("textarea[name=json]", json.replace("4950", "5200"));
  await page.click("button:text('Save')");
  await page.waitForURL(/\/r\/lamp-7$/);
  check((await text("dl.meta")).includes("2"), "version 2 after the edit");
  check((await text("pre.json")).includes("5200"), "the edit is stored");
  await shot("04-record");

  step = "search";
  await page.click("a:text('« shop/orders')");
  await page.fill("input[name=q]", "walnut");
  await page.fill("textarea[name=filter]", "total_cents >= 5000");
  await page.fill("input[name=labels]", "team=web");
  await page.click("button:text('Search')");
  await page.waitForSelector("table.records");
  check((await text("table.records")).includes("lamp-7"), "the search finds it");
  await shot("05-search");
  await page.fill("textarea[name=filter]", "total_cents > 9000");
  await page.click("button:text('Search')");
  await page.waitForSelector("table.records");
  check(!(await text("table.records")).includes("lamp-7"), "a filter that excludes it");
  await page.fill("textarea[name=filter]", "total_cents ~ 1");
  await page.click("button:text('Search')");
  check((await text(".problem")).includes("InvalidArgument"), "a bad filter says what is wrong");

  step = "types";
  await page.click("nav a:text('Types')");
  await page.fill("header input[name=ns]", "shop");
  await page.press("header input[name=ns]", "Enter");
  await page.waitForURL(/types\?ns=shop/);
  const types = await text("main");
  check(types.includes("orders.Order") && types.includes("total_cents") && types.includes("repeated orders.LineItem"),
    `types and fields: ${types.slice(0, 400)}`);
  await shot("06-types");

  step = "call a method";
  await page.click("nav a:text('Services')");
  const create = page.locator("form.call[data-method=Create]");
  await create.locator("textarea[name=json]").fill('{"customer": "ada", "items": [{"sku": "tea", "quantity": 2}]}');
  await create.locator("input[name=collection]").fill("orders");
  await create.locator("button:text('Call')").click();
  await page.waitForSelector(".output");
  const out = await text(".output");
  check(out.includes("OK") && out.includes('"totalCents": "900"'), `the call's output: ${out}`);
  await shot("07-services-call");
  const bad = page.locator("form.call[data-method=Create]");
  await bad.locator("textarea[name=json]").fill('{"customer": "", "items": []}');
  await bad.locator("button:text('Call')").click();
  await page.waitForSelector("form.call .problem");
  check((await text("form.call .problem")).includes("InvalidArgument"), "the guest's status is shown");

  step = "logs";
  await page.click("nav a:text('Logs')");
  const logs = await text("table.logs");
  check(logs.includes("for ada: 900 cents") && logs.includes("orders.Orders/Create"), `the log line: ${logs}`);
  await shot("08-logs");

  step = "mesh";
  await page.click("nav a:text('Mesh')");
  const rows = page.locator("tr.peer");
  check((await rows.count()) === 2, "two members");
  check((await page.locator("tr.peer[data-state='this node']").count()) === 1, "this node");
  const b = await text("tr.peer[data-state='alive']");
  check(b.includes(new URL(NODE_B).host) && b.includes("shop/archive"), `B with its collection: ${b}`);
  await shot("09-mesh");
  // B's collection, browsed through A: the calls are forwarded to B.
  await page.click("tr.peer[data-state='alive'] a:text('shop/archive')");
  await page.waitForURL(/\/console\/c\/shop\/archive$/);
  const held = await page.locator("p.meta").first().innerText();
  check(held.includes(new URL(NODE_B).host), `held by B: ${held}`);
  check((await text("main")).includes("0 found"), "B's empty collection is searched through A");

  step = "metrics";
  await page.click("nav a:text('Metrics')");
  // The test sends ~45 calls a second (one in ten NotFound) meanwhile.
  await page.waitForFunction(() => {
    const l = document.querySelector("#rate polyline");
    const e = document.querySelector("#errors-legend");
    return l && l.getAttribute("points").split(" ").length >= 3
      && e && !e.textContent.startsWith("errors/s 0.00");
  }, null, { timeout: 20000 });
  const rate = await page.locator("#rate-legend").textContent();
  check(parseFloat(rate.split(" ")[1]) > 5, `a request rate is charted: ${rate}`);
  check(!(await text("#sampled")).includes("could not"), "the metrics are read");
  await shot("10-metrics");

  step = "delete";
  await page.goto(`${NODE_A}/console/c/shop/orders/r/lamp-7`);
  await page.click("button:text('Delete this record')");
  await page.waitForURL(/\/console\/c\/shop\/orders$/);
  await page.goto(`${NODE_A}/console/c/shop/orders/r/lamp-7`);
  check((await text(".problem")).includes("NotFound"), "deleted");

  step = "sign out";
  await page.click("button:text('Sign out')");
  await page.waitForURL(/\/console\/login$/);
  await page.goto(`${NODE_A}/console/mesh`);
  check(page.url().endsWith("/console/login"), "signed out");
  console.log("console: every step passed");
} catch (e) {
  await shot("failed").catch(() => {});
  console.error(`console test failed at ${step}: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
