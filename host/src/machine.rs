//! What memory the machine gives this server: the kernel's `MemTotal`
//! (`/proc/meminfo`), or less when the server runs in a control group
//! with a memory limit (a container, a systemd unit's `MemoryMax`): the
//! smallest of the limits found, cgroup v2 (`memory.max`) or v1
//! (`memory.limit_in_bytes`), of the group the process is in and of the
//! hierarchy's root as mounted (a container's own group, under a cgroup
//! namespace).
//!
//! Read once, at start, for the defaults of the memory budgets (see
//! `wasm::budget`).

use std::path::{Path, PathBuf};

/// Where the kernel says how much memory the machine has.
const MEMINFO: &str = "/proc/meminfo";
/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The memory this server may use: the machine's, or its control
/// group's limit when lower. `None` when `/proc/meminfo` cannot be read.
pub fn memory() -> Option<u64> {
    let total = std::fs::read_to_string(MEMINFO)
        .ok()
        .and_then(|text| mem_total(&text))?;
    let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = limit_files(&groups)
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| cgroup_limit(&text))
        .min();
    Some(limit.map_or(total, |limit| limit.min(total)))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => number.checked_mul(1024),
        None => Some(number),
        Some(_) => None,
    }
}

/// A cgroup limit file's value in bytes; `None` for `max` (no limit) or
/// anything else that is not a number. (cgroup v1 says "no limit" with a
/// huge number, which the machine's total then undercuts.)
fn cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&n| n > 0)
}

/// The limit files that may apply to this process, given its
/// `/proc/self/cgroup`: of its own group (v2: the `0::PATH` line; v1: the
/// line whose controllers include `memory`) and of the root as mounted.
fn limit_files(groups: &str) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut files = vec![
        root.join("memory.max"),
        root.join("memory/memory.limit_in_bytes"),
    ];
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if relative.is_empty() {
            continue;
        }
        if controllers.is_empty() {
            files.push(root.join(relative).join("memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(
                root.join("memory")
                    .join(relative)
                    .join("memory.limit_in_bytes"),
            );
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_in_bytes() {
        let cases = [
            (
                "MemTotal:       24683584 kB\nMemFree: 1 kB\n",
                Some(24683584 * 1024),
            ),
            ("MemFree: 1 kB\nMemTotal: 2048 kB\n", Some(2048 * 1024)),
            ("MemTotal: 4096\n", Some(4096)),
            ("MemTotal: lots kB\n", None),
            ("MemTotal: 1 MB\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(mem_total(text), want, "{text:?}");
        }
    }

    #[test]
    fn cgroup_limits() {
        let cases = [
            ("max\n", None),
            ("536870912\n", Some(512 << 20)),
            ("9223372036854771712\n", Some(9223372036854771712)),
            ("0\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(cgroup_limit(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_files_of_the_process_group_and_the_root() {
        let v2 = limit_files("0::/system.slice/netserver.service\n");
        assert!(v2.contains(&PathBuf::from(
            "/sys/fs/cgroup/system.slice/netserver.service/memory.max"
        )));
        let v1 = limit_files("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n");
        assert!(v1.contains(&PathBuf::from(
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"
        )));
        assert_eq!(v1.len(), 3, "{v1:?}");
        for files in [v2, v1] {
            assert!(files.contains(&PathBuf::from("/sys/fs/cgroup/memory.max")));
        }
    }

    #[test]
    fn this_machine_has_memory() {
        let memory = memory().expect("/proc/meminfo");
        assert!(memory > 16 << 20, "{memory}");
    }
}
