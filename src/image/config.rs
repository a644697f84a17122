//! Image config rewriting: `rootfs.diff_ids` and `history` change together
//! with the layers (OCI image spec, "Image Configuration": one non-empty
//! history entry per layer). Everything else (entrypoint, cmd, env, labels,
//! user, workdir, ports, unknown fields) is kept byte-for-byte in order.

use serde_json::{Value, json};

use crate::digest::Digest;

/// How the layers changed.
pub enum LayerChange<'a> {
    /// The first `keep` layers stay; the rest became one layer.
    Squashed {
        keep: usize,
        new_diff_id: &'a Digest,
        description: &'a str,
    },
    /// Each layer was rewritten on its own.
    EachRewritten {
        new_diff_ids: &'a [Digest],
        description: &'a str,
    },
}

/// Rewrites a config JSON for new layers.
///
/// A config that is not an object, or whose `rootfs` or history entries
/// are not objects, is refused before this ([`check`]); here they are
/// replaced rather than indexed into, so no input can make this panic.
pub fn rewrite(config: &Value, change: &LayerChange<'_>) -> Value {
    let mut c = config.clone();
    if !c.is_object() {
        c = json!({});
    }
    let created = c.get("created").cloned();
    let old: Vec<Value> = c
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_ids: Vec<Value> = match change {
        LayerChange::Squashed {
            keep, new_diff_id, ..
        } => old
            .iter()
            .take(*keep)
            .cloned()
            .chain(std::iter::once(Value::String(new_diff_id.to_string())))
            .collect(),
        LayerChange::EachRewritten { new_diff_ids, .. } => new_diff_ids
            .iter()
            .map(|d| Value::String(d.to_string()))
            .collect(),
    };
    if !c.get("rootfs").is_some_and(Value::is_object) {
        c["rootfs"] = json!({"type": "layers"});
    }
    c["rootfs"]["diff_ids"] = Value::Array(new_ids);

    let Some(history) = c.get_mut("history").and_then(Value::as_array_mut) else {
        return c;
    };
    match change {
        LayerChange::Squashed {
            keep, description, ..
        } => {
            // Entries of the squashed layers stay readable, marked empty.
            let mut non_empty = 0;
            for h in history.iter_mut() {
                if !h.is_object() {
                    *h = json!({});
                }
                let empty = h
                    .get("empty_layer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if empty {
                    continue;
                }
                non_empty += 1;
                if non_empty > *keep {
                    h["empty_layer"] = Value::Bool(true);
                    let comment = match h.get("comment").and_then(Value::as_str) {
                        Some(c) if !c.is_empty() => format!("{c} (squashed by slim)"),
                        _ => "squashed by slim".to_string(),
                    };
                    h["comment"] = Value::String(comment);
                }
            }
            history.push(slim_entry(&created, description, false));
        }
        LayerChange::EachRewritten { description, .. } => {
            history.push(slim_entry(&created, description, true));
        }
    }
    c
}

/// The config's `rootfs.diff_ids`, parsed; `None` when it has none. A
/// value that is not a digest (or not a string) is an error.
pub fn diff_ids(config: &Value) -> Result<Option<Vec<Digest>>, crate::digest::DigestError> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|d| d.as_str().unwrap_or("").parse()).collect())
        .transpose()
}

/// What [`rewrite`] needs of a config: an object, whose `rootfs` and
/// history entries (when present) are objects too.
pub fn check(config: &Value) -> Result<(), String> {
    let Some(obj) = config.as_object() else {
        return Err("the config is not a JSON object".into());
    };
    if obj.get("rootfs").is_some_and(|r| !r.is_object()) {
        return Err("rootfs is not an object".into());
    }
    match obj.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(h)) => {
            if let Some(i) = h.iter().position(|e| !e.is_object()) {
                return Err(format!("history[{i}] is not an object"));
            }
        }
        Some(_) => return Err("history is not an array".into()),
    }
    Ok(())
}

fn slim_entry(created: &Option<Value>, description: &str, empty: bool) -> Value {
    let mut h = serde_json::Map::new();
    // The image's own time keeps the output reproducible.
    if let Some(t) = created {
        h.insert("created".into(), t.clone());
    }
    h.insert(
        "created_by".into(),
        Value::String(format!("slim {description}")),
    );
    h.insert("comment".into(), Value::String("written by slim".into()));
    if empty {
        h.insert("empty_layer".into(), Value::Bool(true));
    }
    Value::Object(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squash_keeps_history_readable_and_consistent() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "config": {"Entrypoint": ["/app/run.sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d('a'), d('b'), d('c')]},
            "history": [
                {"created_by": "ADD rootfs"},
                {"created_by": "ENV X=1", "empty_layer": true},
                {"created_by": "COPY app"},
                {"created_by": "RUN rm"}
            ]
        });
        let new: Digest = d('f').parse().unwrap();
        let out = rewrite(
            &config,
            &LayerChange::Squashed {
                keep: 1,
                new_diff_id: &new,
                description: "--squash all",
            },
        );
        assert_eq!(out["rootfs"]["diff_ids"], json!([d('a'), d('f')]));
        let h = out["history"].as_array().unwrap();
        assert_eq!(h.len(), 5);
        let non_empty = h
            .iter()
            .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
            .count();
        assert_eq!(non_empty, 2, "one history entry per layer");
        assert_eq!(h[0]["created_by"], "ADD rootfs");
        assert_eq!(h[2]["comment"], "squashed by slim");
        assert_eq!(h[4]["created"], "2024-01-01T00:00:00Z");
        assert_eq!(out["config"], config["config"]);
    }
}
