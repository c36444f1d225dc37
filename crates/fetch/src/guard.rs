//! The address guard: which addresses a fetch may connect to. Every address
//! a connection could go to passes through [`AddressGuard::verdict`]: each
//! address a name resolves to, and each IP-literal host, on every hop.
//!
//! Precedence, strongest first:
//! 1. `deny_networks`: never connected to, whatever else says;
//! 2. `allow_networks`: connected to, though a default range holds it;
//! 3. the default ranges ([`DEFAULT_DENIED`]): refused;
//! 4. anything else (the public internet): connected to.
//!
//! An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-translated,
//! IPv4-compatible, NAT64 or 6to4) reaches that IPv4 address, so it is judged
//! as both: each step above looks at the address as written and at the IPv4
//! address in it. The local-use NAT64 prefix is a default range instead: where
//! its IPv4 address sits depends on the network's own prefix length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The ranges refused unless `allow_networks` opens them, and why: none of
/// them is a public file server, and several are where a server's own
/// neighbours live (its loopback, its private network, the cloud metadata
/// service at 169.254.169.254).
pub const DEFAULT_DENIED: &[(&str, &str)] = &[
    (
        "0.0.0.0/8",
        "\"this network\", with the unspecified address 0.0.0.0",
    ),
    ("10.0.0.0/8", "private network (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local, with cloud metadata services (169.254.169.254)",
    ),
    ("172.16.0.0/12", "private network (RFC 1918)"),
    (
        "192.0.0.0/24",
        "IETF protocol assignments, with a cloud metadata service (192.0.0.192)",
    ),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.168.0.0/16", "private network (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "IPv6 unspecified"),
    ("::1/128", "IPv6 loopback"),
    (
        "64:ff9b:1::/48",
        "local-use NAT64 (RFC 8215): it reaches IPv4 addresses that cannot be read from it",
    ),
    (
        "2001::/32",
        "Teredo (RFC 4380): a tunnel to an IPv4 address hidden in the IPv6 one",
    ),
    ("2001:db8::/32", "IPv6 documentation"),
    ("3fff::/20", "IPv6 documentation (RFC 9637)"),
    ("fc00::/7", "IPv6 unique local (ULA)"),
    ("fe80::/10", "IPv6 link-local"),
    ("ff00::/8", "IPv6 multicast"),
];

/// What the guard decided about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A public address: no rule holds it.
    Allowed,
    /// `allow_networks` holds it (and `deny_networks` does not).
    Opened,
    /// `deny_networks` holds it.
    Closed,
    /// A default range holds it; the range's description.
    Reserved(&'static str),
}

impl Verdict {
    pub fn permits(self) -> bool {
        matches!(self, Verdict::Allowed | Verdict::Opened)
    }
}

/// The default ranges with the operator's networks over them.
#[derive(Debug, Clone)]
pub struct AddressGuard {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    defaults: Vec<(IpNet, &'static str)>,
}

impl AddressGuard {
    pub fn new(allow_networks: Vec<IpNet>, deny_networks: Vec<IpNet>) -> AddressGuard {
        let defaults = DEFAULT_DENIED
            .iter()
            .map(|(net, why)| (net.parse().expect("the default ranges parse"), *why))
            .collect();
        AddressGuard {
            allow: allow_networks,
            deny: deny_networks,
            defaults,
        }
    }

    pub fn permits(&self, address: IpAddr) -> bool {
        self.verdict(address).permits()
    }

    pub fn verdict(&self, address: IpAddr) -> Verdict {
        let forms = forms(address);
        let held_by = |nets: &[IpNet]| forms.iter().flatten().any(|a| nets.iter().any(|n| n.contains(a)));
        if held_by(&self.deny) {
            return Verdict::Closed;
        }
        if held_by(&self.allow) {
            return Verdict::Opened;
        }
        for (net, why) in &self.defaults {
            if forms.iter().flatten().any(|a| net.contains(a)) {
                return Verdict::Reserved(why);
            }
        }
        Verdict::Allowed
    }
}

/// The address, and the IPv4 address an IPv6 one carries, if it does.
fn forms(address: IpAddr) -> [Option<IpAddr>; 2] {
    let embedded = match address {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
    };
    [Some(address), embedded]
}

/// The IPv4 address that traffic to `v6` reaches: IPv4-mapped
/// (`::ffff:a.b.c.d`, which a dual-stack socket sends as IPv4),
/// IPv4-translated (`::ffff:0:a.b.c.d`, translated by SIIT, RFC 7915),
/// IPv4-compatible (`::a.b.c.d`, deprecated, still tunnelled by some hosts),
/// NAT64 (`64:ff9b::a.b.c.d`, translated by the network) and 6to4
/// (`2002:AABB:CCDD::/48`, relayed to a.b.c.d).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(from(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AddressGuard {
        AddressGuard::new(Vec::new(), Vec::new())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text} is an address"))
    }

    /// Every default range, its first and last address, and the addresses
    /// just outside it (allowed, unless the next range begins there).
    #[test]
    fn the_default_ranges_deny_exactly_their_addresses() {
        let table: &[(&str, bool)] = &[
            // 0.0.0.0/8
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("1.0.0.0", true),
            // 10.0.0.0/8
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("10.255.255.255", false),
            ("11.0.0.0", true),
            // 100.64.0.0/10
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            // 127.0.0.0/8
            ("126.255.255.255", true),
            ("127.0.0.0", false),
            ("127.0.0.1", false),
            ("127.255.255.255", false),
            ("128.0.0.0", true),
            // 169.254.0.0/16
            ("169.253.255.255", true),
            ("169.254.0.0", false),
            ("169.254.169.254", false),
            ("169.254.255.255", false),
            ("169.255.0.0", true),
            // 172.16.0.0/12
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            // 192.0.0.0/24
            ("191.255.255.255", true),
            ("192.0.0.0", false),
            ("192.0.0.192", false),
            ("192.0.0.255", false),
            ("192.0.1.0", true),
            // 192.0.2.0/24
            ("192.0.1.255", true),
            ("192.0.2.0", false),
            ("192.0.2.255", false),
            ("192.0.3.0", true),
            // 192.168.0.0/16
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.168.255.255", false),
            ("192.169.0.0", true),
            // 198.18.0.0/15
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            // 198.51.100.0/24
            ("198.51.99.255", true),
            ("198.51.100.0", false),
            ("198.51.100.255", false),
            ("198.51.101.0", true),
            // 203.0.113.0/24
            ("203.0.112.255", true),
            ("203.0.113.0", false),
            ("203.0.113.255", false),
            ("203.0.114.0", true),
            // 224.0.0.0/4, then 240.0.0.0/4 up to the broadcast address
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.254", false),
            ("255.255.255.255", false),
            // Public IPv4 addresses
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            // ::/128 and ::1/128
            ("::", false),
            ("::1", false),
            // (::2 to ::ffff:ffff are IPv4-compatible: see the next test.)
            ("::1:0:0:0", true),
            // 64:ff9b:1::/48, whatever IPv4 address it seems to carry
            ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", true),
            ("64:ff9b:1::", false),
            ("64:ff9b:1::7f00:1", false),
            ("64:ff9b:1::808:808", false),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", false),
            ("64:ff9b:2::", true),
            // 2001:db8::/32
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", true),
            // 2001::/32 (Teredo; its client 127.0.0.1, obfuscated)
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001::", false),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", false),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:1::", true),
            ("2001:db8::", false),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db9::", true),
            // 3fff::/20
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("3fff::", false),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("3fff:1000::", true),
            // fc00::/7
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fc00::", false),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe00::", true),
            // fe80::/10
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fe80::", false),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fec0::", true),
            // ff00::/8
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("ff00::", false),
            ("ff02::1", false),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            // Public IPv6 addresses
            ("2606:4700:4700::1111", true),
            ("2a00:1450:4001:80b::200e", true),
        ];
        let guard = guard();
        for (address, allowed) in table {
            assert_eq!(guard.permits(ip(address)), *allowed, "{address}");
        }
        // Every default range is in the table, by its first address.
        for (net, _) in DEFAULT_DENIED {
            let first = net.parse::<IpNet>().unwrap().network();
            assert!(
                table.iter().any(|(a, _)| ip(a) == first),
                "{net} has no case in the table"
            );
        }
    }

    /// An IPv6 address that reaches an IPv4 one is judged by it, in each of
    /// the forms that carry one.
    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_as_those() {
        let guard = guard();
        let table: &[(&str, bool)] = &[
            // IPv4-mapped
            ("::ffff:127.0.0.1", false),
            ("::ffff:7f00:1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:0.0.0.0", false),
            ("::ffff:192.0.0.192", false),
            ("::ffff:8.8.8.8", true),
            // IPv4-translated
            ("::ffff:0:7f00:1", false),
            ("::ffff:0:169.254.169.254", false),
            ("::ffff:0:192.0.0.192", false),
            ("::ffff:0:8.8.8.8", true),
            // IPv4-compatible
            ("::2", false),
            ("::127.0.0.1", false),
            ("::192.168.1.1", false),
            ("::8.8.8.8", true),
            // NAT64
            ("64:ff9b::127.0.0.1", false),
            ("64:ff9b::a00:1", false),
            ("64:ff9b::169.254.169.254", false),
            ("64:ff9b::192.0.0.192", false),
            ("64:ff9b::8.8.8.8", true),
            // 6to4: the IPv4 address is the second and third groups.
            ("2002:7f00:1::", false),
            ("2002:a9fe:a9fe::1", false),
            ("2002:c0a8:101:1::1", false),
            ("2002:808:808::1", true),
        ];
        for (address, allowed) in table {
            assert_eq!(guard.permits(ip(address)), *allowed, "{address}");
        }
    }

    /// deny_networks beats allow_networks, which beats the default ranges.
    #[test]
    fn deny_beats_allow_which_beats_the_defaults() {
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let guard = AddressGuard::new(
            vec![net("10.0.0.0/8"), net("127.0.0.1/32"), net("fd00:1::/32")],
            vec![net("10.9.0.0/16"), net("8.8.8.0/24")],
        );
        assert_eq!(guard.verdict(ip("10.1.2.3")), Verdict::Opened);
        assert_eq!(guard.verdict(ip("::ffff:10.1.2.3")), Verdict::Opened);
        assert_eq!(guard.verdict(ip("127.0.0.1")), Verdict::Opened);
        assert_eq!(guard.verdict(ip("fd00:1::5")), Verdict::Opened);
        assert_eq!(guard.verdict(ip("10.9.0.1")), Verdict::Closed, "deny over allow");
        assert_eq!(guard.verdict(ip("64:ff9b::10.9.0.1")), Verdict::Closed);
        assert_eq!(
            guard.verdict(ip("8.8.8.8")),
            Verdict::Closed,
            "deny adds to the defaults"
        );
        assert_eq!(guard.verdict(ip("8.8.4.4")), Verdict::Allowed);
        assert_eq!(
            guard.verdict(ip("127.0.0.2")),
            Verdict::Reserved("loopback"),
            "only what the allow list holds is opened"
        );
        assert_eq!(
            guard.verdict(ip("fd00:2::5")),
            Verdict::Reserved("IPv6 unique local (ULA)")
        );
    }
}
