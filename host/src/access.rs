//! Access rules, evaluated as Net::Server's `allow_deny` does: `deny`, then
//! `cidr_deny`, then `allow`, then `cidr_allow`; once any rule exists, a
//! client that matches none is refused.
//!
//! Unlike Net::Server, a pattern must match the *whole* address or host
//! name (`a|b` means either one), and an IPv4-mapped IPv6 peer
//! (`::ffff:192.0.2.1`) is matched as the IPv4 address by every rule. Host
//! names are matched only with `reverse_lookups` (and, with
//! `double_reverse_lookups`, only a name that resolves back to the client).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Result, anyhow};
use ipnet::IpNet;
use regex::Regex;

use crate::config::AccessConfig;

/// How long a reverse (or forward) lookup may take before the client is
/// judged without a host name.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// One service's compiled rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    deny: Vec<Pattern>,
    cidr_deny: Vec<IpNet>,
    allow: Vec<Pattern>,
    cidr_allow: Vec<IpNet>,
    allow_uid: Vec<u32>,
    /// Look up the client's host name (for the patterns, the log and the
    /// guest).
    pub reverse_lookups: bool,
    /// Trust a looked-up name only when it resolves back to the client.
    pub double_reverse_lookups: bool,
}

/// A pattern as written, and compiled to match whole strings.
#[derive(Clone, Debug)]
struct Pattern {
    written: String,
    regex: Regex,
}

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// An IP client, with its host name when one was looked up.
    Ip {
        /// Its address.
        addr: IpAddr,
        /// Its (verified) host name.
        host: Option<&'a str>,
    },
    /// A unix-socket client, with its uid from `SO_PEERCRED`.
    Unix {
        /// Its user id, when known.
        uid: Option<u32>,
    },
}

/// The decision, and the rule behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Served (`None`: no rule exists).
    Allowed(Option<String>),
    /// Refused, by this rule (or by matching none).
    Denied(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allowed(None) => f.write_str("allowed (no rules)"),
            Self::Allowed(Some(rule)) => write!(f, "allowed by {rule}"),
            Self::Denied(rule) => write!(f, "denied by {rule}"),
        }
    }
}

impl Rules {
    /// Compiles a service's rules (its patterns were checked when the
    /// configuration loaded; an error here names the pattern anyway).
    pub fn new(config: &AccessConfig) -> Result<Self> {
        let patterns = |list: &[String]| -> Result<Vec<Pattern>> {
            list.iter()
                .map(|p| {
                    Ok(Pattern {
                        written: p.clone(),
                        regex: Regex::new(&format!("^(?:{p})$"))
                            .map_err(|e| anyhow!("invalid regex '{p}': {e}"))?,
                    })
                })
                .collect()
        };
        let nets = |list: &[IpNet]| list.iter().copied().map(unmap_net).collect();
        Ok(Self {
            deny: patterns(&config.deny)?,
            cidr_deny: nets(&config.cidr_deny),
            allow: patterns(&config.allow)?,
            cidr_allow: nets(&config.cidr_allow),
            allow_uid: config.allow_uid.clone(),
            reverse_lookups: config.reverse_lookups,
            double_reverse_lookups: config.double_reverse_lookups,
        })
    }

    /// Whether any address rule exists.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.cidr_deny.is_empty()
            && self.allow.is_empty()
            && self.cidr_allow.is_empty()
    }

    /// Judges `peer`.
    pub fn check(&self, peer: Peer<'_>) -> Verdict {
        match peer {
            Peer::Unix { uid } => self.check_unix(uid),
            Peer::Ip { addr, host } => self.check_ip(unmap(addr), host),
        }
    }

    fn check_unix(&self, uid: Option<u32>) -> Verdict {
        // Address rules do not apply to unix peers; `allow_uid` does.
        if self.allow_uid.is_empty() {
            return Verdict::Allowed(None);
        }
        match uid {
            Some(uid) if self.allow_uid.contains(&uid) => {
                Verdict::Allowed(Some(format!("allow_uid {uid}")))
            }
            Some(uid) => Verdict::Denied(format!("allow_uid (uid {uid} is not listed)")),
            None => Verdict::Denied("allow_uid (the peer's uid is unknown)".to_owned()),
        }
    }

    fn check_ip(&self, addr: IpAddr, host: Option<&str>) -> Verdict {
        if self.is_empty() {
            return Verdict::Allowed(None);
        }
        let text = addr.to_string();
        let matches =
            |p: &Pattern| p.regex.is_match(&text) || host.is_some_and(|h| p.regex.is_match(h));
        if let Some(p) = self.deny.iter().find(|p| matches(p)) {
            return Verdict::Denied(format!("deny {}", p.written));
        }
        if let Some(net) = self.cidr_deny.iter().find(|n| n.contains(&addr)) {
            return Verdict::Denied(format!("cidr_deny {net}"));
        }
        if let Some(p) = self.allow.iter().find(|p| matches(p)) {
            return Verdict::Allowed(Some(format!("allow {}", p.written)));
        }
        if let Some(net) = self.cidr_allow.iter().find(|n| n.contains(&addr)) {
            return Verdict::Allowed(Some(format!("cidr_allow {net}")));
        }
        Verdict::Denied("matching no allow or cidr_allow rule".to_owned())
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// A network inside `::ffff:0:0/96` as the IPv4 network it covers.
fn unmap_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        net => net,
    }
}

/// The client's host name, looked up (blocking; run it off the runtime),
/// and with `double` verified to resolve back to `addr`. `None` when there
/// is no name or it does not verify.
pub fn host_name(addr: IpAddr, double: bool) -> Option<String> {
    let addr = unmap(addr);
    let name = dns_lookup::lookup_addr(&addr).ok()?;
    if name == addr.to_string() {
        // getnameinfo gives the address back when there is no name.
        return None;
    }
    if double {
        let back = dns_lookup::lookup_host(&name).ok()?;
        if !back.into_iter().any(|ip| unmap(ip) == addr) {
            tracing::info!("{name} does not resolve back to {addr}: not trusted");
            return None;
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(deny: &[&str], cidr_deny: &[&str], allow: &[&str], cidr_allow: &[&str]) -> Rules {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let nets = |l: &[&str]| l.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>();
        Rules::new(&AccessConfig {
            deny: own(deny),
            cidr_deny: nets(cidr_deny),
            allow: own(allow),
            cidr_allow: nets(cidr_allow),
            ..AccessConfig::default()
        })
        .unwrap()
    }

    fn ip<'a>(addr: &str, host: Option<&'a str>) -> Peer<'a> {
        Peer::Ip {
            addr: addr.parse().unwrap(),
            host,
        }
    }

    #[test]
    fn the_four_lists_in_order() {
        let none = rules(&[], &[], &[], &[]);
        let reference = rules(
            &["a.+"],
            &["192.0.2.4/30"],
            &[r".+\.(net|com)", r"domain\.com"],
            &["127.0.0.0/8", "192.0.2.0/24"],
        );
        let either = rules(&[], &[], &["10.0.0.1|10.0.0.2"], &[]);
        let v6 = rules(&[], &["2001:db8:bad::/48"], &[], &["2001:db8::/32"]);
        let mapped_rule = rules(&[], &[], &[], &["::ffff:10.0.0.0/104"]);
        let allowed = |rule: &str| Verdict::Allowed(Some(rule.to_owned()));
        let denied = |rule: &str| Verdict::Denied(rule.to_owned());
        let no_match = denied("matching no allow or cidr_allow rule");
        let cases: Vec<(&Rules, Peer, Verdict)> = vec![
            (&none, ip("203.0.113.9", None), Verdict::Allowed(None)),
            (
                &reference,
                ip("127.0.0.1", None),
                allowed("cidr_allow 127.0.0.0/8"),
            ),
            (
                &reference,
                ip("192.0.2.5", None),
                denied("cidr_deny 192.0.2.4/30"),
            ),
            (
                &reference,
                ip("192.0.2.9", None),
                allowed("cidr_allow 192.0.2.0/24"),
            ),
            (&reference, ip("203.0.113.9", None), no_match.clone()),
            // Host names: allow by name, deny (checked first) by name.
            (
                &reference,
                ip("203.0.113.9", Some("www.example.net")),
                allowed(r"allow .+\.(net|com)"),
            ),
            (
                &reference,
                ip("203.0.113.9", Some("domain.com")),
                allowed(r"allow .+\.(net|com)"),
            ),
            (
                &reference,
                ip("127.0.0.1", Some("attacker.example.net")),
                denied("deny a.+"),
            ),
            // Deny beats allow; cidr_deny beats allow by name.
            (
                &reference,
                ip("192.0.2.5", Some("ok.example.com")),
                denied("cidr_deny 192.0.2.4/30"),
            ),
            // IPv4-mapped peers are their IPv4 address, every spelling.
            (
                &reference,
                ip("::ffff:127.0.0.1", None),
                allowed("cidr_allow 127.0.0.0/8"),
            ),
            (
                &reference,
                ip("::ffff:7f00:1", None),
                allowed("cidr_allow 127.0.0.0/8"),
            ),
            (
                &reference,
                ip("0:0:0:0:0:ffff:c000:205", None),
                denied("cidr_deny 192.0.2.4/30"),
            ),
            (
                &mapped_rule,
                ip("10.1.2.3", None),
                allowed("cidr_allow 10.0.0.0/8"),
            ),
            (
                &mapped_rule,
                ip("::ffff:10.1.2.3", None),
                allowed("cidr_allow 10.0.0.0/8"),
            ),
            // Whole match: `a|b` is either one, and nothing more.
            (
                &either,
                ip("10.0.0.2", None),
                allowed("allow 10.0.0.1|10.0.0.2"),
            ),
            (
                &either,
                ip("10.0.0.1", None),
                allowed("allow 10.0.0.1|10.0.0.2"),
            ),
            (&either, ip("10.0.0.12", None), no_match.clone()),
            (&either, ip("110.0.0.1", None), no_match.clone()),
            // IPv6.
            (
                &v6,
                ip("2001:db8::1", None),
                allowed("cidr_allow 2001:db8::/32"),
            ),
            (
                &v6,
                ip("2001:db8:bad::1", None),
                denied("cidr_deny 2001:db8:bad::/48"),
            ),
            (&v6, ip("::1", None), no_match.clone()),
        ];
        for (rules, peer, want) in cases {
            assert_eq!(rules.check(peer), want, "{peer:?}");
        }
    }

    #[test]
    fn unix_peers_skip_address_rules_and_meet_allow_uid() {
        let reference = rules(&[".*"], &[], &[], &[]);
        assert_eq!(
            reference.check(Peer::Unix { uid: Some(0) }),
            Verdict::Allowed(None)
        );
        let by_uid = Rules::new(&AccessConfig {
            allow_uid: vec![1000, 0],
            ..AccessConfig::default()
        })
        .unwrap();
        let cases = [
            (Some(1000), Verdict::Allowed(Some("allow_uid 1000".into()))),
            (Some(0), Verdict::Allowed(Some("allow_uid 0".into()))),
            (
                Some(65534),
                Verdict::Denied("allow_uid (uid 65534 is not listed)".into()),
            ),
            (
                None,
                Verdict::Denied("allow_uid (the peer's uid is unknown)".into()),
            ),
        ];
        for (uid, want) in cases {
            assert_eq!(by_uid.check(Peer::Unix { uid }), want, "{uid:?}");
        }
    }

    #[test]
    fn host_names_of_loopback() {
        // 127.0.0.1 is `localhost` in /etc/hosts, both ways.
        assert_eq!(
            host_name("127.0.0.1".parse().unwrap(), true).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host_name("::ffff:127.0.0.1".parse().unwrap(), false).as_deref(),
            Some("localhost")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Any valid patterns and networks, any client: a verdict, and a
        /// refusal only when some rule exists.
        #[test]
        fn any_rules_judge_any_client(
            patterns in proptest::collection::vec("[0-9a-z.|*+?()\\\\]{0,10}", 0..4),
            nets in proptest::collection::vec((proptest::num::u32::ANY, 0u8..=32), 0..4),
            addr in proptest::num::u32::ANY,
            v6 in proptest::bool::ANY,
            host in proptest::option::of("[a-z.]{0,20}"),
        ) {
            let patterns: Vec<String> = patterns
                .into_iter()
                .filter(|p| regex::Regex::new(p).is_ok())
                .collect();
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(ip, len)| IpNet::new(std::net::Ipv4Addr::from(ip).into(), len).unwrap())
                .collect();
            let half = patterns.len() / 2;
            let rules = Rules::new(&AccessConfig {
                deny: patterns[..half].to_vec(),
                allow: patterns[half..].to_vec(),
                cidr_allow: nets,
                ..AccessConfig::default()
            })
            .unwrap();
            let ip = std::net::Ipv4Addr::from(addr);
            let addr: IpAddr = if v6 { ip.to_ipv6_mapped().into() } else { ip.into() };
            let verdict = rules.check(Peer::Ip { addr, host: host.as_deref() });
            if rules.is_empty() {
                proptest::prop_assert_eq!(verdict, Verdict::Allowed(None));
            }
        }
    }
}
