//! The wasmtime [`Engine`]: one per host, built in the master before any
//! thread exists, shared by every instance.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{Config as HostConfig, ServerType};

/// How much of the process's CPU time passes between two epochs: the
/// granularity of preemption and of the CPU limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory reset with memset and kept mapped between
/// instances (see the benchmarks in docs/benchmarks.md).
const KEEP_RESIDENT: usize = 256 << 10;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Slots given back to the kernel at once, at most.
const DECOMMIT_BATCH: usize = 64;

/// The most memory of finished instances that may wait, still resident,
/// to be given back in a batch: a batch holds as many slots as fit in it
/// at the largest `max_memory` (so with the default 64M, none wait).
const DECOMMIT_BUDGET: u64 = 64 << 20;

/// Core instances a component may contain (a Rust guest has a handful: its
/// module plus the shims `wit-component` adds).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Instances one service has alive at once in a process that serves one
/// connection at a time: the connection's, and the worker's shared one
/// (`instance per-worker`).
pub const SEQUENTIAL_INSTANCES: u32 = 2;

/// The process's engine, never dropped (see [`build`]).
static KEPT: OnceLock<Engine> = OnceLock::new();

/// Whether this process's engine resets finished instances' memory with
/// PAGEMAP_SCAN (see [`pagemap_scan`]).
static SCANS: AtomicBool = AtomicBool::new(false);

/// Where the kernel lists the swap areas in use.
const SWAPS: &str = "/proc/swaps";

/// How often a master looks whether swap was turned on (see [`SwapWatch`]).
const SWAP_LOOK_EVERY: Duration = Duration::from_secs(10);

/// Builds the engine every service shares: the pooling allocator sized for
/// the instances one process has alive at once, of the largest
/// `max_memory`, or, where the machine cannot reserve the pool's address
/// space, on-demand allocation (said in the log). Each instance's own
/// memory cap is its service's (see `sandbox::limits`).
///
/// The engine lives as long as the process: a worker or `fork` child
/// exits without unmapping the pool piece by piece (which cost a `fork`
/// child more than serving its connection did), and the kernel frees it at
/// exit in one go.
pub fn build(config: &HostConfig) -> Result<Engine> {
    let chroot = config.privileges.chroot.is_some();
    let swaps = std::fs::read_to_string(SWAPS);
    let scan = pagemap_scan(chroot, &swaps);
    let (engine, pooled) =
        match Engine::new(base_config(config).allocation_strategy(pooling(config, scan))) {
            Ok(engine) => (engine, true),
            Err(err) => {
                tracing::warn!(
                    "pooling allocator unavailable ({err:#}); instances are allocated on demand"
                );
                (Engine::new(&base_config(config))?, false)
            }
        };
    // The first engine of the process is the one it serves with.
    if KEPT.set(engine.clone()).is_ok() {
        let scans = pooled && scan == wasmtime::Enabled::Auto;
        SCANS.store(scans, Ordering::Relaxed);
        if pooled && !chroot && !scans {
            match &swaps {
                Ok(_) => tracing::info!(
                    "swap is in use: instances' memory is reset without PAGEMAP_SCAN, which would leave a swapped-out page of one instance to the next (docs/security.md)"
                ),
                Err(err) => tracing::info!(
                    "cannot read {SWAPS} ({err}): instances' memory is reset without PAGEMAP_SCAN, which would leave a swapped-out page of one instance to the next (docs/security.md)"
                ),
            }
        }
    }
    Ok(engine)
}

/// Whether finished instances' memory is reset with PAGEMAP_SCAN, which
/// finds the pages an instance touched: not in a `chroot` (each forked
/// worker opens its own `/proc/self/pagemap`, else `/dev/null`, else it
/// aborts, and a chroot has neither), and not while swap is in use (or
/// `/proc/swaps` cannot tell). wasmtime 48's scan looks only at pages
/// present in memory, so a page of one instance that the kernel swapped
/// out would be left, with its data, to the next instance in the slot
/// (wasmtime 50 mends this, but needs a newer rustc than this project's).
/// Without the scan, wasmtime resets the bytes it keeps resident with
/// memset, which brings a swapped page back first, and gives the rest
/// back to the kernel.
fn pagemap_scan(chroot: bool, swaps: &std::io::Result<String>) -> wasmtime::Enabled {
    match swaps {
        Ok(swaps) if !chroot && !swap_in_use(swaps) => wasmtime::Enabled::Auto,
        _ => wasmtime::Enabled::No,
    }
}

/// Whether `/proc/swaps` (`swaps`, its text) lists a swap area: any line
/// after its header.
fn swap_in_use(swaps: &str) -> bool {
    swaps.lines().skip(1).any(|line| !line.trim().is_empty())
}

/// Watches, in a master, for swap turned on after its engine chose to
/// reset memory with PAGEMAP_SCAN, and then says once, as a warning, that
/// a HUP is needed to stop (see [`pagemap_scan`]).
pub struct SwapWatch {
    next: Instant,
    warned: bool,
}

impl SwapWatch {
    /// A watch that first looks [`SWAP_LOOK_EVERY`] from now.
    pub fn new() -> Self {
        Self {
            next: Instant::now() + SWAP_LOOK_EVERY,
            warned: false,
        }
    }

    /// When to look next: `None` once there is nothing left to watch for
    /// (said already, or the engine does not scan).
    pub fn next_look(&self) -> Option<Instant> {
        (!self.warned && SCANS.load(Ordering::Relaxed)).then_some(self.next)
    }

    /// Looks at `/proc/swaps`, at most every [`SWAP_LOOK_EVERY`].
    pub fn look(&mut self) {
        let now = Instant::now();
        if self.next_look().is_none_or(|next| now < next) {
            return;
        }
        self.next = now + SWAP_LOOK_EVERY;
        if std::fs::read_to_string(SWAPS).is_ok_and(|swaps| swap_in_use(&swaps)) {
            self.warned = true;
            tracing::warn!(
                "swap was turned on after the server started: instances' memory is still reset with PAGEMAP_SCAN, which leaves a swapped-out page of one instance to the next; send HUP to restart without it (docs/security.md)"
            );
        }
    }
}

impl Default for SwapWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// Component instances a process has alive at once: every service's
/// `max_instances` in a `multiplex` worker, [`SEQUENTIAL_INSTANCES`] per
/// service in the personalities that serve one connection at a time. A
/// smaller pool is fewer mappings for every `fork` to copy.
fn instances_per_process(config: &HostConfig) -> u32 {
    let per_service = |max_instances: u32| match config.process.server_type {
        ServerType::Multiplex => max_instances,
        _ => SEQUENTIAL_INSTANCES,
    };
    config
        .services
        .iter()
        .map(|s| per_service(s.max_instances))
        .fold(0u32, u32::saturating_add)
}

fn base_config(config: &HostConfig) -> Config {
    let mut c = Config::new();
    // Preemption and CPU limits: a guest's loop checks the epoch, which one
    // ticker per engine advances (never a timer per connection).
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    // wasmtime is built without `parallel-compilation`: the component is
    // compiled in the master before forking, when no thread may exist.
    // Memory of a fresh instance comes copy-on-write from the module's image.
    c.memory_init_cow(true);
    // Bounded guest stack: deep recursion traps instead of growing.
    c.max_wasm_stack(1 << 20);
    c.async_stack_size(2 << 20);
    // A trap's wasm backtrace is shown only in the `trace` line after its
    // connection's summary (`log_level` 4); below that, walking the guest's
    // stack at every trap is work for nothing (a guest that overflows its
    // stack, churned: 6 % of its connections' CPU). At that level, wasmtime's
    // default: the innermost 20 frames.
    if config.log_level < TRAP_DETAILS_LEVEL {
        c.wasm_backtrace_max_frames(None);
    }
    c
}

/// The `log_level` from which a trap's details, its wasm backtrace
/// included, are logged.
const TRAP_DETAILS_LEVEL: u8 = 4;

/// How many finished instances' memories are given back to the kernel in
/// one batch: a batch saves system calls and TLB flushes for small
/// memories, but what waits in it stays resident. The queue is sharded, one
/// batch per CPU (at most 16): at most [`DECOMMIT_BUDGET`] of memory grown
/// to `max_memory` waits in all, whatever the number of instances.
fn decommit_batch(max_memory: u64) -> usize {
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(16)) as u64;
    let waiting = DECOMMIT_BUDGET / shards.saturating_mul(max_memory.max(1));
    usize::try_from(waiting + 1).map_or(DECOMMIT_BATCH, |n| n.min(DECOMMIT_BATCH))
}

fn pooling(config: &HostConfig, pagemap_scan: wasmtime::Enabled) -> InstanceAllocationStrategy {
    let n = instances_per_process(config);
    let max_memory = config
        .services
        .iter()
        .map(|s| s.max_memory)
        .max()
        .unwrap_or(0);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(n * 2)
        .max_memories_per_component(2)
        .total_tables(n * 4)
        .max_tables_per_component(8)
        .total_stacks(n)
        .max_memory_size(max_memory as usize)
        // Keep a few decommitted slots warm so reuse stays cheap.
        .max_unused_warm_slots(n.min(100))
        // Reset a used slot's pages with memset and keep them mapped,
        // instead of madvise and a page fault per page at the next use; on
        // Linux 6.7+ PAGEMAP_SCAN finds the pages the instance touched.
        // Give back the rest in batches (one TLB flush per batch).
        // `cargo bench --bench sandbox`: instantiate + empty hook + drop
        // 22.0 µs → 7.3 µs (18.0 µs without PAGEMAP_SCAN).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .decommit_batch_size(decommit_batch(max_memory))
        // Not in a chroot, nor while swap is in use (see `pagemap_scan`).
        .pagemap_scan(pagemap_scan);
    InstanceAllocationStrategy::Pooling(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(settings: &[(&str, &str)]) -> HostConfig {
        HostConfig::from_command_line(settings).unwrap()
    }

    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    #[test]
    fn swap_is_in_use_when_proc_swaps_lists_an_area() {
        let cases: &[(&str, String, bool)] = &[
            ("empty", String::new(), false),
            ("header only", HEADER.to_owned(), false),
            ("header and a blank line", format!("{HEADER}\n"), false),
            (
                "a swap file",
                format!(
                    "{HEADER}/swapfile                               file\t\t1048572\t\t0\t\t-2\n"
                ),
                true,
            ),
            (
                "zram and a partition",
                format!(
                    "{HEADER}/dev/zram0                              partition\t4194300\t\t0\t\t100\n/dev/vda2 partition\t1000\t0\t-2\n"
                ),
                true,
            ),
        ];
        for (what, swaps, want) in cases {
            assert_eq!(swap_in_use(swaps), *want, "{what}");
        }
    }

    #[test]
    fn pagemap_scan_only_without_chroot_and_swap() {
        use wasmtime::Enabled::{Auto, No};
        let with_swap = format!("{HEADER}/swapfile file 1048572 0 -2\n");
        let unreadable = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let cases: Vec<(&str, bool, std::io::Result<String>, wasmtime::Enabled)> = vec![
            ("no swap", false, Ok(HEADER.to_owned()), Auto),
            ("a chroot", true, Ok(HEADER.to_owned()), No),
            ("swap in use", false, Ok(with_swap.clone()), No),
            ("swap in use and a chroot", true, Ok(with_swap), No),
            ("/proc/swaps unreadable", false, unreadable(), No),
        ];
        for (what, chroot, swaps, want) in cases {
            assert_eq!(pagemap_scan(chroot, &swaps), want, "{what}");
        }
    }

    #[test]
    fn what_waits_to_be_given_back_stays_within_the_budget() {
        let shards = std::thread::available_parallelism().map_or(1, |n| n.get().min(16)) as u64;
        for max_memory in [64 << 10, 1 << 20, 8 << 20, 64 << 20, 4 << 30] {
            let batch = decommit_batch(max_memory) as u64;
            assert!(
                (1..=DECOMMIT_BATCH as u64).contains(&batch),
                "{max_memory}: {batch}"
            );
            let waiting = shards * (batch - 1) * max_memory;
            assert!(
                waiting <= DECOMMIT_BUDGET,
                "{max_memory}: {waiting} bytes wait"
            );
        }
        assert_eq!(
            decommit_batch(64 << 10),
            DECOMMIT_BATCH,
            "small memories batch fully"
        );
    }

    #[test]
    fn the_pool_holds_what_one_process_has_alive_at_once() {
        let cases: &[(&[(&str, &str)], u32)] = &[
            (&[], 1000),
            (&[("server_type", "multiplex"), ("max_instances", "64")], 64),
            (&[("server_type", "prefork"), ("max_instances", "64")], 2),
            (&[("server_type", "prefork-simple")], 2),
            (&[("server_type", "fork")], 2),
            (&[("server_type", "single")], 2),
            (&[("server_type", "inetd")], 2),
        ];
        for (settings, want) in cases {
            assert_eq!(
                instances_per_process(&config(settings)),
                *want,
                "{settings:?}"
            );
        }
    }
}
