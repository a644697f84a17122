//! Child processes that cannot outlive the test binary.
//!
//! The shared registries live in `static`s, which Rust never drops, so no
//! `Drop` impl can stop them. Instead every long-running child is spawned with
//! `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills it when its parent
//! *thread* ends. Test threads come and go, so all such children are spawned
//! by one dedicated spawner thread that blocks forever on a channel and only
//! dies with the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                // The sender sits in a static and is never dropped, so this
                // loop (and with it the thread) lasts as long as the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            })
            .expect("starting the harness spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: getpid before fork; in the child only async-signal-safe calls
    // (prctl, getppid, _exit) run between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Spawn `cmd` from the spawner thread with `PR_SET_PDEATHSIG = SIGKILL`, so
/// the child is killed when the test binary exits, however it exits.
pub fn spawn_tethered(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .expect("harness spawner thread is gone");
    rx.recv().expect("harness spawner thread dropped a request")
}
