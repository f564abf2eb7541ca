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
//! The macro expands to one `#[tokio::test]` per test below, named after it, so a failure
//! names the backend's test binary and the rule that broke. Adding a rule is one function in
//! `entities.rs` or `queries.rs` and one name in the list of [`suite!`]; every backend picks
//! it up. Rules that only make sense for one backend (a server restart, raw writes of an
//! older document shape) live in that backend's file.

pub mod entities;
pub mod fixtures;
pub mod queries;

pub use entities::*;
pub use queries::*;

use cartwheel_storage::Stores;
use std::any::Any;

/// A fresh, empty set of stores for one test, and whatever must stay alive while the test
/// uses them (a server process, a temporary directory).
pub struct Backend {
    /// The stores under test.
    pub stores: Stores,
    _keep_alive: Box<dyn Any + Send + Sync>,
}

impl Backend {
    /// Stores that need `keep_alive` to live as long as they are used.
    pub fn new(stores: Stores, keep_alive: impl Any + Send + Sync) -> Backend {
        Backend {
            stores,
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
