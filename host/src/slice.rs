//! The time slice a thread asks the kernel for.
//!
//! The kernel's scheduler (EEVDF, Linux 6.6 and later) gives each thread a
//! deadline — when its slice began plus its slice, 1.4 ms by default on a
//! 2-CPU machine — and when a thread wakes, runs it at once only if its
//! deadline is the earlier. Since Linux 6.12 a thread may ask for its own
//! slice (`sched_setattr`'s `sched_runtime`, 0.1 to 100 ms), without
//! privilege, and ask for the default again: a thread that computes on a
//! long slice lets every thread that wakes with a shorter one run first,
//! and keeps its share of the CPU (a slice is not a weight). Kernels before
//! 6.12 take the request and change nothing.
//!
//! Used by a busy tenant's worker (`busy`) and by the threads computing a
//! throttled service's turns (`fairness`).

use std::cell::Cell;
use std::time::Duration;

/// The longest slice the kernel gives: what a thread that can wait asks
/// for.
pub const LONGEST: Duration = Duration::from_millis(100);

/// `SCHED_OTHER` and `SCHED_BATCH`, the policies whose threads take a
/// slice.
const FAIR_POLICIES: [u32; 2] = [0, 3];

/// Gives every thread of this process but the calling one a slice of
/// `slice`, or the kernel's default (`None`). (The caller, a busy worker's
/// epoch ticker, keeps the default: its ticks, which make the worker's
/// guests take turns, must not wait behind them.)
pub fn set_all_but_caller(slice: Option<Duration>) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let runtime = nanos(slice);
    let caller = nix::unistd::gettid().as_raw();
    for entry in tasks.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if tid == caller {
            continue;
        }
        if let Err(err) = set_thread_slice(tid, runtime) {
            // A thread that ended meanwhile.
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::debug!("cannot set the slice of thread {tid}: {err}");
            }
        }
    }
}

/// Sets thread `tid`'s requested slice to `runtime` nanoseconds (0: the
/// kernel's default), keeping its policy and nice value.
fn set_thread_slice(tid: libc::pid_t, runtime: u64) -> std::io::Result<()> {
    let Some(mut attr) = attr_of(tid)? else {
        return Ok(());
    };
    attr.sched_runtime = runtime;
    set_attr(tid, &attr)
}

thread_local! {
    /// This thread's scheduling attributes, read once, with the slice it
    /// asked for last ([`this_thread`]); `None` before the first call, and
    /// for ever where its policy takes no slice.
    static THIS_THREAD: Cell<Option<Option<libc::sched_attr>>> = const { Cell::new(None) };
}

/// Asks for a slice of `slice` (`None`: the kernel's default) for the
/// calling thread: one system call, none when it already has it. Its
/// policy and nice value are read once and assumed unchanged since.
pub fn this_thread(slice: Option<Duration>) {
    let runtime = nanos(slice);
    let known = THIS_THREAD
        .get()
        .unwrap_or_else(|| attr_of(0).ok().flatten());
    let Some(mut attr) = known else {
        THIS_THREAD.set(Some(None));
        return;
    };
    if attr.sched_runtime != runtime {
        attr.sched_runtime = runtime;
        // A failure (a seccomp policy) leaves the slice as it was.
        if set_attr(0, &attr).is_err() {
            THIS_THREAD.set(Some(None));
            return;
        }
    }
    THIS_THREAD.set(Some(Some(attr)));
}

/// `slice` in nanoseconds, 0 for the default.
fn nanos(slice: Option<Duration>) -> u64 {
    slice.map_or(0, |s| u64::try_from(s.as_nanos()).unwrap_or(u64::MAX))
}

/// Thread `tid`'s scheduling attributes (0: the calling thread), ready to
/// be set again; `None` where its policy takes no slice (real-time or
/// deadline threads' parameters are not ours to change).
fn attr_of(tid: libc::pid_t) -> std::io::Result<Option<libc::sched_attr>> {
    // SAFETY: sched_attr is plain integers, for which all zeroes is valid.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sched_attr>();
    // SAFETY: `attr` is a writable sched_attr of `size` bytes, which the
    // kernel fills in up to that size; the flags must be 0.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &raw mut attr,
            libc::c_uint::try_from(size).unwrap_or(0),
            0,
        )
    };
    if got != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !FAIR_POLICIES.contains(&attr.sched_policy) {
        return Ok(None);
    }
    attr.size = u32::try_from(size).unwrap_or(0);
    attr.sched_flags = 0;
    Ok(Some(attr))
}

/// Sets thread `tid`'s (0: the calling thread's) scheduling attributes.
fn set_attr(tid: libc::pid_t, attr: &libc::sched_attr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid sched_attr of `attr.size` bytes, which the
    // kernel only reads; the flags must be 0.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, std::ptr::from_ref(attr), 0) };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice the calling thread has, where the kernel says
    /// (`/proc/thread-self/sched`).
    fn slice_of_this_thread() -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/sched")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("se.slice"))?;
                line.split(':').nth(1)?.trim().parse::<u64>().ok()
            })
    }

    #[test]
    fn a_thread_asks_for_a_long_slice_and_for_the_default_again() {
        // Unprivileged or not, on a kernel that takes slices (6.12+) or
        // not: the call succeeds either way, and the kernel says what it
        // took in /proc/thread-self/sched where it does.
        let tid = nix::unistd::gettid().as_raw();
        let before = slice_of_this_thread();
        set_thread_slice(tid, 100_000_000).unwrap();
        if before.is_some() {
            assert_eq!(slice_of_this_thread(), Some(100_000_000));
        }
        set_thread_slice(tid, 0).unwrap();
        assert_eq!(slice_of_this_thread(), before);
    }

    #[test]
    fn this_thread_asks_once_and_gives_back() {
        // On a thread of its own: the cache is the thread's.
        std::thread::spawn(|| {
            let before = slice_of_this_thread();
            this_thread(Some(LONGEST));
            this_thread(Some(LONGEST));
            if before.is_some() {
                assert_eq!(slice_of_this_thread(), Some(100_000_000));
            }
            this_thread(None);
            assert_eq!(slice_of_this_thread(), before);
        })
        .join()
        .unwrap();
    }
}
