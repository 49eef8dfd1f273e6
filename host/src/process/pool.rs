//! The worker pools (`multiplex`, `single`, `prefork-simple`, `prefork`):
//! workers that accept on the shared sockets, kept at the right number —
//! `workers`, one, `max_servers`, or for `prefork` between the spare
//! bounds as the workers say whether they are busy ([`plan`]). A master
//! keeps a pool per group of workers (see `group`).

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::unistd::Pid;

use super::children::Child;
use super::status::{self, StatusReader};
use super::worker::Mode;
use crate::config::{AcceptSerialization, ProcessConfig, ServerType};

/// What a pool needs beside its workers: `prefork`'s status pipe and the
/// accept lock of sequential workers on several sockets — each group's
/// own, so that a worker of one group never waits for another's lock, and
/// no group's workers can write to the pipe the master reads another's
/// messages from.
pub(super) struct Pool {
    /// `prefork`: the read end where workers say busy or idle, and the
    /// write end they inherit.
    status: Option<(StatusReader, std::fs::File)>,
    lock_file: Option<PathBuf>,
    /// The lock file made for this server (removed at the end).
    own_lock_file: Option<PathBuf>,
}

impl Pool {
    /// The pool of a group whose workers accept on `sockets` sockets:
    /// the shared workers' (`own` is `None`), or service `own`'s, whose
    /// lock file is `lock_file` with `.SERVICE` after it (by default a
    /// temporary file of its own).
    pub(super) fn new(process: &ProcessConfig, sockets: usize, own: Option<&str>) -> Result<Self> {
        let status = if process.server_type == ServerType::Prefork {
            Some(status::channel()?)
        } else {
            None
        };
        let sequential = matches!(
            process.server_type,
            ServerType::PreforkSimple | ServerType::Prefork
        );
        let (lock_file, own_lock_file) =
            if sequential && sockets > 1 && process.serialize == AcceptSerialization::Flock {
                match (&process.lock_file, own) {
                    (Some(path), None) => (Some(path.clone()), None),
                    (Some(path), Some(service)) => {
                        let mut path = path.clone().into_os_string();
                        path.push(format!(".{service}"));
                        (Some(PathBuf::from(path)), None)
                    }
                    (None, _) => {
                        let service = own.map_or(String::new(), |s| format!("-{s}"));
                        let name = format!("netserver-{}{service}.lock", std::process::id());
                        let path = std::env::temp_dir().join(name);
                        (Some(path.clone()), Some(path))
                    }
                }
            } else {
                (None, None)
            };
        if let Some(path) = &lock_file {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .with_context(|| format!("lock_file {}: cannot create", path.display()))?;
        }
        Ok(Self {
            status,
            lock_file,
            own_lock_file,
        })
    }

    /// What the master polls for the workers' messages.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.status.as_ref().map(|(read, _)| read.fd())
    }

    /// Removes the lock file made for this server.
    pub(super) fn clean_up(&self) {
        if let Some(path) = &self.own_lock_file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// In a new worker (after the fork, on its copy of the pool): how it
    /// serves.
    pub(super) fn worker_mode(&mut self, process: &ProcessConfig) -> Mode {
        match process.server_type {
            ServerType::Multiplex => Mode::Concurrent,
            ServerType::Single => Mode::Sequential {
                max_requests: u64::MAX,
                lock: None,
                status: None,
                idle_every: process.check_for_idle,
            },
            _ => Mode::Sequential {
                max_requests: process.max_requests,
                // Each worker opens the file itself: flock excludes open
                // files, not processes sharing one.
                lock: self
                    .lock_file
                    .as_ref()
                    .and_then(|path| std::fs::OpenOptions::new().write(true).open(path).ok()),
                // Only the write end: were the read end open in the
                // workers, the pipe would outlive the master.
                status: self.status.take().map(|(_, write)| write),
                idle_every: process.check_for_idle,
            },
        }
    }

    /// Reads the busy and idle messages of the workers of group `group`,
    /// in the order they were sent: the last one of each worker says what
    /// it is doing now. A message naming a process of another group is
    /// ignored.
    pub(super) fn read_status(&self, group: usize, workers: &mut BTreeMap<Pid, Child>) {
        let Some((read, _)) = &self.status else {
            return;
        };
        read.drain(|pid, busy| {
            if let Some(worker) = workers.get_mut(&pid).filter(|w| w.group == group) {
                worker.idle = !busy;
            }
        });
    }
}

/// What a pool's master must do to keep the right number of workers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Workers to start.
    pub(super) start: u32,
    /// Idle workers to retire (told to finish), the longest idle first.
    pub(super) retire: Vec<Pid>,
}

/// How many workers to start, and which to retire, so that there are
/// `target` (`workers`, 1, or `max_servers`) — for `prefork`, between
/// `min_servers` and `target`, with idle ones between the spare bounds,
/// retired only once they lived `min_child_ttl`.
pub(super) fn plan<'a>(
    process: &ProcessConfig,
    target: u32,
    workers: impl IntoIterator<Item = (&'a Pid, &'a Child)>,
    now: Instant,
) -> Plan {
    let live: Vec<(Pid, &Child)> = workers
        .into_iter()
        .filter(|(_, w)| !w.retiring)
        .map(|(pid, w)| (*pid, w))
        .collect();
    let count = live.len() as u32;
    let idle = live.iter().filter(|(_, w)| w.idle).count() as u32;
    let (start, retire) = match process.server_type {
        ServerType::Prefork => {
            let max = target;
            let min = process.min_servers.min(max);
            if count < min {
                (min - count, 0)
            } else if count > max {
                (0, count - max)
            } else if idle < process.min_spare_servers {
                ((process.min_spare_servers - idle).min(max - count), 0)
            } else if idle > process.max_spare_servers {
                (0, (idle - process.max_spare_servers).min(count - min))
            } else {
                (0, 0)
            }
        }
        _ if count < target => (target - count, 0),
        _ => (0, count - target),
    };
    let prefork = process.server_type == ServerType::Prefork;
    let mut candidates: Vec<&(Pid, &Child)> = live
        .iter()
        .filter(|(_, w)| {
            w.idle && (!prefork || now.duration_since(w.born) >= process.min_child_ttl)
        })
        .collect();
    candidates.sort_by_key(|(_, w)| w.born);
    let retire = candidates
        .into_iter()
        .take(retire as usize)
        .map(|(pid, _)| *pid)
        .collect();
    Plan { start, retire }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn process(settings: &[(&str, &str)]) -> ProcessConfig {
        crate::config::Config::from_command_line(settings)
            .unwrap()
            .process
    }

    /// Workers with pids 1.., each (idle, born this many seconds ago,
    /// retiring).
    fn workers(now: Instant, specs: &[(bool, u64, bool)]) -> BTreeMap<Pid, Child> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(idle, age, retiring))| {
                let child = Child {
                    idle,
                    born: now - Duration::from_secs(age),
                    retiring,
                    slot: None,
                    group: 0,
                };
                (Pid::from_raw(i as i32 + 1), child)
            })
            .collect()
    }

    /// A configuration, the target, the workers, and the plan's start
    /// count and retired pids.
    type Case<'a> = (
        &'a ProcessConfig,
        u32,
        Vec<(bool, u64, bool)>,
        u32,
        Vec<i32>,
    );

    #[test]
    fn a_groups_pipe_speaks_for_its_own_workers_only() {
        let prefork = process(&[("server_type", "prefork")]);
        let pool = Pool::new(&prefork, 1, Some("chat")).unwrap();
        let (_, write) = pool.status.as_ref().unwrap();
        let say = super::status::StatusWriter::new(write.try_clone().unwrap());
        let me = Pid::from_raw(std::process::id() as i32);
        let mut workers = BTreeMap::from([(me, Child::new(true, None, 1))]);
        // A message in group 0's pipe about a worker of group 1: ignored.
        say.say(true);
        pool.read_status(0, &mut workers);
        assert!(workers[&me].idle);
        say.say(true);
        pool.read_status(1, &mut workers);
        assert!(!workers[&me].idle);
    }

    #[test]
    fn each_group_has_its_own_accept_lock() {
        let dir = std::env::temp_dir().join(format!("ns-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let given = dir.join("accept.lock");
        let lock = |settings: &[(&str, &str)], own| {
            let process = process(&[&[("server_type", "prefork-simple")], settings].concat());
            let pool = Pool::new(&process, 2, own).unwrap();
            let path = pool.lock_file.clone().unwrap();
            assert!(path.exists(), "{}", path.display());
            pool.clean_up();
            (path, pool.own_lock_file.is_some())
        };
        let at = [("lock_file", given.to_str().unwrap())];
        assert_eq!(lock(&at, None), (given.clone(), false));
        assert_eq!(
            lock(&at, Some("chat")),
            (dir.join("accept.lock.chat"), false)
        );
        let temp = std::env::temp_dir();
        let pid = std::process::id();
        let (shared, made) = lock(&[], None);
        assert_eq!(
            (shared, made),
            (temp.join(format!("netserver-{pid}.lock")), true)
        );
        let (own, made) = lock(&[], Some("chat"));
        assert_eq!(
            (own.clone(), made),
            (temp.join(format!("netserver-{pid}-chat.lock")), true)
        );
        assert!(!own.exists(), "removed at the end");
        // One socket: no lock to take.
        let process = process(&[("server_type", "prefork-simple")]);
        assert_eq!(
            Pool::new(&process, 1, Some("chat")).unwrap().lock_file,
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pool_keeps_its_number_and_prefork_its_spares() {
        let now = Instant::now() + Duration::from_secs(3600);
        let multiplex = process(&[("workers", "2")]);
        let prefork = process(&[
            ("server_type", "prefork"),
            ("min_servers", "2"),
            ("max_servers", "6"),
            ("min_spare_servers", "1"),
            ("max_spare_servers", "2"),
            ("min_child_ttl", "10"),
        ]);
        let idle = |age| (true, age, false);
        let busy = (false, 0, false);
        let cases: Vec<Case> = vec![
            (&multiplex, 2, vec![], 2, vec![]),
            (&multiplex, 2, vec![idle(0)], 1, vec![]),
            // TTOU: one too many; the oldest idle one goes.
            (&multiplex, 1, vec![idle(5), idle(9)], 0, vec![2]),
            // A retiring worker does not count.
            (&multiplex, 2, vec![(true, 0, true), idle(0)], 1, vec![]),
            (&prefork, 6, vec![], 2, vec![]),
            // Both busy: one spare more.
            (&prefork, 6, vec![busy, busy], 1, vec![]),
            // Four idle, two spares too many: the oldest go.
            (
                &prefork,
                6,
                vec![idle(60), idle(11), idle(30), idle(20)],
                0,
                vec![1, 3],
            ),
            // Too young to retire.
            (&prefork, 6, vec![idle(1); 4], 0, vec![]),
            // Never above max_servers.
            (&prefork, 3, vec![busy; 3], 0, vec![]),
        ];
        for (i, (process, target, specs, start, retire)) in cases.into_iter().enumerate() {
            let got = plan(process, target, &workers(now, &specs), now);
            let retire = retire.into_iter().map(Pid::from_raw).collect();
            assert_eq!(got, Plan { start, retire }, "case {i}");
        }
    }
}
