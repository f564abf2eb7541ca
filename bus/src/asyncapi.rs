//! The AsyncAPI 3.0 document of the bus: every subject a node answers or publishes on,
//! the messages on it (schemas derived from the wire types themselves), and the headers
//! every message carries. The edge serves it at `/asyncapi.json`.
//!
//! Subject templates are built here, next to [`Names`], and a test checks each one
//! against the function that builds the real subject, so the document cannot drift from
//! the wire. Bodies are MessagePack maps with named fields ([`crate::codec`]); the
//! schemas describe them as JSON schemas, which is what a map with named fields is.

use crate::cluster::{ClusterStatus, Location};
use crate::messages::{
    CartCommand, CatalogQuery, CheckoutReply, ClusterStatusQuery, InventoryCommand, LocateQuery,
    OrderCommand, OrdersQuery, Page, WebhookCommand,
};
use crate::names::{EVENT_KINDS, EntityKind, Names};
use crate::{ApiError, headers};
use cartwheel_domain::{Cart, Event, InventoryView, Order, Product};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

/// `{prefix}.{kind}.{partition}.{id}`, the AsyncAPI address of a kind's commands.
fn entity_template(names: &Names, kind: EntityKind) -> String {
    format!("{}.{}.{{partition}}.{{id}}", names.prefix(), kind.as_str())
}

/// `{prefix}.evt.{kind}.{id}`, the AsyncAPI address of a kind's events.
fn event_template(names: &Names, kind: &str) -> String {
    format!("{}.evt.{}.{{id}}", names.prefix(), kind)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Collects the named schemas `T` refers to, and returns `T`'s own schema inline.
fn schema_of<T: ToSchema>(components: &mut Map<String, Value>) -> Value {
    let mut deps: Vec<(String, RefOr<Schema>)> = Vec::new();
    T::schemas(&mut deps);
    for (name, s) in deps {
        components.insert(name, to_json(&s));
    }
    to_json(&T::schema())
}

/// `Result<T, ApiError>` as serde writes it: `{"Ok": T}` or `{"Err": ApiError}`.
fn reply_of<T: ToSchema>(components: &mut Map<String, Value>) -> Value {
    let ok = schema_of::<T>(components);
    let err = schema_of::<ApiError>(components);
    json!({"oneOf": [
        {"type": "object", "required": ["Ok"], "properties": {"Ok": ok}},
        {"type": "object", "required": ["Err"], "properties": {"Err": err}},
    ]})
}

/// One message component.
fn message(name: &str, summary: &str, payload: Value) -> Value {
    json!({
        "name": name,
        "summary": summary,
        "contentType": "application/msgpack",
        "headers": {"$ref": "#/components/schemas/Headers"},
        "payload": payload,
    })
}

/// The whole document for the subjects under `names`.
pub fn document(names: &Names, version: &str) -> Value {
    let mut schemas = Map::new();
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();

    schemas.insert(
        "Headers".into(),
        json!({
            "type": "object",
            "properties": {
                headers::REQUEST_ID: {"type": "string", "description": "request id, from the edge's x-request-id"},
                headers::TRACEPARENT: {"type": "string", "description": "W3C trace context of the caller's span"},
            },
        }),
    );

    // Request-reply on entity actors.
    let commands: [(EntityKind, &str, Value, Value); 3] = [
        (
            EntityKind::Cart,
            "CartCommand",
            schema_of::<CartCommand>(&mut schemas),
            json!({"oneOf": [reply_of::<Cart>(&mut schemas), reply_of::<CheckoutReply>(&mut schemas)]}),
        ),
        (
            EntityKind::Inventory,
            "InventoryCommand",
            schema_of::<InventoryCommand>(&mut schemas),
            json!({"oneOf": [reply_of::<Product>(&mut schemas), reply_of::<InventoryView>(&mut schemas)]}),
        ),
        (
            EntityKind::Order,
            "OrderCommand",
            schema_of::<OrderCommand>(&mut schemas),
            reply_of::<Order>(&mut schemas),
        ),
    ];
    for (kind, name, request, reply) in commands {
        let k = kind.as_str();
        let reply_name = format!("{name}Reply");
        messages.insert(
            name.into(),
            message(name, &format!("a command to one {k} actor"), request),
        );
        messages.insert(
            reply_name.clone(),
            message(&reply_name, "the actor's answer", reply),
        );
        channels.insert(
            format!("{k}Commands"),
            json!({
                "address": entity_template(names, kind),
                "description": format!("Commands to the {k} actor `id`, served by the node that holds partition `partition` (FNV-1a 64 of the id modulo the partition count). Commands only nodes send (inventory `reserve`, `release`, `commit`, `restock`; order `place`) travel on the same address with `.int` appended, and are refused here."),
                "parameters": {"partition": {"description": "partition of the id"}, "id": {"description": "entity id, [A-Za-z0-9_-]{1,64}"}},
                "messages": {name: {"$ref": format!("#/components/messages/{name}")}},
            }),
        );
        channels.insert(
            format!("{k}Replies"),
            json!({
                "address": null,
                "description": "the requester's inbox",
                "messages": {reply_name.clone(): {"$ref": format!("#/components/messages/{reply_name}")}},
            }),
        );
        operations.insert(
            format!("{k}Command"),
            json!({
                "action": "receive",
                "summary": format!("a node answers a {k} command"),
                "channel": {"$ref": format!("#/channels/{k}Commands")},
                "reply": {"channel": {"$ref": format!("#/channels/{k}Replies")}},
            }),
        );
    }

    // Read-side queries, answered by any node (queue group).
    let queries = [
        (
            "catalogQuery",
            names.query_catalog(),
            "CatalogQuery",
            schema_of::<CatalogQuery>(&mut schemas),
            reply_of::<Page<Product>>(&mut schemas),
        ),
        (
            "ordersQuery",
            names.query_orders(),
            "OrdersQuery",
            schema_of::<OrdersQuery>(&mut schemas),
            reply_of::<Page<Order>>(&mut schemas),
        ),
        (
            "clusterStatusQuery",
            names.query_cluster_status(),
            "ClusterStatusQuery",
            schema_of::<ClusterStatusQuery>(&mut schemas),
            reply_of::<ClusterStatus>(&mut schemas),
        ),
        (
            "locateQuery",
            names.query_locate(),
            "LocateQuery",
            schema_of::<LocateQuery>(&mut schemas),
            reply_of::<Location>(&mut schemas),
        ),
    ];
    for (id, address, name, request, reply) in queries {
        let reply_name = format!("{name}Reply");
        messages.insert(name.into(), message(name, "a list query", request));
        messages.insert(reply_name.clone(), message(&reply_name, "a page", reply));
        channels.insert(
            id.into(),
            json!({
                "address": address,
                "messages": {name: {"$ref": format!("#/components/messages/{name}")}},
            }),
        );
        channels.insert(
            format!("{id}Replies"),
            json!({
                "address": null,
                "description": "the requester's inbox",
                "messages": {reply_name.clone(): {"$ref": format!("#/components/messages/{reply_name}")}},
            }),
        );
        operations.insert(
            id.into(),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{id}")},
                "reply": {"channel": {"$ref": format!("#/channels/{id}Replies")}},
            }),
        );
    }

    // Domain events, one JetStream stream per kind.
    let event = schema_of::<Event>(&mut schemas);
    messages.insert(
        "Event".into(),
        json!({
            "name": "Event",
            "summary": "something that happened to one entity; `Nats-Msg-Id` de-duplicates, the entity's version orders",
            "contentType": "application/msgpack",
            "headers": {"type": "object", "properties": {
                "Nats-Msg-Id": {"type": "string", "description": "{kind}:{id}:{version}:{event}"},
                "Cw-Event": {"type": "string", "description": "the event's name"},
                headers::REQUEST_ID: {"type": "string"},
                headers::TRACEPARENT: {"type": "string"},
            }},
            "payload": event,
        }),
    );
    messages.insert(
        "StoredChange".into(),
        json!({
            "name": "StoredChange",
            "summary": "a stored record of an entity kept in NATS KV: the write is the event. `state` is the entity after the change (as in the Event of that kind), `changes` the events of the change without the entity ({\"type\": \"CartUpdated\"}, {\"type\": \"PriceChanged\", \"old_price\": 100}, …); each event's identity is {kind}:{id}:{state.version}:{type}. A record without `changes` (written by an older release) carries no events.",
            "contentType": "application/msgpack",
            "payload": {"type": "object", "required": ["state"], "properties": {
                "state": {"type": "object", "description": "the entity"},
                "changes": {"type": "array", "items": {"type": "object", "required": ["type"],
                    "properties": {"type": {"type": "string"}}}},
            }},
        }),
    );
    for kind in EVENT_KINDS {
        channels.insert(
            format!("{kind}Events"),
            json!({
                "address": event_template(names, kind),
                "description": format!("Events of {kind} `id`, stored in JetStream stream `{}`: a StoredChange copied from KV bucket `{}` (the stream sources it), or an Event a node published (MongoDB and Redis stores, older releases).", names.event_stream(kind), names.entity_bucket(kind)),
                "parameters": {"id": {"description": "entity id"}},
                "messages": {
                    "Event": {"$ref": "#/components/messages/Event"},
                    "StoredChange": {"$ref": "#/components/messages/StoredChange"},
                },
            }),
        );
        channels.insert(
            format!("{kind}Live"),
            json!({
                "address": names.live(kind, "{id}"),
                "description": format!("Each record KV bucket `{}` stored for {kind} `id`, republished by nats-server right after the write (core NATS, not stored; never a refused write). Edges follow carts here for live pushes.", names.entity_bucket(kind)),
                "parameters": {"id": {"description": "entity id"}},
                "messages": {"StoredChange": {"$ref": "#/components/messages/StoredChange"}},
            }),
        );
        operations.insert(
            format!("{kind}Events"),
            json!({
                "action": "send",
                "summary": format!("{kind} events: copied from the KV bucket by the stream, or published by a node after storing the change"),
                "channel": {"$ref": format!("#/channels/{kind}Events")},
            }),
        );
    }

    // Webhooks: the admin subject, dead letters, system events, and what endpoints get.
    let command = schema_of::<WebhookCommand>(&mut schemas);
    let endpoint = schema_of::<cartwheel_domain::webhook::Endpoint>(&mut schemas);
    let delivery = schema_of::<cartwheel_domain::webhook::Delivery>(&mut schemas);
    messages.insert(
        "WebhookCommand".into(),
        message(
            "WebhookCommand",
            "a webhook admin command (any node answers)",
            command,
        ),
    );
    messages.insert(
        "WebhookReply".into(),
        message(
            "WebhookReply",
            "`{\"Ok\": …}` (an Endpoint, a list of them, a Delivery, a list of them, a Replay or nothing, as the command says) or `{\"Err\": ApiError}`",
            json!({"type": "object", "properties": {"Ok": {"description": "the command's answer", "oneOf": [endpoint, delivery]}}}),
        ),
    );
    messages.insert(
        "DeadLetter".into(),
        json!({
            "name": "DeadLetter",
            "summary": "a delivery whose retries are exhausted, with its attempts and reason (JSON)",
            "contentType": "application/json",
            "payload": delivery,
        }),
    );
    let payload = json!({"type": "object", "required": ["type", "timestamp", "data"], "properties": {
        "type": {"type": "string", "enum": cartwheel_domain::webhook::EVENT_TYPES},
        "timestamp": {"type": "string", "format": "date-time", "description": "when the event entered the log"},
        "data": {"type": "object", "description": "the event's fields: the entity after the change ({\"order\": …}, {\"cart\": …}, {\"inventory\": …}, {\"product\": …}) and `from` / `old_price` where the event has them; for endpoint.disabled {endpoint_id, url, reason}"},
    }});
    messages.insert(
        "WebhookPayload".into(),
        json!({
            "name": "WebhookPayload",
            "summary": "what an endpoint receives: an HTTP POST signed as Standard Webhooks v1 says",
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {
                "webhook-id": {"type": "string", "description": "the event's identity, the same on every retry and replay"},
                "webhook-timestamp": {"type": "string", "description": "seconds since the epoch, of this attempt"},
                "webhook-signature": {"type": "string", "description": "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>, one per current secret, space-separated"},
            }},
            "payload": payload.clone(),
        }),
    );
    channels.insert(
        "webhookAdmin".into(),
        json!({
            "address": names.webhook_admin(),
            "description": format!("Webhook administration, answered by any node (queue group `{}`); the edge serves it as /webhooks.", names.webhook_queue_group()),
            "messages": {"WebhookCommand": {"$ref": "#/components/messages/WebhookCommand"}},
        }),
    );
    channels.insert(
        "webhookAdminReplies".into(),
        json!({
            "address": null,
            "description": "the requester's inbox",
            "messages": {"WebhookReply": {"$ref": "#/components/messages/WebhookReply"}},
        }),
    );
    operations.insert(
        "webhookAdmin".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/webhookAdmin"},
            "reply": {"channel": {"$ref": "#/channels/webhookAdminReplies"}},
        }),
    );
    channels.insert(
        "webhookDeadLetters".into(),
        json!({
            "address": names.webhook_dead("{endpoint}"),
            "description": format!("Dead-lettered deliveries of one endpoint, in JetStream stream `{}`.", names.webhook_dead_stream()),
            "parameters": {"endpoint": {"description": "endpoint id"}},
            "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        }),
    );
    channels.insert(
        "webhookSystemEvents".into(),
        json!({
            "address": names.webhook_event("{endpoint}"),
            "description": format!("Webhook system events (endpoint.disabled) as their whole webhook payload (JSON), in JetStream stream `{}`; delivered to endpoints that ask for them.", names.webhook_events_stream()),
            "parameters": {"endpoint": {"description": "endpoint id"}},
            "messages": {"WebhookPayload": {"$ref": "#/components/messages/WebhookPayload"}},
        }),
    );
    channels.insert(
        "webhookDeliveries".into(),
        json!({
            "address": null,
            "description": "Not a NATS subject: the HTTP POST each registered endpoint receives, one per event its filter accepts, at least once, in order per entity.",
            "messages": {"WebhookPayload": {"$ref": "#/components/messages/WebhookPayload"}},
        }),
    );
    operations.insert(
        "webhookDeliveries".into(),
        json!({
            "action": "send",
            "summary": "signed deliveries to webhook endpoints, from the event log",
            "channel": {"$ref": "#/channels/webhookDeliveries"},
        }),
    );

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Cartwheel bus",
            "version": version,
            "description": "NATS subjects of Cartwheel: request-reply to entity actors and read-side queries, and domain events in JetStream. Every node also registers with the NATS services API as `cartwheel-node` ($SRV.PING, $SRV.INFO, $SRV.STATS).",
        },
        "defaultContentType": "application/msgpack",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_the_real_subjects() {
        let names = Names::new("cw");
        for kind in EntityKind::ALL {
            let t = entity_template(&names, kind)
                .replace("{partition}", "7")
                .replace("{id}", "abc");
            assert_eq!(t, names.entity(kind, 7, "abc"));
        }
        for kind in EVENT_KINDS {
            let t = event_template(&names, kind).replace("{id}", "abc");
            assert_eq!(t, names.event(kind, "abc"));
        }
    }

    #[test]
    fn the_document_has_every_channel_and_resolvable_refs() {
        let doc = document(&Names::new("cw"), "0.1.0");
        assert_eq!(doc["asyncapi"], "3.0.0");
        let channels = doc["channels"].as_object().unwrap();
        assert!(channels.contains_key("cartCommands"));
        assert!(channels.contains_key("catalogQuery"));
        assert!(channels.contains_key("productEvents"));
        assert!(channels.contains_key("webhookAdmin"));
        assert!(channels.contains_key("webhookDeliveries"));
        assert_eq!(channels["cartLive"]["address"], "cw.live.cart.{id}");
        assert_eq!(
            channels["cartCommands"]["address"],
            "cw.cart.{partition}.{id}"
        );
        // Every `#/components/schemas/X` reference resolves.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "unresolved schema {name}");
        }
    }
}
