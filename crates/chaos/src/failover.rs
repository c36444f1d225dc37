//! A TCP proxy in front of a store's nodes, as a load balancer in front of a
//! Garage cluster would be: each new connection goes to the first node, in
//! this proxy's order of preference, that passes its health check and
//! accepts the connection (to the first that accepts, if none passes). The
//! health check is Garage's own for load balancers, `GET /health` on its
//! admin API, polled every `CHECK_EVERY`: 200 while the node can reach a
//! quorum for every partition, 503 otherwise, as right after its start,
//! before it has reconnected to its peers, when its S3 API already answers
//! but every request fails. Nothing more: no retries of a request. A node
//! that dies takes the connections it held with it, as it would behind any
//! TCP balancer; the client's next connection goes to another node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A node that does not accept within this long is passed over.
const CONNECT_WITHIN: Duration = Duration::from_secs(1);
/// How often each node's health is checked, and how long a check may take.
const CHECK_EVERY: Duration = Duration::from_millis(250);
const CHECK_WITHIN: Duration = Duration::from_secs(1);

/// A node behind the proxy.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// Its health check: a URL that answers 200 while the node can serve.
    pub health: String,
}

pub struct Failover {
    addr: SocketAddr,
    /// Connections made to each node, in the order of preference.
    connections: Arc<Vec<AtomicU64>>,
    /// Connections that no node accepted.
    refused: Arc<AtomicU64>,
    /// The accept loop; it owns the connections' tasks, which end with it.
    task: tokio::task::JoinHandle<()>,
    /// The health checks.
    checks: tokio::task::JoinHandle<()>,
}

impl Failover {
    /// Listens on a free loopback port, forwarding to `nodes` in this order
    /// of preference.
    pub async fn start(nodes: Vec<Upstream>) -> std::io::Result<Failover> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections: Arc<Vec<AtomicU64>> = Arc::new(nodes.iter().map(|_| AtomicU64::new(0)).collect());
        let refused = Arc::new(AtomicU64::new(0));
        let healthy: Arc<Vec<AtomicBool>> = Arc::new(nodes.iter().map(|_| AtomicBool::new(true)).collect());
        let checks = tokio::spawn(check_health(
            nodes.iter().map(|node| node.health.clone()).collect(),
            healthy.clone(),
        ));
        let addrs: Arc<[SocketAddr]> = nodes.iter().map(|node| node.addr).collect();
        let (counts, unanswered) = (connections.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let mut forwarding = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while forwarding.try_join_next().is_some() {}
                let (addrs, healthy) = (addrs.clone(), healthy.clone());
                let (counts, unanswered) = (counts.clone(), unanswered.clone());
                forwarding.spawn(async move {
                    let Some((n, mut outbound)) = choose(&addrs, &healthy).await else {
                        unanswered.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    counts[n].fetch_add(1, Ordering::Relaxed);
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    // Ends when either side closes or fails; dropping both
                    // then closes the other.
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(Failover {
            addr,
            connections,
            refused,
            task,
            checks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections made so far to each node, in the order of preference.
    pub fn connections(&self) -> Vec<u64> {
        self.connections
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Connections no node accepted.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        self.task.abort();
        self.checks.abort();
    }
}

/// The first of `nodes` that is healthy and accepts a connection, else the
/// first that accepts one; and its index.
async fn choose(nodes: &[SocketAddr], healthy: &[AtomicBool]) -> Option<(usize, TcpStream)> {
    for only_healthy in [true, false] {
        for (n, node) in nodes.iter().enumerate() {
            if only_healthy && !healthy[n].load(Ordering::Relaxed) {
                continue;
            }
            if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(node)).await {
                return Some((n, stream));
            }
        }
    }
    None
}

/// Checks every node's health every `CHECK_EVERY`, for as long as the proxy lives.
async fn check_health(urls: Vec<String>, healthy: Arc<Vec<AtomicBool>>) {
    let Ok(client) = reqwest::Client::builder().timeout(CHECK_WITHIN).build() else {
        return;
    };
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let checks = urls.iter().map(|url| {
            let client = &client;
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success())
            }
        });
        for (n, up) in futures::future::join_all(checks).await.into_iter().enumerate() {
            healthy[n].store(up, Ordering::Relaxed);
        }
    }
}
