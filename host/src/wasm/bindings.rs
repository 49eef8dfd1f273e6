//! The one `bindgen!` of the `netserver:handler/handler` world. Generated
//! types stay in this module: the rest of the host uses [`crate::client`] and
//! [`crate::wasm::Level`].

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    // Hooks run on async wasmtime so that a waiting guest never blocks the
    // worker thread; the imports are plain (they never wait).
    exports: { default: async },
});

pub use exports::netserver::handler::hooks::Guest as Hooks;
pub use netserver::handler::client::{
    ClientCertificate as WitClientCert, ClientInfo as WitClientInfo, Host as ClientHost,
    PeerCredentials as WitCredentials, TlsInfo as WitTlsInfo,
};
pub use netserver::handler::hook_hints::{Hook as WitHook, Host as HookHintsHost};
pub use netserver::handler::log::{Host as LogHost, Level as WitLevel};
pub use netserver::handler::properties::Host as PropertiesHost;
