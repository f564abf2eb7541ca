//! Cartwheel's domain: the pure model and its rules.
//!
//! Everything here is synchronous and free of I/O: no clocks, no network, no storage.
//! Callers pass the current time in (`Timestamp`) so every rule is deterministic and
//! testable. The types serialize with serde to the exact shapes of the v1 HTTP/JSON
//! contract, and the bus carries them as named MessagePack.

pub mod cart;
pub mod error;
pub mod event;
pub mod inventory;
pub mod money;
pub mod order;
pub mod product;
pub mod time;
pub mod validate;
pub mod webhook;

pub use cart::{Cart, CartLine, CartStatus, CheckoutRecord};
pub use error::{DomainError, ErrorCode};
pub use event::{Change, Event, Evented};
pub use inventory::{Inventory, InventoryView, Reservation};
pub use money::Currency;
pub use order::{Order, OrderLine, OrderStatus, SagaStep};
pub use product::{Product, ProductDraft};
pub use time::Timestamp;
