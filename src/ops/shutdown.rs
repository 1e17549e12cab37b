//! Signals → a cancellation token. The first SIGTERM/SIGINT starts a graceful
//! drain; a second one exits at once (exit code 130).

use tokio_util::sync::CancellationToken;

use super::internal_events::ShutdownSignalReceived;

/// Spawns the signal watcher and returns the token it cancels.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        ShutdownSignalReceived { repeated: false }.emit();
        t.cancel();
        wait_for_signal().await;
        ShutdownSignalReceived { repeated: true }.emit();
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
