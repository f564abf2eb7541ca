//! The scenarios, one file each, and what they share: the run context (settings, a run
//! id that keeps this run's skus and carts apart from anything already stored, the
//! clients) and the setup helpers that seed products and carts through the public
//! contract.

pub mod bus;
pub mod checkout;
pub mod fanout;
pub mod hot_sku;
pub mod http;
pub mod idle;
pub mod live_carts;
pub mod ws;

use crate::cli::RunArgs;
use crate::client::Http;
use crate::load::LoadSpec;
use anyhow::Context;
use cartwheel_bus::messages::{CartCommand, InventoryCommand};
use cartwheel_bus::{BusClient, BusConfig, Names};
use cartwheel_domain::{Currency, ProductDraft};
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Setup requests in flight at once.
const SETUP_CONCURRENCY: usize = 32;

/// Stock given to every bench sku: never the limit.
const STOCK: u64 = 1_000_000_000;

/// Everything a scenario needs.
pub struct Ctx {
    /// The settings.
    pub args: RunArgs,
    /// Unique per run: prefixes skus and cart ids.
    pub run_id: String,
    /// Client of the edge under test.
    pub http: Http,
    nats: OnceCell<async_nats::Client>,
}

impl Ctx {
    /// A context for `args`.
    pub fn new(args: RunArgs) -> anyhow::Result<Ctx> {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let http = Http::new(&args.target, args.token.as_deref())?;
        Ok(Ctx {
            args,
            run_id,
            http,
            nats: OnceCell::new(),
        })
    }

    /// The shared NATS connection (connected on first use).
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        self.nats
            .get_or_try_init(|| self.connect_nats())
            .await
            .cloned()
    }

    /// A new NATS connection of its own.
    pub async fn connect_nats(&self) -> anyhow::Result<async_nats::Client> {
        Ok(cartwheel_bus::connect::connect(
            &self.args.nats_url,
            "cartwheel-bench",
            &self.args.nats_auth,
        )
        .await?)
    }

    /// A bus client speaking to the deployment's nodes.
    pub async fn bus(&self) -> anyhow::Result<BusClient> {
        Ok(BusClient::new(
            self.nats().await?,
            BusConfig {
                names: Names::new(&self.args.prefix),
                partitions: self.args.partitions,
                request_timeout: Duration::from_secs(30),
                retry_window: Duration::from_secs(5),
                // The load runs past saturation on purpose: a second copy of a slow
                // request would only add load.
                hedge_after: Duration::from_secs(30),
            },
        ))
    }

    /// The load spec of one workload with the run's settings.
    pub fn spec(&self, name: &str, kind: &'static str, description: &str) -> LoadSpec {
        LoadSpec {
            name: name.to_owned(),
            kind,
            description: description.to_owned(),
            duration: self.args.duration,
            warmup: self.args.warmup,
            load: self.load_mode(),
            max_ops: None,
            progress: !self.args.no_progress,
            procs: self.procs(),
        }
    }

    /// The processes whose CPU time is measured: this one, and those of `--pid`.
    pub fn procs(&self) -> Vec<(String, u32)> {
        let mut procs = vec![("bench".to_owned(), std::process::id())];
        procs.extend(self.args.pid.iter().cloned());
        procs
    }

    /// `{run}-{what}`: an id no earlier run used.
    pub fn id(&self, what: &str) -> String {
        format!("b{}-{what}", self.run_id)
    }

    /// Creates `n` stocked products over HTTP; returns their skus.
    pub async fn products_http(&self, tag: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let skus: Vec<String> = (0..n).map(|i| self.id(&format!("{tag}{i}"))).collect();
        futures::stream::iter(skus.clone())
            .map(|sku| async move {
                self.http
                    .json(
                        Method::POST,
                        "/products",
                        json!({"sku": sku, "name": format!("Bench {sku}"), "description": "",
                            "price": 100, "currency": "EUR", "category": "bench", "active": true}),
                        201,
                    )
                    .await?;
                self.http
                    .json(
                        Method::PUT,
                        &format!("/inventory/{sku}"),
                        json!({"on_hand": STOCK}),
                        200,
                    )
                    .await?;
                anyhow::Ok(())
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(skus)
    }

    /// Creates `n` carts over HTTP; returns their ids.
    pub async fn carts_http(&self, n: usize) -> anyhow::Result<Vec<String>> {
        futures::stream::iter(0..n)
            .map(|i| async move {
                let cart = self
                    .http
                    .json(
                        Method::POST,
                        "/carts",
                        json!({"user_id": self.id(&format!("u{i}"))}),
                        201,
                    )
                    .await?;
                cart["id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("cart without an id")
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Creates `n` stocked products over the bus; returns their skus.
    pub async fn products_bus(
        &self,
        bus: &BusClient,
        tag: &str,
        n: usize,
    ) -> anyhow::Result<Vec<String>> {
        let skus: Vec<String> = (0..n).map(|i| self.id(&format!("{tag}{i}"))).collect();
        let currency = Currency::new("EUR").map_err(|e| anyhow::anyhow!("{e}"))?;
        futures::stream::iter(skus.clone())
            .map(|sku| {
                let currency = currency.clone();
                async move {
                    let draft = ProductDraft {
                        sku: sku.clone(),
                        name: format!("Bench {sku}"),
                        description: String::new(),
                        price: 100,
                        currency,
                        category: "bench".into(),
                        active: true,
                    };
                    let rid = self.id("setup");
                    bus.product(&sku, &InventoryCommand::CreateProduct { draft }, &rid)
                        .await?;
                    bus.stock(&sku, &InventoryCommand::SetStock { on_hand: STOCK }, &rid)
                        .await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(skus)
    }

    /// Creates `n` carts over the bus; returns their ids.
    pub async fn carts_bus(&self, bus: &BusClient, n: usize) -> anyhow::Result<Vec<String>> {
        futures::stream::iter(0..n)
            .map(|i| async move {
                let id = self.id(&format!("c{i}"));
                let cmd = CartCommand::Create {
                    user_id: self.id(&format!("u{i}")),
                };
                bus.cart(&id, &cmd, &self.id("setup")).await?;
                anyhow::Ok(id)
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await
    }

    /// `n` resources made by `make` (closed-loop workers or the open-loop pool).
    pub fn workers<R>(&self, make: impl Fn(usize) -> R) -> Vec<R> {
        (0..self.args.concurrency.max(1)).map(make).collect()
    }
}
