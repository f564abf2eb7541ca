//! The storage conformance suite: one set of test bodies that every backend must pass.
//!
//! Each test is an `async fn(&Stores) -> anyhow::Result<()>` that gets a fresh, empty set
//! of stores. A backend joins the suite with one small file in `storage/tests/` that
//! declares this module and expands [`suite!`] with an expression that produces a
//! [`Backend`]:
//!
//! ```ignore
//! mod conformance;
//! use conformance::Backend;
//!
//! async fn backend() -> anyhow::Result<Backend> {
//!     let server = start_the_server().await?;
//!     let stores = open_stores(&server).await?;
//!     Ok(Backend::new(stores, server)) // the server lives as long as the test
//! }
//!
//! conformance::suite!(backend());
//! ```
//!
//! A backend with a server process passes it too, with [`Backend::with_server`], so that
//! the rules of `crash.rs` can kill it with SIGKILL and start it again between a write and
//! a read. The in-memory backend has no server; for it those rules only check the reads.
//!
//! The macro expands to one `#[tokio::test]` per test below, named after it, so a failure
//! names the backend's test binary and the rule that broke. Adding a rule is one function in
//! `entities.rs`, `queries.rs` or `crash.rs` and one name in a list of [`suite!`]; every
//! backend picks it up. Rules that only make sense for one backend (raw writes of an older
//! document shape, server settings) live in that backend's file.

pub mod crash;
pub mod entities;
pub mod fixtures;
pub mod queries;

pub use crash::*;
pub use entities::*;
pub use queries::*;

use cartwheel_storage::Stores;
use std::any::Any;

/// The server process behind a backend, for the rules that crash it.
#[async_trait::async_trait]
pub trait Server: Send {
    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) -> anyhow::Result<()>;
    /// Starts it again on the same port and data, and waits until it accepts clients.
    async fn restart(&mut self) -> anyhow::Result<()>;
}

/// A fresh, empty set of stores for one test, the server behind them if there is one, and
/// whatever must stay alive while the test uses them (a temporary directory, a client).
pub struct Backend {
    /// The stores under test.
    pub stores: Stores,
    /// The server process, if the backend has one.
    pub server: Option<Box<dyn Server>>,
    // Dropped after `server`: fields drop in declaration order, and clients should go
    // before the server they talk to, so keep-alives are declared last. A client kept
    // here outlives its server; that is fine, it only logs.
    _keep_alive: Box<dyn Any + Send + Sync>,
}

impl Backend {
    /// Stores without a server, that need `keep_alive` to live as long as they are used.
    #[allow(dead_code)] // each backend's test binary uses one of the two constructors
    pub fn new(stores: Stores, keep_alive: impl Any + Send + Sync) -> Backend {
        Backend {
            stores,
            server: None,
            _keep_alive: Box::new(keep_alive),
        }
    }

    /// Stores on `server`, that need `keep_alive` to live as long as they are used.
    #[allow(dead_code)] // each backend's test binary uses one of the two constructors
    pub fn with_server(
        stores: Stores,
        server: impl Server + 'static,
        keep_alive: impl Any + Send + Sync,
    ) -> Backend {
        Backend {
            stores,
            server: Some(Box::new(server)),
            _keep_alive: Box::new(keep_alive),
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance rule, each awaiting `$backend` (an
/// expression of type `impl Future<Output = anyhow::Result<Backend>>`) for fresh stores.
macro_rules! suite {
    ($backend:expr) => {
        $crate::conformance::suite!(@each $backend;
            cart_round_trip,
            order_round_trip,
            product_round_trip,
            inventory_round_trip,
            missing_id_loads_none,
            create_twice_conflicts,
            update_moves_the_revision_and_a_stale_revision_conflicts,
            update_of_a_missing_id_conflicts,
            racing_writers_one_wins_each_round,
            racing_creators_one_wins,
            outbox_survives_round_trip,
            ids_lists_every_id_once,
            empty_stores_answer_empty_pages,
            products_filter_by_category_and_active,
            products_pages_cover_every_item_once,
            products_page_size_is_checked,
            products_queries_see_updates,
            orders_filter_by_user_and_status,
            orders_pages_are_newest_first_and_cover_every_item_once,
            orders_query_checks_limit_and_cursor,
        );
        $crate::conformance::suite!(@each_backend $backend;
            acknowledged_writes_survive_a_server_crash,
            calls_fail_fast_while_the_server_is_down_and_recover,
        );
    };
    (@each_backend $backend:expr; $($rule:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() -> anyhow::Result<()> {
                let mut backend: $crate::conformance::Backend = $backend.await?;
                $crate::conformance::$rule(&mut backend).await
            }
        )+
    };
    (@each $backend:expr; $($rule:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() -> anyhow::Result<()> {
                let backend: $crate::conformance::Backend = $backend.await?;
                $crate::conformance::$rule(&backend.stores).await
            }
        )+
    };
}
pub(crate) use suite;
