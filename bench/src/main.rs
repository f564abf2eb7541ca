//! `cartwheel-bench`: the load generator on its own (the same as `cartwheel bench`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cartwheel_bench::main(cartwheel_bench::BenchArgs::parse()).await
}
