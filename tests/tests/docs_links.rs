//! Every relative link in the project's markdown (README.md, docs/, bench/,
//! fuzz/, qemu/, ...) names a file or folder that exists. No VM needed: this
//! runs with the suite because a stale link is a doc that lies.

use std::path::{Path, PathBuf};

/// Folders that hold no committed markdown: build output and VCS data.
const SKIP_DIRS: &[&str] = &["target", "build", "node_modules"];

/// The link targets in `markdown` that are paths in this tree, with their
/// 1-based line: inline links and images `[text](dest "title")`, and
/// reference definitions `[id]: dest`. Targets with a scheme (`https:`,
/// `mailto:`) and bare `#anchors` are not paths; a path's own `#anchor` and
/// `?query` are cut off. Fenced code blocks and `code spans` are skipped.
fn relative_links(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if let Some(marker) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
            fence = Some(marker);
            continue;
        }
        let text = without_code_spans(line);
        let mut dests = inline_dests(&text);
        dests.extend(reference_dest(&text));
        for dest in dests {
            if let Some(path) = as_path(&dest) {
                out.push((i + 1, path));
            }
        }
    }
    out
}

/// `line` with every `code span` blanked out.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The `dest` of each `](dest)` or `](dest "title")` in `text`.
fn inline_dests(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let inner = match rest.strip_prefix('<') {
            Some(angled) => angled.split('>').next().unwrap_or(""),
            None => {
                // Balanced parentheses are part of the destination.
                let mut depth = 0usize;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| match c {
                        '(' => {
                            depth += 1;
                            false
                        }
                        ')' if depth == 0 => true,
                        ')' => {
                            depth -= 1;
                            false
                        }
                        c => c.is_whitespace(),
                    })
                    .map_or(rest.len(), |(i, _)| i);
                &rest[..end]
            }
        };
        out.push(inner.to_string());
    }
    out
}

/// The `dest` of a reference definition line, `[id]: dest`.
fn reference_dest(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix('[')?;
    let (label, dest) = rest.split_once("]:")?;
    if label.is_empty() || label.contains(']') {
        return None;
    }
    let dest = dest.split_whitespace().next()?;
    Some(dest.trim_start_matches('<').trim_end_matches('>').to_string())
}

/// The path a link destination names in this tree, if it names one.
fn as_path(dest: &str) -> Option<String> {
    let path = dest.split(['#', '?']).next().unwrap_or("");
    let scheme = path
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)));
    (!path.is_empty() && !scheme).then(|| path.to_string())
}

/// Every `*.md` file under `dir`, build output and hidden folders left out.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name.as_str()) {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// "FILE:LINE: LINK" for each relative link under `root` whose target is missing.
fn broken_links(root: &Path) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    markdown_files(root, &mut files);
    files.sort();
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let dir = file.parent().unwrap();
        for (line, link) in relative_links(&text) {
            checked += 1;
            let target = match link.strip_prefix('/') {
                Some(from_root) => root.join(from_root),
                None => dir.join(&link),
            };
            if !target.exists() {
                let shown = file.strip_prefix(root).unwrap_or(file);
                broken.push(format!("{}:{line}: {link}", shown.display()));
            }
        }
    }
    (checked, broken)
}

#[test]
fn every_relative_link_points_to_a_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (checked, broken) = broken_links(root);
    assert!(checked > 0, "no relative links found under {}", root.display());
    assert!(
        broken.is_empty(),
        "{} of {checked} relative links point to no file:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn a_missing_target_is_reported() {
    let dir = std::env::temp_dir().join(format!("basalt-docs-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("here.rs"), "").unwrap();
    std::fs::write(
        dir.join("docs/a.md"),
        "[ok](../here.rs) [gone](../gone.rs#top)\n[root](/here.rs) [web](https://x/y)\n",
    )
    .unwrap();
    let (checked, broken) = broken_links(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((checked, broken), (3, vec!["docs/a.md:1: ../gone.rs".to_string()]));
}

#[test]
fn links_table() {
    let cases: &[(&str, &[(usize, &str)])] = &[
        ("see [arch](docs/architecture.md).", &[(1, "docs/architecture.md")]),
        (
            "[a](a.md) and ![pic](img/p.svg \"title\")",
            &[(1, "a.md"), (1, "img/p.svg")],
        ),
        (
            "[sec](cmdline.md#keys) [q](x.md?plain=1)",
            &[(1, "cmdline.md"), (1, "x.md")],
        ),
        ("[here](#why-it-is-shaped-this-way)", &[]),
        ("[w](https://example.org/a.md) [m](mailto:a@b)", &[]),
        ("[p](<with space.md>)", &[(1, "with space.md")]),
        ("[f](fn(a).md)", &[(1, "fn(a).md")]),
        (
            "[ref]: ../init/src/main.rs\n[x]: https://e.org",
            &[(1, "../init/src/main.rs")],
        ),
        ("`[not](a/link.md)` but [yes](b.md)", &[(1, "b.md")]),
        ("text\n```\n[in](code.md)\n```\n[after](c.md)", &[(5, "c.md")]),
        ("~~~rust\nlet [a](b) = 1;\n~~~", &[]),
        (
            "| a | [x](../a/b.rs), [y](../c.rs) |",
            &[(1, "../a/b.rs"), (1, "../c.rs")],
        ),
        ("plain [brackets] and (parens)", &[]),
    ];
    for (text, want) in cases {
        let want: Vec<(usize, String)> = want.iter().map(|(l, p)| (*l, p.to_string())).collect();
        assert_eq!(relative_links(text), want, "{text:?}");
    }
}
