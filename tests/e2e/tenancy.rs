//! Tenant processes (`isolation process`): a service with worker processes
//! of its own shares no process with the other services. A worker of one
//! group killed outright ends only its group's connections, and the master
//! replaces it; HUP, TTIN and TTOU act on every group; a service may run
//! as its own user. (Its configuration errors are snapshot tests: see
//! `tests/config/invalid/isolation-*`.)

use std::net::SocketAddr;

use crate::privileges::{NOBODY, ids};
use crate::util::{
    Client, PATIENCE, Server, SteadyLoad, children, conf, fresh_dir, guests, kill, per_personality,
    require_root, thread_slices,
};

/// A conf file with two echo services on ports of their own: `plain`,
/// shared, and `tenant`, with processes of its own; `top` and `tenant`
/// are more lines for the top level and the tenant's table.
fn two_tenants(name: &str, top: &str, tenant: &str) -> String {
    two_tenants_serving(name, top, guests::ECHO, tenant)
}

/// As [`two_tenants`], the tenant serving `module`.
fn two_tenants_serving(name: &str, top: &str, module: &str, tenant: &str) -> String {
    let text = format!(
        r#"
host = "127.0.0.1"
{top}

[[service]]
name = "plain"
module = "{echo}"
port = 0

[[service]]
name = "tenant"
module = "{module}"
port = 0
isolation = "process"
{tenant}
"#,
        echo = guests::ECHO
    );
    conf(&format!("tenancy-{name}.toml"), &text)
}

/// Starts the server of `conf` as `personality` (with `extra` arguments);
/// returns it and the addresses of `plain` and `tenant`.
fn start(personality: &str, conf: &str, extra: &[&str]) -> (Server, SocketAddr, SocketAddr) {
    let args = [
        &["--conf-file", conf, "--server-type", personality][..],
        extra,
    ]
    .concat();
    let mut server = Server::start_args(&args);
    let plain = service_addr(&mut server, "plain");
    let tenant = service_addr(&mut server, "tenant");
    (server, plain, tenant)
}

/// The address a service is served on, from its `Serving … as service
/// NAME on ADDR` line.
fn service_addr(server: &mut Server, name: &str) -> SocketAddr {
    let line = server.wait_for_log(&format!("as service {name} on "));
    line.rsplit(" on ").next().unwrap().parse().unwrap()
}

/// What `ps` shows of process `pid`.
fn cmdline(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The server's children whose title starts with the words `title`
/// (`worker tenant`, `child plain busy`).
fn titled(server: &Server, title: &str) -> Vec<u32> {
    let prefix = format!("netserver-host: {title}");
    children(server.pid())
        .into_iter()
        .filter(|&pid| {
            let shown = cmdline(pid);
            let rest = shown.strip_prefix(&prefix);
            rest.is_some_and(|r| r.starts_with([' ', '\0']))
        })
        .collect()
}

/// Waits until `n` of the server's children are titled `title`; returns
/// them.
fn wait_titled(server: &Server, title: &str, n: usize) -> Vec<u32> {
    server.eventually(&format!("{n} processes titled {title:?}"), || {
        let found = titled(server, title);
        if found.len() == n {
            Ok(found)
        } else {
            let all: Vec<String> = children(server.pid()).into_iter().map(cmdline).collect();
            Err(format!("{all:?}"))
        }
    })
}

/// A client that says `line` on an open connection gets it back.
fn says(client: &mut Client, line: &str) {
    client.send(format!("{line}\n").as_bytes());
    assert_eq!(client.read_line(), format!("You said '{line}'\r\n"));
}

/// A new client of `addr` is served.
fn answers(addr: SocketAddr) {
    let mut client = Client::connect(addr);
    client.send(b"hi\nquit\n");
    assert_eq!(client.read_all(), "You said 'hi'\r\nYou said 'quit'\r\n");
}

/// Killing every worker of one group (`victim`, a service name) outright
/// ends the open connection it served and no other: the other service's
/// client, connected before and after, goes on being served. The master
/// logs which service's worker ended and replaces it; the victim's service
/// then answers again.
fn a_killed_worker_ends_only_its_groups_connections(personality: &str, victim: &str) {
    let conf = two_tenants(&format!("kill-{personality}-{victim}"), "", "");
    let pool = ["--min-servers", "1", "--max-servers", "2"];
    let (mut server, plain, tenant) = start(personality, &conf, &pool);
    let (victim_addr, other_addr, other) = match victim {
        "tenant" => (tenant, plain, "plain"),
        _ => (plain, tenant, "tenant"),
    };
    let mut doomed = Client::connect(victim_addr);
    says(&mut doomed, "before");
    let mut survivor = Client::connect(other_addr);
    says(&mut survivor, "before");
    let victims = titled(&server, &format!("worker {victim}"));
    assert!(!victims.is_empty(), "{personality}: no {victim} worker");
    let others = titled(&server, &format!("worker {other}"));
    for pid in &victims {
        assert!(kill("KILL", *pid), "kill -9 {pid}");
    }
    for pid in &victims {
        let who = match victim {
            "tenant" => format!("worker {pid} of service tenant"),
            _ => format!("shared worker {pid}"),
        };
        server.wait_for_log(&format!(
            "{who} ended unexpectedly (signal SIGKILL); replacing it"
        ));
    }
    // The victim's connection ended with its process.
    assert_eq!(doomed.read_until_closed(), b"", "{personality}");
    // The other group's: untouched, its process too.
    says(&mut survivor, "after");
    answers(other_addr);
    assert!(
        others
            .iter()
            .all(|pid| titled(&server, &format!("worker {other}")).contains(pid)),
        "{personality}: the {other} workers {others:?} were replaced too"
    );
    // Replaced: the victim's service answers again.
    answers(victim_addr);
    let now = titled(&server, &format!("worker {victim}"));
    assert!(
        !now.is_empty() && now.iter().all(|pid| !victims.contains(pid)),
        "{personality}: {victim} workers {now:?}, killed {victims:?}"
    );
    says(&mut survivor, "still");
}
per_personality!(a_killed_worker_ends_only_its_groups_connections:
    multiplex("tenant"),
    prefork("tenant"),
    shared_worker as multiplex("plain"),
    shared_prefork_child as prefork("plain"),
);

/// Each group has its number of workers: the tenant's own `workers`, the
/// shared workers the server's. TTIN gives every group one more, TTOU one
/// fewer (never below one), and the log says each group's.
#[test]
fn ttin_and_ttou_change_every_groups_number() {
    let conf = two_tenants("ttin", "", "workers = 2");
    let (mut server, plain, tenant) = start("multiplex", &conf, &[]);
    wait_titled(&server, "worker plain", 1);
    wait_titled(&server, "worker tenant", 2);
    server.signal("TTIN");
    server.wait_for_log("Received TTIN: increasing workers to 2 (shared), 3 (service tenant)");
    wait_titled(&server, "worker plain", 2);
    wait_titled(&server, "worker tenant", 3);
    // One at a time: two signals of a kind sent at once may arrive as one.
    server.signal("TTOU");
    server.wait_for_log("Received TTOU: decreasing workers to 1 (shared), 2 (service tenant)");
    server.signal("TTOU");
    server.wait_for_log("Received TTOU: decreasing workers to 1 (shared), 1 (service tenant)");
    wait_titled(&server, "worker plain", 1);
    wait_titled(&server, "worker tenant", 1);
    answers(plain);
    answers(tenant);
}

/// Across a HUP under a steady load on both services, no client of either
/// fails; the new master starts both groups and the old workers of both
/// finish.
#[test]
fn hup_with_a_group_of_its_own_loses_no_client() {
    let conf = two_tenants("hup", "", "");
    let (mut server, plain, tenant) = start("multiplex", &conf, &[]);
    let old: Vec<u32> = [
        wait_titled(&server, "worker plain", 1),
        wait_titled(&server, "worker tenant", 1),
    ]
    .concat();
    let load = SteadyLoad::start(move |i| {
        let addr = if i % 2 == 0 { plain } else { tenant };
        let mut client = Client::connect(addr);
        client.send(b"ping\nquit\n");
        match client.read_all() {
            reply if reply == "You said 'ping'\r\nYou said 'quit'\r\n" => Ok(()),
            reply => Err(format!("({addr}): {reply:?}")),
        }
    });
    load.wait_for_more(&server, "load before the HUP", 20);
    server.signal("HUP");
    server.wait_for_log_lines("(inherited across a restart)", 2);
    // The old workers of both groups finish; new ones serve.
    server.eventually("the old workers to finish", || {
        children(server.pid()).iter().all(|pid| !old.contains(pid))
    });
    wait_titled(&server, "worker plain", 1);
    wait_titled(&server, "worker tenant", 1);
    load.wait_for_more(&server, "load after the HUP", 20);
    load.stop_and_check("connections across the HUP");
}

/// As root, with the server's `user daemon` and the tenant's own `user
/// nobody`: the master stays root (to start each worker as its user), the
/// shared workers run as daemon, the tenant's as nobody — every id, and
/// the tenant's own group. In `fork` the child serving a tenant's client
/// does.
fn a_tenant_runs_as_its_own_user(personality: &str) {
    if !require_root() {
        return;
    }
    let conf = two_tenants(
        &format!("user-{personality}"),
        r#"user = "daemon""#,
        r#"user = "nobody""#,
    );
    let pool = ["--min-servers", "1", "--max-servers", "2"];
    let (mut server, plain, tenant) = start(personality, &conf, &pool);
    server
        .wait_for_log("The master stays root: the workers of service tenant run as their own user");
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    let daemon = daemon.uid.as_raw();
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .map_or(NOBODY, |g| g.gid.as_raw());
    let all = |id: u32| vec![id; 4];
    // The process serving each service's client, busy with it.
    let (mut a, mut b) = (Client::connect(plain), Client::connect(tenant));
    says(&mut a, "who");
    says(&mut b, "who");
    let what = if personality == "fork" {
        "child"
    } else {
        "worker"
    };
    let shared = wait_titled(&server, &format!("{what} plain busy"), 1)[0];
    let own = wait_titled(&server, &format!("{what} tenant busy"), 1)[0];
    assert_eq!(ids(server.pid()).0, all(0), "{personality}: the master");
    assert_eq!(
        ids(shared),
        (all(daemon), all(nogroup), vec![nogroup]),
        "{personality}: the shared process"
    );
    let nobody_gid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(
        ids(own),
        (all(NOBODY), all(nobody_gid), vec![nobody_gid]),
        "{personality}: the tenant's process"
    );
    says(&mut a, "again");
    says(&mut b, "again");
}
per_personality!(a_tenant_runs_as_its_own_user: multiplex, prefork, fork);

/// Without a service's own user, processes of its own change nothing of
/// who runs as whom: as root, the master and every worker become nobody,
/// as without them.
#[test]
fn processes_of_its_own_alone_keep_no_privilege() {
    if !require_root() {
        return;
    }
    let conf = two_tenants("no-own-user", "", "");
    let (server, plain, tenant) = start("multiplex", &conf, &[]);
    answers(plain);
    answers(tenant);
    let nobody = |pid: u32| ids(pid).0 == vec![NOBODY; 4];
    assert!(nobody(server.pid()), "the master");
    for title in ["worker plain", "worker tenant"] {
        let pid = wait_titled(&server, title, 1)[0];
        assert!(nobody(pid), "{title}");
    }
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("The master stays root")),
        "{:?}",
        server.log()
    );
}

/// In `single` each group has its one process; both answer.
#[test]
fn single_has_one_process_per_group() {
    let conf = two_tenants("single", "", "");
    let (server, plain, tenant) = start("single", &conf, &[]);
    wait_titled(&server, "worker plain", 1);
    wait_titled(&server, "worker tenant", 1);
    answers(plain);
    answers(tenant);
    assert_eq!(children(server.pid()).len(), 2);
}

/// In `fork` a service's own `max_servers` caps its children at once: a
/// second client of the tenant waits in the backlog while the first holds
/// its only child, the other service is served meanwhile, and the second
/// is served once the first leaves.
#[test]
fn fork_caps_a_services_children_at_its_own_max_servers() {
    let conf = two_tenants("fork-cap", "", "max_servers = 1");
    let (server, plain, tenant) = start("fork", &conf, &[]);
    let mut first = Client::connect(tenant);
    says(&mut first, "first");
    let mut second = Client::connect(tenant);
    second.send(b"second\n");
    // The other service gets children of its own meanwhile.
    answers(plain);
    answers(plain);
    assert_eq!(titled(&server, "child tenant").len(), 1);
    first.send(b"quit\n");
    assert_eq!(first.read_all(), "You said 'quit'\r\n");
    assert_eq!(second.read_line(), "You said 'second'\r\n");
    wait_titled(&server, "child tenant", 1);
}

/// In `inetd` the one process serving the connection runs as the served
/// service's own user (the first service's), not the server's.
#[test]
fn inetd_runs_as_the_services_own_user() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    if !require_root() {
        return;
    }
    let dir = fresh_dir("tenancy", "inetd");
    let conf = dir.join("inetd.toml");
    let text = format!(
        "user = \"daemon\"\n\n[[service]]\nname = \"tenant\"\nmodule = \"{}\"\nisolation = \"process\"\nuser = \"nobody\"\n",
        guests::ECHO
    );
    std::fs::write(&conf, text).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let out = accepted.try_clone().unwrap();
    let mut server = Command::new(crate::util::BIN)
        .args(["--server-type", "inetd", "--conf-file"])
        .arg(&conf)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(accepted)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    client.write_all(b"hi\n").unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "You said 'hi'\r\n");
    // Serving, as the tenant's user.
    let (uids, _, _) = ids(server.id());
    client.write_all(b"quit\n").unwrap();
    let status = server.wait().unwrap();
    assert_eq!(uids, vec![NOBODY; 4]);
    assert!(status.success());
}

/// A tenant's worker that keeps a CPU busy asks for 100 ms slices (all its
/// threads but the epoch ticker), while the shared worker keeps the
/// kernel's default and goes on answering; once its guest stops computing
/// (trapped at its `cpu_limit`), the worker asks for the default again.
#[test]
fn a_busy_tenant_asks_for_long_slices_until_it_is_quiet_again() {
    let toml = two_tenants_serving("busy", "log_level = 4", guests::MISBEHAVE, "cpu_limit = 2");
    let (mut server, plain, tenant) = start("multiplex", &toml, &[]);
    let [tenant_worker] = wait_titled(&server, "worker tenant", 1)[..] else {
        unreachable!()
    };
    let [plain_worker] = wait_titled(&server, "worker plain", 1)[..] else {
        unreachable!()
    };
    let default = thread_slices(plain_worker).first().map(|(_, s)| *s);
    let mut spinner = Client::connect(tenant);
    spinner.send(b"spin\n");
    server.wait_for_log("busy: slices of 100ms");
    answers(plain);
    if let Some(default) = default {
        for (thread, slice) in thread_slices(tenant_worker) {
            let want = if thread == "netserver-epoch" {
                default
            } else {
                100_000_000
            };
            assert_eq!(slice, want, "tenant thread {thread}");
        }
        for (thread, slice) in thread_slices(plain_worker) {
            assert_eq!(slice, default, "plain thread {thread}");
        }
    }
    // The guest is stopped at its cpu_limit; the worker, quiet again,
    // asks for the default.
    server.wait_for_log("quiet again: the default slice");
    if let Some(default) = default {
        for (thread, slice) in thread_slices(tenant_worker) {
            assert_eq!(slice, default, "tenant thread {thread}, quiet");
        }
    }
    answers(plain);
    drop(spinner);
}
