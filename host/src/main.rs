//! `netserver-host`: see the crate documentation of `netserver_host`.

use std::process::ExitCode;

/// mimalloc: each connection allocates and frees a Store, an instance and
/// its WASI context; glibc's malloc spent about a tenth of the CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match netserver_host::run() {
        Ok(code) => code,
        Err(err) => {
            // One line, with every cause, as ripgrep does.
            eprintln!("netserver-host: {err:#}");
            ExitCode::from(2)
        }
    }
}
