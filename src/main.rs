//! The `cartwheel` binary: parse configuration, start components, wait for a signal,
//! shut down gracefully. Everything else lives in the workspace's library crates.

mod config;
mod nats_child;
mod public;
mod run;
mod telemetry;

use clap::Parser;
use config::{Cli, Command};

/// jemalloc instead of glibc's malloc: the write path allocates and frees small buffers
/// on every runtime thread, and glibc's arenas made threads wait on each other's locks
/// (`__lll_lock_wake` under `realloc` in the node's profile); and instead of mimalloc,
/// which was as fast but kept what a million passivated carts had used resident. Its
/// options (`.cargo/config.toml`): background threads give freed pages back to the OS
/// within about a second. See ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let _telemetry =
                telemetry::init(args.log_format, args.otlp_endpoint.as_deref(), "cartwheel")?;
            run::up(args).await
        }
        Command::Node(args) => {
            let c = &args.common;
            let _telemetry =
                telemetry::init(c.log_format, c.otlp_endpoint.as_deref(), "cartwheel-node")?;
            run::node(args).await
        }
        Command::Edge(args) => {
            let c = &args.common;
            let _telemetry =
                telemetry::init(c.log_format, c.otlp_endpoint.as_deref(), "cartwheel-edge")?;
            run::edge(args).await
        }
        Command::Cluster(args) => run::cluster(args).await,
        Command::Bench(args) => cartwheel_bench::main(args).await,
        Command::Token(args) => {
            println!("{}", run::token(&args)?);
            Ok(())
        }
    }
}
