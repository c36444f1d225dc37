//! The run's own Garage, on loopback: one node started with
//! `--single-node --default-bucket` (as `scripts/test-services.sh` starts
//! it), or a cluster of nodes with replication factor 3, each with its own
//! ports and directories, joined, laid out and given the run's key and bucket
//! through Garage's own CLI, as an operator sets one up; each node then
//! lists the others as its bootstrap peers, so that a node started again
//! reconnects at once. A cluster's clients reach it through [`Failover`]
//! proxies, one per client, each preferring a node of its own and checking
//! the nodes' health on their admin API. Node `n` listens for S3 on
//! `base + 3n`, for RPC on the port after and, in a cluster, for its admin
//! API on the next. Dropping a [`Garage`] SIGKILLs every node and proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::failover::{Failover, Upstream};
use crate::services::{ACCESS_KEY, BUCKET, SECRET_KEY, START_WITHIN, tail};

/// Replicas of each object in a cluster: Garage's quorum for reads and
/// writes is then 2, so any one node may be down.
const REPLICATION_FACTOR: usize = 3;
/// Garage's RPC secret; every node of a run shares it, and nothing else
/// listens on the run's ports.
const RPC_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Ports per node: S3, RPC, admin.
const PORTS_PER_NODE: u16 = 3;

/// One Garage node, or a cluster of them.
pub struct Garage {
    nodes: Vec<Node>,
    /// A cluster's proxies: proxy `n` prefers node `n`. None for one node,
    /// whose clients talk to it directly.
    proxies: Vec<Failover>,
    /// Whether the cluster has its layout, key and bucket (made once, on
    /// its first start; they live in the nodes' metadata after that).
    configured: bool,
}

impl Garage {
    /// The ports `nodes` nodes listen on from `base`: S3, RPC and (in a
    /// cluster) admin, per node.
    pub fn ports(base: u16, nodes: usize) -> std::ops::Range<u16> {
        match nodes {
            1 => base..base + 2,
            _ => base..base + PORTS_PER_NODE * nodes as u16,
        }
    }

    /// Writes each node's configuration under `dir` (`garage/` for one
    /// node, `garage/node-N/` for a cluster) and opens a cluster's proxies.
    pub async fn new(dir: &Path, base: u16, nodes: usize) -> anyhow::Result<Garage> {
        anyhow::ensure!(
            nodes == 1 || nodes >= REPLICATION_FACTOR,
            "a Garage cluster needs at least {REPLICATION_FACTOR} nodes"
        );
        let single = nodes == 1;
        let nodes = (0..nodes)
            .map(|n| {
                let home = match single {
                    true => dir.join("garage"),
                    false => dir.join("garage").join(format!("node-{}", n + 1)),
                };
                Node::new(home, base + PORTS_PER_NODE * n as u16, single)
            })
            .collect::<anyhow::Result<Vec<Node>>>()?;
        let mut proxies = Vec::new();
        if !single {
            for first in 0..nodes.len() {
                // Its own node first, then the others in turn.
                let order = (0..nodes.len())
                    .map(|k| {
                        let node = &nodes[(first + k) % nodes.len()];
                        Upstream {
                            addr: node.s3_addr(),
                            health: node.health_url(),
                        }
                    })
                    .collect();
                proxies.push(Failover::start(order).await?);
            }
        }
        Ok(Garage {
            nodes,
            proxies,
            configured: single,
        })
    }

    /// The S3 endpoint for client `n` of the store: the node itself when
    /// there is one; in a cluster, the proxy that prefers node `n`.
    pub fn endpoint_for(&self, client: usize) -> String {
        match self.proxies.is_empty() {
            true => self.nodes[0].endpoint(),
            false => format!("http://{}", self.proxies[client % self.proxies.len()].addr()),
        }
    }

    /// The endpoint of the first client: the one `Services` hands out.
    pub fn endpoint(&self) -> String {
        self.endpoint_for(0)
    }

    /// The proxy that prefers node `n`, for its tally of connections.
    pub fn proxy(&self, n: usize) -> Option<&Failover> {
        self.proxies.get(n)
    }

    /// Starts every node (again) on its data; a new cluster is then joined
    /// and laid out, and gets the run's key and bucket.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.start().await?;
        }
        if !self.configured {
            self.configure().await?;
            self.configured = true;
        }
        Ok(())
    }

    /// SIGKILLs every node, as a crash of the whole store would.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// SIGKILLs node `n` (0-based) alone.
    pub fn kill_node(&mut self, n: usize) {
        self.nodes[n].kill();
    }

    /// Starts node `n` again on its data; returns once its S3 API answers.
    pub async fn start_node(&mut self, n: usize) -> anyhow::Result<()> {
        self.nodes[n].start().await
    }

    /// Waits until every node sees every other one connected again (its
    /// `/health` says "fully operational", not just "operational"): until
    /// then, a second node lost could leave some partition without its
    /// quorum.
    pub async fn wait_whole(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let mut whole = true;
            for node in &self.nodes {
                let answer = match client.get(node.health_url()).send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                whole &= answer.contains("fully operational");
            }
            if whole {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster was not whole again within {START_WITHIN:?}:\n{}",
                    self.nodes[0].cli(&["status"]).await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Joins the nodes, gives each 1 GB in one zone, applies the layout, and
    /// makes the run's key and bucket: `garage node connect`, `layout
    /// assign`, `layout apply`, `key import`, `bucket create`, `bucket allow`.
    async fn configure(&mut self) -> anyhow::Result<()> {
        let first = &self.nodes[0];
        let mut ids = Vec::new();
        for node in &self.nodes {
            // `<hex id>@<rpc address>`
            let id = node.cli(&["node", "id", "-q"]).await?;
            ids.push(id.trim().to_owned());
        }
        for id in &ids[1..] {
            first.cli(&["node", "connect", id]).await?;
        }
        for id in &ids {
            let hex = id.split('@').next().unwrap_or(id);
            first
                .cli(&["layout", "assign", "-z", "dc1", "-c", "1G", hex])
                .await?;
        }
        first.cli(&["layout", "apply", "--version", "1"]).await?;
        // Right after the layout, a node may not yet have it: retry the
        // first metadata writes until the cluster takes them.
        let deadline = Instant::now() + START_WITHIN;
        loop {
            match first
                .cli(&["key", "import", "--yes", "-n", "chaos", ACCESS_KEY, SECRET_KEY])
                .await
            {
                Ok(_) => break,
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        first.cli(&["bucket", "create", BUCKET]).await?;
        first
            .cli(&[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", ACCESS_KEY,
            ])
            .await?;
        // From their next start on, each node dials the others itself.
        for (n, node) in self.nodes.iter_mut().enumerate() {
            node.peers = ids
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != n)
                .map(|(_, id)| id.clone())
                .collect();
            node.write_config()?;
        }
        Ok(())
    }
}

/// The Garage binary: `$GARAGE`, else `~/.cargo/bin/garage` (where
/// `scripts/test-services.sh` installs it), else `garage` on the PATH.
fn binary() -> PathBuf {
    std::env::var_os("GARAGE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin/garage")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("garage"))
}

/// One `garage server` process and its files.
struct Node {
    home: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3: u16,
    /// Started `--single-node --default-bucket`, not as a cluster member.
    single: bool,
    /// The other nodes, `<id>@<address>`, once the cluster is made.
    peers: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn new(home: PathBuf, s3: u16, single: bool) -> anyhow::Result<Node> {
        std::fs::create_dir_all(home.join("meta"))?;
        std::fs::create_dir_all(home.join("data"))?;
        let node = Node {
            config: home.join("garage.toml"),
            log: home.join("garage.log"),
            home,
            s3,
            single,
            peers: Vec::new(),
            child: None,
        };
        node.write_config()?;
        Ok(node)
    }

    /// The node's configuration, read at each start.
    fn write_config(&self) -> anyhow::Result<()> {
        let (rpc, admin) = (self.s3 + 1, self.s3 + 2);
        let replication = if self.single { 1 } else { REPLICATION_FACTOR };
        let peers = self
            .peers
            .iter()
            .map(|peer| format!("{peer:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut config = format!(
            r#"metadata_dir = "{home}/meta"
data_dir = "{home}/data"
db_engine = "sqlite"
replication_factor = {replication}
# Blobs arrive encrypted: compressing them only burns CPU.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{RPC_SECRET}"
bootstrap_peers = [{peers}]

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
            home = self.home.display(),
            s3 = self.s3,
        );
        if !self.single {
            config.push_str(&format!("\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n"));
        }
        std::fs::write(&self.config, config)?;
        Ok(())
    }

    /// Garage's health check for load balancers (cluster nodes only).
    fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.s3 + 2)
    }

    fn s3_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.s3))
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.s3_addr())
    }

    /// Starts the node (again) on the same data; returns once its S3 API answers.
    async fn start(&mut self) -> anyhow::Result<()> {
        let binary = binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&binary);
        command.arg("-c").arg(&self.config).arg("server");
        if self.single {
            command
                .args(["--single-node", "--default-bucket"])
                .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
                .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
                .env("GARAGE_DEFAULT_BUCKET", BUCKET);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (scripts/test-services.sh installs it)",
                    binary.display()
                )
            })?;
        self.child = Some(child);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            // Any HTTP answer (403 to an anonymous request) means the API is up.
            if client.get(self.endpoint()).send().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("garage exited at start ({status}):\n{}", tail(&self.log, 20));
            }
            if Instant::now() > deadline {
                bail!(
                    "garage did not answer on {}:\n{}",
                    self.endpoint(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `garage -c <this node's configuration> ARGS`; its stdout.
    async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running garage")?;
        if !output.status.success() {
            bail!(
                "garage {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
