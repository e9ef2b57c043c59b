//! What basalt-mkimage reads from a kernel package (initramfs/src): the
//! `.modinfo` section of a `.ko` (modinfo.rs), the module load order built
//! from `depends=` (modules.rs), and the kernel `.config` with basalt's
//! fragment (kconfig.rs).
//!
//! The first byte picks the mode:
//! - 0: the rest is an ELF file for `parse_modinfo`; entries that parse are
//!   well-formed and survive being written into a fresh module and read again;
//! - 1: the rest is a `.modinfo` body: packed into a synthetic module,
//!   `parse_modinfo` must agree exactly with `split_entries` on the body;
//! - 2: the rest describes a dependency graph of up to 16 modules; a load
//!   order puts every module after its dependencies, each once, and every
//!   error is true of the graph;
//! - 3 and up: the rest is a fragment and a `.config`, split at the first NUL:
//!   the `.config` writes back to the same options, and the check asks only
//!   for valid module names.
#![no_main]

use basalt_common::manifest::valid_module_name;
use basalt_fuzz::Input;
use basalt_mkimage::kconfig::{self, Value};
use basalt_mkimage::modinfo::{parse_modinfo, split_entries, synthetic, ModinfoError};
use basalt_mkimage::modules::{load_order, module_name, parse_builtin, OrderError};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() {
        0 => check_elf(input.rest()),
        1 => check_section(input.rest()),
        2 => check_order(input),
        _ => check_kconfig(&String::from_utf8_lossy(input.rest())),
    }
});

fn check_entries(entries: &[(String, String)]) {
    for (key, value) in entries {
        assert!(!key.is_empty(), "empty key");
        assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
            "{key:?}"
        );
        assert!(!value.contains('\0'), "{value:?}");
    }
}

fn join(entries: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in entries {
        body.extend_from_slice(format!("{key}={value}\0").as_bytes());
    }
    body
}

fn check_elf(elf: &[u8]) {
    let Ok(info) = parse_modinfo(elf) else {
        return;
    };
    check_entries(info.entries());
    for dep in info.depends() {
        assert!(!dep.is_empty() && !dep.contains(','), "{dep:?}");
    }
    let body = join(info.entries());
    assert_eq!(split_entries(&body).as_deref(), Ok(info.entries()));
    let again = parse_modinfo(&synthetic::module(&body)).expect("a synthetic module parses");
    assert_eq!(again, info);
}

fn check_section(body: &[u8]) {
    let direct = split_entries(body);
    let packed = parse_modinfo(&synthetic::module(body)).map(|info| info.entries().to_vec());
    assert_eq!(packed, direct);
    match direct {
        Ok(entries) => check_entries(&entries),
        Err(ModinfoError::BadEntry { offset, .. }) => assert!(offset < body.len()),
        Err(e) => panic!("split_entries failed with a file-level error: {e}"),
    }
}

/// Modules m0..m15. Per module: a flags byte (bit 0 available as a .ko,
/// bit 1 built in, bit 2 wanted) and a u16 of which modules it depends on.
fn check_order(mut input: Input) {
    let count = usize::from(input.byte() % 17);
    let name = |i: usize| format!("m{i}");
    let mut deps = BTreeMap::new();
    let mut builtin = BTreeSet::new();
    let mut wanted = Vec::new();
    for i in 0..count {
        let flags = input.byte();
        let edges = input.u16();
        let needs: Vec<String> = (0..16).filter(|j| edges & (1 << j) != 0).map(name).collect();
        if flags & 1 != 0 {
            deps.insert(name(i), needs);
        }
        if flags & 2 != 0 {
            builtin.insert(name(i));
        }
        if flags & 4 != 0 {
            wanted.push(name(i));
        }
    }
    match load_order(&wanted, &deps, &builtin) {
        Ok(order) => {
            for (at, m) in order.iter().enumerate() {
                assert!(!builtin.contains(m), "{m} is built in");
                assert!(!order[..at].contains(m), "{m} twice");
                let needs = deps.get(m).unwrap_or_else(|| panic!("{m} is not available"));
                for dep in needs.iter().filter(|d| !builtin.contains(*d)) {
                    assert!(order[..at].contains(dep), "{m} before its dependency {dep}");
                }
            }
            for w in wanted.iter().filter(|w| !builtin.contains(*w)) {
                assert!(order.contains(w), "{w} left out");
            }
        }
        Err(OrderError::Unknown { module }) => {
            assert!(wanted.contains(&module) && !deps.contains_key(&module) && !builtin.contains(&module));
        }
        Err(OrderError::MissingDependency { module, dependency }) => {
            assert!(deps[&module].contains(&dependency));
            assert!(!deps.contains_key(&dependency) && !builtin.contains(&dependency));
        }
        Err(OrderError::Cycle { cycle }) => {
            assert!(cycle.len() >= 2 && cycle.first() == cycle.last(), "{cycle:?}");
            for pair in cycle.windows(2) {
                assert!(deps[&pair[0]].contains(&pair[1]), "{cycle:?}");
            }
        }
    }
}

fn check_kconfig(text: &str) {
    let (fragment_text, config_text) = text.split_once('\0').unwrap_or((text, ""));
    for line in config_text.lines() {
        if let Some(name) = module_name(line) {
            assert!(!name.contains('-'), "{name:?}");
        }
    }
    for name in parse_builtin(config_text) {
        assert!(
            !name.is_empty() && !name.contains('-') && !name.contains('/'),
            "{name:?}"
        );
    }
    let options = kconfig::parse_kconfig(config_text);
    if let Ok(options) = &options {
        let mut written = String::new();
        for (name, value) in options {
            match value {
                Value::Yes => written.push_str(&format!("{name}=y\n")),
                Value::Module => written.push_str(&format!("{name}=m\n")),
                Value::NotSet => written.push_str(&format!("# {name} is not set\n")),
                Value::Other(v) => written.push_str(&format!("{name}={v}\n")),
            }
        }
        assert_eq!(
            kconfig::parse_kconfig(&written).as_ref(),
            Ok(options),
            "written as {written:?}"
        );
    }
    let Ok(fragment) = kconfig::parse_fragment(fragment_text) else {
        return;
    };
    let options = options.unwrap_or_default();
    let findings = kconfig::check(&fragment, &options);
    assert_eq!(findings.len(), fragment.len());
    for f in &findings {
        let _ = f.to_string();
    }
    for m in kconfig::wanted_modules(&findings) {
        assert!(valid_module_name(&m), "{m:?}");
    }
}
