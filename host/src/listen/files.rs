//! Unix socket files: what may be removed before binding one (a stale
//! socket only), its mode and group (`socket_mode`, `socket_group`), and
//! removing the files the server bound when it exits ([`SocketFiles`]) —
//! not across a HUP, whose new process serves the same files.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::config::SocketSettings;

/// Makes way for a socket file at `path`: nothing there is fine; a socket
/// no process listens on (a server that died without removing it) is
/// removed; a socket a process listens on, or any other file, is an error
/// naming the path, and is left alone.
pub fn clear_stale(path: &Path) -> Result<()> {
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => bail!("cannot look at {shown}: {err}"),
    };
    if !meta.file_type().is_socket() {
        bail!("{shown} exists and is not a socket (not removed)");
    }
    if is_live(path) {
        bail!("{shown} is a socket a running process listens on (another server?)");
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!("removed the stale socket file {shown} (no process listened on it)");
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => bail!("cannot remove the stale socket file {shown}: {err}"),
    }
}

/// Whether a process listens on the socket file `path`, stream or
/// datagram: a connection to a socket nobody serves is refused.
fn is_live(path: &Path) -> bool {
    match UnixStream::connect(path) {
        Ok(_) => return true,
        // A datagram socket is there: try it as one.
        Err(err) if err.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {}
        Err(_) => return false,
    }
    UnixDatagram::unbound().is_ok_and(|socket| socket.connect(path).is_ok())
}

/// Gives the socket file at `path` the mode and group `settings` ask for.
pub fn set_owner_and_mode(path: &Path, settings: &SocketSettings) -> Result<()> {
    let shown = path.display();
    if let Some(gid) = settings.socket_group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| anyhow::anyhow!("socket_group: cannot give {shown} group {gid}: {e}"))?;
    }
    if let Some(mode) = settings.socket_mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            anyhow::anyhow!("socket_mode: cannot give {shown} mode {mode:04o}: {e}")
        })?;
    }
    Ok(())
}

/// The socket files this server bound (or took over across a HUP),
/// removed when dropped: as the server exits, by the process that bound
/// them, and only while the file there is still the one it bound.
#[derive(Debug, Default)]
pub struct SocketFiles {
    files: Vec<(PathBuf, Identity)>,
    owner: u32,
}

impl SocketFiles {
    /// Records the socket files at `paths`, as they are now.
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let files = paths
            .into_iter()
            .filter_map(|path| {
                let meta = std::fs::symlink_metadata(&path).ok()?;
                meta.file_type()
                    .is_socket()
                    .then(|| (path, Identity::of(&meta)))
            })
            .collect();
        Self {
            files,
            owner: std::process::id(),
        }
    }
}

/// What tells one file from another that later took its name: an inode
/// number may be used again, not with the same change time.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        for (path, identity) in &self.files {
            let same = std::fs::symlink_metadata(path).is_ok_and(|m| Identity::of(&m) == *identity);
            if !same {
                continue;
            }
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(
                    "cannot remove the socket file {} ({err}); its directory must be writable by uid {}",
                    path.display(),
                    nix::unistd::geteuid()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_a_stale_socket_is_cleared() {
        let dir = std::env::temp_dir().join(format!("ns-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Nothing there.
        clear_stale(&dir.join("none.sock")).unwrap();
        // A regular file.
        let file = dir.join("file");
        std::fs::write(&file, "x").unwrap();
        let err = clear_stale(&file).unwrap_err().to_string();
        assert!(err.contains("exists and is not a socket"), "{err}");
        assert!(file.exists());
        // A live stream socket, and a live datagram socket.
        let live = dir.join("live.sock");
        let listener = UnixListener::bind(&live).unwrap();
        let err = clear_stale(&live).unwrap_err().to_string();
        assert!(err.contains("a running process listens on"), "{err}");
        let live_dgram = dir.join("live-dgram.sock");
        let dgram = UnixDatagram::bind(&live_dgram).unwrap();
        assert!(clear_stale(&live_dgram).is_err());
        // Stale: the sockets closed, the files left.
        drop(listener);
        drop(dgram);
        clear_stale(&live).unwrap();
        clear_stale(&live_dgram).unwrap();
        assert!(!live.exists() && !live_dgram.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bound_files_are_removed_only_while_they_are_the_same() {
        let dir = std::env::temp_dir().join(format!("ns-files-drop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.sock");
        let b = dir.join("b.sock");
        let _la = UnixListener::bind(&a).unwrap();
        let lb = UnixListener::bind(&b).unwrap();
        let files = SocketFiles::new([a.clone(), b.clone()]);
        // Another server took b's name meanwhile.
        drop(lb);
        std::fs::remove_file(&b).unwrap();
        let _other = UnixListener::bind(&b).unwrap();
        drop(files);
        assert!(!a.exists(), "ours is removed");
        assert!(b.exists(), "another's is left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
