//! Image references and transports: what the user typed, parsed once at the
//! edge into an [`ImageRef`].
//!
//! | form | meaning |
//! | --- | --- |
//! | `name[:tag][@digest]`, `docker://…` | a registry image (Docker Hub rules for short names) |
//! | `oci:PATH[:TAG]` | an OCI image layout directory |
//! | `oci-archive:PATH[:TAG]` | a tar of an OCI image layout |
//! | `docker-archive:PATH[:NAME[:TAG]]` (`-` = stdin/stdout) | `docker save` / `docker load` format |
//! | `docker-daemon:NAME[:TAG]` (`docker-daemon:sha256:ID` to read) | an image in the local Docker or Podman engine |
//!
//! A short name (no transport, no registry host: [`is_short_name`]) is
//! parsed as a Docker Hub image here; `transport::resolve` decides whether
//! it means the local engine's image instead.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;

/// Where an image lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    Registry(RegistryRef),
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    /// `path: None` means stdin (as a source) or stdout (as a destination).
    DockerArchive {
        path: Option<PathBuf>,
        name: Option<String>,
    },
    /// An image in the local engine: `NAME:TAG`, `NAME@DIGEST` or an image
    /// ID (`sha256:…`), as the engine is asked for it.
    DockerDaemon {
        name: String,
    },
}

/// A registry image: `registry/repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// The registry as named (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error(
        "unknown transport {transport:?} in {input:?} (use a registry name, docker://, oci:, oci-archive:, docker-archive: or docker-daemon:)"
    )]
    UnknownTransport { transport: String, input: String },
    #[error(
        "malformed image reference {input:?}: {reason} (expected e.g. registry.example.com/team/app:1.0)"
    )]
    Malformed { input: String, reason: String },
    #[error("{transport}: needs a path, e.g. {transport}:./dir:latest")]
    MissingPath { transport: &'static str },
    #[error(
        "malformed tag {tag:?} in {input:?} (letters and digits, separated by one of - . _ : @ + or by /)"
    )]
    BadTag { tag: String, input: String },
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            return RegistryRef::parse(rest).map(ImageRef::Registry);
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split_path_tag(input, rest, "oci")?;
            return Ok(ImageRef::OciLayout { path, tag });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(input, rest, "oci-archive")?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n.to_string())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(ReferenceError::MissingPath {
                    transport: "docker-archive",
                });
            }
            if let Some(n) = &name {
                // The name is recorded in RepoTags; it must be a valid reference.
                // RepoTags hold NAME:TAG, never a digest (`docker load` refuses
                // one, and no archive entry could ever match it).
                if RegistryRef::parse(n)?.digest.is_some() {
                    return Err(ReferenceError::Malformed {
                        input: input.to_string(),
                        reason: "a docker archive names its image NAME[:TAG], not by digest".into(),
                    });
                }
            }
            let path = (path != "-").then(|| PathBuf::from(path));
            return Ok(ImageRef::DockerArchive { path, name });
        }
        if let Some(name) = input.strip_prefix("docker-daemon:") {
            if name.is_empty() {
                return Err(ReferenceError::Malformed {
                    input: input.to_string(),
                    reason: "docker-daemon: needs an image name, e.g. docker-daemon:myapp:latest"
                        .into(),
                });
            }
            // An image ID (`sha256:HEX`), or a name the grammar accepts.
            let is_id = name.parse::<Digest>().is_ok() && name.starts_with("sha256:");
            if !is_id {
                RegistryRef::parse(name)?;
            }
            return Ok(ImageRef::DockerDaemon {
                name: name.to_string(),
            });
        }
        match RegistryRef::parse(input) {
            Ok(r) => Ok(ImageRef::Registry(r)),
            Err(e) => {
                // `dir:/x`, `containers-storage:app`: a transport we do not know.
                if let Some((scheme, _)) = input.split_once(':')
                    && !scheme.is_empty()
                    && !scheme.contains(['/', '.'])
                    && scheme.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && scheme.len() > 1
                {
                    let after = &input[scheme.len() + 1..];
                    // `app:latest` is a tag, not a transport; only call it a
                    // transport when the rest cannot be a tag.
                    if after.starts_with('/') || after.starts_with('.') || !is_valid_tag(after) {
                        return Err(ReferenceError::UnknownTransport {
                            transport: scheme.to_string(),
                            input: input.to_string(),
                        });
                    }
                }
                Err(e)
            }
        }
    }
}

fn split_path_tag(
    input: &str,
    rest: &str,
    transport: &'static str,
) -> Result<(PathBuf, Option<String>), ReferenceError> {
    // As in containers/image: the path ends at the first ':'.
    let (path, tag) = match rest.split_once(':') {
        Some((p, t)) => (p, Some(t.to_string())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(ReferenceError::MissingPath { transport });
    }
    if let Some(t) = &tag
        && !is_valid_oci_ref_name(t)
    {
        return Err(ReferenceError::BadTag {
            tag: t.clone(),
            input: input.to_string(),
        });
    }
    Ok((PathBuf::from(path), tag))
}

/// Whether `input` is a short name: a registry reference spelled without a
/// transport and without a registry host (`myapp:latest`, `team/app:1.2`),
/// which the Docker CLI resolves to a local image first. The host rule is
/// Docker's (`splitDockerDomain` in distribution/reference): the part
/// before the first `/` is a host when it holds a `.` or a `:`, is
/// `localhost`, or has upper-case letters.
pub fn is_short_name(input: &str) -> bool {
    if input.starts_with("docker://") || !matches!(input.parse(), Ok(ImageRef::Registry(_))) {
        return false;
    }
    match input.split_once('/') {
        None => true,
        Some((first, _)) => {
            !first.contains(['.', ':'])
                && first != "localhost"
                && !first.chars().any(|c| c.is_ascii_uppercase())
        }
    }
}

/// An OCI layout `org.opencontainers.image.ref.name` (image-layout spec,
/// "index.json": `component ("/" component)*`, components of alphanumerics
/// joined by one of `-._:@+` or `--`), so `oci:dir:demo:latest` names
/// `demo:latest` as skopeo does.
pub fn is_valid_oci_ref_name(t: &str) -> bool {
    !t.is_empty()
        && t.split('/').all(|component| {
            let b = component.as_bytes();
            if b.is_empty()
                || !b[0].is_ascii_alphanumeric()
                || !b[b.len() - 1].is_ascii_alphanumeric()
            {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_alphanumeric() {
                    i += 1;
                } else if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
                    i += 2;
                    if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                        return false;
                    }
                } else if b"-._:@+".contains(&b[i]) {
                    i += 1;
                    if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                        return false;
                    }
                } else {
                    return false;
                }
            }
            true
        })
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A repository name as the distribution spec allows: path components
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` joined by `/`, at most 255
/// characters in all. Names a registry lists are checked with this before
/// they go into a request path (`RegistryRef::parse` applies the same
/// grammar to what the user types, through oci-spec).
pub fn is_valid_repository(name: &str) -> bool {
    name.len() <= 255 && name.split('/').all(is_valid_path_component)
}

fn is_valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or any run of `-`, then alphanumerics.
        let sep = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == sep || !b.get(i).is_some_and(alnum) {
            return false;
        }
    }
    true
}

impl RegistryRef {
    pub fn parse(input: &str) -> Result<RegistryRef, ReferenceError> {
        let malformed = |reason: String| ReferenceError::Malformed {
            input: input.to_string(),
            reason,
        };
        let parsed = oci_spec::distribution::Reference::from_str(input)
            .map_err(|e| malformed(e.to_string()))?;
        let digest = parsed
            .digest()
            .map(|d| d.parse::<Digest>().map_err(|e| malformed(e.to_string())))
            .transpose()?;
        // oci-spec fills in `latest` when neither tag nor digest is given.
        let tag = parsed.tag().map(str::to_string);
        Ok(RegistryRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag,
            digest,
        })
    }

    /// The host the registry API is served on (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The tag or digest to put in `/v2/<name>/manifests/<reference>`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository with another tag/digest.
    pub fn with_digest(&self, digest: &Digest) -> RegistryRef {
        RegistryRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.clone()),
        }
    }
}

/// `docker.io` is served from `registry-1.docker.io`.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// Loopback registries are reached over plain HTTP, as Docker does.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host_port
            }
        })
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{r}"),
            ImageRef::OciLayout { path, tag } => {
                write!(f, "oci:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::OciArchive { path, tag } => {
                write!(f, "oci-archive:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::DockerArchive { path, name } => {
                match path {
                    Some(p) => write!(f, "docker-archive:{}", p.display())?,
                    None => write!(f, "docker-archive:-")?,
                }
                name.iter().try_for_each(|n| write!(f, ":{n}"))
            }
            ImageRef::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        match s.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    #[test]
    fn docker_hub_short_names() {
        let r = reg("myapp");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/myapp", Some("latest"))
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = reg("docker://team/app:1.0");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "team/app")
        );
        let r = reg("127.0.0.1:5000/x/y:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "x/y")
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = reg(&format!("localhost:5000/app@{d}"));
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert_eq!(r.tag, None);
    }

    #[test]
    fn local_transports() {
        assert_eq!(
            "oci:fixtures/oci:demo:latest".parse::<ImageRef>().unwrap(),
            ImageRef::OciLayout {
                path: "fixtures/oci".into(),
                tag: Some("demo:latest".into())
            }
        );
        assert!(matches!(
            "oci:x:bad tag".parse::<ImageRef>(),
            Err(ReferenceError::BadTag { .. })
        ));
        assert_eq!(
            "oci:/tmp/out".parse::<ImageRef>().unwrap(),
            ImageRef::OciLayout {
                path: "/tmp/out".into(),
                tag: None
            }
        );
        assert_eq!(
            "oci-archive:a.tar:v1".parse::<ImageRef>().unwrap(),
            ImageRef::OciArchive {
                path: "a.tar".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "docker-archive:-".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive {
                path: None,
                name: None
            }
        );
        assert!(matches!(
            "docker-archive:x.tar:app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<ImageRef>(),
            Err(ReferenceError::Malformed { .. })
        ));
        assert_eq!(
            "docker-archive:x.tar:app:1".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive {
                path: Some("x.tar".into()),
                name: Some("app:1".into())
            }
        );
    }

    #[test]
    fn docker_daemon_references() {
        assert_eq!(
            "docker-daemon:myapp:latest".parse::<ImageRef>().unwrap(),
            ImageRef::DockerDaemon {
                name: "myapp:latest".into()
            }
        );
        let id = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            format!("docker-daemon:{id}").parse::<ImageRef>().unwrap(),
            ImageRef::DockerDaemon { name: id.into() }
        );
        assert_eq!(
            "docker-daemon:team/app:1.2"
                .parse::<ImageRef>()
                .unwrap()
                .to_string(),
            "docker-daemon:team/app:1.2"
        );
        for bad in ["docker-daemon:", "docker-daemon:UPPER", "docker-daemon:a b"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn short_names_have_no_transport_and_no_host() {
        for short in [
            "myapp",
            "myapp:latest",
            "team/app:1.2",
            "library/debian",
            "a/b/c:v1",
            "myapp@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(is_short_name(short), "{short}");
        }
        for long in [
            "docker://myapp:latest",
            "docker.io/library/myapp:latest",
            "registry.example.com/app",
            "localhost/app",
            "localhost:5000/app",
            "127.0.0.1:5000/app:v1",
            "[::1]:5000/app",
            "docker-daemon:myapp:latest",
            "oci:dir:tag",
            "docker-archive:x.tar",
            "Team/app",
            "",
        ] {
            assert!(!is_short_name(long), "{long}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            "dir:/tmp/x".parse::<ImageRef>(),
            Err(ReferenceError::UnknownTransport { .. })
        ));
        assert!(matches!(
            "containers-storage:/x".parse::<ImageRef>(),
            Err(ReferenceError::UnknownTransport { .. })
        ));
        assert!(matches!(
            "team/UpperCase".parse::<ImageRef>(),
            Err(ReferenceError::Malformed { .. })
        ));
        assert!(matches!(
            "oci:".parse::<ImageRef>(),
            Err(ReferenceError::MissingPath { .. })
        ));
        assert_eq!("".parse::<ImageRef>(), Err(ReferenceError::Empty));
    }

    #[test]
    fn loopback() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["registry.example.com", "10.0.0.1:5000", "docker.io"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    /// One grammar: what the validator accepts, `RegistryRef::parse`
    /// (oci-spec's reference grammar) accepts as a repository, and the
    /// other way round.
    #[test]
    fn repository_names_follow_the_distribution_grammar() {
        let good = [
            "a",
            "library/alpine",
            "team/sub/app-1",
            "a.b_c__d---e",
            "0/1/2",
        ];
        let bad = [
            "",
            "../../etc",
            "%2e%2e/f",
            "a/b?x=y",
            "UPPER",
            "a//b",
            "-lead",
            "trail-",
            "a/",
            "/a",
            "a/../b",
            "a#frag",
            "a b",
            "a___b",
            "a..b",
            "a._b",
            "\u{1b}[31mred",
        ];
        for name in good {
            assert!(is_valid_repository(name), "{name}");
            let parsed = RegistryRef::parse(&format!("r.example.com/{name}:t")).unwrap();
            assert_eq!(parsed.repository, name);
        }
        for name in bad {
            assert!(!is_valid_repository(name), "{name:?}");
            let parsed = RegistryRef::parse(&format!("r.example.com/{name}:t"));
            assert!(
                !matches!(&parsed, Ok(r) if r.repository == name),
                "{name:?} parsed as {parsed:?}"
            );
        }
        assert!(is_valid_repository(&"a".repeat(255)));
        assert!(!is_valid_repository(&"a".repeat(256)));
    }
}
