//! What a run leaves behind when it stops early: nothing it created.
//!
//! Destinations clean up after an error themselves ([`crate::transport::Dest::abort`]).
//! A run can also stop from outside: SIGINT, SIGTERM or SIGHUP, or the
//! `--timeout` deadline. Then [`stop_and_exit`] runs the undo actions that
//! destinations and staging directories registered with [`on_stop`], newest
//! first, and exits. Writers take a [`permit`] around each step that creates
//! something visible, so no file appears once the undo actions have run.
//!
//! `kill -9` cannot be caught. Every staging directory slim makes is held
//! with an advisory lock (`flock`) for as long as its run lives; the next
//! run that uses the same place removes the ones nobody holds
//! ([`StagingDir::create_in`]).

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use tempfile::TempDir;

type Action = Arc<dyn Fn() + Send + Sync>;

struct Registry {
    next: u64,
    actions: Vec<(u64, Action)>,
}

static ACTIONS: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    actions: Vec::new(),
});

/// `true` once the run is stopping: no permit is granted any more.
static STOPPING: RwLock<bool> = RwLock::new(false);

/// An undo action, registered until this guard is dropped (the work it
/// would undo was committed, or cleaned up the ordinary way).
#[must_use = "the action is unregistered when the guard is dropped"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        let mut reg = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
        reg.actions.retain(|(id, _)| *id != self.0);
    }
}

/// Registers `action` to run if the run is stopped from outside.
pub fn on_stop(action: impl Fn() + Send + Sync + 'static) -> Guard {
    let mut reg = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
    reg.next += 1;
    let id = reg.next;
    reg.actions.push((id, Arc::new(action)));
    Guard(id)
}

/// Held while creating files or directories at a destination. Refused once
/// the run is stopping, so that nothing appears after the undo actions ran.
pub fn permit() -> io::Result<RwLockReadGuard<'static, bool>> {
    let guard = STOPPING.read().unwrap_or_else(|e| e.into_inner());
    if *guard {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the run is stopping",
        ));
    }
    Ok(guard)
}

/// How the command line tells the user why the run stopped (set by
/// [`install`]; nothing below the command line prints).
static NOTIFY: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Stops the run: waits for writers to finish the step they are in, runs
/// every undo action (newest first), says why and exits.
pub fn stop_and_exit(code: i32, message: &str) -> ! {
    let mut stopping = STOPPING.write().unwrap_or_else(|e| e.into_inner());
    *stopping = true;
    let actions: Vec<Action> = {
        let mut reg = ACTIONS.lock().unwrap_or_else(|e| e.into_inner());
        reg.actions.drain(..).map(|(_, a)| a).collect()
    };
    for action in actions.iter().rev() {
        action();
    }
    if let Some(notify) = NOTIFY.get() {
        notify(message);
    }
    std::process::exit(code)
}

/// Stops the run on SIGINT, SIGTERM and SIGHUP (exit 128 + the signal, as
/// shells report it), and after `timeout` (exit 1); `notify` tells the user.
pub fn install(timeout: Option<Duration>, notify: fn(&str)) {
    let _ = NOTIFY.set(notify);
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let name = match sig {
                        SIGINT => "SIGINT",
                        SIGTERM => "SIGTERM",
                        _ => "SIGHUP",
                    };
                    stop_and_exit(
                        128 + sig,
                        &format!(
                            "interrupted ({name}): stopped, and removed what this run had written"
                        ),
                    );
                }
            });
        }
        Err(e) => tracing::warn!("cannot watch for signals: {e}"),
    }
    if let Some(limit) = timeout {
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            stop_and_exit(
                1,
                &format!(
                    "the run took longer than --timeout {}: stopped, and removed what it had written (raise --timeout for a slow registry or a large image)",
                    humantime_short(limit)
                ),
            );
        });
    }
}

/// `90s`, `15m`, `2h` as the user would write it.
pub fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Parses `--timeout`: a number with a unit (`90s`, `15m`, `2h`, `1d`;
/// `500ms`), or plain seconds; `0` means no limit.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 15m, 2h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// An exclusive advisory lock on a directory, held until dropped.
pub struct DirLock(#[allow(dead_code)] File);

impl DirLock {
    /// Waits for the lock.
    pub fn exclusive(dir: &Path) -> io::Result<DirLock> {
        let f = File::open(dir)?;
        f.lock()?;
        Ok(DirLock(f))
    }
}

/// Whether a live run holds `dir` (a staging directory) locked.
pub fn is_held(dir: &Path) -> bool {
    match File::open(dir) {
        Ok(f) => matches!(f.try_lock(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// A temporary directory slim works in, locked for as long as it lives,
/// removed when dropped or when the run is stopped.
pub struct StagingDir {
    dir: TempDir,
    _lock: File,
    _guard: Guard,
}

impl StagingDir {
    /// Creates `PREFIX…` in `parent`. With `sweep`, first removes the
    /// directories of that prefix that no live run holds (left by a run that
    /// was killed); the caller must hold `parent`'s [`DirLock`] then, so
    /// that no other run's new directory is taken for a stale one.
    pub fn create_in(parent: &Path, prefix: &str, sweep: bool) -> io::Result<StagingDir> {
        if sweep {
            sweep_stale(parent, prefix);
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        let lock = File::open(dir.path())?;
        lock.try_lock().map_err(io::Error::from)?;
        let path = dir.path().to_path_buf();
        let guard = on_stop(move || remove_tree(&path));
        Ok(StagingDir {
            dir,
            _lock: lock,
            _guard: guard,
        })
    }

    /// In the system temp directory (never swept: other programs' files
    /// live there).
    pub fn create_temp(prefix: &str) -> io::Result<StagingDir> {
        Self::create_in(&std::env::temp_dir(), prefix, false)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes a directory tree; retried, since a thread of the stopping run
/// may still add a file to it while it goes.
pub fn remove_tree(path: &Path) {
    for _ in 0..5 {
        match fs::remove_dir_all(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

/// Removes `parent/PREFIX*` directories that no live run holds.
pub fn sweep_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(prefix) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let Ok(f) = File::open(&path) else { continue };
        if f.try_lock().is_ok() && fs::remove_dir_all(&path).is_ok() {
            tracing::info!(
                "removed {}, left by an earlier run that was killed",
                path.display()
            );
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("15m").unwrap(),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("2h").unwrap(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_duration("45").unwrap(), Some(Duration::from_secs(45)));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("0").unwrap(), None);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-5s").is_err());
        assert_eq!(humantime_short(Duration::from_secs(3600)), "1h");
        assert_eq!(humantime_short(Duration::from_secs(90)), "90s");
    }

    /// A staging directory is held while it lives; one left by a dead run
    /// (here: one whose lock was never taken) is swept, a held one is not.
    #[test]
    fn stale_staging_directories_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let live = StagingDir::create_in(tmp.path(), ".slim-staging-", false).unwrap();
        assert!(is_held(live.path()));
        let stale = tmp.path().join(".slim-staging-dead");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("partial"), b"x").unwrap();
        let other = tmp.path().join("user-data");
        fs::create_dir(&other).unwrap();
        let removed = sweep_stale(tmp.path(), ".slim-staging-");
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.path().is_dir());
        assert!(other.is_dir());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
