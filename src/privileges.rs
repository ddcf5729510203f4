//! Never serve as root by accident.
//!
//! A network service that parses requests from the network should not hold root. Under
//! systemd the unit already runs us as the unprivileged `butler-edge` user. Started by hand
//! as root, we refuse unless told which user to become (`--user NAME`); we then bind the
//! listener and open the database as root (a port below 1024, a root-owned data directory)
//! and drop to that user before serving the first request. `--user root` is accepted as an
//! explicit decision, with a warning.

use nix::unistd::{Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "refusing to run as root outside systemd: pass --user NAME to drop to an unprivileged user after binding (for example --user nobody), or run the butler-edge.service unit"
    )]
    RootWithoutUser,
    #[error("--user {0:?}: no such user on this machine")]
    NoSuchUser(String),
    #[error("--user {name:?}: cannot look the user up: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error(
        "--user {0:?}: only root can change to another user; run as that user directly, without --user"
    )]
    NotRoot(String),
    #[error("dropping privileges to user {name:?} (uid {uid}, gid {gid}): {step} failed: {source}")]
    Drop {
        name: String,
        uid: u32,
        gid: u32,
        step: &'static str,
        source: nix::Error,
    },
    #[error("dropping privileges to user {0:?} did not stick: the process could become root again")]
    NotDropped(String),
}

/// The user to become after binding.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Decides, before anything is opened, whether and to whom privileges will be dropped.
/// `under_systemd` is [`crate::systemd::under_systemd`].
pub fn plan(user: Option<&str>, under_systemd: bool) -> Result<Option<Target>, PrivilegeError> {
    let is_root = nix::unistd::geteuid().is_root();
    let Some(name) = user else {
        if is_root && !under_systemd {
            return Err(PrivilegeError::RootWithoutUser);
        }
        return Ok(None);
    };
    let found = User::from_name(name)
        .map_err(|source| PrivilegeError::Lookup {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()))?;
    if found.uid == nix::unistd::geteuid() {
        // Already that user (or root asking to stay root): nothing to drop.
        return Ok(None);
    }
    if !is_root {
        return Err(PrivilegeError::NotRoot(name.to_string()));
    }
    Ok(Some(Target {
        name: name.to_string(),
        uid: found.uid,
        gid: found.gid,
    }))
}

/// Becomes `target` for good: supplementary groups, then group, then user (glibc applies
/// each to every thread of the process), and checks root cannot be regained.
pub fn drop_to(target: &Target) -> Result<(), PrivilegeError> {
    let fail = |step: &'static str| {
        let target = target.clone();
        move |source| PrivilegeError::Drop {
            name: target.name,
            uid: target.uid.as_raw(),
            gid: target.gid.as_raw(),
            step,
            source,
        }
    };
    nix::unistd::setgroups(&[target.gid]).map_err(fail("setgroups"))?;
    nix::unistd::setgid(target.gid).map_err(fail("setgid"))?;
    nix::unistd::setuid(target.uid).map_err(fail("setuid"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
        return Err(PrivilegeError::NotDropped(target.name.clone()));
    }
    tracing::info!(user = %target.name, uid = target.uid.as_raw(), "dropped root privileges");
    Ok(())
}

/// Logs the decision made when root runs as root on purpose.
pub fn warn_if_root() {
    if nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "running as root; in production run the butler-edge.service unit or pass --user with an unprivileged user"
        );
    }
}
