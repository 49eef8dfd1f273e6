//! Every bad `--module` exits 2 with one line naming the file and the fault.

use std::path::PathBuf;

use crate::util::{guests, run};

/// Writes `bytes` to a fresh file named `name` and returns its path.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    // Cargo's scratch directory for integration tests: target/tmp.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("modules");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn component(name: &str, wat: &str) -> PathBuf {
    file(name, &wat::parse_str(wat).expect("valid WAT"))
}

/// `netserver-host --check --module PATH` fails with exit 2 and one line
/// that names PATH and contains `reason`.
fn assert_rejected(path: &str, reason: &str) {
    let out = run(&["--check", "--module", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{path}: {err}");
    assert_eq!(err.lines().count(), 1, "{path}: one line expected: {err}");
    // Unreadable files are caught with the other options
    // (`--module: invalid value 'PATH': …`), bad contents when loading
    // (`--module PATH: …`).
    assert!(
        err.starts_with(&format!("netserver-host: --module {path}: "))
            || err.starts_with(&format!(
                "netserver-host: --module: invalid value '{path}': "
            )),
        "{path}: {err}"
    );
    assert!(err.contains(reason), "{path}: wanted {reason:?} in {err}");
}

#[test]
fn missing_file() {
    assert_rejected("/nonexistent/handler.wasm", "no such file or directory");
}

#[test]
fn unreadable_directory() {
    let dir = std::env::temp_dir();
    assert_rejected(dir.to_str().unwrap(), "is a directory");
}

#[test]
fn not_wasm() {
    let path = file("text.wasm", b"#!/bin/sh\necho not wasm\n");
    assert_rejected(path.to_str().unwrap(), "not a WebAssembly component");
}

/// A core module is served when it is a WASI preview-1 command (see
/// languages.rs); one without `_start` is refused.
#[test]
fn core_module_that_is_not_a_command() {
    let reactor = file(
        "reactor.wasm",
        &wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#)
            .unwrap(),
    );
    assert_rejected(
        reactor.to_str().unwrap(),
        "a WASI reactor (it exports `_initialize`), not a WASI command",
    );
    let library = file(
        "library.wasm",
        &wat::parse_str(r#"(module (func (export "add") (param i32) (result i32) local.get 0))"#)
            .unwrap(),
    );
    assert_rejected(
        library.to_str().unwrap(),
        "a core WebAssembly module that exports no `_start`, not a WASI command",
    );
    // One whose imports the preview-1 adapter does not give.
    let foreign = file(
        "foreign.wasm",
        &wat::parse_str(
            r#"(module (import "env" "mystery" (func)) (memory (export "memory") 1)
                (func (export "_start") (call 0)))"#,
        )
        .unwrap(),
    );
    assert_rejected(
        foreign.to_str().unwrap(),
        "cannot adapt the WASI preview-1 module",
    );
}

#[test]
fn truncated_component() {
    let echo = std::fs::read(guests::ECHO).unwrap();
    let path = file("truncated.wasm", &echo[..echo.len() / 2]);
    assert_rejected(path.to_str().unwrap(), "invalid component");
}

#[test]
fn component_exporting_neither_world() {
    let path = component("empty.wasm", "(component)");
    assert_rejected(
        path.to_str().unwrap(),
        "exports neither netserver:handler/hooks@0.1.5 (a handler), netserver:handler/mux@0.1.3 to @0.1.5 (a mux handler), wasi:http/incoming-handler@0.2 (a wasi:http component) nor wasi:cli/run",
    );
}

/// A component exporting, as `export`, an interface with only
/// `process-request`, of the wrong type (`func()`).
fn half_hooks(file_name: &str, export: &str) -> PathBuf {
    component(
        file_name,
        &format!(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $hooks (export "process-request" (func $f)))
                (export "{export}" (instance $hooks))
            )"#
        ),
    )
}

#[test]
fn malformed_hooks_export() {
    let path = half_hooks("malformed.wasm", "netserver:handler/hooks@0.1.0");
    assert_rejected(
        path.to_str().unwrap(),
        "its netserver:handler/hooks@0.1.0 export does not match the WIT contract",
    );
}

#[test]
fn other_hooks_version() {
    let path = half_hooks("future.wasm", "netserver:handler/hooks@9.0.0");
    assert_rejected(
        path.to_str().unwrap(),
        "exports netserver:handler/hooks@9.0.0, but this host serves netserver:handler/hooks@0.1.0 to @0.1.5",
    );
}

#[test]
fn malformed_mux_export() {
    let path = half_hooks("malformed-mux.wasm", "netserver:handler/mux@0.1.3");
    assert_rejected(
        path.to_str().unwrap(),
        "its netserver:handler/mux@0.1.3 export does not match the WIT contract",
    );
}

#[test]
fn other_mux_version() {
    let path = half_hooks("future-mux.wasm", "netserver:handler/mux@0.2.0");
    assert_rejected(
        path.to_str().unwrap(),
        "exports netserver:handler/mux@0.2.0, but this host serves netserver:handler/mux@0.1.3 to @0.1.5",
    );
}

/// A component with hooks (only `process-request`) and, as `server`, an
/// instance with only `idle-hook`: a `server-hooks` of this version that
/// lacks two of its functions, or one of a version this host does not
/// serve.
fn with_server_hooks(file_name: &str, server: &str) -> PathBuf {
    component(
        file_name,
        &format!(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $hooks (export "process-request" (func $f)))
                (instance $server (export "idle-hook" (func $f)))
                (export "netserver:handler/hooks@0.1.4" (instance $hooks))
                (export "{server}" (instance $server))
            )"#
        ),
    )
}

#[test]
fn server_hooks_of_another_version_are_refused() {
    let path = with_server_hooks(
        "future-server-hooks.wasm",
        "netserver:handler/server-hooks@0.2.0",
    );
    assert_rejected(
        path.to_str().unwrap(),
        "exports netserver:handler/server-hooks@0.2.0, but this host serves netserver:handler/server-hooks@0.1.4 to @0.1.5",
    );
}

#[test]
fn malformed_server_hooks_export() {
    let path = with_server_hooks(
        "malformed-server-hooks.wasm",
        "netserver:handler/server-hooks@0.1.4",
    );
    assert_rejected(
        path.to_str().unwrap(),
        "its netserver:handler/server-hooks@0.1.4 export does not match the WIT contract",
    );
}

#[test]
fn good_modules_are_recognised() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/hook-trace-0.1.0.wasm"
    );
    // (module, kind, exports server-hooks)
    let cases = [
        (guests::ECHO, "handler", true),
        (guests::HOOK_TRACE, "handler", true),
        (guests::SERVER_INFO, "handler", true),
        (fixture, "handler", false),
        (guests::COMMAND_ENV, "command", false),
        (guests::CHAT, "mux", true),
        (guests::MUX_ECHO, "mux", true),
    ];
    for (path, kind, server_hooks) in cases {
        let out = run(&["--check", "--module", path]);
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["module"]["kind"], kind, "{path}");
        assert_eq!(json["module"]["server_hooks"], server_hooks, "{path}");
        assert_eq!(json["module"]["source"], path);
    }
}

#[test]
fn unresolvable_import() {
    let path = component(
        "needs-more.wasm",
        r#"(component
            (import "example:missing/api@1.0.0" (instance (export "f" (func))))
        )"#,
    );
    assert_rejected(path.to_str().unwrap(), "cannot link");
    let out = run(&["--check", "--module", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("example:missing/api@1.0.0"), "{err}");
}

/// A fresh directory for a module cache.
fn cache_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("module-cache")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn check_log(cache: &std::path::Path) -> String {
    let out = run(&[
        "--check",
        "--log-level",
        "4",
        "--module",
        guests::ECHO,
        "--module-cache",
        cache.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn compiled_modules_are_cached_and_a_bad_cache_file_is_compiled_again() {
    let cache = cache_dir("reuse");
    let first = check_log(&cache);
    assert!(first.contains("stored the compiled module in"), "{first}");
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let second = check_log(&cache);
    assert!(
        second.contains("loaded the compiled module from"),
        "{second}"
    );
    // A damaged file is not trusted: compiled again, and replaced.
    std::fs::write(&files[0], b"not a compiled module").unwrap();
    let third = check_log(&cache);
    assert!(third.contains("unusable, compiling again"), "{third}");
    assert!(third.contains("stored the compiled module in"), "{third}");
    assert!(check_log(&cache).contains("loaded the compiled module from"));
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let cache = cache_dir("open");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = check_log(&cache);
    assert!(
        log.contains("not used: it must belong to this user"),
        "{log}"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
}
