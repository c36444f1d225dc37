//! Which URLs may be fetched: http or https, no credentials, and a host that
//! is either a name (the resolver checks what it resolves to) or an address
//! the guard permits. The same check runs on the first URL and on every
//! redirect.
//!
//! URLs are parsed as browsers do (WHATWG): a host written as `0x7f.1`,
//! `2130706433` or `0177.0.0.1` is the address 127.0.0.1, and is checked as
//! that address. An address-literal host never reaches the resolver.

use url::{Host, Url};

use crate::error::{BadUrl, FetchError};
use crate::guard::AddressGuard;

/// Parses what the caller sent as a URL to fetch, and checks it.
pub(crate) fn parse(raw: &str, guard: &AddressGuard) -> Result<Url, FetchError> {
    let url = Url::parse(raw.trim()).map_err(|_| FetchError::BadUrl(BadUrl::Invalid))?;
    check(&url, guard)?;
    Ok(url)
}

/// Refuses a URL that may not be fetched.
pub(crate) fn check(url: &Url, guard: &AddressGuard) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl(BadUrl::Scheme));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::BadUrl(BadUrl::Credentials));
    }
    let address = match url.host() {
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(v4)) => v4.into(),
        Some(Host::Ipv6(v6)) => v6.into(),
        None => return Err(FetchError::BadUrl(BadUrl::Invalid)),
    };
    let verdict = guard.verdict(address);
    if verdict.permits() {
        Ok(())
    } else {
        tracing::warn!(%address, ?verdict, "fetch by URL refused: the host is an address not allowed");
        Err(FetchError::DeniedAddress)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn guard() -> AddressGuard {
        AddressGuard::new(Vec::new(), Vec::new())
    }

    /// The host of `url` as parsed, and whether it may be fetched.
    fn host_and_check(url: &str) -> (Option<IpAddr>, Result<(), FetchError>) {
        let parsed = Url::parse(url).unwrap();
        let address = match parsed.host() {
            Some(Host::Ipv4(v4)) => Some(v4.into()),
            Some(Host::Ipv6(v6)) => Some(v6.into()),
            _ => None,
        };
        (address, parse(url, &guard()).map(|_| ()))
    }

    /// Octal, hexadecimal, integer and shortened spellings are the
    /// addresses they spell, and are refused as those.
    #[test]
    fn every_spelling_of_a_denied_address_is_that_address() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        for url in [
            "http://127.0.0.1/a.png",
            "http://0x7f.1/a.png",
            "http://0x7f000001/a.png",
            "http://2130706433/a.png",
            "http://0177.0.0.1/a.png",
            "http://0177.0.0.01/a.png",
            "http://127.1/a.png",
            "http://127.0.1/a.png",
            "http://0x7F.0.0.1/a.png",
            "http://127.0.0.1./a.png",
            "https://0x7f.1:8443/a.png",
        ] {
            assert_eq!(
                host_and_check(url),
                (Some(loopback), Err(FetchError::DeniedAddress)),
                "{url}"
            );
        }
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/latest/meta-data/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
        ] {
            assert_eq!(
                host_and_check(url),
                (Some(metadata), Err(FetchError::DeniedAddress)),
                "{url}"
            );
        }
        for (url, address) in [
            ("http://0/", "0.0.0.0"),
            ("http://[::1]/", "::1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
            ("http://[0:0:0:0:0:0:0:1]/", "::1"),
            ("http://[fe80::1]/", "fe80::1"),
            ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::169.254.169.254"),
        ] {
            assert_eq!(
                host_and_check(url),
                (Some(address.parse().unwrap()), Err(FetchError::DeniedAddress)),
                "{url}"
            );
        }
        // A public address passes, however it is spelled.
        assert_eq!(
            host_and_check("http://0x8.0x8.0x8.0x8/"),
            (Some("8.8.8.8".parse().unwrap()), Ok(()))
        );
        assert_eq!(
            host_and_check("http://134744072/"),
            (Some("8.8.8.8".parse().unwrap()), Ok(()))
        );
    }

    #[test]
    fn only_http_and_https_without_credentials() {
        let refused = |url: &str| parse(url, &guard()).unwrap_err();
        for url in [
            "ftp://example.com/a.png",
            "file:///etc/passwd",
            "gopher://example.com/",
            "data:image/png;base64,iVBORw0KGgo=",
            "javascript:alert(1)",
        ] {
            assert_eq!(refused(url), FetchError::BadUrl(BadUrl::Scheme), "{url}");
        }
        for url in [
            "https://user@example.com/a.png",
            "https://user:secret@example.com/a.png",
            "https://:secret@example.com/a.png",
        ] {
            assert_eq!(refused(url), FetchError::BadUrl(BadUrl::Credentials), "{url}");
        }
        for url in [
            "",
            "example.com/a.png",
            "https://",
            "http://exa mple.com/",
            "not a url",
        ] {
            assert_eq!(refused(url), FetchError::BadUrl(BadUrl::Invalid), "{url:?}");
        }
        assert!(parse(" https://example.com/a.png\r\n", &guard()).is_ok());
        assert!(parse("HTTP://EXAMPLE.COM/a.png", &guard()).is_ok());
    }
}
