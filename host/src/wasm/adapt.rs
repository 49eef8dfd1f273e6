//! WASI preview-1 core modules (what clang with wasi-libc, Go's `wasip1`,
//! Zig and Rust's `wasm32-wasip1` emit) made components at load: the
//! module is wrapped with wasmtime's own command adapter (of the same
//! release as the engine), which implements `wasi_snapshot_preview1` on
//! top of WASI 0.2. The result is a WASI command (`wasi:cli/run`), served
//! by the same path as any other: the same environment, sandbox, limits
//! and module cache (keyed by the original module's bytes).

use anyhow::{Result, anyhow, bail};
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;
use wasmparser::{ExternalKind, Parser, Payload};

/// The import module of WASI preview 1.
const PREVIEW1: &str = "wasi_snapshot_preview1";

/// Checks that `bytes`, a core module, is a WASI command: it exports a
/// `_start` function (a reactor or a library has none: nothing would run).
pub fn check_command(bytes: &[u8]) -> Result<()> {
    let mut start = false;
    let mut reactor = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| anyhow!("invalid core module: {e}"))?;
        if let Payload::ExportSection(exports) = payload {
            for export in exports {
                let export = export.map_err(|e| anyhow!("invalid core module: {e}"))?;
                if export.kind == ExternalKind::Func {
                    start |= export.name == "_start";
                    reactor |= export.name == "_initialize";
                }
            }
        }
    }
    if !start {
        let what = if reactor {
            "a WASI reactor (it exports `_initialize`)"
        } else {
            "a core WebAssembly module that exports no `_start`"
        };
        bail!(
            "{what}, not a WASI command: build a program with a `main` for \
             wasm32-wasip1, or a handler component for wasm32-wasip2"
        );
    }
    Ok(())
}

/// The component of core module `bytes`: the module with wasmtime's
/// preview-1 command adapter, validated.
pub fn to_component(bytes: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .and_then(|encoder| encoder.adapter(PREVIEW1, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER))
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| anyhow!("cannot adapt the WASI preview-1 module: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn a_command_is_adapted_into_a_component() {
        let bytes = module(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call 0 (i32.const 0))))"#,
        );
        check_command(&bytes).unwrap();
        let component = to_component(&bytes).unwrap();
        assert!(Parser::is_component(&component));
    }

    #[test]
    fn a_module_without_start_is_refused() {
        let reactor = module(r#"(module (func (export "_initialize")))"#);
        let err = check_command(&reactor).unwrap_err().to_string();
        assert!(err.contains("a WASI reactor"), "{err}");
        let library = module(r#"(module (func (export "add")))"#);
        let err = check_command(&library).unwrap_err().to_string();
        assert!(err.contains("exports no `_start`"), "{err}");
    }

    #[test]
    fn an_import_the_adapter_does_not_give_is_refused() {
        let bytes = module(
            r#"(module
                (import "env" "mystery" (func))
                (memory (export "memory") 1)
                (func (export "_start") (call 0)))"#,
        );
        check_command(&bytes).unwrap();
        let err = to_component(&bytes).unwrap_err().to_string();
        assert!(err.contains("cannot adapt"), "{err}");
    }
}
