//! What the host does per connection before the guest, and at start:
//! the access-rule check (Net::Server's reference rules, several peers) and
//! loading a Net::Server conf file into a checked configuration.
//!
//! Run: `cargo bench -p netserver-host --bench admission`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use netserver_host::access::{Peer, Rules};
use netserver_host::cli::Cli;
use netserver_host::config::{AccessConfig, Config};

/// Net::Server's `test.conf` example (tests/config/valid).
const TEST_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/config/valid/net-server-test.conf"
);

fn access_check(c: &mut Criterion) {
    let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let nets = |l: &[&str]| l.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>();
    let rules = Rules::new(&AccessConfig {
        deny: own(&[r"a.+", r"10\.9\.8\.7"]),
        cidr_deny: nets(&["192.0.2.4/30", "2001:db8:bad::/48"]),
        allow: own(&[r".+\.(net|com)", r"domain\.com"]),
        cidr_allow: nets(&["127.0.0.0/8", "192.0.2.0/24", "::ffff:198.51.100.0/120"]),
        ..AccessConfig::default()
    })
    .expect("rules");
    let peers: Vec<(IpAddr, Option<&str>)> = vec![
        ("192.0.2.9".parse().unwrap(), None),
        ("::ffff:198.51.100.7".parse().unwrap(), None),
        ("203.0.113.1".parse().unwrap(), None),
        ("203.0.113.2".parse().unwrap(), Some("mail.example.net")),
    ];
    c.bench_function("access check, 9 rules, 4 peers", |b| {
        b.iter(|| {
            for (addr, host) in &peers {
                black_box(rules.check(Peer::Ip {
                    addr: *addr,
                    host: *host,
                }));
            }
        })
    });
}

fn config_loading(c: &mut Criterion) {
    c.bench_function("load Net::Server's test.conf", |b| {
        b.iter(|| {
            let cli = Cli::try_parse_from(["netserver-host", "--conf-file", TEST_CONF])
                .expect("arguments");
            black_box(Config::resolve(cli.settings, cli.conf_file.as_deref()).expect("config"))
        })
    });
}

criterion_group!(benches, access_check, config_loading);
criterion_main!(benches);
