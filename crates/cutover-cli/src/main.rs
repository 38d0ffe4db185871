//! The `cutover` binary: a thin shell over the library crates.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses
//! arguments, sets up logging and the TLS provider, and maps errors to exit codes.

mod cmd;
mod output;

use clap::Parser;

/// The server allocates a small message, event or row per device report; at
/// 100,000 simulated devices glibc's allocator was a fifth of the process
/// (`perf`, `bench fleet`). The agent binary keeps the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // One TLS backend for the whole process: rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cmd::Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", output::error_chain(&error));
            std::process::ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::prelude::*;
    // The embedded broker logs a client's ordinary comings and goings at
    // error level (a client that sends DISCONNECT before closing is "already
    // gone"); its lines show from -v on.
    let default = match verbose {
        0 => "warn,rumqttd=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The embedded broker opens an error-level span, its topic formatted, for
    // every packet it routes: a twentieth of the process at 100,000 devices.
    // Its events are kept; its spans only show with -vv.
    let broker_spans = verbose >= 2;
    let drop_broker_spans = tracing_subscriber::filter::filter_fn(move |m| {
        broker_spans || !(m.is_span() && m.target().starts_with("rumqttd"))
    });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .with_filter(drop_broker_spans),
        )
        .try_init();
}
