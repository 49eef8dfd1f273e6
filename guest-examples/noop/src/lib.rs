//! A handler that serves nothing: `process_request` returns at once. The
//! criterion bench uses it to measure what a connection costs the sandbox.

use netserver_sdk::{Error, Handler};

struct Noop;

impl Handler for Noop {
    fn process_request() -> Result<(), Error> {
        Ok(())
    }
}

netserver_sdk::export!(Noop);
