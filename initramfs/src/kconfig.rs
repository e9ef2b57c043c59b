//! The kernel options basalt needs (`kernel-config/basalt.config`) held
//! against a kernel's `.config`.
//!
//! Fragment lines:
//! - `CONFIG_X=y` — must be built in;
//! - `CONFIG_X=m  # modules: a b` — built in, or a module: then the
//!   initramfs carries modules `a`, `b` and their dependencies;
//! - `CONFIG_X=y|CONFIG_Y=y` — at least one of them built in.
//!
//! Blank lines and lines starting with `#` are comments.

use basalt_common::manifest::valid_module_name;
use std::collections::BTreeMap;
use std::fmt;

/// One line of the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// At least one of these options must be `=y`.
    BuiltIn { options: Vec<String> },
    /// `option` must be `=y`, or `=m` and then `modules` are packed.
    BuiltInOrModule { option: String, modules: Vec<String> },
}

impl Requirement {
    /// How the requirement reads in the fragment, without its comment.
    pub fn describe(&self) -> String {
        match self {
            Requirement::BuiltIn { options } => options.join("|"),
            Requirement::BuiltInOrModule { option, .. } => option.clone(),
        }
    }
}

/// A requirement and the fragment line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentLine {
    pub line: usize,
    pub requirement: Requirement,
}

/// Why a fragment or `.config` line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KconfigError {
    pub line: usize,
    pub why: String,
}

impl fmt::Display for KconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for KconfigError {}

fn err(line: usize, why: impl Into<String>) -> KconfigError {
    KconfigError { line, why: why.into() }
}

/// Parses basalt's fragment format.
pub fn parse_fragment(text: &str) -> Result<Vec<FragmentLine>, KconfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (setting, comment) = match trimmed.split_once('#') {
            Some((s, c)) => (s.trim(), Some(c.trim())),
            None => (trimmed, None),
        };
        let modules = match comment {
            None => None,
            Some(c) => {
                let list = c.strip_prefix("modules:").ok_or_else(|| {
                    let why = format!("comment after a setting must be \"# modules: ...\", found \"# {c}\"");
                    err(line, why)
                })?;
                Some(list.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            }
        };
        let mut settings = Vec::new();
        for part in setting.split('|') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| err(line, format!("expected CONFIG_NAME=y or =m, found {part:?}")))?;
            if !valid_option_name(name) {
                return Err(err(line, format!("{name:?} is not a CONFIG_ option name")));
            }
            settings.push((name.to_string(), value.to_string()));
        }
        let requirement = match (settings.as_slice(), modules) {
            ([(name, value)], Some(modules)) if value == "m" => {
                if modules.is_empty() {
                    return Err(err(line, "\"# modules:\" lists no modules"));
                }
                if let Some(bad) = modules.iter().find(|m| !valid_module_name(m)) {
                    return Err(err(
                        line,
                        format!("{bad:?} is not a module name (lower case, underscores)"),
                    ));
                }
                Requirement::BuiltInOrModule {
                    option: name.clone(),
                    modules,
                }
            }
            ([(name, value)], None) if value == "m" => {
                return Err(err(
                    line,
                    format!("{name}=m needs \"# modules: ...\" naming what to pack"),
                ));
            }
            (all, modules) => {
                if let Some((name, value)) = all.iter().find(|(_, v)| v != "y") {
                    let why = if all.len() > 1 {
                        format!("alternatives must all be =y, found {name}={value}")
                    } else {
                        format!("expected {name}=y or =m, found ={value}")
                    };
                    return Err(err(line, why));
                }
                if modules.is_some() {
                    return Err(err(line, "\"# modules:\" only goes with =m"));
                }
                Requirement::BuiltIn {
                    options: all.iter().map(|(n, _)| n.clone()).collect(),
                }
            }
        };
        out.push(FragmentLine { line, requirement });
    }
    Ok(out)
}

/// A value in a kernel `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Yes,
    Module,
    /// `# CONFIG_X is not set`
    NotSet,
    /// A string (quotes kept) or number.
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => write!(f, "y"),
            Value::Module => write!(f, "m"),
            Value::NotSet => write!(f, "not set"),
            Value::Other(v) => write!(f, "{v}"),
        }
    }
}

/// Parses a kernel `.config` into option name → value.
pub fn parse_kconfig(text: &str) -> Result<BTreeMap<String, Value>, KconfigError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(name) = comment.trim().strip_suffix(" is not set") {
                if valid_option_name(name) {
                    out.insert(name.to_string(), Value::NotSet);
                }
            }
            continue;
        }
        let (name, value) = trimmed
            .split_once('=')
            .ok_or_else(|| err(line, format!("expected CONFIG_NAME=value, found {trimmed:?}")))?;
        if !valid_option_name(name) {
            return Err(err(line, format!("{name:?} is not a CONFIG_ option name")));
        }
        let value = match value {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::NotSet,
            other => Value::Other(other.to_string()),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

fn valid_option_name(name: &str) -> bool {
    match name.strip_prefix("CONFIG_") {
        Some(rest) => !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        None => false,
    }
}

/// How the kernel meets one requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    BuiltIn {
        option: String,
    },
    /// A module: these must be packed and loaded.
    Module {
        option: String,
        modules: Vec<String>,
    },
    /// Not met; each option with what the kernel has for it.
    Missing {
        found: Vec<(String, Found)>,
    },
}

/// What the kernel has for an option that does not meet its requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    Value(Value),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Absent => write!(f, "absent"),
            Found::Value(Value::Module) => write!(f, "=m, must be built in"),
            Found::Value(Value::NotSet) => write!(f, "not set"),
            Found::Value(v) => write!(f, "={v}"),
        }
    }
}

/// One requirement and how it is met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub requirement: Requirement,
    pub status: Status,
}

impl Finding {
    pub fn is_missing(&self) -> bool {
        matches!(self.status, Status::Missing { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.requirement.describe();
        match &self.status {
            Status::BuiltIn { option } if *option == what => write!(f, "{what:<40} built-in"),
            Status::BuiltIn { option } => write!(f, "{what:<40} built-in ({option})"),
            Status::Module { modules, .. } => {
                let files: Vec<String> = modules.iter().map(|m| format!("{m}.ko")).collect();
                write!(f, "{what:<40} module ({})", files.join(" "))
            }
            Status::Missing { found } => {
                let why: Vec<String> = if found.len() == 1 {
                    vec![found[0].1.to_string()]
                } else {
                    found.iter().map(|(o, v)| format!("{o} {v}")).collect()
                };
                write!(f, "{what:<40} MISSING ({})", why.join("; "))
            }
        }
    }
}

/// Holds each fragment requirement against a kernel's options.
pub fn check(fragment: &[FragmentLine], kconfig: &BTreeMap<String, Value>) -> Vec<Finding> {
    let found = |option: &str| match kconfig.get(option) {
        None => Found::Absent,
        Some(v) => Found::Value(v.clone()),
    };
    fragment
        .iter()
        .map(|line| {
            let status = match &line.requirement {
                Requirement::BuiltIn { options } => {
                    match options.iter().find(|o| kconfig.get(*o) == Some(&Value::Yes)) {
                        Some(option) => Status::BuiltIn { option: option.clone() },
                        None => Status::Missing {
                            found: options.iter().map(|o| (o.clone(), found(o))).collect(),
                        },
                    }
                }
                Requirement::BuiltInOrModule { option, modules } => match kconfig.get(option) {
                    Some(Value::Yes) => Status::BuiltIn { option: option.clone() },
                    Some(Value::Module) => Status::Module {
                        option: option.clone(),
                        modules: modules.clone(),
                    },
                    _ => Status::Missing {
                        found: vec![(option.clone(), found(option))],
                    },
                },
            };
            Finding {
                line: line.line,
                requirement: line.requirement.clone(),
                status,
            }
        })
        .collect()
}

/// The modules the findings ask for, in fragment order, each once.
pub fn wanted_modules(findings: &[Finding]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in findings {
        if let Status::Module { modules, .. } = &f.status {
            for m in modules {
                if !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fragment_lines() {
        let text = "# header\n\nCONFIG_A=y\nCONFIG_B=m   # modules: b b_helper\n  CONFIG_C=y|CONFIG_D=y \n";
        let got = parse_fragment(text).unwrap();
        assert_eq!(
            got,
            vec![
                FragmentLine {
                    line: 3,
                    requirement: Requirement::BuiltIn {
                        options: s(&["CONFIG_A"])
                    }
                },
                FragmentLine {
                    line: 4,
                    requirement: Requirement::BuiltInOrModule {
                        option: "CONFIG_B".into(),
                        modules: s(&["b", "b_helper"])
                    },
                },
                FragmentLine {
                    line: 5,
                    requirement: Requirement::BuiltIn {
                        options: s(&["CONFIG_C", "CONFIG_D"])
                    }
                },
            ]
        );
    }

    #[test]
    fn fragment_errors() {
        let cases = [
            ("CONFIG_A", "expected CONFIG_NAME=y or =m"),
            ("A=y", "\"A\" is not a CONFIG_ option name"),
            ("CONFIG_A-B=y", "not a CONFIG_ option name"),
            ("CONFIG_A=m", "CONFIG_A=m needs \"# modules: ...\""),
            ("CONFIG_A=m # modules:", "lists no modules"),
            ("CONFIG_A=m # modules: dm-mod", "\"dm-mod\" is not a module name"),
            ("CONFIG_A=y # modules: a", "only goes with =m"),
            ("CONFIG_A=y # needed for x", "comment after a setting must be"),
            ("CONFIG_A=n", "expected CONFIG_A=y or =m, found =n"),
            ("CONFIG_A=y|CONFIG_B=m", "alternatives must all be =y, found CONFIG_B=m"),
            ("CONFIG_A=y|", "expected CONFIG_NAME=y or =m, found \"\""),
        ];
        for (text, needle) in cases {
            let e = parse_fragment(&format!("# x\n{text}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{text}");
            assert!(e.why.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn kconfig_values() {
        let text = "#\n# Automatically generated file\n#\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"str ing\"\nCONFIG_E=0x10\nCONFIG_F=n\nCONFIG_MTD_NETtel=m\n";
        let got = parse_kconfig(text).unwrap();
        let want: BTreeMap<String, Value> = [
            ("CONFIG_A", Value::Yes),
            ("CONFIG_B", Value::Module),
            ("CONFIG_C", Value::NotSet),
            ("CONFIG_D", Value::Other("\"str ing\"".into())),
            ("CONFIG_E", Value::Other("0x10".into())),
            ("CONFIG_F", Value::NotSet),
            ("CONFIG_MTD_NETtel", Value::Module),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(got, want);
        let e = parse_kconfig("CONFIG_A=y\nnonsense\n").unwrap_err();
        assert_eq!(
            e,
            KconfigError {
                line: 2,
                why: "expected CONFIG_NAME=value, found \"nonsense\"".into()
            }
        );
    }

    #[test]
    fn check_table() {
        let kconfig = parse_kconfig("CONFIG_Y=y\nCONFIG_M=m\n# CONFIG_N is not set\nCONFIG_S=\"x\"\n").unwrap();
        let req_y = |o: &str| Requirement::BuiltIn { options: s(&[o]) };
        let req_m = |o: &str| Requirement::BuiltInOrModule {
            option: o.into(),
            modules: s(&["mod_a", "mod_b"]),
        };
        let missing = |pairs: &[(&str, Found)]| Status::Missing {
            found: pairs.iter().map(|(o, f)| (o.to_string(), f.clone())).collect(),
        };
        let cases: Vec<(Requirement, Status, &str)> = vec![
            (
                req_y("CONFIG_Y"),
                Status::BuiltIn {
                    option: "CONFIG_Y".into(),
                },
                "built-in",
            ),
            (
                req_y("CONFIG_M"),
                missing(&[("CONFIG_M", Found::Value(Value::Module))]),
                "MISSING (=m, must be built in)",
            ),
            (
                req_y("CONFIG_N"),
                missing(&[("CONFIG_N", Found::Value(Value::NotSet))]),
                "MISSING (not set)",
            ),
            (
                req_y("CONFIG_GONE"),
                missing(&[("CONFIG_GONE", Found::Absent)]),
                "MISSING (absent)",
            ),
            (
                req_y("CONFIG_S"),
                missing(&[("CONFIG_S", Found::Value(Value::Other("\"x\"".into())))]),
                "MISSING (=\"x\")",
            ),
            (
                req_m("CONFIG_Y"),
                Status::BuiltIn {
                    option: "CONFIG_Y".into(),
                },
                "built-in",
            ),
            (
                req_m("CONFIG_M"),
                Status::Module {
                    option: "CONFIG_M".into(),
                    modules: s(&["mod_a", "mod_b"]),
                },
                "module (mod_a.ko mod_b.ko)",
            ),
            (
                req_m("CONFIG_N"),
                missing(&[("CONFIG_N", Found::Value(Value::NotSet))]),
                "MISSING (not set)",
            ),
            (
                Requirement::BuiltIn {
                    options: s(&["CONFIG_N", "CONFIG_Y"]),
                },
                Status::BuiltIn {
                    option: "CONFIG_Y".into(),
                },
                "built-in (CONFIG_Y)",
            ),
            (
                Requirement::BuiltIn {
                    options: s(&["CONFIG_N", "CONFIG_M"]),
                },
                missing(&[
                    ("CONFIG_N", Found::Value(Value::NotSet)),
                    ("CONFIG_M", Found::Value(Value::Module)),
                ]),
                "MISSING (CONFIG_N not set; CONFIG_M =m, must be built in)",
            ),
        ];
        for (requirement, status, text) in cases {
            let fragment = [FragmentLine {
                line: 1,
                requirement: requirement.clone(),
            }];
            let got = check(&fragment, &kconfig);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].status, status, "{requirement:?}");
            let line = got[0].to_string();
            assert!(line.ends_with(text), "{line:?} should end with {text:?}");
            assert!(line.starts_with(&requirement.describe()), "{line}");
        }
    }

    #[test]
    fn wanted_modules_in_fragment_order() {
        let fragment = parse_fragment(
            "CONFIG_V=m # modules: virtio virtio_ring\nCONFIG_B=m # modules: loop\nCONFIG_P=m # modules: virtio_pci virtio\n",
        )
        .unwrap();
        let kconfig = parse_kconfig("CONFIG_V=m\nCONFIG_B=y\nCONFIG_P=m\n").unwrap();
        let findings = check(&fragment, &kconfig);
        assert_eq!(wanted_modules(&findings), s(&["virtio", "virtio_ring", "virtio_pci"]));
    }
}
