//! Metrics of a batch run, in the Prometheus text exposition format
//! (version 0.0.4): written to a file for node_exporter's textfile
//! collector (`--metrics-file`), and pushed to a Pushgateway at the end of
//! the shard (`--pushgateway`), grouped by job and shard index as batch
//! jobs on Kubernetes do.
//!
//! Every value is a gauge describing this run (the Pushgateway replaces the
//! group on each push, and a textfile is rewritten): counts by outcome,
//! bytes before and after, bytes saved, registry retries, the run's
//! duration and end time, and a histogram of the time per image.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::report::{BatchReport, Status};

/// Upper bounds (seconds) of the per-image duration histogram: from an
/// up-to-date check to a multi-GB image.
pub const DURATION_BUCKETS: &[f64] =
    &[0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// A mistake or failure with the metrics (the run itself is reported).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("writing the metrics file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--pushgateway {0:?} is not an http(s) URL")]
    Url(String),
    #[error("pushing metrics to {url}")]
    Push {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The run's metrics as text. `retries`: registry retries in this run;
/// `end_unix`: when it ended, seconds since the epoch.
pub fn render(report: &BatchReport, retries: u64, end_unix: f64) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(m, "{name}{labels} {}", number(*v));
        }
    };
    let t = &report.totals;
    let count = |s: Status| report.images.iter().filter(|i| i.status == s).count() as f64;
    gauge(
        "slim_batch_images",
        "Images of this run, by outcome (planned: --dry-run).",
        &[
            ("{status=\"slimmed\"}", count(Status::Slimmed)),
            ("{status=\"skipped\"}", count(Status::Skipped)),
            ("{status=\"failed\"}", count(Status::Failed)),
            ("{status=\"planned\"}", count(Status::Planned)),
        ],
    );
    gauge(
        "slim_batch_listing_errors",
        "Job file entries whose catalog or tag listing failed.",
        &[("", report.listing_errors.len() as f64)],
    );
    gauge(
        "slim_batch_source_bytes",
        "Compressed bytes of the images slimmed in this run, before.",
        &[("", t.source_compressed_bytes as f64)],
    );
    gauge(
        "slim_batch_output_bytes",
        "Compressed bytes of the images slimmed in this run, after.",
        &[("", t.output_compressed_bytes as f64)],
    );
    gauge(
        "slim_batch_saved_bytes",
        "Compressed bytes saved by the images slimmed in this run.",
        &[("", t.saved_bytes as f64)],
    );
    gauge(
        "slim_batch_retries",
        "Registry requests and transfers retried in this run.",
        &[("", retries as f64)],
    );
    gauge(
        "slim_batch_duration_seconds",
        "How long the run took.",
        &[("", report.duration_seconds)],
    );
    gauge(
        "slim_batch_last_run_timestamp_seconds",
        "When the run ended (Unix time).",
        &[("", end_unix)],
    );
    let name = "slim_batch_image_duration_seconds";
    let _ = writeln!(
        m,
        "# HELP {name} Time per image: check, slim and push (skipped images: the check).\n# TYPE {name} histogram"
    );
    let durations: Vec<f64> = report.images.iter().map(|i| i.duration_seconds).collect();
    for le in DURATION_BUCKETS {
        let n = durations.iter().filter(|d| **d <= *le).count();
        let _ = writeln!(m, "{name}_bucket{{le=\"{}\"}} {n}", number(*le));
    }
    let _ = writeln!(m, "{name}_bucket{{le=\"+Inf\"}} {}", durations.len());
    let _ = writeln!(m, "{name}_sum {}", number(durations.iter().sum()));
    let _ = writeln!(m, "{name}_count {}", durations.len());
    m
}

/// A sample value as Prometheus writes it (integers without a fraction).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes `text` to `path` atomically (a temp file in the same directory,
/// renamed), so that a collector never reads half a file.
pub fn write_file(path: &Path, text: &str) -> Result<(), MetricsError> {
    let err = |source| MetricsError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The Pushgateway URL of the group `job` (and `shard`): PUT replaces
/// what the group held. Label values go base64url-encoded (`job@base64`),
/// which the Pushgateway decodes, so any name is safe in the path.
pub fn push_url(base: &str, job: &str, shard: Option<u32>) -> Result<String, MetricsError> {
    use base64::Engine as _;
    let url = reqwest::Url::parse(base).map_err(|_| MetricsError::Url(base.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(MetricsError::Url(base.to_string()));
    }
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
    let mut out = format!(
        "{}/metrics/job@base64/{}",
        base.trim_end_matches('/'),
        enc(job)
    );
    if let Some(i) = shard {
        out.push_str(&format!("/shard/{i}"));
    }
    Ok(out)
}

/// PUTs `text` to the group URL (see [`push_url`]).
pub fn push(url: &str, text: &str) -> Result<(), MetricsError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| MetricsError::Push {
        url: url.to_string(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail(e.into()))?;
    let resp = client
        .put(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(text.to_string())
        .send()
        .map_err(|e| fail(e.into()))?;
    let status = resp.status();
    if !status.is_success() {
        let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
        return Err(fail(
            format!("the Pushgateway answered {status}: {}", body.trim()).into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_urls() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(
            push_url("http://127.0.0.1:9091/", "slim-batch", Some(2)).unwrap(),
            "http://127.0.0.1:9091/metrics/job@base64/c2xpbS1iYXRjaA==/shard/2"
        );
        assert!(push_url("ftp://x", "j", None).is_err());
        assert!(push_url("not a url", "j", None).is_err());
    }
}
