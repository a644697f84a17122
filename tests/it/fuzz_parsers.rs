//! Property tests of what slim parses from untrusted places: image
//! references (the command line, job files, registry listings), manifests
//! and indexes, image configs, descriptors and platforms, strip profiles and
//! job files. Arbitrary bytes and arbitrary structured values of the right
//! shape go in; the property is that every input gives a value or an error,
//! never a panic, and that parsed values keep their invariants.
//!
//! CI runs a bounded number of cases (proptest's default, 256, per test;
//! a few seconds in all). A longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test it fuzz_parsers`.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use slim::digest::Digest;
use slim::image::config::{LayerChange, rewrite};
use slim::image::{Descriptor, Manifest, Platform, media};
use slim::reference::{ImageRef, RegistryRef};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys that mean something to slim, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "mediaType",
            "schemaVersion",
            "config",
            "layers",
            "manifests",
            "digest",
            "size",
            "platform",
            "annotations",
            "urls",
            "rootfs",
            "diff_ids",
            "history",
            "empty_layer",
            "created",
            "comment",
            "os",
            "architecture",
            "variant",
            "Entrypoint",
            "Cmd",
            "Env",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z_]{1,8}",
    ]
}

/// Strings that have broken parsers elsewhere.
fn interesting_string() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        ".",
        "..",
        "../../etc",
        "%2e%2e/f",
        "a/b?x=y",
        "sha256:",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha512:00",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.example.evil+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "linux/amd64",
        "//",
        "\u{0}",
        "é",
        "-1",
        "18446744073709551616",
    ])
    .prop_map(str::to_string)
}

/// A manifest-shaped JSON object with random parts.
fn manifest_like() -> impl Strategy<Value = Value> {
    let descriptor = (
        prop_oneof![interesting_string(), ".{0,10}"],
        prop_oneof![interesting_string(), "sha256:[0-9a-f]{64}", ".{0,10}"],
        prop_oneof![any::<u64>().prop_map(|n| json!(n)), any_json()],
        prop::option::of(any_json()),
    )
        .prop_map(|(mt, digest, size, platform)| {
            let mut d = json!({"mediaType": mt, "digest": digest, "size": size});
            if let Some(p) = platform {
                d["platform"] = p;
            }
            d
        })
        .boxed();
    (
        prop::option::of(interesting_string()),
        prop::option::of(descriptor.clone()),
        prop::option::of(prop::collection::vec(descriptor.clone(), 0..4)),
        prop::option::of(prop::collection::vec(descriptor, 0..4)),
        prop::option::of(any_json()),
    )
        .prop_map(|(mt, config, layers, manifests, extra)| {
            let mut m = json!({"schemaVersion": 2});
            if let Some(mt) = mt {
                m["mediaType"] = json!(mt);
            }
            if let Some(c) = config {
                m["config"] = c;
            }
            if let Some(l) = layers {
                m["layers"] = json!(l);
            }
            if let Some(x) = manifests {
                m["manifests"] = json!(x);
            }
            if let Some(e) = extra {
                m["annotations"] = e;
            }
            m
        })
}

/// A config-shaped JSON value with random parts (or any JSON at all).
fn config_like() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_json(),
        (
            any_json(),
            prop::option::of(any_json()),
            prop::option::of(prop::collection::vec(any_json(), 0..5)),
        )
            .prop_map(|(rootfs, diff_ids, history)| {
                let mut c = json!({"architecture": "amd64", "os": "linux", "rootfs": rootfs});
                if let Some(d) = diff_ids
                    && c["rootfs"].is_object()
                {
                    c["rootfs"]["diff_ids"] = d;
                }
                if let Some(h) = history {
                    c["history"] = json!(h);
                }
                c
            }),
    ]
}

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

proptest! {
    /// References: any string parses or is refused; a parsed registry
    /// reference prints back to itself.
    #[test]
    fn references_parse_or_fail(s in prop_oneof![".{0,40}", "[a-z0-9./:@_-]{0,40}", interesting_string()]) {
        if let Ok(ImageRef::Registry(r)) = s.parse::<ImageRef>() {
            let again = RegistryRef::parse(&r.to_string()).expect("a printed reference parses");
            prop_assert_eq!(again, r);
        }
        let _ = RegistryRef::parse(&s);
        let _ = Platform::parse(&s);
        let _ = s.parse::<Digest>();
    }

    /// Manifests: arbitrary bytes are refused or parsed, with or without a
    /// declared type.
    #[test]
    fn manifest_bytes_parse_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..256), declared in prop::option::of(interesting_string())) {
        let _ = Manifest::parse("fuzz", bytes, declared.as_deref());
    }

    /// Structured manifests: never a panic; a parsed one has only known
    /// media types and valid descriptors.
    #[test]
    fn manifests_parse_or_fail(m in manifest_like(), declared in prop::option::of(interesting_string())) {
        let bytes = serde_json::to_vec(&m).unwrap();
        if let Ok(parsed) = Manifest::parse("fuzz", bytes, declared.as_deref()) {
            prop_assert!(media::is_manifest_type(&parsed.media_type), "{}", parsed.media_type);
            if let Some(mt) = m.get("mediaType").and_then(Value::as_str) {
                prop_assert!(media::is_manifest_type(mt), "unknown type {mt} accepted");
            }
            for d in parsed.blobs().unwrap().iter().chain(&parsed.manifests().unwrap()) {
                let _ = d.short();
            }
            let _ = parsed.is_container_image();
        }
    }

    /// Descriptors and platforms from any JSON.
    #[test]
    fn descriptors_and_platforms_from_any_json(v in any_json()) {
        let _ = Descriptor::parse("fuzz", &v);
        let _ = Platform::from_json(&v);
    }

    /// Config rewriting takes any config JSON a hostile image may carry.
    #[test]
    fn config_rewrite_takes_any_json(c in config_like(), keep in 0usize..4) {
        let new = digest('f');
        let squashed = rewrite(&c, &LayerChange::Squashed { keep, new_diff_id: &new, description: "fuzz" });
        prop_assert!(squashed.is_object() || !c.is_object());
        let ids = [digest('a'), digest('b')];
        let _ = rewrite(&c, &LayerChange::EachRewritten { new_diff_ids: &ids, description: "fuzz" });
    }

    /// Profiles: arbitrary text and random TOML are refused or parsed.
    #[test]
    fn profiles_parse_or_fail(text in prop_oneof![
        ".{0,200}",
        (prop::collection::vec(("[a-z_]{1,10}", prop_oneof![Just("\"x\"".to_string()), Just("[\"**\"]".to_string()), Just("true".to_string()), Just("[[\"a\"]]".to_string()), "\"[*?{}\\[\\]a-z/]{0,12}\""]), 0..8), prop::bool::ANY).prop_map(|(kv, rule)| {
            let mut t = String::from("name = \"fuzz\"\n");
            if rule { t.push_str("[[rule]]\ncategory = \"docs\"\n"); }
            for (k, v) in kv { t.push_str(&format!("{k} = {v}\n")); }
            t
        }),
    ]) {
        let _ = slim::profile::Profile::parse(&text, "fuzz.toml");
    }

    /// Job files: arbitrary text and random entries are refused or parsed.
    #[test]
    fn job_files_parse_or_fail(text in prop_oneof![
        ".{0,200}",
        (prop::collection::vec(("[a-z-]{1,12}", prop_oneof![Just("\"x\"".to_string()), Just("1".to_string()), Just("true".to_string()), Just("\"{repository}:{tag}\"".to_string()), Just("\"(\"".to_string()), "\"[a-z0-9./:{}-]{0,20}\""]), 0..8), prop::sample::select(vec!["[[images]]", "[[repositories]]", "[defaults]"])).prop_map(|(kv, table)| {
            let mut t = format!("{table}\n");
            for (k, v) in kv { t.push_str(&format!("{k} = {v}\n")); }
            t
        }),
    ]) {
        let _ = slim::batch::job::JobFile::parse(Path::new("jobs.toml"), &text);
    }
}
