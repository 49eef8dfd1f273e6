//! Compiled components kept on disk, so that a restart (or a HUP) does not
//! compile the same module again: a file per module, named by the SHA-256
//! of its bytes and of the engine's settings, written atomically, in a
//! directory only this user can write to.

use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// The cache in `dir` (created, mode 0700, when missing). `None`, with
    /// a warning, when the directory cannot be trusted: owned by another
    /// user, or writable by others — its files are loaded as machine code.
    pub fn open(dir: &Path) -> Option<Self> {
        if let Err(err) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            tracing::warn!("module cache {}: cannot create: {err}", dir.display());
            return None;
        }
        let meta = std::fs::metadata(dir).ok()?;
        let owner_ok = meta.uid() == nix::unistd::geteuid().as_raw();
        let private = meta.permissions().mode() & 0o022 == 0;
        if !(owner_ok && private) {
            tracing::warn!(
                "module cache {}: not used: it must belong to this user and not be writable by others",
                dir.display()
            );
            return None;
        }
        Some(Self {
            dir: dir.to_owned(),
        })
    }

    /// The component of `bytes`: from the cache when it has it, else
    /// compiled and then stored.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> Result<Component> {
        let path = self.dir.join(format!("{}.cwasm", key(engine, bytes)));
        if path.exists() {
            // SAFETY: the file was written by `store` below from a
            // component this engine compiled, into a directory only this
            // user can write to (checked in `open`); its name binds it to
            // these exact module bytes and engine settings, and wasmtime
            // checks the header and version before use.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    tracing::debug!("loaded the compiled module from {}", path.display());
                    return Ok(component);
                }
                Err(err) => {
                    tracing::warn!(
                        "module cache {}: unusable, compiling again: {err}",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| anyhow!("invalid component: {e:#}"))?;
        if let Err(err) = self.store(&component, &path) {
            tracing::warn!("module cache {}: cannot store: {err:#}", path.display());
        }
        Ok(component)
    }

    /// Writes `component` to `path` atomically (a temporary file, renamed).
    fn store(&self, component: &Component, path: &Path) -> Result<()> {
        let bytes = component.serialize()?;
        let temporary = self
            .dir
            .join(format!(".{}.{}.tmp", std::process::id(), key_suffix(path)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        tracing::debug!("stored the compiled module in {}", path.display());
        Ok(())
    }
}

/// `OpenOptions::mode(0o600)`, readable at the call site.
trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

fn key_suffix(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().chars().take(16).collect())
        .unwrap_or_default()
}

/// The SHA-256 of the module's bytes, this host's version and the engine's
/// compilation settings.
fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    hasher.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.update(bytes);
    hasher
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Feeds `Hash` values into a SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The default cache directory: `/var/cache/netserver` for root,
/// `$XDG_CACHE_HOME/netserver` or `~/.cache/netserver` otherwise.
pub fn default_dir() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/netserver"));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("netserver"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/netserver"))
}
