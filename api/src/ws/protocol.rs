//! The `/ws` frame types: what clients send, what the edge answers and pushes.
//!
//! Client → server (JSON text frames; `id` is any number or string, echoed back):
//! `{"id":1,"op":"subscribe","cart_id"}`, `{"op":"unsubscribe","cart_id"}`,
//! `{"op":"get","cart_id"}`, `{"op":"add_item","cart_id","sku","qty"}`,
//! `{"op":"set_qty","cart_id","sku","qty"}`, `{"op":"remove_item","cart_id","sku"}`,
//! `{"op":"subscribe_order","order_id"}`, `{"op":"unsubscribe_order","order_id"}`,
//! `{"op":"subscribe_stock","sku"}`, `{"op":"unsubscribe_stock","sku"}`.
//!
//! Server → client: `{"id","ok":true,"cart"}` (`"order"` or `"stock"` for their
//! subscribes, nothing for an unsubscribe),
//! `{"id","ok":false,"error":{"code","message","request_id"}}` and pushes
//! `{"type":"cart","cart"}`, `{"type":"order","order"}` (every change of a watched order)
//! and `{"type":"stock","stock"}` (a watched sku's stock, at most one push per sku per
//! second, the latest). Pure data: nothing here does I/O.

use crate::error::{AppError, ErrorBody};
use crate::routes::carts::quantity;
use crate::routes::valid_id;
use axum::extract::ws::Utf8Bytes;
use cartwheel_domain::{Cart, InventoryView, Order};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A client request: its echo id and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply (`null` when the client sent none).
    pub id: Value,
    /// The operation, validated.
    pub op: Op,
}

/// A validated operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Receive every change of the cart; answered with the current cart.
    Subscribe {
        /// The cart.
        cart_id: String,
    },
    /// Stop receiving changes of the cart.
    Unsubscribe {
        /// The cart.
        cart_id: String,
    },
    /// Read the cart.
    Get {
        /// The cart.
        cart_id: String,
    },
    /// Add units of a sku.
    AddItem {
        /// The cart.
        cart_id: String,
        /// The product.
        sku: String,
        /// Units, > 0.
        qty: u32,
    },
    /// Set a line's quantity (0 removes it).
    SetQty {
        /// The cart.
        cart_id: String,
        /// The product.
        sku: String,
        /// New quantity.
        qty: u32,
    },
    /// Remove a line.
    RemoveItem {
        /// The cart.
        cart_id: String,
        /// The product.
        sku: String,
    },
    /// Receive every status change of one of the caller's orders; answered with the
    /// order.
    SubscribeOrder {
        /// The order.
        order_id: String,
    },
    /// Stop receiving an order's changes.
    UnsubscribeOrder {
        /// The order.
        order_id: String,
    },
    /// Receive a sku's stock (at most once a second); answered with the stock.
    SubscribeStock {
        /// The product.
        sku: String,
    },
    /// Stop receiving a sku's stock.
    UnsubscribeStock {
        /// The product.
        sku: String,
    },
}

/// The frame as sent, before validation. Unknown fields are ignored so clients may add
/// their own.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum RawOp {
    Subscribe {
        cart_id: String,
    },
    Unsubscribe {
        cart_id: String,
    },
    Get {
        cart_id: String,
    },
    AddItem {
        cart_id: String,
        sku: String,
        qty: i64,
    },
    SetQty {
        cart_id: String,
        sku: String,
        qty: i64,
    },
    RemoveItem {
        cart_id: String,
        sku: String,
    },
    SubscribeOrder {
        order_id: String,
    },
    UnsubscribeOrder {
        order_id: String,
    },
    SubscribeStock {
        sku: String,
    },
    UnsubscribeStock {
        sku: String,
    },
}

/// Parses and validates a text frame. On failure, answers the error with whatever `id`
/// could be read (`null` otherwise).
// The error carries the echo id with the error; it is returned once per bad frame, so
// its size does not matter.
#[allow(clippy::result_large_err)]
pub fn parse(text: &str) -> Result<Request, (Value, AppError)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            AppError::invalid(format!("malformed JSON: {e}")),
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err((
            Value::Null,
            AppError::invalid("a frame must be a JSON object"),
        ));
    };
    let id = fields.remove("id").unwrap_or(Value::Null);
    if !(id.is_null() || id.is_number() || id.is_string()) {
        return Err((
            Value::Null,
            AppError::invalid("id must be a number or a string"),
        ));
    }
    let raw: RawOp = match serde_json::from_value(Value::Object(fields)) {
        Ok(raw) => raw,
        Err(e) => return Err((id, AppError::invalid(format!("invalid frame: {e}")))),
    };
    match validate(raw) {
        Ok(op) => Ok(Request { id, op }),
        Err(e) => Err((id, e)),
    }
}

fn validate(raw: RawOp) -> Result<Op, AppError> {
    let cart = |cart_id: String| valid_id("cart_id", &cart_id).map(|()| cart_id);
    let sku = |sku: String| valid_id("sku", &sku).map(|()| sku);
    let order = |order_id: String| valid_id("order_id", &order_id).map(|()| order_id);
    Ok(match raw {
        RawOp::Subscribe { cart_id } => Op::Subscribe {
            cart_id: cart(cart_id)?,
        },
        RawOp::Unsubscribe { cart_id } => Op::Unsubscribe {
            cart_id: cart(cart_id)?,
        },
        RawOp::Get { cart_id } => Op::Get {
            cart_id: cart(cart_id)?,
        },
        RawOp::AddItem {
            cart_id,
            sku: s,
            qty,
        } => Op::AddItem {
            sku: sku(s)?,
            qty: quantity(qty, false)?,
            cart_id: cart(cart_id)?,
        },
        RawOp::SetQty {
            cart_id,
            sku: s,
            qty,
        } => Op::SetQty {
            sku: sku(s)?,
            qty: quantity(qty, true)?,
            cart_id: cart(cart_id)?,
        },
        RawOp::RemoveItem { cart_id, sku: s } => Op::RemoveItem {
            sku: sku(s)?,
            cart_id: cart(cart_id)?,
        },
        RawOp::SubscribeOrder { order_id } => Op::SubscribeOrder {
            order_id: order(order_id)?,
        },
        RawOp::UnsubscribeOrder { order_id } => Op::UnsubscribeOrder {
            order_id: order(order_id)?,
        },
        RawOp::SubscribeStock { sku: s } => Op::SubscribeStock { sku: sku(s)? },
        RawOp::UnsubscribeStock { sku: s } => Op::UnsubscribeStock { sku: sku(s)? },
    })
}

#[derive(Serialize)]
struct Reply<'a> {
    id: &'a Value,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart: Option<&'a Cart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a Order>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stock: Option<&'a InventoryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

impl<'a> Reply<'a> {
    fn new(id: &'a Value, body: Body<'a>, error: Option<ErrorBody<'a>>) -> Reply<'a> {
        let (mut cart, mut order, mut stock) = (None, None, None);
        match body {
            Body::Cart(c) => cart = Some(c),
            Body::Order(o) => order = Some(o),
            Body::Stock(s) => stock = Some(s),
            Body::None => {}
        }
        Reply {
            id,
            ok: error.is_none(),
            cart,
            order,
            stock,
            error,
        }
    }
}

/// What a reply or a push carries: a cart, an order, a sku's stock, or nothing.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// `"cart": {…}`.
    Cart(&'a Cart),
    /// `"order": {…}`.
    Order(&'a Order),
    /// `"stock": {…}`.
    Stock(&'a InventoryView),
    /// No field.
    None,
}

impl Body<'_> {
    /// The push frame's `type`.
    fn kind(&self) -> &'static str {
        match self {
            Body::Cart(_) => "cart",
            Body::Order(_) => "order",
            Body::Stock(_) => "stock",
            Body::None => "none",
        }
    }
}

#[derive(Serialize)]
struct Push<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart: Option<&'a Cart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a Order>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stock: Option<&'a InventoryView>,
}

/// Serializes a frame; our frame types always serialize, but never panic if one does not.
fn frame<T: Serialize>(value: &T) -> Utf8Bytes {
    match serde_json::to_string(value) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a websocket frame");
            Utf8Bytes::from_static(
                r#"{"id":null,"ok":false,"error":{"code":"internal","message":"internal error","request_id":""}}"#,
            )
        }
    }
}

/// `{"id","ok":true[,"cart"]}`.
pub fn reply_ok(id: &Value, cart: Option<&Cart>) -> Utf8Bytes {
    reply_with(id, cart.map_or(Body::None, Body::Cart))
}

/// `{"id","ok":true[,"cart"|"order"|"stock"]}`.
pub fn reply_with(id: &Value, body: Body<'_>) -> Utf8Bytes {
    frame(&Reply::new(id, body, None))
}

/// `{"id","ok":false,"error":{"code","message","request_id"}}`; logs the error.
pub fn reply_err(id: &Value, err: &AppError, request_id: &str) -> Utf8Bytes {
    err.log(Some(request_id));
    frame(&Reply::new(id, Body::None, Some(err.body(request_id))))
}

/// `{"type":"cart","cart"}`, `{"type":"order","order"}` or `{"type":"stock","stock"}`.
pub fn push(body: Body<'_>) -> Utf8Bytes {
    let reply = Reply::new(&Value::Null, body, None);
    frame(&Push {
        kind: body.kind(),
        cart: reply.cart,
        order: reply.order,
        stock: reply.stock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(text: &str) -> (Value, &'static str) {
        let (id, e) = parse(text).unwrap_err();
        (id, e.code())
    }

    #[test]
    fn parses_every_op() {
        let r = parse(r#"{"id":3,"op":"add_item","cart_id":"c1","sku":"S-1","qty":2}"#).unwrap();
        assert_eq!(r.id, json!(3));
        assert_eq!(
            r.op,
            Op::AddItem {
                cart_id: "c1".into(),
                sku: "S-1".into(),
                qty: 2
            }
        );
        let r = parse(r#"{"id":"a","op":"set_qty","cart_id":"c1","sku":"S","qty":0}"#).unwrap();
        assert!(matches!(r.op, Op::SetQty { qty: 0, .. }));
        let r = parse(r#"{"op":"subscribe","cart_id":"c1","extra":true}"#).unwrap();
        assert_eq!(r.id, Value::Null);
        assert!(parse(r#"{"op":"unsubscribe","cart_id":"c1"}"#).is_ok());
        assert!(parse(r#"{"op":"get","cart_id":"c1"}"#).is_ok());
        assert!(parse(r#"{"op":"remove_item","cart_id":"c1","sku":"S"}"#).is_ok());
        let r = parse(r#"{"id":4,"op":"subscribe_order","order_id":"o-1"}"#).unwrap();
        assert_eq!(
            r.op,
            Op::SubscribeOrder {
                order_id: "o-1".into()
            }
        );
        assert!(parse(r#"{"op":"unsubscribe_order","order_id":"o-1"}"#).is_ok());
        let r = parse(r#"{"op":"subscribe_stock","sku":"MUG"}"#).unwrap();
        assert_eq!(r.op, Op::SubscribeStock { sku: "MUG".into() });
        assert!(parse(r#"{"op":"unsubscribe_stock","sku":"MUG"}"#).is_ok());
    }

    #[test]
    fn malformed_frames_keep_the_id_when_they_can() {
        assert_eq!(code("{nope"), (Value::Null, "invalid_input"));
        assert_eq!(code("[1]"), (Value::Null, "invalid_input"));
        assert_eq!(code(r#"{"id":7,"op":"fly"}"#), (json!(7), "invalid_input"));
        assert_eq!(code(r#"{"id":7,"op":"get"}"#), (json!(7), "invalid_input"));
        assert_eq!(
            code(r#"{"id":{},"op":"get","cart_id":"c"}"#),
            (Value::Null, "invalid_input")
        );
        let bad_qty = r#"{"id":1,"op":"add_item","cart_id":"c","sku":"s","qty":0}"#;
        assert_eq!(code(bad_qty), (json!(1), "invalid_input"));
        let neg_qty = r#"{"id":1,"op":"set_qty","cart_id":"c","sku":"s","qty":-1}"#;
        assert_eq!(code(neg_qty), (json!(1), "invalid_input"));
        let dotted = r#"{"id":2,"op":"subscribe","cart_id":"a.b"}"#;
        assert_eq!(code(dotted), (json!(2), "invalid_input"));
        let wildcard = r#"{"id":2,"op":"add_item","cart_id":"c","sku":"*","qty":1}"#;
        assert_eq!(code(wildcard), (json!(2), "invalid_input"));
        let wild_sku = r#"{"id":5,"op":"subscribe_stock","sku":">"}"#;
        assert_eq!(code(wild_sku), (json!(5), "invalid_input"));
        let no_order = r#"{"id":6,"op":"subscribe_order"}"#;
        assert_eq!(code(no_order), (json!(6), "invalid_input"));
        let dotted_order = r#"{"id":6,"op":"subscribe_order","order_id":"a.>"}"#;
        assert_eq!(code(dotted_order), (json!(6), "invalid_input"));
    }

    #[test]
    fn frames_have_the_contract_shape() {
        let v: Value = serde_json::from_str(reply_ok(&json!(2), None).as_str()).unwrap();
        assert_eq!(v, json!({"id": 2, "ok": true}));
        let stock = InventoryView {
            sku: "MUG".into(),
            on_hand: 5,
            reserved: 1,
            available: 4,
            version: 9,
        };
        let v: Value =
            serde_json::from_str(reply_with(&json!(3), Body::Stock(&stock)).as_str()).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["stock"]["available"], 4);
        let v: Value = serde_json::from_str(push(Body::Stock(&stock)).as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"stock","stock":{"sku":"MUG","on_hand":5,"reserved":1,"available":4,"version":9}})
        );
        let e = AppError::invalid("bad");
        let v: Value = serde_json::from_str(reply_err(&json!(1), &e, "r").as_str()).unwrap();
        assert_eq!(
            v,
            json!({"id":1,"ok":false,"error":{"code":"invalid_input","message":"bad","request_id":"r"}})
        );
    }
}
