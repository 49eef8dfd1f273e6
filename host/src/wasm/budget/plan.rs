//! Every budget of a worker process: as configured, or derived from the
//! machine's memory.

use std::sync::Arc;

use super::{Budget, Budgets, shown};
use crate::config::{Config, ServerType};

/// Instances one service has alive at once in a process that serves one
/// connection at a time (the connection's, and the worker's shared one),
/// as the engine's pool counts them.
const SEQUENTIAL_INSTANCES: u64 = crate::wasm::engine::SEQUENTIAL_INSTANCES as u64;

/// Every budget of one worker process, as configured or derived from the
/// machine's memory (`machine`: `None` when it is unknown), and how.
#[derive(Debug)]
pub struct Plan {
    /// The worker's ceiling.
    pub worker: Arc<Budget>,
    /// Each service's budget, in the configuration's order.
    pub services: Vec<Budgets>,
    /// How the ceiling came about, for the log.
    pub worker_why: String,
}

impl Plan {
    /// One line for the log: every budget and where it came from.
    pub fn describe(&self, config: &Config) -> String {
        let services: Vec<String> = self
            .services
            .iter()
            .zip(&config.services)
            .map(|(budgets, service)| {
                let how = if service.memory_budget.is_some() {
                    "memory_budget"
                } else {
                    "default"
                };
                format!(
                    "service {} {} ({how})",
                    budgets.name,
                    shown(budgets.service.limit)
                )
            })
            .collect();
        format!(
            "memory budgets in each serving process: worker_memory {} ({}); {}",
            shown(self.worker.limit),
            self.worker_why,
            services.join(", ")
        )
    }
}

/// The budgets of `config`'s services and their workers. `worker_memory`
/// defaults to half of `machine` shared evenly among the worker processes
/// that may run at once ([`processes`]); a service's `memory_budget`
/// defaults to the worker's ceiling shared evenly among the services, and
/// no more than its instances a worker runs at once
/// ([`instances_per_worker`]) at `max_memory` each.
pub fn plan(config: &Config, machine: Option<u64>) -> Plan {
    let processes = processes(config);
    let caps: u64 = config
        .services
        .iter()
        .map(|s| instances_per_worker(config, s.max_instances).saturating_mul(s.max_memory))
        .fold(0, u64::saturating_add);
    let (worker, worker_why) = match (config.process.worker_memory, machine) {
        (Some(given), _) => (given, "worker_memory".to_owned()),
        (None, Some(machine)) => (
            machine / 2 / processes,
            format!(
                "default: half of the machine's {}, shared by {processes} process(es)",
                shown(machine)
            ),
        ),
        (None, None) => (
            caps,
            "default: the machine's memory is unknown; every instance at max_memory".to_owned(),
        ),
    };
    let worker = Budget::worker(worker);
    let share = worker.limit / config.services.len().max(1) as u64;
    let services = config
        .services
        .iter()
        .map(|s| {
            let name: Arc<str> = s.name.as_str().into();
            let own = instances_per_worker(config, s.max_instances).saturating_mul(s.max_memory);
            let limit = s.memory_budget.unwrap_or_else(|| share.min(own));
            Budgets::new(name, Budget::service(limit), worker.clone())
        })
        .collect();
    Plan {
        worker,
        services,
        worker_why,
    }
}

/// The worker processes that may serve at once: `workers` in
/// `multiplex`, `max_servers` with `prefork`, `prefork-simple` and
/// `fork`, one with `single` and `inetd`.
pub fn processes(config: &Config) -> u64 {
    let process = &config.process;
    let n = match process.server_type {
        ServerType::Multiplex => process.workers,
        ServerType::Prefork | ServerType::PreforkSimple | ServerType::Fork => process.max_servers,
        ServerType::Single | ServerType::Inetd => 1,
    };
    u64::from(n.max(1))
}

/// The instances of a service a worker process has alive at once, at
/// most: its `max_instances` in `multiplex`; in a process that serves one
/// connection at a time, the connection's and the worker's shared one.
pub fn instances_per_worker(config: &Config, max_instances: u32) -> u64 {
    match config.process.server_type {
        ServerType::Multiplex => u64::from(max_instances),
        _ => SEQUENTIAL_INSTANCES.min(u64::from(max_instances)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(settings: &[(&str, &str)]) -> Config {
        Config::from_command_line(settings).unwrap()
    }

    #[test]
    fn defaults_share_half_the_machine() {
        const GIB: u64 = 1 << 30;
        const MIB: u64 = 1 << 20;
        // (settings, machine, then the worker's ceiling and the service's
        // budget)
        type Case = (
            &'static [(&'static str, &'static str)],
            Option<u64>,
            (u64, u64),
        );
        let cases: &[Case] = &[
            (&[], Some(8 * GIB), (4 * GIB, 4 * GIB)),
            (&[("workers", "4")], Some(8 * GIB), (GIB, GIB)),
            // 10 instances at 64M: less than the worker's share.
            (
                &[("max_instances", "10")],
                Some(8 * GIB),
                (4 * GIB, 640 * MIB),
            ),
            (
                &[("server_type", "prefork"), ("max_servers", "8")],
                Some(8 * GIB),
                (512 * MIB, 128 * MIB),
            ),
            (
                &[("server_type", "single")],
                Some(8 * GIB),
                (4 * GIB, 128 * MIB),
            ),
            (&[("worker_memory", "1G")], Some(8 * GIB), (GIB, GIB)),
            (
                &[("memory_budget", "16G")],
                Some(8 * GIB),
                (4 * GIB, 16 * GIB),
            ),
            (&[("max_instances", "2")], None, (128 * MIB, 128 * MIB)),
        ];
        for (settings, machine, want) in cases {
            let plan = plan(&config(settings), *machine);
            let got = (plan.worker.limit, plan.services[0].service.limit);
            assert_eq!(got, *want, "{settings:?}");
            assert!(Arc::ptr_eq(&plan.worker, &plan.services[0].worker));
        }
    }

    #[test]
    fn the_budgets_of_two_services_split_the_worker() {
        let conf = crate::config::sources::ConfFile {
            settings: Vec::new(),
            services: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, name)| crate::config::sources::ServiceTable {
                    source: crate::config::Source::CommandLine,
                    settings: vec![
                        crate::config::Setting::command_line("service", name),
                        crate::config::Setting::command_line("module", "/etc/passwd"),
                        crate::config::Setting::command_line("port", &format!("{}", 2000 + i)),
                    ],
                })
                .collect(),
        };
        let config = Config::from_sources(Vec::new(), conf).unwrap();
        let plan = plan(&config, Some(8 << 30));
        let limits: Vec<u64> = plan.services.iter().map(|b| b.service.limit).collect();
        assert_eq!(limits, [2 << 30, 2 << 30]);
        let line = plan.describe(&config);
        assert!(line.contains("service a 2.0 GiB (default)"), "{line}");
    }
}
