//! The groups of workers a pool's master keeps: one for the services that
//! share their workers (`isolation shared`, the default), and one for each
//! service with worker processes of its own (`isolation process`), so that
//! tenants share no process: a worker that crashes, is killed by the
//! kernel for its memory or hits a fault in the runtime ends only its own
//! group's connections, and the master replaces it.
//!
//! Each group has its own number of workers to keep (its target: the
//! service's own `workers` or `max_servers`, else the server's; TTIN and
//! TTOU change every group's), its own `prefork` status pipe and accept
//! lock (its [`Pool`]), and its workers are started, counted, retired and
//! replaced apart from the others'.

use std::sync::Arc;

use anyhow::Result;
use nix::unistd::Pid;

use super::pool::Pool;
use crate::config::{Config, Isolation, OwnProcesses, ProcessConfig, ServerType};
use crate::service::Service;

/// One group of workers.
pub(super) struct Group {
    /// The services its workers serve, by their index in the
    /// configuration.
    pub(super) members: Vec<usize>,
    /// The service whose own workers these are (`isolation process`), by
    /// its index and name; `None`: the shared workers.
    pub(super) own: Option<(usize, Arc<str>)>,
    /// Its status pipe and accept lock.
    pub(super) pool: Pool,
    /// The workers to keep (`workers`, 1, or `max_servers`), which TTIN
    /// and TTOU change.
    pub(super) target: u32,
    /// The most workers it is configured for, whatever the personality
    /// (for the board's room).
    pub(super) most: u32,
    /// Whether other groups exist (then the shared workers are called so
    /// in the log).
    alone: bool,
}

/// The groups of a pool's master: the shared workers of every shared
/// service (none when every service has its own), then each service with
/// its own, in the configuration's order.
pub(super) fn groups(config: &Config, services: &[Service]) -> Result<Vec<Group>> {
    let process = &config.process;
    let sockets =
        |members: &[usize]| -> usize { members.iter().map(|&i| services[i].sockets.len()).sum() };
    let mut groups = Vec::new();
    let shared: Vec<usize> = (0..config.services.len())
        .filter(|&i| config.services[i].isolation == Isolation::Shared)
        .collect();
    if !shared.is_empty() {
        let pool = Pool::new(process, sockets(&shared), None)?;
        groups.push(Group::new(
            shared,
            None,
            pool,
            process,
            &OwnProcesses::default(),
        ));
    }
    for (index, service) in config.services.iter().enumerate() {
        if service.isolation != Isolation::Process {
            continue;
        }
        let name = services[index].name.clone();
        let pool = Pool::new(process, sockets(&[index]), Some(&name))?;
        let own = Some((index, name));
        groups.push(Group::new(vec![index], own, pool, process, &service.own));
    }
    let alone = groups.len() == 1;
    for group in &mut groups {
        group.alone = alone;
    }
    Ok(groups)
}

impl Group {
    fn new(
        members: Vec<usize>,
        own: Option<(usize, Arc<str>)>,
        pool: Pool,
        process: &ProcessConfig,
        sizes: &OwnProcesses,
    ) -> Self {
        let workers = sizes.workers.unwrap_or(process.workers);
        let max_servers = sizes.max_servers.unwrap_or(process.max_servers);
        let target = match process.server_type {
            ServerType::Multiplex => workers,
            ServerType::Single => 1,
            _ => max_servers,
        };
        Self {
            members,
            own,
            pool,
            target,
            most: workers.max(max_servers),
            alone: true,
        }
    }

    /// The service whose own workers these are (`None`: shared workers).
    pub(super) fn service(&self) -> Option<usize> {
        self.own.as_ref().map(|(index, _)| *index)
    }

    /// Its worker `pid`, as the log names it: `worker 12 of service chat`,
    /// `shared worker 12` (beside other groups), or `worker 12`.
    pub(super) fn worker(&self, pid: Pid) -> String {
        match &self.own {
            Some((_, name)) => format!("worker {pid} of service {name}"),
            None if self.alone => format!("worker {pid}"),
            None => format!("shared worker {pid}"),
        }
    }

    /// Its name in the log: `service chat`, or `shared`.
    pub(super) fn name(&self) -> String {
        match &self.own {
            Some((_, name)) => format!("service {name}"),
            None => "shared".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_has_its_own_number_and_name() {
        let process = crate::config::Config::from_command_line(&[("workers", "3")])
            .unwrap()
            .process;
        let pool = || Pool::new(&process, 1, None).unwrap();
        let own = OwnProcesses {
            workers: Some(1),
            ..OwnProcesses::default()
        };
        let mut shared = Group::new(vec![0, 2], None, pool(), &process, &OwnProcesses::default());
        let chat = Group::new(vec![1], Some((1, "chat".into())), pool(), &process, &own);
        assert_eq!((shared.target, chat.target), (3, 1));
        assert_eq!((shared.service(), chat.service()), (None, Some(1)));
        let pid = Pid::from_raw(12);
        assert_eq!(shared.worker(pid), "worker 12");
        shared.alone = false;
        assert_eq!(shared.worker(pid), "shared worker 12");
        assert_eq!(chat.worker(pid), "worker 12 of service chat");
        assert_eq!(
            (shared.name(), chat.name()),
            ("shared".into(), "service chat".into())
        );
    }
}
