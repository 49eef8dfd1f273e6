//! `watch_module`: a service's module served anew when its file changes,
//! without restarting anything — neither the other services nor this
//! one's open connections.
//!
//! The master looks at each watched module's file once a second
//! ([`Watcher`]). When its inode, size or modification time changed, and
//! then stayed the same for one more look (a file still being written is
//! not read half-way), the master loads it — from the module cache when it
//! is there, else compiled and stored there — and, if it loads, serves it
//! from then on (workers it forks later start with it) and says so on the
//! board ([`board::module_replaced`]). A module that cannot be served (not
//! wasm, another world, an import the host does not give) is logged, and
//! the previous one keeps serving; the file is looked at again once it
//! changes.
//!
//! Each worker looks at the board as a connection of a watched service
//! starts (`Service::refresh`: one atomic load): when the service's
//! generation moved, the worker loads the module too — from the cache,
//! where the master just stored it, else compiled on a blocking thread —
//! before it serves that connection, so every connection accepted after
//! the master's log line gets the new module, in every personality; open
//! ones finish on the module they started with. An `instance per-worker`
//! instance of the old module runs its `child-finish-hook` once its
//! connection is done, and the next connection makes one of the new
//! module.
//!
//! A mux handler is not watched (its one instance per worker holds every
//! connection; refused at start), and a new module of another kind (a
//! WASI command for a handler, say) is refused: both need a restart (HUP).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::board;
use crate::service::Service;
use crate::wasm::ModuleStamp;

/// How often the master looks at the watched files.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// One watched module, in the master.
#[derive(Debug)]
struct Watched {
    /// The service's place in the master's list.
    at: usize,
    path: PathBuf,
    /// The version served (or refused) last.
    seen: Option<ModuleStamp>,
    /// A new version seen at the last look, not yet settled.
    pending: Option<ModuleStamp>,
    /// Whether the file could not be read at the last look (said once).
    unreadable: bool,
}

/// The master's watch over the `watch_module` services' files.
#[derive(Debug)]
pub struct Watcher {
    files: Vec<Watched>,
    next: Instant,
}

impl Watcher {
    /// Watches the modules of `services` that asked for it, as they are
    /// now.
    pub fn new(services: &[Service]) -> Self {
        let files = services
            .iter()
            .enumerate()
            .filter_map(|(at, service)| {
                let watch = service.watch.as_ref()?;
                let path = watch.config.module.clone()?;
                let seen = watch.served;
                Some(Watched {
                    at,
                    path,
                    seen,
                    pending: None,
                    unreadable: false,
                })
            })
            .collect();
        Self {
            files,
            next: Instant::now() + LOOK_EVERY,
        }
    }

    /// When the master must look next, if it watches anything.
    pub fn next_look(&self) -> Option<Instant> {
        (!self.files.is_empty()).then_some(self.next)
    }

    /// Looks at the files, if it is time: loads and serves each that
    /// changed and settled.
    pub fn look(&mut self, services: &[Service]) {
        let now = Instant::now();
        if self.files.is_empty() || now < self.next {
            return;
        }
        self.next = now + LOOK_EVERY;
        for watched in &mut self.files {
            let Some(service) = services.get(watched.at) else {
                continue;
            };
            let stamp = match ModuleStamp::of(&watched.path) {
                Ok(stamp) => {
                    watched.unreadable = false;
                    stamp
                }
                Err(err) => {
                    if !watched.unreadable {
                        tracing::warn!(
                            "service {}: watch_module: cannot read {}: {err}; the module served stays",
                            service.name,
                            watched.path.display()
                        );
                        watched.unreadable = true;
                    }
                    continue;
                }
            };
            if watched.seen == Some(stamp) {
                watched.pending = None;
                continue;
            }
            if watched.pending != Some(stamp) {
                // Changed: load it once it stays as it is for a look.
                watched.pending = Some(stamp);
                continue;
            }
            watched.pending = None;
            watched.seen = Some(stamp);
            replace_in_master(service);
        }
    }
}

/// In the master: loads the module of `service` anew and serves it.
fn replace_in_master(service: &Service) {
    let Some(watch) = &service.watch else {
        return;
    };
    let path = watch
        .config
        .module
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string());
    let started = Instant::now();
    let loaded = service
        .handler()
        .load_anew(&watch.config, watch.cache.as_ref())
        .and_then(|handler| service.set_handler(handler));
    match loaded {
        Ok(()) => {
            let generation = board::module_replaced(service.index);
            watch.generation.store(generation, Ordering::Release);
            tracing::info!(
                "service {}: {path} changed: new connections get the new module (loaded in {} ms)",
                service.name,
                started.elapsed().as_millis()
            );
        }
        Err(err) => tracing::error!(
            "service {}: {path} changed, but cannot be served: {err:#}; the module served stays",
            service.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file() {
        let dir = std::env::temp_dir().join(format!("netserver-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.wasm");
        std::fs::write(&path, b"one").unwrap();
        let first = ModuleStamp::of(&path).unwrap();
        assert_eq!(ModuleStamp::of(&path).unwrap(), first, "unchanged");
        // Replaced by a rename, as deployments do: another inode.
        let next = dir.join("m.wasm.new");
        std::fs::write(&next, b"one").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let renamed = ModuleStamp::of(&path).unwrap();
        assert_ne!(renamed, first, "a new inode");
        // Written in place, longer.
        std::fs::write(&path, b"longer").unwrap();
        assert_ne!(ModuleStamp::of(&path).unwrap(), renamed, "a new size");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
