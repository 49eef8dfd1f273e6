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
    let out = Path::new(&env_var("OUT_DIR")).join("guests.rs");
    fs::write(&out, guests_rs(&guests))
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
