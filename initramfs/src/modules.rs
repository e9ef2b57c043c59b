//! Chooses the kernel modules to pack and the order to load them in.
//!
//! The Debian kernel package has no `modules.dep`, so the dependency graph
//! comes from each `.ko`'s own `depends=`. Modules listed in
//! `modules.builtin` are part of the kernel image: nothing to load.

use crate::modinfo::{self, ModinfoError};
use basalt_common::manifest::valid_module_name;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why the order could not be worked out from the dependency map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    /// A wanted module that is neither available nor built in.
    Unknown { module: String },
    /// `module` depends on `dependency`, which is neither available nor built in.
    MissingDependency { module: String, dependency: String },
    /// The modules in `cycle` depend on each other, first and last equal.
    Cycle { cycle: Vec<String> },
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::Unknown { module } => {
                write!(f, "module {module} is neither a .ko in the modules dir nor built in")
            }
            OrderError::MissingDependency { module, dependency } => write!(
                f,
                "module {module} depends on {dependency}, which is neither a .ko in the modules dir nor built in"
            ),
            OrderError::Cycle { cycle } => {
                write!(f, "modules depend on each other in a cycle: {}", cycle.join(" -> "))
            }
        }
    }
}

impl std::error::Error for OrderError {}

/// Orders `wanted` and everything they depend on so that every module comes
/// after its dependencies.
///
/// `deps` maps each available module to its `depends=` list; modules in
/// `builtin` need no loading and are left out, as are their dependencies.
/// The order is the one a depth-first walk gives: wanted modules in the order
/// given, each preceded by its not-yet-placed dependencies, visited in name
/// order. Same inputs, same order.
pub fn load_order(
    wanted: &[String],
    deps: &BTreeMap<String, Vec<String>>,
    builtin: &BTreeSet<String>,
) -> Result<Vec<String>, OrderError> {
    struct Walk<'a> {
        deps: &'a BTreeMap<String, Vec<String>>,
        builtin: &'a BTreeSet<String>,
        placed: BTreeSet<&'a str>,
        order: Vec<String>,
        path: Vec<&'a str>,
    }

    impl<'a> Walk<'a> {
        fn visit(&mut self, module: &'a str) -> Result<(), OrderError> {
            if self.placed.contains(module) {
                return Ok(());
            }
            if let Some(at) = self.path.iter().position(|m| *m == module) {
                let mut cycle: Vec<String> = self.path[at..].iter().map(|m| m.to_string()).collect();
                cycle.push(module.to_string());
                return Err(OrderError::Cycle { cycle });
            }
            let Some(needs) = self.deps.get(module) else {
                // Callers check builtin and presence before visiting.
                return Ok(());
            };
            self.path.push(module);
            let mut needs: Vec<&'a str> = needs.iter().map(String::as_str).collect();
            needs.sort_unstable();
            needs.dedup();
            for dep in needs {
                if self.builtin.contains(dep) {
                    continue;
                }
                if !self.deps.contains_key(dep) {
                    return Err(OrderError::MissingDependency {
                        module: module.to_string(),
                        dependency: dep.to_string(),
                    });
                }
                self.visit(dep)?;
            }
            self.path.pop();
            self.placed.insert(module);
            self.order.push(module.to_string());
            Ok(())
        }
    }

    let mut walk = Walk {
        deps,
        builtin,
        placed: BTreeSet::new(),
        order: Vec::new(),
        path: Vec::new(),
    };
    for module in wanted {
        if builtin.contains(module) {
            continue;
        }
        if !deps.contains_key(module) {
            return Err(OrderError::Unknown { module: module.clone() });
        }
        walk.visit(module)?;
    }
    Ok(walk.order)
}

/// The kernel's name for a module file: the stem, with `-` as `_`.
/// `None` for files that are not `.ko`.
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".ko")?;
    if stem.is_empty() {
        return None;
    }
    Some(stem.replace('-', "_"))
}

/// Module names in a `modules.builtin` file (one `kernel/.../x.ko` per line).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| module_name(line.rsplit('/').next().unwrap_or(line)))
        .collect()
}

/// Why the modules dir could not be used.
#[derive(Debug)]
pub enum ModulesError {
    ReadDir {
        path: PathBuf,
        source: io::Error,
    },
    ReadBuiltin {
        path: PathBuf,
        source: io::Error,
    },
    /// Two `.ko` files with the same module name.
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    ReadModule {
        path: PathBuf,
        source: io::Error,
    },
    Modinfo {
        path: PathBuf,
        source: ModinfoError,
    },
    /// `.modinfo` says `name=` something other than the file name.
    NameMismatch {
        path: PathBuf,
        expected: String,
        found: Option<String>,
    },
    /// The module was built for another kernel release.
    Vermagic {
        path: PathBuf,
        release: String,
        found: Option<String>,
    },
    /// A `depends=` entry that is not a module name.
    BadDependency {
        path: PathBuf,
        dependency: String,
    },
    Order {
        modules_dir: PathBuf,
        source: OrderError,
    },
}

impl fmt::Display for ModulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModulesError::ReadDir { path, source } => {
                write!(f, "listing kernel modules: {}: {source}", path.display())
            }
            ModulesError::ReadBuiltin { path, source } => {
                write!(f, "reading the built-in module list: {}: {source}", path.display())
            }
            ModulesError::Duplicate { name, first, second } => write!(
                f,
                "indexing kernel modules: {}: module {name} is also {}",
                second.display(),
                first.display()
            ),
            ModulesError::ReadModule { path, source } => {
                write!(f, "reading kernel module: {}: {source}", path.display())
            }
            ModulesError::Modinfo { path, source } => {
                write!(f, "reading .modinfo: {}: {source}", path.display())
            }
            ModulesError::NameMismatch { path, expected, found } => write!(
                f,
                "checking module name: {}: .modinfo says name={}, the file name says {expected}",
                path.display(),
                found.as_deref().unwrap_or("(none)")
            ),
            ModulesError::Vermagic { path, release, found } => write!(
                f,
                "checking module vermagic: {}: built for {:?}, not kernel {release}",
                path.display(),
                found.as_deref().unwrap_or("(no vermagic)")
            ),
            ModulesError::BadDependency { path, dependency } => write!(
                f,
                "reading .modinfo: {}: depends= lists {dependency:?}, not a module name",
                path.display()
            ),
            ModulesError::Order { modules_dir, source } => {
                write!(f, "ordering modules: {}: {source}", modules_dir.display())
            }
        }
    }
}

impl std::error::Error for ModulesError {}

/// The modules of one kernel: `.ko` files under `kernel/`, by name, and
/// the names of those built in.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// One module to pack, with the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
}

impl ModuleIndex {
    /// Walks `<dir>/kernel/**/*.ko` and reads `<dir>/modules.builtin`
    /// (a missing `modules.builtin` means nothing is built in).
    pub fn scan(dir: &Path) -> Result<Self, ModulesError> {
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(current) = stack.pop() {
            let read_dir = |source| ModulesError::ReadDir {
                path: current.clone(),
                source,
            };
            let mut children: Vec<_> = std::fs::read_dir(&current)
                .map_err(read_dir)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_dir)?;
            children.sort_by_key(|e| e.file_name());
            for child in children {
                let path = child.path();
                let kind = child.file_type().map_err(|source| ModulesError::ReadDir {
                    path: path.clone(),
                    source,
                })?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Some(name) = child.file_name().to_str().and_then(module_name) else {
                    continue;
                };
                if let Some(first) = files.get(&name) {
                    return Err(ModulesError::Duplicate {
                        name,
                        first: first.clone(),
                        second: path,
                    });
                }
                files.insert(name, path);
            }
        }
        let builtin_path = dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => parse_builtin(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(ModulesError::ReadBuiltin {
                    path: builtin_path,
                    source,
                })
            }
        };
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            files,
            builtin,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    /// The modules to pack for `wanted`, dependencies included, in load
    /// order. Each module's `.modinfo` must name it and carry a vermagic for
    /// `release`.
    pub fn resolve(&self, wanted: &[String], release: &str) -> Result<Vec<ModuleFile>, ModulesError> {
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue: Vec<String> = wanted.to_vec();
        while let Some(name) = queue.pop() {
            if deps.contains_key(&name) || self.builtin.contains(&name) {
                continue;
            }
            // Absent modules are left out of the map: load_order names them.
            let Some(path) = self.files.get(&name) else {
                continue;
            };
            let needs = read_depends(path, &name, release)?;
            queue.extend(needs.iter().cloned());
            deps.insert(name, needs);
        }
        let order = load_order(wanted, &deps, &self.builtin).map_err(|source| ModulesError::Order {
            modules_dir: self.dir.clone(),
            source,
        })?;
        Ok(order
            .into_iter()
            .map(|name| {
                let path = self.files[&name].clone();
                ModuleFile { name, path }
            })
            .collect())
    }
}

/// Reads a module's `depends=`, checking its name and vermagic on the way.
fn read_depends(path: &Path, name: &str, release: &str) -> Result<Vec<String>, ModulesError> {
    let bytes = std::fs::read(path).map_err(|source| ModulesError::ReadModule {
        path: path.to_path_buf(),
        source,
    })?;
    let info = modinfo::parse_modinfo(&bytes).map_err(|source| ModulesError::Modinfo {
        path: path.to_path_buf(),
        source,
    })?;
    if info.name() != Some(name) {
        return Err(ModulesError::NameMismatch {
            path: path.to_path_buf(),
            expected: name.to_string(),
            found: info.name().map(str::to_string),
        });
    }
    // vermagic is "<release> SMP preempt ...": the release is the first word.
    let vermagic_release = info.vermagic().and_then(|v| v.split_whitespace().next());
    if vermagic_release != Some(release) {
        return Err(ModulesError::Vermagic {
            path: path.to_path_buf(),
            release: release.to_string(),
            found: info.vermagic().map(str::to_string),
        });
    }
    // `depends=` names some modules by their file name (dm-verity.ko says
    // `depends=reed_solomon,dm-mod,dm-bufio`); the kernel treats - and _ alike.
    let mut needs = Vec::new();
    for dep in info.depends() {
        let normal = dep.replace('-', "_");
        if !valid_module_name(&normal) {
            return Err(ModulesError::BadDependency {
                path: path.to_path_buf(),
                dependency: dep.to_string(),
            });
        }
        needs.push(normal);
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modinfo::synthetic;

    fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What the Debian 6.1 kernel's modules say (their `depends=` lines).
    fn debian_virtio() -> BTreeMap<String, Vec<String>> {
        map(&[
            ("virtio_ring", &[]),
            ("virtio", &["virtio_ring"]),
            ("virtio_pci_modern_dev", &[]),
            ("virtio_pci_legacy_dev", &[]),
            (
                "virtio_pci",
                &[
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                    "virtio",
                ],
            ),
            ("virtio_console", &["virtio", "virtio_ring"]),
            ("vsock", &[]),
            ("vmw_vsock_virtio_transport_common", &["vsock"]),
            (
                "vmw_vsock_virtio_transport",
                &["virtio", "vmw_vsock_virtio_transport_common", "virtio_ring", "vsock"],
            ),
            ("squashfs", &[]),
            ("loop", &[]),
        ])
    }

    #[test]
    fn order_table() {
        type Case<'a> = (
            &'a str,
            BTreeMap<String, Vec<String>>,
            &'a [&'a str],
            &'a [&'a str],
            Result<Vec<&'a str>, OrderError>,
        );
        let cases: Vec<Case> = vec![
            (
                "chain",
                map(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]),
                &["a"],
                &[],
                Ok(vec!["c", "b", "a"]),
            ),
            (
                "diamond",
                map(&[
                    ("top", &["right", "left"]),
                    ("left", &["base"]),
                    ("right", &["base"]),
                    ("base", &[]),
                ]),
                &["top"],
                &[],
                Ok(vec!["base", "left", "right", "top"]),
            ),
            (
                "wanted order kept, shared deps placed once",
                map(&[("x", &["z"]), ("y", &["z"]), ("z", &[]), ("w", &[])]),
                &["y", "w", "x"],
                &[],
                Ok(vec!["z", "y", "w", "x"]),
            ),
            ("wanted twice", map(&[("a", &[])]), &["a", "a"], &[], Ok(vec!["a"])),
            (
                "already built in",
                map(&[("a", &[])]),
                &["squashfs", "a"],
                &["squashfs"],
                Ok(vec!["a"]),
            ),
            (
                "built-in dependency skipped",
                map(&[("a", &["crc32c", "b"]), ("b", &[])]),
                &["a"],
                &["crc32c"],
                Ok(vec!["b", "a"]),
            ),
            (
                "debian virtio",
                debian_virtio(),
                &[
                    "squashfs",
                    "loop",
                    "virtio",
                    "virtio_ring",
                    "virtio_pci",
                    "virtio_console",
                    "vsock",
                    "vmw_vsock_virtio_transport",
                ],
                &[],
                Ok(vec![
                    "squashfs",
                    "loop",
                    "virtio_ring",
                    "virtio",
                    "virtio_pci_legacy_dev",
                    "virtio_pci_modern_dev",
                    "virtio_pci",
                    "virtio_console",
                    "vsock",
                    "vmw_vsock_virtio_transport_common",
                    "vmw_vsock_virtio_transport",
                ]),
            ),
            (
                "unknown",
                map(&[("a", &[])]),
                &["a", "nope"],
                &[],
                Err(OrderError::Unknown { module: "nope".into() }),
            ),
            (
                "missing dependency",
                map(&[("a", &["b"]), ("b", &["gone"])]),
                &["a"],
                &[],
                Err(OrderError::MissingDependency {
                    module: "b".into(),
                    dependency: "gone".into(),
                }),
            ),
            (
                "cycle",
                map(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]),
                &["a"],
                &[],
                Err(OrderError::Cycle {
                    cycle: names(&["a", "b", "c", "a"]),
                }),
            ),
            (
                "cycle below the wanted module",
                map(&[("top", &["a"]), ("a", &["b"]), ("b", &["a"])]),
                &["top"],
                &[],
                Err(OrderError::Cycle {
                    cycle: names(&["a", "b", "a"]),
                }),
            ),
            (
                "self cycle",
                map(&[("a", &["a"])]),
                &["a"],
                &[],
                Err(OrderError::Cycle {
                    cycle: names(&["a", "a"]),
                }),
            ),
        ];
        for (label, deps, wanted, builtin, want) in cases {
            let builtin: BTreeSet<String> = builtin.iter().map(|s| s.to_string()).collect();
            let got = load_order(&names(wanted), &deps, &builtin);
            let want = want.map(|v| names(&v));
            assert_eq!(got, want, "{label}");
            if let Ok(order) = got {
                assert_each_after_its_dependencies(&order, &deps);
            }
        }
    }

    fn assert_each_after_its_dependencies(order: &[String], deps: &BTreeMap<String, Vec<String>>) {
        for (i, m) in order.iter().enumerate() {
            for d in &deps[m] {
                if let Some(j) = order.iter().position(|x| x == d) {
                    assert!(j < i, "{d} must come before {m} in {order:?}");
                }
            }
        }
    }

    #[test]
    fn names_table() {
        let cases = [
            ("virtio.ko", Some("virtio")),
            ("dm-mod.ko", Some("dm_mod")),
            ("virtio-gpu.ko", Some("virtio_gpu")),
            ("virtio.ko.xz", None),
            (".ko", None),
            ("README", None),
        ];
        for (file, want) in cases {
            assert_eq!(module_name(file).as_deref(), want, "{file}");
        }
        let builtin = parse_builtin("kernel/lib/zstd/zstd_decompress.ko\nkernel/drivers/md/dm-init.ko\n\n");
        assert_eq!(
            builtin,
            ["dm_init", "zstd_decompress"].iter().map(|s| s.to_string()).collect()
        );
    }

    /// A throwaway modules dir holding synthetic `.ko` files.
    struct FakeModulesDir(PathBuf);

    impl FakeModulesDir {
        fn new(label: &str, modules: &[(&str, &str)], builtin: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("basalt-modules-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (rel, modinfo) in modules {
                let path = dir.join("kernel").join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, synthetic::module(modinfo.as_bytes())).unwrap();
            }
            std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
            FakeModulesDir(dir)
        }
    }

    impl Drop for FakeModulesDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const VM: &str = "vermagic=6.1.0-test SMP mod_unload\0";

    #[test]
    fn resolves_a_modules_dir() {
        let fake = FakeModulesDir::new(
            "ok",
            &[
                (
                    "drivers/virtio/virtio.ko",
                    &format!("name=virtio\0depends=virtio_ring\0{VM}"),
                ),
                (
                    "drivers/virtio/virtio_ring.ko",
                    &format!("name=virtio_ring\0depends=\0{VM}"),
                ),
                (
                    "drivers/md/dm-mod.ko",
                    &format!("name=dm_mod\0depends=crc_t10dif\0{VM}"),
                ),
                (
                    "drivers/md/dm-bufio.ko",
                    &format!("name=dm_bufio\0depends=dm-mod\0{VM}"),
                ),
                (
                    "drivers/md/dm-verity.ko",
                    &format!("name=dm_verity\0depends=dm-bufio,dm-mod\0{VM}"),
                ),
                ("unrelated/readme.txt", "x"),
            ],
            "kernel/lib/crc-t10dif.ko\n",
        );
        let index = ModuleIndex::scan(&fake.0).unwrap();
        assert!(index.is_builtin("crc_t10dif"));
        assert!(index.path("dm_mod").unwrap().ends_with("drivers/md/dm-mod.ko"));
        let got = index
            .resolve(&names(&["dm_mod", "virtio", "crc_t10dif"]), "6.1.0-test")
            .unwrap();
        let got: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(got, ["dm_mod", "virtio_ring", "virtio"]);
        // A dependency named with a dash, as dm-bufio.ko names dm-mod.
        let got = index.resolve(&names(&["dm_bufio"]), "6.1.0-test").unwrap();
        let got: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(got, ["dm_mod", "dm_bufio"]);
        let got = index.resolve(&names(&["dm_verity"]), "6.1.0-test").unwrap();
        let got: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            got,
            ["dm_mod", "dm_bufio", "dm_verity"],
            "dashed depends= read as names"
        );

        let err = index.resolve(&names(&["virtio"]), "6.2.0").unwrap_err().to_string();
        assert!(err.starts_with("checking module vermagic: "), "{err}");
        assert!(err.contains("virtio"), "{err}");
        let err = index.resolve(&names(&["nope"]), "6.1.0-test").unwrap_err().to_string();
        assert!(err.contains("module nope is neither a .ko"), "{err}");
    }

    #[test]
    fn refuses_bad_modules() {
        let cases: &[(&str, &str, &str)] = &[
            ("name", "name=other\0depends=\0", "checking module name"),
            ("dep", "name=a\0depends=../x\0", "depends= lists \"../x\""),
            (
                "missing",
                "name=a\0depends=b\0",
                "module a depends on b, which is neither",
            ),
            ("vermagic", "name=a\0depends=\0", "built for \"(no vermagic)\""),
        ];
        for (label, modinfo, needle) in cases {
            let vermagic = if *label == "vermagic" { "" } else { VM };
            let fake = FakeModulesDir::new(label, &[("a.ko", &format!("{modinfo}{vermagic}"))], "");
            let index = ModuleIndex::scan(&fake.0).unwrap();
            let err = index.resolve(&names(&["a"]), "6.1.0-test").unwrap_err().to_string();
            assert!(err.contains(needle), "{label}: {err}");
        }
        let fake = FakeModulesDir::new("dup", &[("x/a.ko", "name=a\0"), ("y/a.ko", "name=a\0")], "");
        let err = ModuleIndex::scan(&fake.0).unwrap_err().to_string();
        assert!(err.contains("module a is also"), "{err}");
    }
}
