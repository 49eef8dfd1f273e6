//! The server: bind, start the runtime, accept until told to stop.
//!
//! This is the `multiplex` personality: one process serving many connections
//! at once, each in its own instance, on a tokio runtime created after
//! binding (and, in the forking personalities to come, after the fork).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::connection;
use crate::listen::{self, Bound};
use crate::wasm::Handler;
use crate::wasm::engine::EPOCH_TICK;

/// One service ready to serve: its handler and its bound sockets.
struct Service {
    handler: Arc<Handler>,
    bound: Vec<Bound>,
    max_instances: u32,
    idle_timeout: Duration,
}

/// Binds every service's sockets, then serves until INT or TERM.
/// `handlers` are the services' handlers, in the order of
/// `config.services`.
pub fn serve(config: Config, handlers: Vec<Handler>) -> Result<()> {
    let mut services = Vec::new();
    for (service, handler) in config.services.iter().zip(handlers) {
        services.push(Service {
            handler: Arc::new(handler),
            bound: listen::bind_all(&service.listeners)?,
            max_instances: service.max_instances,
            idle_timeout: service.idle_timeout,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("netserver-worker")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(services))
}

async fn run(services: Vec<Service>) -> Result<()> {
    let mut stop = Stop::new()?;
    let Some(first) = services.first() else {
        return Ok(());
    };
    // Every service's handler shares one engine: one ticker.
    let ticker = tokio::spawn(tick_epochs(first.handler.engine().clone()));
    let mut loops = tokio::task::JoinSet::new();
    for service in services {
        // Each service has its own cap: one tenant's clients cannot take
        // another's places.
        let permits = Arc::new(Semaphore::new(service.max_instances as usize));
        let addrs: Vec<String> = service.bound.iter().map(|b| b.addr.to_string()).collect();
        for b in service.bound {
            let listener = TcpListener::from_std(b.socket)?;
            loops.spawn(accept_loop(
                listener,
                service.handler.clone(),
                permits.clone(),
                service.idle_timeout,
            ));
        }
        let handler = &service.handler;
        tracing::info!(
            "Serving {} ({}) as service {} on {}",
            handler.source(),
            handler.kind(),
            handler.service_name(),
            addrs.join(", ")
        );
    }
    let signal = stop.recv().await;
    tracing::info!("Received {signal}: server closing");
    loops.shutdown().await;
    ticker.abort();
    Ok(())
}

/// Advances the engine's epoch every [`EPOCH_TICK`]: one ticker per engine,
/// never a timer per connection.
async fn tick_epochs(engine: wasmtime::Engine) {
    let mut interval = tokio::time::interval(EPOCH_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        engine.increment_epoch();
    }
}

/// Accepts on one socket while a permit (a place among the concurrent
/// instances) is free; further clients wait in the backlog.
async fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                // Replies are written whole by the guest: send them at once.
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection::serve(
                    handler.clone(),
                    stream,
                    idle_timeout,
                    permit,
                ));
            }
            Err(err) => {
                // Out of descriptors, or a client that reset before accept:
                // log, back off briefly, keep serving.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The signals that stop the server.
struct Stop {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "INT",
            _ = self.term.recv() => "TERM",
        }
    }
}
