//! Handlers in Python, JavaScript and C (issue 26), through the
//! conformance kit: each echo answers exactly as the Rust one, in
//! multiplex and in prefork; the Python and JavaScript hook handlers keep
//! the hook order and refuse through `allow-deny-hook`; a WASI preview-1
//! module is adapted, said so by `--check`, and one that traps ends only
//! its connection.

use std::path::PathBuf;

use crate::conformance;
use crate::util::{Server, guests, per_personality, require_guest, run};

/// The guests of other languages and what builds them.
const C: &str = "clang and wasi-libc";
const PY: &str = "componentize-py";
const JS: &str = "ComponentizeJS";

fn rust_echo_answers_like_itself(personality: &str) {
    conformance::echoes_like_rust(guests::ECHO, personality);
}
per_personality!(rust_echo_answers_like_itself: multiplex, prefork);

fn c_echo_answers_like_rust(personality: &str) {
    let Some(module) = require_guest(guests::C_ECHO, C) else {
        return;
    };
    conformance::echoes_like_rust(module, personality);
}
per_personality!(c_echo_answers_like_rust: multiplex, prefork);

fn python_echo_answers_like_rust(personality: &str) {
    let Some(module) = require_guest(guests::PY_ECHO, PY) else {
        return;
    };
    conformance::echoes_like_rust(module, personality);
}
per_personality!(python_echo_answers_like_rust: multiplex, prefork);

fn javascript_echo_answers_like_rust(personality: &str) {
    let Some(module) = require_guest(guests::JS_ECHO, JS) else {
        return;
    };
    conformance::echoes_like_rust(module, personality);
}
per_personality!(javascript_echo_answers_like_rust: multiplex, prefork);

fn rust_hook_trace_conforms(personality: &str) {
    conformance::hook_order(guests::HOOK_TRACE, personality);
}
per_personality!(rust_hook_trace_conforms: multiplex, prefork);

fn python_hooks_conform(personality: &str) {
    let Some(module) = require_guest(guests::PY_HOOKS, PY) else {
        return;
    };
    conformance::hook_order(module, personality);
}
per_personality!(python_hooks_conform: multiplex, prefork);

fn javascript_hooks_conform(personality: &str) {
    let Some(module) = require_guest(guests::JS_HOOKS, JS) else {
        return;
    };
    conformance::hook_order(module, personality);
}
per_personality!(javascript_hooks_conform: multiplex, prefork);

#[test]
fn rust_hook_trace_refuses_through_allow_deny() {
    conformance::refuses_through_allow_deny(guests::HOOK_TRACE);
}

#[test]
fn python_hooks_refuse_through_allow_deny() {
    if let Some(module) = require_guest(guests::PY_HOOKS, PY) {
        conformance::refuses_through_allow_deny(module);
    }
}

#[test]
fn javascript_hooks_refuse_through_allow_deny() {
    if let Some(module) = require_guest(guests::JS_HOOKS, JS) {
        conformance::refuses_through_allow_deny(module);
    }
}

/// A module file made from WebAssembly text, in this test group's
/// directory.
fn module(name: &str, wat: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("languages");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// A WASI preview-1 command that reads one byte: `t` traps, anything else
/// is answered `ok`.
const TRAP_ON_T: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read"
        (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write"
        (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    ;; stdin's iovec at 0 (one byte at 64), the count read at 16;
    ;; stdout's iovec at 32 ("ok\n" at 80), the count written at 24.
    (data (i32.const 0) "\40\00\00\00\01\00\00\00")
    (data (i32.const 32) "\50\00\00\00\03\00\00\00")
    (data (i32.const 80) "ok\n")
    (func (export "_start")
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 116))
            (then unreachable))
        (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 24)))))"#;

/// One client waits in the module while another makes it trap: only the
/// trapping client's connection ends, in the same worker.
fn preview1_trap_ends_only_its_connection(personality: &str) {
    let path = module(&format!("trap-on-t-{personality}.wasm"), TRAP_ON_T);
    let mut server = Server::start(&[
        "--module",
        path.to_str().unwrap(),
        "--server-type",
        personality,
    ]);
    server.wait_for_log("(a WASI preview-1 command, adapted)");
    let mut waiting = server.connect();
    let mut trapping = server.connect();
    trapping.send(b"t");
    assert_eq!(trapping.read_all(), "");
    server.wait_for_log("guest trapped");
    waiting.send(b"x");
    assert_eq!(waiting.read_all(), "ok\n");
    let mut next = server.connect();
    next.send(b"y");
    assert_eq!(next.read_all(), "ok\n");
}
per_personality!(preview1_trap_ends_only_its_connection: multiplex, prefork);

#[test]
fn check_says_a_preview1_command_is_adapted() {
    let path = module("trap-on-t.wasm", TRAP_ON_T);
    let path = path.to_str().unwrap();
    let out = run(&["--check", "--module", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["module"]["kind"], "preview1-command");
    assert_eq!(json["module"]["server_hooks"], false);
}
