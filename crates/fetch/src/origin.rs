//! A loopback HTTP/1.1 origin with canned answers, for tests and benchmarks
//! of fetching by URL. It writes its answers byte for byte (so it can also
//! lie about a length, stall, or never answer) and counts the connections
//! it accepts, so that a test can show a refused fetch never connected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Longest request head read.
const HEAD_LIMIT: usize = 64 * 1024;
/// Pieces a chunked body is sent in.
const CHUNK: usize = 64 * 1024;

/// What the origin answers to one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with `Content-Length`, these extra header lines, and this body.
    File {
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// 200 without `Content-Length`: the body chunked, in 64 KiB pieces.
    Chunked { body: Bytes },
    /// This status and an empty body.
    Status(u16),
    /// 302 to this `Location`.
    Redirect(String),
    /// 200 declaring `declared` bytes, then `body` (fewer), then the
    /// connection is closed.
    Short { declared: u64, body: Bytes },
    /// 200 declaring `declared` bytes, then `body` (fewer), then nothing
    /// more until the client goes away.
    Stall { declared: u64, body: Bytes },
    /// The connection is accepted and never answered.
    Silent,
}

impl Answer {
    /// 200 with the body and no other header.
    pub fn file(body: impl Into<Bytes>) -> Answer {
        Answer::File {
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// 200 with the body and one more header line.
    pub fn file_with(name: &str, value: &str, body: impl Into<Bytes>) -> Answer {
        Answer::File {
            headers: vec![(name.to_owned(), value.to_owned())],
            body: body.into(),
        }
    }
}

type Route = dyn Fn(&str) -> Answer + Send + Sync;

/// A running origin; it stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// On a free port of 127.0.0.1, answering each request's path with `route`.
    pub async fn start(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Origin {
        Origin::bind("127.0.0.1:0".parse().unwrap(), route)
            .await
            .expect("bind a loopback port")
    }

    /// On `addr` (a loopback address).
    pub async fn bind(
        addr: SocketAddr,
        route: impl Fn(&str) -> Answer + Send + Sync + 'static,
    ) -> std::io::Result<Origin> {
        assert!(addr.ip().is_loopback(), "the origin serves loopback only");
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let (counted, recorded) = (connections.clone(), heads.clone());
        let task = tokio::spawn(async move {
            // Dropped with this task when the origin stops: every
            // connection still open goes with it.
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                open.spawn(serve(stream, route.clone(), recorded.clone()));
                while open.try_join_next().is_some() {}
            }
        });
        Ok(Origin {
            addr,
            connections,
            heads,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The heads of the requests read so far (request line and headers).
    pub fn request_heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, route: Arc<Route>, heads: Arc<Mutex<Vec<String>>>) {
    let Some(head) = read_head(&mut stream).await else {
        // Not HTTP (a TLS handshake, say): refused as a server would.
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    heads.lock().unwrap().push(head);
    let answer = route(&path);
    let _ = answer_with(&mut stream, answer).await;
}

/// The request head, if the bytes are an HTTP request.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if !head[0].is_ascii_uppercase() || head.len() > HEAD_LIMIT {
            return None;
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return String::from_utf8(head[..end].to_vec()).ok();
        }
    }
}

async fn answer_with(stream: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    let head = |status: &str, lines: &[String]| {
        let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for line in lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    };
    match answer {
        Answer::File { headers, body } => {
            let mut lines = vec![format!("Content-Length: {}", body.len())];
            lines.extend(headers.iter().map(|(name, value)| format!("{name}: {value}")));
            stream.write_all(&head("200 OK", &lines)).await?;
            stream.write_all(&body).await?;
        }
        Answer::Chunked { body } => {
            stream
                .write_all(&head("200 OK", &["Transfer-Encoding: chunked".into()]))
                .await?;
            for piece in body.chunks(CHUNK) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                stream.write_all(piece).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Answer::Status(code) => {
            let status = format!("{code} Status");
            stream
                .write_all(&head(&status, &["Content-Length: 0".into()]))
                .await?;
        }
        Answer::Redirect(location) => {
            let lines = [format!("Location: {location}"), "Content-Length: 0".into()];
            stream.write_all(&head("302 Found", &lines)).await?;
        }
        Answer::Short { declared, body } => {
            let lines = [format!("Content-Length: {declared}")];
            stream.write_all(&head("200 OK", &lines)).await?;
            stream.write_all(&body).await?;
        }
        Answer::Stall { declared, body } => {
            let lines = [format!("Content-Length: {declared}")];
            stream.write_all(&head("200 OK", &lines)).await?;
            stream.write_all(&body).await?;
            stream.flush().await?;
            wait_for_close(stream).await;
        }
        Answer::Silent => wait_for_close(stream).await,
    }
    stream.shutdown().await
}

/// Holds the connection until the client closes it.
async fn wait_for_close(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}
