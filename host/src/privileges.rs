//! Dropping root after the sockets are bound, as Net::Server does: `chroot`,
//! then the supplementary groups, `group`, `user` — in that order — and a
//! check that real, effective and saved ids all changed.
//!
//! Started as root with no `user` and `group`, the server becomes `nobody`
//! and `nogroup`; it stays root only when `user root` is configured. Started
//! as anyone else, it stays who it is (and refuses a `user` or `group` it
//! cannot become).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Group, Uid, User};

/// The user Net::Server becomes when started as root with no `user`.
pub const DEFAULT_USER: &str = "nobody";
/// The group Net::Server becomes when started as root with no `group`.
pub const DEFAULT_GROUP: &str = "nogroup";

/// The directory this process chrooted into, once it did.
static CHROOTED: OnceLock<PathBuf> = OnceLock::new();

/// The chroot this process is in, if it entered one.
pub fn chrooted() -> Option<&'static Path> {
    CHROOTED.get().map(PathBuf::as_path)
}

/// Who the server becomes, as configured.
pub use crate::config::Privileges as Wanted;

/// Who the server becomes: resolved ids, and the files it must still be
/// able to open afterwards (log file, pid file), handed to that user.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The uid to become (`None`: stay).
    pub uid: Option<Uid>,
    /// The gid to become (`None`: stay).
    pub gid: Option<Gid>,
    /// The directory to chroot into.
    pub chroot: Option<PathBuf>,
}

/// Resolves the ids of who the server becomes (`wanted`), given the
/// effective uid the server runs as.
pub fn plan(wanted: &Wanted, euid: Uid) -> Result<Plan> {
    let user = match &wanted.user {
        Some(text) => Some(find_user(text)?),
        None if euid.is_root() => Some(find_user(DEFAULT_USER)?),
        None => None,
    };
    let group = match &wanted.group {
        Some(text) => Some(find_group(text)?),
        None if euid.is_root() && user.as_ref().is_some_and(|u| !u.uid.is_root()) => {
            // nogroup, or the user's own group where there is none.
            match Group::from_name(DEFAULT_GROUP) {
                Ok(Some(group)) => Some(group),
                _ => user
                    .as_ref()
                    .and_then(|u| Group::from_gid(u.gid).ok().flatten()),
            }
        }
        None => None,
    };
    if !euid.is_root() {
        if let Some(user) = user.as_ref().filter(|u| u.uid != euid) {
            bail!(
                "user {}: cannot become another user when not started as root (running as uid {euid})",
                user.name
            );
        }
        if let Some(group) = group.as_ref().filter(|g| g.gid != nix::unistd::getegid()) {
            bail!(
                "group {}: cannot become another group when not started as root",
                group.name
            );
        }
        if let Some(dir) = &wanted.chroot {
            bail!(
                "chroot {}: only root can chroot (running as uid {euid})",
                dir.display()
            );
        }
        return Ok(Plan {
            uid: None,
            gid: None,
            chroot: None,
        });
    }
    Ok(Plan {
        uid: user.map(|u| u.uid),
        gid: group.map(|g| g.gid),
        chroot: wanted.chroot.clone(),
    })
}

impl Plan {
    /// Whether the server stays root.
    pub fn stays_root(&self) -> bool {
        self.uid.is_none_or(|uid| uid.is_root())
    }

    /// Gives `files` (the log file, the pid file) to the user the server
    /// becomes, so that it can still open them after a HUP.
    pub fn hand_over(&self, files: &[&Path]) -> Result<()> {
        if self.stays_root() {
            return Ok(());
        }
        for file in files.iter().filter(|f| f.exists()) {
            nix::unistd::chown(*file, self.uid, self.gid)
                .with_context(|| format!("cannot give {} to the server's user", file.display()))?;
        }
        Ok(())
    }

    /// Gives a unix socket file the server bound to the user it becomes,
    /// as Net::Server does, so that it can remove the file at exit (in a
    /// sticky directory such as /tmp only the owner may); its group stays
    /// `group` (`socket_group`) when given, else the user's group.
    pub fn hand_over_socket(&self, path: &Path, group: Option<u32>) -> Result<()> {
        if self.stays_root() {
            return Ok(());
        }
        let group = group.map(nix::unistd::Gid::from_raw).or(self.gid);
        nix::unistd::chown(path, self.uid, group)
            .with_context(|| format!("cannot give {} to the server's user", path.display()))
    }

    /// Enters the chroot, then sets the groups, the group and the user, and
    /// checks that every id changed for good.
    pub fn apply(&self) -> Result<()> {
        if self.stays_root() && nix::unistd::geteuid().is_root() {
            tracing::warn!("user root: the server and its workers run as root");
        }
        if let Some(dir) = &self.chroot {
            nix::unistd::chroot(dir).with_context(|| format!("chroot {}", dir.display()))?;
            nix::unistd::chdir("/").context("chdir / in the chroot")?;
            let _ = CHROOTED.set(dir.clone());
            tracing::info!("Chrooting to {}", dir.display());
        }
        if let Some(gid) = self.gid {
            // Only the target group: no supplementary group of root's stays.
            nix::unistd::setgroups(&[gid]).context("setgroups")?;
            nix::unistd::setresgid(gid, gid, gid)
                .with_context(|| format!("setting gid to {gid}"))?;
            tracing::info!("Setting gid to \"{gid} {gid}\"");
        }
        if let Some(uid) = self.uid {
            nix::unistd::setresuid(uid, uid, uid)
                .with_context(|| format!("setting uid to {uid}"))?;
            tracing::info!("Setting uid to \"{uid}\"");
        }
        self.verify()?;
        if !self.stays_root() {
            // Changing uid made the process undumpable, which gives
            // /proc/self to root: the workers could not open their own
            // /proc/self/pagemap, which the pooling allocator reads to reset
            // only the pages a guest touched. The cost: processes of the
            // same user may trace this one (see docs/security.md).
            nix::sys::prctl::set_dumpable(true).context("prctl PR_SET_DUMPABLE")?;
        }
        Ok(())
    }

    /// Reads the ids back: real, effective and saved uid and gid, and the
    /// groups, must be what was asked; and root must be out of reach.
    fn verify(&self) -> Result<()> {
        let uids = nix::unistd::getresuid().context("getresuid")?;
        let gids = nix::unistd::getresgid().context("getresgid")?;
        if let Some(uid) = self.uid
            && (uids.real, uids.effective, uids.saved) != (uid, uid, uid)
        {
            bail!(
                "the privilege drop did not take: uids are {}/{}/{}, not {uid}",
                uids.real,
                uids.effective,
                uids.saved
            );
        }
        if let Some(gid) = self.gid {
            if (gids.real, gids.effective, gids.saved) != (gid, gid, gid) {
                bail!(
                    "the privilege drop did not take: gids are {}/{}/{}, not {gid}",
                    gids.real,
                    gids.effective,
                    gids.saved
                );
            }
            let groups = nix::unistd::getgroups().context("getgroups")?;
            if groups.iter().any(|g| *g != gid) {
                bail!("the privilege drop did not take: still in groups {groups:?}");
            }
        }
        if !self.stays_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            bail!("the privilege drop did not take: root could be taken back");
        }
        Ok(())
    }
}

fn find_user(text: &str) -> Result<User> {
    let found = match text.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(text),
    };
    match found {
        Ok(Some(user)) => Ok(user),
        _ => bail!("user {text}: no such user on this machine"),
    }
}

fn find_group(text: &str) -> Result<Group> {
    let found = match text.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(text),
    };
    match found {
        Ok(Some(group)) => Ok(group),
        _ => bail!("group {text}: no such group on this machine"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(user: Option<&str>, group: Option<&str>) -> Wanted {
        Wanted {
            user: user.map(str::to_owned),
            group: group.map(str::to_owned),
            chroot: None,
        }
    }

    #[test]
    fn plans() {
        let root = Uid::from_raw(0);
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let nogroup = Group::from_name("nogroup")
            .unwrap()
            .map_or(nobody.gid, |g| g.gid);
        let root_gid = Gid::from_raw(0);
        let cases = [
            // Root with nothing configured becomes nobody/nogroup.
            (wanted(None, None), Some(nobody.uid), Some(nogroup)),
            (
                wanted(Some("nobody"), None),
                Some(nobody.uid),
                Some(nogroup),
            ),
            (
                wanted(Some("65534"), Some("0")),
                Some(nobody.uid),
                Some(root_gid),
            ),
            // Root only when asked.
            (wanted(Some("root"), None), Some(root), None),
            (
                wanted(Some("root"), Some("root")),
                Some(root),
                Some(root_gid),
            ),
        ];
        for (wanted, uid, gid) in cases {
            let plan = plan(&wanted, root).unwrap();
            assert_eq!((plan.uid, plan.gid), (uid, gid), "{wanted:?}");
        }
        assert!(
            plan(&wanted(Some("root"), None), root)
                .unwrap()
                .stays_root()
        );
        assert!(!plan(&wanted(None, None), root).unwrap().stays_root());
    }

    #[test]
    fn not_root() {
        let nobody = User::from_name("nobody").unwrap().unwrap();
        // As nobody, nothing to do unless asked for someone else.
        let got = plan(&wanted(None, None), nobody.uid).unwrap();
        assert_eq!((got.uid, got.gid), (None, None));
        let err = plan(&wanted(Some("root"), None), nobody.uid).unwrap_err();
        assert!(err.to_string().contains("not started as root"), "{err}");
        let chroot = Wanted {
            chroot: Some("/tmp".into()),
            ..Wanted::default()
        };
        assert!(
            plan(&chroot, nobody.uid)
                .unwrap_err()
                .to_string()
                .contains("only root")
        );
    }
}
