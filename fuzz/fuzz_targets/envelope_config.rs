//! Signed envelopes (common/src/envelope.rs) and what they carry: configs
//! (common/src/config.rs) and commands (common/src/command.rs).
//!
//! The first byte picks the mode:
//! - 0: the rest is an envelope file. Whatever parses writes back to the
//!   same envelope; verification against the fixed trusted key agrees with
//!   the key id and with a direct signature check; a verified payload goes
//!   on as in mode 2.
//! - 1: the rest is a payload, signed with the fixed key, written out as an
//!   envelope, read back and verified (that must succeed, and a flipped
//!   signature bit must not), then checked as in mode 2. This is how the
//!   fuzzer reaches the code behind the signature check.
//! - 2 and up: the rest is a payload, checked directly. A config that parses
//!   obeys every rule a validated Config promises, writes back to the same
//!   Config, and check_applicable/validate agree with its node and
//!   generation. A command that parses writes back to the same command.
#![no_main]

use basalt_common::command::{Command, CommandError, CommandKind};
use basalt_common::config::{self, ApplyContext, Config, ConfigError};
use basalt_common::envelope::{payload_kind, SignedEnvelope, VerifyError, KEY_ID_LEN};
use basalt_common::json;
use basalt_fuzz::{config_to_json, other_key, signing_key, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let rest = input.rest();
    match mode {
        0 => check_envelope_file(rest),
        1 => check_signed_payload(rest),
        _ => check_payload(rest),
    }
});

fn check_envelope_file(bytes: &[u8]) {
    let Ok(env) = SignedEnvelope::parse(bytes) else {
        return;
    };
    assert_eq!(env.key_id.len(), KEY_ID_LEN);
    assert!(env.key_id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    let text = serde_json::to_vec(&env.to_json()).expect("a Value always serialises");
    assert_eq!(SignedEnvelope::parse(&text).as_ref(), Ok(&env));
    assert_eq!(env.digest().len(), 64);

    let trusted = [signing_key().public_key()];
    assert_eq!(
        env.verify(&[]),
        Err(VerifyError::UnknownKey {
            key_id: env.key_id.clone()
        })
    );
    match env.verify(&trusted) {
        Ok(key) => {
            assert_eq!(key, &trusted[0]);
            assert!(trusted[0].verify(&env.payload, &env.signature).is_ok());
            check_payload(&env.payload);
        }
        Err(VerifyError::UnknownKey { key_id }) => {
            assert_eq!(key_id, env.key_id);
            assert_ne!(key_id, trusted[0].key_id());
        }
        Err(VerifyError::BadSignature { key_id }) => {
            assert_eq!(key_id, trusted[0].key_id());
            assert!(trusted[0].verify(&env.payload, &env.signature).is_err());
        }
    }
}

fn check_signed_payload(payload: &[u8]) {
    let signer = signing_key();
    let env = SignedEnvelope::sign(&signer, payload.to_vec());
    let text = serde_json::to_vec(&env.to_json()).expect("a Value always serialises");
    let back = SignedEnvelope::parse(&text).expect("a signed envelope reads back");
    assert_eq!(back, env);
    let trusted = [other_key().public_key(), signer.public_key()];
    assert_eq!(back.verify(&trusted), Ok(&trusted[1]));
    let mut flipped = back.clone();
    flipped.signature[usize::from(payload.first().copied().unwrap_or(0) % 64)] ^= 1;
    assert!(matches!(
        flipped.verify(&trusted),
        Err(VerifyError::BadSignature { .. })
    ));
    check_payload(&back.payload);
}

fn check_payload(payload: &[u8]) {
    match config::parse_config(payload) {
        Ok(c) => check_config(payload, &c),
        Err(ConfigError::WrongKind { found }) => {
            assert_ne!(found, config::KIND);
            let doc = json::parse_strict(payload).expect("the kind was read, so the JSON parsed");
            assert_eq!(payload_kind(&doc), Ok(found.as_str()));
        }
        Err(ConfigError::Invalid(e)) => assert!(e.path.starts_with('$'), "{e}"),
        Err(e @ (ConfigError::WrongNode { .. } | ConfigError::StaleGeneration { .. })) => {
            panic!("parse_config made a node-dependent decision: {e}")
        }
    }
    let kinds = [
        CommandKind::Reboot,
        CommandKind::Poweroff,
        CommandKind::Confirm,
        CommandKind::ResetVar,
    ];
    for kind in kinds {
        if let Ok(cmd) = Command::parse(payload, kind) {
            assert_eq!(cmd.kind, kind);
            assert_eq!(Command::parse(&cmd.to_payload(), kind).as_ref(), Ok(&cmd));
            for other in kinds.into_iter().filter(|&k| k != kind) {
                assert!(matches!(
                    Command::parse(payload, other),
                    Err(CommandError::WrongKind { .. })
                ));
            }
            assert!(config::parse_config(payload).is_err());
        }
    }
}

/// Everything a validated Config promises, then the write-back and the
/// node checks.
fn check_config(payload: &[u8], c: &Config) {
    assert!(c.generation >= 1);
    assert_eq!(config::check_node_id(&c.node), Ok(()));
    assert_eq!(config::check_hostname(&c.hostname), Ok(()));
    assert!(c.files.len() <= config::MAX_FILES);
    assert!(c.services.len() <= config::MAX_SERVICES);
    for (i, f) in c.files.iter().enumerate() {
        assert_eq!(config::check_file_path(&f.path), Ok(()), "{}", f.path);
        assert!(f.mode <= 0o777, "mode {:o}", f.mode);
        for g in &c.files[..i] {
            assert_ne!(f.path, g.path);
            assert!(
                !f.path.starts_with(&format!("{}/", g.path)),
                "{} under {}",
                f.path,
                g.path
            );
            assert!(
                !g.path.starts_with(&format!("{}/", f.path)),
                "{} under {}",
                g.path,
                f.path
            );
        }
    }
    for (i, s) in c.services.iter().enumerate() {
        assert_eq!(config::check_service_name(&s.name), Ok(()));
        assert!(c.services[..i].iter().all(|t| t.name != s.name), "{} twice", s.name);
        assert!(!s.exec.is_empty() && s.exec.len() <= config::MAX_ARGS);
        assert!(s.exec[0].starts_with('/'));
        assert!(s.env.len() <= config::MAX_ENV);
        let texts = s.exec.iter().chain(s.env.keys()).chain(s.env.values());
        for t in texts {
            assert!(!t.contains('\0') && t.len() <= config::MAX_ARG_BYTES);
        }
        // Start order: everything a service waits for is started before it.
        for dep in &s.after {
            assert!(
                c.services[..i].iter().any(|t| &t.name == dep),
                "{} before {dep}",
                s.name
            );
        }
        let b = s.restart.backoff;
        assert!(1 <= b.initial_ms && b.initial_ms <= b.max_ms && b.max_ms <= config::MAX_BACKOFF_MS);
        assert!(b.stable_after_ms <= config::MAX_BACKOFF_MS);
        assert!((1..=config::MAX_STOP_TIMEOUT_MS).contains(&s.stop_timeout_ms));
        assert_eq!(c.service(&s.name), Some(s));
    }

    let written = serde_json::to_vec(&config_to_json(c)).expect("a Value always serialises");
    assert_eq!(config::parse_config(&written).as_ref(), Ok(c));

    let g = c.generation;
    let here = |applied| ApplyContext {
        node: &c.node,
        applied_generation: applied,
    };
    for applied in [None, Some(0), Some(g - 1)] {
        assert_eq!(c.check_applicable(&here(applied)), Ok(()));
        assert_eq!(config::validate(payload, &here(applied)).as_ref(), Ok(c));
    }
    for applied in [g, g.saturating_add(1), u64::MAX] {
        assert_eq!(
            c.check_applicable(&here(Some(applied))),
            Err(ConfigError::StaleGeneration { offered: g, applied })
        );
        assert!(config::validate(payload, &here(Some(applied))).is_err());
    }
    let elsewhere = format!("{}x", c.node);
    let ctx = ApplyContext {
        node: &elsewhere,
        applied_generation: None,
    };
    assert_eq!(
        c.check_applicable(&ctx),
        Err(ConfigError::WrongNode {
            config: c.node.clone(),
            node: elsewhere.clone()
        })
    );
}
