//! `cartwheel-bench`: the load generator on its own (the same as `cartwheel bench`).

use clap::Parser;

/// The allocator the `cartwheel` binary uses, so the baselines run in the bench process
/// get it too (a faster allocator must not flatter the system against its baselines).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cartwheel_bench::main(cartwheel_bench::BenchArgs::parse()).await
}
