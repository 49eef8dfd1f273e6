//! The master of the worker personalities (`multiplex`, `single`,
//! `prefork-simple`, `prefork`): forks the workers, keeps their number
//! right, reaps them, and acts on signals.
//!
//! | signal | master |
//! | --- | --- |
//! | INT, TERM | every worker stops at once; the master exits |
//! | QUIT | workers stop accepting and finish their connections (`quit_timeout`); then the master exits 0 |
//! | HUP | the configuration is checked, then the master re-executes itself with the listening sockets; the new master starts new workers and asks the old ones to finish |
//! | TTIN, TTOU | one worker more or less (`workers`, or `max_servers`) |
//! | CHLD | dead workers are reaped and replaced |
//! | `sig_passthrough` | passed on to every worker |

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::inherit::{self, Handed};
use super::signals::{MASTER_SIGNALS, Signals};
use super::status::{self, StatusReader};
use crate::config::{AcceptSerialization, Config, ServerType};
use crate::server::{self, Mode, Service};

/// How long workers told to stop at once may take before they are killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often the master looks around while stopping.
const STOPPING_TICK: Duration = Duration::from_millis(50);

/// Runs the master until it is told to stop.
pub fn run(config: &Config, services: Vec<Service>, handed: Handed) -> Result<()> {
    let mut master = Master::new(config, services)?;
    for pid in handed.old_workers {
        master.old.insert(Pid::from_raw(pid));
    }
    let result = master.run();
    if let Some(path) = &master.own_lock_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// What the master knows of one worker.
#[derive(Debug)]
struct Worker {
    idle: bool,
    born: Instant,
    retiring: bool,
}

/// How the master is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    /// INT or TERM: workers were told to stop at once.
    Now { kill_at: Instant },
    /// QUIT: workers finish their connections.
    Drain { kill_at: Instant },
}

struct Master<'a> {
    config: &'a Config,
    services: Vec<Service>,
    signals: Option<Signals>,
    /// `prefork`: the read end where workers say busy or idle, and the
    /// write end they inherit.
    status: Option<(StatusReader, std::fs::File)>,
    lock_file: Option<PathBuf>,
    own_lock_file: Option<PathBuf>,
    workers: BTreeMap<Pid, Worker>,
    /// The previous master's workers, finishing after a HUP.
    old: BTreeSet<Pid>,
    /// Workers to keep (`workers`, 1, or `max_servers`).
    target: u32,
    /// Each service's next `dequeue` run.
    dequeue_at: Vec<Option<Instant>>,
    /// Running `dequeue` processes and their service.
    dequeuers: BTreeMap<Pid, usize>,
    stopping: Option<Stopping>,
}

impl<'a> Master<'a> {
    fn new(config: &'a Config, services: Vec<Service>) -> Result<Self> {
        let process = &config.process;
        let mut signals = MASTER_SIGNALS.to_vec();
        for name in &process.sig_passthrough {
            if let Some(signal) = super::signal_number(name)
                && !signals.contains(&signal)
            {
                signals.push(signal);
            }
        }
        let target = match process.server_type {
            ServerType::Multiplex => process.workers,
            ServerType::PreforkSimple | ServerType::Prefork => process.max_servers,
            _ => 1,
        };
        let status = if process.server_type == ServerType::Prefork {
            Some(status::channel()?)
        } else {
            None
        };
        let sockets: usize = services.iter().map(|s| s.sockets.len()).sum();
        let sequential = matches!(
            process.server_type,
            ServerType::PreforkSimple | ServerType::Prefork
        );
        let (lock_file, own_lock_file) =
            if sequential && sockets > 1 && process.serialize == AcceptSerialization::Flock {
                match &process.lock_file {
                    Some(path) => (Some(path.clone()), None),
                    None => {
                        let path = std::env::temp_dir()
                            .join(format!("netserver-{}.lock", std::process::id()));
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
        let dequeue_at = services
            .iter()
            .map(|s| s.dequeue.map(|(every, _)| Instant::now() + every))
            .collect();
        Ok(Self {
            config,
            services,
            signals: Some(Signals::new(&signals)?),
            status,
            lock_file,
            own_lock_file,
            dequeue_at,
            dequeuers: BTreeMap::new(),
            workers: BTreeMap::new(),
            old: BTreeSet::new(),
            target,
            stopping: None,
        })
    }

    fn run(&mut self) -> Result<()> {
        self.maintain()?;
        if !self.old.is_empty() {
            if self.config.process.leave_children_open_on_hup {
                tracing::info!("leaving the previous workers {:?} to finish", self.old);
            } else {
                tracing::info!("asking the previous workers {:?} to finish", self.old);
                for pid in &self.old {
                    let _ = kill(*pid, Signal::SIGQUIT);
                }
            }
        }
        loop {
            self.reap();
            match self.stopping {
                Some(_)
                    if self.workers.is_empty()
                        && self.old.is_empty()
                        && self.dequeuers.is_empty() =>
                {
                    return Ok(());
                }
                Some(Stopping::Now { kill_at } | Stopping::Drain { kill_at })
                    if Instant::now() >= kill_at =>
                {
                    for pid in self
                        .workers
                        .keys()
                        .chain(&self.old)
                        .chain(self.dequeuers.keys())
                    {
                        let _ = kill(*pid, Signal::SIGKILL);
                    }
                }
                Some(_) => {}
                None => {
                    self.maintain()?;
                    self.dequeue()?;
                }
            }
            self.wait(self.tick())?;
            let signals = self.signals.as_ref().map(Signals::take).unwrap_or_default();
            for signal in signals {
                self.on_signal(signal)?;
            }
            self.read_status();
        }
    }

    /// How long to sleep when nothing happens.
    fn tick(&self) -> Duration {
        let process = &self.config.process;
        if self.stopping.is_some() {
            return STOPPING_TICK;
        }
        let tick = match process.server_type {
            ServerType::Prefork => process.check_for_waiting.min(process.check_for_spawn),
            _ => process.check_for_dead,
        };
        let now = Instant::now();
        self.dequeue_at
            .iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .fold(tick, Duration::min)
    }

    /// Forks the `dequeue` runs that are due (at most `max_dequeue` of a
    /// service at once).
    fn dequeue(&mut self) -> Result<()> {
        let now = Instant::now();
        for index in 0..self.services.len() {
            let (Some(at), Some((every, max))) =
                (self.dequeue_at[index], self.services[index].dequeue)
            else {
                continue;
            };
            if at > now {
                continue;
            }
            self.dequeue_at[index] = Some(now + every);
            let running = self.dequeuers.values().filter(|&&i| i == index).count() as u32;
            if running >= max {
                tracing::debug!("dequeue of service {index} skipped: {running} still running");
                continue;
            }
            let handler = self.services[index].handler.clone();
            let pid = super::spawn(|| {
                if let Some(signals) = self.signals.take() {
                    signals.forget();
                }
                self.services.clear();
                server::run_dequeue(handler)
            })?;
            self.dequeuers.insert(pid, index);
        }
        Ok(())
    }

    /// Sleeps until a signal, a status message or `timeout`.
    fn wait(&self, timeout: Duration) -> Result<()> {
        let Some(signals) = &self.signals else {
            return Ok(());
        };
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if let Some((read, _)) = &self.status {
            fds.push(PollFd::new(read.fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(err) => Err(err).context("poll"),
        }
    }

    fn on_signal(&mut self, signal: Signal) -> Result<()> {
        let name = signal.as_str().trim_start_matches("SIG");
        // `sig_passthrough`: the workers get it first, as in Net::Server.
        if self
            .config
            .process
            .sig_passthrough
            .iter()
            .any(|n| n == name)
        {
            tracing::debug!("passing {name} to {} workers", self.workers.len());
            for pid in self.workers.keys() {
                let _ = kill(*pid, signal);
            }
        }
        match signal {
            Signal::SIGINT | Signal::SIGTERM => {
                tracing::info!("Received {name}: server closing");
                self.stop(
                    Signal::SIGTERM,
                    Stopping::Now {
                        kill_at: Instant::now() + TERM_GRACE,
                    },
                );
            }
            Signal::SIGQUIT => {
                tracing::info!("Received QUIT: finishing open connections, then closing");
                let grace = self.config.process.quit_timeout + TERM_GRACE;
                self.stop(
                    Signal::SIGQUIT,
                    Stopping::Drain {
                        kill_at: Instant::now() + grace,
                    },
                );
            }
            Signal::SIGHUP if self.stopping.is_none() => {
                let workers: Vec<Pid> = self.workers.keys().chain(&self.old).copied().collect();
                if let Some(signals) = &self.signals {
                    restart(&self.services, &workers, signals)?;
                }
            }
            Signal::SIGTTIN => {
                self.target = self.target.saturating_add(1);
                tracing::info!(
                    "Received TTIN: increasing {} to {}",
                    self.counted(),
                    self.target
                );
            }
            Signal::SIGTTOU => {
                self.target = self.target.saturating_sub(1).max(1);
                tracing::info!(
                    "Received TTOU: decreasing {} to {}",
                    self.counted(),
                    self.target
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// What TTIN and TTOU change, in Net::Server's words.
    fn counted(&self) -> &'static str {
        match self.config.process.server_type {
            ServerType::Multiplex => "workers",
            _ => "max_servers",
        }
    }

    /// Tells every worker to stop with `signal` and stops accepting.
    fn stop(&mut self, signal: Signal, how: Stopping) {
        // Close the master's listening sockets: once the workers close
        // theirs, no client is accepted any more.
        self.services.clear();
        for pid in self.workers.keys().chain(&self.old) {
            let _ = kill(*pid, signal);
        }
        for pid in self.dequeuers.keys() {
            let _ = kill(*pid, Signal::SIGTERM);
        }
        self.stopping = Some(match (self.stopping, how) {
            // TERM after QUIT still stops at once.
            (Some(Stopping::Now { kill_at }), _) => Stopping::Now { kill_at },
            (_, how) => how,
        });
    }

    /// Reaps every worker that ended.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.ended(pid, &format!("status {code}"), code == 0)
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.ended(pid, &format!("signal {}", signal.as_str()), false);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn ended(&mut self, pid: Pid, how: &str, clean: bool) {
        if self.dequeuers.remove(&pid).is_some() {
            return;
        }
        if self.old.remove(&pid) {
            tracing::debug!("previous worker {pid} ended ({how})");
            return;
        }
        let Some(worker) = self.workers.remove(&pid) else {
            return;
        };
        if clean || worker.retiring || self.stopping.is_some() {
            tracing::debug!("worker {pid} ended ({how})");
        } else {
            tracing::warn!("worker {pid} ended unexpectedly ({how}); replacing it");
        }
    }

    /// Starts or retires workers so that their number is right.
    fn maintain(&mut self) -> Result<()> {
        let process = &self.config.process;
        let live: Vec<(Pid, bool, Instant)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.retiring)
            .map(|(pid, w)| (*pid, w.idle, w.born))
            .collect();
        let count = live.len() as u32;
        let idle = live.iter().filter(|(_, idle, _)| *idle).count() as u32;
        let (start, retire) = match process.server_type {
            ServerType::Prefork => {
                let max = self.target;
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
            _ if count < self.target => (self.target - count, 0),
            _ => (0, count - self.target),
        };
        for _ in 0..start {
            self.start_worker()?;
        }
        if retire > 0 {
            // The longest idle first, once they have lived min_child_ttl.
            let ttl = process.min_child_ttl;
            let prefork = process.server_type == ServerType::Prefork;
            let mut candidates: Vec<&(Pid, bool, Instant)> = live
                .iter()
                .filter(|(_, idle, born)| *idle && (!prefork || born.elapsed() >= ttl))
                .collect();
            candidates.sort_by_key(|(_, _, born)| *born);
            for (pid, _, _) in candidates.into_iter().take(retire as usize) {
                tracing::debug!("retiring worker {pid}");
                let _ = kill(*pid, Signal::SIGQUIT);
                if let Some(worker) = self.workers.get_mut(pid) {
                    worker.retiring = true;
                }
            }
        }
        Ok(())
    }

    /// Forks one worker.
    fn start_worker(&mut self) -> Result<()> {
        let process = &self.config.process;
        let quit_timeout = process.quit_timeout;
        let pid = super::spawn(|| {
            // The child: the parent's signals are not its business.
            if let Some(signals) = self.signals.take() {
                signals.forget();
            }
            let services = std::mem::take(&mut self.services);
            let mode = match process.server_type {
                ServerType::Multiplex => Mode::Concurrent,
                ServerType::Single => Mode::Sequential {
                    max_requests: u64::MAX,
                    lock: None,
                    status: None,
                },
                _ => Mode::Sequential {
                    max_requests: process.max_requests,
                    // Each child opens the file itself: flock excludes
                    // open files, not processes sharing one.
                    lock: self
                        .lock_file
                        .as_ref()
                        .and_then(|path| std::fs::OpenOptions::new().write(true).open(path).ok()),
                    // Only the write end: were the read end open in the
                    // children, the pipe would outlive the master.
                    status: self.status.take().map(|(_, write)| write),
                },
            };
            server::run_worker(services, mode, quit_timeout)
        })?;
        tracing::debug!("worker {pid} started");
        self.workers.insert(
            pid,
            Worker {
                idle: true,
                born: Instant::now(),
                retiring: false,
            },
        );
        Ok(())
    }

    /// Reads the workers' busy and idle messages, in the order they were
    /// sent: the last one of each worker says what it is doing now.
    fn read_status(&mut self) {
        let Some((read, _)) = &self.status else {
            return;
        };
        read.drain(|pid, busy| {
            if let Some(worker) = self.workers.get_mut(&pid) {
                worker.idle = !busy;
            }
        });
    }
}

/// HUP: checks the configuration as it now reads, then re-executes this
/// program with the listening sockets of `services`, leaving `workers`
/// running for the new master to retire. With a configuration that does not
/// load, the server goes on as it was (and this returns).
pub fn restart(services: &[Service], workers: &[Pid], signals: &Signals) -> Result<()> {
    if let Some(dir) = crate::privileges::chrooted() {
        tracing::error!(
            "Received HUP, but the server runs in chroot {}, where it cannot re-execute itself; \
             still serving (stop and start it to reload)",
            dir.display()
        );
        return Ok(());
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            tracing::error!(
                "Received HUP, but this program cannot be found ({err}); still serving"
            );
            return Ok(());
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let check = match Command::new(&exe)
        .args(&args)
        .arg("--check")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(check) => check,
        Err(err) => {
            tracing::error!(
                "Received HUP, but the configuration cannot be checked ({err}); still serving"
            );
            return Ok(());
        }
    };
    if !check.status.success() {
        // Warnings come first; the error is the last line.
        let why = String::from_utf8_lossy(&check.stderr);
        let why = why.trim().lines().last().unwrap_or("no reason given");
        tracing::error!(
            "Received HUP, but the configuration does not load; still serving the old one: {}",
            why.trim_start_matches("netserver-host: ")
        );
        return Ok(());
    }
    tracing::info!("Received HUP: restarting with the listening sockets");
    let mut fds = Vec::new();
    for service in services {
        for bound in &service.sockets {
            inherit::keep_across_exec(&bound.socket)?;
            fds.push(format!("{}={}", bound.socket.as_raw_fd(), bound.listener));
        }
    }
    let workers: Vec<String> = workers.iter().map(ToString::to_string).collect();
    signals.hand_over()?;
    let err = Command::new(&exe)
        .args(&args)
        .env(inherit::LISTEN_FDS_VAR, fds.join(";"))
        .env(inherit::OLD_WORKERS_VAR, workers.join(","))
        .exec();
    signals.take_back()?;
    tracing::error!(
        "HUP: cannot re-execute {}: {err}; still serving",
        exe.display()
    );
    Ok(())
}
