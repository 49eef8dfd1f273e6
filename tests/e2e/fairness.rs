//! CPU fairness in a `multiplex` worker: guests that keep computing take
//! turns by their services' `cpu_share`, and a client whose guest waits on
//! it is served meanwhile.

use std::time::Duration;

use crate::metrics::{endpoint, value};
use crate::util::{Client, Server, children, conf, guests, thread_names, thread_slices};

/// The turns service `name` took so far.
fn turns(metrics: std::net::SocketAddr, name: &str) -> f64 {
    value(
        metrics,
        &format!(r#"netserver_guest_cpu_turns_total{{service="{name}"}}"#),
    )
}

/// Opens `n` connections to `addr` whose guests spin.
fn spinners(addr: std::net::SocketAddr, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut client = Client::connect(addr);
            client.send(b"spin\n");
            client
        })
        .collect()
}

#[test]
fn computing_services_share_the_cpu_by_weight_and_a_waiting_client_is_served() {
    let toml = conf(
        "fairness.toml",
        &format!(
            r#"
host = "127.0.0.1"
server_type = "multiplex"
metrics_port = "127.0.0.1:0"
cpu_limit = 60

[[service]]
name = "heavy"
module = "{misbehave}"
port = 0
cpu_share = 300

[[service]]
name = "light"
module = "{misbehave}"
port = 0

[[service]]
name = "neighbour"
module = "{echo}"
port = 0
"#,
            misbehave = guests::MISBEHAVE,
            echo = guests::ECHO,
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let metrics = endpoint(&mut server);
    let heavy = server.service_addr("heavy");
    let light = server.service_addr("light");
    let neighbour = server.service_addr("neighbour");

    // Three guests of each service spin; once both take turns, count.
    let _spinning = [spinners(heavy, 3), spinners(light, 3)];
    let start = server.eventually("both services taking turns", || {
        let (h, l) = (turns(metrics, "heavy"), turns(metrics, "light"));
        if h >= 5.0 && l >= 5.0 {
            Ok((h, l))
        } else {
            Err(format!("heavy {h}, light {l}"))
        }
    });
    // Meanwhile a client of a third service is served, as often as it
    // asks: its guest waits on it, and never waits for a turn.
    let mut client = Client::connect(neighbour);
    for i in 0..20 {
        client.send(format!("ping {i}\n").as_bytes());
        assert_eq!(client.read_line(), format!("You said 'ping {i}'\r\n"));
    }
    let (heavy_turns, light_turns) = server.eventually("200 more turns", || {
        let h = turns(metrics, "heavy") - start.0;
        let l = turns(metrics, "light") - start.1;
        if h + l >= 200.0 {
            Ok((h, l))
        } else {
            std::thread::sleep(Duration::from_millis(200));
            Err(format!("heavy {h}, light {l}"))
        }
    });
    // 300 against 100: three turns for one (the lane's own order is
    // exact; the bounds leave room for turns asked for while counting).
    let ratio = heavy_turns / light_turns.max(1.0);
    assert!(
        (2.0..=4.5).contains(&ratio),
        "heavy {heavy_turns} and light {light_turns} turns: ratio {ratio}"
    );
}

#[test]
fn guests_whose_connections_end_while_waiting_for_a_turn_give_it_back() {
    // Idle connections end after a second: spinning guests, which move no
    // byte, end while they wait for their turn or take one.
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--server-type",
        "multiplex",
        "--idle-timeout",
        "1",
        "--metrics-port",
        "127.0.0.1:0",
    ]);
    let metrics = endpoint(&mut server);
    let addr = server.addr;
    let first = spinners(addr, 6);
    server.wait_for_log_lines("idle timeout", 6);
    drop(first);
    // The lane is whole again: a new spinner takes turn after turn (a few
    // are enough to show it: with a slot lost it would take none; it has
    // only its idle second to take them, on a machine maybe busy).
    let before = turns(metrics, "misbehave");
    let _again = spinners(addr, 1);
    server.eventually("the new spinner taking turns", || {
        let now = turns(metrics, "misbehave");
        if now >= before + 5.0 {
            Ok(())
        } else {
            std::thread::sleep(Duration::from_millis(100));
            Err(format!("{before} → {now}"))
        }
    });
    // And a client that waits on its guest is served.
    let mut client = Client::connect(addr);
    client.send(b"hello\n");
    assert_eq!(client.read_line(), "ok hello\r\n");
}

/// Connections of service `name` that began while it was throttled.
fn throttled(metrics: std::net::SocketAddr, name: &str) -> f64 {
    value(
        metrics,
        &format!(r#"netserver_guest_cpu_throttled_total{{service="{name}"}}"#),
    )
}

/// `n` connections to `addr`, one after the other, each asking its guest
/// to trap and read until the server ends it.
fn churn(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        let mut client = Client::connect(addr);
        client.send(b"trap\n");
        client.read_until_closed();
    }
}

#[test]
fn a_service_that_churns_short_connections_is_throttled_only_beside_another() {
    // Each of the churning service's connections computes for far less
    // than a tick (its guest traps at once), so only the time its polls
    // take weighs it. With a share of 1 against 10000 its part of the
    // worker is a few microseconds a window: any churn is over it.
    let toml = conf(
        "fairness-churn.toml",
        &format!(
            r#"
host = "127.0.0.1"
server_type = "multiplex"
metrics_port = "127.0.0.1:0"

[[service]]
name = "churn"
module = "{misbehave}"
port = 0
cpu_share = 1

[[service]]
name = "neighbour"
module = "{echo}"
port = 0
cpu_share = 10000
"#,
            misbehave = guests::MISBEHAVE,
            echo = guests::ECHO,
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let metrics = endpoint(&mut server);
    let churning = server.service_addr("churn");
    let neighbour = server.service_addr("neighbour");

    // Alone on the worker (the neighbour has nothing open), it is never
    // throttled: there is no one to yield to.
    churn(churning, 200);
    assert_eq!(throttled(metrics, "churn"), 0.0);

    // With a neighbour's connection open, it is, and the neighbour is
    // served all along; the churning connections are still served too,
    // in turns.
    let mut client = Client::connect(neighbour);
    let mut round = 0;
    server.eventually("the churning service throttled", || {
        churn(churning, 50);
        round += 1;
        client.send(format!("ping {round}\n").as_bytes());
        assert_eq!(client.read_line(), format!("You said 'ping {round}'\r\n"));
        let n = throttled(metrics, "churn");
        if n > 0.0 {
            Ok(n)
        } else {
            Err(format!("{round} rounds of 50"))
        }
    });
    assert_eq!(throttled(metrics, "neighbour"), 0.0);

    // Meanwhile its tasks were set aside: polled on a thread of their own,
    // which asks for the kernel's longest slice, while the worker's own
    // threads keep the default (where the kernel reports slices).
    let [worker] = children(server.pid())[..] else {
        panic!("one worker: {:?}", children(server.pid()));
    };
    let names = thread_names(worker);
    assert!(
        names.iter().any(|n| n == "netserver-aside"),
        "threads of the worker: {names:?}"
    );
    let slices = thread_slices(worker);
    for (thread, slice) in &slices {
        match thread.as_str() {
            "netserver-aside" => assert_eq!(*slice, 100_000_000, "{slices:?}"),
            "netserver-worke" => assert_ne!(*slice, 100_000_000, "{slices:?}"),
            _ => {}
        }
    }
    // And the neighbour is served still.
    client.send(b"after\n");
    assert_eq!(client.read_line(), "You said 'after'\r\n");
}
