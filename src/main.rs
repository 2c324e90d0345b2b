//! The `tsstore` binary: parse the command line, set up logging, load the
//! configuration, run the command, map errors to an exit code.

use std::process::ExitCode;

#[cfg(feature = "server")]
fn main() -> ExitCode {
    use clap::Parser;
    use tsstore::cli::{Cli, Command};
    use tsstore::config::{Config, Flags, Mode};

    pin_mmap_threshold();
    let cli = Cli::parse();
    let env = |k: &str| std::env::var(k).ok();
    let flags = match &cli.command {
        Command::Serve(a) => a.flags(cli.config.clone()),
        _ => Flags {
            config: cli.config.clone(),
            ..Flags::default()
        },
    };
    let mut config = match Config::load(&flags, &env) {
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
        .with_env_filter(tsstore::redact::log_filter(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut out = std::io::stdout();
    let result = match &cli.command {
        Command::Serve(_) => {
            tsstore::commands::admin_key_first_start(&mut config, &mut std::io::stderr())
                .and_then(|()| runtime())
                .and_then(|rt| rt.block_on(tsstore::app::run(config)))
        }
        Command::Create(a) => tsstore::commands::create(&config, a, &mut out),
        Command::Key(k) => tsstore::commands::key(&config, k, &mut out),
        Command::Status(p) => tsstore::commands::status(&config, &p.path, &mut out),
        Command::Calc(a) => tsstore::commands::calc(a, &mut out),
        Command::Swagger(a) => {
            runtime().and_then(|rt| rt.block_on(tsstore::commands::swagger(a, &mut out)))
        }
        Command::Healthcheck(a) => tsstore::commands::healthcheck(&config, a, &mut out),
        Command::Export(a) => tsstore::commands::export(&config, a, &mut out),
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

/// Keeps glibc's malloc from holding on to large freed blocks. Each
/// argon2 key hash takes 19 MiB; once glibc has freed a block that large it
/// raises its mmap threshold above it (the dynamic threshold), so the next
/// one comes from the heap and stays resident after it is freed: the
/// server's RSS grew by 19 MiB for good with its first key check. A fixed
/// threshold (glibc's default, 128 KiB) keeps every such block in a mapping
/// of its own, returned to the OS when it is freed. Other C libraries
/// (musl) return large blocks by themselves.
#[cfg(feature = "server")]
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt takes two integers and only changes a malloc
        // tunable; it runs before any other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 128 * 1024);
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
