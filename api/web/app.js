// The shop page: catalog with live stock, a live cart shared by every tab that opens it,
// checkout and the order's result, live. A plain client of the public v1 contract: REST
// for the catalog, carts and checkout; `/ws` for cart commands and live pushes of the
// cart, of the order placed and of the stock of every sku on the page.
//
// Rules kept here:
// - The cart shown only moves forward: a cart is applied only if its `version` is greater
//   than the one on screen, whichever channel it came from (push, reply, re-read).
// - A checkout attempt has one Idempotency-Key, kept (per cart, in localStorage) until
//   the shop gives a definite answer, so "try again" can never place a second order.
// - `add_item` is not idempotent: it is never resent after a lost connection; the cart is
//   re-read instead and the person decides.
// - Stock is never polled: the page subscribes (`subscribe_stock`) to every sku it shows
//   (the catalog and the cart's lines; at most STOCK_LIVE_MAX of them, the rest is read
//   once over REST) and unsubscribes the ones it stops showing. Each reply or push is
//   applied only if its `version` is greater than the one on screen. The edge pushes at
//   most one stock per sku per second, the latest. While the socket is down the stock is
//   marked possibly stale (and skus never seen are read once over REST); every
//   reconnection resubscribes, and the replies carry the current stock.
// - A placed order is followed live (`subscribe_order`), not polled: its panel moves
//   from the checkout's answer (often still PENDING) to CONFIRMED, FAILED or CANCELLED
//   as the pushes arrive, newer versions only; resubscribed after every reconnection,
//   unsubscribed when the page stops showing that order.
// - With auth on (`GET /auth/config`), nothing is asked of the shop before the person
//   signs in: as a demo shopper or admin (development edges), or at the identity
//   provider, which sends them back with the token in the URL fragment. The token lives
//   in localStorage (shared by the tabs of one cart), goes out as `Authorization: Bearer`
//   on REST and as `?token=` on `/ws`, and is dropped on sign-out or the first 401.

import { Live, rest, setBearer } from "./live.js";
import { ShopError, describeError, describeFailure, money, orderHeadline, settled, stockLabel } from "./format.js";

const CATALOG_POLL_MS = 15000;
/** Skus whose stock is watched live: the edge allows 100 subscriptions per socket (carts,
 * orders and skus together); beyond this the stock is read once when first shown. */
const STOCK_LIVE_MAX = 90;
/** Retries of a failed order subscribe (the cart is frozen a moment before its order is
 * stored, so a tab that learns of the order from the cart may ask too early). */
const ORDER_SUBSCRIBE_RETRY_MS = [300, 600, 1200, 2000, 3000, 5000];
const MAX_QTY = 999;
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN_KEY = "cw.token";
const LOGIN_STATE_KEY = "cw.login-state";

const DEMO_PRODUCTS = [
  { sku: "MUG-1", name: "Enamel mug", description: "Blue speckled enamel, 350 ml.", price: 1299, category: "kitchen", stock: 12 },
  { sku: "KETTLE-1", name: "Pour-over kettle", description: "Gooseneck spout, 1 litre, brushed steel.", price: 4900, category: "kitchen", stock: 5 },
  { sku: "TOWEL-1", name: "Linen tea towel", description: "Stonewashed linen, 50 × 70 cm.", price: 1450, category: "kitchen", stock: 20 },
  { sku: "NOTEBOOK-1", name: "Dot-grid notebook", description: "A5, 192 pages, lies flat.", price: 1800, category: "paper", stock: 8 },
  { sku: "TOTE-1", name: "Canvas tote", description: "Heavy natural cotton with a long strap.", price: 2200, category: "bags", stock: 3 },
  { sku: "CANDLE-1", name: "Beeswax candle", description: "Hand-poured, burns for 40 hours.", price: 1650, category: "home", stock: 2 },
];

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

/** localStorage that never throws (private modes, disabled storage). */
const store = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      /* not kept: fine */
    }
  },
  del(key) {
    try {
      localStorage.removeItem(key);
    } catch {
      /* fine */
    }
  },
};

/** Random hex, from getRandomValues (randomUUID needs a secure context; this does not). */
function randomHex(bytes) {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Builds an element. Text always goes in as text, never as HTML. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c);
  return el;
}

function hue(sku) {
  let x = 0;
  for (const ch of sku) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return x % 8;
}

function initials(name) {
  const words = name.split(/\s+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[words.length - 1][0] : name.slice(0, 2)).toUpperCase();
}

// ---------------------------------------------------------------------------------------
// State

const state = {
  userId: "",
  /** The signed-in identity when auth is on: `{token, sub, admin}`. */
  identity: null,
  /** What `GET /auth/config` said. */
  authConfig: null,
  cartId: null,
  /** The cart on screen; replaced only by a greater version. */
  cart: null,
  /** Active products by sku, in catalog order. */
  products: new Map(),
  /** Display names of every sku seen (also inactive ones still in a cart). */
  names: new Map(),
  /** Available units by sku (undefined: not known yet). */
  stock: new Map(),
  /** The version of the stock shown, by sku; older ones are ignored. */
  stockVersion: new Map(),
  /** Skus whose stock is watched over `/ws`. */
  stockLive: new Set(),
  /** Shown skus beyond STOCK_LIVE_MAX: read once, not live. */
  stockReadOnly: false,
  /** The socket is down: the stock shown may be out of date. */
  stockStale: false,
  /** Skus with a line command in flight (their controls ignore clicks meanwhile). */
  busy: new Set(),
  /** Cart commands of this page in flight (their pushes are not "from elsewhere"). */
  inflight: 0,
  /** The order on screen. */
  order: null,
  /** The order watched over `/ws` (the one on screen, or the cart's while it loads). */
  orderWatched: null,
  /** A retry of a failed order subscribe. */
  orderTimer: 0,
  checkingOut: false,
  creatingCart: false,
};

const nameOf = (sku) => state.names.get(sku) ?? sku;

const live = new Live(wsUrl);

// A small hook for the browser tests (and curious people): the live socket, the cart on
// screen and every version shown, in order, and every order state shown, in order.
const shownVersions = [];
const shownOrders = [];
window.__cw = {
  get ws() {
    return live.socket;
  },
  get cart() {
    return state.cart;
  },
  get connection() {
    return live.state;
  },
  shownVersions,
  shownOrders,
  get stockLive() {
    return [...state.stockLive];
  },
};

function wsUrl() {
  const u = new URL("/ws", location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.hash = "";
  // Browsers cannot set headers on a WebSocket: the edge reads the token here.
  if (state.identity) u.searchParams.set("token", state.identity.token);
  return u.href;
}

// ---------------------------------------------------------------------------------------
// Messages: an error box (role=alert) in the cart, and a polite live region.

/** Shows an error; `connection` errors clear themselves once the shop answers again. */
function showError(text, { connection = false } = {}) {
  const box = $("notice");
  $("notice-text").textContent = text;
  box.dataset.connection = connection ? "1" : "";
  box.hidden = false;
}

function clearError() {
  $("notice").hidden = true;
  $("notice-text").textContent = "";
}

function clearConnectionError() {
  if ($("notice").dataset.connection === "1") clearError();
}

let announceTimer = 0;
function announce(text) {
  const region = $("announcer");
  // Clearing first makes screen readers repeat an identical message.
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// ---------------------------------------------------------------------------------------
// Connection state

const CONN_TEXT = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

let everOpen = false;
function renderConnection(s) {
  const pill = $("conn");
  pill.dataset.state = s;
  $("conn-text").textContent = CONN_TEXT[s] ?? s;
  const banner = $("banner");
  if (s === "reconnecting" || s === "offline") {
    banner.dataset.state = s;
    $("banner-text").textContent =
      s === "offline"
        ? "You're offline. Reconnecting as soon as the network is back…"
        : "Connection lost. Reconnecting… Changes made elsewhere will appear when we're back.";
    banner.hidden = false;
  } else if (s === "open") {
    if (!banner.hidden && everOpen) announce("Reconnected. The cart is up to date.");
    banner.hidden = true;
    everOpen = true;
  }
}

// ---------------------------------------------------------------------------------------
// Catalog and stock

async function loadCatalog() {
  const items = [];
  let cursor = null;
  try {
    for (let page = 0; page < 10; page++) {
      const q = new URLSearchParams({ active: "true", limit: "200" });
      if (cursor) q.set("cursor", cursor);
      const { body } = await rest("GET", `/products?${q}`);
      items.push(...(body?.items ?? []));
      cursor = body?.next_cursor;
      if (!cursor) break;
    }
  } catch (err) {
    $("catalog-status").textContent = `The catalog could not be loaded. ${describeError(err, "catalog", nameOf)}`;
    $("catalog-status").hidden = false;
    return;
  }
  $("catalog-status").hidden = true;
  state.products = new Map(items.map((p) => [p.sku, p]));
  for (const p of items) state.names.set(p.sku, p.name);
  renderCatalog();
  renderCart();
  syncStock();
}

/** Every sku the page shows: the cart's lines first, then the catalog. */
function shownSkus() {
  return [...new Set([...(state.cart?.items ?? []).map((l) => l.sku), ...state.products.keys()])];
}

/**
 * Watches the stock of the skus shown (up to STOCK_LIVE_MAX) and unwatches the others.
 * The subscribe replies bring the current stock; pushes follow. Skus that cannot be
 * watched (beyond the limit, or while the socket is down and their stock was never seen)
 * are read once over REST: never on a timer.
 */
function syncStock() {
  const shown = shownSkus();
  const wanted = new Set(shown.slice(0, STOCK_LIVE_MAX));
  for (const sku of state.stockLive) {
    if (!wanted.has(sku)) {
      state.stockLive.delete(sku);
      live.unwatchStock(sku);
    }
  }
  for (const sku of wanted) {
    if (state.stockLive.has(sku)) continue;
    state.stockLive.add(sku);
    live.watchStock(sku).catch((err) => onStockError(sku, err));
  }
  const extra = shown.slice(STOCK_LIVE_MAX);
  state.stockReadOnly = extra.length > 0;
  readStock(extra.filter((sku) => !state.stock.has(sku)));
  fillUnknownStock();
}

/** While the socket is down (not merely still connecting): reads once, over REST, the
 * stock of shown skus that has never been seen, so the page is usable without `/ws`. */
function fillUnknownStock() {
  if (live.isOpen || live.state === "connecting") return;
  readStock(shownSkus().filter((sku) => !state.stock.has(sku)));
}

/** A stock subscribe that failed. */
function onStockError(sku, err) {
  if (!state.stockLive.has(sku)) return;
  if (err instanceof ShopError && err.code === "disconnected") return; // resubscribed on reconnection
  if (err instanceof ShopError && err.code === "not_found") {
    // No such product (any more): nothing can be bought.
    state.stock.set(sku, 0);
    renderStockOf(sku);
    return;
  }
  // Refused or unanswered (e.g. rate limited): read it once; the next reconnection
  // subscribes again.
  readStock([sku]);
}

/** Applies a sku's stock (a reply, a push or a REST read) if newer than the one shown. */
function applyStock(stock) {
  if (!stock || typeof stock.sku !== "string") return false;
  const shown = state.stockVersion.get(stock.sku);
  const version = Number(stock.version ?? 0);
  if (shown !== undefined && state.stock.has(stock.sku) && !(version > shown)) return false;
  state.stockVersion.set(stock.sku, version);
  state.stock.set(stock.sku, Number(stock.available ?? 0));
  renderStockOf(stock.sku);
  return true;
}

/** Re-renders what shows a sku's stock (the cart too when the sku is in it: its warnings). */
function renderStockOf(sku) {
  if (state.cart?.items.some((l) => l.sku === sku)) renderCart();
  else renderStock();
}

const stockReading = new Set();
/** One REST read of each sku's stock (a fallback: the socket is the way stock arrives). */
async function readStock(skus) {
  const queue = skus.filter((sku) => !stockReading.has(sku));
  if (!queue.length) return;
  for (const sku of queue) stockReading.add(sku);
  const worker = async () => {
    for (let sku = queue.shift(); sku !== undefined; sku = queue.shift()) {
      try {
        const { body } = await rest("GET", `/inventory/${encodeURIComponent(sku)}`, { timeoutMs: 5000 });
        applyStock({ ...body, sku });
      } catch (err) {
        if (err instanceof ShopError && err.code === "not_found" && !state.stock.has(sku)) {
          state.stock.set(sku, 0);
          renderStockOf(sku);
        }
        // Otherwise the shop did not answer: the stock stays unknown until the socket
        // is back (its subscribe reply carries it).
      } finally {
        stockReading.delete(sku);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(6, queue.length) }, worker));
}

const productEls = new Map();

function productCard(p) {
  const parts = {
    name: h("h3", { class: "product-name" }),
    desc: h("p", { class: "product-desc" }),
    category: h("span", { class: "chip" }),
    price: h("span", { class: "price" }),
    stock: h("span", { class: "stock" }),
    inCart: h("span", { class: "in-cart" }),
    initials: h("span", { class: "initials", "aria-hidden": "true" }),
    tile: h("div", { class: "tile" }),
    add: h("button", { type: "button", class: "btn add", dataset: { sku: p.sku }, onclick: () => addToCart(p.sku) }, "Add to cart"),
  };
  parts.tile.append(parts.initials, parts.inCart);
  const li = h(
    "li",
    { class: "product", dataset: { sku: p.sku } },
    parts.tile,
    h(
      "div",
      { class: "product-body" },
      h("div", { class: "product-top" }, parts.name, parts.category),
      parts.desc,
      h("div", { class: "product-meta" }, parts.price, parts.stock),
      h("div", { class: "product-actions" }, parts.add),
    ),
  );
  return { li, parts };
}

function renderCatalog() {
  const list = $("products");
  const seen = new Set();
  let previous = null;
  for (const p of state.products.values()) {
    seen.add(p.sku);
    let entry = productEls.get(p.sku);
    if (!entry) {
      entry = productCard(p);
      productEls.set(p.sku, entry);
    }
    const { li, parts } = entry;
    parts.name.textContent = p.name;
    parts.desc.textContent = p.description || "";
    parts.desc.hidden = !p.description;
    parts.category.textContent = p.category;
    parts.price.textContent = money(p.price, p.currency);
    parts.initials.textContent = initials(p.name);
    parts.tile.className = `tile hue-${hue(p.sku)}`;
    parts.add.setAttribute("aria-label", `Add ${p.name} to cart`);
    // Keep DOM order = catalog order without re-inserting nodes that are in place
    // (re-inserting would drop keyboard focus).
    const want = previous ? previous.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    previous = li;
  }
  for (const [sku, entry] of productEls) {
    if (!seen.has(sku)) {
      entry.li.remove();
      productEls.delete(sku);
    }
  }
  $("empty-catalog").hidden = state.products.size > 0;
  const n = state.products.size;
  $("product-count").textContent = n ? `${n} ${n === 1 ? "product" : "products"} · ` : "";
  renderStock();
}

function renderStock() {
  const inCart = new Map((state.cart?.items ?? []).map((l) => [l.sku, l.qty]));
  for (const [sku, { parts }] of productEls) {
    const available = state.stock.get(sku);
    parts.stock.textContent = stockLabel(available);
    parts.stock.dataset.available = available ?? "";
    parts.stock.className = `stock ${available === undefined ? "" : available <= 0 ? "out" : available <= 3 ? "low" : "ok"}`;
    const soldOut = available !== undefined && available <= 0;
    parts.add.setAttribute("aria-disabled", soldOut ? "true" : "false");
    parts.add.textContent = soldOut ? "Sold out" : "Add to cart";
    const qty = inCart.get(sku) ?? 0;
    parts.inCart.textContent = qty ? `${qty} in cart` : "";
    parts.inCart.hidden = !qty;
  }
  $("stock-note").textContent = state.stockStale
    ? "Stock may be out of date while the connection is down; it updates again once we're back."
    : state.stockReadOnly
      ? `Stock updates live for the first ${STOCK_LIVE_MAX} products; the others show the stock when they were loaded.`
      : "Stock updates live.";
  $("stock-note").classList.toggle("warn", state.stockStale);
}

// ---------------------------------------------------------------------------------------
// The cart

function rememberCart(id) {
  store.set("cw.cart", id);
  const hash = `#cart=${id}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

function cartIdFromHash() {
  const m = /^#cart=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  return m ? m[1] : null;
}

/** Shows cart `id`: watches it live and reads it now (a missing cart starts a new one). */
async function openCart(id) {
  if (state.cartId && state.cartId !== id) live.unwatch(state.cartId);
  state.cartId = id;
  state.cart = null;
  state.order = null;
  unfollowOrder();
  rememberCart(id);
  renderCart();
  renderOrder();
  live.watch(id).catch((err) => onWatchError(id, err));
  await refreshCart();
}

async function refreshCart() {
  const id = state.cartId;
  if (!id) return;
  try {
    const { body } = await rest("GET", `/carts/${id}`);
    applyCart(body, "read");
  } catch (err) {
    onWatchError(id, err);
  }
}

function onWatchError(id, err) {
  if (id !== state.cartId) return;
  if (err instanceof ShopError && err.code === "not_found") {
    announce("That cart no longer exists, so a new one was started.");
    newCart();
  } else if (!(err instanceof ShopError && err.code === "disconnected")) {
    showError(describeError(err, "cart", nameOf));
  }
}

async function newCart(copyItems = [], { focus = false } = {}) {
  if (state.creatingCart) return;
  state.creatingCart = true;
  try {
    const { body: cart } = await rest("POST", "/carts", { body: { user_id: state.userId } });
    clearError();
    await openCart(cart.id);
    applyCart(cart, "read");
    for (const line of copyItems) {
      if (!(await command("add_item", line.sku, line.qty))) break;
    }
    if (focus) $("cart-heading").focus();
    announce(copyItems.length ? "A new cart was started with the same items." : "A new, empty cart was started.");
  } catch (err) {
    showError(describeError(err, "new-cart", nameOf));
  } finally {
    state.creatingCart = false;
  }
}

/** Applies a cart if it is newer than the one on screen. */
function applyCart(cart, via) {
  if (!cart || cart.id !== state.cartId) return false;
  const prev = state.cart;
  if (prev && !(cart.version > prev.version)) return false;
  state.cart = cart;
  shownVersions.push(cart.version);
  for (const l of cart.items) if (!state.names.has(l.sku)) learnName(l.sku);
  // Lines that changed flash briefly (not on the first render of a cart).
  const changed = prev ? changedSkus(prev, cart) : new Set();
  if (via === "push" && prev && state.inflight === 0) {
    announce(`The cart was updated elsewhere: ${describeCart(cart)}.`);
  }
  renderCart(changed);
  // Checked out (here or elsewhere): follow its order live. While this page's own
  // checkout is in flight, its answer brings the order first, then it is followed.
  const orderId = cart.status === "CHECKED_OUT" ? cart.checkout?.order_id : null;
  if (orderId && state.order?.id !== orderId && !state.checkingOut) followOrder(orderId);
  // The cart's lines are shown skus too: their stock is watched.
  syncStock();
  return true;
}

const namesAsked = new Set();
async function learnName(sku) {
  if (namesAsked.has(sku)) return;
  namesAsked.add(sku);
  try {
    const { body } = await rest("GET", `/products/${encodeURIComponent(sku)}`);
    if (body?.name) {
      state.names.set(sku, body.name);
      renderCart();
    }
  } catch {
    /* the sku is shown instead */
  }
}

function changedSkus(prev, cart) {
  const before = new Map((prev?.items ?? []).map((l) => [l.sku, l.qty]));
  return new Set(cart.items.filter((l) => before.get(l.sku) !== l.qty).map((l) => l.sku));
}

function describeCart(cart) {
  if (!cart.items.length) return "it is empty";
  const n = cart.items.reduce((a, l) => a + l.qty, 0);
  return `${n} ${n === 1 ? "item" : "items"}, total ${money(cart.total, cart.currency)}`;
}

const lineEls = new Map();

function lineItem(sku) {
  const inputId = `qty-${sku}`;
  const parts = {
    name: h("span", { class: "line-name" }),
    unit: h("span", { class: "line-unit" }),
    total: h("span", { class: "line-total" }),
    warn: h("p", { class: "line-warn", hidden: true }),
    label: h("label", { class: "visually-hidden", for: inputId }),
    input: h("input", {
      id: inputId,
      class: "qty-input",
      type: "number",
      inputmode: "numeric",
      min: "0",
      max: String(MAX_QTY),
      step: "1",
    }),
    minus: h("button", { type: "button", class: "qty-btn", onclick: () => stepQty(sku, -1) }, "−"),
    plus: h("button", { type: "button", class: "qty-btn", onclick: () => stepQty(sku, +1) }, "+"),
    remove: h("button", { type: "button", class: "link-btn remove", onclick: () => lineCommand(sku, "remove_item") }, "Remove"),
    qtyText: h("span", { class: "qty-text" }),
  };
  const { input } = parts;
  input.addEventListener("input", () => {
    input.dataset.dirty = "1";
  });
  input.addEventListener("change", () => commitQty(sku));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      commitQty(sku);
    } else if (e.key === "Escape") {
      delete input.dataset.dirty;
      renderCart();
    }
  });
  const li = h(
    "li",
    { class: "line", dataset: { sku } },
    h("div", { class: "line-top" }, parts.name, parts.total),
    h(
      "div",
      { class: "line-controls" },
      parts.unit,
      h("div", { class: "qty" }, parts.label, parts.minus, parts.input, parts.plus),
      parts.qtyText,
      parts.remove,
    ),
    parts.warn,
  );
  return { li, parts };
}

function renderCart(changed = new Set()) {
  const cart = state.cart;
  const open = cart?.status === "OPEN";
  const items = cart?.items ?? [];
  const count = items.reduce((a, l) => a + l.qty, 0);
  $("cart-count").textContent = String(count);
  $("jump-cart").setAttribute("aria-label", `Cart, ${count} ${count === 1 ? "item" : "items"}`);
  $("cart-meta").textContent = cart
    ? `Cart ${cart.id.slice(0, 8)} · version ${cart.version}${open ? "" : " · checked out"}`
    : state.cartId
      ? "Loading your cart…"
      : "";
  $("cart").dataset.version = cart ? String(cart.version) : "";
  $("cart").dataset.status = cart?.status ?? "";

  const list = $("lines");
  const seen = new Set();
  let previous = null;
  let overStock = 0;
  for (const line of items) {
    seen.add(line.sku);
    let entry = lineEls.get(line.sku);
    if (!entry) {
      entry = lineItem(line.sku);
      lineEls.set(line.sku, entry);
    }
    const { li, parts } = entry;
    const name = nameOf(line.sku);
    parts.name.textContent = name;
    parts.unit.textContent = `${money(line.unit_price, line.currency)} each`;
    parts.total.textContent = money(line.unit_price * line.qty, line.currency);
    parts.label.textContent = `Quantity of ${name}`;
    parts.minus.setAttribute("aria-label", line.qty > 1 ? `One fewer ${name}` : `Remove ${name}`);
    parts.plus.setAttribute("aria-label", `One more ${name}`);
    parts.remove.setAttribute("aria-label", `Remove ${name} from the cart`);
    const editing = document.activeElement === parts.input && parts.input.dataset.dirty;
    if (!editing) {
      parts.input.value = String(line.qty);
      delete parts.input.dataset.dirty;
    }
    parts.input.parentElement.hidden = !open;
    parts.remove.hidden = !open;
    parts.qtyText.hidden = open;
    parts.qtyText.textContent = `× ${line.qty}`;
    const busy = state.busy.has(line.sku);
    li.classList.toggle("busy", busy);
    li.setAttribute("aria-busy", busy ? "true" : "false");
    const available = state.stock.get(line.sku);
    const short = open && available !== undefined && line.qty > available;
    if (short) overStock++;
    parts.warn.hidden = !short;
    parts.warn.textContent = short
      ? available <= 0
        ? `${name} is out of stock.`
        : `Only ${available} in stock. Lower the quantity to check out.`
      : "";
    if (changed.has(line.sku)) {
      li.classList.remove("flash");
      void li.offsetWidth; // restart the animation
      li.classList.add("flash");
    }
    const want = previous ? previous.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    previous = li;
  }
  for (const [sku, entry] of lineEls) {
    if (!seen.has(sku)) {
      entry.li.remove();
      lineEls.delete(sku);
    }
  }
  $("cart-empty").hidden = items.length > 0 || !cart;
  const shopCurrency = state.products.values().next().value?.currency ?? "EUR";
  $("total").textContent = money(cart?.total ?? 0, cart?.currency ?? shopCurrency);
  $("stock-warning").hidden = overStock === 0;
  $("stock-warning").textContent =
    overStock === 0 ? "" : "Some items are above the stock available right now; checkout will fail unless you lower them.";

  const checkout = $("checkout");
  checkout.hidden = !open;
  checkout.setAttribute("aria-disabled", !items.length || state.checkingOut ? "true" : "false");
  checkout.textContent = state.checkingOut ? "Placing order…" : "Check out";
  $("new-cart").hidden = !cart || open;
  $("share").hidden = !cart;
  renderStock();
}

// ---------------------------------------------------------------------------------------
// Cart commands: over the WebSocket when it is open, over REST otherwise.

const ACTION = { add_item: "add", set_qty: "update", remove_item: "remove" };

/** "Can't reach the shop" (not "the connection dropped mid-change", which must stay). */
function isConnectionError(err) {
  return err instanceof ShopError && err.code === "network";
}

function restCommand(op, cartId, sku, qty) {
  const base = `/carts/${cartId}/items`;
  const sk = encodeURIComponent(sku);
  const call =
    op === "add_item"
      ? rest("POST", base, { body: { sku, qty } })
      : op === "set_qty"
        ? rest("PATCH", `${base}/${sk}`, { body: { qty } })
        : rest("DELETE", `${base}/${sk}`);
  return call.then((r) => r.body);
}

/** Runs one cart command; shows any error in words. Resolves whether it worked. */
async function command(op, sku, qty) {
  const cartId = state.cartId;
  if (!cartId) return false;
  const fields = { cart_id: cartId, sku };
  if (op !== "remove_item") fields.qty = qty;
  state.busy.add(sku);
  state.inflight++;
  renderCart();
  try {
    let cart;
    if (live.isOpen) {
      try {
        cart = await live.request(op, fields);
      } catch (err) {
        // set_qty and remove_item give the same result twice: safe to resend over REST.
        // add_item would add twice: never resent; the cart is re-read below instead.
        if (err instanceof ShopError && err.code === "disconnected" && op !== "add_item") {
          cart = await restCommand(op, cartId, sku, qty);
        } else {
          throw err;
        }
      }
    } else {
      cart = await restCommand(op, cartId, sku, qty);
    }
    clearError();
    applyCart(cart, "reply");
    return true;
  } catch (err) {
    showError(describeError(err, ACTION[op], nameOf), { connection: isConnectionError(err) });
    if (err instanceof ShopError && ["disconnected", "timeout", "conflict", "network"].includes(err.code)) {
      refreshCart();
    }
    return false;
  } finally {
    state.busy.delete(sku);
    state.inflight--;
    renderCart();
  }
}

async function addToCart(sku) {
  const p = state.products.get(sku);
  const name = p?.name ?? sku;
  if (state.stock.get(sku) === 0) {
    showError(`${name} is sold out right now.`);
    return;
  }
  if (state.cart && state.cart.status !== "OPEN") {
    showError("This cart has already been checked out. Start a new cart to keep shopping.");
    $("new-cart").focus();
    return;
  }
  if (await command("add_item", sku, 1)) announce(`Added ${name} to the cart.`);
}

function lineQty(sku) {
  return state.cart?.items.find((l) => l.sku === sku)?.qty ?? 0;
}

function lineCommand(sku, op, qty) {
  if (state.busy.has(sku)) return;
  command(op, sku, qty).then((ok) => {
    if (ok && op === "remove_item") announce(`Removed ${nameOf(sku)} from the cart.`);
  });
}

function stepQty(sku, delta) {
  if (state.busy.has(sku)) return;
  if (delta > 0) {
    lineCommand(sku, "add_item", 1);
  } else {
    lineCommand(sku, "set_qty", Math.max(0, lineQty(sku) - 1));
  }
}

function commitQty(sku) {
  const entry = lineEls.get(sku);
  if (!entry) return;
  const { input } = entry.parts;
  if (!input.dataset.dirty) return;
  delete input.dataset.dirty;
  const raw = input.value.trim();
  const qty = Number(raw);
  if (!/^\d+$/.test(raw) || qty > MAX_QTY) {
    showError(`Enter a quantity from 0 to ${MAX_QTY} for ${nameOf(sku)}.`);
    input.value = String(lineQty(sku));
    return;
  }
  if (qty === lineQty(sku)) return;
  lineCommand(sku, "set_qty", qty);
}

// ---------------------------------------------------------------------------------------
// Checkout and the order

function checkoutKeyName(cartId) {
  return `cw.checkout.${cartId}`;
}

async function checkout() {
  const cart = state.cart;
  if (state.checkingOut || !cart || cart.status !== "OPEN") return;
  if (!cart.items.length) {
    showError("Your cart is empty. Add something before checking out.");
    return;
  }
  const cartId = cart.id;
  // One key per attempt: reused by every retry until the shop answers for sure.
  const keyName = checkoutKeyName(cartId);
  let key = store.get(keyName);
  if (!key) {
    key = `web-${randomHex(16)}`;
    store.set(keyName, key);
  }
  state.checkingOut = true;
  clearError();
  renderCart();
  try {
    const { body: order } = await rest("POST", `/carts/${cartId}/checkout`, {
      headers: { "Idempotency-Key": key },
      timeoutMs: 30000,
    });
    store.del(keyName);
    // Usually still PENDING (202): the pushes of its subscription bring the result.
    showOrder(order, true);
  } catch (err) {
    const retryable = err instanceof ShopError && err.retryable;
    if (!retryable) store.del(keyName);
    if (err instanceof ShopError && err.code === "conflict") {
      // Maybe another tab checked this cart out: the re-read shows its order.
      await refreshCart();
      if (state.cart?.status === "CHECKED_OUT") return;
    }
    showError(
      describeError(err, "checkout", nameOf) + (retryable ? " Press “Check out” again to retry the same order." : ""),
    );
  } finally {
    state.checkingOut = false;
    renderCart();
    // Checked out, but the answer did not come (or came for another order): follow the
    // cart's order anyway.
    const orderId = state.cart?.checkout?.order_id;
    if (state.cart?.status === "CHECKED_OUT" && orderId && state.order?.id !== orderId) followOrder(orderId);
  }
}

/**
 * Follows order `orderId` live: subscribes to it over `/ws` (again after every
 * reconnection); the reply and every push go through `showOrder`. While the socket is
 * down, the order is read once over REST instead (the subscription on reconnection
 * brings anything newer).
 */
function followOrder(orderId) {
  if (state.orderWatched === orderId) return;
  unfollowOrder();
  state.orderWatched = orderId;
  subscribeOrder(orderId, 0);
  if (!live.isOpen && state.order?.id !== orderId) readOrder(orderId);
}

/** Stops following the order (the page no longer shows it). */
function unfollowOrder() {
  clearTimeout(state.orderTimer);
  state.orderTimer = 0;
  if (state.orderWatched) live.unwatchOrder(state.orderWatched);
  state.orderWatched = null;
}

function subscribeOrder(orderId, attempt) {
  live.watchOrder(orderId).catch((err) => onOrderError(orderId, err, attempt));
}

/** A failed order subscribe: asks again a few times (not a poll: the pushes, once
 * subscribed, bring every change). */
function onOrderError(orderId, err, attempt) {
  if (state.orderWatched !== orderId) return;
  if (err instanceof ShopError && err.code === "disconnected") return; // resubscribed on reconnection
  const again = (err instanceof ShopError && err.code === "not_found") || (err instanceof ShopError && err.retryable);
  if (again && attempt < ORDER_SUBSCRIBE_RETRY_MS.length) {
    clearTimeout(state.orderTimer);
    state.orderTimer = setTimeout(() => {
      if (state.orderWatched === orderId) subscribeOrder(orderId, attempt + 1);
    }, ORDER_SUBSCRIBE_RETRY_MS[attempt]);
  }
}

/** One REST read of the order (a fallback for when the socket is down). */
async function readOrder(orderId) {
  try {
    const { body } = await rest("GET", `/orders/${encodeURIComponent(orderId)}`);
    if (state.orderWatched === orderId) showOrder(body, false);
  } catch {
    /* not stored yet, or no answer: the subscription on reconnection brings it */
  }
}

/** Shows an order if it is newer than the one on screen, and follows it live. */
function showOrder(order, focus) {
  if (!order || !order.id) return;
  if (state.cart && order.cart_id !== state.cart.id) return;
  const shown = state.order;
  if (shown && shown.id === order.id && shown.version >= order.version) {
    // Already on screen (a push, a reply and the checkout answer may all bring it):
    // never go back.
    if (focus) $("order-title").focus();
    return;
  }
  state.order = order;
  shownOrders.push({ id: order.id, status: order.status, version: order.version });
  renderOrder(focus);
  followOrder(order.id);
  const changed = !shown || shown.id !== order.id || shown.status !== order.status;
  if (changed && settled(order.status)) announce(`${orderHeadline(order.status)}.`);
}

function renderOrder(focus = false) {
  const panel = $("order");
  const order = state.order;
  if (!order) {
    panel.hidden = true;
    panel.dataset.status = "";
    return;
  }
  panel.hidden = false;
  panel.dataset.status = order.status;
  $("order-title").textContent = orderHeadline(order.status);
  const short = order.id.slice(0, 8).toUpperCase();
  const total = money(order.total, order.currency);
  const count = order.items.reduce((a, l) => a + l.qty, 0);
  const items = `${count} ${count === 1 ? "item" : "items"}`;
  let detail;
  switch (order.status) {
    case "CONFIRMED":
    case "COMPLETED":
      detail = `Thank you! Order ${short} (${items}, ${total}) is confirmed.`;
      break;
    case "FAILED":
      detail = describeFailure(order.failure_reason, nameOf);
      break;
    case "CANCELLED":
      detail = `Order ${short} was cancelled and its stock returned.`;
      break;
    default:
      detail = `Checking stock and payment for order ${short} (${items}, ${total})…`;
  }
  $("order-detail").textContent = detail;
  $("order-status").textContent = order.status.replace("_", " ");
  $("retry-items").hidden = order.status !== "FAILED";
  if (focus) $("order-title").focus();
}

// ---------------------------------------------------------------------------------------
// Demo data (only offered while the catalog is empty)

async function seedDemo() {
  const button = $("seed");
  button.setAttribute("aria-disabled", "true");
  button.textContent = "Adding products…";
  try {
    for (const d of DEMO_PRODUCTS) {
      const { stock, ...draft } = d;
      try {
        await rest("POST", "/products", { body: { ...draft, currency: "EUR", active: true } });
      } catch (err) {
        if (!(err instanceof ShopError && err.code === "conflict")) throw err;
      }
      await rest("PUT", `/inventory/${d.sku}`, { body: { on_hand: stock } });
    }
    // Loading the catalog watches the new skus' stock; the replies bring it.
    await loadCatalog();
    announce("Demo products added.");
  } catch (err) {
    showError(describeError(err, "seed", nameOf));
  } finally {
    button.setAttribute("aria-disabled", "false");
    button.textContent = "Add demo products";
  }
}

// ---------------------------------------------------------------------------------------
// Start

function userId() {
  let id = store.get("cw.user");
  if (!id || !ID_RE.test(id)) {
    id = `shopper-${randomHex(6)}`;
    store.set("cw.user", id);
  }
  return id;
}

async function copyLink() {
  const url = location.href;
  try {
    await navigator.clipboard.writeText(url);
    announce("Link copied. Open it in another tab or device to share this cart.");
    $("share").textContent = "Link copied";
    setTimeout(() => {
      $("share").textContent = "Copy cart link";
    }, 2000);
  } catch {
    // No clipboard outside secure contexts: show the link to copy by hand.
    window.prompt("Copy this link to open the cart elsewhere:", url);
  }
}

function start() {
  state.userId = state.identity?.sub ?? userId();
  $("user").textContent = state.userId;
  if (state.identity) {
    $("signout").hidden = false;
    $("signout").addEventListener("click", signOut);
  }

  live.addEventListener("state", (e) => {
    renderConnection(e.detail);
    if (e.detail === "reconnecting" || e.detail === "offline") {
      // No pushes until the socket is back (its resubscriptions re-read the stock).
      state.stockStale = true;
      renderStock();
      fillUnknownStock();
    }
  });
  live.addEventListener("cart", (e) => applyCart(e.detail.cart, e.detail.via));
  live.addEventListener("stock", (e) => applyStock(e.detail.stock));
  live.addEventListener("order", (e) => {
    if (e.detail.order?.id === state.orderWatched) showOrder(e.detail.order, false);
  });
  live.addEventListener("watch-error", (e) => {
    const { kind, id, err } = e.detail;
    if (kind === "stock") onStockError(id, err);
    else if (kind === "order") onOrderError(id, err, 0);
    else onWatchError(id, err);
  });
  live.addEventListener("open", () => {
    // Every watched topic was resubscribed: the stock shown is the current one again.
    clearConnectionError();
    state.stockStale = false;
    renderStock();
  });

  $("checkout").addEventListener("click", () => {
    if ($("checkout").getAttribute("aria-disabled") === "true") {
      if (!state.cart?.items.length) showError("Your cart is empty. Add something before checking out.");
      return;
    }
    checkout();
  });
  $("new-cart").addEventListener("click", () => newCart([], { focus: true }));
  $("retry-items").addEventListener("click", () => {
    const items = state.order?.items ?? [];
    newCart(
      items.map((l) => ({ sku: l.sku, qty: l.qty })),
      { focus: true },
    );
  });
  $("notice-close").addEventListener("click", clearError);
  $("seed").addEventListener("click", () => {
    if ($("seed").getAttribute("aria-disabled") !== "true") seedDemo();
  });
  $("share").addEventListener("click", copyLink);
  $("jump-cart").addEventListener("click", () => {
    $("cart").scrollIntoView({ behavior: "smooth", block: "start" });
    $("cart-heading").focus({ preventScroll: true });
  });

  addEventListener("hashchange", () => {
    const id = cartIdFromHash();
    if (id && id !== state.cartId) openCart(id);
    else if (!id && state.cartId) rememberCart(state.cartId);
  });
  // Another tab started a new cart after this one checked out: follow it.
  addEventListener("storage", (e) => {
    if (e.key === "cw.cart" && e.newValue && ID_RE.test(e.newValue) && e.newValue !== state.cartId) {
      if (state.cart?.status === "CHECKED_OUT") openCart(e.newValue);
    }
  });
  renderConnection(live.state);
  live.start();
  loadCatalog();
  setInterval(() => {
    if (!document.hidden) loadCatalog();
  }, CATALOG_POLL_MS);

  const id = cartIdFromHash() ?? store.get("cw.cart");
  if (id && ID_RE.test(id)) openCart(id);
  else newCart();
}

// ---------------------------------------------------------------------------------------
// Signing in (auth on)

/** The claims of a JWT, unverified (the edge verifies; the page only reads `sub`). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return null;
  }
}

/** A token the page can use: well formed, a valid `sub`, not about to expire. */
function usable(token) {
  const c = token && claimsOf(token);
  if (!c || typeof c.sub !== "string" || !ID_RE.test(c.sub)) return null;
  if (typeof c.exp === "number" && c.exp * 1000 < Date.now() + 30_000) return null;
  return { token, sub: c.sub, admin: Array.isArray(c.roles) && c.roles.includes("admin") };
}

/**
 * What an identity provider sent back in the fragment: `{token}` (`#access_token=…`,
 * else `#id_token=…`), `{error}`, or null when the fragment is not a sign-in answer.
 */
function tokenFromProvider() {
  if (!/^#(.*&)?(access_token|id_token|error)=/.test(location.hash)) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const expected = store.get(LOGIN_STATE_KEY);
  store.del(LOGIN_STATE_KEY);
  // Not a cart link: keep the fragment (and the token in it) out of history.
  history.replaceState(null, "", location.pathname + location.search);
  if (!expected || params.get("state") !== expected) {
    return { error: "The sign-in answer did not match this page's request. Please sign in again." };
  }
  if (params.has("error")) {
    const why = params.get("error_description") || params.get("error");
    return { error: `The identity provider did not sign you in (${why}).` };
  }
  const access = params.get("access_token");
  if (access) return { token: access };
  // An ID token must carry the nonce this page sent with the request.
  const id = params.get("id_token");
  if (claimsOf(id ?? "")?.nonce !== expected) {
    return { error: "The sign-in answer did not match this page's request. Please sign in again." };
  }
  return { token: id };
}

function signIn(identity) {
  state.identity = identity;
  setBearer(identity.token);
  store.set(TOKEN_KEY, identity.token);
  // Another person's cart would answer 404: start from this person's own.
  if (store.get("cw.user") !== identity.sub) store.del("cw.cart");
  store.set("cw.user", identity.sub);
}

/** Forgets the session (token, the person's cart and id) and starts the page again. */
function signOut() {
  for (const key of [TOKEN_KEY, LOGIN_STATE_KEY, "cw.cart", "cw.user"]) store.del(key);
  location.replace(location.pathname);
}

function showSignIn(config, message) {
  $("signin").hidden = false;
  document.querySelector("main").hidden = true;
  $("conn").hidden = true;
  $("jump-cart").hidden = true;
  $("signin-demo").hidden = !config.demo;
  const idp = $("signin-idp");
  idp.hidden = !config.login_url;
  $("signin-none").hidden = Boolean(config.demo || config.login_url);
  if (message) {
    $("signin-error").textContent = message;
    $("signin-error").hidden = false;
  }
  idp.addEventListener("click", () => {
    // `state` ties the answer to this request (and `nonce` the ID token to it).
    const nonce = randomHex(16);
    store.set(LOGIN_STATE_KEY, nonce);
    const url = new URL(config.login_url);
    url.searchParams.set("state", nonce);
    url.searchParams.set("nonce", nonce);
    location.assign(url.href);
  });
  for (const role of ["shopper", "admin"]) {
    $(`signin-${role}`).addEventListener("click", async () => {
      const button = $(`signin-${role}`);
      if (button.getAttribute("aria-disabled") === "true") return;
      button.setAttribute("aria-disabled", "true");
      try {
        const { body } = await rest("POST", "/auth/demo", { body: { role } });
        const identity = usable(body.token);
        if (!identity) throw new ShopError("internal", "");
        signIn(identity);
        $("signin").hidden = true;
        document.querySelector("main").hidden = false;
        $("conn").hidden = false;
        $("jump-cart").hidden = false;
        start();
      } catch (err) {
        $("signin-error").textContent = describeError(err, "sign-in", nameOf);
        $("signin-error").hidden = false;
      } finally {
        button.setAttribute("aria-disabled", "false");
      }
    });
  }
  $("signin-title").focus();
}

/** Asks the edge how to sign in, then starts the shop (or the sign-in first). */
async function boot() {
  let config = null;
  // A busy or restarting edge may not answer at once: ask again, with backoff.
  for (let attempt = 0; attempt < 5 && !config; attempt++) {
    try {
      config = (await rest("GET", "/auth/config")).body;
    } catch (err) {
      // An edge without /auth/config (older than the sign-in): shop as with auth off.
      if (err instanceof ShopError && err.code === "not_found") break;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
  }
  config ??= { auth: "off", demo: false, login_url: null };
  state.authConfig = config;
  if (config.auth !== "jwt") {
    start();
    return;
  }
  const answer = tokenFromProvider();
  if (answer?.error) {
    showSignIn(config, answer.error);
    return;
  }
  const identity = usable(answer?.token ?? store.get(TOKEN_KEY));
  if (!identity) {
    store.del(TOKEN_KEY);
    showSignIn(config, answer ? "The identity provider's token cannot be used here." : "");
    return;
  }
  signIn(identity);
  start();
}

// A 401: the token expired or was revoked (or the page never got the sign-in): start
// again, which shows the sign-in. Only once per page, so a misconfigured edge cannot
// make it reload in a loop.
let signingOut = false;
addEventListener("cw-unauthorized", () => {
  if (signingOut) return;
  if (state.identity || state.authConfig?.auth === "jwt") {
    signingOut = true;
    signOut();
  } else {
    showError("This shop needs you to sign in, and its edge does not say how. Reload to try again.");
  }
});

boot();
