//! Process titles: what `ps` shows of each process (its
//! `/proc/PID/cmdline`), as Net::Waiter shows its children's state, so that
//! an operator sees what every process of the server is doing:
//!
//! | process | title |
//! | --- | --- |
//! | the master | `netserver-host: master` |
//! | a pool's worker | `netserver-host: worker SERVICE[,SERVICE…] idle\|busy N served` (the services of its group: a service with processes of its own is alone in its workers' titles) |
//! | a `fork` child | `netserver-host: child SERVICE busy` |
//! | a `dequeue` run | `netserver-host: dequeue SERVICE` |
//!
//! Linux shows a process's command line from the memory between two
//! addresses the kernel keeps for it (`arg_start`, `arg_end`: at first the
//! strings of `argv`). [`prepare`] makes room for a title there, once, in
//! the master before it forks or drops root, the first of these ways that
//! works ([`Way`]):
//!
//! 1. [`Way::Map`]: the two addresses are pointed at a buffer of [`ROOM`]
//!    bytes of its own, with `prctl(PR_SET_MM, PR_SET_MM_MAP)` — every
//!    other address given as it is. Any user may (the kernel needs
//!    `CONFIG_CHECKPOINT_RESTORE`, which distributions' kernels have);
//! 2. [`Way::Fields`]: the same, one address at a time
//!    (`PR_SET_MM_ARG_START`, `PR_SET_MM_ARG_END`), which needs
//!    `CAP_SYS_RESOURCE`;
//! 3. [`Way::InPlace`]: titles are written over `argv`'s own strings, cut to
//!    their length. The environment, which follows them, is never touched.
//!
//! The arguments are kept first ([`args`]): a HUP re-executes the server
//! with them, and `std::env::args` reads the memory a title may overwrite.
//! A title is written with the last byte of its room not NUL: the kernel
//! then shows the memory up to the title's NUL (its `setproctitle` case), so
//! `/proc/PID/cmdline` reads exactly the title and its NUL. Writing a title
//! is a copy into memory, no system call: a worker may do it at every
//! client.
//!
//! The thread name (`/proc/PID/comm`, 15 bytes) is left as it is:
//! `killall`, `pkill -x` and `pidof` find the processes by it.

use std::ffi::OsString;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// The program's name, at the start of every title.
const PROGRAM: &str = "netserver-host";

/// The room for a title in a buffer of its own.
pub const ROOM: usize = 256;

/// What a process is doing, as its title says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Title<'a> {
    /// The master.
    Master,
    /// A pool's worker: the services it serves, whether it serves a client
    /// now, and how many clients it took.
    Worker {
        services: &'a [&'a str],
        busy: bool,
        served: u64,
    },
    /// A `fork` child, serving its one client of `service`.
    Child { service: &'a str },
    /// A `dequeue` run of `service`.
    Dequeue { service: &'a str },
}

impl fmt::Display for Title<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PROGRAM}: ")?;
        match self {
            Self::Master => f.write_str("master"),
            Self::Worker {
                services,
                busy,
                served,
            } => {
                let state = if *busy { "busy" } else { "idle" };
                write!(f, "worker {} {state} {served} served", services.join(","))
            }
            Self::Child { service } => write!(f, "child {service} busy"),
            Self::Dequeue { service } => write!(f, "dequeue {service}"),
        }
    }
}

/// A way to make room for titles, in the order [`prepare`] tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// `PR_SET_MM_MAP`: a buffer of [`ROOM`] bytes, for any user.
    Map,
    /// `PR_SET_MM_ARG_START` and `_END`: the same, with `CAP_SYS_RESOURCE`.
    Fields,
    /// Over `argv`'s strings: as many bytes as they have.
    InPlace,
}

/// Where titles are written, and the last one written.
static SHOWN: Mutex<Option<Shown>> = Mutex::new(None);

/// The process's arguments, as they were before any title.
static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

struct Shown {
    area: Area,
    title: String,
}

/// Memory the kernel shows as the command line: `len` bytes at `start`,
/// which live as long as the process (`argv`'s strings on the stack, or a
/// mapping never unmapped) and are written only through [`SHOWN`]'s lock.
struct Area {
    start: *mut u8,
    len: usize,
}

// SAFETY: the area is plain memory of the process, valid for its whole
// life; whichever thread holds `SHOWN`'s lock may write it.
unsafe impl Send for Area {}

/// The process's arguments as they were at start (`std::env::args_os`
/// before [`prepare`] could write over them, or now if it did not run).
pub fn args() -> Vec<OsString> {
    match ARGS.get() {
        Some(args) => args.clone(),
        None => std::env::args_os().collect(),
    }
}

/// Makes room for titles, the first [`Way`] that works, once per program
/// (a HUP's re-execution is a new program): in the master, before it forks
/// or drops root. Nothing fails here: without room (none of the ways
/// worked), [`set`] does nothing. Returns the way, and the room in bytes.
pub fn prepare() -> Option<(Way, usize)> {
    let made = [Way::Map, Way::Fields, Way::InPlace]
        .into_iter()
        .find_map(|way| match make_room(way) {
            Ok(room) => Some((way, room)),
            Err(why) => {
                tracing::debug!("process titles: {way:?}: {why}");
                None
            }
        });
    if let Some((way, room)) = made {
        tracing::debug!("process titles: {way:?}, {room} bytes");
    }
    made
}

/// Makes room for titles `way`; returns the room in bytes, or why not.
fn make_room(way: Way) -> Result<usize, String> {
    let args: Vec<OsString> = ARGS.get_or_init(|| std::env::args_os().collect()).clone();
    let mut shown = lock();
    if shown.is_some() {
        return Err("titles have room already".into());
    }
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let layout = Layout::parse(&stat).ok_or("no command line in /proc/self/stat")?;
    let area = match way {
        Way::Map | Way::Fields => moved(way, &layout).map_err(|e| e.desc().to_owned())?,
        Way::InPlace => in_place(&layout, &args).ok_or("argv's strings are not where they were")?,
    };
    let room = area.len;
    *shown = Some(Shown {
        area,
        title: String::new(),
    });
    Ok(room)
}

/// Shows `title` as this process's command line (nothing without room, or
/// when it already shows it).
pub fn set(title: &Title) {
    let mut shown = lock();
    let Some(shown) = shown.as_mut() else {
        return;
    };
    let text = title.to_string();
    if text != shown.title {
        // SAFETY: the area is this process's, valid and writable for its
        // whole life (see `Area`), and the lock is held.
        let bytes = unsafe { std::slice::from_raw_parts_mut(shown.area.start, shown.area.len) };
        write(bytes, &text);
        shown.title = text;
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Shown>> {
    SHOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `text` into `room` as the kernel shows a title: the text (cut at
/// a character's end to leave two bytes), a NUL, NULs to the end, and a
/// last byte that is not NUL (see the module's documentation). A room of
/// fewer than two bytes is left as it is.
fn write(room: &mut [u8], text: &str) {
    let Some(last) = room.len().checked_sub(1).filter(|&l| l > 0) else {
        return;
    };
    let mut cut = text.len().min(last - 1);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    room[..cut].copy_from_slice(&text.as_bytes()[..cut]);
    room[cut..last].fill(0);
    room[last] = b' ';
}

/// The addresses of the process's memory map that `/proc/self/stat` gives
/// (fields 26–28 and 45–51), as `PR_SET_MM_MAP` wants them back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Layout {
    start_code: u64,
    end_code: u64,
    start_stack: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
}

impl Layout {
    /// From the text of `/proc/self/stat`.
    fn parse(stat: &str) -> Option<Self> {
        // `pid (comm) state …`: comm may hold spaces and parentheses; the
        // fields start after its last `)`, with the state (field 3).
        let (_, rest) = stat.rsplit_once(") ")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let layout = Self {
            start_code: field(26)?,
            end_code: field(27)?,
            start_stack: field(28)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
            arg_start: field(48)?,
            arg_end: field(49)?,
            env_start: field(50)?,
            env_end: field(51)?,
        };
        (layout.arg_start != 0 && layout.arg_start < layout.arg_end).then_some(layout)
    }
}

/// `struct prctl_mm_map` of `<linux/prctl.h>`.
#[repr(C)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: *const u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Points the command line the kernel shows at a buffer of [`ROOM`] bytes
/// of its own, `way` ([`Way::Map`] or [`Way::Fields`]).
fn moved(way: Way, layout: &Layout) -> nix::Result<Area> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
    let size = std::num::NonZeroUsize::new(ROOM).expect("ROOM is not 0");
    // Anonymous memory: the kernel reads a title only from such (a
    // `static` may sit in the executable's file-backed pages). Private, so
    // that each forked process has its own title.
    // SAFETY: a new mapping at an address the kernel picks touches no
    // existing memory.
    let buffer = unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }?;
    let area = Area {
        start: buffer.as_ptr().cast(),
        len: ROOM,
    };
    // SAFETY: the mapping is ROOM bytes, readable and writable, and no one
    // else knows of it yet.
    write(
        unsafe { std::slice::from_raw_parts_mut(area.start, area.len) },
        PROGRAM,
    );
    let start = area.start as u64;
    let moved = match way {
        Way::Map => by_map(layout, start),
        _ => by_fields(layout, start),
    };
    if let Err(err) = moved {
        // SAFETY: the mapping is ours and nothing points to it any more.
        let _ = unsafe { munmap(buffer, ROOM) };
        return Err(err);
    }
    Ok(area)
}

/// `PR_SET_MM_MAP`: the process's memory map as it is, but for its command
/// line, now `ROOM` bytes at `start`.
fn by_map(layout: &Layout, start: u64) -> nix::Result<()> {
    use nix::libc::{PR_SET_MM_MAP, PR_SET_MM_MAP_SIZE, SYS_brk, c_uint, c_ulong, syscall};
    let mut size: c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE writes the size of the kernel's struct
    // into the `c_uint` it is given, which lives past the call.
    unsafe { prctl_mm(PR_SET_MM_MAP_SIZE, &raw mut size as c_ulong, 0) }?;
    if size as usize != std::mem::size_of::<MmMap>() {
        return Err(nix::errno::Errno::EINVAL);
    }
    // SAFETY: brk(0) changes nothing and returns the current break.
    let brk = unsafe { syscall(SYS_brk, 0 as c_ulong) };
    let map = MmMap {
        start_code: layout.start_code,
        end_code: layout.end_code,
        start_data: layout.start_data,
        end_data: layout.end_data,
        start_brk: layout.start_brk,
        brk: brk as u64,
        start_stack: layout.start_stack,
        arg_start: start,
        arg_end: start + ROOM as u64,
        env_start: layout.env_start,
        env_end: layout.env_end,
        // None: the auxiliary vector is left as it is.
        auxv: std::ptr::null(),
        auxv_size: 0,
        // Not a descriptor: /proc/self/exe is left as it is.
        exe_fd: u32::MAX,
    };
    // SAFETY: the kernel reads `map`, of the size given, before the call
    // returns; it checks every address in it, and the only ones changed
    // are the command line's, now memory this module owns (see `Area`).
    // The master has no thread that could move the break meanwhile.
    unsafe {
        prctl_mm(
            PR_SET_MM_MAP,
            &raw const map as c_ulong,
            std::mem::size_of::<MmMap>() as c_ulong,
        )
    }
}

/// `PR_SET_MM_ARG_START` and `PR_SET_MM_ARG_END`: the command line, now
/// `ROOM` bytes at `start`.
fn by_fields(layout: &Layout, start: u64) -> nix::Result<()> {
    use nix::libc::{PR_SET_MM_ARG_END, PR_SET_MM_ARG_START, c_ulong};
    let end = start + ROOM as u64;
    // The kernel refuses a start past the end after either call: first
    // the one that keeps them in order.
    let steps = if start <= layout.arg_end {
        [
            (PR_SET_MM_ARG_START, start, layout.arg_start),
            (PR_SET_MM_ARG_END, end, layout.arg_end),
        ]
    } else {
        [
            (PR_SET_MM_ARG_END, end, layout.arg_end),
            (PR_SET_MM_ARG_START, start, layout.arg_start),
        ]
    };
    // SAFETY: these two take an address, not memory to read or write; the
    // kernel checks it lies in the process's memory, and the command line
    // it then shows is memory this module owns (see `Area`), or was.
    unsafe {
        prctl_mm(steps[0].0, steps[0].1 as c_ulong, 0)?;
        if let Err(err) = prctl_mm(steps[1].0, steps[1].1 as c_ulong, 0) {
            // Back to the command line as it was.
            let _ = prctl_mm(steps[0].0, steps[0].2 as c_ulong, 0);
            return Err(err);
        }
    }
    Ok(())
}

/// `prctl(PR_SET_MM, what, arg, size, 0)`.
///
/// # Safety
///
/// For `PR_SET_MM_MAP` and `PR_SET_MM_MAP_SIZE`, `arg` is the address of a
/// value the kernel reads or writes (`size` bytes of a `MmMap`, a `c_uint`),
/// valid for the call. The command line the kernel shows from then on must
/// be memory that stays valid.
unsafe fn prctl_mm(
    what: nix::libc::c_int,
    arg: nix::libc::c_ulong,
    size: nix::libc::c_ulong,
) -> nix::Result<()> {
    use nix::libc::{PR_SET_MM, c_ulong, prctl};
    // SAFETY: as the caller promised.
    let done = unsafe { prctl(PR_SET_MM, what as c_ulong, arg, size, 0 as c_ulong) };
    nix::errno::Errno::result(done).map(drop)
}

/// `argv`'s strings, to write titles over, when they hold exactly `args`,
/// each with its NUL (no one moved them before).
fn in_place(layout: &Layout, args: &[OsString]) -> Option<Area> {
    use std::os::unix::ffi::OsStrExt;
    let len = usize::try_from(layout.arg_end - layout.arg_start).ok()?;
    let want: usize = args.iter().map(|a| a.len() + 1).sum();
    if len != want {
        return None;
    }
    let start = layout.arg_start as usize as *mut u8;
    // SAFETY: the kernel says the command line is these `len` bytes of the
    // process's memory (its stack, where `argv`'s strings are), readable.
    let now = unsafe { std::slice::from_raw_parts(start, len) };
    let mut expected = Vec::with_capacity(len);
    for arg in args {
        expected.extend_from_slice(arg.as_bytes());
        expected.push(0);
    }
    (now == expected.as_slice()).then_some(Area { start, len })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn titles_say_what_each_process_does() {
        let two = ["echo", "chat"];
        let cases: &[(Title, &str)] = &[
            (Title::Master, "netserver-host: master"),
            (
                Title::Worker {
                    services: &two[..1],
                    busy: false,
                    served: 0,
                },
                "netserver-host: worker echo idle 0 served",
            ),
            (
                Title::Worker {
                    services: &two,
                    busy: true,
                    served: 12,
                },
                "netserver-host: worker echo,chat busy 12 served",
            ),
            (
                Title::Child { service: "echo" },
                "netserver-host: child echo busy",
            ),
            (
                Title::Dequeue { service: "mail" },
                "netserver-host: dequeue mail",
            ),
        ];
        for (title, want) in cases {
            assert_eq!(title.to_string(), *want);
        }
    }

    #[test]
    fn a_title_ends_with_a_nul_and_a_last_byte_that_is_not() {
        let mut room = [b'x'; 12];
        write(&mut room, "abc");
        assert_eq!(&room, b"abc\0\0\0\0\0\0\0\0 ");
        // Cut to leave the NUL and the last byte.
        write(&mut room, "0123456789abcdef");
        assert_eq!(&room, b"0123456789\0 ");
        // Cut at a character's end, not inside it.
        write(&mut room, "012345678é");
        assert_eq!(&room, b"012345678\0\0 ");
        // Too small for anything: left alone.
        let mut tiny = [b'x'; 1];
        write(&mut tiny, "abc");
        assert_eq!(&tiny, b"x");
        let mut two = [b'x'; 2];
        write(&mut two, "abc");
        assert_eq!(&two, b"\0 ");
    }

    #[test]
    fn the_memory_map_comes_from_proc_stat() {
        // 52 fields, each its own number; comm with a space and a
        // parenthesis.
        let fields: Vec<String> = (3..=52).map(|i| (i * 1000).to_string()).collect();
        let stat = format!("77 (a b) c) {}\n", fields.join(" "));
        let layout = Layout::parse(&stat).unwrap();
        assert_eq!(
            (layout.start_code, layout.start_stack, layout.start_data),
            (26000, 28000, 45000)
        );
        assert_eq!((layout.arg_start, layout.arg_end), (48000, 49000));
        assert_eq!((layout.env_start, layout.env_end), (50000, 51000));
        // Hidden (0) or short: none.
        let hidden = stat.replace(" 48000 ", " 0 ");
        assert_eq!(Layout::parse(&hidden), None);
        assert_eq!(Layout::parse("77 (x) R 1 2"), None);
        // This process's own: the command line is its arguments.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let own = Layout::parse(&own).unwrap();
        let args: u64 = std::env::args_os().map(|a| a.len() as u64 + 1).sum();
        assert_eq!(own.arg_end - own.arg_start, args);
    }

    /// The variable that makes [`shows_a_title_until_stdin_closes`] run,
    /// naming the way to try.
    const WAY_VAR: &str = "NETSERVER_TEST_TITLE_WAY";
    /// What starts the line where it says how it went.
    const MARK: &str = "title test: ";

    /// Run by [`each_way_shows_a_title`] in a process of its own (a title
    /// is the process's): makes room the way [`WAY_VAR`] names, shows the
    /// master's title, says `ready` (or `unavailable: why`) on stdout and
    /// waits for stdin to close.
    #[test]
    #[ignore = "run by each_way_shows_a_title, in a process of its own"]
    fn shows_a_title_until_stdin_closes() {
        let Ok(way) = std::env::var(WAY_VAR) else {
            return;
        };
        let way = match way.as_str() {
            "map" => Way::Map,
            "fields" => Way::Fields,
            _ => Way::InPlace,
        };
        match make_room(way) {
            Ok(room) => {
                set(&Title::Master);
                println!("\n{MARK}ready {room}");
            }
            Err(why) => println!("\n{MARK}unavailable: {why}"),
        }
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }

    /// Each way, in a process of its own, shows exactly the title as its
    /// command line. A way this machine does not allow (`fields` without
    /// `CAP_SYS_RESOURCE`; `map` on a kernel without
    /// `CONFIG_CHECKPOINT_RESTORE`) says why and is skipped.
    #[test]
    fn each_way_shows_a_title() {
        for way in ["map", "fields", "in-place"] {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "title::tests::shows_a_title_until_stdin_closes"])
                .args(["--ignored", "--nocapture", "--test-threads", "1"])
                .env(WAY_VAR, way)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            while !line.starts_with(MARK) {
                line.clear();
                if stdout.read_line(&mut line).unwrap() == 0 {
                    break;
                }
            }
            let said = line.trim_start_matches(MARK).trim_end();
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
            // Done: stdin closes, the child ends, its output is read whole.
            drop(child.stdin.take());
            let _ = stdout.read_to_end(&mut Vec::new());
            assert!(child.wait().unwrap().success(), "{way}: {said}");
            if let Some(why) = said.strip_prefix("unavailable: ") {
                let allowed = match way {
                    "fields" => !has_cap_sys_resource(),
                    "map" => why.contains("Invalid argument"),
                    _ => false,
                };
                assert!(allowed, "{way}: {why}");
                continue;
            }
            let room: usize = said.trim_start_matches("ready ").parse().unwrap();
            let want = "netserver-host: master\0";
            if way == "in-place" {
                // Cut to the room: the test's arguments are long enough.
                assert!(room > want.len() + 1, "{way}: room {room}");
            } else {
                assert_eq!(room, ROOM, "{way}");
            }
            assert_eq!(String::from_utf8_lossy(&cmdline), want, "{way}");
        }
    }

    /// Whether this process has `CAP_SYS_RESOURCE` (capability 24).
    fn has_cap_sys_resource() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 24) != 0)
    }
}
