//! What the fuzz targets share: the fixed test keys, a reader that splits
//! one fuzz input into the pieces a target needs, and encoders that turn a
//! parsed value back into the text it came from, so targets can check that
//! parse and write agree.
//!
//! The encoders live here, not in the crates they test, because only the
//! fuzzer needs them: the agent never writes a config and init never writes
//! a command line.

use basalt_common::cmdline::Param;
use basalt_common::config::network::{LinkMatch, NetworkConfig};
use basalt_common::config::Config;
use basalt_common::keys::SigningKey;
use basalt_common::proto::{Op, Request};
use basalt_common::{b64, proto};
use serde_json::{json, Map, Value};

pub mod seeds;

/// The agent is a binary crate; these modules of it are pure and use only
/// `basalt-common`, so they are compiled here from the same source files
/// rather than moved into a library. `agent_net` is the whole of
/// agent/src/net/: the DHCP codec and client, and the rtnetlink codec.
#[path = "../../agent/src/identity.rs"]
pub mod agent_identity;
#[path = "../../agent/src/net/mod.rs"]
pub mod agent_net;
#[path = "../../agent/src/settings.rs"]
pub mod agent_settings;

/// The key that signs everything the fuzzer wants to get past a signature
/// check: the RFC 8032 section 7.1 test 1 seed, as in common/src/keys.rs.
pub fn signing_key() -> SigningKey {
    SigningKey::from_seed(&SEED).expect("a 32-byte seed is always a valid Ed25519 key")
}

/// A trusted key that signed nothing.
pub fn other_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32]).expect("a 32-byte seed is always a valid Ed25519 key")
}

pub const SEED: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5,
    0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

/// Takes a fuzz input apart from the front. Running out is not an error:
/// missing bytes read as zero, so every input means something.
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// Whether a JSON value holds a number that is not an integer. serde_json
/// parses floats to within one ulp unless built with `float_roundtrip`, so
/// write-then-read equality is only asserted for documents without them.
pub fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// The request line a client would send for `req` (newline included).
pub fn request_line(req: &Request) -> Vec<u8> {
    let mut fields = Map::new();
    match &req.op {
        Op::Status => {}
        Op::Logs { source, tail, since } => {
            fields.insert("source".into(), json!(source));
            match since {
                Some(cursor) => fields.insert("since".into(), json!(cursor)),
                None => fields.insert("tail".into(), json!(tail)),
            };
        }
        Op::Apply { envelope, try_ms } => {
            fields.insert("envelope".into(), envelope.to_json());
            if let Some(ms) = try_ms {
                fields.insert("try_ms".into(), json!(ms));
            }
        }
        Op::Confirm { envelope }
        | Op::Reboot { envelope }
        | Op::Poweroff { envelope }
        | Op::ResetVar { envelope }
        | Op::Rollback { envelope } => {
            fields.insert("envelope".into(), envelope.to_json());
        }
        Op::Upgrade {
            envelope,
            manifest,
            signature,
        } => {
            fields.insert("envelope".into(), envelope.to_json());
            fields.insert("manifest".into(), json!(b64::encode(manifest)));
            fields.insert("signature".into(), json!(b64::encode(signature)));
        }
        Op::UpgradeData { upgrade, offset, data } => {
            fields.insert("upgrade".into(), json!(upgrade));
            fields.insert("offset".into(), json!(offset));
            fields.insert("data".into(), json!(b64::encode(data)));
        }
    }
    proto::request_line(&req.id, req.op.name(), fields)
}

/// A config as JSON that `parse_config` reads back to the same value:
/// contents always as base64 (they need not be UTF-8), every default spelled
/// out, services in their start order.
pub fn config_to_json(c: &Config) -> Value {
    let files: Vec<Value> = c
        .files
        .iter()
        .map(|f| {
            json!({
                "path": f.path,
                "mode": format!("{:04o}", f.mode),
                "contents_base64": b64::encode(&f.contents),
            })
        })
        .collect();
    let services: Vec<Value> = c
        .services
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "exec": s.exec,
                "env": s.env,
                "after": s.after,
                "restart": {
                    "policy": s.restart.policy.as_str(),
                    "backoff_initial_ms": s.restart.backoff.initial_ms,
                    "backoff_max_ms": s.restart.backoff.max_ms,
                    "stable_after_ms": s.restart.backoff.stable_after_ms,
                },
                "stop_timeout_ms": s.stop_timeout_ms,
            })
        })
        .collect();
    json!({
        "kind": "config",
        "version": basalt_common::config::CONFIG_VERSION,
        "generation": c.generation,
        "node": c.node,
        "hostname": c.hostname,
        "files": files,
        "services": services,
    })
}

/// A network section as JSON that `network::parse` reads back to the same
/// value: every default spelled out, default routes written as `default`.
pub fn network_to_json(n: &NetworkConfig) -> Value {
    let interfaces: Vec<Value> = n
        .interfaces
        .iter()
        .map(|i| {
            let mut obj = Map::new();
            match &i.link {
                LinkMatch::Name(name) => obj.insert("name".into(), json!(name)),
                LinkMatch::Mac(m) => obj.insert(
                    "mac".into(),
                    json!(format!(
                        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    )),
                ),
            };
            obj.insert("dhcp4".into(), json!(i.dhcp4));
            let addresses: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
            obj.insert("addresses".into(), json!(addresses));
            let routes: Vec<Value> = i
                .routes
                .iter()
                .map(|r| {
                    let mut route = Map::new();
                    let to = if r.is_default() && r.via.is_some() {
                        "default".to_string()
                    } else {
                        r.to.to_string()
                    };
                    route.insert("to".into(), json!(to));
                    if let Some(via) = r.via {
                        route.insert("via".into(), json!(via.to_string()));
                    }
                    if let Some(m) = r.metric {
                        route.insert("metric".into(), json!(m));
                    }
                    Value::Object(route)
                })
                .collect();
            obj.insert("routes".into(), json!(routes));
            if let Some(mtu) = i.mtu {
                obj.insert("mtu".into(), json!(mtu));
            }
            Value::Object(obj)
        })
        .collect();
    let servers: Vec<String> = n.dns.servers.iter().map(ToString::to_string).collect();
    json!({
        "interfaces": interfaces,
        "dns": {"servers": servers, "search": n.dns.search},
        "hostname_from_dhcp": n.hostname_from_dhcp,
    })
}

/// One command-line word, quoted when it holds whitespace. The tokenizer
/// never leaves a `"` in a word, so quoting the whole word is always enough.
pub fn cmdline_word(word: &str) -> String {
    if word.is_empty() || word.chars().any(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word.to_string()
    }
}

/// A command line that tokenizes to `params`.
pub fn render_cmdline(params: &[Param]) -> String {
    let words: Vec<String> = params
        .iter()
        .map(|p| match &p.value {
            None => cmdline_word(&p.key),
            Some(v) => cmdline_word(&format!("{}={v}", p.key)),
        })
        .collect();
    words.join(" ")
}

/// A command line that basalt-init parses to `p`, every key spelled out.
pub fn render_init_params(p: &basalt_init::boot_params::BootParams) -> String {
    use basalt_init::boot_params::{ImageSource, VarSource};
    let image = match &p.image {
        ImageSource::Initramfs => "initramfs".to_string(),
        ImageSource::Device(dev) => dev.clone(),
        ImageSource::PartLabel(label) => format!("partlabel:{label}"),
    };
    let mut words = vec![
        format!("basalt.image={image}"),
        format!("basalt.image_wait={}", p.image_wait.as_secs()),
        format!("basalt.root={}", p.root.as_str()),
        format!("basalt.verify={}", p.verify.as_str()),
        format!("basalt.lockdown={}", p.lockdown.as_str()),
        format!("basalt.on_error={}", p.on_error.as_str()),
        format!("basalt.error_delay={}", p.error_delay.as_secs()),
        format!("basalt.shutdown_timeout={}", p.shutdown_timeout.as_secs()),
        format!("basalt.run_size={}", p.run_size),
        format!("basalt.tmp_size={}", p.tmp_size),
        format!("basalt.var_size={}", p.var_size),
        format!("basalt.debug={}", if p.debug { "1" } else { "0" }),
    ];
    if let Some(agent) = &p.agent {
        words.push(format!("basalt.agent={agent}"));
    }
    // The default (look for VAR) has no spelling of its own: it is the key's absence.
    match &p.var {
        VarSource::Default => {}
        VarSource::Tmpfs => words.push("basalt.var=tmpfs".into()),
        VarSource::PartLabel(label) => words.push(format!("basalt.var=partlabel:{label}")),
    }
    let words: Vec<String> = words.iter().map(|w| cmdline_word(w)).collect();
    words.join(" ")
}
