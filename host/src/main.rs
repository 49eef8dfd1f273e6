//! `netserver-host`: see the crate documentation of `netserver_host`.

use std::process::ExitCode;

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
