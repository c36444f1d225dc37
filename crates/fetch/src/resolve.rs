//! Name resolution with the guard in it. reqwest asks [`GuardedResolver`]
//! for a host's addresses once per connection and connects only to what it
//! answers; it answers only the addresses the guard permits. The address
//! checked is thus the address connected to: no second look-up happens in
//! between that DNS could answer differently (DNS rebinding).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::FetchError;
use crate::guard::AddressGuard;

/// The addresses of a host, as a resolver's future.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Where names are resolved. [`SystemResolver`] in service; tests put a
/// resolver of their own in its place.
pub trait Resolver: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> Lookup;
}

/// The operating system's resolver (getaddrinfo, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// A resolver whose answers the guard has filtered.
pub(crate) struct GuardedResolver {
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) guard: Arc<AddressGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.resolver.lookup(name.as_str());
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addresses = lookup.await.map_err(|error| {
                tracing::info!(host, %error, "fetch by URL: the host name did not resolve");
                FetchError::Dns
            })?;
            if addresses.is_empty() {
                tracing::info!(host, "fetch by URL: the host name has no addresses");
                return Err(FetchError::Dns.into());
            }
            let (permitted, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                addresses.into_iter().partition(|a| guard.permits(*a));
            if !refused.is_empty() {
                tracing::warn!(host, ?refused, "fetch by URL: addresses not allowed left out");
            }
            if permitted.is_empty() {
                return Err(FetchError::DeniedName.into());
            }
            // Port 0 stands for the URL's port (or its scheme's).
            let addrs: Addrs = Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
