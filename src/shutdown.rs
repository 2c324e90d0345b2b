//! The one trigger of a graceful stop: SIGTERM or SIGINT. `tsstore serve`
//! and the `swagger` preview server stop on it.

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server still runs; it stops when killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
