//! A treemap drawn as SVG on the server: squarified layout (Bruls, Huizing
//! and van Wijk), directories nest with a title strip, leaves coloured by
//! [`Class`]. Every directory is a `<g class="d">` holding its box in
//! `data-box`, so a few lines of script can zoom by setting the viewBox;
//! without script the picture and its tooltips are all there.

use std::fmt::Write as _;

use crate::transform::paths::{Class, SizeNode, SizeTree};
use crate::units::human;

/// The colour of a class (the legend's too).
pub fn colour(class: Class) -> (u8, u8, u8) {
    match class {
        Class::Removed => (0xe4, 0x57, 0x2e),
        Class::Shadowed => (0x9b, 0x5d, 0xe5),
        Class::Duplicate => (0xf3, 0xa7, 0x12),
        Class::Safety => (0x17, 0xa3, 0x98),
        Class::Kept => (0x4c, 0x8b, 0xf5),
    }
}

/// A leaf's fill: its class colour, a little lighter or darker by name so
/// that neighbours stay apart.
fn fill(class: Class, name: &str) -> String {
    let (r, g, b) = colour(class);
    let h = name
        .bytes()
        .fold(2166136261u32, |h, c| (h ^ c as u32).wrapping_mul(16777619));
    let k = 0.85 + (h % 31) as f64 / 100.0; // 0.85 ..= 1.15
    let s = |c: u8| ((c as f64 * k).round().min(255.0)) as u8;
    format!("#{:02x}{:02x}{:02x}", s(r), s(g), s(b))
}

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Squarified layout of `sizes` (largest first) in `r`.
pub fn squarify(sizes: &[u64], r: Rect) -> Vec<Rect> {
    let total: f64 = sizes.iter().map(|s| *s as f64).sum();
    if total <= 0.0 || r.w <= 0.0 || r.h <= 0.0 {
        return sizes
            .iter()
            .map(|_| Rect {
                w: 0.0,
                h: 0.0,
                ..r
            })
            .collect();
    }
    let scale = r.w * r.h / total;
    let areas: Vec<f64> = sizes.iter().map(|s| *s as f64 * scale).collect();
    let mut out = Vec::with_capacity(areas.len());
    let mut rest = r;
    let mut i = 0;
    let worst = |row: &[f64], side: f64| {
        let s: f64 = row.iter().sum();
        let max = row.iter().cloned().fold(0.0, f64::max);
        let min = row.iter().cloned().fold(f64::INFINITY, f64::min);
        if s <= 0.0 || min <= 0.0 {
            return f64::INFINITY;
        }
        (side * side * max / (s * s)).max(s * s / (side * side * min))
    };
    while i < areas.len() {
        let side = rest.w.min(rest.h);
        let mut end = i + 1;
        let mut best = worst(&areas[i..end], side);
        while end < areas.len() {
            let next = worst(&areas[i..=end], side);
            if next > best {
                break;
            }
            best = next;
            end += 1;
        }
        let sum: f64 = areas[i..end].iter().sum();
        if rest.w >= rest.h {
            let t = if rest.h > 0.0 { sum / rest.h } else { 0.0 };
            let mut y = rest.y;
            for a in &areas[i..end] {
                let h = if t > 0.0 { a / t } else { 0.0 };
                out.push(Rect {
                    x: rest.x,
                    y,
                    w: t,
                    h,
                });
                y += h;
            }
            rest.x += t;
            rest.w = (rest.w - t).max(0.0);
        } else {
            let t = if rest.w > 0.0 { sum / rest.w } else { 0.0 };
            let mut x = rest.x;
            for a in &areas[i..end] {
                let w = if t > 0.0 { a / t } else { 0.0 };
                out.push(Rect {
                    x,
                    y: rest.y,
                    w,
                    h: t,
                });
                x += w;
            }
            rest.y += t;
            rest.h = (rest.h - t).max(0.0);
        }
        i = end;
    }
    out
}

const HEADER: f64 = 15.0;
const PAD: f64 = 2.0;

/// The treemap of `tree` as an `<svg>` of `width` × `height` user units.
pub fn svg(tree: &SizeTree, width: f64, height: f64, id: &str) -> String {
    let mut s = String::with_capacity(256 * 1024);
    let _ = write!(
        s,
        r#"<svg class="tm" id="{id}" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let r = Rect {
        x: 0.0,
        y: 0.0,
        w: width,
        h: height,
    };
    if tree.root.bytes == 0 {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">empty</text>"#,
            width / 2.0,
            height / 2.0
        );
    } else {
        node(&mut s, &tree.root, "", r, 0);
    }
    s.push_str("</svg>");
    s
}

fn node(s: &mut String, n: &SizeNode, parent: &str, r: Rect, depth: usize) {
    if r.w < 0.4 || r.h < 0.4 {
        return;
    }
    let path = match (parent, depth) {
        (_, 0) => "/".to_string(),
        ("/", _) => format!("/{}", n.name),
        _ => format!("{parent}/{}", n.name),
    };
    let tip = match n.class {
        Some(c) => format!("{} · {} · {}", path, human(n.bytes), c.name()),
        None => format!(
            "{}/ · {} in {} files",
            path.trim_end_matches('/'),
            human(n.bytes),
            n.files
        ),
    };
    if let Some(class) = n.class {
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
            r.x,
            r.y,
            r.w,
            r.h,
            fill(class, &n.name),
            escape(&tip)
        );
        label(s, &n.name, r, false);
        return;
    }
    let _ = write!(
        s,
        r#"<g class="d" data-box="{:.1} {:.1} {:.1} {:.1}"><rect class="b" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
        r.x,
        r.y,
        r.w,
        r.h,
        r.x,
        r.y,
        r.w,
        r.h,
        escape(&tip)
    );
    let header = if r.h > HEADER * 2.0 && r.w > 30.0 {
        HEADER
    } else {
        0.0
    };
    if header > 0.0 {
        let text = if depth == 0 {
            format!("/ {}", human(n.bytes))
        } else {
            format!("{}/ {}", n.name, human(n.bytes))
        };
        label(s, &text, r, true);
    }
    let inner = Rect {
        x: r.x + PAD,
        y: r.y + header.max(PAD),
        w: r.w - 2.0 * PAD,
        h: r.h - header.max(PAD) - PAD,
    };
    if inner.w > 1.0 && inner.h > 1.0 {
        let sizes: Vec<u64> = n.children.iter().map(|c| c.bytes).collect();
        for (c, cr) in n.children.iter().zip(squarify(&sizes, inner)) {
            node(s, c, &path, cr, depth + 1);
        }
    }
    s.push_str("</g>");
}

/// A label that fits the box (left out when nothing readable fits).
fn label(s: &mut String, text: &str, r: Rect, header: bool) {
    let size = if header { 11.0 } else { (r.h * 0.6).min(11.0) };
    if size < 7.0 || r.w < 24.0 {
        return;
    }
    let fits = ((r.w - 6.0) / (size * 0.6)).floor() as usize;
    if fits < 3 {
        return;
    }
    let shown: String = if text.chars().count() > fits {
        let mut t: String = text.chars().take(fits.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        text.to_string()
    };
    let y = if header {
        r.y + 11.5
    } else {
        r.y + r.h / 2.0 + size * 0.35
    };
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="{size:.0}"{}>{}</text>"#,
        r.x + 3.0,
        y,
        if header { r#" class="h""# } else { "" },
        escape(&shown)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squarify_fills_the_box_with_areas_in_proportion() {
        let r = Rect {
            x: 0.0,
            y: 0.0,
            w: 600.0,
            h: 400.0,
        };
        let sizes = [6, 6, 4, 3, 2, 2, 1];
        let rects = squarify(&sizes, r);
        let total: f64 = rects.iter().map(|r| r.w * r.h).sum();
        assert!((total - 240000.0).abs() < 1e-6, "{total}");
        for (s, q) in sizes.iter().zip(&rects) {
            let want = *s as f64 / 24.0 * 240000.0;
            assert!((q.w * q.h - want).abs() < 1e-6, "{s}: {q:?}");
            assert!(q.x >= -1e-9 && q.y >= -1e-9);
            assert!(q.x + q.w <= 600.0 + 1e-6 && q.y + q.h <= 400.0 + 1e-6);
        }
        // Squarified: no sliver.
        for q in &rects {
            assert!(q.w / q.h < 4.0 && q.h / q.w < 4.0, "{q:?}");
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
