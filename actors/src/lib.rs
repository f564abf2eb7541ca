//! The node runtime: entity actors on NATS.
//!
//! * [`node`]: starts a node — placement, read-side query responders — and shuts it down.
//! * [`placement`]: membership heartbeats, rendezvous hashing and partition leases in
//!   NATS KV; [`partition`]: what a node runs for one partition it holds.
//! * [`entity`] / [`supervisor`] / [`host`]: the generic machinery. A [`host`] task reads a
//!   kind's subject, decodes commands and routes them to the partition's [`supervisor`]
//!   (a ractor actor per kind and partition), which holds the partition's live entities
//!   as data: it activates an entity on its first command (its first turn loads the
//!   stored state), runs one [`entity`] turn at a time per entity in a short-lived task,
//!   passivates idle ones, and forgets the state of one whose turn failed so its next
//!   turn reloads it from storage.
//! * [`cart`], [`inventory`], [`order`]: the behaviours, thin shells around `domain` rules
//!   that persist (compare-and-set) before replying and publish events afterwards.
//! * [`payment`]: the payment port of the checkout saga.
//! * [`query`]: product and order lists answered from storage by any node.
//! * [`discovery`]: the node's registration with the NATS services API.
//!
//! This crate never imports axum and never parses HTTP.

pub mod cart;
pub mod catalog;
pub mod ctx;
pub mod discovery;
pub mod entity;
pub mod host;
pub mod inventory;
pub mod node;
pub mod order;
pub mod partition;
pub mod payment;
pub mod persist;
pub mod placement;
pub mod query;
pub mod supervisor;

pub use ctx::{Ctx, Faults, NodeSettings};
pub use node::{Node, NodeError};
pub use payment::{PaymentPort, RulesPayment};
pub use placement::LeaseGuard;
