//! Daemon mode, as Net::Server does it: `background` (fork after binding;
//! the process started from the terminal exits 0), `setsid` (the same, in a
//! new session), and `pid_file` (the pid of the process that stays: refused
//! when it names a live process, removed at exit, kept across a HUP).
//!
//! Unlike Net::Server, the process started from the terminal waits until
//! the daemon is ready — pid file written, root dropped — before it exits:
//! 0 when it is, 2 with the daemon's error line when it is not. So an
//! init system that starts the server and then reads its pid file
//! (systemd's `Type=forking`) finds it, and a failed start is seen.
//!
//! Standard input, output and error of a detached server, as in
//! Net::Server: with `setsid` or a log file, input and output go to
//! /dev/null; error goes to the log file when there is one, else to
//! /dev/null with `setsid` (the log is lost: give a `log_file`), else it
//! stays where it was (`background` alone keeps logging to the terminal).
//! A server in the foreground keeps all three.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::unistd::{ForkResult, Pid};

use crate::log::Target;

/// The daemon options (`background`, `setsid`, `pid_file`).
pub use crate::config::DaemonSettings as Settings;

/// Refuses to start when the pid file at `path` names a live process
/// other than this one (a HUP re-executes this very process, whose pid
/// file it is). A file that names no live process is stale and will be
/// overwritten.
pub fn check_pid_file(path: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("pid_file {}", path.display())),
    };
    let Some(pid) = parse_pid(&text) else {
        return Ok(());
    };
    if pid == std::process::id() {
        return Ok(());
    }
    let raw = i32::try_from(pid).unwrap_or(i32::MAX);
    match nix::sys::signal::kill(Pid::from_raw(raw), None) {
        // EPERM: it exists, run by another user.
        Ok(()) | Err(nix::errno::Errno::EPERM) => bail!(
            "pid_file {}: process {pid} named there is running (another server?); \
             stop it, or remove the file if that process is not a server",
            path.display()
        ),
        Err(_) => Ok(()),
    }
}

/// A pid in a pid file's text (digits, then a newline or nothing).
fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// The terminal's process, waiting in [`detach`] for the daemon to say
/// whether it started; held by the daemon until it says so.
#[derive(Debug)]
pub struct Launcher {
    pipe: File,
}

/// What the daemon says to the process that started it.
const READY: u8 = b'+';
const FAILED: u8 = b'-';

impl Launcher {
    /// The daemon is ready: the process started from the terminal exits 0.
    pub fn ready(mut self) {
        // If it is gone there is nobody to tell.
        let _ = self.pipe.write_all(&[READY]);
    }

    /// The daemon could not start: the process started from the terminal
    /// prints `err` and exits 2.
    pub fn failed(mut self, err: &anyhow::Error) {
        let message = format!("{}{err:#}", FAILED as char);
        let _ = self.pipe.write_all(message.as_bytes());
    }
}

/// Leaves the terminal as `settings` say, after binding and before any
/// thread exists: forks (the parent waits for the daemon's word, then
/// exits), starts a new session with `setsid`, and points standard input,
/// output and error where the module documentation says, given where the
/// log goes (`log`).
///
/// A HUP re-executes the daemon (`restarted`): it does not fork again, but
/// its standard error is pointed at the log file again (which may have
/// been rotated). Returns the [`Launcher`] to tell when the server is
/// ready (`None` when nothing was forked).
pub fn detach(settings: &Settings, log: &Target, restarted: bool) -> Result<Option<Launcher>> {
    if !settings.detaches() {
        return Ok(None);
    }
    let launcher = if restarted {
        None
    } else {
        let launcher = fork_away()?;
        if settings.setsid {
            nix::unistd::setsid().context("setsid")?;
        }
        tracing::info!("Process backgrounded (pid {})", std::process::id());
        Some(launcher)
    };
    redirect_stdio(settings.setsid, log)?;
    Ok(launcher)
}

/// Forks. The parent waits for the child's word and exits; the child
/// returns what it tells its word with.
fn fork_away() -> Result<Launcher> {
    let threads = crate::threads::count();
    if threads != 1 {
        bail!("background: cannot fork with {threads} threads running");
    }
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("background: pipe")?;
    // Nothing half-written may be copied into the child.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the process is single-threaded (checked just above: the
    // master starts no thread before its workers, and they are forked
    // later), so the child is a consistent copy of it. The parent only
    // reads a pipe, writes to stderr and exits.
    match unsafe { nix::unistd::fork() }.context("background: fork")? {
        ForkResult::Parent { child } => {
            drop(write);
            std::process::exit(wait_for_word(File::from(read), child))
        }
        ForkResult::Child => {
            drop(read);
            Ok(Launcher {
                pipe: File::from(write),
            })
        }
    }
}

/// In the process started from the terminal: waits for the daemon `child`
/// to say it is ready (0) or why it failed (2, printed), or to end without
/// a word (2).
fn wait_for_word(mut pipe: File, child: Pid) -> i32 {
    let mut word = Vec::new();
    let _ = pipe.read_to_end(&mut word);
    match word.split_first() {
        Some((&READY, _)) => 0,
        Some((&FAILED, message)) => {
            eprintln!("netserver-host: {}", String::from_utf8_lossy(message));
            2
        }
        _ => {
            eprintln!("netserver-host: the server (pid {child}) ended before it was ready");
            2
        }
    }
}

/// Points standard input, output and error where Net::Server does (see
/// the module documentation).
fn redirect_stdio(setsid: bool, log: &Target) -> Result<()> {
    let to_file = !matches!(log, Target::Stderr);
    if !setsid && !to_file {
        return Ok(());
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    nix::unistd::dup2_stdin(&null).context("standard input to /dev/null")?;
    nix::unistd::dup2_stdout(&null).context("standard output to /dev/null")?;
    match log {
        // What still reaches standard error (a panic) goes to the log.
        Target::File(path) => {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("log_file {}: cannot open", path.display()))?;
            nix::unistd::dup2_stderr(&file).context("standard error to the log file")?;
        }
        _ => nix::unistd::dup2_stderr(&null).context("standard error to /dev/null")?,
    }
    Ok(())
}

/// The pid file this process wrote, removed when dropped: when the server
/// exits, not across a HUP (whose `exec` keeps this process, and the file).
///
/// It is written by root, before root is dropped, and stays root's, so that
/// a worker cannot change which process it names. Removing it after the
/// drop needs a directory the server's user may write to; where that is
/// not so, it is left behind with a warning (a later start finds its pid
/// dead and overwrites it).
#[derive(Debug)]
pub struct PidFile {
    /// Where it is, as configured.
    path: PathBuf,
    /// Where it is seen from inside the chroot (`None`: out of reach).
    reach: Option<PathBuf>,
}

impl PidFile {
    /// Writes this process's pid to `path` (not a symbolic link), unless
    /// it already holds it (across a HUP, when this process may no longer
    /// be allowed to write it).
    pub fn write(path: &Path) -> Result<Self> {
        let own = std::process::id();
        let holds_own = std::fs::read_to_string(path).is_ok_and(|t| parse_pid(&t) == Some(own));
        if !holds_own {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
                .and_then(|mut file| writeln!(file, "{own}"))
                .with_context(|| format!("pid_file {}: cannot write it", path.display()))?;
        }
        Ok(Self {
            path: path.to_owned(),
            reach: Some(path.to_owned()),
        })
    }

    /// Before entering the chroot `dir`: works out where the pid file will
    /// be seen from inside it, to remove it at exit. A pid file outside the
    /// chroot cannot be removed: that is logged now.
    pub fn enter_chroot(&mut self, dir: &Path) {
        let inside = match (
            std::fs::canonicalize(&self.path),
            std::fs::canonicalize(dir),
        ) {
            (Ok(file), Ok(dir)) => file
                .strip_prefix(&dir)
                .ok()
                .map(|rest| Path::new("/").join(rest)),
            _ => None,
        };
        if inside.is_none() {
            tracing::warn!(
                "pid_file {} is outside chroot {}: it will not be removed at exit",
                self.path.display(),
                dir.display()
            );
        }
        self.reach = inside;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(reach) = &self.reach else {
            return;
        };
        // Only while it is ours: another server may have taken the name,
        // and a forked worker unwinding here is not the server.
        let ours =
            std::fs::read_to_string(reach).is_ok_and(|t| parse_pid(&t) == Some(std::process::id()));
        if !ours {
            return;
        }
        if let Err(err) = std::fs::remove_file(reach) {
            tracing::warn!(
                "pid_file {}: cannot remove it ({err}); its directory must be writable by uid {}",
                self.path.display(),
                nix::unistd::geteuid()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_in_pid_files() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid(" 77 "), Some(77));
        for stale in ["", "\n", "0", "-5", "abc", "12 34", "99999999999"] {
            assert_eq!(parse_pid(stale), None, "{stale:?}");
        }
    }

    #[test]
    fn only_live_processes_are_refused() {
        let dir = std::env::temp_dir().join(format!("netserver-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.pid");
        // Missing, stale, garbage, or this very process: fine.
        assert!(check_pid_file(&path).is_ok());
        for text in [
            "999999999\n",
            "garbage",
            &format!("{}\n", std::process::id()),
        ] {
            std::fs::write(&path, text).unwrap();
            assert!(check_pid_file(&path).is_ok(), "{text:?}");
        }
        // Our parent is alive.
        let parent = nix::unistd::getppid();
        std::fs::write(&path, format!("{parent}\n")).unwrap();
        let err = check_pid_file(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("process {parent} ")), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_removed_and_kept_when_not_ours() {
        let dir = std::env::temp_dir().join(format!("netserver-pidw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
        // Taken over by someone else: left alone.
        let file = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        drop(file);
        assert!(path.exists());
        // A symbolic link is not followed.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).unwrap();
        assert!(PidFile::write(&path).is_err());
        assert!(!dir.join("elsewhere").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seen_from_inside_a_chroot() {
        let dir = std::env::temp_dir().join(format!("netserver-pidc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let mut file = PidFile::write(&dir.join("run/x.pid")).unwrap();
        file.enter_chroot(&dir);
        assert_eq!(file.reach.as_deref(), Some(Path::new("/run/x.pid")));
        file.enter_chroot(&dir.join("run/elsewhere-not-there"));
        assert_eq!(file.reach, None);
        // Out of reach: not removed (by this test either).
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
