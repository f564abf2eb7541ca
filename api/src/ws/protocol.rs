//! The `/ws` frame types: what clients send, what the edge answers and pushes.
//!
//! Client → server (JSON text frames; `id` is any number or string, echoed back):
//! `{"id":1,"op":"subscribe","cart_id"}`, `{"op":"unsubscribe","cart_id"}`,
//! `{"op":"get","cart_id"}`, `{"op":"add_item","cart_id","sku","qty"}`,
//! `{"op":"set_qty","cart_id","sku","qty"}`, `{"op":"remove_item","cart_id","sku"}`.
//!
//! Server → client: `{"id","ok":true,"cart"}` (no `cart` for `unsubscribe`),
//! `{"id","ok":false,"error":{"code","message","request_id"}}` and pushes
//! `{"type":"cart","cart"}`. Pure data: nothing here does I/O.

use crate::error::{AppError, ErrorBody};
use crate::routes::carts::quantity;
use crate::routes::valid_id;
use axum::extract::ws::Utf8Bytes;
use cartwheel_domain::Cart;
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
}

impl Op {
    /// The cart the operation is about.
    pub fn cart_id(&self) -> &str {
        match self {
            Op::Subscribe { cart_id }
            | Op::Unsubscribe { cart_id }
            | Op::Get { cart_id }
            | Op::AddItem { cart_id, .. }
            | Op::SetQty { cart_id, .. }
            | Op::RemoveItem { cart_id, .. } => cart_id,
        }
    }
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
    let op = match raw {
        RawOp::Subscribe { cart_id } => Op::Subscribe { cart_id },
        RawOp::Unsubscribe { cart_id } => Op::Unsubscribe { cart_id },
        RawOp::Get { cart_id } => Op::Get { cart_id },
        RawOp::AddItem { cart_id, sku, qty } => {
            valid_id("sku", &sku)?;
            Op::AddItem {
                cart_id,
                sku,
                qty: quantity(qty, false)?,
            }
        }
        RawOp::SetQty { cart_id, sku, qty } => {
            valid_id("sku", &sku)?;
            Op::SetQty {
                cart_id,
                sku,
                qty: quantity(qty, true)?,
            }
        }
        RawOp::RemoveItem { cart_id, sku } => {
            valid_id("sku", &sku)?;
            Op::RemoveItem { cart_id, sku }
        }
    };
    valid_id("cart_id", op.cart_id())?;
    Ok(op)
}

#[derive(Serialize)]
struct Reply<'a> {
    id: &'a Value,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cart: Option<&'a Cart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

#[derive(Serialize)]
struct Push<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    cart: &'a Cart,
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
    frame(&Reply {
        id,
        ok: true,
        cart,
        error: None,
    })
}

/// `{"id","ok":false,"error":{"code","message","request_id"}}`; logs the error.
pub fn reply_err(id: &Value, err: &AppError, request_id: &str) -> Utf8Bytes {
    err.log(Some(request_id));
    frame(&Reply {
        id,
        ok: false,
        cart: None,
        error: Some(err.body(request_id)),
    })
}

/// `{"type":"cart","cart"}`.
pub fn push(cart: &Cart) -> Utf8Bytes {
    frame(&Push { kind: "cart", cart })
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
    }

    #[test]
    fn frames_have_the_contract_shape() {
        let v: Value = serde_json::from_str(reply_ok(&json!(2), None).as_str()).unwrap();
        assert_eq!(v, json!({"id": 2, "ok": true}));
        let e = AppError::invalid("bad");
        let v: Value = serde_json::from_str(reply_err(&json!(1), &e, "r").as_str()).unwrap();
        assert_eq!(
            v,
            json!({"id":1,"ok":false,"error":{"code":"invalid_input","message":"bad","request_id":"r"}})
        );
    }
}
