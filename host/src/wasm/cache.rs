//! Compiled components kept on disk, so that a restart (or a HUP) does not
//! compile the same module again: a file per module, named by the SHA-256
//! of its bytes and of the engine's settings, written atomically, in a
//! directory only this user can write to.

use std::hash::Hasher;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, anyhow};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::CacheDir;

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// The cache in `dir` (created when missing: mode 0700, or 0755 for
    /// root, whose cache the server still reads after it drops root).
    /// `None`, with a warning, when the directory cannot be trusted: owned
    /// by a user other than this one or root, or writable by others — its
    /// files are loaded as machine code.
    pub fn open(dir: &Path) -> Option<Self> {
        let root = nix::unistd::geteuid().is_root();
        if !dir.is_dir()
            && let Err(err) = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if root { 0o755 } else { 0o700 })
                .create(dir)
        {
            tracing::warn!("module cache {}: cannot create: {err}", dir.display());
            return None;
        }
        let meta = std::fs::metadata(dir).ok()?;
        let owner_ok = meta.uid() == nix::unistd::geteuid().as_raw() || meta.uid() == 0;
        let private = meta.permissions().mode() & 0o022 == 0;
        if !(owner_ok && private) {
            tracing::warn!(
                "module cache {}: not used: it must belong to this user or root and not be writable by others",
                dir.display()
            );
            return None;
        }
        if root && meta.permissions().mode() & 0o055 != 0o055 {
            // Readable by the user the server becomes.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        Some(Self {
            dir: dir.to_owned(),
        })
    }

    /// The cache `setting` asks for, if any can be used (see [`open`]).
    ///
    /// [`open`]: Self::open
    pub fn configured(setting: &CacheDir) -> Option<Self> {
        match setting {
            CacheDir::Off => None,
            CacheDir::At(dir) => Self::open(dir),
            CacheDir::Default => default_dir().and_then(|dir| Self::open(&dir)),
        }
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
                    CACHE_HITS.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("loaded the compiled module from {}", path.display());
                    if nix::unistd::geteuid().is_root() {
                        // Readable by the user the server becomes (a HUP
                        // loads it again after root was dropped).
                        let _ =
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
                    }
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
        let component = compile(engine, bytes)?;
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
            .mode_private()
            .open(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        tracing::debug!("stored the compiled module in {}", path.display());
        Ok(())
    }
}

/// `OpenOptions::mode`: 0600, or 0644 for root (whose cache the server
/// reads after dropping root; only root can write it).
trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        let mode = if nix::unistd::geteuid().is_root() {
            0o644
        } else {
            0o600
        };
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

/// Modules compiled by this process, and loaded from the cache instead.
static COMPILED: AtomicU64 = AtomicU64::new(0);
static CACHE_HITS: AtomicU64 = AtomicU64::new(0);

/// Compiles `bytes` (counted: see [`counts`]): a component, or a WASI
/// preview-1 core module, adapted first (see [`super::adapt`]); the
/// cache keeps it under the core module's bytes.
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    COMPILED.fetch_add(1, Ordering::Relaxed);
    if wasmparser::Parser::is_core_wasm(bytes) {
        let component = super::adapt::to_component(bytes)?;
        return Component::new(engine, &component)
            .map_err(|e| anyhow!("invalid adapted component: {e:#}"));
    }
    Component::new(engine, bytes).map_err(|e| anyhow!("invalid component: {e:#}"))
}

/// How many modules this process compiled, and how many it loaded
/// compiled from the cache.
pub fn counts() -> (u64, u64) {
    (
        COMPILED.load(Ordering::Relaxed),
        CACHE_HITS.load(Ordering::Relaxed),
    )
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
    const SYSTEM: &str = "/var/cache/netserver";
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from(SYSTEM));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("netserver"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let own_home = home.as_ref().is_some_and(|h| {
        std::fs::metadata(h).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
    });
    match home {
        Some(home) if own_home => Some(home.join(".cache/netserver")),
        // A server that dropped root keeps root's HOME: it reads the
        // system cache root filled.
        _ => Some(PathBuf::from(SYSTEM)),
    }
}
