//! The bindings `wit-bindgen` generates for the project's `wit/handler.wit`.
//!
//! Public only so that [`export!`](crate::export) and
//! [`export_mux!`](crate::export_mux) can reach them from a handler's crate;
//! nothing here is part of the SDK's API. The rest of the SDK converts these
//! types to its own at the edge.
//!
//! Three `generate!`s, one per export, put together by the export macros:
//!
//! | module | world | exports | export macro |
//! | --- | --- | --- | --- |
//! | here | `handler` | `hooks` | `__export_handler_impl` |
//! | [`mux`] | `mux-handler` | `mux` | `__export_mux_handler_impl` |
//! | [`server_hooks`] | `server-hooks` (below) | `server-hooks` | `__export_server_hooks_impl` |
//!
//! `export!` is `handler` and `server-hooks` (the world `server-handler`),
//! `export_mux!` is `mux-handler` and `server-hooks` (`server-mux-handler`).
//! `server-hooks` has a `generate!` of its own because wit-bindgen names an
//! interface's export macro after the interface and `#[macro_export]`s it
//! at the crate's root: generating `server-handler` and
//! `server-mux-handler` would define `server-hooks`'s twice. Each export
//! macro embeds its world's description for `wit-component`, which merges
//! them, so the component's world is the union: `server-handler` or
//! `server-mux-handler`.

wit_bindgen::generate!({
    world: "handler",
    // Relative to sdk/Cargo.toml.
    path: "../wit",
    // `export!` expands in the handler's crate, so the generated export
    // macro must be `#[macro_export]`ed. wit-bindgen names it
    // `__export_handler_impl` at the SDK's root; nobody calls it directly.
    pub_export_macro: true,
});

/// The bindings for the `mux-handler` world. The interfaces it shares with
/// `handler` (`client`, `log`, `properties`, `server`) are not generated
/// again: they are the ones above, so [`ClientInfo`](crate::ClientInfo)'s
/// conversion, the log and [`server`](crate::server) serve both worlds.
/// Its export macro is `__export_mux_handler_impl`, used by
/// [`export_mux!`](crate::export_mux).
pub mod mux {
    wit_bindgen::generate!({
        world: "mux-handler",
        path: "../wit",
        with: {
            "netserver:handler/client@0.1.5": crate::bindings::netserver::handler::client,
            "netserver:handler/log@0.1.5": crate::bindings::netserver::handler::log,
            "netserver:handler/properties@0.1.5": crate::bindings::netserver::handler::properties,
            "netserver:handler/server@0.1.5": crate::bindings::netserver::handler::server,
        },
        pub_export_macro: true,
    });
}

/// The bindings for `server-hooks`, the export that both
/// [`export!`](crate::export) and [`export_mux!`](crate::export_mux) add:
/// a world of the SDK's own that exports only it. Interface `server` (its
/// types) is the one at the top. Its export macro is
/// `__export_server_hooks_impl`.
pub mod server_hooks {
    wit_bindgen::generate!({
        inline: "
            package netserver:sdk;

            /// What `server-handler` adds to `handler`, and
            /// `server-mux-handler` to `mux-handler`.
            world server-hooks {
                import netserver:handler/server@0.1.5;

                export netserver:handler/server-hooks@0.1.5;
            }
        ",
        path: "../wit",
        world: "netserver:sdk/server-hooks",
        with: {
            "netserver:handler/server@0.1.5": crate::bindings::netserver::handler::server,
        },
        pub_export_macro: true,
    });
}
