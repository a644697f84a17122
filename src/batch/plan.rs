//! The work list: `[[images]]` as written, `[[repositories]]` expanded from
//! the registry's catalog and tag lists, then made safe and split.
//!
//! - Order: `[[images]]` in file order, then each `[[repositories]]` entry's
//!   matches, repositories and tags sorted. Given the same listings, every
//!   process builds the same list.
//! - A destination written twice: the same source again is dropped; another
//!   source is a conflict (the first entry keeps it, the later one fails).
//! - A source that is also a destination of this job (a rerun that would
//!   slim `app:1-slim` into `app:1-slim-slim`) is left out.
//! - Shards: an item belongs to shard `hash(destination) mod N`, so it
//!   depends on nothing but the item. Shards that list the registry at
//!   slightly different moments still never write one destination twice,
//!   and a retried pod redoes exactly its own share.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::digest::Digest;
use crate::reference::RegistryRef;
use crate::registry::{Listing, RegistryClient, escaped};
use crate::settings::Settings;

use super::job::JobFile;

/// One image to slim.
#[derive(Clone, Debug)]
pub struct WorkItem {
    pub source: RegistryRef,
    pub destination: RegistryRef,
    /// The entry it came from (`[[images]] entry 1 (line 4)`).
    pub entry: String,
    /// `[defaults]` with the entry's settings over them, checked.
    pub settings: Settings,
}

/// An item that will not be done, and why.
#[derive(Clone, Debug)]
pub struct LeftOut {
    pub item: WorkItem,
    pub reason: String,
}

/// An entry whose listing failed (the rest of the job goes on).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListingError {
    pub entry: String,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct WorkList {
    pub items: Vec<WorkItem>,
    /// Destinations claimed by an earlier entry for another source: failed.
    pub conflicts: Vec<LeftOut>,
    /// Sources that this job writes: not slimmed again.
    pub excluded: Vec<LeftOut>,
    pub errors: Vec<ListingError>,
}

/// `--shard I/N`: this process does the items with `hash mod N == I`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range for {count} shards (0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: expected INDEX/COUNT, e.g. 0/3"))?;
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("shard {s:?}: expected INDEX/COUNT, e.g. 0/3"))
        };
        Shard::new(num(i)?, num(n)?)
    }

    /// The shard an item belongs to: the first 8 bytes of the SHA-256 of its
    /// destination reference, modulo the count.
    pub fn of(destination: &RegistryRef, count: u32) -> u32 {
        let d = Digest::sha256_of(destination.to_string().as_bytes());
        let n = u64::from_str_radix(&d.hex()[..16], 16).expect("hex digest");
        (n % u64::from(count.max(1))) as u32
    }

    pub fn owns(&self, destination: &RegistryRef) -> bool {
        Shard::of(destination, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl WorkList {
    /// Builds the whole list (every shard's). Listing requests go out on up
    /// to `threads` threads.
    pub fn expand(job: &JobFile, client: &RegistryClient, threads: usize) -> WorkList {
        let mut list = WorkList::default();
        let mut candidates: Vec<WorkItem> = job
            .images
            .iter()
            .map(|e| WorkItem {
                source: e.source.clone(),
                destination: e.destination.clone(),
                entry: e.name.clone(),
                settings: e.settings.clone(),
            })
            .collect();

        // Catalogs, once per registry. Names outside the Distribution
        // grammar are never used; an entry that would have matched one
        // reports it.
        let mut catalogs: BTreeMap<&str, Result<Listing, String>> = BTreeMap::new();
        for e in &job.repositories {
            catalogs.entry(e.registry.as_str()).or_insert_with(|| {
                client
                    .catalog(&e.registry)
                    .map(|mut repos| {
                        repos.names.sort();
                        repos
                    })
                    .map_err(|err| format!("{}", crate::batch::ErrorChain(&err)))
            });
        }
        // Tag lists, once per repository, in parallel.
        let mut wanted: Vec<(String, String)> = Vec::new();
        for e in &job.repositories {
            if let Some(Ok(repos)) = catalogs.get(e.registry.as_str()) {
                for r in repos.names.iter().filter(|r| e.repository.is_match(r)) {
                    let key = (e.registry.clone(), r.clone());
                    if !wanted.contains(&key) {
                        wanted.push(key);
                    }
                }
            }
        }
        let tags = list_tags(client, &wanted, threads);

        for e in &job.repositories {
            let repos = match catalogs.get(e.registry.as_str()) {
                Some(Ok(r)) => r,
                Some(Err(err)) => {
                    list.errors.push(ListingError {
                        entry: e.name.clone(),
                        error: err.clone(),
                    });
                    continue;
                }
                None => continue,
            };
            for bad in repos.rejected.iter().filter(|r| e.repository.is_match(r)) {
                list.errors.push(ListingError {
                    entry: e.name.clone(),
                    error: format!(
                        "{} lists the repository {}, which is not a valid repository name; skipped",
                        e.registry,
                        escaped(bad)
                    ),
                });
            }
            let mut matched = 0;
            for repo in repos.names.iter().filter(|r| e.repository.is_match(r)) {
                matched += 1;
                let key = (e.registry.clone(), repo.clone());
                let repo_tags = match tags.get(&key) {
                    Some(Ok(t)) => t,
                    Some(Err(err)) => {
                        list.errors.push(ListingError {
                            entry: e.name.clone(),
                            error: err.clone(),
                        });
                        continue;
                    }
                    None => continue,
                };
                let wanted_tag = |t: &&String| e.tags.as_ref().is_none_or(|re| re.is_match(t));
                for bad in repo_tags.rejected.iter().filter(wanted_tag) {
                    list.errors.push(ListingError {
                        entry: e.name.clone(),
                        error: format!(
                            "{}/{repo} lists the tag {}, which is not a valid tag; skipped",
                            e.registry,
                            escaped(bad)
                        ),
                    });
                }
                for tag in repo_tags.names.iter().filter(wanted_tag) {
                    let source = RegistryRef {
                        registry: e.registry.clone(),
                        repository: repo.clone(),
                        tag: Some(tag.clone()),
                        digest: None,
                    };
                    match e.destination.destination(&e.registry, repo, tag) {
                        Ok(destination) => candidates.push(WorkItem {
                            source,
                            destination,
                            entry: e.name.clone(),
                            settings: e.settings.clone(),
                        }),
                        Err(err) => list.errors.push(ListingError {
                            entry: e.name.clone(),
                            error: format!("{source}: {err}"),
                        }),
                    }
                }
            }
            if matched == 0 {
                tracing::warn!(
                    entry = %e.name,
                    "no repository of {} matches {:?}",
                    e.registry,
                    e.repository.as_str()
                );
            }
        }

        // One writer per destination.
        let mut claimed: HashMap<String, usize> = HashMap::new();
        let mut kept: Vec<WorkItem> = Vec::new();
        for item in candidates {
            let key = item.destination.to_string();
            match claimed.get(&key) {
                Some(&i) if kept[i].source == item.source && kept[i].settings == item.settings => {}
                Some(&i) => {
                    let other = if kept[i].source == item.source {
                        " with other settings"
                    } else {
                        ""
                    };
                    list.conflicts.push(LeftOut {
                        reason: format!(
                            "{} is already the destination of {} ({}){other}; give this entry another destination",
                            item.destination, kept[i].source, kept[i].entry
                        ),
                        item,
                    })
                }
                None => {
                    claimed.insert(key, kept.len());
                    kept.push(item);
                }
            }
        }
        // Never read what this job writes.
        let written: HashSet<String> = kept.iter().map(|i| i.destination.to_string()).collect();
        for item in kept {
            if written.contains(&item.source.to_string()) {
                list.excluded.push(LeftOut {
                    reason: "this job writes it (it is a destination)".into(),
                    item,
                });
            } else {
                list.items.push(item);
            }
        }
        list
    }

    /// Keeps what `shard` owns.
    pub fn shard(mut self, shard: Shard) -> WorkList {
        self.items.retain(|i| shard.owns(&i.destination));
        self.conflicts.retain(|c| shard.owns(&c.item.destination));
        self.excluded.retain(|c| shard.owns(&c.item.destination));
        self
    }
}

type TagLists = HashMap<(String, String), Result<Listing, String>>;

fn list_tags(client: &RegistryClient, wanted: &[(String, String)], threads: usize) -> TagLists {
    let lists = crate::parallel::map(wanted.iter().collect(), threads.clamp(1, 16), |key| {
        let (registry, repo) = key;
        let r = match client.list_tags(registry, repo) {
            Ok(mut t) => {
                t.names.sort();
                Ok(t)
            }
            // Distribution answers 404 for a repository whose tags were
            // all deleted (it stays in the catalog).
            Err(crate::registry::RegistryError::NotFound { .. }) => Ok(Listing::default()),
            Err(e) => Err(format!("{}", crate::batch::ErrorChain(&e))),
        };
        (key.clone(), r)
    });
    lists.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegistryRef {
        RegistryRef::parse(s).unwrap()
    }

    #[test]
    fn shards_split_every_destination_exactly_once() {
        let dests: Vec<RegistryRef> = (0..200)
            .map(|i| r(&format!("mirror.example.com/team/app{}:v{i}", i % 7)))
            .collect();
        for n in 1..=5 {
            let mut seen = vec![0; dests.len()];
            for i in 0..n {
                let s = Shard::new(i, n).unwrap();
                for (k, d) in dests.iter().enumerate() {
                    if s.owns(d) {
                        seen[k] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{n} shards: {seen:?}");
        }
        // Stable: the same answer every time (it is persisted in running pods).
        assert_eq!(Shard::of(&r("mirror.example.com/a:1"), 7), {
            let d = Digest::sha256_of(b"mirror.example.com/a:1");
            (u64::from_str_radix(&d.hex()[..16], 16).unwrap() % 7) as u32
        });
        // Not degenerate: 200 items over 4 shards are spread out.
        let counts: Vec<usize> = (0..4)
            .map(|i| dests.iter().filter(|d| Shard::of(d, 4) == i).count())
            .collect();
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
    }

    #[test]
    fn shard_arguments() {
        assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 1, count: 3 });
        assert!(Shard::parse("3/3").unwrap_err().contains("out of range"));
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("1").unwrap_err().contains("INDEX/COUNT"));
    }

    #[test]
    fn conflicts_and_own_destinations_are_left_out() {
        let job = JobFile::parse(
            std::path::Path::new("jobs.toml"),
            r#"
[defaults]
profile = "none"
[[images]]
source = "r.example.com/a:1"
destination = "r.example.com/a:1-slim"
[[images]]
source = "r.example.com/a:1"
destination = "r.example.com/a:1-slim"
[[images]]
source = "r.example.com/b:1"
destination = "r.example.com/a:1-slim"
[[images]]
source = "r.example.com/a:1-slim"
destination = "r.example.com/a:1-slim-slim"
[[images]]
source = "r.example.com/a:1"
destination = "r.example.com/a:1-slim"
compression = "zstd"
"#,
        )
        .unwrap();
        let client = RegistryClient::new(Default::default()).unwrap();
        let list = WorkList::expand(&job, &client, 1);
        let show = |v: &[WorkItem]| {
            v.iter()
                .map(|i| format!("{} -> {}", i.source, i.destination))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            show(&list.items),
            ["r.example.com/a:1 -> r.example.com/a:1-slim"]
        );
        assert_eq!(list.conflicts.len(), 2);
        assert!(list.conflicts[0].reason.contains("r.example.com/a:1 ("));
        assert!(list.conflicts[1].reason.contains("with other settings"));
        assert_eq!(list.excluded.len(), 1);
        assert_eq!(
            list.excluded[0].item.source.to_string(),
            "r.example.com/a:1-slim"
        );
    }
}
