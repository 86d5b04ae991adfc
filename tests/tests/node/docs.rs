//! The documentation cannot drift from the code: README's tours are run as
//! written against a real node, the SDK walkthrough is the `guestbook` guest
//! (every block marked `<!-- file: PATH -->` must be that file, byte for
//! byte), and README names every constant of `runtime/src/limits.rs`.

use collector_tests::{ProcessNode, guests_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The fenced code blocks of a markdown text: (the line before the fence,
/// the info string, the body).
fn blocks(md: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut lines = md.lines();
    let mut prev = "";
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            out.push((prev.to_string(), info.trim().to_string(), body));
            prev = "";
        } else if !line.trim().is_empty() {
            prev = line;
        }
    }
    out
}

/// The `sh` blocks of the section that starts with `heading`, up to the next
/// heading of any level.
fn section_sh_blocks(md: &str, heading: &str) -> Vec<String> {
    let mut lines = md.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no section {heading:?}");
    let mut section = String::new();
    let mut fenced = false;
    for l in lines {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        // A `#` line inside a code block is a shell comment, not a heading.
        if !fenced && l.starts_with('#') {
            break;
        }
        section.push_str(l);
        section.push('\n');
    }
    blocks(&section)
        .into_iter()
        .filter(|(_, info, _)| info == "sh")
        .map(|(_, _, body)| body)
        .collect()
}

/// Splits a shell command line into words (single and double quotes, `\`
/// escapes in double quotes) and drops a trailing `# comment`, which is
/// returned on its own.
fn words(line: &str) -> (Vec<String>, Option<String>) {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '#' if !in_word => {
                let comment: String = chars.collect();
                return (out, Some(comment.trim().to_string()));
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    (out, None)
}

/// What a comment after a command says it prints.
enum Expect {
    Nothing,
    /// `# {"n": "1"}`: this JSON on stdout.
    Json(serde_json::Value),
    /// `# collector: InvalidArgument: why   (exit code 67)`: this failure.
    Failure {
        code: i32,
        message: String,
    },
}

fn expectation(comment: Option<&str>) -> Expect {
    let Some(c) = comment else {
        return Expect::Nothing;
    };
    if c.starts_with('{')
        && let Ok(v) = serde_json::from_str(c)
    {
        return Expect::Json(v);
    }
    if let Some(rest) = c.strip_prefix("collector: ")
        && let Some((msg, code)) = rest.rsplit_once("(exit code ")
    {
        let code = code.trim_end_matches(')').parse().expect("exit code");
        let message = msg.split_once(": ").map(|(_, m)| m).unwrap_or(msg);
        return Expect::Failure {
            code,
            message: message.trim().to_string(),
        };
    }
    Expect::Nothing
}

/// Runs the `collector …` lines of shell blocks as a user would, in `cwd`,
/// against `node`: heredocs (`cat > F <<'EOF'`) write their file, paths
/// under `wasm_prefix` point at the guests the tests built, `cargo`,
/// `alias` and `grpcurl` lines are skipped (the tests build the guests; no
/// grpcurl here). Every command must succeed, or fail as its comment says,
/// and print what its comment shows. Returns how many commands ran.
fn run_blocks(
    blocks: &[String],
    cwd: &Path,
    node: &ProcessNode,
    wasm_prefix: &str,
    token_file: Option<&Path>,
) -> usize {
    let mut ran = 0;
    for block in blocks {
        let mut lines = block.lines().peekable();
        while let Some(first) = lines.next() {
            let mut line = first.to_string();
            while line.ends_with('\\') {
                line.pop();
                line.push_str(lines.next().expect("a continued line"));
            }
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("cat > ") {
                let (file, marker) = rest.split_once(" <<").expect("a heredoc");
                let marker = marker.trim_matches(|c| c == '\'' || c == '"');
                let mut text = String::new();
                for l in lines.by_ref() {
                    if l == marker {
                        break;
                    }
                    text.push_str(l);
                    text.push('\n');
                }
                std::fs::write(cwd.join(file), text).unwrap();
                continue;
            }
            let (args, comment) = words(trimmed);
            let Some((cmd, args)) = args.split_first() else {
                continue;
            };
            if cmd != "collector" {
                assert!(
                    ["cargo", "alias", "grpcurl"].contains(&cmd.as_str()),
                    "a README command the test does not know how to run: {trimmed}"
                );
                continue;
            }
            // A comment on the next line(s) says what the command prints.
            let comment = comment.or_else(|| {
                let next = lines.peek()?.trim();
                let c = next.strip_prefix("# ")?;
                (c.starts_with('{') || c.starts_with("collector: ")).then(|| {
                    lines.next();
                    c.to_string()
                })
            });
            let args: Vec<String> = args
                .iter()
                .map(|a| match a.strip_prefix(wasm_prefix) {
                    Some(file) => guests_dir().join(file).to_string_lossy().into_owned(),
                    None => a.clone(),
                })
                .collect();
            let mut cmd = Command::new(BIN);
            if let Some(f) = token_file {
                cmd.env("COLLECTOR_TOKEN_FILE", f);
            }
            let out = cmd
                .arg("--node")
                .arg(node.addr.to_string())
                .args(&args)
                .current_dir(cwd)
                .output()
                .expect("run the collector binary");
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            match expectation(comment.as_deref()) {
                Expect::Failure { code, message } => {
                    assert_eq!(out.status.code(), Some(code), "{trimmed}: {stderr}");
                    assert!(stderr.contains(&message), "{trimmed}: {stderr}");
                }
                expect => {
                    assert!(out.status.success(), "{trimmed} failed: {stderr}");
                    let printed: serde_json::Value = serde_json::from_str(&stdout)
                        .unwrap_or_else(|e| panic!("{trimmed} printed no JSON ({e}): {stdout}"));
                    if let Expect::Json(want) = expect {
                        assert_eq!(printed, want, "{trimmed}");
                    }
                }
            }
            ran += 1;
        }
    }
    ran
}

#[test]
fn the_readme_tour_runs_as_written() {
    let md = read("README.md");
    let dir = tempfile::tempdir().unwrap();
    // As for a newcomer: the node makes its operator key, and the CLI run
    // in the same directory finds it.
    let node = ProcessNode::start_fresh(BIN, &dir.path().join("data"));
    let key = dir.path().join("data/operator.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the operator key is readable only by its owner"
    );
    assert_ne!(
        std::fs::read_to_string(&key).unwrap(),
        collector_tests::TOKEN
    );
    let tour = section_sh_blocks(&md, "## A five-minute tour");
    let handlers = section_sh_blocks(&md, "### Wasm handlers");
    // The tour's first block (the CLI; the second is grpcurl), then the handlers'.
    let ran = run_blocks(
        &[tour[0].clone(), handlers[0].clone()],
        dir.path(),
        &node,
        "guests/target/wasm32-wasip2/release/",
        None,
    );
    assert!(ran >= 12, "only {ran} commands found in the tour");
}

#[test]
fn the_sdk_walkthrough_is_the_guestbook_guest_and_runs() {
    let md = read("sdk/README.md");
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let step5 = section_sh_blocks(&md, "## From `cargo new` to a called method")
        .into_iter()
        .find(|b| b.contains("register --proto"))
        .expect("step 5's block");
    let ran = run_blocks(
        &[step5],
        &repo().join("guests/guestbook"),
        &node,
        "target/wasm32-wasip2/release/",
        Some(&dir.path().join("data/operator.key")),
    );
    assert!(ran >= 6, "only {ran} commands found in step 5");
}

#[test]
fn every_block_marked_with_a_file_is_that_file() {
    let mut checked = 0;
    for doc in ["README.md", "sdk/README.md"] {
        for (before, _, body) in blocks(&read(doc)) {
            let Some(path) = before
                .strip_prefix("<!-- file: ")
                .and_then(|r| r.strip_suffix(" -->"))
            else {
                continue;
            };
            assert_eq!(
                body,
                read(path),
                "{doc}: the block marked {path} differs from the file"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} marked blocks");
}

#[test]
fn the_readme_names_every_limit() {
    let md = read("README.md");
    let limits = read("runtime/src/limits.rs");
    let names: Vec<&str> = limits
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(names.len() > 30, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !md.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "README does not name {missing:?}");
}

#[test]
fn shell_words_split_like_a_shell() {
    let (w, c) = words(r#"collector -n shop put orders '{"a": 1}' --id "x \"y\""   # {"n": "1"}"#);
    assert_eq!(
        w,
        [
            "collector",
            "-n",
            "shop",
            "put",
            "orders",
            r#"{"a": 1}"#,
            "--id",
            r#"x "y""#
        ]
    );
    assert_eq!(c.as_deref(), Some(r#"{"n": "1"}"#));
    let (w, c) = words("a b#c");
    assert_eq!(w, ["a", "b#c"]);
    assert!(c.is_none());
}
