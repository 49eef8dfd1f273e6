//! The hooks a handler said do nothing (`hook-hints.does-nothing`), which
//! the host then stops calling: the SDK's default hooks say so, and an
//! echo connection makes three host-to-guest calls instead of seven. The
//! same goes for the worker's hooks (`server.does-nothing`).

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};

pub use super::bindings::{WitHook as Hook, WitServerHook as ServerHook};

/// A hook that may be said to do nothing: one of `hooks`, or of
/// `server-hooks`.
pub trait Hint: Copy + fmt::Display {
    /// Its bit in an [`IdleHooks`].
    fn bit(self) -> u16;
}

impl Hint for Hook {
    fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl Hint for ServerHook {
    fn bit(self) -> u16 {
        // After the eight of `hooks`.
        1 << (8 + self as u16)
    }
}

/// A set of hooks, shared by every instance of one handler in a process.
#[derive(Debug, Default)]
pub struct IdleHooks(AtomicU16);

impl IdleHooks {
    /// Records that `hook` does nothing; `true` if it was not known yet.
    pub fn insert(&self, hook: impl Hint) -> bool {
        let bit = hook.bit();
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Whether `hook` was said to do nothing.
    pub fn contains(&self, hook: impl Hint) -> bool {
        self.0.load(Ordering::Relaxed) & hook.bit() != 0
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ChildInitHook => "child-init-hook",
            Self::PostAcceptHook => "post-accept-hook",
            Self::AllowDenyHook => "allow-deny-hook",
            Self::RequestDeniedHook => "request-denied-hook",
            Self::PostProcessRequestHook => "post-process-request-hook",
            Self::PostClientConnectionHook => "post-client-connection-hook",
            Self::ChildFinishHook => "child-finish-hook",
            Self::Dequeue => "dequeue",
        })
    }
}

impl fmt::Display for ServerHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SignalHook => "signal-hook",
            Self::ServerCloseHook => "server-close-hook",
            Self::IdleHook => "idle-hook",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Hook; 8] = [
        Hook::ChildInitHook,
        Hook::PostAcceptHook,
        Hook::AllowDenyHook,
        Hook::RequestDeniedHook,
        Hook::PostProcessRequestHook,
        Hook::PostClientConnectionHook,
        Hook::ChildFinishHook,
        Hook::Dequeue,
    ];

    #[test]
    fn each_hook_is_its_own_member() {
        for (i, hook) in ALL.into_iter().enumerate() {
            let set = IdleHooks::default();
            assert!(set.insert(hook), "{hook} is new");
            assert!(!set.insert(hook), "{hook} is known the second time");
            for (j, other) in ALL.into_iter().enumerate() {
                assert_eq!(set.contains(other), i == j, "{hook} set, {other} asked");
            }
        }
        let set = IdleHooks::default();
        ALL.into_iter().for_each(|hook| assert!(set.insert(hook)));
        assert!(ALL.into_iter().all(|hook| set.contains(hook)));
    }

    #[test]
    fn server_hooks_have_bits_of_their_own() {
        let server = [
            ServerHook::SignalHook,
            ServerHook::ServerCloseHook,
            ServerHook::IdleHook,
        ];
        let set = IdleHooks::default();
        ALL.into_iter().for_each(|hook| assert!(set.insert(hook)));
        for hook in server {
            assert!(!set.contains(hook), "{hook} is not one of hooks'");
        }
        for (i, hook) in server.into_iter().enumerate() {
            let set = IdleHooks::default();
            assert!(set.insert(hook));
            assert!(!set.insert(hook));
            assert!(ALL.into_iter().all(|h| !set.contains(h)));
            for (j, other) in server.into_iter().enumerate() {
                assert_eq!(set.contains(other), i == j, "{hook} set, {other} asked");
            }
        }
    }
}
