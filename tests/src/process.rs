//! Child processes that cannot outlive the test process.
//!
//! Every child is spawned from one supervisor thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG = SIGKILL`. The kernel delivers that signal when the spawning *thread* dies,
//! which is why spawning happens on a thread that never exits rather than on a test's own thread:
//! a control plane shared through a `static` is never dropped, and a test binary that panics,
//! aborts or is killed must still take etcd and kube-apiserver with it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn supervisor() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SUPERVISOR: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-supervisor".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The channel closes only at process exit; park so the thread never ends first.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn supervisor thread");
        Mutex::new(tx)
    })
}

/// A running child process whose output goes to a log file. Killed on drop.
pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Process> {
        Self::spawn_in(name, program, args, log, env, None)
    }

    /// Like [`Process::spawn`], in working directory `cwd` when given (for programs that resolve
    /// paths such as `./var/run/secrets/...` against it, as Istio's do).
    pub fn spawn_in(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
        cwd: Option<&Path>,
    ) -> Result<Process> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        // The supervisor thread forks, so the child would inherit *its* CPU affinity; the child
        // takes the calling thread's instead, so a caller that pins itself before spawning
        // (the load tool's `--server-cpus`) pins the child from its first instruction.
        // SAFETY: cpu_set_t is plain data and sched_getaffinity fills it for this thread.
        let cpus = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
                .then_some(set)
        };
        // SAFETY: prctl, getppid and sched_setaffinity are async-signal-safe system calls;
        // nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if let Some(set) = &cpus
                    && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        supervisor()
            .lock()
            .unwrap()
            .send((cmd, tx))
            .context("supervisor thread gone")?;
        let child = rx
            .recv()
            .context("supervisor thread gone")?
            .with_context(|| format!("start {} ({})", name, program.display()))?;
        Ok(Process {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    /// Fails when the process has exited, quoting the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status}; last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the process (SIGSTOP): none of its threads runs until [`Process::resume`].
    pub fn freeze(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid; it is reaped only by `kill`/drop.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to {}", self.name));
        }
        Ok(())
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
