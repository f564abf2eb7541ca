// The shop's two channels, both the public v1 contract: REST (`rest`) and the `/ws`
// WebSocket (`Live`): requests with replies, cart pushes, and reconnection with backoff.

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

/**
 * The `/ws` connection. Emits:
 * - `state` (detail: "connecting" | "open" | "reconnecting" | "offline"),
 * - `cart` (detail: {cart, via: "push" | "subscribe"}) for every cart it receives,
 * - `open` after every (re)connection, once the watched carts are resubscribed.
 *
 * It never applies anything itself: the page keeps the newest version it has shown.
 */
export class Live extends EventTarget {
  #url;
  #ws = null;
  #nextId = 1;
  #pending = new Map();
  #watched = new Set();
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

  /** Watches a cart from now on, across reconnections. Resolves the current cart. */
  async watch(cartId) {
    this.#watched.add(cartId);
    if (!this.isOpen) return null; // subscribed on (re)connection
    return this.#subscribe(cartId);
  }

  unwatch(cartId) {
    if (!this.#watched.delete(cartId)) return;
    if (this.isOpen) this.request("unsubscribe", { cart_id: cartId }).catch(() => {});
  }

  async #subscribe(cartId) {
    const cart = await this.request("subscribe", { cart_id: cartId });
    if (cart && this.#watched.has(cartId)) {
      this.dispatchEvent(new CustomEvent("cart", { detail: { cart, via: "subscribe" } }));
    }
    return cart;
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
      // Resubscribe everything; each reply carries the current cart, which re-reads it.
      const subs = [...this.#watched].map((id) =>
        this.#subscribe(id).catch((err) => {
          this.dispatchEvent(new CustomEvent("watch-error", { detail: { cartId: id, err } }));
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
      if (frame && frame.type === "cart" && frame.cart) {
        if (this.#watched.has(frame.cart.id)) {
          this.dispatchEvent(new CustomEvent("cart", { detail: { cart: frame.cart, via: "push" } }));
        }
        return;
      }
      const waiter = frame && this.#pending.get(frame.id);
      if (!waiter) return;
      this.#pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.ok) waiter.resolve(frame.cart ?? null);
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
