//! What the master knows of each child it forked.

use std::time::Instant;

/// One child of the master: a worker, or (`fork`) a connection's child.
#[derive(Debug)]
pub struct Child {
    /// Not serving a client (prefork's workers say so; a `fork` child
    /// always serves one).
    pub idle: bool,
    /// When it was forked.
    pub born: Instant,
    /// Told to finish, for being spare.
    pub retiring: bool,
    /// Its slot on the board (see [`crate::board`]), if it got one.
    pub slot: Option<usize>,
    /// A worker's group (its index among the master's groups: see
    /// `group`); a `fork` child's service (its index in the
    /// configuration).
    pub group: usize,
}

impl Child {
    /// A child of `group` forked now: idle (a worker, until it says
    /// otherwise) or not (a `fork` child, which serves its client).
    pub fn new(idle: bool, slot: Option<usize>, group: usize) -> Self {
        Self {
            idle,
            born: Instant::now(),
            retiring: false,
            slot,
            group,
        }
    }
}
