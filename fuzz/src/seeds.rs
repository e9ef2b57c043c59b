//! The committed seed corpora (fuzz/seeds/<target>/), built from the same
//! literals the unit tests use. `gen-seeds` writes them; the result is the
//! same on every run (Ed25519 signatures are deterministic).
//!
//! Each seed is laid out as its target reads input: a mode byte first where
//! the target has modes (see each target's header comment).

use crate::agent_net::dhcp::message::{self as dhcp_message, Message, MessageType, Op, Options};
use crate::agent_net::netlink::{self, AddressChange, Lifetime, RouteChange};
use crate::{config_to_json, network_to_json, signing_key};
use basalt_common::disk::{gpt, slot};
use basalt_common::envelope::SignedEnvelope;
use basalt_common::manifest::{build_manifest, ImageDigest, Manifest, ModuleEntry};
use basalt_common::proto::{self, ErrorCode};
use basalt_common::state_record::{self, StateRecord};
use basalt_common::{b64, hex, pem};
use basalt_mkimage::modinfo::synthetic;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};

/// One seed file: `fuzz/seeds/<target>/<name>`.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

pub const TARGETS: [&str; 14] = [
    "frames",
    "envelope_config",
    "cmdline",
    "manifest",
    "keys",
    "modinfo",
    "json_strict",
    "state_record",
    "disk",
    "verity_kernel",
    "bundle",
    "network_config",
    "dhcp",
    "netlink",
];

const NODE_EXAMPLE: &[u8] = include_bytes!("../../docs/examples/node.json");
const FRAGMENT: &[u8] = include_bytes!("../../kernel-config/basalt.config");

/// Every seed, for every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, items: Vec<Vec<u8>>| {
        for (i, bytes) in items.into_iter().enumerate() {
            out.push(Seed {
                target,
                name: format!("seed-{i:03}"),
                bytes,
            });
        }
    };
    add("frames", frames());
    add("envelope_config", envelope_config());
    add("cmdline", cmdline());
    add("manifest", manifest());
    add("keys", keys());
    add("modinfo", modinfo());
    add("json_strict", json_strict());
    add("state_record", state_record());
    add("disk", disk());
    add("verity_kernel", verity_kernel());
    add("bundle", bundle());
    add("network_config", network_config());
    add("dhcp", dhcp());
    add("netlink", netlink());
    out
}

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(body);
    v
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a Value always serialises")
}

/// The base config of common/src/config/mod.rs's tests.
fn base_config() -> Value {
    json!({
        "kind": "config",
        "version": 1,
        "generation": 2,
        "node": "4c4c4544-0042-3510-8056-b4c04f4e4d32",
        "hostname": "node-1",
        "files": [
            {"path": "/var/lib/kubelet/kubeconfig", "mode": "0600", "contents": "apiVersion: v1\n"},
            {"path": "/run/kubelet/ca.crt", "contents_base64": "AAEC"}
        ],
        "services": [
            {"name": "kubelet", "exec": ["/usr/bin/kubelet", "--v=2"], "env": {"HOME": "/var/lib/kubelet"},
             "after": ["containerd"], "restart": {"policy": "always", "backoff_initial_ms": 200}},
            {"name": "containerd", "exec": ["/usr/bin/containerd"], "stop_timeout_ms": 3000}
        ]
    })
}

/// Signed payloads: configs that validate, configs that fail one rule each
/// (from the validation table), and commands.
fn payloads() -> Vec<Vec<u8>> {
    let mut out = vec![
        to_vec(&base_config()),
        NODE_EXAMPLE.to_vec(),
        to_vec(&json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h"})),
        to_vec(
            &json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h","services":[
                {"name":"ok","exec":["/bin/true"]},
                {"name":"a","exec":["/bin/true"],"after":["c"]},
                {"name":"b","exec":["/bin/true"],"after":["a","ok"]},
                {"name":"c","exec":["/bin/true"],"after":["b"]}
            ]}),
        ),
        to_vec(
            &json!({"kind":"config","version":1,"generation":1,"node":"n","hostname":"h","services":[
                {"name":"d","exec":["/bin/true"],"after":["c"]},
                {"name":"a","exec":["/bin/true"]},
                {"name":"c","exec":["/bin/true"],"after":["a"]},
                {"name":"b","exec":["/bin/true"]}
            ]}),
        ),
        br#"{"kind":"reboot","version":1,"node":"n1","nonce":"abcd"}"#.to_vec(),
        br#"{"kind":"poweroff","version":1,"node":"n1","nonce":"abcd"}"#.to_vec(),
        br#"{"kind":"reboot","version":2,"node":"n","nonce":"x"}"#.to_vec(),
        br#"{"kind":"config","version":1,"generation":1,"generation":2}"#.to_vec(),
        br#"{"version":1}"#.to_vec(),
    ];
    let edits: &[(&str, Value)] = &[
        ("/version", json!(2)),
        ("/generation", json!(0)),
        ("/hostname", json!("a..b")),
        ("/files/0/path", json!("/var/lib/../../etc/shadow")),
        ("/files/0/path", json!("/run/basalt/agent/state.json")),
        ("/files/1/path", json!("/var/lib/kubelet/kubeconfig/x")),
        ("/files/0/mode", json!("4755")),
        ("/files/1/contents_base64", json!("AAE")),
        ("/services/0/name", json!("agent")),
        ("/services/0/exec", json!(["kubelet"])),
        ("/services/0/env", json!({"A=B": "x"})),
        ("/services/0/after", json!(["containerd", "containerd"])),
        (
            "/services/0/restart",
            json!({"backoff_initial_ms": 500, "backoff_max_ms": 100}),
        ),
        ("/services/1/after", json!(["kubelet"])),
    ];
    for (pointer, value) in edits {
        let mut doc = base_config();
        let (parent, key) = pointer.rsplit_once('/').expect("pointers have a parent");
        match doc.pointer_mut(parent).expect("the base config has the parent") {
            Value::Object(map) => {
                map.insert(key.to_string(), value.clone());
            }
            Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value.clone(),
            _ => unreachable!("pointers name objects and arrays"),
        }
        out.push(to_vec(&doc));
    }
    // A config exactly as the fuzz target writes one back.
    let parsed = basalt_common::config::parse_config(&to_vec(&base_config())).expect("the base config is valid");
    out.push(to_vec(&config_to_json(&parsed)));
    out
}

fn envelope(payload: &[u8]) -> Vec<u8> {
    to_vec(&SignedEnvelope::sign(&signing_key(), payload.to_vec()).to_json())
}

fn envelope_config() -> Vec<Vec<u8>> {
    let payloads = payloads();
    let mut out = Vec::new();
    for p in &payloads {
        out.push(with_mode(0, &envelope(p)));
    }
    for p in &payloads {
        out.push(with_mode(1, p));
    }
    for p in &payloads {
        out.push(with_mode(2, p));
    }
    // Envelopes that fail to parse, from envelope.rs's tests.
    let sig = b64::encode(&[0u8; 64]);
    let id = "0123456789abcdef";
    for text in [
        format!(r#"{{"payload":"e30=","signature":"{sig}","key_id":"{id}"}}"#),
        format!(r#"{{"payload":"e30","signature":"{sig}","key_id":"{id}"}}"#),
        format!(r#"{{"payload":"e30=","signature":"AAAA","key_id":"{id}"}}"#),
        format!(r#"{{"payload":"e30=","signature":"{sig}","key_id":"0123456789ABCDEF"}}"#),
        format!(r#"{{"payload":"e30=","payload":"e30=","signature":"{sig}","key_id":"{id}"}}"#),
    ] {
        out.push(with_mode(0, text.as_bytes()));
    }
    out
}

/// `[cap selector][cut count][cuts...][stream]`, as the frames target reads.
fn frame_input(selector: u8, cuts: &[u16], stream: &[u8]) -> Vec<u8> {
    let mut v = vec![selector, cuts.len() as u8];
    for c in cuts {
        v.extend_from_slice(&c.to_le_bytes());
    }
    v.extend_from_slice(stream);
    v
}

fn frames() -> Vec<Vec<u8>> {
    let big = 0xc0; // cap = MAX_FRAME
    let env = String::from_utf8(envelope(b"{}")).expect("JSON is UTF-8");
    let requests = [
        r#"{"id":1,"op":"status"}"#.to_string(),
        r#"{"op":"logs","id":"a","source":"kubelet"}"#.to_string(),
        r#"{"id":2,"op":"logs","source":"init","tail":5}"#.to_string(),
        r#"{"id":2,"op":"logs","source":"init","since":900}"#.to_string(),
        format!(r#"{{"id":3,"op":"apply","envelope":{env}}}"#),
        format!(r#"{{"id":4,"op":"reboot","envelope":{env}}}"#),
        format!(r#"{{"id":5,"op":"poweroff","envelope":{env}}}"#),
        r#"{"id":1,"id":2,"op":"status"}"#.to_string(),
        r#"{"id":-1,"op":"status"}"#.to_string(),
        r#"{"id":1,"op":"format"}"#.to_string(),
        r#"{"id":1,"op":"status","x":1}"#.to_string(),
        r#"{"id":1,"op":"logs","source":"a","tail":1,"since":2}"#.to_string(),
        r#"{"id":1,"op":"logs","source":"a","tail":10001}"#.to_string(),
        r#"{"id":1,"op":"apply","envelope":{"payload":"e30="}}"#.to_string(),
        "[1]".to_string(),
        "{".to_string(),
    ];
    let mut out = Vec::new();
    for r in &requests {
        out.push(frame_input(big, &[], format!("{r}\n").as_bytes()));
    }
    let responses = [
        proto::ok_line(&json!(3), json!({"state": "maintenance"})),
        proto::error_line(&json!("x"), ErrorCode::WrongNode, "two\nlines"),
        proto::error_line(&json!(null), ErrorCode::FrameTooLarge, "line too long"),
    ];
    for r in &responses {
        out.push(frame_input(big, &[], r));
    }
    // The framing table of proto.rs: small caps, lines cut across chunks.
    let table: &[(u8, &[u16], &[u8])] = &[
        (7, &[], b"a\nb\n"),
        (7, &[2], b"abc\n"),
        (7, &[], b"abc\r\n"),
        (7, &[6], b"\n\n  \r\nx\n"),
        (7, &[], b"12345678\n"),
        (7, &[10], b"123456789\nok\n"),
        (7, &[4, 8, 12], b"123456789abc\nok\n"),
        (7, &[9, 17], b"123456789xxxxxxxxx\nok"),
        (7, &[], b"123456789abc\n12\n"),
        (7, &[], b"\xff\xfe\n"),
        (63, &[], b"no newline yet"),
        (
            21,
            &[5, 11],
            b"{\"id\":1,\"op\":\"status\"}\n{\"id\":2,\"op\":\"status\"}\n",
        ),
    ];
    for (selector, cuts, stream) in table {
        out.push(frame_input(*selector, cuts, stream));
    }
    let all: Vec<u8> = requests.iter().flat_map(|r| format!("{r}\r\n").into_bytes()).collect();
    out.push(frame_input(big, &[1, 100, 400], &all));
    // Binary frames: upgrade-data with raw bytes, one over a small cap, a
    // NUL that is not the magic, and a payload on an op that takes none.
    let data = |fields: serde_json::Value, payload: &[u8]| {
        let serde_json::Value::Object(mut m) = fields else { return Vec::new() };
        let op = m.remove("op").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        proto::binary_request(&json!(9), &op, m, payload)
    };
    let up = data(json!({"op": "upgrade-data", "upgrade": "u1", "offset": 0}), b"\0\n\xffraw");
    let mut mixed = up.clone();
    mixed.extend_from_slice(b"{\"id\":1,\"op\":\"status\"}\n\0x\n");
    mixed.extend_from_slice(&data(json!({"op": "status"}), b"x"));
    out.push(frame_input(big, &[], &up));
    out.push(frame_input(big, &[3, 11, 20], &mixed));
    out.push(frame_input(15, &[], &[up.as_slice(), b"ok\n"].concat()));
    out
}

fn cmdline() -> Vec<Vec<u8>> {
    let lines = [
        // common/src/cmdline.rs
        "",
        "  \n",
        "quiet",
        "console=ttyS0 basalt.lockdown=none\n",
        "a= b==c",
        "x=\"one two\" y",
        "\"x=a b\"",
        "a -- b=c",
        "a --b",
        "x=\"unterminated rest",
        "k=1 k=2 other",
        // init/src/boot_params.rs
        "console=ttyS0 quiet",
        "basalt.image=/dev/vda basalt.image_wait=3 basalt.agent=/usr/libexec/check \
         basalt.lockdown=confidentiality basalt.on_error=poweroff basalt.error_delay=0 \
         basalt.shutdown_timeout=5 basalt.run_size=10% basalt.tmp_size=128M basalt.var_size=1g \
         basalt.debug basalt.serial=ttyS1 basalt.unknown=whatever",
        "basalt.image=initramfs",
        "basalt.lockdown=maybe",
        "basalt.lockdown",
        "basalt.image=/etc/passwd",
        "basalt.image=/dev/../etc",
        "basalt.agent=bin/sh",
        "basalt.on_error=explode",
        "basalt.error_delay=-1",
        "basalt.shutdown_timeout=601",
        "basalt.tmp_size=lots",
        "basalt.debug=maybe",
        "basalt.lockdown=none basalt.lockdown=integrity",
        "basalt.lockdown=bad basalt.on_error=poweroff",
        "basalt.tmp_size=9999999999999999 basalt.run_size=5%% basalt.var_size=101%",
        "64m",
        "100%",
        // agent/src/settings.rs
        "basalt.serial=none basalt.vsock_port=none basalt.node=n1",
        "basalt.serial=hvc1 basalt.vsock_port=5000",
        "basalt.serial=/dev/pts/3",
        "basalt.serial=../x basalt.vsock_port=http",
        "basalt.vsock_port=4294967295 basalt.node=bad/id",
        "basalt.vsock_port=1 basalt.vsock_port=2",
        // What QEMU tests boot with.
        "console=ttyS0 quiet basalt.on_error=poweroff basalt.node=4c4c4544-0042-3510-8056-b4c04f4e4d32",
        "4C4C4544-0042-3510-8056-B4C04F4E4D32\n",
        "00000000-0000-0000-0000-000000000000",
    ];
    lines.iter().map(|l| l.as_bytes().to_vec()).collect()
}

fn sample_manifest() -> Manifest {
    Manifest {
        version: "0.1.0".into(),
        kernel: "6.1.0-56-amd64".into(),
        image: ImageDigest {
            size: 4096,
            sha256: [7; 32],
        },
        modules: vec![
            ModuleEntry {
                name: "virtio_ring".into(),
                sha256: [1; 32],
            },
            ModuleEntry {
                name: "virtio".into(),
                sha256: [2; 32],
            },
        ],
        handoff: "/sbin/basalt-agent".into(),
        verity: None,
    }
}

fn manifest() -> Vec<Vec<u8>> {
    let good = String::from_utf8(build_manifest(&sample_manifest())).expect("JSON is UTF-8");
    let digest7 = hex::encode(&[7; 32]);
    let mut texts = vec![
        good.clone(),
        good.replace("\"format\": 1", "\"format\": 2"),
        good.replace("\"version\"", "\"versoin\""),
        good.replace(&digest7, "abc"),
        good.replace("\"size\": 4096", "\"size\": \"4096\""),
        good.replace("\"virtio\"", "\"../etc\""),
        good.replace("\"virtio\"", "\"virtio_ring\""),
        good.replace("/sbin/basalt-agent", "sbin/agent"),
        good.replace("/sbin/basalt-agent", "/sbin/../bin/sh"),
        good.replace("\"kernel\"", "\"kernel\": \"x\", \"kernel\""),
        good.replace(",\n  \"handoff\": \"/sbin/basalt-agent\"", ""),
    ];
    let mut many = sample_manifest();
    many.modules = [
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "loop",
        "squashfs",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| ModuleEntry {
        name: name.to_string(),
        sha256: [i as u8; 32],
    })
    .collect();
    texts.push(String::from_utf8(build_manifest(&many)).expect("JSON is UTF-8"));
    let mut out = Vec::new();
    for t in &texts {
        out.push(with_mode(0, t.as_bytes()));
        out.push(with_mode(2, t.as_bytes()));
    }
    let key = signing_key();
    let sig = key.sign(good.as_bytes());
    let mut signed = vec![1, 1];
    signed.extend_from_slice(&sig);
    signed.extend_from_slice(good.as_bytes());
    out.push(signed);
    let mut wrong = vec![1, 1];
    wrong.extend_from_slice(&key.sign(b"other"));
    wrong.extend_from_slice(good.as_bytes());
    out.push(wrong);
    let mut short = vec![1, 128 + 63];
    short.extend_from_slice(&sig[..63]);
    short.extend_from_slice(good.as_bytes());
    out.push(short);
    out
}

fn keys() -> Vec<Vec<u8>> {
    // RFC 8032 section 7.1 test 1, as in common/src/keys.rs.
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
    const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    let raw = hex::decode(PUBLIC).expect("hex");
    let spki = pem::parse(PUBLIC_PEM).expect("PEM").der;
    let pkcs8 = pem::parse(PRIVATE_PEM).expect("PEM").der;
    let mut wrong_oid = pkcs8.clone();
    wrong_oid[10] = 0x71; // Ed448
    let mut out: Vec<Vec<u8>> = vec![
        raw.clone(),
        spki.clone(),
        pkcs8.clone(),
        wrong_oid.clone(),
        PUBLIC_PEM.as_bytes().to_vec(),
        PRIVATE_PEM.as_bytes().to_vec(),
        PUBLIC_PEM.replace('\n', "\r\n").into_bytes(),
        format!("\n\n{PRIVATE_PEM}\n").into_bytes(),
        pem::encode("PRIVATE KEY", &wrong_oid).into_bytes(),
        pem::encode("ENCRYPTED PRIVATE KEY", b"whatever").into_bytes(),
        pem::encode("CERTIFICATE", b"x").into_bytes(),
        pem::encode("PUBLIC KEY", &spki[..12]).into_bytes(),
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n".to_vec(),
        b"-----BEGIN X-----\nAAEC\n-----END X-----\nmore\n".to_vec(),
        b"\n-----BEGIN X-----\r\nAAEC\r\n-----END X-----\r\n\n".to_vec(),
        pem::encode("PUBLIC KEY", &(0..100u8).collect::<Vec<u8>>()).into_bytes(),
        vec![0u8; 31],
        vec![0u8; 44],
    ];
    // base64 and hex vectors (b64.rs, hex.rs).
    for text in [
        "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "Zg=", "Zg==Zg==", "Z===", "Zh==", "Zm9=",
        "Zm 9", "Zm-v",
    ] {
        out.push(text.as_bytes().to_vec());
    }
    for text in ["00", "ff10", "0123456789abcdef", "ABCD", "0g", "abc", PUBLIC] {
        out.push(text.as_bytes().to_vec());
    }
    out.push(b64::encode(&pkcs8).into_bytes());
    out
}

fn modinfo() -> Vec<Vec<u8>> {
    // From initramfs/src/modinfo.rs's tests.
    const VIRTIO: &[u8] = b"license=GPL\0depends=virtio_ring\0\0\0retpoline=Y\0intree=Y\0name=virtio\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0";
    let sections: &[&[u8]] = &[
        VIRTIO,
        b"name=a\0depends=\0",
        b"depends=virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio\0",
        b"depends=a,,b,\0",
        b"name=a\0garbage\0",
        b"\0\0=x\0",
        b"author=Jos\xe9\0name=x\0",
    ];
    let mut out = Vec::new();
    for s in sections {
        out.push(with_mode(0, &synthetic::module(s)));
        out.push(with_mode(1, s));
    }
    // Extended section numbering: e_shnum = 0, e_shstrndx = SHN_XINDEX.
    let mut elf = synthetic::module(VIRTIO);
    let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().expect("8 bytes")) as usize;
    elf[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&0xffffu16.to_le_bytes());
    elf[shoff + 32..shoff + 40].copy_from_slice(&5u64.to_le_bytes());
    elf[shoff + 40..shoff + 44].copy_from_slice(&4u32.to_le_bytes());
    out.push(with_mode(0, &elf));
    // Dependency graphs: [count] then per module [flags][u16 depends-on bits].
    // virtio_ring(0) <- virtio(1) <- virtio_pci(2), wanted; 3 built in.
    out.push(vec![2, 4, 1, 0, 0, 1, 1, 0, 5, 3, 0, 2, 0, 0]);
    // A cycle 0 -> 1 -> 2 -> 0, 0 wanted.
    out.push(vec![2, 3, 5, 2, 0, 1, 4, 0, 1, 1, 0]);
    // A missing dependency.
    out.push(vec![2, 2, 5, 2, 0, 0, 0, 0]);
    // The fragment, then a .config.
    let config = b"CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_ZSTD=y\nCONFIG_SQUASHFS=m\nCONFIG_BLK_DEV_LOOP=m\n\
# CONFIG_MODULE_SIG_FORCE is not set\nCONFIG_LOCALVERSION=\"\"\nCONFIG_HZ=250\nCONFIG_X=n\n";
    let mut both = with_mode(3, FRAGMENT);
    both.push(0);
    both.extend_from_slice(config);
    out.push(both);
    out.push(with_mode(
        3,
        b"CONFIG_A=y|CONFIG_B=y\nCONFIG_C=m # modules: c_mod d\n\0CONFIG_B=y\nCONFIG_C=m\n",
    ));
    out.push(with_mode(
        3,
        b"\0kernel/fs/squashfs/squashfs.ko\nkernel/drivers/block/loop.ko\nkernel/net/vmw-vsock.ko\n",
    ));
    out
}

fn json_strict() -> Vec<Vec<u8>> {
    let texts: &[&[u8]] = &[
        br#"{"a":1,"b":[1,{"c":null}]}"#,
        b"[]",
        b"\"x\"",
        b" 1 ",
        br#"{"a":1,"a":2}"#,
        br#"{"x":{"a":1,"a":1}}"#,
        b"{} {}",
        b"{",
        b"",
        b"\x01",
        br#"{"n":"x","k":-1,"l":{},"weird key":1}"#,
        br#"{"f":1.5e300,"g":-0.0,"h":18446744073709551615,"i":-9223372036854775808}"#,
        br#"["\u00e9\ud83d\ude00", "\ud800"]"#,
        NODE_EXAMPLE,
    ];
    let mut out: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
    out.push(format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes());
    out.push(format!("{}{}", "[".repeat(129), "]".repeat(129)).into_bytes());
    out.push(format!("{}1{}", "{\"a\":".repeat(130), "}".repeat(130)).into_bytes());
    out
}

/// A record like the agent writes: a floor, the last config, a shutdown.
fn sample_record() -> StateRecord {
    StateRecord {
        generation_floor: Some(3),
        config: Some(SignedEnvelope::sign(&signing_key(), to_vec(&base_config()))),
        last_shutdown: Some("reboot".into()),
        image_version_floor: None,
        upgrade: None,
    }
}

fn state_record() -> Vec<Vec<u8>> {
    let record = sample_record();
    let good = state_record::encode(9, &record).expect("the sample fits a slot");
    let empty = state_record::encode(1, &StateRecord::default()).expect("the empty record fits");
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0xee; 100]);
    let mut torn = good.clone();
    torn[100] ^= 1;
    let mut other_format = empty.clone();
    other_format[8] = 2;
    let mut out = vec![
        with_mode(0, &good),
        with_mode(0, &empty),
        with_mode(0, &trailing),
        with_mode(0, &torn),
        with_mode(0, &other_format),
        with_mode(0, &good[..good.len() - 1]),
        with_mode(0, &good[..10]),
        with_mode(0, &[0; 64]),
    ];
    // Sealed payloads: [seq][flip][payload], from state_record.rs's tests.
    for (i, payload) in [
        r#"{"format":1}"#,
        r#"{"format":1,"generation_floor":null,"config":null}"#,
        r#"{"format":2}"#,
        r#"{"format":1,"extra":1}"#,
        r#"{"format":1,"generation_floor":-1}"#,
        r#"{"format":1,"config":{"payload":"e30="}}"#,
        r#"{}"#,
    ]
    .iter()
    .enumerate()
    {
        let mut v = vec![1];
        v.extend_from_slice(&(i as u64 + 1).to_le_bytes());
        v.extend_from_slice(&(i as u16 * 97).to_le_bytes());
        v.extend_from_slice(payload.as_bytes());
        out.push(v);
    }
    let mut v = vec![1];
    v.extend_from_slice(&5u64.to_le_bytes());
    v.extend_from_slice(&300u16.to_le_bytes());
    v.extend_from_slice(&good[state_record::HEADER_LEN..]);
    out.push(v);
    // Built records: [seq][floor][image floor][shutdown][config][payload].
    let mut built = vec![2];
    built.extend_from_slice(&2u64.to_le_bytes());
    built.push(1);
    built.extend_from_slice(&3u64.to_le_bytes());
    built.push(0);
    built.extend_from_slice(&[0; 8]);
    built.push(("reboot".len() as u8) << 1 | 1);
    built.extend_from_slice(b"reboot");
    built.push(1);
    built.extend_from_slice(&to_vec(&base_config()));
    out.push(built);
    out.push(vec![2, 1]);
    // Slots: [kind][seq] twice, then the slot in force.
    let slot = |kind: u8, seq: u64| {
        let mut v = vec![kind];
        v.extend_from_slice(&seq.to_le_bytes());
        v
    };
    for (a, b, current) in [
        (slot(0, 0), slot(0, 0), 2),
        (slot(2, 1), slot(0, 0), 0),
        (slot(2, 1), slot(2, 2), 1),
        (slot(2, 5), slot(2, 4), 1),
        (slot(1, 0), slot(2, 7), 1),
        (slot(2, 2), slot(2, 3), 2),
        (slot(2, state_record::MAX_SEQ), slot(2, 3), 0),
    ] {
        let mut v = vec![3];
        v.extend_from_slice(&a);
        v.extend_from_slice(&b);
        v.push(current);
        out.push(v);
    }
    out
}

fn gpt_spec(name: &str, type_guid: gpt::Guid, mib: u64) -> gpt::PartitionSpec {
    gpt::PartitionSpec {
        name: name.into(),
        type_guid,
        unique_guid: gpt::Guid::derive(b"seed", name),
        size_bytes: mib << 20,
    }
}

fn disk() -> Vec<Vec<u8>> {
    // The disk basalt-mkimage lays out, small: ESP, two root slots, STATE, VAR.
    let table = gpt::plan(
        gpt::Guid::derive(b"seed", "disk"),
        &[
            gpt_spec("ESP", gpt::types::ESP, 2),
            gpt_spec("ROOT-A", gpt::types::ROOT_X86_64, 3),
            gpt_spec("ROOT-B", gpt::types::ROOT_X86_64, 3),
            gpt_spec("STATE", gpt::types::LINUX_DATA, 12),
            gpt_spec("VAR", gpt::types::VAR, 4),
        ],
    )
    .expect("the seed table lays out");
    let primary = gpt::build(&table).expect("the seed table builds").primary;
    let mut out = vec![with_mode(0, &primary), with_mode(0, &primary[..1024])];
    let mut bad_name = primary.clone();
    bad_name[1024 + 56..1024 + 58].copy_from_slice(&0xD800u16.to_le_bytes());
    out.push(with_mode(0, &bad_name));
    // Sealed tables: [entries_lba][count u16][size units][my_lba][header size u16][array].
    for (lba, count, units, my_lba, hsize) in [
        (2u8, 128u16, 1u8, 1u8, 0u16),
        (2, 4, 1, 1, 0),
        (3, 2, 2, 1, 100),
        (2, 128, 1, 0, 0),
        (2, 0, 1, 1, 500),
        (0, 4, 1, 1, 0),
    ] {
        let mut v = vec![1, lba];
        v.extend_from_slice(&count.to_le_bytes());
        v.push(units);
        v.push(my_lba);
        v.extend_from_slice(&hsize.to_le_bytes());
        v.extend_from_slice(&primary[1024..1024 + 4 * 128]);
        out.push(v);
    }
    // Partition lists: [count] then [flags][size u32][name_len][name].
    let list = |parts: &[(u8, u32, &str)]| {
        let mut v = vec![2, parts.len() as u8];
        for (flags, size, name) in parts {
            v.push(*flags);
            v.extend_from_slice(&size.to_le_bytes());
            v.push(name.len() as u8);
            v.extend_from_slice(name.as_bytes());
        }
        v
    };
    out.push(list(&[
        (4, 4096, "ESP"),
        (4, 6144, "ROOT-A"),
        (4, 6144, "ROOT-B"),
        (4, 2048, "STATE"),
    ]));
    out.push(list(&[(0, 1, ""), (0, 2048, "")]));
    out.push(list(&[(6, 1000, "odd")]));
    out.push(list(&[(4, 1, "\u{e9}\u{e9}\u{e9}")]));
    out.push(list(&[(4, 1, "x"), (0x34, 1, "zero type")]));
    out.push(list(&[(7, 1 << 31, "huge"), (7, 1 << 31, "huge2")]));
    let many: Vec<(u8, u32, &str)> = (0..129).map(|_| (0u8, 1u32, "")).collect();
    out.push(list(&many));
    // Manifest areas.
    let json = build_manifest(&sample_manifest());
    let sig = signing_key().sign(&json);
    let area = slot::encode_area(&json, &sig).expect("the sample manifest fits");
    let used = slot::AREA_HEADER_LEN + json.len() + sig.len();
    out.push(with_mode(3, &[&[0u8][..], &area[..used]].concat()));
    out.push(with_mode(3, &[0]));
    out.push(with_mode(3, &[&[1u8][..], &area[..100]].concat()));
    let mut stray = area[..used].to_vec();
    stray.push(1);
    out.push(with_mode(3, &[&[0u8][..], &stray].concat()));
    let mut long = area[..used].to_vec();
    long[12..16].copy_from_slice(&65500u32.to_le_bytes());
    out.push(with_mode(3, &[&[0u8][..], &long].concat()));
    // encode_area and layout: [slot size][image size][json len][signature][json].
    for (slot_size, image_size, json_len) in [
        (256u64 << 20, (68u64 << 20) + 5, json.len() as u16),
        (1 << 20, 237 * 4096, 0),
        (1 << 20, 237 * 4096 + 1, 65452),
        (1000, 1, 65453),
    ] {
        let mut v = vec![4];
        v.extend_from_slice(&slot_size.to_le_bytes());
        v.extend_from_slice(&image_size.to_le_bytes());
        v.extend_from_slice(&json_len.to_le_bytes());
        v.extend_from_slice(&sig);
        v.extend_from_slice(&json);
        out.push(v);
    }
    out
}

fn verity_kernel() -> Vec<Vec<u8>> {
    use basalt_init::verity::dm;
    let mut out = Vec::new();
    // A status answer as in dm.rs's tests: one verity target, "C".
    let mut answer = dm::build_request("basalt-root", "", 0, &[], 1024).expect("a valid request");
    let put = |buf: &mut [u8], at: usize, v: &[u8]| buf[at..at + v.len()].copy_from_slice(v);
    let spec = dm::DM_IOCTL_SIZE;
    put(&mut answer, dm::offset::TARGET_COUNT, &1u32.to_ne_bytes());
    put(&mut answer, dm::offset::DATA_SIZE, &(spec as u32 + 48).to_ne_bytes());
    put(&mut answer, spec + dm::offset::SPEC_LENGTH, &80u64.to_ne_bytes());
    put(&mut answer, spec + dm::offset::SPEC_NEXT, &48u32.to_ne_bytes());
    put(&mut answer, spec + dm::offset::SPEC_TARGET_TYPE, b"verity");
    put(&mut answer, spec + dm::TARGET_SPEC_SIZE, b"C");
    out.push(with_mode(0, &answer));
    out.push(with_mode(0, &answer[..100]));
    let mut full = answer.clone();
    put(&mut full, dm::offset::FLAGS, &dm::DM_BUFFER_FULL_FLAG.to_ne_bytes());
    out.push(with_mode(0, &full));
    // Targets for the kernel-shaped answer: [flags][count] then per target
    // [start][length][type_len][type][status_len][status].
    let mut targets = vec![1, 0, 2];
    for (start, length, kind, status) in [(0u64, 80u64, "verity", "V"), (80, 2048, "linear", "")] {
        targets.extend_from_slice(&start.to_le_bytes());
        targets.extend_from_slice(&length.to_le_bytes());
        targets.push(kind.len() as u8);
        targets.extend_from_slice(kind.as_bytes());
        targets.push(status.len() as u8);
        targets.extend_from_slice(status.as_bytes());
    }
    out.push(targets);
    // kmsg lines, from corruption.rs's tests.
    for line in [
        "3,412,2470346,-;device-mapper: verity: 7:0: metadata block 283 is corrupted\n",
        "[    2.47] device-mapper: verity: 254:2: data block 0 is corrupted",
        "3,1,1,-;device-mapper: verity: 7:0: reached maximum errors",
        "3,1,1,-;device-mapper: verity: 7:0: data block x is corrupted",
        "3,1,1,-;device-mapper: verity: 7:0: other block 3 is corrupted",
        "6,2,2,-;SQUASHFS error: Failed to read block 0x0: -5",
        "",
    ] {
        out.push(with_mode(2, line.as_bytes()));
    }
    // The kernel's line: [major u16][minor u24][kind][block u64][prefix_len][prefix][tail].
    let mut line = vec![3];
    line.extend_from_slice(&254u16.to_le_bytes());
    line.extend_from_slice(&[2, 0, 0, 1]);
    line.extend_from_slice(&283u64.to_le_bytes());
    line.push(15);
    line.extend_from_slice(b"3,412,2470346,-");
    line.extend_from_slice(b"reached maximum errors");
    out.push(line);
    // uevents: [dev_t][key_len][key][uevent] (the dev_t bytes double as the key length and key).
    let uevent = "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=ROOT-A\n";
    for key in ["PARTNAME", "PARTN", "DEV", "DEVTYPE"] {
        let mut v = vec![4, key.len() as u8];
        v.extend_from_slice(key.as_bytes());
        v.extend_from_slice(uevent.as_bytes());
        out.push(v);
    }
    // Netlink uevents, from watch.rs's tests.
    let netlink = |fields: &[&str]| {
        let mut v = vec![5];
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.push(0);
        }
        v
    };
    let verity = |nr: &str| {
        netlink(&[
            "change@/devices/virtual/block/dm-0",
            "ACTION=change",
            "DEVPATH=/devices/virtual/block/dm-0",
            "SUBSYSTEM=block",
            &format!("DM_VERITY_ERR_BLOCK_NR={nr}"),
            "MAJOR=254",
            "MINOR=0",
            "DEVNAME=dm-0",
            "DEVTYPE=disk",
            "SEQNUM=1234",
        ])
    };
    for nr in ["0,123", "1,283", "2,1", "0,x", "0"] {
        out.push(verity(nr));
    }
    out.push(netlink(&[
        "add@/devices/virtual/block/dm-0",
        "DM_VERITY_ERR_BLOCK_NR=0,1",
        "DEVNAME=dm-0",
    ]));
    out.push(netlink(&["change@/x", "DM_VERITY_ERR_BLOCK_NR=0,1"]));
    out.push(with_mode(5, b"libudev\0\xfe\xed\xca\xfe"));
    // The kernel's uevent: [kind][block u64][devname_len][devname][fields].
    let mut v = vec![6, 1];
    v.extend_from_slice(&283u64.to_le_bytes());
    v.push(4);
    v.extend_from_slice(b"dm-0");
    v.extend_from_slice(b"SUBSYSTEM=block\0MAJOR=254\0MINOR=0\0DEVTYPE=disk\0SEQNUM=1234");
    out.push(v);
    out
}

/// Update bundles (common/src/bundle/): whole ones, signed manifests, and
/// parameters for the built-bundle mode.
fn bundle() -> Vec<Vec<u8>> {
    use basalt_common::bundle::{self as b, Arch, BundleManifest, SlotPart};
    use basalt_common::disk::slot;
    let manifest = |uki: &[u8], slot: &[u8], target: &str| BundleManifest {
        version: "0.1.0+gseed".into(),
        version_seq: 42,
        arch: Arch::X86_64,
        target: target.into(),
        uki: b::digest_part(uki),
        slot: SlotPart {
            digest: b::digest_part(slot),
            tree_end: slot.len() as u64 - slot::AREA_SIZE,
            root_hash: [7; 32],
        },
    };
    let uki = vec![0x4d; 3000];
    let slot_part = vec![0x53; 4096 + slot::AREA_SIZE as usize];
    let small = manifest(&uki, &slot_part, "ROOT-B");
    let whole = b::build_bundle(&small, &signing_key(), &uki, &slot_part).expect("seed bundle builds");
    let mut out = vec![
        with_mode(0, &whole),
        with_mode(0, &whole[..b::HEADER_LEN]),
        with_mode(0, &whole[..whole.len() - 1]),
        with_mode(0, b"BASALTUB\x01\0\0\0\xff\xff\xff\xff\x40\0\0\0"),
        with_mode(1, &b::encode_manifest(&small)),
    ];
    // A UKI of two and a half chunks: a longer chunk list.
    let big_uki = vec![0x4d; (b::CHUNK_SIZE * 5 / 2) as usize];
    let big = manifest(&big_uki, &slot_part, "ROOT-A");
    let json = String::from_utf8(b::encode_manifest(&big)).expect("manifest JSON is UTF-8");
    out.push(with_mode(1, json.as_bytes()));
    out.push(with_mode(
        1,
        json.replacen("\"tree_end\":4096", "\"tree_end\":4095", 1).as_bytes(),
    ));
    out.push(with_mode(
        1,
        json.replacen("\"target\":\"ROOT-A\"", "\"target\":\"STATE\"", 1)
            .as_bytes(),
    ));
    // Built bundles: UKI size steps, slot blocks, version, flip, cut, part, index.
    out.push(vec![2, 0, 16, 0, 1, 42, 0, 20, 0, 0, 99, 0, 0, 0, 0, 0xaa]);
    out.push(vec![2, 17, 255, 15, 7, 1, 0, 0, 0, 1, 255, 255, 0, 1, 2, 1, 2, 3]);
    out.push(vec![3, 48, 255, 255, 3, 9, 9, 0x10, 0x27, 0x30, 0, 0, 0x20, 0, 2, 7]);
    out
}

/// The base section of common/src/config/network.rs's tests.
fn base_network() -> Value {
    json!({
        "interfaces": [
            {"name": "eth0", "dhcp4": true},
            {"mac": "52:54:00:12:34:56", "mtu": 9000,
             "addresses": ["192.168.10.5/24", "fd00:10::5/64"],
             "routes": [{"to": "default", "via": "192.168.10.1"},
                        {"to": "10.20.0.0/16", "via": "192.168.10.254", "metric": 50},
                        {"to": "default", "via": "fe80::1"}]}
        ],
        "dns": {"servers": ["192.168.10.1", "fd00:10::1"], "search": ["cluster.local", "example.org"]},
        "hostname_from_dhcp": true
    })
}

fn network_config() -> Vec<Vec<u8>> {
    let base = base_network();
    let parsed = basalt_common::config::network::parse(&base, "$.network").expect("the base section is valid");
    let mut out = vec![
        to_vec(&base),
        to_vec(&network_to_json(&parsed)),
        to_vec(&json!({})),
        to_vec(&json!({"interfaces": [{"name": "eth0", "addresses": ["10.0.0.2/24"],
                                       "routes": [{"to": "default", "via": "10.0.0.1"}]}],
                       "dns": {"servers": ["10.0.0.1"]}})),
    ];
    // One rule broken each, from the validation table.
    let edits: &[(&str, Value)] = &[
        ("/interfaces/1/addresses/0", json!("192.168.10.0/24")),
        ("/interfaces/1/addresses/0", json!("192.168.10.5/024")),
        ("/interfaces/1/routes/0/via", json!("10.0.0.1")),
        ("/interfaces/1/routes/1/to", json!("10.20.0.1/16")),
        ("/interfaces/1/mtu", json!(1279)),
        ("/interfaces/1/mac", json!("01:00:5e:00:00:01")),
        ("/interfaces/0/name", json!("eth0:1")),
        ("/interfaces/0/addresses", json!(["10.0.0.2/24"])),
        ("/dns/servers", json!(["1.1.1.1", "1.1.1.1"])),
        ("/dns/search", json!(["a..b"])),
    ];
    for (pointer, value) in edits {
        let mut doc = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointers have a parent");
        match doc.pointer_mut(parent).expect("the base section has the parent") {
            Value::Object(map) => {
                map.insert(key.to_string(), value.clone());
            }
            Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value.clone(),
            _ => unreachable!("pointers name objects and arrays"),
        }
        out.push(to_vec(&doc));
    }
    out
}

/// QEMU's user-mode server's OFFER (agent/src/net/dhcp/message.rs's tests).
fn slirp_offer(kind: MessageType) -> Vec<u8> {
    dhcp_message::encode(&Message {
        op: Op::Reply,
        xid: 0x1234_5678,
        secs: 0,
        flags: dhcp_message::FLAG_BROADCAST,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::new(10, 0, 2, 15),
        siaddr: Ipv4Addr::new(10, 0, 2, 2),
        giaddr: Ipv4Addr::UNSPECIFIED,
        chaddr: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        options: Options {
            message_type: Some(kind),
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns_servers: vec![Ipv4Addr::new(10, 0, 2, 3)],
            lease_time: Some(3600),
            hostname: Some("node-1".into()),
            ..Options::default()
        },
    })
}

fn dhcp() -> Vec<Vec<u8>> {
    let offer = slirp_offer(MessageType::Offer);
    let mut overload = offer[..240].to_vec();
    overload.extend_from_slice(&[53, 1, 2, 52, 1, 3, 255]);
    let mut split = offer[..240].to_vec();
    split.extend_from_slice(&[53, 1, 5, 12, 2, b'n', b'o', 12, 2, b'd', b'e', 51, 4, 0, 0, 0, 60, 255]);
    vec![
        with_mode(0, &offer),
        with_mode(0, &slirp_offer(MessageType::Ack)),
        with_mode(0, &slirp_offer(MessageType::Nak)),
        with_mode(0, &overload),
        with_mode(0, &split),
        with_mode(0, &offer[..239]),
        // Client scripts: seed (4), start time (2), then events. Event 1 is
        // a reply [1, shape, last octet, lease/4, mask shift, T1/2, T2/2]:
        // shape 0 an OFFER, 1 an ACK; event 2 fires the timer.
        // DISCOVER, OFFER, ACK, then T1, T2 and expiry with no answer.
        vec![
            1, 0, 0, 0, 42, 0, 0, 1, 0, 15, 100, 8, 0, 0, 1, 1, 15, 100, 8, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0,
        ],
        // Bound, renewed by an ACK at T1.
        vec![
            1, 0, 0, 0, 7, 0, 0, 1, 0, 15, 30, 8, 0, 0, 1, 1, 15, 30, 8, 0, 0, 2, 0, 0, 0, 1, 1, 15, 30, 8, 5, 9,
        ],
        // A NAK while requesting, then the timer.
        vec![
            1, 0, 0, 0, 9, 0, 0, 1, 0, 15, 100, 8, 0, 0, 1, 2, 15, 0, 8, 0, 0, 2, 0, 0, 0,
        ],
        // No server: the timer fires six times; garbage between.
        vec![
            1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 4, 0, 1, 2, 3, 4, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0,
        ],
        // An infinite lease.
        vec![
            1, 0, 0, 2, 0, 0, 0, 1, 0, 15, 1, 8, 0, 0, 1, 1, 15, 1, 8, 0, 0, 2, 0, 0, 0,
        ],
    ]
}

fn netlink() -> Vec<Vec<u8>> {
    let lease = AddressChange {
        index: 2,
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
        prefix: 24,
        lifetime: Some(Lifetime {
            preferred_secs: 3600,
            valid_secs: 3600,
        }),
    };
    let default = RouteChange {
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst_len: 0,
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2))),
        oif: 2,
        metric: Some(100),
        protocol: netlink::RTPROT_DHCP,
    };
    let requests = [
        netlink::set_link(1, 2, true, Some(1500)),
        netlink::new_address(2, &lease),
        netlink::new_route(3, &default),
        netlink::dump_links(4),
    ]
    .concat();
    // A link as the kernel reports one (name, MAC, MTU, operstate), DONE, an error.
    #[rustfmt::skip]
    let link: Vec<u8> = vec![
        80, 0, 0, 0,  16, 0,  2, 0,  9, 0, 0, 0,  0x10, 0, 0, 0,
        0, 0,  1, 0,  2, 0, 0, 0,  1, 0, 0, 0,  0, 0, 0, 0,
        9, 0,  3, 0,  b'e', b't', b'h', b'0', 0, 0, 0, 0,
        8, 0,  4, 0,  0xdc, 0x05, 0, 0,
        10, 0,  1, 0,  0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0,
        5, 0,  16, 0,  6, 0, 0, 0,
        8, 0,  18, 0x80,  4, 0, 0, 0,
        20, 0, 0, 0,  3, 0,  2, 0,  9, 0, 0, 0,  0x10, 0, 0, 0,  0, 0, 0, 0,
        36, 0, 0, 0,  2, 0,  0, 1,  12, 0, 0, 0,  0x10, 0, 0, 0,  0xf3, 0xff, 0xff, 0xff,
        40, 0, 0, 0,  16, 0,  5, 0,  12, 0, 0, 0,  0, 0, 0, 0,
    ];
    vec![
        with_mode(0, &requests),
        with_mode(0, &link),
        with_mode(0, &link[..79]),
        // Requests from the input: flags, index, then the fields (see the target).
        vec![
            1, 0x7c, 0, 0, 2, 0, 0, 0, 0x05, 0xdc, 10, 0, 2, 15, 24, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0, 0,
            10, 0, 2, 2, 0, 0, 0, 100,
        ],
        vec![
            1, 0x03, 0, 0, 0, 3, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 64, 48, 0xfd, 0, 0, 0x20,
        ],
    ]
}
