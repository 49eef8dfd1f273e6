//! The master of every personality that has one (all but `inetd`): one
//! loop that forks, reaps and acts on signals. What differs between the
//! personalities is which children it keeps — pools of workers, one per
//! group (see `group` and `pool`), or for `fork` a child per connection,
//! accepted by the master — and nothing else.
//!
//! Each child becomes who it must as it starts, when the master kept root
//! for that (see [`crate::privileges::Plans`]): a worker of a service with
//! its own `user` that user, every other child the server's user.
//!
//! | signal | intent | master |
//! | --- | --- | --- |
//! | INT, TERM | stop | every child stops at once; the master exits |
//! | QUIT (and TERM with `term_drains`) | drain | children stop accepting and finish their connections (`quit_timeout`); then the master exits 0 |
//! | HUP | restart | the configuration is checked, then the master re-executes itself with the listening sockets; the new master starts new children and asks the old ones to finish |
//! | TTIN, TTOU | more, fewer | one child more or less (`workers`, or `max_servers`), in every group |
//! | CHLD | reap | ended children are reaped (and workers replaced, in their group) |
//! | `sig_passthrough` | pass on | passed on to every child, before its own meaning |
//!
//! Children told to stop at once get [`TERM_GRACE`] before they are
//! killed; told to drain, `quit_timeout` and then the same grace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::children::Child;
use super::group::{self, Group};
use super::notify;
use super::pool;
use super::reload::Watcher;
use super::restart::{self, restart};
use super::signals::{Intent, MASTER_SIGNALS, Signals};
use super::spawn::{spawn, tie_to};
use super::worker;
use crate::board::{self, Closing};
use crate::busy::Busy;
use crate::config::port::Proto;
use crate::config::{Config, ServerType};
use crate::listen::inherit::Handed;
use crate::metrics::MasterFigures;
use crate::metrics::http::Endpoint;
use crate::privileges::Plans;
use crate::service::{Route, Service};
use crate::wasm::engine::SwapWatch;

/// How long children told to stop at once may take before they are
/// killed; also what a drain's children get past `quit_timeout`.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often the master looks around while stopping.
const STOPPING_TICK: Duration = Duration::from_millis(50);

/// Runs the master of the configured personality with the bound services
/// until it is told to stop; each child it forks becomes who `privileges`
/// says.
pub fn run(
    config: &Config,
    services: Vec<Service>,
    handed: Handed,
    metrics: Option<Endpoint>,
    privileges: &Plans,
) -> Result<()> {
    let process = &config.process;
    let (kind, most) = match process.server_type {
        ServerType::Fork => (Kind::Forking, process.workers.max(process.max_servers)),
        _ => {
            let groups = group::groups(config, &services)?;
            let most = groups.iter().map(|g| g.most).sum();
            (Kind::Pool(groups), most)
        }
    };
    // Room on the board for every group's children at once, and for
    // TTIN's extra ones.
    board::create(most as usize * 2 + 64, services.len())?;
    let mut master = Master::new(config, services, kind, privileges)?;
    master.metrics = metrics;
    master.old = handed.old_workers.into_iter().map(Pid::from_raw).collect();
    let result = master.run();
    if let Kind::Pool(groups) = &master.kind {
        for group in groups {
            group.pool.clean_up();
        }
    }
    result
}

/// Which children the master keeps.
enum Kind {
    /// Pools of workers that accept (`multiplex`, `single`,
    /// `prefork-simple`, `prefork`): one per group.
    Pool(Vec<Group>),
    /// A child per connection, accepted by the master (`fork`).
    Forking,
}

/// How the master is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    /// INT or TERM: children were told to stop at once.
    Now { kill_at: Instant },
    /// QUIT: children finish their connections.
    Drain { kill_at: Instant },
}

/// The master process.
struct Master<'a> {
    config: &'a Config,
    /// Who each child becomes.
    privileges: &'a Plans,
    /// The master's own pid (its children's parent).
    pid: Pid,
    /// The services, with their listening sockets (closed when stopping).
    services: Vec<Service>,
    signals: Option<Signals>,
    children: BTreeMap<Pid, Child>,
    /// The previous master's children, finishing after a HUP.
    old: BTreeSet<Pid>,
    /// `fork`: children at once (`max_servers`), which TTIN and TTOU
    /// change (a pool's groups have their own).
    target: u32,
    /// Each service's next `dequeue` run.
    dequeue_at: Vec<Option<Instant>>,
    /// Running `dequeue` processes and their service.
    dequeuers: BTreeMap<Pid, usize>,
    stopping: Option<Stopping>,
    kind: Kind,
    /// The metrics endpoint (`metrics_port`).
    metrics: Option<Endpoint>,
    /// The services' names, for the metrics.
    names: Vec<String>,
    /// The modules of `watch_module` services.
    watcher: Watcher,
    /// Swap turned on after the engine chose PAGEMAP_SCAN.
    swap: SwapWatch,
}

impl<'a> Master<'a> {
    fn new(
        config: &'a Config,
        services: Vec<Service>,
        kind: Kind,
        privileges: &'a Plans,
    ) -> Result<Self> {
        let process = &config.process;
        let mut signals = MASTER_SIGNALS.to_vec();
        for signal in &process.sig_passthrough {
            if !signals.contains(signal) {
                signals.push(*signal);
            }
        }
        let dequeue_at = services
            .iter()
            .map(|s| s.dequeue.map(|(every, _)| Instant::now() + every))
            .collect();
        let services_names = services.iter().map(|s| s.name.to_string()).collect();
        let watcher = Watcher::new(&services);
        Ok(Self {
            config,
            privileges,
            pid: nix::unistd::getpid(),
            services,
            signals: Some(Signals::new(&signals)?),
            children: BTreeMap::new(),
            old: BTreeSet::new(),
            target: process.max_servers,
            dequeue_at,
            dequeuers: BTreeMap::new(),
            stopping: None,
            kind,
            metrics: None,
            names: services_names,
            watcher,
            swap: SwapWatch::new(),
        })
    }

    fn run(&mut self) -> Result<()> {
        self.maintain()?;
        self.greet_old();
        notify::ready();
        loop {
            self.reap();
            match self.stopping {
                Some(_) if self.all_gone() => return Ok(()),
                Some(Stopping::Now { kill_at } | Stopping::Drain { kill_at })
                    if Instant::now() >= kill_at =>
                {
                    for pid in self.every_child() {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
                Some(_) => {}
                None => {
                    self.watcher.look(&self.services);
                    self.swap.look();
                    self.maintain()?;
                    self.dequeue()?;
                    notify::status();
                }
            }
            let ready = self.wait(self.tick())?;
            self.serve_metrics();
            let signals = self.signals.as_ref().map(Signals::take).unwrap_or_default();
            let process = &self.config.process;
            let intents = signals
                .into_iter()
                .flat_map(|s| Intent::of(s, &process.sig_passthrough, process.term_drains));
            for intent in intents {
                self.act(intent)?;
            }
            if self.stopping.is_none() {
                self.after_wait(&ready)?;
            }
        }
    }

    /// After a HUP: asks the previous master's children to finish, unless
    /// `leave_children_open_on_hup`.
    fn greet_old(&self) {
        if self.old.is_empty() {
            return;
        }
        if self.config.process.leave_children_open_on_hup {
            tracing::info!("leaving the previous workers {:?} to finish", self.old);
        } else {
            tracing::info!("asking the previous workers {:?} to finish", self.old);
            for pid in &self.old {
                let _ = kill(*pid, Signal::SIGQUIT);
            }
        }
    }

    fn all_gone(&self) -> bool {
        self.children.is_empty() && self.old.is_empty() && self.dequeuers.is_empty()
    }

    fn every_child(&self) -> Vec<Pid> {
        (self
            .children
            .keys()
            .chain(&self.old)
            .chain(self.dequeuers.keys()))
        .copied()
        .collect()
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
            .chain([&self.watcher.next_look(), &self.swap.next_look()])
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .fold(tick.min(notify::every()), Duration::min)
    }

    /// Sleeps until a signal, a child's message, a client (`fork`, while
    /// there is room) or `timeout`; returns the listening sockets that are
    /// ready, as (service, socket) indices.
    fn wait(&self, timeout: Duration) -> Result<Vec<(usize, usize)>> {
        let Some(signals) = &self.signals else {
            return Ok(Vec::new());
        };
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if let Some(metrics) = &self.metrics {
            fds.extend(metrics.fds().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        }
        let mut sockets = Vec::new();
        match &self.kind {
            Kind::Pool(groups) => fds.extend(
                groups
                    .iter()
                    .filter_map(|g| g.pool.fd())
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            ),
            Kind::Forking if self.stopping.is_none() && self.has_room() => {
                for (s, service) in self.services.iter().enumerate() {
                    if !self.service_has_room(s) {
                        continue;
                    }
                    for (b, bound) in service.sockets.iter().enumerate() {
                        fds.push(PollFd::new(
                            std::os::fd::AsFd::as_fd(&bound.socket),
                            PollFlags::POLLIN,
                        ));
                        sockets.push((s, b));
                    }
                }
            }
            Kind::Forking => {}
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err).context("poll"),
        }
        let first_socket = fds.len() - sockets.len();
        Ok(fds[first_socket..]
            .iter()
            .zip(sockets)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .map(|(_, at)| at)
            .collect())
    }

    /// Answers the scrapers waiting on the metrics endpoint: the board's
    /// sums and the master's own figures.
    fn serve_metrics(&mut self) {
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        let names = &self.names;
        endpoint.serve(|| {
            let (compilations, cache_hits) = crate::wasm::cache::counts();
            let master = MasterFigures {
                restarts: restart::count(),
                compilations,
                cache_hits,
            };
            crate::metrics::render(names, board::snapshot().unwrap_or_default(), master)
        });
    }

    /// Whether another child may start (`fork`: one per connection).
    fn has_room(&self) -> bool {
        (self.children.len() as u32) < self.target
    }

    /// `fork`: whether service `index` may have another child — fewer
    /// than its own `max_servers` (`isolation process`), if it has one.
    fn service_has_room(&self, index: usize) -> bool {
        let Some(cap) = self.config.services[index].own.max_servers else {
            return true;
        };
        let serving = self.children.values().filter(|c| c.group == index).count();
        (serving as u32) < cap
    }

    /// What the children told the master (`prefork`), or the clients that
    /// arrived (`fork`).
    fn after_wait(&mut self, ready: &[(usize, usize)]) -> Result<()> {
        match &self.kind {
            Kind::Pool(groups) => {
                for (index, group) in groups.iter().enumerate() {
                    group.pool.read_status(index, &mut self.children);
                }
                Ok(())
            }
            Kind::Forking => self.accept(ready),
        }
    }

    /// Starts or retires workers so that the number of each group's is
    /// right (`fork` starts a child per connection, as clients arrive).
    fn maintain(&mut self) -> Result<()> {
        let Kind::Pool(groups) = &self.kind else {
            return Ok(());
        };
        let now = Instant::now();
        let plans: Vec<pool::Plan> = groups
            .iter()
            .enumerate()
            .map(|(index, group)| {
                let workers = self.children.iter().filter(|(_, c)| c.group == index);
                pool::plan(&self.config.process, group.target, workers, now)
            })
            .collect();
        for (index, plan) in plans.into_iter().enumerate() {
            for _ in 0..plan.start {
                self.start_worker(index)?;
            }
            for pid in plan.retire {
                tracing::debug!("retiring {}", self.who(pid, index));
                let _ = kill(pid, Signal::SIGQUIT);
                if let Some(worker) = self.children.get_mut(&pid) {
                    worker.retiring = true;
                }
            }
        }
        Ok(())
    }

    /// Forks one worker of group `index`. It keeps only its group's
    /// services (the listening sockets of the others' are closed in it)
    /// and its group's status pipe and accept lock; then, its lock file
    /// open, it becomes its group's user.
    fn start_worker(&mut self, index: usize) -> Result<()> {
        let slot = board::free_slot();
        let pid = self.fork_child(|master| {
            board::enter(slot);
            let config = master.config;
            let process = &config.process;
            let Kind::Pool(groups) = &mut master.kind else {
                unreachable!("only a pool's master starts workers")
            };
            // The other groups' pipes and files close with them.
            let mut group = groups.swap_remove(index);
            groups.clear();
            let mode = group.pool.worker_mode(process);
            let services = master.take_services(&group.members);
            if let Err(status) = master.become_who(group.service()) {
                return status;
            }
            // A tenant's own workers ask for long slices while busy.
            let busy = group
                .service()
                .map(|index| config.services[index].busy_slice)
                .filter(|&ms| ms > 0)
                .and_then(|ms| Busy::new(Duration::from_millis(ms.into())));
            worker::run_worker(services, mode, process.quit_timeout, busy)
        })?;
        tracing::debug!("{} started", self.who(pid, index));
        self.on_board(pid, slot);
        self.children.insert(pid, Child::new(true, slot, index));
        Ok(())
    }

    /// A child of group `group` as the log names it (a `fork` child: as
    /// `child PID`).
    fn who(&self, pid: Pid, group: usize) -> String {
        match &self.kind {
            Kind::Pool(groups) => groups
                .get(group)
                .map_or_else(|| format!("worker {pid}"), |g| g.worker(pid)),
            Kind::Forking => format!("child {pid}"),
        }
    }

    /// In a child of the master, serving service `service` (`None`: a
    /// shared worker): becomes the user of the processes serving it, when
    /// the master kept root for that, and is then still ended by the
    /// master's death. `Err`: the exit status of a child that could not.
    fn become_who(&self, service: Option<usize>) -> Result<(), i32> {
        match self.privileges.settle_child(service) {
            Ok(false) => Ok(()),
            Ok(true) => {
                // A change of user clears the parent-death signal.
                tie_to(self.pid);
                Ok(())
            }
            Err(err) => {
                let whose = service.map_or_else(
                    || "the server's user".to_owned(),
                    |i| format!("the user of service {}", self.config.services[i].name),
                );
                tracing::error!("cannot become {whose}: {err:#}");
                Err(1)
            }
        }
    }

    /// After forking `pid`: its slot on the board is its.
    fn on_board(&self, pid: Pid, slot: Option<usize>) {
        match slot {
            Some(slot) => board::occupy(slot, pid.as_raw().unsigned_abs()),
            None => tracing::debug!("child {pid} has no slot on the board: it is not counted"),
        }
    }

    /// `fork`: accepts a client on each of the `ready` sockets (service and
    /// socket indices), while there is room, and forks a child to serve it.
    fn accept(&mut self, ready: &[(usize, usize)]) -> Result<()> {
        for &(s, b) in ready {
            if !self.has_room() {
                break;
            }
            if !self.service_has_room(s) {
                continue;
            }
            let recv = self.services[s].recv;
            let bound = &self.services[s].sockets[b];
            let tls = bound.listener.proto == Proto::Ssl;
            let shares = bound.shares.clone();
            let incoming = match bound.socket.take_now(recv) {
                Ok(incoming) => incoming,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    continue;
                }
            };
            // The child serves its client only: no listening socket.
            let slot = board::free_slot();
            let pid = self.fork_child(|master| {
                board::enter(slot);
                let route = master.take_route(s, &shares);
                if let Err(status) = master.become_who(Some(s)) {
                    return status;
                }
                worker::serve_one(route, incoming, tls)
            })?;
            tracing::debug!("child {pid} serves a connection");
            self.on_board(pid, slot);
            self.children.insert(pid, Child::new(false, slot, s));
        }
        Ok(())
    }

    fn act(&mut self, intent: Intent) -> Result<()> {
        match intent {
            Intent::PassOn(signal) => {
                let name = signal.as_str().trim_start_matches("SIG");
                tracing::debug!("passing {name} to {} workers", self.children.len());
                for pid in self.children.keys() {
                    let _ = kill(*pid, signal);
                }
            }
            Intent::Stop(signal) => {
                let name = signal.as_str().trim_start_matches("SIG");
                tracing::info!("Received {name}: server closing");
                self.stop(
                    Signal::SIGTERM,
                    Stopping::Now {
                        kill_at: Instant::now() + TERM_GRACE,
                    },
                );
            }
            Intent::Drain(signal) => {
                let name = signal.as_str().trim_start_matches("SIG");
                tracing::info!("Received {name}: finishing open connections, then closing");
                let grace = self.config.process.quit_timeout + TERM_GRACE;
                self.stop(
                    Signal::SIGQUIT,
                    Stopping::Drain {
                        kill_at: Instant::now() + grace,
                    },
                );
            }
            Intent::Restart if self.stopping.is_none() => {
                let children: Vec<Pid> = self.children.keys().chain(&self.old).copied().collect();
                if let Some(signals) = &self.signals {
                    restart(&self.services, &children, signals, self.metrics.as_ref())?;
                }
            }
            Intent::More => {
                let to = self.resize(|target| target.saturating_add(1));
                tracing::info!("Received TTIN: increasing {} to {to}", self.counted());
            }
            Intent::Fewer => {
                let to = self.resize(|target| target.saturating_sub(1).max(1));
                tracing::info!("Received TTOU: decreasing {} to {to}", self.counted());
            }
            // Reaped at every turn.
            Intent::Restart | Intent::Reap => {}
        }
        Ok(())
    }

    /// TTIN, TTOU: changes the target of every group (`fork`: the
    /// children at once) with `change`; returns the new targets as the
    /// log says them: `3`, or beside other groups `3 (shared), 1 (service
    /// chat)`.
    fn resize(&mut self, change: impl Fn(u32) -> u32) -> String {
        match &mut self.kind {
            Kind::Forking => {
                self.target = change(self.target);
                self.target.to_string()
            }
            Kind::Pool(groups) => {
                for group in groups.iter_mut() {
                    group.target = change(group.target);
                }
                match groups.as_slice() {
                    [only] => only.target.to_string(),
                    all => all
                        .iter()
                        .map(|g| format!("{} ({})", g.target, g.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            }
        }
    }

    /// What TTIN and TTOU change, in Net::Server's words.
    fn counted(&self) -> &'static str {
        match self.config.process.server_type {
            ServerType::Multiplex => "workers",
            _ => "max_servers",
        }
    }

    /// Tells every child to stop with `signal` and stops accepting.
    fn stop(&mut self, signal: Signal, how: Stopping) {
        // Close the master's listening sockets: once the workers close
        // theirs, no client is accepted any more.
        self.services.clear();
        let stopping = match (self.stopping, how) {
            // TERM after QUIT still stops at once.
            (Some(Stopping::Now { kill_at }), _) => Stopping::Now { kill_at },
            (_, how) => how,
        };
        self.stopping = Some(stopping);
        notify::stopping(matches!(stopping, Stopping::Drain { .. }));
        // Before the workers hear it: the server closes, and how.
        board::set_closing(match stopping {
            Stopping::Now { .. } => Closing::Stop,
            Stopping::Drain { .. } => Closing::Drain,
        });
        for pid in self.children.keys().chain(&self.old) {
            let _ = kill(*pid, signal);
        }
        for pid in self.dequeuers.keys() {
            let _ = kill(*pid, Signal::SIGTERM);
        }
    }

    /// Reaps every child that ended.
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
        let Some(child) = self.children.remove(&pid) else {
            return;
        };
        if let Some(slot) = child.slot {
            board::release(slot);
        }
        let replaced = matches!(self.kind, Kind::Pool(_));
        let who = self.who(pid, child.group);
        if clean || child.retiring || self.stopping.is_some() {
            tracing::debug!("{who} ended ({how})");
        } else if replaced {
            tracing::warn!("{who} ended unexpectedly ({how}); replacing it");
        } else {
            tracing::warn!("{who} ended unexpectedly ({how})");
        }
    }

    /// Forks a child that runs `work` on its copy of the master (whose
    /// signals it forgets: they are not its business), taking from it what
    /// it needs.
    fn fork_child(&mut self, work: impl FnOnce(&mut Self) -> i32) -> Result<Pid> {
        spawn(|| {
            if let Some(signals) = self.signals.take() {
                signals.forget();
            }
            // The master's alone.
            self.metrics = None;
            work(self)
        })
    }

    /// In a child: the route of a socket of service `first` that the
    /// services `shares` share, without any listening socket.
    fn take_route(&mut self, first: usize, shares: &[usize]) -> Route {
        let mut all: Vec<Option<Service>> = std::mem::take(&mut self.services)
            .into_iter()
            .map(Some)
            .collect();
        let mut take = |i: usize| {
            let mut service = all[i].take().expect("each service once");
            service.sockets.clear();
            Arc::new(service)
        };
        let first = take(first);
        Route::new(first, shares.iter().map(|&i| take(i)).collect())
    }

    /// In a worker: the services `members` (indices in the configuration),
    /// with their listening sockets; the other services, and their
    /// sockets, are dropped. The services a socket `shares` are named by
    /// their place among `members` from then on.
    fn take_services(&mut self, members: &[usize]) -> Vec<Service> {
        let mut all: Vec<Option<Service>> = std::mem::take(&mut self.services)
            .into_iter()
            .map(Some)
            .collect();
        let mut taken: Vec<Service> = members
            .iter()
            .filter_map(|&i| all.get_mut(i).and_then(Option::take))
            .collect();
        for bound in taken.iter_mut().flat_map(|s| s.sockets.iter_mut()) {
            // A port is shared by shared services only (see
            // `listen::check_services`): all of them are members.
            bound.shares = bound
                .shares
                .iter()
                .filter_map(|j| members.iter().position(|m| m == j))
                .collect();
        }
        taken
    }

    /// In a child: the one service it serves, its listening sockets closed.
    fn take_service(&mut self, index: usize) -> Service {
        let mut service = std::mem::take(&mut self.services).swap_remove(index);
        service.sockets.clear();
        service
    }

    /// Forks the `dequeue` runs that are due (at most `max_dequeue` of a
    /// service at once), each in a process of its own.
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
            let pid = self.fork_child(|master| {
                let service = master.take_service(index);
                if let Err(status) = master.become_who(Some(index)) {
                    return status;
                }
                worker::run_dequeue(service)
            })?;
            board::dequeued(index);
            self.dequeuers.insert(pid, index);
        }
        Ok(())
    }
}
