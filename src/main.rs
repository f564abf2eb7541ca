//! The `cartwheel` binary: parse configuration, start components, wait for a signal,
//! shut down gracefully. Everything else lives in the workspace's library crates.

mod config;
mod nats_child;
mod run;

use clap::Parser;
use config::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn,ractor=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            init_tracing(args.log_format);
            run::up(args).await
        }
        Command::Node(args) => {
            init_tracing(args.common.log_format);
            run::node(args).await
        }
        Command::Edge(args) => {
            init_tracing(args.common.log_format);
            run::edge(args).await
        }
    }
}
