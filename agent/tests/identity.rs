//! Node identity and the facts status reports.

mod support;

use basalt_common::command::CommandKind;
use serde_json::{json, Value};
use support::*;

#[test]
fn identity_falls_back_to_the_smbios_uuid() {
    let opts = Options {
        cmdline: "basalt.serial=none basalt.vsock_port=none".into(),
        smbios_uuid: Some("4C4C4544-0042-3510-8056-B4C04F4E4D32\n".into()),
        ..Options::default()
    };
    let node = TestNode::start("smbios", opts);
    let s = node.status();
    let uuid = "4c4c4544-0042-3510-8056-b4c04f4e4d32";
    assert_eq!(s["node"], uuid);
    assert_eq!(s["node_source"], "SMBIOS system UUID");
    let mut doc = config(1, vec![], vec![]);
    doc["node"] = json!(uuid);
    expect_ok(node.apply(&doc));
    let (code, message) = expect_error(node.apply(&config(2, vec![], vec![])));
    assert_eq!(code, "wrong_node");
    assert!(message.contains(uuid), "{message}");
}

#[test]
fn without_an_identity_nothing_bound_to_a_node_is_accepted() {
    let opts = Options {
        cmdline: "basalt.serial=none basalt.vsock_port=none".into(),
        smbios_uuid: Some("00000000-0000-0000-0000-000000000000\n".into()),
        ..Options::default()
    };
    let node = TestNode::start("noid", opts);
    let s = node.status();
    assert_eq!(s["node"], Value::Null);
    assert!(s["node_problem"].as_str().unwrap().contains("placeholder"), "{s:#}");
    let (code, message) = expect_error(node.apply(&config(1, vec![], vec![])));
    assert_eq!(code, "no_node_identity");
    assert!(message.contains("basalt.node="), "{message}");
    let cmd = node.command(CommandKind::Reboot);
    let (code, _) = expect_error(node.call("reboot", json!({"envelope": cmd.to_json()})));
    assert_eq!(code, "no_node_identity");
    assert_eq!(node.status()["state"], "maintenance");
}

#[test]
fn status_reports_boot_report_lockdown_and_versions() {
    let node = TestNode::start("facts", Options::default());
    let boot = json!({
        "image": {"version": "0.1.0+test", "sha256": "ab".repeat(32)},
        "steps": [{"name": "mount", "ms": 3}],
    });
    std::fs::write(node.root.join("run/basalt/boot.json"), boot.to_string()).unwrap();
    std::fs::write(
        node.root.join("run/basalt/log/init.log"),
        "init: hello\ninit: handoff\n",
    )
    .unwrap();
    let s = node.status();
    assert_eq!(s["boot"], boot);
    assert_eq!(s["image"], boot["image"]);
    assert_eq!(s["lockdown"], "integrity");
    assert_eq!(s["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(s["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(
        s["channels"],
        json!({"serial": null, "vsock_port": null, "unix": node.sock.display().to_string()})
    );
    assert_eq!(node.logs("init", 1), ["init: handoff"]);
    // Each status hands out a different nonce.
    assert_ne!(node.status()["nonce"], s["nonce"]);
}
