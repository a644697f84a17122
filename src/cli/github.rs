//! GitHub Actions: a run's results as step outputs (`$GITHUB_OUTPUT`), so
//! that a workflow (and the action in `action.yml`) reads them without
//! parsing the report.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::report::Report;

/// Appends `digest`, `saved-bytes`, `saved-percent` and `report-path` (when
/// the report went to a file) to the file `$GITHUB_OUTPUT` names, if set.
pub fn write_outputs(report: &Report, report_path: Option<&Path>) -> Result<()> {
    let Some(file) = std::env::var_os("GITHUB_OUTPUT").filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let saved =
        i128::from(report.source.compressed_bytes) - i128::from(report.output.compressed_bytes);
    let mut text = format!(
        "digest={}\nsaved-bytes={saved}\nsaved-percent={:.1}\n",
        report.output.digest.as_deref().unwrap_or_default(),
        report.savings_percent()
    );
    if let Some(p) = report_path.filter(|p| *p != Path::new("-")) {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        // One line per output: a path with a newline cannot be one.
        let p = p.display().to_string().replace('\n', " ");
        text.push_str(&format!("report-path={p}\n"));
    }
    let path = Path::new(&file);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing GITHUB_OUTPUT ({})", path.display()))
}
