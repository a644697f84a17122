//! Which image of an index the sandbox materializes: the host's platform
//! (to run it) or a named one (to look at it: the static check), and the
//! platforms an image has.

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::image::{Manifest, Platform};
use crate::transport::{Source, read_config};

/// The image manifest of `want` (default: the host's platform) and its config.
pub(super) fn platform_image(
    src: &dyn Source,
    want: Option<&Platform>,
) -> Result<(Manifest, Value)> {
    let host = Platform::host();
    let mut m = src.root()?;
    if m.is_index() {
        let children = m.manifests()?;
        let wanted = want.unwrap_or(&host);
        let child = children
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| wanted.selects(p)))
            .with_context(|| {
                let have: Vec<String> = children
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .collect();
                match want {
                    Some(w) => format!("{} has no image for {w} (it has {})", src.name(), have.join(", ")),
                    None => format!(
                        "{} has no image for this machine's platform {host} (it has {}); the sandbox runs images of the host's platform only",
                        src.name(),
                        have.join(", ")
                    ),
                }
            })?;
        m = src.manifest(child)?;
    }
    let desc = m
        .config()?
        .with_context(|| format!("{}: the manifest names no config", src.name()))?;
    let config = read_config(src, &desc)?;
    let platform = Platform::from_json(&config);
    let host_any_variant = Platform {
        variant: None,
        ..host.clone()
    };
    if want.is_none() && !platform.os.is_empty() && !host_any_variant.selects(&platform) {
        bail!(
            "{} is a {platform} image; this machine runs {host}, and the sandbox runs images of the host's platform only",
            src.name()
        );
    }
    Ok((m, config))
}

/// The platforms of the image `src` names: an index's children (not
/// attestations: `unknown/unknown`), or the one image's config platform
/// (`None` when it names none).
pub fn platforms(src: &dyn Source) -> Result<Vec<Option<Platform>>> {
    let m = src.root()?;
    if m.is_index() {
        return Ok(m
            .manifests()?
            .iter()
            .filter_map(|d| d.platform.clone())
            .filter(|p| p.os != "unknown")
            .map(Some)
            .collect());
    }
    let desc = m
        .config()?
        .with_context(|| format!("{}: the manifest names no config", src.name()))?;
    let p = Platform::from_json(&read_config(src, &desc)?);
    Ok(vec![(!p.os.is_empty()).then_some(p)])
}

/// Whether this machine runs images of `p` (any variant of its own
/// architecture).
pub fn runs_here(p: &Platform) -> bool {
    Platform {
        variant: None,
        ..Platform::host()
    }
    .selects(p)
}
