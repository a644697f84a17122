//! What a reference means here: the one place that decides, for `slim`,
//! `slim analyze` (and `slim run`), between the local engine and a
//! registry.
//!
//! A short name — no transport, no registry host: `myapp:latest`,
//! `team/app:1.2` — means the local engine's image when an engine is
//! reachable and has it, as `docker run myapp` does; otherwise the registry,
//! by Docker Hub rules, with a note saying why. `docker://` or a registry
//! host (a first component with a `.` or a `:`, or `localhost`) forces the
//! registry; `docker-daemon:` forces the engine.
//!
//! The output goes back where the source came from: when the source came
//! from an engine, a short `-o` name is loaded into that engine.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::docker_daemon::{self, DockerDaemonDest};
use super::engine::{Engine, EngineError};
use super::{Dest, Source, SourceLimits};
use crate::reference::{ImageRef, ReferenceError, is_short_name};
use crate::registry::RegistryClient;

/// Where a resolved reference lives.
#[derive(Clone, Debug)]
pub enum Origin {
    /// A local engine, which answered.
    Engine(Engine),
    /// A registry, by host (`docker.io`).
    Registry(String),
    /// A file or directory.
    Local,
}

/// A reference, resolved.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// What the user typed.
    pub typed: String,
    /// What it means.
    pub image: ImageRef,
    pub origin: Origin,
    /// Why a short name means a registry image: no engine, or no such
    /// image in it.
    pub note: Option<String>,
}

impl Resolved {
    /// `the local engine (unix:///var/run/docker.sock)`, `the registry
    /// docker.io`, `an OCI layout`, …: for the output line and the report.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Engine(e) => format!("the local engine ({})", e.address()),
            Origin::Registry(host) => format!("the registry {host}"),
            Origin::Local => match &self.image {
                ImageRef::OciLayout { .. } => "an OCI layout".into(),
                ImageRef::OciArchive { .. } => "an OCI archive".into(),
                ImageRef::DockerArchive { path: None, .. } => "a docker archive (stdin)".into(),
                ImageRef::DockerArchive { .. } => "a docker archive".into(),
                _ => "a local file".into(),
            },
        }
    }

    /// The engine this image is in, if any.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.origin {
            Origin::Engine(e) => Some(e),
            _ => None,
        }
    }

    /// Opens it for reading (the engine it resolved to, if any).
    pub fn open_source(
        &self,
        client: &Arc<RegistryClient>,
        limits: SourceLimits,
    ) -> Result<Box<dyn Source>> {
        match (&self.image, &self.origin) {
            (ImageRef::DockerDaemon { name }, Origin::Engine(engine)) => Ok(Box::new(
                docker_daemon::open_source(engine, name, limits.max_archive_bytes)?,
            )),
            _ => super::open_source(&self.image, client, limits),
        }
    }

    /// Opens it for writing.
    pub fn open_dest(&self, client: &Arc<RegistryClient>) -> Result<Box<dyn Dest>> {
        match (&self.image, &self.origin) {
            (ImageRef::DockerDaemon { name }, Origin::Engine(engine)) => Ok(Box::new(
                DockerDaemonDest::create(engine.clone(), name)
                    .with_context(|| format!("opening {} for writing", self.image))?,
            )),
            _ => super::open_dest(&self.image, client),
        }
    }
}

/// The name to ask an engine for: as typed, `:latest` when it has neither
/// tag nor digest (as the Docker CLI does).
fn engine_name(typed: &str) -> String {
    let last = typed.rsplit('/').next().unwrap_or(typed);
    if last.contains(':') || last.contains('@') {
        typed.to_string()
    } else {
        format!("{typed}:latest")
    }
}

/// Resolves a source reference; a short name asks the local engine.
pub fn source(typed: &str) -> Result<Resolved> {
    let image: ImageRef = typed.parse()?;
    let resolved = |image: ImageRef, origin: Origin, note: Option<String>| Resolved {
        typed: typed.to_string(),
        image,
        origin,
        note,
    };
    match image {
        ImageRef::Registry(r) if is_short_name(typed) => {
            let name = engine_name(typed);
            let registry = Origin::Registry(r.registry.clone());
            match Engine::discover() {
                Ok(engine) => match engine
                    .image(&name)
                    .with_context(|| format!("looking for {name} in the local engine (name a registry image with docker://{typed})"))?
                {
                    Some(_) => Ok(resolved(
                        ImageRef::DockerDaemon { name },
                        Origin::Engine(engine),
                        None,
                    )),
                    None => {
                        let note = format!(
                            "the local engine ({}) has no image {name}; reading {r} from the registry",
                            engine.address()
                        );
                        Ok(resolved(ImageRef::Registry(r), registry, Some(note)))
                    }
                },
                Err(EngineError::NotFound { tried }) => {
                    let note = format!(
                        "no Docker or Podman engine found (tried {}); reading {r} from the registry",
                        tried.join(", ")
                    );
                    Ok(resolved(ImageRef::Registry(r), registry, Some(note)))
                }
                Err(e) => Err(anyhow::Error::new(e).context(format!(
                    "{typed} may name an image in the local engine, which slim cannot reach (name a registry image with docker://{typed})"
                ))),
            }
        }
        ImageRef::Registry(r) => Ok(resolved(
            ImageRef::Registry(r.clone()),
            Origin::Registry(r.registry),
            None,
        )),
        ImageRef::DockerDaemon { .. } => {
            let engine = Engine::discover().with_context(|| format!("reading {typed}"))?;
            Ok(resolved(image, Origin::Engine(engine), None))
        }
        _ => Ok(resolved(image, Origin::Local, None)),
    }
}

/// Resolves an output reference: a short name goes back into the engine
/// the source came from.
pub fn output(typed: &str, source: &Resolved) -> Result<Resolved> {
    let image: ImageRef = typed.parse()?;
    let resolved = |image: ImageRef, origin: Origin| Resolved {
        typed: typed.to_string(),
        image,
        origin,
        note: None,
    };
    match (image, source.engine()) {
        (ImageRef::Registry(r), Some(engine)) if is_short_name(typed) => {
            if r.digest.is_some() {
                return Err(ReferenceError::Malformed {
                    input: typed.to_string(),
                    reason: "the image goes into the local engine, which names it NAME[:TAG], not by digest".into(),
                }
                .into());
            }
            Ok(resolved(
                ImageRef::DockerDaemon {
                    name: engine_name(typed),
                },
                Origin::Engine(engine.clone()),
            ))
        }
        (ImageRef::Registry(r), _) => Ok(resolved(
            ImageRef::Registry(r.clone()),
            Origin::Registry(r.registry),
        )),
        (image @ ImageRef::DockerDaemon { .. }, Some(engine)) => {
            Ok(resolved(image, Origin::Engine(engine.clone())))
        }
        (image @ ImageRef::DockerDaemon { .. }, None) => {
            let engine = Engine::discover().with_context(|| format!("writing {typed}"))?;
            Ok(resolved(image, Origin::Engine(engine)))
        }
        (image, _) => Ok(resolved(image, Origin::Local)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_get_a_tag() {
        assert_eq!(engine_name("myapp"), "myapp:latest");
        assert_eq!(engine_name("myapp:1"), "myapp:1");
        assert_eq!(engine_name("team/app"), "team/app:latest");
        assert_eq!(
            engine_name(
                "myapp@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            "myapp@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
