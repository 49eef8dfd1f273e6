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
        self.enter_chroot()?;
        self.switch()?;
        if let Some(gid) = self.gid {
            tracing::info!("Setting gid to \"{gid} {gid}\"");
        }
        if let Some(uid) = self.uid {
            tracing::info!("Setting uid to \"{uid}\"");
        }
        Ok(())
    }

    /// Enters the chroot, if there is one (`chdir /` in it).
    pub fn enter_chroot(&self) -> Result<()> {
        if let Some(dir) = &self.chroot {
            nix::unistd::chroot(dir).with_context(|| format!("chroot {}", dir.display()))?;
            nix::unistd::chdir("/").context("chdir / in the chroot")?;
            let _ = CHROOTED.set(dir.clone());
            tracing::info!("Chrooting to {}", dir.display());
        }
        Ok(())
    }

    /// Sets the groups, the group and the user, and checks that every id
    /// changed for good (the chroot is not this one's).
    pub fn switch(&self) -> Result<()> {
        if let Some(gid) = self.gid {
            // Only the target group: no supplementary group of root's stays.
            nix::unistd::setgroups(&[gid]).context("setgroups")?;
            nix::unistd::setresgid(gid, gid, gid)
                .with_context(|| format!("setting gid to {gid}"))?;
        }
        if let Some(uid) = self.uid {
            nix::unistd::setresuid(uid, uid, uid)
                .with_context(|| format!("setting uid to {uid}"))?;
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

/// Who the processes of the server become: the master and the shared
/// workers (the server's [`Plan`]), and the workers of each service with
/// processes of its own (`isolation process`) that names its own `user`
/// or `group`.
///
/// When no service's workers become someone else than the server, the
/// master drops root with them, before it forks any ([`Plans::settle_master`]),
/// exactly as without services of their own. Otherwise the master keeps
/// root — the privilege to start a worker as another user — and each
/// child drops to its own plan right after the fork
/// ([`Plans::settle_child`]). (Keeping only `CAP_SETUID` and `CAP_SETGID`
/// would give no less: with them a process may become root again.)
#[derive(Debug, PartialEq, Eq)]
pub struct Plans {
    /// The master's and the shared workers'.
    pub server: Plan,
    /// Each service's own, in the configuration's order (`None`: the
    /// server's).
    services: Vec<Option<Plan>>,
    /// The names of the services with their own.
    names: Vec<String>,
}

impl Plans {
    /// Resolves who the server becomes (`config.privileges`) and who the
    /// workers of each service with its own `user` or `group` become,
    /// given the effective uid the server runs as.
    pub fn new(config: &crate::config::Config, euid: Uid) -> Result<Self> {
        let server = plan(&config.privileges, euid)?;
        let mut services = Vec::new();
        let mut names = Vec::new();
        for service in &config.services {
            let own = plan_own(service, &server, euid)?;
            if own.is_some() {
                names.push(service.name.clone());
            }
            services.push(own);
        }
        Ok(Self {
            server,
            services,
            names,
        })
    }

    /// Whether the workers of some service become someone else than the
    /// master: then the master keeps root to switch in each child.
    pub fn switches(&self) -> bool {
        !self.names.is_empty()
    }

    /// Who the processes serving service `index` become.
    pub fn of_service(&self, index: usize) -> &Plan {
        self.services
            .get(index)
            .and_then(Option::as_ref)
            .unwrap_or(&self.server)
    }

    /// In the master, once it is bound and has left the terminal: drops
    /// root as the server's plan says — unless some service's workers run
    /// as another user, when it only enters the chroot and stays root
    /// (see [`Plans`]).
    pub fn settle_master(&self) -> Result<()> {
        if !self.switches() {
            return self.server.apply();
        }
        self.server.enter_chroot()?;
        tracing::info!(
            "The master stays root: the workers of service {} run as their own user; \
             each worker becomes its user (or the server's) as it starts",
            self.names.join(", ")
        );
        Ok(())
    }

    /// In a child the master just forked, serving service `service`
    /// (`None`: a shared worker): becomes who it must, when the master
    /// kept root for it (otherwise the child already is). Returns whether
    /// it changed who it is, which clears the parent-death signal.
    pub fn settle_child(&self, service: Option<usize>) -> Result<bool> {
        if !self.switches() {
            return Ok(false);
        }
        let plan = service.map_or(&self.server, |index| self.of_service(index));
        plan.switch()?;
        Ok(true)
    }
}

/// Who the workers of `service` become when its own `user` or `group`
/// (see [`crate::config::OwnProcesses`]) makes them someone else than the
/// server (`server`): its user, with that user's own group unless it names
/// one; its group, with the server's user. `None` when they are the
/// server's.
fn plan_own(
    service: &crate::config::ServiceConfig,
    server: &Plan,
    euid: Uid,
) -> Result<Option<Plan>> {
    let own = &service.own;
    // Each was checked as the configuration was read; a user or group
    // removed since is named with where it was given.
    let user = match &own.user {
        Some(text) => Some(find_user(text).map_err(|_| missing(service, "user", text))?),
        None => None,
    };
    let group = match &own.group {
        Some(text) => Some(find_group(text).map_err(|_| missing(service, "group", text))?),
        None => None,
    };
    let uid = user.as_ref().map(|u| u.uid).or(server.uid);
    let gid = group
        .as_ref()
        .map(|g| g.gid)
        .or(user.as_ref().map(|u| u.gid))
        .or(server.gid);
    if !euid.is_root() {
        if let Some(user) = user.as_ref().filter(|u| u.uid != euid) {
            bail!(
                "{}: cannot become another user when not started as root (running as uid {euid})",
                service.origin("user", &user.name)
            );
        }
        if let Some(group) = group.as_ref().filter(|g| g.gid != nix::unistd::getegid()) {
            bail!(
                "{}: cannot become another group when not started as root",
                service.origin("group", &group.name)
            );
        }
        return Ok(None);
    }
    if (uid, gid) == (server.uid, server.gid) {
        return Ok(None);
    }
    Ok(Some(Plan {
        uid,
        gid,
        chroot: server.chroot.clone(),
    }))
}

/// The error for a service's own user or group that does not exist.
fn missing(service: &crate::config::ServiceConfig, key: &str, text: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: no such {key} on this machine",
        service.origin(key, text)
    )
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

    /// A configuration of a server run as `user`, whose one service has
    /// processes of its own with its own `user` and `group` (when given).
    fn tenant(server: &str, user: Option<&str>, group: Option<&str>) -> crate::config::Config {
        use crate::config::{ConfFile, ServiceTable, Setting, Source};
        let at = |line, key, value| Setting::in_file("t.toml", line, key, value);
        let mut settings = vec![
            at(3, "module", "/etc/passwd"),
            at(4, "isolation", "process"),
        ];
        settings.extend(user.map(|u| at(5, "user", u)));
        settings.extend(group.map(|g| at(6, "group", g)));
        let conf = ConfFile {
            settings: vec![at(1, "user", server)],
            services: vec![ServiceTable {
                source: Source::File {
                    path: "t.toml".into(),
                    line: 2,
                },
                settings,
            }],
        };
        crate::config::Config::from_sources(Vec::new(), conf).unwrap()
    }

    #[test]
    fn a_service_of_its_own_may_run_as_its_own_user() {
        let root = Uid::from_raw(0);
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let daemon = User::from_name("daemon").unwrap().unwrap();
        let root_group = Group::from_name("root").unwrap().unwrap();
        // Its user, with that user's own group.
        let plans = Plans::new(&tenant("daemon", Some("nobody"), None), root).unwrap();
        assert!(plans.switches());
        assert_eq!(plans.server.uid, Some(daemon.uid));
        let own = plans.of_service(0);
        assert_eq!((own.uid, own.gid), (Some(nobody.uid), Some(nobody.gid)));
        // Its group, with the server's user.
        let plans = Plans::new(&tenant("daemon", None, Some("root")), root).unwrap();
        let own = plans.of_service(0);
        assert_eq!((own.uid, own.gid), (Some(daemon.uid), Some(root_group.gid)));
        // None of its own, or the server's own: nobody switches, the
        // master drops root as always.
        for config in [
            tenant("nobody", None, None),
            tenant("daemon", Some("daemon"), Some("nogroup")),
        ] {
            let plans = Plans::new(&config, root).unwrap();
            assert!(!plans.switches());
            assert_eq!(plans.of_service(0), &plans.server);
        }
        // Not started as root: only who the server already is.
        let err = Plans::new(&tenant("nobody", Some("daemon"), None), nobody.uid).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml:5: user daemon: cannot become another user when not started as root (running as uid 65534)"
        );
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
