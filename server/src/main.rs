use clap::Parser;
use st_peter_server::cli::{Cli, Command, LogFormat};
use st_peter_server::traces::Traces;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Admin commands print their answer on stdout; keep their logs to warnings.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_env("ST_PETER_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // Traces are exported by `serve` only, and only when an OTLP endpoint is configured.
    let traces = match cli.command {
        Command::Serve(_) => match Traces::from_env() {
            Ok(traces) => traces,
            Err(error) => {
                eprintln!("error: {error:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    match &traces {
        None => {
            let logs = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            match cli.log_format {
                LogFormat::Text => logs.init(),
                LogFormat::Json => logs.json().init(),
            }
        }
        Some(traces) => init_with_traces(filter, cli.log_format, traces),
    }
    let result = st_peter_server::cli::run(cli).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The same log output, beside the layer that exports the traced spans (which the log
/// output leaves out, so its lines do not change).
fn init_with_traces(filter: EnvFilter, format: LogFormat, traces: &Traces) {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let not_traced = tracing_subscriber::filter::filter_fn(|metadata| {
        !st_peter_server::traces::is_trace_span(metadata)
    });
    tracing_subscriber::registry()
        .with(traces.layer())
        .with(logs.with_filter(filter).with_filter(not_traced))
        .init();
}
