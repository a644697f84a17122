//! Bounds on time: how long slim waits before a retry and in all, and how
//! slow a transfer may get before it counts as stalled.
//!
//! - [`Retries`]: a bounded number of attempts, a cap on any one wait (a
//!   `Retry-After` above it fails at once, saying what the registry asked
//!   for) and on the total waited per request.
//! - [`SpeedGuard`]: curl's `--speed-limit`/`--speed-time`. A transfer that
//!   moves fewer than `speed_limit` bytes per second over a `speed_time`
//!   window has stalled. Only the other side's time counts: for a response
//!   body, the time slim spends blocked in `read`; for an upload body, the
//!   time between reqwest's reads (slim's own time producing the bytes —
//!   compressing a layer, downloading the blob it streams — is not the
//!   registry's fault). A connection that says nothing at all is cut by the
//!   client's read timeout, which also becomes a [`Stall`].

use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::options::ClientOptions;

/// Why there is no next attempt.
#[derive(Debug)]
pub enum GiveUp {
    /// Every attempt is used.
    Attempts(u32),
    /// Waiting again would pass the per-request budget.
    Budget(Duration),
    /// The registry asked for a longer wait than slim allows.
    RetryAfter { asked: Duration, max: Duration },
}

/// Retries made by this process, every request and transfer counted (for
/// `slim batch`'s metrics).
static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process retried a registry request or transfer.
pub fn retries_so_far() -> u64 {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Attempts and waits of one request (or one blob download).
#[derive(Clone, Debug)]
pub struct Retries {
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_retry_after: Duration,
    budget: Duration,
    /// Attempts made so far (the first included).
    attempts: u32,
    waited: Duration,
}

impl Retries {
    /// For a request that may be tried `max_attempts` times.
    pub fn new(opts: &ClientOptions, max_attempts: u32) -> Retries {
        Retries {
            max_attempts: max_attempts.max(1),
            backoff: opts.backoff,
            max_backoff: opts.max_backoff,
            max_retry_after: opts.max_retry_after,
            budget: opts.retry_budget,
            attempts: 1,
            waited: Duration::ZERO,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt (`retry_after` when the registry
    /// sent one), or why there is none. Does not sleep.
    pub fn next_wait(&self, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        if let Some(asked) = retry_after
            && asked > self.max_retry_after
        {
            return Err(GiveUp::RetryAfter {
                asked,
                max: self.max_retry_after,
            });
        }
        if self.attempts >= self.max_attempts {
            return Err(GiveUp::Attempts(self.attempts));
        }
        let wait = retry_after.unwrap_or_else(|| {
            self.backoff
                .saturating_mul(1 << (self.attempts - 1).min(16))
                .min(self.max_backoff)
        });
        if self.waited + wait > self.budget {
            return Err(GiveUp::Budget(self.waited));
        }
        Ok(wait)
    }

    /// Sleeps before the next attempt, or says why there is none.
    pub fn wait(&mut self, retry_after: Option<Duration>) -> Result<(), GiveUp> {
        let wait = self.next_wait(retry_after)?;
        self.sleep(wait);
        Ok(())
    }

    /// Sleeps `wait` (from [`Retries::next_wait`]) and counts the attempt.
    pub fn sleep(&mut self, wait: Duration) {
        RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(wait);
        self.waited += wait;
        self.attempts += 1;
    }
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::Attempts(n) => write!(f, "after {n} attempts"),
            GiveUp::Budget(waited) => {
                write!(f, "after waiting {} s between attempts", waited.as_secs())
            }
            GiveUp::RetryAfter { asked, max } => write!(
                f,
                "it asked for a wait of {} s (Retry-After), more than the {} s slim waits",
                asked.as_secs(),
                max.as_secs()
            ),
        }
    }
}

/// A transfer that went too slowly, or silent.
#[derive(Clone, Debug)]
pub struct Stall {
    /// Bytes moved in the window (0 and `silent` for a read timeout).
    pub bytes: u64,
    pub window: Duration,
    /// The minimum, bytes per second.
    pub limit: u64,
    pub silent: bool,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.silent {
            write!(f, "nothing moved for {}", secs(self.window))
        } else {
            write!(
                f,
                "{} bytes in {}, below the minimum of {}",
                self.bytes,
                secs(self.window),
                rate(self.limit)
            )
        }
    }
}

impl std::error::Error for Stall {}

/// `30 s`, `0.4 s`.
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs_f64().round())
    }
}

fn rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec >= 1024 && bytes_per_sec.is_multiple_of(1024) {
        format!("{} KiB/s", bytes_per_sec / 1024)
    } else {
        format!("{bytes_per_sec} B/s")
    }
}

impl Stall {
    /// Nothing at all moved for `window`.
    pub fn silent(window: Duration) -> Stall {
        Stall {
            bytes: 0,
            window,
            limit: 0,
            silent: true,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self)
    }
}

/// The [`Stall`] somewhere in an error's chain: ours, inside an
/// `io::Error` (which hides it from `source()`), or a reqwest timeout.
pub fn find_stall(e: &(dyn std::error::Error + 'static), window: Duration) -> Option<Stall> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<Stall>() {
            return Some(s.clone());
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref()
                && let Some(s) = find_stall(inner, window)
            {
                return Some(s);
            }
            if io.kind() == io::ErrorKind::TimedOut {
                return Some(Stall::silent(window));
            }
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return Some(Stall::silent(window));
        }
        cur = e.source();
    }
    None
}

/// Counts bytes against the other side's time, window by window.
#[derive(Clone, Debug)]
pub struct SpeedGuard {
    limit: u64,
    window: Duration,
    bytes: u64,
    spent: Duration,
    /// Bytes over the guard's whole life.
    pub total: u64,
}

impl SpeedGuard {
    pub fn new(opts: &ClientOptions) -> SpeedGuard {
        SpeedGuard {
            limit: opts.speed_limit,
            window: opts.speed_time,
            bytes: 0,
            spent: Duration::ZERO,
            total: 0,
        }
    }

    /// `n` bytes moved in `spent` of the other side's time.
    fn account(&mut self, n: usize, spent: Duration) -> io::Result<()> {
        self.total += n as u64;
        self.bytes += n as u64;
        self.spent += spent;
        if self.spent < self.window {
            return Ok(());
        }
        let needed = (self.limit as f64 * self.spent.as_secs_f64()) as u64;
        if self.bytes < needed {
            return Err(Stall {
                bytes: self.bytes,
                window: self.spent,
                limit: self.limit,
                silent: false,
            }
            .into_io());
        }
        self.bytes = 0;
        self.spent = Duration::ZERO;
        Ok(())
    }

    fn silent(&self) -> io::Error {
        Stall::silent(self.window).into_io()
    }
}

/// A response body under a [`SpeedGuard`]: time blocked in `read` is the
/// sender's.
pub struct GuardedRead<R> {
    pub inner: R,
    pub guard: SpeedGuard,
}

impl<R: Read> Read for GuardedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        match self.inner.read(buf) {
            Ok(n) => {
                self.guard.account(n, started.elapsed())?;
                Ok(n)
            }
            Err(e) if find_stall(&e, self.guard.window).is_some() => Err(self.guard.silent()),
            Err(e) => Err(e),
        }
    }
}

/// An upload body under a [`SpeedGuard`]: the time between two reads is
/// the receiver's, taking the bytes the first one gave.
pub struct GuardedBody<R> {
    inner: R,
    guard: SpeedGuard,
    /// When the last read returned, and how many bytes it gave.
    last: Option<(Instant, usize)>,
    watch: BodyWatch,
}

impl<R> GuardedBody<R> {
    /// `watch` learns how the transport takes the body.
    pub fn new(inner: R, opts: &ClientOptions, watch: &BodyWatch) -> GuardedBody<R> {
        GuardedBody {
            inner,
            guard: SpeedGuard::new(opts),
            last: None,
            watch: watch.clone(),
        }
    }
}

impl<R: Read> Read for GuardedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((at, n)) = self.last.take() {
            let gap = at.elapsed();
            self.watch.started(gap);
            self.guard.account(n, gap)?;
        } else {
            self.watch.started(Duration::ZERO);
        }
        let got = self.inner.read(buf);
        self.watch.ended(matches!(got, Ok(0)));
        let n = got?;
        self.last = Some((Instant::now(), n));
        Ok(n)
    }
}

/// How long an upload's transport went without asking for more of its
/// body. When a receiver stops taking data, TCP_USER_TIMEOUT ends the
/// connection and reqwest reports only "disconnected" for the body (after
/// one last read as the connection dies); a wait of a whole window before
/// the last read, or since, says that the receiver stalled.
#[derive(Clone)]
pub struct BodyWatch(Arc<Mutex<WatchState>>);

struct WatchState {
    /// When the last read ended; `None` while one is under way (slim is
    /// producing the bytes).
    ended: Option<Instant>,
    /// The transport's wait before the last read.
    gap: Duration,
    /// The whole body has been read: what remains is the answer.
    done: bool,
}

impl Default for BodyWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyWatch {
    pub fn new() -> BodyWatch {
        // Until the transport first asks for the body, it is connecting or
        // authenticating, which have bounds of their own.
        BodyWatch(Arc::new(Mutex::new(WatchState {
            ended: None,
            gap: Duration::ZERO,
            done: false,
        })))
    }

    fn started(&self, gap: Duration) {
        let mut s = self.0.lock().expect("body watch lock");
        s.ended = None;
        s.gap = gap;
    }

    fn ended(&self, done: bool) {
        let mut s = self.0.lock().expect("body watch lock");
        s.ended = Some(Instant::now());
        s.done = done;
    }

    /// How long the transport has waited since the last read (zero while
    /// slim itself produces the next bytes).
    pub fn idle(&self) -> Duration {
        let s = self.0.lock().expect("body watch lock");
        s.ended.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The longest the transport has just waited: before the last read, or
    /// since it.
    pub fn waited(&self) -> Duration {
        let gap = self.0.lock().expect("body watch lock").gap;
        gap.max(self.idle())
    }

    /// Waits for `result`, the outcome of the request sending the body,
    /// while the transport keeps taking the body, and for `answer` after
    /// the last of it; gives up as a stall once the transport has waited a
    /// whole `window` for the receiver to take more, or `answer` for it to
    /// answer. `Ok(None)`: the request's thread ended without a word.
    pub fn wait_for<T>(
        &self,
        result: &mpsc::Receiver<T>,
        window: Duration,
        answer: Duration,
    ) -> Result<Option<T>, Stall> {
        loop {
            match result.recv_timeout(window.min(Duration::from_millis(100))) {
                Ok(t) => return Ok(Some(t)),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let idle = self.idle();
                    let done = self.0.lock().expect("body watch lock").done;
                    if idle >= if done { answer } else { window } {
                        return Err(Stall::silent(idle));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ClientOptions {
        ClientOptions {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(8),
            retry_budget: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(30),
            speed_limit: 1000,
            speed_time: Duration::from_millis(200),
            ..ClientOptions::default()
        }
    }

    #[test]
    fn retries_stop_at_the_attempts_the_budget_or_a_long_retry_after() {
        let o = opts();
        let mut r = Retries::new(&o, 3);
        assert!(r.wait(None).is_ok());
        assert!(r.wait(None).is_ok());
        assert!(matches!(r.wait(None), Err(GiveUp::Attempts(3))));

        let mut r = Retries::new(&o, 100);
        let mut n = 0;
        let e = loop {
            match r.wait(None) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(e, GiveUp::Budget(w) if w <= o.retry_budget),
            "{e:?}"
        );
        assert!(n >= 2, "{n}");

        let r = Retries::new(&o, 5);
        let e = r.next_wait(Some(Duration::from_secs(100_000))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it asked for a wait of 100000 s (Retry-After), more than the 30 s slim waits"
        );
        assert!(r.next_wait(Some(Duration::from_millis(5))).is_ok());
        assert!(
            r.next_wait(Some(Duration::from_millis(25))).is_err(),
            "over budget"
        );
    }

    /// A reader that gives `chunk` bytes per call, taking `delay` each.
    struct Slow {
        chunk: usize,
        delay: Duration,
    }

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            let n = self.chunk.min(buf.len());
            buf[..n].fill(7);
            Ok(n)
        }
    }

    #[test]
    fn a_slow_body_stalls_a_fast_one_does_not() {
        let o = opts();
        let mut slow = GuardedRead {
            inner: Slow {
                chunk: 10,
                delay: Duration::from_millis(20),
            },
            guard: SpeedGuard::new(&o),
        };
        let mut buf = [0; 64];
        let err = (0..100)
            .find_map(|_| slow.read(&mut buf).err())
            .expect("a stall");
        let stall = find_stall(&err, o.speed_time).unwrap();
        assert!(!stall.silent && stall.bytes < 200, "{stall}");

        let mut fast = GuardedRead {
            inner: Slow {
                chunk: 64,
                delay: Duration::from_millis(5),
            },
            guard: SpeedGuard::new(&o),
        };
        for _ in 0..100 {
            assert_eq!(fast.read(&mut buf).unwrap(), 64);
        }
    }

    #[test]
    fn an_upload_counts_the_receivers_time_not_the_producers() {
        let o = opts();
        // The producer is slow (its own time), the receiver instant: fine.
        let mut body = GuardedBody::new(
            Slow {
                chunk: 1,
                delay: Duration::from_millis(30),
            },
            &o,
            &BodyWatch::new(),
        );
        let mut buf = [0; 8];
        for _ in 0..20 {
            assert_eq!(body.read(&mut buf).unwrap(), 1);
        }
        // The receiver takes 30 ms per byte: stalled.
        let mut body = GuardedBody::new(
            Slow {
                chunk: 1,
                delay: Duration::ZERO,
            },
            &o,
            &BodyWatch::new(),
        );
        let err = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(30));
                body.read(&mut buf).err()
            })
            .expect("a stall");
        assert!(find_stall(&err, o.speed_time).is_some());
    }
}
