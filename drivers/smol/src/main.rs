use clap::{Parser, Subcommand};
use osaurus_relay::ServeArgs;

/// The Osaurus relay: a public URL for each Osaurus agent, over one WebSocket tunnel.
#[derive(Parser)]
#[command(
    name = "osaurus-relay",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (the default).
    Serve(ServeArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(a)) => osaurus_relay::run(a),
        None => osaurus_relay::run(cli.serve),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "relay failed");
        std::process::exit(1);
    }
}
