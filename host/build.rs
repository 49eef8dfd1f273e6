//! Builds the guest handlers in `guest-examples/` for `wasm32-wasip2` and
//! writes `$OUT_DIR/guests.rs`, a path constant per guest:
//!
//! ```text
//! pub const ECHO: &str = "/…/target/guests/wasm32-wasip2/release/echo.wasm";
//! pub const ALL: &[(&str, &str)] = &[("echo", ECHO), …];
//! ```
//!
//! and, for `include_bytes!`, the same paths as `GUEST_<NAME>` environment
//! variables of this crate's compilation (`env!("GUEST_ECHO")`).
//!
//! Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`: a
//! nested `cargo build`, here into `target/guests`, a target directory of its
//! own so that it neither waits on the lock the outer build holds nor
//! depends on the outer profile (guests are always built `--release`, once
//! for dev, test and release builds of the host). Guests are found with
//! `cargo metadata`: a new member of the guest workspace needs no edit here.
//!
//! It also builds the handlers in other languages, each when its toolchain
//! is there (`.ci/run` installs them), into `target/guests/lang/`:
//!
//! | guest | from | toolchain |
//! | --- | --- | --- |
//! | `c-echo` | `guest-examples/c-echo/echo.c` | `clang` with wasi-libc (a WASI preview-1 command) |
//! | `py-echo`, `py-hooks` | `guest-examples/python/{echo,hooks}/app.py` | componentize-py in `target/lang/py` |
//! | `js-echo`, `js-hooks` | `guest-examples/js/{echo,hooks}.js` | ComponentizeJS in `guest-examples/js/node_modules` |
//!
//! Their constants are `Option<&str>`: `None` when the toolchain was
//! missing (the tests that need one then skip, or fail under
//! `NETSERVER_TEST_ALL=1`).

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const TARGET: &str = "wasm32-wasip2";

/// The first bytes of a component: `\0asm`, then version 0x0d and layer 1.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

/// One guest of the guest workspace.
struct Guest {
    /// The package name: `hook-trace`.
    name: String,
    /// The package's directory.
    dir: PathBuf,
    /// The built component.
    wasm: PathBuf,
}

fn main() {
    let root = Path::new(&env_var("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let manifest = root.join("guest-examples/Cargo.toml");
    let target_dir = root.join("target/guests");

    ensure_target_installed(&root);
    let guests = discover(&manifest, &target_dir);
    rerun_if_changed(&root, &guests);
    build(&manifest, &target_dir);
    for guest in &guests {
        check_component(guest);
        println!(
            "cargo:rustc-env=GUEST_{}={}",
            const_name(&guest.name),
            guest.wasm.display()
        );
    }
    let langs = build_languages(&root, &target_dir.join("lang"));
    let out = Path::new(&env_var("OUT_DIR")).join("guests.rs");
    fs::write(&out, guests_rs(&guests) + &langs_rs(&langs))
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

fn env_var(name: &str) -> OsString {
    env::var_os(name).unwrap_or_else(|| panic!("cargo sets {name} for build scripts"))
}

/// Installs the wasm32-wasip2 standard library when the toolchain lacks it:
/// rustup's automatic installs may be off, and `rust-toolchain.toml` alone
/// does not install a target then.
fn ensure_target_installed(root: &Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = run(Command::new(&rustc).args(["--print", "sysroot"]));
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return;
    }
    println!(
        "cargo:warning=the {TARGET} target is not installed in {}: running `rustup target add {TARGET}`",
        sysroot.display()
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]).current_dir(root);
    match rustup.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => fail(&rustup, &output),
        Err(e) => panic!(
            "the {TARGET} target is not installed in {} and rustup could not be run ({e}): \
             install the target for this toolchain",
            sysroot.display()
        ),
    }
}

/// The packages of the guest workspace and where their components will be.
fn discover(manifest: &Path, target_dir: &Path) -> Vec<Guest> {
    let mut metadata = cargo();
    metadata
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest);
    let output = run(&mut metadata);
    let metadata: Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let release = target_dir.join(TARGET).join("release");
    let mut guests: Vec<Guest> = metadata["packages"]
        .as_array()
        .expect("cargo metadata lists packages")
        .iter()
        .map(|package| guest(package, &release))
        .collect();
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    guests
}

/// The guest `package` of `cargo metadata`: its one `cdylib` (a handler) or
/// `bin` (a WASI command) target is the component.
fn guest(package: &Value, release: &Path) -> Guest {
    let name = package["name"]
        .as_str()
        .expect("a package has a name")
        .to_owned();
    let manifest = Path::new(
        package["manifest_path"]
            .as_str()
            .expect("a package has a manifest"),
    );
    let artifacts: Vec<String> = package["targets"]
        .as_array()
        .expect("a package has targets")
        .iter()
        .filter_map(|target| {
            let target_name = target["name"].as_str()?;
            let kinds = target["kind"].as_array()?;
            if kinds.iter().any(|k| k == "cdylib") {
                Some(target_name.replace('-', "_"))
            } else if kinds.iter().any(|k| k == "bin") {
                Some(target_name.to_owned())
            } else {
                None
            }
        })
        .collect();
    let [artifact] = artifacts.as_slice() else {
        panic!(
            "guest {name} must have exactly one `cdylib` or `bin` target, it has {}",
            artifacts.len()
        );
    };
    Guest {
        wasm: release.join(format!("{artifact}.wasm")),
        dir: manifest
            .parent()
            .expect("a manifest is in a directory")
            .to_path_buf(),
        name,
    }
}

/// Tells cargo to run this script again when a guest or what guests are
/// built from changes. Directories are watched whole, so only source
/// directories are named (not `guest-examples/target`).
fn rerun_if_changed(root: &Path, guests: &[Guest]) {
    let mut paths = vec![
        root.join("guest-examples/Cargo.toml"),
        root.join("guest-examples/Cargo.lock"),
        root.join("sdk/Cargo.toml"),
        root.join("sdk/src"),
        root.join("wit"),
        // The guests inherit workspace settings of the SDK's manifest.
        root.join("Cargo.toml"),
    ];
    for guest in guests {
        paths.push(guest.dir.join("Cargo.toml"));
        paths.push(guest.dir.join("src"));
    }
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Builds every guest for wasm32-wasip2 in release mode.
fn build(manifest: &Path, target_dir: &Path) {
    let mut build = cargo();
    build
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    eprintln!("running: {build:?}");
    run(&mut build);
}

/// A `cargo` command free of the settings cargo hands this build script for
/// the host's own compilation: flags, target, profile and wrappers meant for
/// native code must not reach the wasm build. `CARGO_MAKEFLAGS` stays, so
/// the nested build shares the outer build's jobserver (and its job limit).
fn cargo() -> Command {
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = matches!(
            key,
            "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTFLAGS"
                | "CARGO_BUILD_RUSTFLAGS"
                | "CARGO_TARGET_DIR"
                | "CARGO_BUILD_TARGET"
                | "CARGO_BUILD_TARGET_DIR"
                | "RUSTC_WORKSPACE_WRAPPER"
        ) || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("__CARGO");
        if leaks {
            cargo.env_remove(key);
        }
    }
    cargo
}

/// Runs `command`; on failure, fails the build with its output.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    if !output.status.success() {
        fail(command, &output);
    }
    output
}

fn fail(command: &Command, output: &Output) -> ! {
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    panic!(
        "{command:?} failed ({}): its output is above",
        output.status
    );
}

/// Fails the build unless the guest was built as a component.
fn check_component(guest: &Guest) {
    let bytes = fs::read(&guest.wasm).unwrap_or_else(|e| {
        panic!(
            "guest {}: reading {}: {e}",
            guest.name,
            guest.wasm.display()
        )
    });
    assert!(
        bytes.starts_with(COMPONENT_HEADER),
        "guest {}: {} is not a WebAssembly component",
        guest.name,
        guest.wasm.display()
    );
}

/// A handler in another language than Rust: its name and the component
/// (or preview-1 module) built, if its toolchain was there.
struct LangGuest {
    name: &'static str,
    /// What builds it, for the generated doc comment.
    toolchain: &'static str,
    wasm: Option<PathBuf>,
}

/// Where componentize-py is installed (`.ci/run` makes this venv).
const COMPONENTIZE_PY: &str = "target/lang/py/bin/componentize-py";
/// The JavaScript guests' directory (its `node_modules` from `npm ci`).
const JS_DIR: &str = "guest-examples/js";
/// Debian's wasi-libc: the sysroot clang is given.
const WASI_SYSROOT: &str = "/usr";
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi/libc.a";

/// Builds the C, Python and JavaScript guests whose toolchains are there.
fn build_languages(root: &Path, out: &Path) -> Vec<LangGuest> {
    fs::create_dir_all(out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    for dir in [
        "guest-examples/c-echo",
        "guest-examples/python/echo",
        "guest-examples/python/hooks",
        "guest-examples/js/echo.js",
        "guest-examples/js/hooks.js",
        "guest-examples/js/stdio.js",
        "guest-examples/js/build.mjs",
        "guest-examples/js/wit",
        "guest-examples/js/package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // A toolchain installed again builds its guests again. Only those
    // installed are watched: cargo runs a build script whose watched path
    // is missing at every build (after installing one, `touch host/build.rs`).
    for installed in [
        root.join(COMPONENTIZE_PY),
        root.join(JS_DIR).join("node_modules/.installed-lock"),
        PathBuf::from(WASI_LIBC),
    ] {
        if installed.exists() {
            println!("cargo:rerun-if-changed={}", installed.display());
        }
    }
    let mut guests = Vec::new();

    let clang = on_path("clang").filter(|_| Path::new(WASI_LIBC).is_file());
    let c_echo = out.join("c-echo.wasm");
    let source = root.join("guest-examples/c-echo/echo.c");
    guests.push(LangGuest {
        name: "c-echo",
        toolchain: "clang and wasi-libc: a WASI preview-1 command",
        wasm: clang.map(|clang| {
            if stale(&c_echo, &[&source]) {
                // The command of guest-examples/c-echo/Makefile.
                let mut cc = Command::new(clang);
                cc.args(["--target=wasm32-wasi", "--sysroot", WASI_SYSROOT])
                    .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                    .arg(&c_echo)
                    .arg(&source);
                eprintln!("running: {cc:?}");
                run(&mut cc);
            }
            c_echo
        }),
    });

    let componentize_py = root.join(COMPONENTIZE_PY);
    let wit = root.join("wit");
    for (name, dir) in [("py-echo", "echo"), ("py-hooks", "hooks")] {
        let dir = root.join("guest-examples/python").join(dir);
        let wasm = out.join(format!("{name}.wasm"));
        let built = componentize_py.is_file().then(|| {
            if stale(&wasm, &[&dir.join("app.py"), &wit.join("handler.wit")]) {
                let mut build = Command::new(&componentize_py);
                build
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", "handler", "componentize", "app", "-o"])
                    .arg(&wasm)
                    .current_dir(&dir)
                    // No __pycache__ in the source tree.
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                eprintln!("running: {build:?}");
                run(&mut build);
            }
            wasm
        });
        guests.push(LangGuest {
            name,
            toolchain: "componentize-py",
            wasm: built,
        });
    }

    let js = root.join(JS_DIR);
    let node = on_path("node").filter(|_| {
        js.join("node_modules/@bytecodealliance/componentize-js")
            .is_dir()
    });
    // The world's copy of the contract follows wit/handler.wit.
    if node.is_some() {
        let copy = js.join("wit/deps/handler.wit");
        let contract = fs::read(wit.join("handler.wit")).expect("wit/handler.wit is readable");
        if fs::read(&copy).ok().as_ref() != Some(&contract) {
            fs::write(&copy, &contract)
                .unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
        }
    }
    for (name, source) in [("js-echo", "echo.js"), ("js-hooks", "hooks.js")] {
        let wasm = out.join(format!("{name}.wasm"));
        let built = node.as_ref().map(|node| {
            let inputs = [
                js.join(source),
                js.join("stdio.js"),
                js.join("build.mjs"),
                js.join("wit/js.wit"),
                js.join("wit/deps/handler.wit"),
            ];
            let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
            if stale(&wasm, &inputs) {
                let mut build = Command::new(node);
                build
                    .arg("build.mjs")
                    .arg(source)
                    .arg(&wasm)
                    .current_dir(&js);
                eprintln!("running: {build:?}");
                run(&mut build);
            }
            wasm
        });
        guests.push(LangGuest {
            name,
            toolchain: "ComponentizeJS",
            wasm: built,
        });
    }
    for guest in &guests {
        if guest.wasm.is_none() {
            println!(
                "cargo:warning=guest {} not built: {} is not installed (.ci/run installs it; then `touch host/build.rs`)",
                guest.name, guest.toolchain
            );
        }
    }
    guests
}

/// Whether `out` is missing or older than one of `inputs`.
fn stale(out: &Path, inputs: &[&Path]) -> bool {
    let Ok(built) = fs::metadata(out).and_then(|m| m.modified()) else {
        return true;
    };
    inputs.iter().any(|input| {
        fs::metadata(input)
            .and_then(|m| m.modified())
            .map_or(true, |changed| changed > built)
    })
}

/// The path of `program` on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The constants of the other languages' guests.
fn langs_rs(guests: &[LangGuest]) -> String {
    let mut rs = String::new();
    for guest in guests {
        let _ = writeln!(
            rs,
            "\n/// The `{}` guest ({}); `None` when that was not installed.",
            guest.name, guest.toolchain
        );
        let value = match &guest.wasm {
            Some(path) => format!(
                "Some({:?})",
                path.to_str().expect("the repository's path is UTF-8")
            ),
            None => "None".to_owned(),
        };
        let _ = writeln!(
            rs,
            "pub const {}: Option<&str> = {value};",
            const_name(guest.name)
        );
    }
    rs
}

/// `hook-trace` → `HOOK_TRACE`.
fn const_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The text of `guests.rs`.
fn guests_rs(guests: &[Guest]) -> String {
    let mut rs = String::from("// @generated by host/build.rs: the guests of guest-examples/.\n");
    for guest in guests {
        let path = guest.wasm.to_str().expect("the repository's path is UTF-8");
        let _ = writeln!(rs, "\n/// The `{}` guest, built for {TARGET}.", guest.name);
        let _ = writeln!(
            rs,
            "pub const {}: &str = {path:?};",
            const_name(&guest.name)
        );
    }
    let _ = writeln!(rs, "\n/// Every guest: (package name, path).");
    let _ = writeln!(rs, "pub const ALL: &[(&str, &str)] = &[");
    for guest in guests {
        let _ = writeln!(rs, "    ({:?}, {}),", guest.name, const_name(&guest.name));
    }
    rs.push_str("];\n");
    rs
}
