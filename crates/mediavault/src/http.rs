//! The accept loop: hyper's HTTP/1 server with a timer, and a graceful
//! drain. `axum::serve` gives hyper no timer, and without one hyper has no
//! header-read timeout: a client that sends half a request head and then
//! nothing would hold its connection for ever. Here the head must arrive
//! within `header_timeout`, as a body must keep arriving within the upload
//! idle timeout; and a response must keep leaving: a connection whose client
//! accepts nothing for `send_timeout` is cut (see `SendTimeout`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::connections::Connections;
use crate::send_timeout::SendTimeout;

/// How long each side may stall a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the request head to arrive.
    pub header: Duration,
    /// For a client to accept any of the response while it waits to be sent.
    pub send: Duration,
}

/// What hyper buffers per connection, each way: the request head, and
/// response pieces (64 KiB segments) queued ahead of the socket. hyper's own
/// default, ~400 KiB, let each download waiting for a slow client hold six
/// segments here on top of what the kernel holds; the socket's own buffer
/// keeps fast downloads streaming.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Serves `app` on `listener`, within `connections`' limits, until `stop`
/// resolves, then stops accepting,
/// asks every open connection to finish its request in flight and close, and
/// resolves once all have. Each request carries its peer's address as
/// `ConnectInfo<SocketAddr>`.
/// `interrupted` is cancelled once the drain time is over (see `SendTimeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    connections: Arc<Connections>,
    stop: impl Future<Output = ()>,
    interrupted: CancellationToken,
) {
    let draining = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .max_buf_size(MAX_BUF_SIZE);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let admitted = match connections.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                metrics::counter!("mediavault_connections_refused_total", "reason" => refused.label())
                    .increment(1);
                tracing::debug!(%peer, reason = refused.label(), "connection refused: too many open");
                // A new socket's send buffer is empty: the answer goes at
                // once, or not at all (a client whose request is already
                // here unread may see the close as a reset instead).
                let _ = stream.try_write(refused.response());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = http.serve_connection(
            TokioIo::new(SendTimeout::new(stream, timeouts.send, interrupted.clone())),
            TowerToHyperService::new(service.map_err(|never: Infallible| match never {})),
        );
        let connection = draining.watch(connection);
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(error) = connection.await {
                if is_send_timeout(&error) {
                    tracing::info!(%peer, "client accepted nothing for the send timeout; connection cut");
                } else {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    draining.shutdown().await;
}

/// Whether hyper gave up on a connection because `SendTimeout` failed a write.
fn is_send_timeout(error: &hyper::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}
