// The shop's two channels, both the public v1 contract: REST (`rest`) and the `/ws`
// WebSocket (`Live`): requests with replies, live cart, order and stock pushes, and
// reconnection with backoff (resubscribing everything watched).

import { ShopError, errorFromBody } from "./format.js";

/** How long a request may wait for its answer. */
const REQUEST_TIMEOUT_MS = 12000;
/** Reconnect backoff: first retry after about this, doubling up to the maximum. */
const BACKOFF_FIRST_MS = 400;
const BACKOFF_MAX_MS = 8000;

/** The bearer token every REST call carries (null: none, auth is off or signed out). */
let bearer = null;

/** Sets the token of every REST call from now on. */
export function setBearer(token) {
  bearer = token || null;
}

/**
 * One REST call. Resolves `{status, body}` for 2xx answers, rejects a ShopError for
 * anything else (the contract's error body, or `network` when there was no answer).
 */
export async function rest(method, path, { body, headers = {}, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const init = { method, headers: { accept: "application/json", ...headers } };
  if (bearer) init.headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  init.signal = AbortSignal.timeout(timeoutMs);
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    const code = e && e.name === "TimeoutError" ? "timeout" : "network";
    throw new ShopError(code, "");
  }
  let parsed = null;
  const text = await res.text().catch(() => "");
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
  }
  if (res.status === 401) {
    // No token, or it expired or was revoked: the page asks the person to sign in.
    dispatchEvent(new CustomEvent("cw-unauthorized"));
  }
  if (!res.ok) throw errorFromBody(parsed, res.status);
  return { status: res.status, body: parsed };
}

/** What a socket can watch: its subscribe and unsubscribe ops, the id field they take,
 * the reply/push field that carries the state, and where a state keeps its id. */
const KINDS = {
  cart: { sub: "subscribe", unsub: "unsubscribe", field: "cart_id", body: "cart", idOf: (c) => c.id },
  order: { sub: "subscribe_order", unsub: "unsubscribe_order", field: "order_id", body: "order", idOf: (o) => o.id },
  stock: { sub: "subscribe_stock", unsub: "unsubscribe_stock", field: "sku", body: "stock", idOf: (s) => s.sku },
};

/**
 * The `/ws` connection. Emits:
 * - `state` (detail: "connecting" | "open" | "reconnecting" | "offline"),
 * - `cart` (detail: {cart, via: "push" | "subscribe"}) for every watched cart it receives,
 * - `order` (detail: {order, via: "push" | "subscribe"}) for every state of a watched
 *   order: the subscribe reply, then a push on every change (PENDING → PRODUCT_RESERVED
 *   → CONFIRMED or FAILED, CANCELLED, …),
 * - `stock` (detail: {stock: {sku, on_hand, reserved, available, version}, via: "push" |
 *   "subscribe"}) for a watched sku's stock: the subscribe reply, then pushes (the edge
 *   sends at most one per sku per second, always the latest),
 * - `watch-error` (detail: {kind: "cart" | "order" | "stock", id, cartId, err}; `cartId`
 *   only for carts) when resubscribing a watched topic after a (re)connection fails,
 * - `open` after every (re)connection, once the watched carts, orders and skus are
 *   resubscribed.
 *
 * The edge forgets a socket's subscriptions when it closes: everything watched here is
 * subscribed again on every (re)connection, and each subscribe reply carries the current
 * state, so what changed while the socket was down shows up then.
 *
 * It never applies anything itself: the page keeps the newest version it has shown (the
 * edge pushes only growing versions per topic on one socket, but a reply, a push and a
 * REST read can still cross).
 */
export class Live extends EventTarget {
  #url;
  #ws = null;
  #nextId = 1;
  #pending = new Map();
  /** Watched topics by `${kind}:${id}`: {kind, id}. */
  #watched = new Map();
  #attempt = 0;
  #timer = 0;
  #state = "connecting";

  /** `url`: a function that gives the socket's URL at each (re)connection (it carries the current token). */
  constructor(url) {
    super();
    this.#url = url;
    addEventListener("online", () => this.#reconnectNow());
    addEventListener("offline", () => {
      this.#setState("offline");
      // Browsers may keep a dead socket for a long time: drop it now.
      this.#ws?.close();
    });
  }

  /** The current socket (a test hook closes it to simulate a drop). */
  get socket() {
    return this.#ws;
  }

  get state() {
    return this.#state;
  }

  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.#connect();
  }

  /** Sends `{id, op, ...fields}` and resolves the reply's `cart` (or rejects a ShopError). */
  request(op, fields) {
    return this.#call(op, fields).then((frame) => frame.cart ?? null);
  }

  /** Sends `{id, op, ...fields}` and resolves the whole reply frame (or rejects a ShopError). */
  #call(op, fields) {
    if (!this.isOpen) return Promise.reject(new ShopError("disconnected", "not connected"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new ShopError("timeout", ""));
      }, REQUEST_TIMEOUT_MS);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        this.#ws.send(JSON.stringify({ id, op, ...fields }));
      } catch {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new ShopError("disconnected", ""));
      }
    });
  }

  /** Watches a cart from now on, across reconnections. Resolves the current cart (null
   * while disconnected: it is subscribed on the next connection). */
  watch(cartId) {
    return this.#watch("cart", cartId);
  }

  unwatch(cartId) {
    this.#unwatch("cart", cartId);
  }

  /** Watches an order from now on, across reconnections (`not_found`: not the caller's,
   * or not stored yet). Resolves the current order (null while disconnected). Calling it
   * again for a watched order subscribes again (a retry after a failed subscribe). */
  watchOrder(orderId) {
    return this.#watch("order", orderId);
  }

  unwatchOrder(orderId) {
    this.#unwatch("order", orderId);
  }

  /** Watches a sku's stock from now on, across reconnections. Resolves the current stock
   * (null while disconnected). */
  watchStock(sku) {
    return this.#watch("stock", sku);
  }

  unwatchStock(sku) {
    this.#unwatch("stock", sku);
  }

  async #watch(kind, id) {
    this.#watched.set(`${kind}:${id}`, { kind, id });
    if (!this.isOpen) return null; // subscribed on (re)connection
    return this.#subscribe(kind, id);
  }

  #unwatch(kind, id) {
    if (!this.#watched.delete(`${kind}:${id}`)) return;
    const k = KINDS[kind];
    if (this.isOpen) this.#call(k.unsub, { [k.field]: id }).catch(() => {});
  }

  async #subscribe(kind, id) {
    const k = KINDS[kind];
    const frame = await this.#call(k.sub, { [k.field]: id });
    const body = frame[k.body] ?? null;
    // Unwatched meanwhile: the page no longer shows it.
    if (body && this.#watched.has(`${kind}:${id}`)) {
      this.dispatchEvent(new CustomEvent(kind, { detail: { [k.body]: body, via: "subscribe" } }));
    }
    return body;
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  #connect() {
    clearTimeout(this.#timer);
    this.#timer = 0;
    let ws;
    try {
      ws = new WebSocket(this.#url());
    } catch {
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      this.#attempt = 0;
      this.#setState("open");
      // Resubscribe everything; each reply carries the current state, which re-reads it.
      const subs = [...this.#watched.values()].map(({ kind, id }) =>
        this.#subscribe(kind, id).catch((err) => {
          const detail = { kind, id, cartId: kind === "cart" ? id : undefined, err };
          this.dispatchEvent(new CustomEvent("watch-error", { detail }));
        }),
      );
      Promise.all(subs).then(() => this.dispatchEvent(new Event("open")));
    };
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      const kind = frame && typeof frame.type === "string" && Object.hasOwn(KINDS, frame.type) ? frame.type : null;
      if (kind) {
        const k = KINDS[kind];
        const body = frame[k.body];
        if (body && this.#watched.has(`${kind}:${k.idOf(body)}`)) {
          this.dispatchEvent(new CustomEvent(kind, { detail: { [k.body]: body, via: "push" } }));
        }
        return;
      }
      const waiter = frame && this.#pending.get(frame.id);
      if (!waiter) return;
      this.#pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.ok) waiter.resolve(frame);
      else waiter.reject(errorFromBody({ error: frame.error }, 0));
    };
    ws.onclose = () => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      for (const [, waiter] of this.#pending) {
        clearTimeout(waiter.timer);
        waiter.reject(new ShopError("disconnected", ""));
      }
      this.#pending.clear();
      this.#scheduleReconnect();
    };
  }

  #scheduleReconnect() {
    if (this.#timer) return;
    this.#setState(navigator.onLine === false ? "offline" : "reconnecting");
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 10);
    const delay = base / 2 + Math.random() * (base / 2);
    this.#timer = setTimeout(() => {
      this.#timer = 0;
      this.#setState(navigator.onLine === false ? "offline" : "reconnecting");
      this.#connect();
    }, delay);
  }

  #reconnectNow() {
    if (this.isOpen || (this.#ws && this.#ws.readyState === WebSocket.CONNECTING)) return;
    this.#attempt = 0;
    clearTimeout(this.#timer);
    this.#timer = 0;
    this.#setState("reconnecting");
    this.#connect();
  }
}
