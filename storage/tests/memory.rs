//! The conformance suite against the in-memory backend.

mod conformance;

use conformance::Backend;

async fn backend() -> anyhow::Result<Backend> {
    Ok(Backend::new(cartwheel_storage::memory::stores(), ()))
}

conformance::suite!(backend());
