//! Snapshot tests of configuration: every file in `tests/config/valid` gives
//! the `--check` JSON in its `.json` twin; every file in
//! `tests/config/invalid` exits 2 with the exact line in its `.err` twin,
//! before any socket is bound.
//!
//! After a deliberate change, rewrite the snapshots with
//! `UPDATE_SNAPSHOTS=1 cargo test -p netserver-host --test e2e snapshots`
//! and review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{BIN, guests, run_in};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/config");

/// Copies `tests/config/KIND` into a fresh scratch directory, with the
/// guests the conf files name (`echo.wasm`, `hook_trace.wasm`), a file
/// that is not WebAssembly (`notwasm.wasm`) and a test PKI's certificates
/// and keys (see [`crate::pki::Pki::write_into`]); conf files are run from there,
/// so errors and sources name them by their relative path.
fn scratch(kind: &str) -> (PathBuf, Vec<String>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("snapshots")
        .join(kind);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut confs = Vec::new();
    for entry in std::fs::read_dir(Path::new(CONFIG).join(kind)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&path, dir.join(&name)).unwrap();
        if name.ends_with(".conf") || name.ends_with(".toml") {
            confs.push(name);
        }
    }
    std::fs::copy(guests::ECHO, dir.join("echo.wasm")).unwrap();
    std::fs::copy(guests::HOOK_TRACE, dir.join("hook_trace.wasm")).unwrap();
    std::fs::write(dir.join("notwasm.wasm"), "#!/bin/sh\n").unwrap();
    // Certificates and keys for the TLS options (`server.pem`, …).
    crate::pki::Pki::write_into(dir.clone());
    confs.sort();
    (dir, confs)
}

fn update() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some()
}

/// The snapshot twin of a conf file: `x.conf` → `x.conf.json`.
fn twin(dir: &Path, conf: &str, ext: &str) -> PathBuf {
    dir.join(format!("{conf}.{ext}"))
}

#[test]
fn valid_conf_files_give_their_check_json() {
    let (dir, confs) = scratch("valid");
    assert!(confs.len() >= 6, "{confs:?}");
    let mut failures = Vec::new();
    for conf in &confs {
        let out = run_in(&dir, BIN, &["--check", "--conf-file", conf]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{conf}: {stderr}");
        let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let expected = twin(&Path::new(CONFIG).join("valid"), conf, "json");
        if update() {
            let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
            std::fs::write(&expected, text).unwrap();
            continue;
        }
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(&expected)
                .unwrap_or_else(|_| panic!("{conf}: no snapshot {}", expected.display())),
        )
        .unwrap();
        if got != want {
            failures.push(format!(
                "{conf}: --check output differs from {}:\n{}",
                expected.display(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `value` without the `source` of each option (which names the file and
/// line, and so differs between two files saying the same).
fn without_sources(mut value: Value) -> Value {
    fn strip(options: &mut Value) {
        if let Some(options) = options.as_object_mut() {
            for option in options.values_mut() {
                if let Some(option) = option.as_object_mut() {
                    option.remove("source");
                }
            }
        }
    }
    strip(&mut value["options"]);
    if let Some(services) = value["services"].as_array_mut() {
        for service in services {
            strip(&mut service["options"]);
        }
    }
    value
}

#[test]
fn net_server_conf_and_toml_say_the_same() {
    let (dir, _) = scratch("valid");
    let check = |conf: &str| -> Value {
        let out = run_in(&dir, BIN, &["--check", "--conf-file", conf]);
        assert!(out.status.success(), "{conf}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let conf = check("net-server-test.conf");
    let toml = check("net-server-test.toml");
    assert_eq!(without_sources(conf.clone()), without_sources(toml));
    // And the sources name the Net::Server file's lines.
    assert_eq!(conf["options"]["port"]["source"], "net-server-test.conf:42");
}

#[test]
fn invalid_conf_files_exit_2_with_their_line_and_bind_nothing() {
    let (dir, confs) = scratch("invalid");
    assert!(confs.len() >= 20, "{confs:?}");
    let strace = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut failures = Vec::new();
    for conf in &confs {
        let expected = twin(&Path::new(CONFIG).join("invalid"), conf, "err");
        // Really start (not --check), logging every bind: the one error
        // line must be all there is.
        let mut args = vec!["--conf-file", conf.as_str()];
        if conf != "log-level.conf" {
            args.extend(["--log-level", "4"]);
        }
        let out = run_in(&dir, BIN, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if update() {
            let line = stderr.strip_prefix("netserver-host: ").unwrap_or(&stderr);
            std::fs::write(&expected, line).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected)
            .unwrap_or_else(|_| panic!("{conf}: no snapshot {}", expected.display()));
        if out.status.code() != Some(2) || stderr != format!("netserver-host: {want}") {
            failures.push(format!(
                "{conf}: exit {:?}, stderr:\n{stderr}wanted:\nnetserver-host: {want}",
                out.status.code()
            ));
        }
        if strace {
            // Proof from the kernel's side: no bind(2) call at all.
            let trace = dir.join(format!("{conf}.strace"));
            let mut traced = vec!["-f", "-qq", "-e", "trace=bind,listen", "-o"];
            traced.push(trace.to_str().unwrap());
            traced.push(BIN);
            traced.extend(&args);
            let out = run_in(&dir, "strace", &traced);
            assert_eq!(out.status.code(), Some(2), "{conf} under strace");
            let calls = std::fs::read_to_string(&trace).unwrap();
            if calls.contains("bind(") || calls.contains("listen(") {
                failures.push(format!("{conf}: a socket was bound:\n{calls}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
