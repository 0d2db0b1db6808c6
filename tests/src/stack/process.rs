//! Child processes of the stack (PostgreSQL, postrust): who they run as, where their output
//! goes, and how they are stopped.
//!
//! PostgreSQL refuses to run as root, so when this process is root the children run as the
//! `postgres` OS user (or `nobody`). Output goes to a log file in the stack's directory, never a
//! pipe: nothing has to drain it, and the tail is at hand for a start-up error.
//! Children are `std::process::Child`, not tokio's, so a stack can be stopped from `Drop` or from
//! any runtime.
//!
//! Where util-linux's `setpriv` exists (Debian: always) it starts each child, switching the user
//! and setting the parent-death signal: if this process dies without running `Drop` (SIGKILL, a
//! test harness timeout), the kernel stops its servers anyway. The signal follows the *thread*
//! that spawned the child, so children are spawned on the stack runtime's worker threads, which
//! live exactly as long as the stack.

use super::postgres::which;
use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged OS user children run as when this process is root.
#[derive(Clone, Debug)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `None` when this process is not root: children then run as whoever we are.
    /// `COLLISIONOS_STACK_USER` names the user; otherwise `postgres`, then `nobody`.
    pub fn detect() -> Result<Option<RunAs>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
        let wanted: Vec<String> = match std::env::var("COLLISIONOS_STACK_USER") {
            Ok(name) if !name.is_empty() => vec![name],
            _ => vec!["postgres".into(), "nobody".into()],
        };
        for name in &wanted {
            if let Some(found) = passwd
                .lines()
                .find_map(|line| parse_passwd_line(line, name))
            {
                return Ok(Some(found));
            }
        }
        bail!(
            "running as root, and PostgreSQL refuses to run as root: none of the users {wanted:?} \
             exists to run it as (create one, or set COLLISIONOS_STACK_USER)"
        )
    }

    /// Give `path` to this user (the data directory must belong to the server's user).
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("chown {} to {}", path.display(), self.name))
    }
}

fn parse_passwd_line(line: &str, name: &str) -> Option<RunAs> {
    let mut fields = line.split(':');
    if fields.next()? != name {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(RunAs {
        name: name.to_string(),
        uid,
        gid,
    })
}

/// How a child is asked to stop: PostgreSQL's fast shutdown is SIGINT, everything else SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Int,
    Term,
}

impl Stop {
    fn signal(self) -> Signal {
        match self {
            Stop::Int => Signal::INT,
            Stop::Term => Signal::TERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stop::Int => "INT",
            Stop::Term => "TERM",
        }
    }
}

/// A running child and the log file its stdout and stderr go to.
#[derive(Debug)]
pub(crate) struct ChildProc {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How the child is asked to stop (by us, when dropped, and when we die).
    stop: Stop,
    /// Set once `try_wait` has reaped the child: after that its pid may belong to someone else
    /// and must never be signalled.
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Spawn `cmd` with stdin closed and output appended to `log`, as `run_as` if given, with
    /// only `cmd`'s own environment when `clear_env`.
    pub fn spawn(
        name: &'static str,
        cmd: Command,
        clear_env: bool,
        log: &Path,
        run_as: Option<&RunAs>,
        stop: Stop,
    ) -> Result<ChildProc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match which("setpriv") {
            Some(setpriv) => {
                let mut wrapped = Command::new(setpriv);
                wrapped.args(["--pdeathsig", stop.name()]);
                if let Some(user) = run_as {
                    wrapped
                        .arg(format!("--reuid={}", user.uid))
                        .arg(format!("--regid={}", user.gid))
                        .arg("--clear-groups");
                }
                wrapped
                    .arg("--")
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                inherit_setup(&cmd, &mut wrapped, clear_env);
                wrapped
            }
            None => {
                let mut cmd = cmd;
                if clear_env {
                    let own: Vec<_> = cmd
                        .get_envs()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                        .collect();
                    cmd.env_clear().envs(own);
                }
                if let Some(user) = run_as {
                    // std drops the supplementary groups (setgroups(0)) before setuid.
                    cmd.uid(user.uid).gid(user.gid);
                }
                cmd
            }
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        Ok(ChildProc {
            name,
            child,
            log: log.to_path_buf(),
            stop,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has ended (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The last `lines` lines of the child's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Send `sig` unless the child is already reaped.
    pub fn signal(&mut self, sig: Signal) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            // ESRCH cannot happen before we reap; anything else leaves SIGKILL as the fallback.
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Ask the child to stop, wait up to `grace`, then SIGKILL and reap.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.signal(self.stop.signal());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill_and_reap()
    }

    /// [`ChildProc::stop`] for `Drop`, where there is no runtime to sleep on.
    pub fn stop_blocking(&mut self, grace: Duration) -> ExitStatus {
        self.signal(self.stop.signal());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        tracing::warn!(
            child = self.name,
            pid = self.pid(),
            "did not stop in time; killing it"
        );
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(9));
        self.status = Some(status);
        status
    }
}

impl Drop for ChildProc {
    /// Best effort for a stack that was never shut down (a failed test): nothing outlives it.
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop_blocking(DROP_GRACE);
        }
    }
}

/// `from`'s environment changes and working directory, onto `to`.
fn inherit_setup(from: &Command, to: &mut Command, clear_env: bool) {
    if clear_env {
        to.env_clear();
    }
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

/// How long a dropped child gets to stop before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// The last `lines` lines of a log file ("" when there is none).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run `cmd` to completion as `run_as`, output to `log`; an error carries the log's tail.
pub(crate) async fn run_to_end(
    name: &'static str,
    cmd: Command,
    log: &Path,
    run_as: Option<&RunAs>,
    timeout: Duration,
) -> Result<()> {
    let mut child = ChildProc::spawn(name, cmd, false, log, run_as, Stop::Term)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.exited() {
            if status.success() {
                return Ok(());
            }
            bail!("{name} failed ({status}):\n{}", child.log_tail(30));
        }
        if Instant::now() >= deadline {
            child.stop(Duration::ZERO).await;
            bail!(
                "{name} did not finish within {timeout:?}:\n{}",
                child.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago. A child given it may still lose a race
/// for it; callers retry on "address in use".
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
