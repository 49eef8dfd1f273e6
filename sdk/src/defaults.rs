//! Which hooks a handler leaves at the SDK's default. A default hook that
//! does nothing marks itself when it runs; the adapter then tells the host
//! (`hook-hints.does-nothing`), which stops calling it: a handler pays only
//! for the hooks it implements.

use std::any::type_name;
use std::cell::Cell;

pub use crate::bindings::netserver::handler::hook_hints::Hook;

thread_local! {
    /// The last default hook that ran: the handler's type name and the hook.
    static RAN: Cell<Option<(&'static str, Hook)>> = const { Cell::new(None) };
}

/// Called by the default body of `hook` in `H`'s [`Handler`](crate::Handler)
/// implementation.
pub fn mark<H: ?Sized>(hook: Hook) {
    RAN.set(Some((type_name::<H>(), hook)));
}

/// Runs `body`, `H`'s `hook`, and says whether it was the default. A hook
/// that merely calls a default — another hook's, or another handler's — is
/// not one.
pub fn run<H: ?Sized, R>(hook: Hook, body: impl FnOnce() -> R) -> (R, bool) {
    RAN.set(None);
    let result = body();
    let default = RAN.take() == Some((type_name::<H>(), hook));
    (result, default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Handler;

    /// Every hook left at its default.
    struct Defaults;
    impl Handler for Defaults {}

    /// Implements `post_accept_hook` by calling other defaults.
    struct Calls;
    impl Handler for Calls {
        fn post_accept_hook() {
            Self::post_process_request_hook();
            <Defaults as Handler>::post_accept_hook();
        }
        fn allow_deny_hook() -> bool {
            false
        }
    }

    fn defaulted<H: Handler>(hook: Hook) -> bool {
        match hook {
            Hook::ChildInitHook => run::<H, _>(hook, H::child_init_hook).1,
            Hook::PostAcceptHook => run::<H, _>(hook, H::post_accept_hook).1,
            Hook::AllowDenyHook => {
                let (allow, default) = run::<H, _>(hook, H::allow_deny_hook);
                assert!(allow || !default, "a default allow-deny-hook allows");
                default
            }
            Hook::RequestDeniedHook => run::<H, _>(hook, H::request_denied_hook).1,
            Hook::PostProcessRequestHook => run::<H, _>(hook, H::post_process_request_hook).1,
            Hook::PostClientConnectionHook => run::<H, _>(hook, H::post_client_connection_hook).1,
            Hook::ChildFinishHook => run::<H, _>(hook, H::child_finish_hook).1,
            Hook::Dequeue => run::<H, _>(hook, H::dequeue).1,
        }
    }

    #[test]
    fn table() {
        use Hook::*;
        // (hook, left at default in `Defaults`, in `Calls`)
        let cases = [
            (ChildInitHook, true, true),
            (PostAcceptHook, true, false),
            (AllowDenyHook, true, false),
            (RequestDeniedHook, true, true),
            (PostProcessRequestHook, true, true),
            (PostClientConnectionHook, true, true),
            (ChildFinishHook, true, true),
            (Dequeue, true, true),
        ];
        for (hook, defaults, calls) in cases {
            assert_eq!(defaulted::<Defaults>(hook), defaults, "Defaults {hook:?}");
            assert_eq!(defaulted::<Calls>(hook), calls, "Calls {hook:?}");
        }
    }
}
