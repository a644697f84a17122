//! What the terminal shows while slim works: a bar per layer (read,
//! written, pushed: bytes, throughput, ETA) on a TTY; plain notes
//! otherwise. Hidden with `--quiet` and when the JSON report goes to
//! stdout.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::Descriptor;
use crate::progress::{BlobOutcome, Reporter};
use crate::report::human;

pub struct Terminal {
    bars: Option<MultiProgress>,
    quiet: bool,
    blobs: Mutex<HashMap<String, ProgressBar>>,
    layers: Mutex<HashMap<u64, ProgressBar>>,
}

impl Terminal {
    /// Bars only on a terminal and when not quiet.
    pub fn new(quiet: bool, bars_allowed: bool) -> Terminal {
        let bars = (bars_allowed && !quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Terminal {
            bars,
            quiet,
            blobs: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, len: Option<u64>, prefix: &str, label: String) -> Option<ProgressBar> {
        let multi = self.bars.as_ref()?;
        let bar = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{prefix:>8} {msg:<28} [{bar:28}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix:>8} {msg:<28} {spinner} {bytes:>10} {binary_bytes_per_sec:>12}").expect("valid template"),
            ),
        };
        bar.set_prefix(prefix.to_string());
        bar.set_message(label);
        let bar = multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(250));
        Some(bar)
    }

    /// Clears the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(m) = &self.bars {
            let _ = m.clear();
        }
    }
}

impl Reporter for Terminal {
    fn blob_start(&self, desc: &Descriptor, label: &str) {
        if let Some(bar) = self.bar(Some(desc.size), label, desc.short()) {
            self.blobs
                .lock()
                .expect("bars")
                .insert(desc.digest.to_string(), bar);
        }
    }

    fn blob_progress(&self, desc: &Descriptor, bytes: u64) {
        if let Some(bar) = self
            .blobs
            .lock()
            .expect("bars")
            .get(&desc.digest.to_string())
        {
            bar.inc(bytes);
        }
    }

    fn blob_done(&self, desc: &Descriptor, outcome: BlobOutcome) {
        let bar = self
            .blobs
            .lock()
            .expect("bars")
            .remove(&desc.digest.to_string());
        let what = match outcome {
            BlobOutcome::Copied => "copied",
            BlobOutcome::Existed => "exists",
            BlobOutcome::Mounted => "mounted",
            BlobOutcome::Read => "read",
        };
        match (bar, &self.bars) {
            (Some(bar), _) => {
                bar.set_prefix(what);
                bar.finish();
            }
            (None, Some(multi)) => {
                let _ = multi.println(format!("{what:>8} {} ({})", desc.short(), human(desc.size)));
            }
            (None, None) => {}
        }
    }

    fn layer_start(&self, id: u64, label: &str, estimate: u64) {
        if let Some(bar) = self.bar(Some(estimate), "writing", label.to_string()) {
            self.layers.lock().expect("bars").insert(id, bar);
        }
    }

    fn layer_progress(&self, id: u64, bytes: u64) {
        if let Some(bar) = self.layers.lock().expect("bars").get(&id) {
            bar.inc(bytes);
        }
    }

    fn layer_done(&self, id: u64, desc: &Descriptor) {
        if let Some(bar) = self.layers.lock().expect("bars").remove(&id) {
            bar.set_prefix("written");
            bar.set_message(format!("{} ({})", desc.short(), human(desc.size)));
            bar.finish();
        }
    }

    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let _ = m.println(format!("note: {message}"));
            }
            None => eprintln!("note: {message}"),
        }
    }
}
