#!/usr/bin/env node
// End-to-end tests of the shop page in a real, headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core. Two browser contexts stand for two
// people/devices on one cart.
//
//   node tests/browser/run.mjs <base-url> <artifact-dir> [open|auth]
//
// `open` (the default) runs the shop against an edge with auth off, whose checkouts answer
// before the saga settles (`CARTWHEEL_CHECKOUT_WAIT_MS=0`) and which declines every
// payment of DECLINED_USER (`CARTWHEEL_PAYMENT_DECLINE_USERS`): orders turn CONFIRMED or
// FAILED on screen by push, and stock follows by push; `auth` against one
// with JWT auth and the demo sign-in on: sign-in first, demo admin and shopper, a cart
// shared by two tabs of one person and closed to another person, checkout.
// The server must be running (`tests/browser.rs` starts `cartwheel up` and runs this).
// Data is seeded through the public REST API, under skus unique to this run. Screenshots
// go to <artifact-dir>. Exit status 0 only when every step passed; the last line is
// "N passed, N failed". CARTWHEEL_CHROMIUM overrides the browser binary.

import { chromium } from "playwright-core";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const [base, artifactDir, MODE = "open"] = process.argv.slice(2);
if (!base || !artifactDir) {
  console.error("usage: node run.mjs <base-url> <artifact-dir> [open|auth]");
  process.exit(2);
}
const CHROMIUM = process.env.CARTWHEEL_CHROMIUM || "/usr/bin/chromium";
const RUN_BUDGET_MS = 90_000;

// ---------------------------------------------------------------------------------------
// A tiny step runner: named steps, timed, stop at the first failure.

const results = [];
const runStart = performance.now();
const watchdog = setTimeout(() => {
  console.error(`browser tests: still running after ${RUN_BUDGET_MS / 1000} s; giving up`);
  process.exit(1);
}, RUN_BUDGET_MS);
watchdog.unref();

function log(line) {
  process.stdout.write(`browser: ${line}\n`);
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ---------------------------------------------------------------------------------------
// REST helpers (the test is a client of the contract too)

async function api(method, p, body, headers = {}) {
  const res = await fetch(base + p, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return json;
}

const tag = Date.now().toString(36).toUpperCase();
const MUG = { sku: `BT-MUG-${tag}`, name: "Test mug", price: 1299, stock: 10 };
const KETTLE = { sku: `BT-KETTLE-${tag}`, name: "Test kettle", price: 4900, stock: 2 };
const CANDLE = { sku: `BT-CANDLE-${tag}`, name: "Test candle", price: 1650, stock: 5 };
const LAMP = { sku: `BT-LAMP-${tag}`, name: "Test lamp", price: 8900, stock: 4 };
/** The edge of the `open` run declines every payment of this user (tests/browser.rs). */
const DECLINED_USER = "bt-declined-shopper";
const PENDING = ["PENDING", "PRODUCT_RESERVED"];

async function seed() {
  for (const p of [MUG, KETTLE, CANDLE, LAMP]) {
    await api("POST", "/products", {
      sku: p.sku,
      name: p.name,
      description: `Seeded by the browser test run ${tag}.`,
      price: p.price,
      currency: "EUR",
      category: "test",
      active: true,
    });
    await api("PUT", `/inventory/${p.sku}`, { on_hand: p.stock });
  }
}

// ---------------------------------------------------------------------------------------
// Page helpers

const problems = [];

/**
 * Records what a page asks and hears: every HTTP request (`requests`: {method, path}) and
 * every `/ws` frame it receives (`frames`: parsed JSON). Steps look at what was added
 * after they started.
 */
function record(page) {
  const requests = [];
  const frames = [];
  page.on("request", (r) => requests.push({ method: r.method(), path: new URL(r.url()).pathname }));
  page.on("websocket", (ws) => {
    ws.on("framereceived", ({ payload }) => {
      try {
        frames.push(JSON.parse(String(payload)));
      } catch {
        /* not JSON: not ours */
      }
    });
  });
  return { requests, frames };
}

/** The REST reads (GETs) a page made since `mark` whose path starts with `prefix`. */
function readsSince(p, mark, prefix) {
  return p.requests.slice(mark.requests).filter((r) => r.method === "GET" && r.path.startsWith(prefix));
}

/** Where a page's records are now (for `readsSince` and `framesSince`). */
function markOf(p) {
  return { requests: p.requests.length, frames: p.frames.length };
}

function framesSince(p, mark) {
  return p.frames.slice(mark.frames);
}

async function newPage(browser, name, options = {}) {
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 860 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(5000);
  const { requests, frames } = record(page);
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on("pageerror", (e) => problems.push(`${name}: uncaught ${e.message}`));
  page.on("console", (msg) => {
    const text = msg.text();
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`${name}: ${text}`);
  });
  return { context, page, name, requests, frames };
}

const line = (sku) => `#lines li.line[data-sku="${sku}"]`;
const card = (sku) => `#products li.product[data-sku="${sku}"]`;

async function cartQty(page, sku) {
  return page.evaluate((sku) => window.__cw.cart?.items.find((l) => l.sku === sku)?.qty ?? 0, sku);
}

async function waitQty(page, sku, qty, timeout = 5000) {
  await page.waitForFunction(
    ([sku, qty]) => {
      const el = document.querySelector(`#lines li.line[data-sku="${sku}"] .qty-input`);
      return (qty === 0 && !el) || (el && el.value === String(qty));
    },
    [sku, qty],
    { timeout },
  );
}

async function waitLive(page) {
  await page.waitForSelector('#conn[data-state="open"]', { timeout: 10000 });
}

async function shot(page, file, fullPage = true) {
  const p = path.join(artifactDir, file);
  await page.screenshot({ path: p, fullPage, animations: "disabled" });
  return p;
}

function cartIdOf(url) {
  const m = /#cart=([A-Za-z0-9_-]+)/.exec(url);
  return m ? m[1] : null;
}

// ---------------------------------------------------------------------------------------

async function main() {
  await mkdir(artifactDir, { recursive: true });
  for (const old of await readdir(artifactDir)) {
    // Leftovers of an earlier run: its browser profile and failure shots.
    if (/^profile-|^failure-/.test(old)) await rm(path.join(artifactDir, old), { recursive: true, force: true });
  }
  // A fresh profile directory (Playwright creates its --user-data-dir under TMPDIR).
  const profileRoot = await mkdtemp(path.join(artifactDir, "profile-"));
  process.env.TMPDIR = profileRoot;

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  log(`chromium ${browser.version()} at ${CHROMIUM}; server ${base}`);

  let one, two, phone;
  let failedAt = null;
  const steps = [];
  const step = (name, fn) => MODE === "open" && steps.push({ name, fn });
  const authStep = (name, fn) => MODE === "auth" && steps.push({ name, fn });

  let shopperCart = null;
  authStep("with auth on, the page asks to sign in before anything else", async () => {
    one = await newPage(browser, "page 1");
    await one.page.goto(base + "/");
    await one.page.waitForSelector("#signin:not([hidden]) #signin-shopper");
    assert(await one.page.isHidden("main"), "the shop shows before signing in");
    assert(await one.page.isVisible("#signin-admin"), "no demo admin sign-in");
    const res = await fetch(`${base}/carts`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: "anyone" }),
    });
    assert(res.status === 401, `an anonymous cart create answered ${res.status}`);
    await shot(one.page, "auth-signin.png", false);
  });

  authStep("a demo admin signs in, adds the demo products, and signs out", async () => {
    await one.page.click("#signin-admin");
    await one.page.waitForSelector("#empty-catalog:not([hidden])");
    const who = await one.page.textContent("#user");
    assert(/^demo-admin-[0-9a-f]{8}$/.test(who), `signed in as ${who}`);
    await one.page.click("#seed");
    await one.page.waitForSelector("#products li.product >> nth=5", { timeout: 10000 });
    await one.page.click("#signout");
    await one.page.waitForSelector("#signin:not([hidden])");
    assert(!(await one.page.evaluate(() => localStorage.getItem("cw.token"))), "the token stays after sign-out");
  });

  authStep("a demo shopper shops, and a second tab of theirs shares the cart live", async () => {
    await one.page.click("#signin-shopper");
    await waitLive(one.page);
    await one.page.waitForSelector('#cart[data-version="1"]');
    const who = await one.page.textContent("#user");
    assert(/^demo-shopper-[0-9a-f]{8}$/.test(who), `signed in as ${who}`);
    shopperCart = cartIdOf(one.page.url());
    assert(shopperCart, `no cart id in ${one.page.url()}`);
    // The same person's second tab: same browser profile, so the same token.
    const tab = await one.context.newPage();
    two = { context: one.context, page: tab, name: "page 2", ...record(tab) };
    two.page.setDefaultTimeout(5000);
    two.page.on("pageerror", (e) => problems.push(`page 2: uncaught ${e.message}`));
    await two.page.goto(`${base}/#cart=${shopperCart}`);
    await waitLive(two.page);
    await one.page.click(`${card("MUG-1")} button.add`);
    await waitQty(two.page, "MUG-1", 1, 5000);
    await two.page.click(`${line("MUG-1")} button[aria-label^="One more"]`);
    await waitQty(one.page, "MUG-1", 2, 5000);
  });

  authStep("another shopper cannot see that cart, from the page or the API", async () => {
    phone = await newPage(browser, "other shopper");
    await phone.page.goto(`${base}/#cart=${shopperCart}`);
    await phone.page.click("#signin-shopper");
    await waitLive(phone.page);
    await phone.page.waitForSelector('#cart[data-version="1"]');
    const theirs = await phone.page.evaluate(() => window.__cw.cart?.id);
    assert(theirs && theirs !== shopperCart, `the other shopper was shown cart ${theirs}`);
    const token = await phone.page.evaluate(() => localStorage.getItem("cw.token"));
    const res = await fetch(`${base}/carts/${shopperCart}`, { headers: { authorization: `Bearer ${token}` } });
    assert(res.status === 404, `another user's cart answered ${res.status}`);
    await phone.context.close();
    phone = null;
  });

  authStep("the shopper checks out and sees the order confirmed in both tabs", async () => {
    await one.page.click("#checkout");
    await one.page.waitForSelector('#order[data-status="CONFIRMED"]', { timeout: 10000 });
    await two.page.waitForSelector('#order[data-status="CONFIRMED"]', { timeout: 5000 });
    await shot(one.page, "auth-confirmed.png");
    assert(problems.length === 0, problems.join("\n"));
  });

  step("a new, empty shop offers demo products, which then show with stock", async () => {
    const { items } = await api("GET", "/products?limit=1");
    if (items.length > 0) {
      log("  (the catalog is not empty: nothing to check here)");
      return;
    }
    const first = await newPage(browser, "first visit");
    await first.page.goto(base + "/");
    await first.page.waitForSelector("#empty-catalog:not([hidden])");
    await shot(first.page, "desktop-empty.png", false);
    await first.page.click("#seed");
    await first.page.waitForSelector("#products li.product >> nth=5", { timeout: 10000 });
    await first.page.waitForFunction(
      () => [...document.querySelectorAll("#products .stock")].every((el) => el.dataset.available !== ""),
      undefined,
      { timeout: 10000 },
    );
    assert(await first.page.isHidden("#empty-catalog"), "the empty-catalog note stays after seeding");
    await shot(first.page, "desktop-demo.png", false);
    await first.context.close();
  });

  step("seed products and stock through the REST API", async () => {
    await seed();
  });

  step("page 1 shows the catalog with formatted prices and live stock", async () => {
    one = await newPage(browser, "page 1");
    const res = await one.page.goto(base + "/");
    assert(res.status() === 200, `GET / answered ${res.status()}`);
    const csp = res.headers()["content-security-policy"] ?? "";
    assert(csp.includes("script-src 'self'") && !csp.includes("unsafe"), `CSP: ${csp}`);
    await one.page.waitForSelector(card(MUG.sku));
    const price = await one.page.textContent(`${card(MUG.sku)} .price`);
    assert(price === "€12.99", `mug price shown as ${JSON.stringify(price)}`);
    // Each sku's stock arrives on its own (its subscribe reply): wait for the kettle's too
    // before reading it.
    await one.page.waitForSelector(`${card(MUG.sku)} .stock[data-available="10"]`, { timeout: 10000 });
    await one.page.waitForSelector(`${card(KETTLE.sku)} .stock[data-available="2"]`, { timeout: 10000 });
    const stock = await one.page.textContent(`${card(KETTLE.sku)} .stock`);
    assert(/Only 2 left/.test(stock), `kettle stock shown as ${JSON.stringify(stock)}`);
    await waitLive(one.page);
    await one.page.waitForFunction(() => /#cart=/.test(location.hash));
    await one.page.waitForSelector('#cart[data-version="1"]');
  });

  step("page 2 (another browser) opens the same cart from the link", async () => {
    two = await newPage(browser, "page 2");
    const id = cartIdOf(one.page.url());
    assert(id, `no cart id in ${one.page.url()}`);
    await two.page.goto(`${base}/#cart=${id}`);
    await waitLive(two.page);
    await two.page.waitForSelector('#cart[data-version="1"]');
    const shownId = await two.page.evaluate(() => window.__cw.cart?.id);
    assert(shownId === id, `page 2 shows cart ${shownId}, not ${id}`);
  });

  step("a change in page 1 shows in page 2 within 1 s (and back)", async () => {
    let t0 = performance.now();
    await one.page.click(`${card(MUG.sku)} button.add`);
    await waitQty(two.page, MUG.sku, 1, 1000);
    const forward = Math.round(performance.now() - t0);
    t0 = performance.now();
    await two.page.click(`${line(MUG.sku)} button[aria-label^="One more"]`);
    await waitQty(one.page, MUG.sku, 2, 1000);
    const back = Math.round(performance.now() - t0);
    const total = await two.page.textContent("#total");
    assert(total === "€25.98", `total on page 2: ${total}`);
    log(`  page 1 → page 2 in ${forward} ms; page 2 → page 1 in ${back} ms`);
  });

  step("keyboard: Tab reaches an add button, Enter adds, focus is visible", async () => {
    const target = `${card(CANDLE.sku)} button.add`;
    await one.page.evaluate(() => document.activeElement?.blur());
    let reached = false;
    for (let i = 0; i < 60 && !reached; i++) {
      await one.page.keyboard.press("Tab");
      reached = await one.page.evaluate((sel) => document.activeElement === document.querySelector(sel), target);
    }
    assert(reached, "the candle's add button was not reached with Tab");
    const ring = await one.page.evaluate(() => {
      const el = document.activeElement;
      return el.matches(":focus-visible") && getComputedStyle(el).outlineStyle !== "none";
    });
    assert(ring, "the focused add button shows no focus ring");
    await one.page.keyboard.press("Enter");
    await waitQty(one.page, CANDLE.sku, 1);
    await waitQty(two.page, CANDLE.sku, 1, 1000);
  });

  step("screenshots: desktop and phone width (360×740)", async () => {
    await one.page.waitForFunction(
      () => [...document.querySelectorAll("#products .stock")].every((el) => el.dataset.available !== ""),
      undefined,
      { timeout: 10000 },
    );
    await shot(one.page, "desktop.png");
    phone = await newPage(browser, "phone", {
      viewport: { width: 360, height: 740 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
    });
    await phone.page.goto(one.page.url());
    await waitLive(phone.page);
    await waitQty(phone.page, CANDLE.sku, 1);
    await phone.page.waitForFunction(
      () => {
        const stock = [...document.querySelectorAll("#products .stock")];
        return stock.length > 0 && stock.every((el) => el.dataset.available !== "");
      },
      undefined,
      { timeout: 10000 },
    );
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
    assert(overflow <= 0, `the page is ${overflow}px wider than a 360px screen`);
    await shot(phone.page, "phone.png", false);
    await shot(phone.page, "phone-full.png", true);
    await phone.context.close();
    phone = null;
  });

  step("stock on the page follows purchases made elsewhere by push (no REST stock reads)", async () => {
    await one.page.waitForFunction((sku) => window.__cw.stockLive.includes(sku), CANDLE.sku, { timeout: 10000 });
    const mark = markOf(one);
    // Someone else buys 2 candles over REST (this edge answers checkouts at once).
    const other = await api("POST", "/carts", { user_id: `other-${tag}` });
    await api("POST", `/carts/${other.id}/items`, { sku: CANDLE.sku, qty: 2 });
    const order = await api("POST", `/carts/${other.id}/checkout`, undefined, { "Idempotency-Key": `other-${tag}` });
    assert(!["FAILED", "CANCELLED"].includes(order.status), `other shopper's order: ${order.status}`);
    const t0 = performance.now();
    // Reserving the candles already lowers what is available: no need to wait for more.
    await one.page.waitForSelector(`${card(CANDLE.sku)} .stock[data-available="3"]`, { timeout: 15000 });
    log(`  stock change seen after ${Math.round(performance.now() - t0)} ms`);
    const pushed = framesSince(one, mark).some(
      (f) => f.type === "stock" && f.stock?.sku === CANDLE.sku && f.stock.available === 3,
    );
    assert(pushed, "the candle's new stock did not arrive as a stock push on the socket");
    const reads = readsSince(one, mark, "/inventory/");
    assert(reads.length === 0, `the page read stock over REST: ${reads.map((r) => r.path).join(", ")}`);
    const text = await one.page.textContent("#stock-note");
    assert(text === "Stock updates live.", `stock note: ${JSON.stringify(text)}`);
  });

  step("a dropped socket shows 'Reconnecting…' and recovers by itself", async () => {
    await two.page.evaluate(() => window.__cw.ws.close());
    await two.page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 2000 });
    const banner = await two.page.textContent("#banner");
    assert(/Reconnecting/.test(banner) && (await two.page.isVisible("#banner")), `banner: ${banner}`);
    await waitLive(two.page);
    assert(await two.page.isHidden("#banner"), "the banner stays after reconnecting");
    // Still live after the reconnection: a change in page 1 arrives.
    await one.page.click(`${card(LAMP.sku)} button.add`);
    await waitQty(two.page, LAMP.sku, 1, 1000);
  });

  step("offline: changes made meanwhile appear after the network returns", async () => {
    await two.context.setOffline(true);
    await two.page.evaluate(() => window.__cw.ws?.close());
    await two.page.waitForSelector('#conn[data-state="offline"], #conn[data-state="reconnecting"]', { timeout: 2000 });
    assert(await two.page.isVisible("#banner"), "no reconnecting banner while offline");
    // No pushes without the socket: the page says its stock may be stale.
    const staleNote = await two.page.textContent("#stock-note");
    assert(/out of date/.test(staleNote), `stock note while offline: ${JSON.stringify(staleNote)}`);
    await shot(two.page, "reconnecting.png", false);
    // Page 1 removes the lamp while page 2 cannot hear it.
    await one.page.click(`${line(LAMP.sku)} button.remove`);
    await waitQty(one.page, LAMP.sku, 0);
    await two.page.waitForTimeout(300);
    await two.context.setOffline(false);
    await waitLive(two.page);
    await waitQty(two.page, LAMP.sku, 0, 10000);
    // Resubscribed: the stock is live again.
    await two.page.waitForFunction(() => document.getElementById("stock-note").textContent === "Stock updates live.", undefined, {
      timeout: 10000,
    });
    const [v1, v2] = await Promise.all([one.page, two.page].map((p) => p.evaluate(() => window.__cw.cart.version)));
    assert(v1 === v2, `page 1 shows version ${v1}, page 2 version ${v2}`);
  });

  step("a server refusal over the WebSocket is shown in words", async () => {
    // The lamp is withdrawn from sale; page 1 has not reloaded its catalog yet.
    await api("DELETE", `/products/${LAMP.sku}`);
    await one.page.click(`${card(LAMP.sku)} button.add`);
    await one.page.waitForSelector("#notice:not([hidden])");
    const text = await one.page.textContent("#notice-text");
    assert(text === "Test lamp is no longer for sale.", `message: ${JSON.stringify(text)}`);
    await one.page.click("#notice-close");
  });

  step("a pending order turns CONFIRMED on both pages by push (no polling), and stock drops", async () => {
    const marks = [markOf(one), markOf(two)];
    const answer = one.page.waitForResponse(
      (r) => r.request().method() === "POST" && /\/checkout$/.test(new URL(r.url()).pathname),
      { timeout: 15000 },
    );
    await one.page.click("#checkout");
    const res = await answer;
    const placed = await res.json();
    // This edge answers before the saga settles: the page gets a pending order.
    assert(res.status() === 202 && PENDING.includes(placed.status), `checkout answered ${res.status()} ${placed.status}`);
    await one.page.waitForSelector('#order[data-status="CONFIRMED"]', { timeout: 15000 });
    const title = await one.page.textContent("#order-title");
    assert(title === "Order confirmed", `title: ${title}`);
    const detail = await one.page.textContent("#order-detail");
    assert(/confirmed/.test(detail) && detail.includes("€42.48"), `detail: ${detail}`);
    await two.page.waitForSelector('#order[data-status="CONFIRMED"]', { timeout: 15000 });
    assert(await two.page.isHidden("#checkout"), "page 2 still offers checkout of a checked-out cart");
    const shown = await one.page.evaluate(() => window.__cw.shownOrders);
    const mine = shown.filter((o) => o.id === placed.id).map((o) => o.status);
    assert(PENDING.includes(mine[0]) && mine.at(-1) === "CONFIRMED", `page 1 showed ${mine.join(" → ")}`);
    log(`  page 1 showed ${mine.join(" → ")}`);
    for (const [i, p] of [one, two].entries()) {
      const reads = readsSince(p, marks[i], "/orders/");
      assert(reads.length === 0, `${p.name} read the order over REST: ${reads.map((r) => r.path).join(", ")}`);
      const heard = framesSince(p, marks[i]).some((f) => f.order?.id === placed.id && f.order.status === "CONFIRMED");
      assert(heard, `${p.name} did not hear the CONFIRMED order on its socket`);
    }
    await one.page.waitForSelector(`${card(MUG.sku)} .stock[data-available="8"]`, { timeout: 15000 });
    assert(readsSince(one, marks[0], "/inventory/").length === 0, "page 1 read stock over REST");
    await shot(one.page, "desktop-confirmed.png");
  });

  step("an oversell (qty above stock) ends in a readable message", async () => {
    const before = cartIdOf(one.page.url());
    await one.page.click("#new-cart");
    await one.page.waitForFunction((old) => !location.hash.includes(old) && /#cart=/.test(location.hash), before);
    await one.page.waitForSelector('#cart[data-status="OPEN"]');
    await one.page.click(`${card(KETTLE.sku)} button.add`);
    await waitQty(one.page, KETTLE.sku, 1);
    await one.page.fill(`${line(KETTLE.sku)} .qty-input`, "5");
    await one.page.press(`${line(KETTLE.sku)} .qty-input`, "Enter");
    await waitQty(one.page, KETTLE.sku, 5);
    const warn = await one.page.textContent(`${line(KETTLE.sku)} .line-warn`);
    assert(/^Only 2 in stock\./.test(warn), `line warning: ${warn}`);
    await one.page.click("#checkout");
    await one.page.waitForSelector('#order[data-status="FAILED"]', { timeout: 10000 });
    const detail = await one.page.textContent("#order-detail");
    assert(
      detail === "Not enough stock of Test kettle: you asked for 5, but only 2 are available.",
      `failure shown as ${JSON.stringify(detail)}`,
    );
    const panel = await one.page.textContent("#cart");
    assert(!/[{}]|insufficient_stock|"code"/.test(panel), `raw error text in the cart: ${panel}`);
    await shot(one.page, "desktop-oversell.png");
  });

  step("a pending order turns FAILED on screen by push (no polling) when the payment is declined", async () => {
    const declined = await newPage(browser, "declined shopper");
    phone = declined; // its screenshot is taken if this step fails
    // This person's payments are declined by the edge of this run.
    await declined.page.addInitScript((user) => localStorage.setItem("cw.user", user), DECLINED_USER);
    await declined.page.goto(base + "/");
    await waitLive(declined.page);
    await declined.page.waitForSelector('#cart[data-version="1"]', { timeout: 10000 });
    assert((await declined.page.textContent("#user")) === DECLINED_USER, "the page did not take the user id");
    const before = await api("GET", `/inventory/${MUG.sku}`);
    await declined.page.waitForSelector(`${card(MUG.sku)} .stock[data-available="${before.available}"]`, {
      timeout: 10000,
    });
    await declined.page.click(`${card(MUG.sku)} button.add`);
    await waitQty(declined.page, MUG.sku, 1, 10000);
    const mark = markOf(declined);
    const answer = declined.page.waitForResponse(
      (r) => r.request().method() === "POST" && /\/checkout$/.test(new URL(r.url()).pathname),
      { timeout: 15000 },
    );
    await declined.page.click("#checkout");
    const res = await answer;
    const placed = await res.json();
    assert(res.status() === 202 && PENDING.includes(placed.status), `checkout answered ${res.status()} ${placed.status}`);
    await declined.page.waitForSelector('#order[data-status="FAILED"]', { timeout: 15000 });
    const title = await declined.page.textContent("#order-title");
    assert(title === "Order failed", `title: ${title}`);
    const detail = await declined.page.textContent("#order-detail");
    assert(
      detail === "The payment was declined. Nothing was charged and no stock was held.",
      `failure shown as ${JSON.stringify(detail)}`,
    );
    assert(await declined.page.isVisible("#retry-items"), "no way to try the same items again");
    const shown = await declined.page.evaluate(() => window.__cw.shownOrders);
    const mine = shown.filter((o) => o.id === placed.id).map((o) => o.status);
    assert(PENDING.includes(mine[0]) && mine.at(-1) === "FAILED", `the page showed ${mine.join(" → ")}`);
    log(`  the page showed ${mine.join(" → ")}`);
    // The saga releases the reserved mug: the stock shown ends where it was (by push; the
    // edge may coalesce the reserve and the release into one).
    await declined.page.waitForSelector(`${card(MUG.sku)} .stock[data-available="${before.available}"]`, {
      timeout: 15000,
    });
    const heard = framesSince(declined, mark).some((f) => f.order?.id === placed.id && f.order.status === "FAILED");
    assert(heard, "the FAILED order did not arrive on the socket");
    const orderReads = readsSince(declined, mark, "/orders/");
    assert(orderReads.length === 0, `the page read the order over REST: ${orderReads.map((r) => r.path).join(", ")}`);
    const stockReads = readsSince(declined, mark, "/inventory/");
    assert(stockReads.length === 0, `the page read stock over REST: ${stockReads.map((r) => r.path).join(", ")}`);
    await shot(declined.page, "desktop-declined.png");
    const csp = await declined.page.evaluate(() => window.__cspViolations);
    problems.push(...csp.map((v) => `${declined.name}: CSP violation ${v}`));
    await declined.context.close();
    phone = null;
  });

  step("versions shown only ever grew, and nothing broke the page", async () => {
    for (const p of [one, two]) {
      const versions = await p.page.evaluate(() => window.__cw.shownVersions);
      const cartSwitches = [];
      for (let i = 1; i < versions.length; i++) {
        if (!(versions[i] > versions[i - 1])) cartSwitches.push(i);
      }
      // Page 1 switched to a new cart once (its versions restart at 1 there).
      const allowed = p === one ? 1 : 0;
      assert(cartSwitches.length <= allowed, `${p.name} showed versions ${versions.join(",")}`);
      const csp = await p.page.evaluate(() => window.__cspViolations);
      problems.push(...csp.map((v) => `${p.name}: CSP violation ${v}`));
    }
    assert(problems.length === 0, problems.join("\n"));
  });

  for (const { name, fn } of steps) {
    if (failedAt) {
      results.push({ name, status: "skipped" });
      continue;
    }
    const t0 = performance.now();
    try {
      await fn();
      const ms = Math.round(performance.now() - t0);
      results.push({ name, status: "passed", ms });
      log(`ok   ${name} (${ms} ms)`);
    } catch (err) {
      const ms = Math.round(performance.now() - t0);
      failedAt = name;
      results.push({ name, status: "failed", ms });
      log(`FAIL ${name} (${ms} ms)\n${String(err?.stack ?? err).replace(/^/gm, "      ")}`);
      for (const p of [one, two, phone]) {
        if (!p) continue;
        try {
          const file = await shot(p.page, `failure-${p.name.replace(/\s+/g, "-")}.png`);
          log(`  screenshot: ${file}`);
          const html = await p.page.content();
          await writeFile(path.join(artifactDir, `failure-${p.name.replace(/\s+/g, "-")}.html`), html);
        } catch {
          /* best effort */
        }
      }
    }
  }

  await browser.close();
  await rm(profileRoot, { recursive: true, force: true });
}

let crashed = null;
try {
  await main();
} catch (err) {
  crashed = err;
  log(`crashed: ${err?.stack ?? err}`);
}
const passed = results.filter((r) => r.status === "passed").length;
const failed = results.filter((r) => r.status === "failed").length + (crashed ? 1 : 0);
const skipped = results.filter((r) => r.status === "skipped").length;
log(`screenshots in ${path.resolve(artifactDir)}`);
log(`total ${Math.round(performance.now() - runStart)} ms`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
