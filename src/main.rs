//! The `tsstore` binary. Until the server lands it reports its version.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        None | Some("--version") | Some("-V") | Some("version") => {
            println!("tsstore {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("tsstore: unknown command {other:?} (the server is not built yet)");
            ExitCode::from(2)
        }
    }
}
