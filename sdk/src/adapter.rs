//! Wires a [`Handler`] to the generated `Guest` traits of `hooks` and
//! `server-hooks`: what [`export!`](crate::export) exports.

use std::io::{self, BufRead, Write};
use std::marker::PhantomData;

use crate::Handler;
use crate::bindings::exports::netserver::handler::hooks::Guest;
use crate::bindings::netserver::handler::{hook_hints, server};
use crate::bindings::server_hooks::exports::netserver::handler::server_hooks;
use crate::defaults::{self, AnyHook, Hook, ServerHook};

/// The generated `Guest` implementations for handler `H`.
pub struct Adapter<H>(PhantomData<fn() -> H>);

impl<H: Handler> Guest for Adapter<H> {
    fn child_init_hook() {
        run::<H, _>(Hook::ChildInitHook, H::child_init_hook);
    }

    fn post_accept_hook() {
        run::<H, _>(Hook::PostAcceptHook, H::post_accept_hook);
    }

    fn allow_deny_hook() -> bool {
        run::<H, _>(Hook::AllowDenyHook, H::allow_deny_hook)
    }

    fn request_denied_hook() {
        run::<H, _>(Hook::RequestDeniedHook, H::request_denied_hook);
    }

    fn process_request() -> Result<(), String> {
        let result = H::process_request();
        let flushed = io::stdout().flush();
        match (result, flushed) {
            (Err(error), _) => Err(error.to_string()),
            (Ok(()), Err(error)) => Err(format!("writing the reply: {error}")),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    fn post_process_request_hook() {
        run::<H, _>(Hook::PostProcessRequestHook, H::post_process_request_hook);
    }

    fn post_client_connection_hook() {
        // Needed after every connection whatever the handler's hook does:
        // never reported as doing nothing.
        forget_client_io();
        H::post_client_connection_hook();
        flush_stdout();
    }

    fn child_finish_hook() {
        run::<H, _>(Hook::ChildFinishHook, H::child_finish_hook);
    }

    fn dequeue() {
        run::<H, _>(Hook::Dequeue, H::dequeue);
    }
}

impl<H: Handler> server_hooks::Guest for Adapter<H> {
    fn signal_hook(signal: server::Signal) {
        run::<H, _>(ServerHook::SignalHook, || H::signal_hook(signal.into()));
    }

    fn server_close_hook(reason: server::CloseReason) {
        run::<H, _>(ServerHook::ServerCloseHook, || {
            H::server_close_hook(reason.into());
        });
    }

    fn idle_hook() {
        run::<H, _>(ServerHook::IdleHook, H::idle_hook);
    }
}

/// Runs `H`'s `hook`: when it is the default, which does nothing, tells
/// the host not to call it again; otherwise flushes what it wrote.
fn run<H: Handler, R>(hook: impl Into<AnyHook>, body: impl FnOnce() -> R) -> R {
    let hook = hook.into();
    let (result, default) = defaults::run::<H, R>(hook, body);
    match hook {
        _ if !default => flush_stdout(),
        AnyHook::Hooks(hook) => hook_hints::does_nothing(hook),
        AnyHook::Server(hook) => server::does_nothing(hook),
    }
    result
}

/// Writes out what std's line-buffered stdout holds: a reply's last line
/// without `\n` would otherwise wait there, and reach the client late or
/// never. A failure means the client went away; nothing is left to tell.
fn flush_stdout() {
    let _ = io::stdout().flush();
}

/// Drops what std's stdio still buffers from the client that just left, so
/// that the next client of this instance (with per-worker instances) sees
/// none of it. The connection is closed by now: the host's stdout discards
/// what is written, and its stdin reads end of file once std's buffer of
/// unread client bytes is used up.
fn forget_client_io() {
    flush_stdout();
    let mut stdin = io::stdin().lock();
    while let Ok(buffered) = stdin.fill_buf() {
        let len = buffered.len();
        if len == 0 {
            break;
        }
        stdin.consume(len);
    }
}
