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
