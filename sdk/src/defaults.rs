//! Which hooks a handler leaves at the SDK's default. A default hook that
//! does nothing marks itself when it runs; the adapter then tells the host
//! (`hook-hints.does-nothing` for a hook of `hooks`, `server.does-nothing`
//! for one of `server-hooks`), which stops calling it: a handler pays only
//! for the hooks it implements.

use std::any::type_name;
use std::cell::Cell;

pub use crate::bindings::netserver::handler::hook_hints::Hook;
pub use crate::bindings::netserver::handler::server::ServerHook;

/// A hook whose default says it does nothing: one of `hooks` or one of
/// `server-hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyHook {
    /// A connection or child hook (`hook-hints.hook`).
    Hooks(Hook),
    /// A worker hook (`server.server-hook`).
    Server(ServerHook),
}

impl From<Hook> for AnyHook {
    fn from(hook: Hook) -> Self {
        Self::Hooks(hook)
    }
}

impl From<ServerHook> for AnyHook {
    fn from(hook: ServerHook) -> Self {
        Self::Server(hook)
    }
}

thread_local! {
    /// The last default hook that ran: the handler's type name and the hook.
    static RAN: Cell<Option<(&'static str, AnyHook)>> = const { Cell::new(None) };
}

/// Called by the default body of `hook` in `H`'s [`Handler`](crate::Handler)
/// or [`MuxHandler`](crate::MuxHandler) implementation.
pub fn mark<H: ?Sized>(hook: impl Into<AnyHook>) {
    RAN.set(Some((type_name::<H>(), hook.into())));
}

/// Runs `body`, `H`'s `hook`, and says whether it was the default. A hook
/// that merely calls a default — another hook's, or another handler's — is
/// not one.
pub fn run<H: ?Sized, R>(hook: impl Into<AnyHook>, body: impl FnOnce() -> R) -> (R, bool) {
    let hook = hook.into();
    RAN.set(None);
    let result = body();
    let default = RAN.take() == Some((type_name::<H>(), hook));
    (result, default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Handler;
    use crate::mux::{Connection, MuxHandler};
    use crate::server::{CloseReason, Signal};

    /// Every hook left at its default.
    struct Defaults;
    impl Handler for Defaults {}

    /// Implements `post_accept_hook` and the worker's hooks, some by
    /// calling other defaults.
    struct Calls;
    impl Handler for Calls {
        fn post_accept_hook() {
            Self::post_process_request_hook();
            <Defaults as Handler>::post_accept_hook();
        }
        fn allow_deny_hook() -> bool {
            false
        }
        fn signal_hook(signal: Signal) {
            <Defaults as Handler>::signal_hook(signal);
        }
        fn server_close_hook(reason: CloseReason) {
            Self::child_finish_hook();
            let _ = reason;
        }
        fn idle_hook() {}
    }

    fn defaulted<H: Handler>(hook: AnyHook) -> bool {
        match hook {
            AnyHook::Hooks(hook) => match hook {
                Hook::ChildInitHook => run::<H, _>(hook, H::child_init_hook).1,
                Hook::PostAcceptHook => run::<H, _>(hook, H::post_accept_hook).1,
                Hook::AllowDenyHook => {
                    let (allow, default) = run::<H, _>(hook, H::allow_deny_hook);
                    assert!(allow || !default, "a default allow-deny-hook allows");
                    default
                }
                Hook::RequestDeniedHook => run::<H, _>(hook, H::request_denied_hook).1,
                Hook::PostProcessRequestHook => run::<H, _>(hook, H::post_process_request_hook).1,
                Hook::PostClientConnectionHook => {
                    run::<H, _>(hook, H::post_client_connection_hook).1
                }
                Hook::ChildFinishHook => run::<H, _>(hook, H::child_finish_hook).1,
                Hook::Dequeue => run::<H, _>(hook, H::dequeue).1,
            },
            AnyHook::Server(hook) => match hook {
                ServerHook::SignalHook => run::<H, _>(hook, || H::signal_hook(Signal::Usr1)).1,
                ServerHook::ServerCloseHook => {
                    run::<H, _>(hook, || H::server_close_hook(CloseReason::Drain)).1
                }
                ServerHook::IdleHook => run::<H, _>(hook, H::idle_hook).1,
            },
        }
    }

    #[test]
    fn table() {
        use Hook::*;
        use ServerHook::*;
        // (hook, left at default in `Defaults`, in `Calls`)
        let cases: [(AnyHook, bool, bool); 11] = [
            (ChildInitHook.into(), true, true),
            (PostAcceptHook.into(), true, false),
            (AllowDenyHook.into(), true, false),
            (RequestDeniedHook.into(), true, true),
            (PostProcessRequestHook.into(), true, true),
            (PostClientConnectionHook.into(), true, true),
            (ChildFinishHook.into(), true, true),
            (Dequeue.into(), true, true),
            (SignalHook.into(), true, false),
            (ServerCloseHook.into(), true, false),
            (IdleHook.into(), true, false),
        ];
        for (hook, defaults, calls) in cases {
            assert_eq!(defaulted::<Defaults>(hook), defaults, "Defaults {hook:?}");
            assert_eq!(defaulted::<Calls>(hook), calls, "Calls {hook:?}");
        }
    }

    /// A mux handler that leaves the worker's hooks at their defaults.
    struct MuxDefaults;
    impl MuxHandler for MuxDefaults {
        fn mux_input(_: Connection, data: &[u8]) -> usize {
            data.len()
        }
    }

    /// A mux handler that implements them, one by calling a default.
    struct MuxCalls;
    impl MuxHandler for MuxCalls {
        fn mux_input(_: Connection, data: &[u8]) -> usize {
            data.len()
        }
        fn signal_hook(signal: Signal) {
            <MuxDefaults as MuxHandler>::signal_hook(signal);
        }
        fn server_close_hook(_: CloseReason) {}
    }

    fn mux_defaulted<H: MuxHandler>(hook: ServerHook) -> bool {
        match hook {
            ServerHook::SignalHook => run::<H, _>(hook, || H::signal_hook(Signal::Hup)).1,
            ServerHook::ServerCloseHook => {
                run::<H, _>(hook, || H::server_close_hook(CloseReason::Stop)).1
            }
            ServerHook::IdleHook => unreachable!("not a MuxHandler hook"),
        }
    }

    #[test]
    fn mux_table() {
        use ServerHook::*;
        // (hook, left at default in `MuxDefaults`, in `MuxCalls`)
        let cases = [(SignalHook, true, false), (ServerCloseHook, true, false)];
        for (hook, defaults, calls) in cases {
            assert_eq!(
                mux_defaulted::<MuxDefaults>(hook),
                defaults,
                "MuxDefaults {hook:?}"
            );
            assert_eq!(mux_defaulted::<MuxCalls>(hook), calls, "MuxCalls {hook:?}");
        }
    }
}
