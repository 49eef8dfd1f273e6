//! The bindings `wit-bindgen` generates for the `handler` world.
//!
//! Public only so that [`export!`](crate::export) can reach them from a
//! handler's crate; nothing here is part of the SDK's API. The rest of the
//! SDK converts these types to its own at the edge.

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
/// `handler` (`client`, `log`, `properties`) are not generated again: they
/// are the ones above, so [`ClientInfo`](crate::ClientInfo)'s conversion
/// and the log serve both worlds. Its export macro is
/// `__export_mux_handler_impl`, used by [`export_mux!`](crate::export_mux).
pub mod mux {
    wit_bindgen::generate!({
        world: "mux-handler",
        path: "../wit",
        with: {
            "netserver:handler/client@0.1.3": crate::bindings::netserver::handler::client,
            "netserver:handler/log@0.1.3": crate::bindings::netserver::handler::log,
            "netserver:handler/properties@0.1.3": crate::bindings::netserver::handler::properties,
        },
        pub_export_macro: true,
    });
}
