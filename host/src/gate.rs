//! What a connection passes before the guest sees it: the PROXY header
//! (from `proxy_from` only), the per-address limits (`max_conn_per_ip`,
//! `max_rate_per_ip`), the host-name lookup and the access rules. One
//! [`Gate`] per service and worker process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Result;
use ipnet::IpNet;

use crate::access::{self, Rules, Verdict};
use crate::client::{ClientInfo, Peer};
use crate::config::ServiceConfig;
use crate::rate::TokenBucket;

/// A service's admission policy.
#[derive(Debug)]
pub struct Gate {
    rules: Rules,
    proxy_from: Vec<IpNet>,
    limits: Option<Arc<PerAddress>>,
}

impl Gate {
    /// The policy `config` describes.
    pub fn new(config: &ServiceConfig) -> Result<Self> {
        let limited = config.max_conn_per_ip > 0 || config.max_rate_per_ip > 0;
        Ok(Self {
            rules: Rules::new(&config.access)?,
            proxy_from: config.proxy_from.clone(),
            limits: limited.then(|| {
                Arc::new(PerAddress {
                    max_open: config.max_conn_per_ip,
                    rate: config.max_rate_per_ip,
                    table: Mutex::default(),
                })
            }),
        })
    }

    /// Whether a connection from `peer` must start with a PROXY header
    /// (only an IP peer can be a proxy in `proxy_from`).
    pub fn expects_proxy_header(&self, peer: &Peer) -> bool {
        let Some(addr) = peer.ip_addr() else {
            return false;
        };
        let addr = access::unmap(addr);
        self.proxy_from.iter().any(|net| net.contains(&addr))
    }

    /// Takes a place for a connection from `client` under the per-address
    /// limits; the place is given back when the returned value drops. The
    /// error says which limit refused it. A unix-socket client has no
    /// address: the limits count IP clients only.
    pub fn admit(&self, client: &Peer) -> Result<Option<Place>, String> {
        match (&self.limits, client.ip_addr()) {
            (Some(limits), Some(addr)) => limits.admit(access::unmap(addr)).map(Some),
            _ => Ok(None),
        }
    }

    /// Looks the client's host name up when the rules want it (stored in
    /// `client` for the log and the guest), then applies the rules.
    pub async fn judge(&self, client: &mut ClientInfo) -> Verdict {
        let Some(addr) = client.peer.ip_addr() else {
            return self.rules.check(access::Peer::Unix {
                uid: client.peer.uid(),
            });
        };
        if self.rules.reverse_lookups {
            let double = self.rules.double_reverse_lookups;
            let lookup = tokio::task::spawn_blocking(move || access::host_name(addr, double));
            client.peer_host = match tokio::time::timeout(access::LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(name)) => name,
                Ok(Err(_)) => None,
                Err(_) => {
                    tracing::info!(
                        "no host name for {addr} within {}s",
                        access::LOOKUP_TIMEOUT.as_secs()
                    );
                    None
                }
            };
        }
        self.rules.check(access::Peer::Ip {
            addr,
            host: client.peer_host.as_deref(),
        })
    }
}

/// The per-address limits and what each address holds now.
#[derive(Debug)]
struct PerAddress {
    /// Connections open at once (0: any number).
    max_open: u32,
    /// New connections per second, in bursts of as many (0: any rate).
    rate: u32,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_address: HashMap<IpAddr, Usage>,
    swept: Option<Instant>,
}

/// One address's open connections and its rate allowance.
#[derive(Debug)]
struct Usage {
    open: u32,
    /// New connections it may still open now.
    allowance: TokenBucket,
}

/// The table is swept of idle addresses once it holds this many.
const SWEEP_ABOVE: usize = 1024;

impl PerAddress {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is consistent between statements: a panic elsewhere
        // cannot leave it half-updated.
        self.table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Place, String> {
        let now = Instant::now();
        let rate = self.rate;
        let mut table = self.table();
        if table.by_address.len() >= SWEEP_ABOVE
            && table
                .swept
                .is_none_or(|at| now.duration_since(at).as_secs() >= 1)
        {
            table.swept = Some(now);
            table.by_address.retain(|_, usage| {
                usage.allowance.refill(now, rate);
                usage.open > 0 || (rate > 0 && !usage.allowance.is_full(rate))
            });
        }
        let usage = table.by_address.entry(addr).or_insert(Usage {
            open: 0,
            allowance: TokenBucket::full(rate, now),
        });
        if self.max_open > 0 && usage.open >= self.max_open {
            return Err(format!(
                "{addr} already has {} connections open (max_conn_per_ip {})",
                usage.open, self.max_open
            ));
        }
        if rate > 0 && !usage.allowance.take(now, rate) {
            return Err(format!(
                "{addr} opens connections faster than max_rate_per_ip {rate} per second"
            ));
        }
        usage.open += 1;
        Ok(Place {
            limits: self.clone(),
            addr,
        })
    }
}

/// A connection's place under the per-address limits, given back on drop.
#[derive(Debug)]
pub struct Place {
    limits: Arc<PerAddress>,
    addr: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut table = self.limits.table();
        if let Some(usage) = table.by_address.get_mut(&self.addr) {
            usage.open = usage.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_open: u32, rate: u32) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max_open,
            rate,
            table: Mutex::default(),
        })
    }

    #[test]
    fn concurrent_connections_per_address() {
        let limits = limits(2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        let refused = limits.admit(a).unwrap_err();
        assert!(refused.contains("max_conn_per_ip 2"), "{refused}");
        // Another address is not affected.
        let _other = limits.admit(b).unwrap();
        drop(first);
        let _again = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_err());
    }

    #[test]
    fn rate_per_address() {
        let limits = limits(0, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            drop(limits.admit(a).unwrap());
        }
        let refused = limits.admit(a).unwrap_err();
        assert!(refused.contains("max_rate_per_ip 3"), "{refused}");
        assert!(limits.admit("192.0.2.9".parse().unwrap()).is_ok());
        // A second later the allowance is back (set the clock back rather
        // than sleeping).
        {
            let mut table = limits.table();
            let usage = table.by_address.get_mut(&a).unwrap();
            usage.allowance.set_back(std::time::Duration::from_secs(1));
        }
        for _ in 0..3 {
            drop(limits.admit(a).unwrap());
        }
        assert!(limits.admit(a).is_err());
    }

    #[test]
    fn idle_addresses_are_swept() {
        let limits = limits(1, 0);
        for i in 0..SWEEP_ABOVE as u32 + 10 {
            drop(limits.admit(IpAddr::from(i.to_be_bytes())).unwrap());
        }
        assert!(limits.table().by_address.len() <= SWEEP_ABOVE);
    }
}
