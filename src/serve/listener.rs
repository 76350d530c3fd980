//! The sidecar's connections, as a hostile network meets them: at most `max_connections` are served at once (the
//! rest wait in the kernel's listen backlog, holding no descriptor or memory of ours), each must send its request
//! headers within `header_timeout` (which also closes a kept-alive connection left idle that long), an answer the
//! client does not take in within `write_timeout` closes it, and the webhook's body has its own deadline
//! (`http.rs`), and one client address holds at most `max_connections_per_client` of the places, so that one
//! host cannot take them all from Alertmanager and the kubelet. HTTP/1.1 only: Alertmanager and Prometheus speak nothing else to a plain-HTTP receiver, and one
//! protocol is one set of deadlines to get right.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

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
    let clients = Arc::new(Clients::default());
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
                Ok((stream, from)) => match clients.take(from.ip(), limits.max_connections_per_client) {
                    Some(place) => (stream, place),
                    None => {
                        // Never waited on: a client that does not read gets nothing rather than a hold on us.
                        let _ = stream.try_write(TOO_MANY);
                        continue;
                    }
                },
                Err(e) => {
                    // Out of descriptors (or a connection reset before it was accepted): wait rather than spin.
                    if !is_connection_error(&e) {
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        // A client that asks (pipelined requests, say) and never reads would otherwise hold its place forever:
        // no read deadline runs while an answer waits to be written.
        let (stream, place) = stream;
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
            drop((place, permit));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The answer to a connection past its address's share, written only if the socket takes it at once: 503, as a
/// full queue answers, which Alertmanager retries.
const TOO_MANY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n";

/// Connections open per client address. IPv4-mapped IPv6 addresses count as IPv4; an IPv6 address counts with
/// its /64, which one host is commonly given whole.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

/// One connection's share of its address's places, given back when dropped.
struct Place {
    clients: Arc<Clients>,
    address: IpAddr,
}

impl Clients {
    fn take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Place> {
        let address = match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            v4 => v4,
        };
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(address).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Place { clients: self.clone(), address })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let clients = Arc::new(Clients::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| clients.take(a, 3).expect("within the share")).collect();
        assert!(clients.take(a, 3).is_none(), "a fourth is refused");
        assert!(clients.take("::ffff:10.0.0.1".parse().unwrap(), 3).is_none(), "the same address, mapped");
        assert!(clients.take("10.0.0.2".parse().unwrap(), 3).is_some(), "another address has its own");
        let v6 = clients.take("2001:db8::1".parse().unwrap(), 1);
        assert!(v6.is_some() && clients.take("2001:db8::2".parse().unwrap(), 1).is_none(), "one /64 is one client");
        drop(held);
        let again = clients.take(a, 3);
        assert!(again.is_some(), "given back when closed");
        assert_eq!(clients.0.lock().unwrap().len(), 2, "addresses without connections are forgotten");
        drop((again, v6));
        assert!(clients.0.lock().unwrap().is_empty());
    }
}
