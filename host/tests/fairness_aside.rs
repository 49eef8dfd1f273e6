//! A throttled service's tasks are polled on the threads set aside, and
//! come back to the worker's threads once it is no longer throttled (see
//! `fairness`), with the lane installed as a `multiplex` worker installs it.
//! A test binary of its own: a process installs its lane once.

use std::time::{Duration, Instant};

use netserver_host::fairness;
use tokio::sync::{mpsc, oneshot, watch};

/// The name of the thread the caller runs on.
fn thread() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// Waits until a poll reports running on thread `name`.
async fn polled_on(polls: &mut mpsc::UnboundedReceiver<String>, name: &str) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(thread) = polls.recv().await {
            if thread == name {
                return;
            }
            seen.push(thread);
        }
    })
    .await;
    seen.dedup();
    assert!(found.is_ok(), "never polled on {name}; polled on {seen:?}");
}

#[test]
fn a_throttled_services_tasks_are_set_aside_until_it_is_no_longer() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("netserver-worker")
        .build()
        .unwrap();
    // Service 0 weighs 1, service 1 10000: service 0's fair part is a few
    // microseconds a window, so computing at all, beside an open task of
    // service 1, throttles it.
    fairness::install(2, vec![1, 10_000], runtime.handle().clone());
    runtime.block_on(async {
        let (polls_tx, mut polls) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let busy = fairness::spawn(async move {
            fairness::enter(0).await;
            let mut polls = 0u64;
            while !*stop.borrow() {
                let until = Instant::now() + Duration::from_micros(500);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                polls += 1;
                let _ = polls_tx.send(thread());
                tokio::task::yield_now().await;
            }
            polls
        });
        // A heavy guest of it: at each tick it asks the lane for its next
        // turn (as `wasm::state` makes a guest that computed through a
        // tick), so between its polls it is always waiting in the lane.
        let (heavy_tx, mut heavy_polls) = mpsc::unbounded_channel();
        let (heavy_stop_tx, heavy_stop) = watch::channel(false);
        let heavy = fairness::spawn(async move {
            fairness::enter(0).await;
            while !*heavy_stop.borrow() {
                let until = Instant::now() + Duration::from_micros(500);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                let _ = heavy_tx.send(thread());
                match fairness::turn(0) {
                    Some(turn) => turn.await,
                    None => tokio::task::yield_now().await,
                }
            }
        });
        // Alone, it stays on the worker's threads.
        polled_on(&mut polls, "netserver-worker").await;

        // Beside a task of service 1, it is throttled and set aside.
        let (close, closed) = oneshot::channel::<()>();
        let neighbour = fairness::spawn(async move {
            fairness::enter(1).await;
            let _ = closed.await;
            thread()
        });
        polled_on(&mut polls, "netserver-aside").await;
        // So is the heavy guest, which waits in the lane between polls.
        polled_on(&mut heavy_polls, "netserver-aside").await;
        // A task of it that panics there panics as it would at home.
        let panics = fairness::spawn(async {
            fairness::enter(0).await;
            assert_eq!(thread(), "netserver-aside");
            panic!("a guest's host code panicked");
        });
        assert!(panics.await.unwrap_err().is_panic());

        // Once that task ends it is no longer throttled, and comes back.
        close.send(()).unwrap();
        assert_eq!(neighbour.await.unwrap(), "netserver-worker");
        polled_on(&mut polls, "netserver-worker").await;
        polled_on(&mut heavy_polls, "netserver-worker").await;

        // It ends where it is, with its output.
        stop_tx.send(true).unwrap();
        assert!(busy.await.unwrap() > 0);
        heavy_stop_tx.send(true).unwrap();
        heavy.await.unwrap();
    });
}
