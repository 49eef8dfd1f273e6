//! The hooks a handler said do nothing (`hook-hints.does-nothing`), which
//! the host then stops calling: the SDK's default hooks say so, and an
//! echo connection makes three host-to-guest calls instead of seven.

use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};

pub use super::bindings::WitHook as Hook;

/// A set of hooks, shared by every instance of one handler in a process.
#[derive(Debug, Default)]
pub struct IdleHooks(AtomicU16);

impl IdleHooks {
    /// Records that `hook` does nothing; `true` if it was not known yet.
    pub fn insert(&self, hook: Hook) -> bool {
        let bit = bit(hook);
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Whether `hook` was said to do nothing.
    pub fn contains(&self, hook: Hook) -> bool {
        self.0.load(Ordering::Relaxed) & bit(hook) != 0
    }
}

fn bit(hook: Hook) -> u16 {
    1 << hook as u16
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
}
