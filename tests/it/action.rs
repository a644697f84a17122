//! The CI integrations: the GitHub Action's entrypoint run end to end
//! against a real registry (outputs and job summary in temp files), and the
//! action, the GitLab component and the Tekton Task naming only inputs that
//! are flags of `slim --help`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::*;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml_docs(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo_file(path)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `key=value` lines of a `$GITHUB_OUTPUT` file.
fn outputs(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `bash action/entrypoint.sh` with the action's inputs, as the runner
/// would start it (slim's hermetic environment, `SLIM` = the built binary).
fn entrypoint(ctx: &TestContext, inputs: &[(&str, &str)]) -> Output {
    let slim = ctx.command();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_file("action/entrypoint.sh"));
    for (k, v) in slim.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(ctx.root())
        .env("SLIM", SLIM)
        .env("RUNNER_TEMP", ctx.path("runner-temp"))
        .env("GITHUB_OUTPUT", ctx.path("github-output"))
        .env("GITHUB_STEP_SUMMARY", ctx.path("step-summary.md"));
    for (k, v) in inputs {
        cmd.env(format!("INPUT_{}", k.to_uppercase().replace('-', "_")), v);
    }
    std::fs::create_dir_all(ctx.path("runner-temp")).unwrap();
    let out = cmd.output().expect("running action/entrypoint.sh");
    Output::from_std(format!("action/entrypoint.sh {inputs:?}"), out)
}

#[test]
fn the_action_slims_between_two_repositories_and_writes_outputs_and_summary() {
    let registry = Registry::shared();
    let src_repo = unique_name("action-src");
    let dst_repo = unique_name("action-dst");
    push_fixture(registry, &format!("{src_repo}:v1"));
    let ctx = TestContext::new();
    let source = registry.reference(&format!("{src_repo}:v1"));
    let destination = registry.reference(&format!("{dst_repo}:v1-slim"));
    let out = entrypoint(
        &ctx,
        &[
            ("source", &source),
            ("destination", &destination),
            ("profile", "auto"),
            ("compression", "zstd"),
            // A list input: one glob per line, blank lines ignored.
            ("keep", "\n  /etc/**  \n\n/bin/busybox\n"),
            ("verify", "false"),
            ("fail-if-savings-below", "0"),
            ("fail-if-larger", "false"),
        ],
    );
    out.assert_success();

    let o = outputs(&ctx.path("github-output"));
    // The digest output is the manifest the registry now serves.
    let digest = manifest_digest_of(&registry.docker_ref(&format!("{dst_repo}:v1-slim")));
    assert_eq!(o.get("digest"), Some(&digest), "{o:?}");
    let report_path = ctx.path("runner-temp/slim-report.json");
    assert_eq!(
        o.get("report-path").map(PathBuf::from),
        Some(report_path.clone())
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["output"]["digest"].as_str(), Some(digest.as_str()));
    let before = report["source"]["compressed_bytes"].as_i64().unwrap();
    let after = report["output"]["compressed_bytes"].as_i64().unwrap();
    assert_eq!(o["saved-bytes"], (before - after).to_string());
    let pct = 100.0 * (1.0 - after as f64 / before as f64);
    assert_eq!(o["saved-percent"], format!("{pct:.1}"));
    // Every layer is zstd: the compression input reached slim.
    let manifest = skopeo_inspect_raw(&registry.docker_ref(&format!("{dst_repo}:v1-slim")));
    for l in manifest["layers"].as_array().unwrap() {
        assert!(
            l["mediaType"].as_str().unwrap().ends_with("+zstd"),
            "{manifest}"
        );
    }

    let summary = std::fs::read_to_string(ctx.path("step-summary.md")).unwrap();
    assert!(
        summary.contains(&format!("### slim: {source} → {destination}")),
        "{summary}"
    );
    for row in [
        "| compressed |",
        "| uncompressed |",
        "| layers |",
        "| files |",
    ] {
        assert!(summary.contains(row), "{row} in {summary}");
    }

    // A threshold not met: exit 3, and the outputs are still written.
    std::fs::remove_file(ctx.path("github-output")).unwrap();
    let out = entrypoint(
        &ctx,
        &[
            ("source", &source),
            ("destination", &destination),
            ("fail-if-savings-below", "99.5"),
        ],
    );
    out.assert_code(3);
    assert!(outputs(&ctx.path("github-output")).contains_key("digest"));

    // A boolean input that is neither true nor false.
    let out = entrypoint(
        &ctx,
        &[
            ("source", &source),
            ("destination", &destination),
            ("verify", "yes"),
        ],
    );
    out.assert_code(2);
    out.assert_stderr_contains("::error::input verify: expected true or false, not 'yes'");
}

/// `slim --help`'s long flags.
fn help_flags() -> Vec<String> {
    let out = Command::new(SLIM).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_string()
        })
        .collect()
}

/// Every input a CI integration declares is a flag of `slim --help`:
/// `source` is the SOURCE argument, `destination` is `--output`, and
/// `exempt` lists the integration's own (what to install or run).
fn assert_inputs_are_flags(file: &str, inputs: &[String], exempt: &[&str]) {
    let flags = help_flags();
    assert!(flags.iter().any(|f| f == "--fail-if-savings-below"));
    assert!(!inputs.is_empty(), "{file} declares no inputs");
    for input in inputs {
        if exempt.contains(&input.as_str()) || input == "source" {
            continue;
        }
        let flag = if input == "destination" {
            "--output".to_string()
        } else {
            format!("--{input}")
        };
        assert!(
            flags.contains(&flag),
            "{file}: input {input} is not a flag of slim --help ({flag})"
        );
    }
}

fn keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn action_gitlab_and_tekton_inputs_are_slim_flags() {
    // action.yml: inputs, each passed to the step as INPUT_*, which the
    // entrypoint reads; outputs, each read from the step's outputs.
    let action = &yaml_docs("action.yml")[0];
    let inputs = keys(&action["inputs"]);
    assert_inputs_are_flags("action.yml", &inputs, &["version"]);
    let steps = action["runs"]["steps"].as_vec().unwrap();
    let step = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("slim"))
        .expect("a step with id slim");
    let env = keys(&step["env"]);
    let script = std::fs::read_to_string(repo_file("action/entrypoint.sh")).unwrap();
    for input in inputs.iter().filter(|i| *i != "version") {
        let var = format!("INPUT_{}", input.to_uppercase().replace('-', "_"));
        assert!(
            env.contains(&var),
            "action.yml: {input} is not passed as {var}"
        );
        assert_eq!(
            step["env"][var.as_str()].as_str(),
            Some(format!("${{{{ inputs.{input} }}}}").as_str())
        );
        assert!(
            script.contains(&var),
            "action/entrypoint.sh never reads {var}"
        );
    }
    let outputs = keys(&action["outputs"]);
    assert_eq!(
        outputs,
        ["digest", "saved-bytes", "saved-percent", "report-path"]
    );
    for o in &outputs {
        assert_eq!(
            action["outputs"][o.as_str()]["value"].as_str(),
            Some(format!("${{{{ steps.slim.outputs.{o} }}}}").as_str())
        );
    }

    // The GitLab component: spec, then the job.
    let gitlab = yaml_docs("deploy/gitlab/slim.yml");
    assert_eq!(gitlab.len(), 2, "spec and job documents");
    let inputs = keys(&gitlab[0]["spec"]["inputs"]);
    assert_inputs_are_flags("deploy/gitlab/slim.yml", &inputs, &["stage", "image"]);
    let job = format!("{:?}", gitlab[1]["slim"]["script"]);
    for input in &inputs {
        assert!(
            job.contains(&format!("$[[ inputs.{input} ]]")) || input == "stage" || input == "image",
            "the GitLab job never uses input {input}"
        );
    }

    // The Tekton Task.
    let task = &yaml_docs("deploy/tekton/slim-task.yaml")[0];
    assert_eq!(task["kind"].as_str(), Some("Task"));
    let params: Vec<String> = task["spec"]["params"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_inputs_are_flags("deploy/tekton/slim-task.yaml", &params, &["image"]);
    let script = task["spec"]["steps"][0]["script"].as_str().unwrap();
    for p in params.iter().filter(|p| *p != "image") {
        assert!(
            script.contains(&format!("$(params.{p})")),
            "the Tekton step never uses param {p}"
        );
    }
}
