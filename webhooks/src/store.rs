//! Where webhook state lives: endpoints and deliveries in KV buckets (JSON, readable
//! with the `nats` CLI), dead letters and system events in streams.

use crate::Settings;
use crate::error::WebhookError;
use async_nats::jetstream::{self, kv, stream};
use cartwheel_bus::Names;
use cartwheel_domain::webhook::{Delivery, Endpoint};
use futures::StreamExt;
use std::time::Duration;

/// The buckets and streams of the service.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) js: jetstream::Context,
    pub(crate) names: Names,
    endpoints: kv::Store,
    deliveries: kv::Store,
}

/// A value and the revision it was read at (for compare-and-set).
pub(crate) type Revisioned<T> = (T, u64);

fn nats<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> WebhookError + '_ {
    move |e| WebhookError::Nats(format!("{what}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(bytes).map_err(|e| WebhookError::Codec(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, WebhookError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| WebhookError::Codec(e.to_string()))
}

impl Store {
    /// Opens (creating when missing) the buckets and streams.
    pub(crate) async fn open(
        js: &jetstream::Context,
        names: &Names,
        settings: &Settings,
    ) -> Result<Store, WebhookError> {
        let replicas = settings.replicas;
        let endpoints = cartwheel_storage::kv::open_or_create(
            js,
            kv::Config {
                bucket: names.webhooks_bucket(),
                description: "Cartwheel webhook endpoints".into(),
                history: 1,
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        let deliveries = cartwheel_storage::kv::open_or_create(
            js,
            kv::Config {
                bucket: names.webhook_deliveries_bucket(),
                description: "Cartwheel webhook deliveries and their attempts".into(),
                history: 1,
                max_age: settings.keep_deliveries,
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        for (name, subjects, what) in [
            (
                names.webhook_dead_stream(),
                names.webhook_dead_subjects(),
                "webhook dead letters",
            ),
            (
                names.webhook_events_stream(),
                names.webhook_event_subjects(),
                "webhook system events",
            ),
        ] {
            let config = stream::Config {
                name,
                subjects: vec![subjects],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: settings.keep_deliveries,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            cartwheel_bus::retry_at_startup(what, || async {
                js.get_or_create_stream(config.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(WebhookError::Nats)?;
        }
        Ok(Store {
            js: js.clone(),
            names: names.clone(),
            endpoints,
            deliveries,
        })
    }

    /// One endpoint and its revision.
    pub(crate) async fn endpoint(
        &self,
        id: &str,
    ) -> Result<Option<Revisioned<Endpoint>>, WebhookError> {
        let entry = self
            .endpoints
            .entry(id)
            .await
            .map_err(nats("reading an endpoint"))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((decode(&e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// One endpoint, or `NotFound`.
    pub(crate) async fn existing(&self, id: &str) -> Result<Revisioned<Endpoint>, WebhookError> {
        self.endpoint(id)
            .await?
            .ok_or_else(|| WebhookError::NotFound(format!("webhook endpoint {id}")))
    }

    /// Stores a new endpoint (refused if the id exists).
    pub(crate) async fn create_endpoint(&self, e: &Endpoint) -> Result<(), WebhookError> {
        self.endpoints
            .create(&e.id, encode(e)?)
            .await
            .map(|_| ())
            .map_err(nats("registering an endpoint"))
    }

    /// Replaces an endpoint read at `revision`; `Ok(false)` when it changed since.
    pub(crate) async fn update_endpoint(
        &self,
        e: &Endpoint,
        revision: u64,
    ) -> Result<bool, WebhookError> {
        match self.endpoints.update(&e.id, encode(e)?, revision).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(WebhookError::Nats(format!("updating an endpoint: {err}"))),
        }
    }

    /// Applies `change` to the endpoint with compare-and-set, rereading on a conflict;
    /// `change` returning `false` stores nothing. Answers the endpoint as stored.
    pub(crate) async fn change_endpoint(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Endpoint) -> Result<bool, WebhookError>,
    ) -> Result<Endpoint, WebhookError> {
        loop {
            let (mut e, revision) = self.existing(id).await?;
            if !change(&mut e)? {
                return Ok(e);
            }
            if self.update_endpoint(&e, revision).await? {
                return Ok(e);
            }
        }
    }

    /// Removes an endpoint.
    pub(crate) async fn delete_endpoint(&self, id: &str) -> Result<(), WebhookError> {
        self.endpoints
            .purge(id)
            .await
            .map_err(nats("deleting an endpoint"))
    }

    /// Every endpoint.
    pub(crate) async fn endpoints(&self) -> Result<Vec<Endpoint>, WebhookError> {
        let mut keys = self
            .endpoints
            .keys()
            .await
            .map_err(nats("listing endpoints"))?;
        let mut ids = Vec::new();
        while let Some(k) = keys.next().await {
            ids.push(k.map_err(nats("listing endpoints"))?);
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some((e, _)) = self.endpoint(&id).await? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A watch of every endpoint: the current ones, then each change.
    pub(crate) async fn watch_endpoints(&self) -> Result<kv::Watch, WebhookError> {
        self.endpoints
            .watch_with_history(">")
            .await
            .map_err(nats("watching endpoints"))
    }

    /// One delivery of an endpoint.
    pub(crate) async fn delivery(
        &self,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<Delivery>, WebhookError> {
        let entry = self
            .deliveries
            .entry(format!("{endpoint}.{id}"))
            .await
            .map_err(nats("reading a delivery"))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some(decode(&e.value)?)),
            _ => Ok(None),
        }
    }

    /// Stores a delivery (one owner writes it at a time: no compare-and-set).
    pub(crate) async fn put_delivery(&self, d: &Delivery) -> Result<(), WebhookError> {
        self.deliveries
            .put(format!("{}.{}", d.endpoint_id, d.id), encode(d)?)
            .await
            .map(|_| ())
            .map_err(nats("storing a delivery"))
    }

    /// An endpoint's deliveries (the latest state of each), newest first.
    pub(crate) async fn deliveries(&self, endpoint: &str) -> Result<Vec<Delivery>, WebhookError> {
        let mut watch = self
            .deliveries
            .watch_with_history(format!("{endpoint}.>"))
            .await
            .map_err(nats("listing deliveries"))?;
        let mut out = Vec::new();
        // The history ends where `delta` reaches 0; an empty filter sends nothing, so a
        // short wait ends it too.
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
            let Ok(Some(entry)) = next else { break };
            let entry = entry.map_err(nats("listing deliveries"))?;
            if entry.operation == kv::Operation::Put {
                out.push(decode::<Delivery>(&entry.value)?);
            }
            if entry.delta == 0 {
                break;
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Puts a dead delivery in the dead-letter stream, and waits for the ack.
    pub(crate) async fn dead_letter(&self, d: &Delivery) -> Result<(), WebhookError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}.{}.{}", d.endpoint_id, d.id, d.attempts.len()).as_str(),
        );
        self.js
            .publish_with_headers(self.names.webhook_dead(&d.endpoint_id), headers, encode(d)?)
            .await
            .map_err(nats("dead-lettering"))?
            .await
            .map_err(nats("dead-letter ack"))?;
        Ok(())
    }

    /// Publishes a system event (its whole webhook payload) under `webhook_id`.
    pub(crate) async fn system_event(
        &self,
        endpoint: &str,
        webhook_id: &str,
        payload: &serde_json::Value,
    ) -> Result<(), WebhookError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, webhook_id);
        self.js
            .publish_with_headers(
                self.names.webhook_event(endpoint),
                headers,
                encode(payload)?,
            )
            .await
            .map_err(nats("publishing a system event"))?
            .await
            .map_err(nats("system event ack"))?;
        Ok(())
    }
}
