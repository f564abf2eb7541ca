// Wording for people: money, stock and errors. Pure functions, no DOM, no network.

/** An error from the shop (or from getting to it), with a stable `code`. */
export class ShopError extends Error {
  /**
   * @param {string} code - a contract code (`insufficient_stock`, `unavailable`, …) or
   *   one of ours: `network` (no answer at all), `disconnected` (the WebSocket dropped
   *   before the reply), `bad_response` (not the contract's shape).
   * @param {string} message - the server's message (for people, but terse).
   * @param {{status?: number, requestId?: string}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "ShopError";
    this.code = code;
    this.status = extra.status ?? 0;
    this.requestId = extra.requestId ?? "";
  }

  /** Whether trying the same thing again later may work (and must reuse any key). */
  get retryable() {
    return ["network", "disconnected", "unavailable", "timeout", "rate_limited", "internal", "bad_response"].includes(this.code);
  }
}

/** Turns an error body `{"error":{"code","message","request_id"}}` into a ShopError. */
export function errorFromBody(body, status) {
  const e = body && typeof body === "object" ? body.error : null;
  if (e && typeof e.code === "string") {
    return new ShopError(e.code, String(e.message ?? ""), { status, requestId: e.request_id });
  }
  if (status === 401) return new ShopError("unauthorized", "", { status });
  if (status === 403) return new ShopError("forbidden", "", { status });
  if (status === 429) return new ShopError("rate_limited", "", { status });
  if (status === 503) return new ShopError("unavailable", "", { status });
  if (status === 504) return new ShopError("timeout", "", { status });
  return new ShopError(status >= 500 ? "internal" : "bad_response", "", { status });
}

const formatters = new Map();

function currencyFormatter(currency) {
  let f = formatters.get(currency);
  if (f === undefined) {
    try {
      f = new Intl.NumberFormat(undefined, { style: "currency", currency });
    } catch {
      f = null; // not a currency this browser knows
    }
    formatters.set(currency, f);
  }
  return f;
}

/**
 * Formats integer minor units (`1299`) of `currency` (`"EUR"`) as the person's locale
 * writes money (`€12.99`). The currency's own number of decimals is used (JPY has none),
 * and the amount is passed as an exact decimal string, never through a float.
 */
export function money(minor, currency) {
  if (currency == null || !Number.isFinite(minor)) return "—";
  const f = currencyFormatter(currency);
  const digits = f ? f.resolvedOptions().maximumFractionDigits : 2;
  const negative = minor < 0;
  const units = String(Math.abs(Math.trunc(minor))).padStart(digits + 1, "0");
  const decimal = digits > 0 ? `${units.slice(0, -digits)}.${units.slice(-digits)}` : units;
  const exact = (negative ? "-" : "") + decimal;
  if (!f) return `${exact} ${currency}`;
  // Engines with Intl.NumberFormat v3 read the string exactly; older ones convert it.
  return f.format(exact);
}

/** "12 in stock", "Only 2 left", "Out of stock", or "Checking stock…" (not known yet). */
export function stockLabel(available) {
  if (available == null) return "Checking stock…";
  if (available <= 0) return "Out of stock";
  if (available <= 3) return `Only ${available} left`;
  return `${available} in stock`;
}

/**
 * One or two sentences saying what went wrong, for the person using the page.
 *
 * @param {unknown} err - a ShopError (anything else counts as an internal error)
 * @param {string} action - what was being done: "add", "update", "remove", "checkout",
 *   "cart", "catalog", "new-cart", "seed"
 * @param {(sku: string) => string} nameOf - a product's display name
 */
export function describeError(err, action = "", nameOf = (s) => s) {
  const code = err instanceof ShopError ? err.code : "internal";
  const msg = err instanceof ShopError ? err.message : "";
  switch (code) {
    case "insufficient_stock": {
      const m = /insufficient stock for ([A-Za-z0-9_-]+): requested (\d+), available (\d+)/.exec(msg);
      if (m) {
        const [, sku, requested, available] = m;
        const n = Number(available);
        const left = n === 0 ? "none are left" : n === 1 ? "only 1 is available" : `only ${n} are available`;
        return `Not enough stock of ${nameOf(sku)}: you asked for ${requested}, but ${left}.`;
      }
      return "Not enough stock for that. Lower the quantity and try again.";
    }
    case "product_inactive": {
      const m = /product ([A-Za-z0-9_-]+) is not active/.exec(msg);
      return `${m ? nameOf(m[1]) : "That product"} is no longer for sale.`;
    }
    case "rate_limited":
      return "You're going a little fast. Please wait a moment and try again.";
    case "unavailable":
      return action === "checkout"
        ? "The shop can't take orders right this moment. Nothing was charged; please try again in a few seconds."
        : "The shop can't answer right now (it may be restarting). Please try again in a few seconds.";
    case "timeout":
      return action === "checkout"
        ? "The shop took too long to answer. Your order may still go through: try again and you will see the same order, never a second one."
        : "The shop took too long to answer. The change may or may not have been made; the cart shown is up to date.";
    case "invalid_input": {
      const m = /^invalid (\w+): (.+)$/.exec(msg);
      if (m && m[1] === "qty") return `That quantity can't be used: it ${m[2].replace(/\.$/, "")}.`;
      if (/^qty must/.test(msg)) return `That quantity can't be used: it ${msg.slice(4).replace(/\.$/, "")}.`;
      return `That request wasn't accepted: ${msg.replace(/\.$/, "") || "invalid input"}.`;
    }
    case "not_found":
      if (action === "cart" || /^cart /.test(msg)) return "This cart no longer exists. A new one will be started.";
      if (/^product /.test(msg)) return "That product is no longer in the catalog.";
      if (/^item /.test(msg)) return "That item is no longer in the cart.";
      return "That could not be found.";
    case "conflict":
      if (/checked out/.test(msg)) return "This cart has already been checked out. Start a new cart to keep shopping.";
      if (/empty/.test(msg)) return "Your cart is empty. Add something before checking out.";
      if (/already exists/.test(msg)) return "That already exists.";
      return "Something changed at the same moment. Please try again.";
    case "payload_too_large":
      return "That request was too large.";
    case "unauthorized":
      return "Please sign in again: your session has ended.";
    case "forbidden":
      return action === "seed"
        ? "Only an admin may add products. Sign out and sign in as an admin."
        : "You are not allowed to do that.";
    case "network":
      return "Can't reach the shop. Check your connection; we'll keep trying.";
    case "disconnected":
      return "The connection dropped before the shop answered. The cart shown is up to date; check it before trying again.";
    default:
      return "Something went wrong on our side. Please try again.";
  }
}

/**
 * Why an order failed, in words. The saga records `failure_reason` either as
 * "{code}: {message}" (a refusal from stock) or as the payment port's sentence.
 */
export function describeFailure(reason, nameOf = (s) => s) {
  const text = String(reason ?? "").trim();
  if (!text) return "The order could not be completed.";
  const coded = /^([a-z_]+): (.*)$/s.exec(text);
  if (coded) {
    return describeError(new ShopError(coded[1], coded[2]), "checkout", nameOf);
  }
  if (/^payment declined/i.test(text)) {
    return "The payment was declined. Nothing was charged and no stock was held.";
  }
  if (/unavailable/.test(text)) {
    return "Part of the shop was unavailable while placing the order. Nothing was charged; please try again.";
  }
  return `The order could not be completed (${text.replace(/[{}[\]"]/g, "")}).`;
}

/** The status of an order, as a heading. */
export function orderHeadline(status) {
  switch (status) {
    case "CONFIRMED":
      return "Order confirmed";
    case "COMPLETED":
      return "Order completed";
    case "FAILED":
      return "Order failed";
    case "CANCELLED":
      return "Order cancelled";
    default:
      return "Placing your order…";
  }
}

/** Whether an order status will not change any more on its own. */
export function settled(status) {
  return status !== "PENDING" && status !== "PRODUCT_RESERVED";
}
