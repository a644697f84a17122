//! `slim batch`: many images, registry to registry, safe to rerun.
//!
//! ```text
//! job file  -> job.rs     schema (deny_unknown_fields), settings merged and checked, no network
//! work list -> plan.rs    [[images]] + [[repositories]] (catalog, tags, regexes, template),
//!                         one writer per destination, shard = hash(destination) mod N
//! check     -> check.rs   per item: HEAD source, GET destination manifest; up to date? (no layer read)
//! slim      -> here       a pool of `jobs` workers, one image each, through copy::copy_image
//! report    -> report.rs  per image status, sizes, error; totals
//!              metrics.rs the same as Prometheus metrics (a textfile, a Pushgateway)
//! ```
//!
//! Guarantees: one image failing (corrupt blob, auth, media type) fails
//! only that image, and its destination stays as it was (copy/ commits
//! the tag last). Memory is bounded by the pool: `jobs` images at once, each
//! streaming (layer contents spool to disk), with its compression threads
//! sized so that the pool does not oversubscribe the CPUs.
//!
//! Images with the same source digest and settings (a tag and its aliases)
//! are slimmed once; the others get a copy of that result (cross-repository
//! mounts within a registry), which records the same source and settings.

pub mod check;
pub mod job;
pub mod metrics;
pub mod plan;
pub mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::copy::RewriteOptions;
use crate::copy::{CopyOptions, copy_image};
use crate::digest::Digest;
use crate::image::{Descriptor, Manifest};
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::RegistryClient;
use crate::sandbox::verify::{self, SlimFailedProbes, VerifyReport};
use crate::settings::Settings;
use crate::transport::registry::RegistrySource;
use crate::transport::{BlobStream, Capabilities, Dest, Staged, StreamKind, open_dest};

pub use check::Decision;
pub use job::{JobFile, JobFileError};
pub use plan::{Shard, WorkItem, WorkList};
pub use report::{BatchReport, ImageResult, Status};

/// How to run a batch.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Images slimmed at once.
    pub jobs: usize,
    /// Redo images that are up to date.
    pub force: bool,
    /// Decide, write nothing, read no layer.
    pub dry_run: bool,
    pub shard: Option<Shard>,
    /// Blobs moved at once within one image.
    pub blob_jobs: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            jobs: default_jobs(),
            force: false,
            dry_run: false,
            shard: None,
            blob_jobs: 3,
        }
    }
}

/// Memory one image may take while being slimmed, for the default `--jobs`
/// (a 1.7 GB, 73 000-file image peaks at about 250 MB).
pub const IMAGE_MEMORY_BUDGET: u64 = 1 << 30;

/// One image per CPU, at most one per [`IMAGE_MEMORY_BUDGET`] of available
/// memory (the cgroup limit in a container), at most 8.
pub fn default_jobs() -> usize {
    let cpus = cpus();
    let by_memory = memory_available().map_or(usize::MAX, |b| {
        usize::try_from(b / IMAGE_MEMORY_BUDGET)
            .unwrap_or(usize::MAX)
            .max(1)
    });
    cpus.min(by_memory).clamp(1, 8)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `MemAvailable`, or the cgroup v2 `memory.max` if lower.
fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Progress events; the CLI prints them.
pub trait BatchProgress: Send + Sync {
    /// The work list is known: `mine` of `all` items are this shard's.
    fn listed(&self, _all: usize, _mine: usize, _list: &WorkList) {}
    /// Every item is checked: `to_slim` will be written, `up_to_date` are
    /// skipped, `failed` could not be checked (or conflict).
    fn planned(&self, _to_slim: usize, _up_to_date: usize, _failed: usize) {}
    fn started(&self, _item: &WorkItem) {}
    /// An item is finished (`done` of `total`; `saved` bytes so far).
    fn finished(&self, _result: &ImageResult, _done: usize, _total: usize, _saved: i64) {}
    fn note(&self, _item: &WorkItem, _message: &str) {}
}

/// Prints an error and its causes on one line, `: ` between them. Each
/// error describes only its own layer, so each thing is said once.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

fn chain(e: &anyhow::Error) -> String {
    ErrorChain(e.as_ref()).to_string()
}

/// An item after the check. Its rewrite options (compiled profiles) are
/// made again when its turn comes, so that a long list holds only digests.
struct Planned {
    item: WorkItem,
    source_digest: Digest,
    /// `None`: a faithful copy.
    settings_digest: Option<Digest>,
    decision: Decision,
}

/// Runs a job: lists, checks and slims; never stops at one image's failure.
pub fn run(
    job: &JobFile,
    opts: &BatchOptions,
    client: &Arc<RegistryClient>,
    progress: &dyn BatchProgress,
) -> BatchReport {
    let started = Instant::now();
    let jobs = opts.jobs.max(1);
    let io_threads = (2 * jobs).clamp(4, 16);
    let all = WorkList::expand(job, client, io_threads);
    let all_count = all.items.len();
    let list = match opts.shard {
        Some(s) => all.shard(s),
        None => all,
    };
    progress.listed(all_count, list.items.len(), &list);

    let mut report = BatchReport {
        job_file: job.path.display().to_string(),
        shard: opts.shard.map(|s| report::ShardInfo {
            index: s.index,
            count: s.count,
        }),
        dry_run: opts.dry_run,
        force: opts.force,
        images: Vec::new(),
        listing_errors: list.errors.clone(),
        excluded: list
            .excluded
            .iter()
            .map(|x| report::Excluded {
                source: x.item.source.to_string(),
                destination: x.item.destination.to_string(),
                entry: x.item.entry.clone(),
                reason: x.reason.clone(),
            })
            .collect(),
        totals: Default::default(),
        duration_seconds: 0.0,
    };

    let total = list.items.len() + list.conflicts.len();
    let state = Runner {
        client,
        opts,
        progress,
        total,
        done: AtomicUsize::new(0),
        saved: Mutex::new(0),
        threads_per_image: cpus().div_ceil(jobs).max(1),
        digests: Mutex::new(Vec::new()),
    };
    let mut results: Vec<Option<ImageResult>> = vec![None; list.items.len()];
    for c in &list.conflicts {
        let mut r = blank(&c.item);
        r.status = Status::Failed;
        r.error = Some(c.reason.clone());
        state.finish(&r);
        report.images.push(r);
    }

    // Check every item (manifests only), on I/O threads.
    let planned = state.check_all(&list.items, io_threads, &mut results);
    let to_slim = planned.iter().filter(|p| p.is_some()).count();
    let up_to_date = results
        .iter()
        .flatten()
        .filter(|r| r.status == Status::Skipped)
        .count();
    progress.planned(to_slim, up_to_date, total - to_slim - up_to_date);

    // Same source digest, same settings: slim once, copy to the others.
    let mut groups: BTreeMap<(Digest, Digest), usize> = BTreeMap::new();
    let mut tasks: Vec<Task> = Vec::new();
    for (i, p) in planned.into_iter().enumerate() {
        let Some(p) = p else { continue };
        let key = p
            .settings_digest
            .as_ref()
            .map(|d| (p.source_digest.clone(), d.clone()));
        match key.as_ref().and_then(|k| groups.get(k)) {
            Some(&t) => tasks[t].followers.push((i, p)),
            None => {
                if let Some(k) = key {
                    groups.insert(k, tasks.len());
                }
                tasks.push(Task {
                    leader: (i, p),
                    followers: Vec::new(),
                });
            }
        }
    }

    if opts.dry_run {
        for t in tasks {
            let leader_dest = t.leader.1.item.destination.to_string();
            let mut all = vec![(t.leader, None)];
            all.extend(t.followers.into_iter().map(|f| (f, Some(&leader_dest))));
            for ((i, p), leader) in all {
                let mut r = blank(&p.item);
                r.status = Status::Planned;
                r.source_digest = Some(p.source_digest.to_string());
                r.reason = Some(match (leader, &p.decision) {
                    (Some(l), _) => {
                        format!("same source and settings as {l}: would copy its result")
                    }
                    (None, Decision::Slim { reason, .. }) => reason.clone(),
                    (None, Decision::UpToDate { reason, .. }) => reason.clone(),
                });
                state.finish(&r);
                results[i] = Some(r);
            }
        }
    } else {
        for done in crate::parallel::map(tasks, jobs, |task| state.run_task(task)) {
            for (i, r) in done {
                results[i] = Some(r);
            }
        }
    }

    report.images.extend(results.into_iter().flatten());
    report.compute_totals();
    report.duration_seconds = started.elapsed().as_secs_f64();
    report
}

struct Task {
    leader: (usize, Planned),
    followers: Vec<(usize, Planned)>,
}

struct Runner<'a> {
    client: &'a Arc<RegistryClient>,
    opts: &'a BatchOptions,
    progress: &'a dyn BatchProgress,
    total: usize,
    done: AtomicUsize,
    saved: Mutex<i64>,
    threads_per_image: usize,
    /// Settings digests already computed (a job has few distinct settings).
    digests: Mutex<Vec<(Settings, Option<Digest>)>>,
}

fn blank(item: &WorkItem) -> ImageResult {
    ImageResult {
        source: item.source.to_string(),
        destination: item.destination.to_string(),
        entry: item.entry.clone(),
        status: Status::Failed,
        reason: None,
        error: None,
        source_digest: None,
        output_digest: None,
        sizes: None,
        platforms: Vec::new(),
        duration_seconds: 0.0,
        verify: None,
    }
}

impl Runner<'_> {
    fn finish(&self, r: &ImageResult) {
        let saved = {
            let mut s = self.saved.lock().expect("saved lock");
            if r.status == Status::Slimmed {
                *s += r.saved_bytes();
            }
            *s
        };
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.progress.finished(r, done, self.total, saved);
    }

    /// Checks each item; up-to-date and failed ones are finished here, the
    /// rest come back to be slimmed.
    fn check_all(
        &self,
        items: &[WorkItem],
        threads: usize,
        results: &mut [Option<ImageResult>],
    ) -> Vec<Option<Planned>> {
        let checked = crate::parallel::map(items.iter().collect(), threads, |item| {
            let t = Instant::now();
            match self.check(item) {
                Ok(p) => match &p.decision {
                    Decision::UpToDate { output, reason } => {
                        let mut r = blank(item);
                        r.status = Status::Skipped;
                        r.reason = Some(reason.clone());
                        r.source_digest = Some(p.source_digest.to_string());
                        r.output_digest = Some(output.to_string());
                        r.duration_seconds = t.elapsed().as_secs_f64();
                        self.finish(&r);
                        (None, Some(r))
                    }
                    Decision::Slim { .. } => (Some(p), None),
                },
                Err(e) => {
                    let mut r = blank(item);
                    r.error = Some(chain(&e));
                    r.duration_seconds = t.elapsed().as_secs_f64();
                    self.finish(&r);
                    (None, Some(r))
                }
            }
        });
        checked
            .into_iter()
            .enumerate()
            .map(|(i, (planned, result))| {
                if result.is_some() {
                    results[i] = result;
                }
                planned
            })
            .collect()
    }

    /// The item's settings, with compression threads sized to the pool.
    fn settings(&self, item: &WorkItem) -> Settings {
        let mut settings = item.settings.clone();
        if settings.threads.is_none() {
            settings.threads = Some(self.threads_per_image);
        }
        settings
    }

    fn rewrite(&self, item: &WorkItem) -> Result<Option<RewriteOptions>> {
        self.settings(item)
            .rewrite(false)
            .with_context(|| format!("settings of {}", item.entry))
    }

    /// What the output records as its settings digest (`None`: a copy).
    fn settings_digest(&self, item: &WorkItem) -> Result<Option<Digest>> {
        if let Some((_, d)) = self
            .digests
            .lock()
            .expect("digests lock")
            .iter()
            .find(|(s, _)| s == &item.settings)
        {
            return Ok(d.clone());
        }
        let d = self.rewrite(item)?.map(|rw| rw.settings_digest());
        self.digests
            .lock()
            .expect("digests lock")
            .push((item.settings.clone(), d.clone()));
        Ok(d)
    }

    fn check(&self, item: &WorkItem) -> Result<Planned> {
        let settings_digest = self.settings_digest(item)?;
        let platforms = item.settings.platforms()?;
        let source_digest = check::source_digest(self.client, &item.source)
            .with_context(|| format!("checking the source {}", item.source))?;
        let decision = check::decide(
            self.client,
            &item.source,
            &source_digest,
            &item.destination,
            settings_digest.as_ref(),
            &platforms,
        )
        .with_context(|| format!("checking the destination {}", item.destination))?;
        let decision = match decision {
            Decision::UpToDate { reason, .. } if self.opts.force => Decision::Slim {
                reason: format!("--force ({reason})"),
                replaces: true,
            },
            d => d,
        };
        Ok(Planned {
            item: item.clone(),
            source_digest,
            settings_digest,
            decision,
        })
    }

    fn run_task(&self, task: Task) -> Vec<(usize, ImageResult)> {
        let (li, leader) = task.leader;
        let leader_dest = leader.item.destination.clone();
        let lr = self.slim(leader);
        let mut out = Vec::new();
        for (fi, f) in task.followers {
            let r = match (&lr.status, &lr.output_digest) {
                (Status::Slimmed, Some(d)) => self.copy_result(f, &leader_dest, d, &lr),
                // The leader failed; its destination may be the reason.
                _ => self.slim(f),
            };
            out.push((fi, r));
        }
        out.insert(0, (li, lr));
        out
    }

    fn slim(&self, p: Planned) -> ImageResult {
        let started = Instant::now();
        self.progress.started(&p.item);
        let mut r = blank(&p.item);
        r.source_digest = Some(p.source_digest.to_string());
        if let Decision::Slim { reason, .. } = &p.decision {
            r.reason = Some(reason.clone());
        }
        let source = RegistryRef {
            digest: Some(p.source_digest.clone()),
            ..p.item.source.clone()
        };
        let platforms = p.item.settings.platforms().unwrap_or_default();
        let replaces = matches!(p.decision, Decision::Slim { replaces: true, .. });
        let outcome = self
            .rewrite(&p.item)
            .and_then(|rw| self.copy(&p.item, &source, platforms, rw, replaces));
        match outcome {
            Ok((o, verified)) => {
                r.status = Status::Slimmed;
                r.fill_from(&o);
                r.verify = verified;
            }
            Err(e) => {
                r.verify = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<SlimFailedProbes>())
                    .map(|f| (*f.report).clone());
                r.error = Some(chain(&e));
            }
        }
        r.duration_seconds = started.elapsed().as_secs_f64();
        self.finish(&r);
        r
    }

    /// A follower: the leader's output, copied (mounted within a registry).
    fn copy_result(
        &self,
        p: Planned,
        leader_dest: &RegistryRef,
        output: &str,
        leader: &ImageResult,
    ) -> ImageResult {
        let started = Instant::now();
        self.progress.started(&p.item);
        let mut r = blank(&p.item);
        r.source_digest = Some(p.source_digest.to_string());
        r.reason = Some(format!(
            "same source and settings as {leader_dest}: copied its result"
        ));
        let from = output
            .parse::<Digest>()
            .map(|d| leader_dest.with_digest(&d))
            .map_err(anyhow::Error::from);
        match from.and_then(|from| self.copy(&p.item, &from, Vec::new(), None, false)) {
            Ok((o, _)) => {
                r.status = Status::Slimmed;
                r.output_digest = Some(o.root.digest.to_string());
                r.sizes = leader.sizes.clone();
                r.platforms = leader.platforms.clone();
            }
            Err(e) => r.error = Some(chain(&e)),
        }
        r.duration_seconds = started.elapsed().as_secs_f64();
        self.finish(&r);
        r
    }

    /// Copies (slims, with `rewrite`) one image; with `verify = true` in
    /// its settings, through the verify gate: the destination is opened
    /// only once the probes passed.
    fn copy(
        &self,
        item: &WorkItem,
        source: &RegistryRef,
        platforms: Vec<crate::image::Platform>,
        rewrite: Option<RewriteOptions>,
        replaces: bool,
    ) -> Result<(crate::stats::CopyOutcome, Option<VerifyReport>)> {
        let src = RegistrySource::new(self.client.clone(), source.clone());
        let open = || -> Result<Box<dyn Dest>> {
            let dst = open_dest(&ImageRef::Registry(item.destination.clone()), self.client)?;
            Ok(if replaces {
                Box::new(NoStream(dst))
            } else {
                dst
            })
        };
        let reporter = ItemReporter {
            item,
            progress: self.progress,
        };
        let gate = match &rewrite {
            Some(_) => verify::gate_from_settings(&item.settings)?,
            None => None,
        };
        let opts = CopyOptions {
            platforms,
            jobs: self.opts.blob_jobs.max(1),
            rewrite,
            client: self.client.clone(),
        };
        let what = || format!("slimming {} into {}", item.source, item.destination);
        if let Some(gate) = gate {
            let v = verify::verified_copy(&src, Some(&open), &opts, &gate, &reporter)
                .with_context(what)?;
            return Ok((v.outcome, Some(v.report)));
        }
        let dst = open()?;
        let outcome = copy_image(&src, dst.as_ref(), &opts, &reporter).with_context(what)?;
        Ok((outcome, None))
    }
}

/// A destination that takes new blobs only once they are made. A layer
/// slim makes is otherwise streamed to the registry while it is compressed,
/// before its digest (and so whether the registry has it) is known. When
/// the destination tag exists already (`--force`, changed settings), the
/// same layers are likely made again: spooling first lets copy/slim.rs ask
/// (HEAD) before uploading, so a blob the destination has is not sent.
struct NoStream(Box<dyn Dest>);

impl Dest for NoStream {
    fn name(&self) -> String {
        self.0.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn has_blob(&self, desc: &Descriptor) -> crate::transport::Result<bool> {
        self.0.has_blob(desc)
    }
    fn mount_blob(&self, desc: &Descriptor, from: &RegistryRef) -> crate::transport::Result<bool> {
        self.0.mount_blob(desc, from)
    }
    fn staging_dir(&self) -> &std::path::Path {
        self.0.staging_dir()
    }
    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> crate::transport::Result<()> {
        self.0.put_blob(desc, blob)
    }
    fn stream_blob(
        &self,
        data: Box<dyn std::io::Read + Send>,
        kind: StreamKind,
    ) -> crate::transport::Result<Option<Box<dyn BlobStream>>> {
        match kind {
            StreamKind::NewLayer => Ok(None),
            // A copied blob's digest is known: it was asked for already.
            StreamKind::Copy => self.0.stream_blob(data, kind),
        }
    }
    fn put_manifest(&self, m: &Manifest) -> crate::transport::Result<()> {
        self.0.put_manifest(m)
    }
    fn commit(&self, root: &Manifest) -> crate::transport::Result<()> {
        self.0.commit(root)
    }
    fn abort(&self) {
        self.0.abort()
    }
}

/// Forwards one image's notes to the batch progress.
struct ItemReporter<'a> {
    item: &'a WorkItem,
    progress: &'a dyn BatchProgress,
}

impl crate::progress::Reporter for ItemReporter<'_> {
    fn note(&self, message: &str) {
        self.progress.note(self.item, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(String, #[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn error_chains_print_every_cause_on_one_line() {
        let e = anyhow::Error::new(Outer("x".into(), Inner)).context("slimming a into b");
        assert_eq!(chain(&e), "slimming a into b: outer x: inner");
    }

    #[test]
    fn default_jobs_is_sane() {
        let j = default_jobs();
        assert!((1..=8).contains(&j));
    }
}
