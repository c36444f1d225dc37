//! Bounds on open connections: in all, and per client (an IPv4 address or
//! an IPv6 /64, as the lock-outs count them). Each connection holds a file
//! descriptor and a task until its client closes it or a timeout does, and
//! a client can keep one open with a request a header timeout. Unbounded,
//! one client opening connections took every descriptor the process had:
//! every other client was refused at `accept`, and the service's own
//! connections to its stores and files failed too. Past a bound a new
//! connection is answered at once, without reading its request, and closed:
//! 429 past the client's share, 503 past the total.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

/// How many connections may be open at once.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// In all.
    pub total: usize,
    /// From one client; `exempt` peers count only in the total.
    pub per_client: usize,
    /// Peers that carry many clients' requests: `server.trusted_proxies`.
    pub exempt: Vec<IpNet>,
}

impl ConnectionLimits {
    /// These limits, the total lowered if need be to leave `reserved` of
    /// the process's `open_files` descriptors for its own work (stores,
    /// files, logs): connections must not take those either.
    pub fn within_open_files(mut self, open_files: u64, reserved: u64) -> ConnectionLimits {
        let room = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
        if self.total > room {
            tracing::warn!(
                max_connections = self.total,
                open_files,
                reserved,
                "the open-file limit leaves room for fewer connections than server.max_connections; \
                 raise the limit (ulimit -n) to serve that many"
            );
            self.total = room.max(1);
            self.per_client = self.per_client.min(self.total);
        }
        self
    }
}

/// The connections open now, against their limits.
pub struct Connections {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only clients with a connection open: at most `total` entries.
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client has `per_client` open.
    Client,
    /// `total` are open.
    Total,
}

impl Refused {
    /// The label of `mediavault_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Client => "client",
            Refused::Total => "total",
        }
    }

    /// The whole answer to a refused connection: the service's error shape,
    /// sent before the request is read, and the connection closed.
    pub fn response(self) -> &'static [u8] {
        match self {
            Refused::Client => concat!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n",
                "Retry-After: 1\r\nConnection: close\r\nContent-Length: 68\r\n\r\n",
                r#"{"status":"error","message":"Too many connections from this client"}"#
            )
            .as_bytes(),
            Refused::Total => concat!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n",
                "Retry-After: 1\r\nConnection: close\r\nContent-Length: 68\r\n\r\n",
                r#"{"status":"error","message":"Too many connections; try again later"}"#
            )
            .as_bytes(),
        }
    }
}

/// One admitted connection; it stops counting when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    /// `None` for an exempt peer.
    client: Option<IpAddr>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    /// Counts a connection from `peer`, unless a limit is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refused> {
        let client = (!self.is_exempt(peer)).then(|| client_of(peer));
        let mut open = self.lock();
        if let Some(client) = client
            && open.per_client.get(&client).copied().unwrap_or(0) >= self.limits.per_client
        {
            return Err(Refused::Client);
        }
        if open.total >= self.limits.total {
            return Err(Refused::Total);
        }
        open.total += 1;
        if let Some(client) = client {
            *open.per_client.entry(client).or_default() += 1;
        }
        metrics::gauge!("mediavault_connections_open").set(open.total as f64);
        Ok(Admitted {
            connections: self.clone(),
            client,
        })
    }

    fn is_exempt(&self, peer: IpAddr) -> bool {
        let canonical = peer.to_canonical();
        self.limits
            .exempt
            .iter()
            .any(|net| net.contains(&peer) || net.contains(&canonical))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total -= 1;
        if let Some(client) = self.client
            && let Some(count) = open.per_client.get_mut(&client)
        {
            *count -= 1;
            if *count == 0 {
                open.per_client.remove(&client);
            }
        }
        metrics::gauge!("mediavault_connections_open").set(open.total as f64);
    }
}

/// A client as the limits count it: an IPv4 address (one seen as an
/// IPv4-mapped IPv6 address too), or an IPv6 /64, within which a client
/// picks any address it likes.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
    }
}

/// Raises the soft limit on open files to the hard one, as a server that
/// holds a descriptor per connection needs (the soft limit is often 1,024,
/// for programs that never open many), and returns the limit then in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let Some(current) = limit.current else {
        return u64::MAX;
    };
    match limit.maximum {
        Some(maximum) if maximum > current => {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => maximum,
                Err(error) => {
                    tracing::warn!(%error, "could not raise the open-file limit");
                    current
                }
            }
        }
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(total: usize, per_client: usize) -> Arc<Connections> {
        Connections::new(ConnectionLimits {
            total,
            per_client,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
        })
    }

    #[test]
    fn each_client_has_its_share_and_all_share_the_total() {
        let connections = limits(5, 2);
        let a1 = connections.admit(ip("192.0.2.1")).unwrap();
        let _a2 = connections.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            connections.admit(ip("192.0.2.1")).err(),
            Some(Refused::Client),
            "one client, however its address is written"
        );
        let _b = connections.admit(ip("2001:db8::1")).unwrap();
        let _b2 = connections.admit(ip("2001:db8::ffff")).unwrap();
        assert_eq!(
            connections.admit(ip("2001:db8::2")).err(),
            Some(Refused::Client),
            "one /64, one client"
        );
        // A proxy carries many clients: it counts in the total alone.
        let _proxy = connections.admit(ip("10.1.2.3")).unwrap();
        assert_eq!(connections.admit(ip("10.1.2.3")).err(), Some(Refused::Total));
        assert_eq!(connections.admit(ip("198.51.100.7")).err(), Some(Refused::Total));
        drop(a1);
        let _a = connections.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(connections.lock().per_client.len(), 2);
    }

    #[test]
    fn descriptors_the_service_needs_are_left_to_it() {
        let wanted = ConnectionLimits {
            total: 8192,
            per_client: 512,
            exempt: Vec::new(),
        };
        let fitted = wanted.clone().within_open_files(1024, 704);
        assert_eq!((fitted.total, fitted.per_client), (320, 320));
        let fitted = wanted.within_open_files(1_048_576, 704);
        assert_eq!((fitted.total, fitted.per_client), (8192, 512));
    }

    #[test]
    fn a_client_with_nothing_open_takes_no_room() {
        let connections = limits(10, 10);
        for n in 0..1000u32 {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from_bits(0xc000_0200 + n));
            drop(connections.admit(peer).unwrap());
        }
        let open = connections.lock();
        assert_eq!((open.total, open.per_client.len()), (0, 0));
    }

    #[test]
    fn the_refusals_are_whole_responses() {
        for refused in [Refused::Client, Refused::Total] {
            let text = std::str::from_utf8(refused.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), length, "{text}");
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["status"], "error");
        }
    }
}
