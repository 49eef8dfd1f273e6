//! The handler's properties: string settings given to it in the host's
//! configuration (`--property KEY=VALUE`), as Net::Server passes custom
//! options to a server.

use crate::bindings::netserver::handler::properties as wit;

/// The value of property `key`, or `None` when it is not set.
pub fn property(key: &str) -> Option<String> {
    wit::get(key)
}

/// Every property as `(key, value)`, sorted by key.
pub fn properties() -> Vec<(String, String)> {
    wit::all()
}
