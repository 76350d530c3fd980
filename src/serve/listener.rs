//! The sidecar's connections, as a hostile network meets them: at most `max_connections` are served at once (the
//! rest wait in the kernel's listen backlog, holding no descriptor or memory of ours), each must send its request
//! headers within `header_timeout` (which also closes a kept-alive connection left idle that long), an answer the
//! client does not take in within `write_timeout` closes it, and the webhook's body has its own deadline
//! (`http.rs`). HTTP/1.1 only: Alertmanager and Prometheus speak nothing else to a plain-HTTP receiver, and one
//! protocol is one set of deadlines to get right.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServeSettings;

/// Most a connection buffers while reading (request headers included): a webhook's headers are a few hundred
/// bytes, and `max_connections` times this bounds what clients can make the sidecar hold before any handler runs.
const READ_BUFFER: usize = 64 << 10;

/// Serves `app` on `listener` until `closing` is cancelled, then lets open connections finish their request
/// (the caller bounds how long it waits for that).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServeSettings,
    open: Gauge,
    closing: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(READ_BUFFER);
    loop {
        // A place first, then the connection: while every place is taken, new connections stay in the backlog.
        let permit = tokio::select! {
            _ = closing.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (or a connection reset before it was accepted): wait rather than spin.
                    if !is_connection_error(&e) {
                        eprintln!("preserve serve: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        // A client that asks (pipelined requests, say) and never reads would otherwise hold its place forever:
        // no read deadline runs while an answer waits to be written.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let conn = http.serve_connection(io, TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            // Errors here are the client's (a deadline missed, a reset): nothing to log per connection, which a
            // flood would turn into a flood of log lines.
            let _ = conn.await;
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
