//! The per-Store state: one struct, a field per capability, built in one
//! place ([`State::new`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{
    ClientHost, HookHintsHost, LogHost, PropertiesHost, WitClientInfo, WitLevel,
};
use super::hints::{Hook, IdleHooks};
use super::sandbox::CpuMeter;
use super::stdio::{GuestIo, GuestStderr};
use crate::client::ClientInfo;
use crate::config::Grants;

/// What a service gives every one of its instances.
#[derive(Debug)]
pub struct Service {
    /// The service name.
    pub name: Arc<str>,
    /// The properties handed to the handler.
    pub properties: BTreeMap<String, String>,
    /// What its guests are granted beyond their client.
    pub grants: Grants,
    /// The hooks its handler said do nothing, which are no longer called.
    pub idle_hooks: IdleHooks,
}

/// The data of one instance's Store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory and instance limits of this Store.
    pub limits: StoreLimits,
    /// CPU used since the guest last waited (see [`super::sandbox`]).
    pub cpu: CpuMeter,
    /// The client being served, during the connection hooks.
    pub client: Option<ClientInfo>,
    /// The slot connecting stdin and stdout to the client.
    pub io: GuestIo,
    service: Arc<Service>,
}

impl State {
    /// The state of a new instance of `service`: stdin and stdout reach the
    /// client through `io`, stderr goes to the log; the environment is
    /// `env` and the service's granted variables, nothing of the host's;
    /// the only directories and networks are the service's grants.
    pub fn new(
        service: Arc<Service>,
        io: GuestIo,
        env: &[(&str, String)],
        limits: StoreLimits,
        cpu: CpuMeter,
    ) -> anyhow::Result<Self> {
        let mut builder = WasiCtx::builder();
        builder
            .stdin(io.stdin())
            .stdout(io.stdout())
            .stderr(GuestStderr::default())
            .envs(env)
            .envs(&service.grants.env);
        super::grants::apply(&mut builder, &service.grants)?;
        let wasi = builder.build();
        Ok(Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            cpu,
            client: None,
            io,
            service,
        })
    }

    /// Whether the handler said `hook` does nothing, so it is not called.
    pub fn skips(&self, hook: Hook) -> bool {
        self.service.idle_hooks.contains(hook)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ClientHost for State {
    fn info(&mut self) -> Option<WitClientInfo> {
        self.client.as_ref().map(|c| WitClientInfo {
            peer_addr: c.peer.ip().to_string(),
            peer_port: c.peer.port(),
            local_addr: c.local.ip().to_string(),
            local_port: c.local.port(),
            proto: c.proto.to_owned(),
            peer_host: c.peer_host.clone(),
            service: c.service.to_string(),
        })
    }
}

impl LogHost for State {
    fn log(&mut self, level: WitLevel, message: String) {
        for line in message.lines() {
            match level {
                WitLevel::Err => tracing::error!(target: "guest", "{line}"),
                WitLevel::Warning => tracing::warn!(target: "guest", "{line}"),
                WitLevel::Notice => tracing::info!(target: "guest", "{line}"),
                WitLevel::Info => tracing::debug!(target: "guest", "{line}"),
                WitLevel::Debug => tracing::trace!(target: "guest", "{line}"),
            }
        }
    }

    fn enabled(&mut self, level: WitLevel) -> bool {
        match level {
            WitLevel::Err => tracing::enabled!(target: "guest", tracing::Level::ERROR),
            WitLevel::Warning => tracing::enabled!(target: "guest", tracing::Level::WARN),
            WitLevel::Notice => tracing::enabled!(target: "guest", tracing::Level::INFO),
            WitLevel::Info => tracing::enabled!(target: "guest", tracing::Level::DEBUG),
            WitLevel::Debug => tracing::enabled!(target: "guest", tracing::Level::TRACE),
        }
    }
}

impl HookHintsHost for State {
    fn does_nothing(&mut self, hook: Hook) {
        if self.service.idle_hooks.insert(hook) {
            tracing::debug!(
                "service {}: {hook} does nothing; it is no longer called",
                self.service.name
            );
        }
    }
}

impl PropertiesHost for State {
    fn get(&mut self, key: String) -> Option<String> {
        self.service.properties.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.service
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
