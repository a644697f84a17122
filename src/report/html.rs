//! The HTML report (`slim analyze --html`, `slim IMAGE -o DEST --html`):
//! one self-contained file, no request leaves it (inline CSS, inline
//! script, server-drawn SVG). Per image: the summary or the before/after
//! table, treemaps of the tree by size coloured by what slimming does to
//! each path, the layers as bars (`docker history` as a picture), and the
//! largest paths in sortable tables. The script only adds zooming and
//! sorting: with it disabled the page shows the same.

use std::fmt::Write as _;

use super::treemap::{colour, escape, svg};
use crate::stats::ImageReport;
use crate::transform::paths::{Class, PathData, ShownPath, SizeTree, TopPath};
use crate::units::human;

/// What a page shows.
pub struct Page<'a> {
    /// The image as the user named it.
    pub reference: &'a str,
    pub digest: &'a str,
    /// Where it was read from.
    pub from: &'a str,
    /// For a slim run: the output's name (before/after treemaps).
    pub output: Option<&'a str>,
    pub images: &'a [ImageReport],
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:16px 24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#5b6474;font-size:13px;word-break:break-all}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #e6e8ec;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef0f4}table.sort th{cursor:pointer}table.sort th:after{content:" \2195";color:#9aa3b2}
td.p{font-family:ui-monospace,Menlo,monospace;word-break:break-all;max-width:640px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.maps{display:grid;grid-template-columns:1fr 1fr;gap:16px}.map{background:#fff;border:1px solid #d5d9e0;padding:6px}
svg.tm{width:100%;height:auto;display:block;font-family:system-ui,sans-serif}
svg.tm rect.b{fill:#dfe3ea;stroke:#fff;stroke-width:.6}svg.tm rect{stroke:#fff;stroke-width:.4}
svg.tm text{fill:#fff;pointer-events:none}svg.tm text.h{fill:#1d2330}
svg.tm g.d{cursor:zoom-in}.crumb{font-size:12px;color:#5b6474;min-height:1.4em}
button.reset{display:none;font-size:12px;margin-left:8px}.js button.reset{display:inline}
svg.layers text{font-size:12px;fill:#1d2330}.note{color:#5b6474;font-size:12px}
"#;

const SCRIPT: &str = r#"
document.documentElement.className='js';
document.querySelectorAll('svg.tm').forEach(function(svg){
  var full=svg.getAttribute('viewBox'),crumb=document.getElementById(svg.id+'-crumb');
  function show(box,title){svg.setAttribute('viewBox',box);if(crumb)crumb.textContent=title||'';}
  svg.addEventListener('click',function(e){
    var g=e.target.closest('g.d');if(!g)return;
    if(svg.getAttribute('viewBox')===g.dataset.box){g=g.parentElement.closest('g.d');}
    if(!g||g.parentElement===svg){show(full,'');return;}
    var t=g.querySelector('title');show(g.dataset.box,t?t.textContent:'');
  });
  var b=document.getElementById(svg.id+'-reset');if(b)b.addEventListener('click',function(){show(full,'');});
});
document.querySelectorAll('table.sort').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),up=th.dataset.dir!=='up';
    th.dataset.dir=up?'up':'down';
    rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;
      var nx=parseFloat(x),ny=parseFloat(y),c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return up?c:-c;});
    rows.forEach(function(r){body.appendChild(r);});
  });});
});
"#;

/// The page, ready to write.
pub fn render(p: &Page<'_>) -> String {
    let mut s = String::with_capacity(1 << 20);
    let title = match p.output {
        Some(o) => format!("slim: {} → {}", p.reference, o),
        None => format!("slim analyze: {}", p.reference),
    };
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(
        s,
        "<h1>{}</h1><div class=\"sub\">{} · from {}</div>",
        escape(&title),
        escape(p.digest),
        escape(p.from)
    );
    for (i, img) in p.images.iter().enumerate() {
        image(&mut s, img, i, p.output.is_some(), p.images.len() > 1);
    }
    let _ = writeln!(
        s,
        "<p class=\"note\">Written by slim {}. Click a directory to zoom in, again to zoom out; click a column to sort.</p><script>{SCRIPT}</script></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    s
}

fn image(s: &mut String, img: &ImageReport, i: usize, run: bool, many: bool) {
    let platform = img
        .platform
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    if many {
        let _ = write!(s, "<h2>{}</h2>", escape(&platform));
    }
    let empty = PathData::default();
    let paths = img.details.as_ref().map_or(&empty, |d| &d.paths);
    summary(s, img, run);
    s.push_str("<h2>Where the bytes are</h2>");
    legend(s, &paths.before);
    if run {
        s.push_str("<div class=\"maps\">");
        map(s, &paths.before, "before", &format!("tm{i}a"), 600.0, 460.0);
        map(s, &paths.after, "after", &format!("tm{i}b"), 600.0, 460.0);
        s.push_str("</div>");
    } else {
        map(s, &paths.before, "", &format!("tm{i}"), 1200.0, 640.0);
    }
    layers(s, img);
    s.push_str("<h2>Largest paths</h2>");
    top_table(s, &paths.top_dirs, &paths.top_files);
    wasted_table(s, paths);
    categories(s, img);
}

fn summary(s: &mut String, img: &ImageReport, run: bool) {
    let file_bytes: u64 = img.layers.iter().map(|l| l.file_bytes).sum();
    let wasted = img.shadowed.bytes + img.hardlinked.bytes;
    let removed = img.removed.total();
    if run {
        let pct = |a: u64, b: u64| {
            if a == 0 {
                String::new()
            } else {
                format!("{:+.1}%", 100.0 * (b as f64 - a as f64) / a as f64)
            }
        };
        let (a, b) = (&img.source, &img.output);
        s.push_str("<h2>Before and after</h2><table><tr><th></th><th class=\"n\">before</th><th class=\"n\">after</th><th class=\"n\">change</th></tr>");
        let rows = [
            (
                "compressed",
                human(a.compressed_bytes),
                human(b.compressed_bytes),
                pct(a.compressed_bytes, b.compressed_bytes),
            ),
            (
                "uncompressed",
                human(a.uncompressed_bytes),
                human(b.uncompressed_bytes),
                pct(a.uncompressed_bytes, b.uncompressed_bytes),
            ),
            (
                "layers",
                a.layers.to_string(),
                b.layers.to_string(),
                String::new(),
            ),
            (
                "files",
                a.files.to_string(),
                b.files.to_string(),
                pct(a.files, b.files),
            ),
        ];
        for (k, x, y, c) in rows {
            let _ = write!(
                s,
                "<tr><td>{k}</td><td class=\"n\">{x}</td><td class=\"n\">{y}</td><td class=\"n\">{c}</td></tr>"
            );
        }
        s.push_str("</table>");
    } else {
        s.push_str("<h2>Summary</h2><table>");
        let eff = if file_bytes == 0 {
            100.0
        } else {
            100.0 * (1.0 - wasted as f64 / file_bytes as f64)
        };
        let rows = [
            ("compressed", human(img.source.compressed_bytes)),
            ("uncompressed", human(img.source.uncompressed_bytes)),
            ("layers", img.source.layers.to_string()),
            ("files", img.source.files.to_string()),
            (
                "shadowed or deleted by later layers",
                format!(
                    "{} in {} files",
                    human(img.shadowed.bytes),
                    img.shadowed.files
                ),
            ),
            (
                "duplicate files",
                format!(
                    "{} in {} files",
                    human(img.hardlinked.bytes),
                    img.hardlinked.files
                ),
            ),
            ("efficiency", format!("{eff:.1}%")),
        ];
        for (k, v) in rows {
            let _ = write!(s, "<tr><td>{k}</td><td class=\"n\">{v}</td></tr>");
        }
        s.push_str("</table>");
    }
    let _ = write!(
        s,
        "<div class=\"note\">profiles {}: {} {} files ({}); {} paths kept by safety rules</div>",
        if img.profiles.is_empty() {
            "none".to_string()
        } else {
            escape(&img.profiles.join(", "))
        },
        if run { "removed" } else { "would remove" },
        removed.files,
        human(removed.bytes),
        img.kept_by_safety.len()
    );
}

fn legend(s: &mut String, tree: &SizeTree) {
    s.push_str("<div class=\"legend\">");
    for c in Class::ALL {
        let (r, g, b) = colour(c);
        let bytes = tree.totals.get(&c).copied().unwrap_or(0);
        let _ = write!(
            s,
            "<span><i style=\"background:#{r:02x}{g:02x}{b:02x}\"></i>{} {}</span>",
            c.name(),
            human(bytes)
        );
    }
    let _ = write!(
        s,
        "<span class=\"note\">files under {} are grouped per directory</span></div>",
        human(tree.threshold)
    );
}

fn map(s: &mut String, tree: &SizeTree, caption: &str, id: &str, w: f64, h: f64) {
    s.push_str("<div class=\"map\">");
    if !caption.is_empty() {
        let _ = write!(s, "<h3>{caption}: {}</h3>", human(tree.root.bytes));
    }
    let _ = write!(
        s,
        "<div class=\"crumb\"><span id=\"{id}-crumb\"></span><button class=\"reset\" id=\"{id}-reset\" type=\"button\">whole image</button></div>"
    );
    s.push_str(&svg(tree, w, h, id));
    s.push_str("</div>");
}

fn layers(s: &mut String, img: &ImageReport) {
    s.push_str("<h2>Layers</h2><div class=\"legend\"><span><i style=\"background:#2f5fb3\"></i>compressed</span><span><i style=\"background:#9fbef5\"></i>uncompressed</span></div>");
    let max = img
        .layers
        .iter()
        .map(|l| l.uncompressed_bytes.max(l.compressed_bytes))
        .max()
        .unwrap_or(0)
        .max(1);
    let row = 28.0;
    let height = row * img.layers.len() as f64 + 4.0;
    let _ = write!(
        s,
        r#"<svg class="layers" viewBox="0 0 1200 {height}" width="100%" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (i, l) in img.layers.iter().enumerate() {
        let y = 2.0 + row * i as f64;
        let bar = |v: u64| (v as f64 / max as f64 * 400.0).max(if v > 0 { 1.0 } else { 0.0 });
        let by: String = l.created_by.chars().take(110).collect();
        let more = if l.created_by.chars().count() > 110 {
            "…"
        } else {
            ""
        };
        let _ = write!(
            s,
            "<g><title>layer {} {}\n{} compressed, {} uncompressed, {} files\n{}</title>\
             <text x=\"0\" y=\"{:.1}\">#{}</text>\
             <rect x=\"36\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" fill=\"#2f5fb3\"/>\
             <rect x=\"36\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\" fill=\"#9fbef5\"/>\
             <text x=\"446\" y=\"{:.1}\">{} / {} · {}{}</text></g>",
            i + 1,
            escape(&l.digest),
            human(l.compressed_bytes),
            human(l.uncompressed_bytes),
            l.files,
            escape(&l.created_by),
            y + 16.0,
            i + 1,
            y + 2.0,
            bar(l.compressed_bytes),
            y + 13.0,
            bar(l.uncompressed_bytes),
            y + 16.0,
            human(l.compressed_bytes),
            human(l.uncompressed_bytes),
            escape(&by),
            more
        );
    }
    s.push_str("</svg>");
}

fn top_table(s: &mut String, dirs: &[TopPath], files: &[TopPath]) {
    s.push_str("<table class=\"sort\"><thead><tr><th>path</th><th>type</th><th class=\"n\">size</th><th class=\"n\">files</th><th class=\"n\">layer</th><th>fate</th></tr></thead><tbody>");
    for t in dirs.iter().chain(files) {
        let _ = write!(
            s,
            "<tr><td class=\"p\">{}</td><td>{}</td><td class=\"n\" data-v=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&t.path),
            if t.layer.is_some() { "file" } else { "dir" },
            t.bytes,
            human(t.bytes),
            t.files,
            t.layer.map(|l| l.to_string()).unwrap_or_default(),
            t.class.map(Class::name).unwrap_or("")
        );
    }
    s.push_str("</tbody></table>");
}

/// The largest wasted paths (all of them are in `--json`).
fn wasted_table(s: &mut String, p: &PathData) {
    let mut rows: Vec<(u64, &ShownPath, &'static str, u32, String)> = p
        .shadowed
        .iter()
        .map(|w| {
            (
                w.bytes,
                &w.path,
                "shadowed",
                w.layer,
                format!("replaced or deleted by layer {}", w.by_layer),
            )
        })
        .chain(p.duplicates.iter().map(|d| {
            (
                d.bytes,
                &d.path,
                "duplicate",
                d.layer,
                format!("same as {}", d.same_as),
            )
        }))
        .filter(|r| r.0 > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let total = rows.len();
    rows.truncate(50);
    let _ = write!(
        s,
        "<h2>Wasted paths</h2><div class=\"note\">the {} largest of {total}</div>",
        rows.len()
    );
    s.push_str("<table class=\"sort\"><thead><tr><th>path</th><th>waste</th><th class=\"n\">size</th><th class=\"n\">layer</th><th>why</th></tr></thead><tbody>");
    for (bytes, path, kind, layer, why) in rows {
        let _ = write!(
            s,
            "<tr><td class=\"p\">{}</td><td>{kind}</td><td class=\"n\" data-v=\"{bytes}\">{}</td><td class=\"n\">{layer}</td><td class=\"p\">{}</td></tr>",
            escape(&path.to_string()),
            human(bytes),
            escape(&why)
        );
    }
    s.push_str("</tbody></table>");
}

fn categories(s: &mut String, img: &ImageReport) {
    if img.removed.by_category.is_empty() {
        return;
    }
    s.push_str("<h2>Removed by category</h2><table class=\"sort\"><thead><tr><th>category</th><th class=\"n\">files</th><th class=\"n\">size</th></tr></thead><tbody>");
    let mut cats: Vec<_> = img.removed.by_category.iter().collect();
    cats.sort_by_key(|c| std::cmp::Reverse(c.1.bytes));
    for (k, c) in cats {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\" data-v=\"{}\">{}</td></tr>",
            escape(k),
            c.files,
            c.bytes,
            human(c.bytes)
        );
    }
    s.push_str("</tbody></table>");
}
