//! A bounded parallel map: the one worker pool of slim (blobs of an image,
//! layers being decoded, images of a batch, checks, tag listings).
//!
//! Items are handed out in input order to at most `workers` scoped threads;
//! results come back in input order. Once an item fails, no further item is
//! started: the workers finish what they hold and stop.

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The errors of a failed [`try_map`], in the order they happened. Holds at
/// least one; more only when several running items failed at once.
#[derive(Debug)]
pub struct Failed<E> {
    errors: Vec<(usize, E)>,
}

impl<E> Failed<E> {
    /// The error that happened first.
    pub fn first(self) -> E {
        self.errors
            .into_iter()
            .next()
            .expect("a failure holds an error")
            .1
    }

    /// The failed item that comes first in the input, and its index. Every
    /// item before it was started, and finished without error.
    pub fn earliest(self) -> (usize, E) {
        self.errors
            .into_iter()
            .min_by_key(|(i, _)| *i)
            .expect("a failure holds an error")
    }
}

/// Runs `f` on every item on up to `workers` threads (at least one, at most
/// one per item); the results in input order, or the errors that stopped it.
pub fn try_map<T, R, E, F>(items: Vec<T>, workers: usize, f: F) -> Result<Vec<R>, Failed<E>>
where
    T: Send,
    R: Send,
    E: Send,
    F: Fn(T) -> Result<R, E> + Sync,
{
    let n = items.len();
    let todo: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let done: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let errors: Mutex<Vec<(usize, E)>> = Mutex::new(Vec::new());
    let failed = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(n) {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(slot) = todo.get(i) else { return };
                    let item = slot
                        .lock()
                        .expect("item lock")
                        .take()
                        .expect("each item once");
                    match f(item) {
                        Ok(r) => *done[i].lock().expect("result lock") = Some(r),
                        Err(e) => {
                            errors.lock().expect("errors lock").push((i, e));
                            failed.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().expect("errors lock");
    if !errors.is_empty() {
        return Err(Failed { errors });
    }
    Ok(done
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("result lock")
                .expect("every item done")
        })
        .collect())
}

/// [`try_map`] for work that cannot fail.
pub fn map<T, R, F>(items: Vec<T>, workers: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    match try_map(items, workers, |t| Ok::<R, Infallible>(f(t))) {
        Ok(r) => r,
        Err(_) => unreachable!("the work cannot fail"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_input_order() {
        // Later items finish first.
        let out = map((0..20u64).collect(), 4, |i| {
            std::thread::sleep(Duration::from_millis(20 - i));
            i * 10
        });
        assert_eq!(out, (0..20u64).map(|i| i * 10).collect::<Vec<_>>());
        assert!(map(Vec::<u8>::new(), 3, |i| i).is_empty());
    }

    #[test]
    fn at_most_workers_run_at_once() {
        for workers in [1, 3] {
            let running = AtomicUsize::new(0);
            let peak = AtomicUsize::new(0);
            map((0..12).collect(), workers, |_: i32| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
            });
            let peak = peak.load(Ordering::SeqCst);
            assert!(peak <= workers && peak >= 1, "{workers} workers: {peak}");
        }
        // Zero workers still runs the items, on one thread.
        assert_eq!(map(vec![1, 2], 0, |i| i + 1), [2, 3]);
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        let started = AtomicUsize::new(0);
        let r = try_map((0..100).collect(), 2, |i: usize| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                return Err(format!("item {i}"));
            }
            std::thread::sleep(Duration::from_millis(20));
            Ok(i)
        });
        assert_eq!(r.unwrap_err().first(), "item 3");
        // Items 0..=3, and at most one more the other worker had taken.
        assert!(started.load(Ordering::SeqCst) <= 5);
    }

    #[test]
    fn first_in_time_and_earliest_in_input() {
        // Item 0 fails late, item 1 fails at once: both run (two workers).
        let r = try_map(vec![0u64, 1], 2, |i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 100 } else { 0 }));
            Err::<(), _>(i)
        });
        let failed = r.unwrap_err();
        assert_eq!(failed.errors.len(), 2);
        assert_eq!(failed.earliest(), (0, 0));
        let r = try_map(vec![0u64, 1], 2, |i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 100 } else { 0 }));
            Err::<(), _>(i)
        });
        assert_eq!(r.unwrap_err().first(), 1);
    }
}
