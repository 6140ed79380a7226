//! CIDR blocks for IpAddress / NotIpAddress, IPv4 and IPv6, with std::net only.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// `203.0.113.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a, Some(l.parse::<u32>().ok()?))
            }
            None => (s, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return None;
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Some(Cidr::V4 {
                    net: u32::from(a) & mask,
                    mask,
                })
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return None;
                }
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                Some(Cidr::V6 {
                    net: u128::from(a) & mask,
                    mask,
                })
            }
        }
    }

    pub(crate) fn contains(&self, ip: &IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(*a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(*a) & mask == *net,
            // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it carries.
            (Cidr::V4 { net, mask }, IpAddr::V6(a)) => {
                a.to_ipv4_mapped().is_some_and(|v4| u32::from(v4) & mask == *net)
            }
            (Cidr::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }
}

/// A request's address: a bare address, or an address with a `/32`-style suffix.
pub(crate) fn parse_request_ip(s: &str) -> Option<IpAddr> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains(&"203.0.113.7".parse().unwrap()));
        assert!(!c.contains(&"203.0.114.7".parse().unwrap()));
        assert!(c.contains(&"::ffff:203.0.113.9".parse().unwrap()));
        let c = Cidr::parse("2001:DB8:1234:5678::/64").unwrap();
        assert!(c.contains(&"2001:db8:1234:5678::1".parse().unwrap()));
        assert!(!c.contains(&"2001:db8:1234:5679::1".parse().unwrap()));
        assert!(!c.contains(&"10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&"8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.1").unwrap().contains(&"10.0.0.1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("10.0.0/8"), None);
        assert_eq!(Cidr::parse("::/129"), None);
        assert_eq!(Cidr::parse("10.0.0.0/"), None);
    }
}
