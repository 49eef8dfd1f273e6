//! The `bindgen!`s of the `netserver:handler` package's worlds: `handler`
//! (Net::Server's hooks) and `mux-handler` (Net::Server::Multiplex's
//! callbacks), which share the `client`, `log`, `properties` and `server`
//! interfaces, and the `server-hooks` export of `server-handler` and
//! `server-mux-handler`, which a guest of either world may add. Generated
//! types stay in this module: the rest of the host uses [`crate::client`]
//! and [`crate::wasm::Level`].

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    // Hooks run on async wasmtime so that a waiting guest never blocks the
    // worker thread; the imports are plain (they never wait).
    exports: { default: async },
});

/// The `mux-handler` world, its shared interfaces those of `handler`.
pub mod mux {
    wasmtime::component::bindgen!({
        world: "mux-handler",
        path: "../wit",
        exports: { default: async },
        with: {
            "netserver:handler/client": super::netserver::handler::client,
            "netserver:handler/log": super::netserver::handler::log,
            "netserver:handler/properties": super::netserver::handler::properties,
            "netserver:handler/server": super::netserver::handler::server,
        },
    });
}

/// The `server-handler` world, for its `server-hooks` export only (looked
/// up apart from the world's other exports: a guest without it is served
/// as before).
pub mod server {
    wasmtime::component::bindgen!({
        world: "server-handler",
        path: "../wit",
        exports: { default: async },
        with: {
            "netserver:handler/client": super::netserver::handler::client,
            "netserver:handler/log": super::netserver::handler::log,
            "netserver:handler/properties": super::netserver::handler::properties,
            "netserver:handler/hook-hints": super::netserver::handler::hook_hints,
            "netserver:handler/server": super::netserver::handler::server,
        },
    });
}

pub use exports::netserver::handler::hooks::Guest as Hooks;
pub use mux::MuxHandler;
pub use mux::MuxHandlerPre;
pub use mux::netserver::handler::connections::Host as ConnectionsHost;
pub use netserver::handler::client::{
    ClientCertificate as WitClientCert, ClientInfo as WitClientInfo, Host as ClientHost,
    PeerCredentials as WitCredentials, TlsInfo as WitTlsInfo,
};
pub use netserver::handler::hook_hints::{Hook as WitHook, Host as HookHintsHost};
pub use netserver::handler::log::{Host as LogHost, Level as WitLevel};
pub use netserver::handler::properties::Host as PropertiesHost;
pub use netserver::handler::server::{
    CloseReason as WitCloseReason, Host as ServerHost, ServerCounts as WitCounts,
    ServerHook as WitServerHook, Signal as WitSignal,
};
pub use server::exports::netserver::handler::server_hooks::{
    Guest as ServerHooks, GuestIndices as ServerHooksIndices,
};
