//! The sandbox's cost per connection: make an instance from the pre-linked
//! `InstancePre` (pooling allocator), run an empty `process-request`, drop it.
//!
//! Run: `cargo bench -p netserver-host --bench sandbox`.

use criterion::{Criterion, criterion_group, criterion_main};
use netserver_host::cli::Cli;
use netserver_host::client::ClientInfo;
use netserver_host::config::Config;
use netserver_host::wasm::Handler;
use netserver_host::wasm::stdio::GuestIo;

/// The server's allocator (see `main.rs`): a connection's Store, instance
/// and WASI context are allocated and freed as they are in the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Generated: a constant per guest, not every one used here.
#[allow(dead_code)]
mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

fn handler(module: &str) -> Handler {
    let cli = Cli::try_parse_from(["netserver-host", "--module", module]).expect("arguments");
    let config = Config::resolve(cli.settings, cli.conf_file.as_deref()).expect("config");
    netserver_host::load_handlers(&config)
        .expect("handler")
        .remove(0)
}

fn per_connection(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = ClientInfo::tcp(
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:20203".parse().unwrap(),
        "bench".into(),
    );
    let noop = handler(guests::NOOP);
    c.bench_function("instantiate, empty process-request, drop", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut instance = noop
                .instantiate(GuestIo::default(), Some(&client))
                .await
                .unwrap();
            instance.process_request().await.unwrap().unwrap();
        })
    });
    let echo = handler(guests::ECHO);
    // The host calls each hook in turn; those echo leaves at the SDK's
    // default say at their first call that they do nothing, and from then
    // on cost only the check (see `wasm::hints`), as in the server.
    c.bench_function(
        "instantiate echo, a connection's hooks at end of input, drop",
        |b| {
            b.to_async(&runtime).iter(|| async {
                let mut instance = echo
                    .instantiate(GuestIo::default(), Some(&client))
                    .await
                    .unwrap();
                instance.child_init_hook().await.unwrap();
                instance.post_accept_hook().await.unwrap();
                assert!(instance.allow_deny_hook().await.unwrap());
                instance.process_request().await.unwrap().unwrap();
                instance.post_process_request_hook().await.unwrap();
                instance.post_client_connection_hook().await.unwrap();
                instance.child_finish_hook().await.unwrap();
            })
        },
    );
}

criterion_group!(benches, per_connection);
criterion_main!(benches);
