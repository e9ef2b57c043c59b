//! The kernel command line: the shared tokenizer (common/src/cmdline.rs),
//! basalt-init's keys (init/src/boot_params.rs) and the agent's keys
//! (agent/src/settings.rs, agent/src/identity.rs).
//!
//! Checked:
//! - tokens never hold a `"`, keys never hold `=`, a lone `--` ends the
//!   line, and writing the tokens back out tokenizes to the same tokens;
//! - what basalt-init accepts obeys its rules (tmpfs sizes that cannot smuggle
//!   mount options, clean absolute paths, bounded delays), writes back to the
//!   same parameters, and agrees with `on_error_policy`;
//! - the agent's parameters are usable whatever the line says: an absolute
//!   serial path, a real vsock port, the last `basalt.node=`, and a node
//!   identity only when the id is valid.
#![no_main]

use basalt_common::cmdline::{self, Param};
use basalt_common::config::check_node_id;
use basalt_common::manifest::valid_absolute_path;
use basalt_fuzz::agent_identity::{self as identity, NodeIdentity};
use basalt_fuzz::agent_settings as settings;
use basalt_fuzz::{render_cmdline, render_init_params};
use basalt_init::boot_params;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let params = check_tokens(&line);
    check_init(&line, &params);
    check_agent(&line, &params);
});

fn check_tokens(line: &str) -> Vec<Param> {
    let params = cmdline::tokenize(line);
    for p in &params {
        assert!(!p.key.contains('"') && !p.key.contains('='), "{p:?}");
        assert!(!p.value.as_deref().unwrap_or("").contains('"'), "{p:?}");
        assert!(!(p.key == "--" && p.value.is_none()), "{p:?}");
    }
    let written = render_cmdline(&params);
    assert_eq!(cmdline::tokenize(&written), params, "written as {written:?}");
    params
}

fn check_init(line: &str, params: &[Param]) {
    for p in params {
        if let Some(v) = &p.value {
            check_tmpfs_size(v);
        }
    }
    check_tmpfs_size(line);
    let policy = boot_params::on_error_policy(line);
    let p = match boot_params::parse(line) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.key.starts_with("basalt."), "{e}");
            assert!(params.iter().any(|p| p.key == e.key), "{e}");
            return;
        }
    };
    assert_eq!(p.on_error, policy);
    for size in [&p.run_size, &p.tmp_size, &p.var_size] {
        assert!(boot_params::valid_tmpfs_size(size), "{size:?}");
    }
    if let Some(agent) = &p.agent {
        assert!(valid_absolute_path(agent), "{agent:?}");
    }
    if let boot_params::ImageSource::Device(dev) = &p.image {
        assert!(dev.starts_with("/dev/") && valid_absolute_path(dev), "{dev:?}");
    }
    let limit = Duration::from_secs(600);
    assert!(p.image_wait <= limit && p.error_delay <= limit && p.shutdown_timeout <= limit);
    let written = render_init_params(&p);
    assert_eq!(boot_params::parse(&written).as_ref(), Ok(&p), "written as {written:?}");
}

/// A size basalt-init accepts goes into a mount option string as `size=V`:
/// it must not be able to add options of its own.
fn check_tmpfs_size(v: &str) {
    if boot_params::valid_tmpfs_size(v) {
        assert!(!v.is_empty());
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%'), "{v:?}");
    }
}

fn check_agent(line: &str, params: &[Param]) {
    let (boot, warnings) = settings::boot_params(line);
    assert!(warnings.len() <= 3, "{warnings:?}");
    if let Some(serial) = &boot.serial {
        assert!(serial.is_absolute(), "{serial:?}");
        assert!(!serial.as_os_str().as_encoded_bytes().contains(&0));
    }
    assert_ne!(boot.vsock_port, Some(u32::MAX));
    let node = cmdline::last(params, "basalt.node").map(|p| p.value.clone().unwrap_or_default());
    assert_eq!(boot.node, node);

    for smbios in [Ok(line.to_string()), Err("absent".to_string())] {
        match identity::resolve(boot.node.as_deref(), smbios) {
            NodeIdentity::Known { id, .. } => assert_eq!(check_node_id(&id), Ok(()), "{id:?}"),
            NodeIdentity::Unknown { reason } => assert!(!reason.is_empty()),
        }
    }
}
