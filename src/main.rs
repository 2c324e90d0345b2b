//! The `tsstore` binary: parse the command line, set up logging, load the
//! configuration, run the command, map errors to an exit code.

use std::process::ExitCode;

#[cfg(feature = "server")]
fn main() -> ExitCode {
    use clap::Parser;
    use tsstore::cli::{Cli, Command};
    use tsstore::config::{Config, Flags, Mode};

    let cli = Cli::parse();
    let env = |k: &str| std::env::var(k).ok();
    let flags = match &cli.command {
        Command::Serve(a) => a.flags(cli.config.clone()),
        _ => Flags {
            config: cli.config.clone(),
            ..Flags::default()
        },
    };
    let config = match Config::load(&flags, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tsstore: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    let level = if config.mode == Mode::Debug {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TSSTORE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("tsstore={level},tower_http=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut out = std::io::stdout();
    let result = match &cli.command {
        Command::Serve(_) => runtime().and_then(|rt| rt.block_on(tsstore::app::run(config))),
        Command::Create(a) => tsstore::commands::create(&config, a, &mut out),
        Command::Key(k) => tsstore::commands::key(&config, k, &mut out),
        Command::Status(p) => tsstore::commands::status(&config, &p.path, &mut out),
        Command::Calc(a) => tsstore::commands::calc(a, &mut out),
        Command::Swagger(a) => {
            runtime().and_then(|rt| rt.block_on(tsstore::commands::swagger(a, &mut out)))
        }
        Command::Version => {
            println!("tsstore v{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsstore: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "server")]
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Without the server feature the binary only reports its version.
#[cfg(not(feature = "server"))]
fn main() -> ExitCode {
    println!(
        "tsstore v{} (engine only: built without the server feature)",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::SUCCESS
}
