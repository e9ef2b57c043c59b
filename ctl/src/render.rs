//! Human-readable output. Each function takes a response's `result` object
//! and returns the text to print; missing fields show as `-`.

use serde_json::Value;
use std::fmt::Write;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn n(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Number(x)) => x.to_string(),
        _ => "-".into(),
    }
}

fn kib(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_u64) {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "-".into(),
    }
}

fn names(v: &Value, key: &str) -> String {
    let list: Vec<&str> = v
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

pub fn status(r: &Value) -> String {
    let mut out = String::new();
    let node = match (
        r.get("node").and_then(Value::as_str),
        r.get("node_source").and_then(Value::as_str),
    ) {
        (Some(id), Some(src)) => format!("{id} ({src})"),
        _ => format!("none: {}", s(r, "node_problem")),
    };
    let _ = writeln!(out, "node        {node}");
    let mut state = s(r, "state").to_string();
    if let Some(kind) = r.get("shutting_down").and_then(Value::as_str) {
        let _ = write!(state, ", shutting down ({kind})");
    }
    let _ = writeln!(out, "state       {state}");
    let _ = writeln!(
        out,
        "agent       {}, peak RSS {}",
        s(r, "agent_version"),
        kib(r, "agent_peak_rss_kib")
    );
    let _ = writeln!(out, "init        peak RSS {}", kib(r, "init_peak_rss_kib"));
    let _ = writeln!(out, "kernel      {}", s(r, "kernel"));
    let _ = writeln!(out, "lockdown    {}", s(r, "lockdown"));
    // The boot report's image: its version and digest are what identify it.
    let image = match r.get("image") {
        Some(img @ Value::Object(_)) => {
            let sha = s(img, "sha256");
            format!("{}, sha256 {}", s(img, "version"), &sha[..sha.len().min(16)])
        }
        _ => "-".into(),
    };
    let _ = writeln!(out, "image       {image}");
    match r.get("config") {
        Some(c @ Value::Object(_)) => {
            let digest = s(c, "digest");
            let _ = writeln!(
                out,
                "config      generation {}, digest {}, key {}, hostname {}",
                n(c, "generation"),
                &digest[..digest.len().min(16)],
                s(c, "key_id"),
                s(c, "hostname")
            );
        }
        _ => {
            let _ = writeln!(out, "config      none (maintenance mode)");
        }
    }
    upgrades(&mut out, r.get("upgrades").unwrap_or(&Value::Null));
    if let Some(Value::Object(m)) = r.get("apply_to_exec_ms") {
        if !m.is_empty() {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v} ms")).collect();
            let _ = writeln!(out, "apply→exec  {}", parts.join(", "));
        }
    }
    let services = r.get("services").and_then(Value::as_array).cloned().unwrap_or_default();
    if services.is_empty() {
        let _ = writeln!(out, "services    none");
    } else {
        let _ = writeln!(out, "services");
        let _ = writeln!(
            out,
            "  {:<16} {:<9} {:>7} {:>8}  LAST EXIT",
            "NAME", "STATE", "PID", "RESTARTS"
        );
        for svc in &services {
            let mut state = s(svc, "state").to_string();
            if let Some(ms) = svc.get("next_start_in_ms").and_then(Value::as_u64) {
                let _ = write!(state, " {ms}ms");
            }
            let last = svc
                .get("last_exit")
                .and_then(|e| e.get("status"))
                .and_then(Value::as_str)
                .unwrap_or("-");
            let _ = writeln!(
                out,
                "  {:<16} {:<9} {:>7} {:>8}  {last}",
                s(svc, "name"),
                state,
                n(svc, "pid"),
                n(svc, "restarts")
            );
        }
    }
    if let Some(ch) = r.get("channels") {
        let _ = writeln!(
            out,
            "channels    serial {}, vsock port {}",
            s(ch, "serial"),
            n(ch, "vsock_port")
        );
    }
    out
}

pub fn applied(r: &Value) -> String {
    let svc = r.get("services").cloned().unwrap_or(Value::Null);
    let digest = s(r, "digest");
    format!(
        "applied generation {} to node {} (config {}, key {})\n  started: {}\n  restarted: {}\n  stopped: {}\n  unchanged: {}\n",
        n(r, "generation"),
        s(r, "node"),
        &digest[..digest.len().min(16)],
        s(r, "key_id"),
        names(&svc, "started"),
        names(&svc, "restarted"),
        names(&svc, "stopped"),
        names(&svc, "unchanged"),
    ) + &trial(r)
}

/// The trial line of an apply made with --try.
fn trial(r: &Value) -> String {
    match r.get("trial").filter(|t| !t.is_null()) {
        None => String::new(),
        Some(t) => {
            let back = match t.get("back_to").and_then(Value::as_u64) {
                Some(g) => format!("generation {g}"),
                None => "maintenance mode".into(),
            };
            format!(
                "  ON TRIAL: nothing persisted; back to {back} in {:.0} s unless `basaltctl confirm`\n",
                t.get("reverts_in_ms").and_then(Value::as_f64).unwrap_or(0.0) / 1000.0
            )
        }
    }
}

pub fn command(r: &Value) -> String {
    if let Some(g) = r.get("confirmed") {
        return format!("generation {g} confirmed: persisted, no longer on trial\n");
    }
    format!(
        "{} accepted; stopping services in reverse order ({}), then the node goes down\n",
        s(r, "accepted"),
        names(r, "stopping")
    )
}

/// Status's `upgrades`: one line per slot, then the last outcome.
fn upgrades(out: &mut String, u: &Value) {
    if u.get("available") != Some(&Value::Bool(true)) {
        if let Some(why) = u.get("why_not").and_then(Value::as_str) {
            let _ = writeln!(out, "slots       none: {why}");
        }
        return;
    }
    for slot in u.get("slots").and_then(Value::as_array).into_iter().flatten() {
        let hash = s(slot, "root_hash");
        let _ = writeln!(
            out,
            "slot        {} {}: {} (version {}, root hash {})",
            s(slot, "slot"),
            slot.get("entry").and_then(Value::as_str).unwrap_or("no entry"),
            s(slot, "state"),
            s(slot, "version"),
            &hash[..hash.len().min(16)]
        );
    }
    if let Some(t) = u.get("transfer").filter(|t| t.is_object()) {
        let _ = writeln!(
            out,
            "upgrade     receiving {} of {} bytes for {}",
            t["received"],
            t["total"],
            s(t, "target")
        );
    }
    if let Some(notice) = u.get("notice").and_then(Value::as_str) {
        let _ = writeln!(out, "upgrade     {notice}");
    }
    let last = &u["last"];
    if let Some(up) = last.get("upgrade").filter(|x| x.is_object()) {
        let _ = writeln!(
            out,
            "last        upgrade to {} (version_seq {}) from {}: {}; image version floor {}",
            s(up, "version"),
            up["version_seq"],
            s(up, "from_version"),
            s(up, "outcome"),
            last["image_version_floor"]
        );
    }
}

/// The answer to `upgrade` (a staged slot) or `rollback`.
pub fn upgrade(r: &Value) -> String {
    if let Some(st) = r.get("staged") {
        return format!(
            "{} {} (version_seq {}) staged as {} with {} tries; {}\n",
            s(st, "slot"),
            s(st, "version"),
            st["version_seq"],
            s(st, "entry"),
            st["tries"],
            if r["rebooting"] == true {
                "rebooting into it"
            } else {
                "it boots at the next reboot"
            }
        );
    }
    if let Some(rb) = r.get("rollback") {
        return format!(
            "rolling back to {} {} ({}); stopping services ({}), then the node reboots\n",
            s(rb, "slot"),
            s(rb, "version"),
            s(rb, "entry"),
            names(r, "stopping")
        );
    }
    format!("{r}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_shows_services_and_config() {
        let r = json!({
            "state": "configured", "node": "n1", "node_source": "SMBIOS system UUID",
            "agent_version": "0.1.0", "agent_peak_rss_kib": 2048, "init_peak_rss_kib": 512,
            "kernel": "6.1.0", "lockdown": "integrity",
            "image": {"version": "0.1.0", "sha256": "00112233445566778899aabbccddeeff", "loop_device": "/dev/loop0"},
            "config": {"generation": 3, "digest": "0123456789abcdef0123", "key_id": "k", "hostname": "h"},
            "apply_to_exec_ms": {"kubelet": 1.5},
            "services": [{"name": "kubelet", "state": "running", "pid": 42, "restarts": 2,
                          "last_exit": {"status": "killed by SIGKILL"}}],
            "channels": {"serial": "/dev/ttyS1", "vsock_port": 1024}
        });
        let text = status(&r);
        for needle in [
            "node        n1 (SMBIOS system UUID)",
            "agent       0.1.0, peak RSS 2.0 MiB",
            "image       0.1.0, sha256 0011223344556677\n",
            "config      generation 3, digest 0123456789abcdef, key k, hostname h",
            "apply→exec  kubelet 1.5 ms",
            "  kubelet          running        42        2  killed by SIGKILL",
            "channels    serial /dev/ttyS1, vsock port 1024",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let bare = status(&json!({"state": "maintenance", "node": null, "node_problem": "no uuid"}));
        assert!(bare.contains("node        none: no uuid"), "{bare}");
        assert!(bare.contains("config      none (maintenance mode)"), "{bare}");
    }

    #[test]
    fn status_shows_both_slots_and_the_last_upgrade() {
        let r = json!({"state": "configured", "upgrades": {
            "available": true, "booted": "ROOT-B",
            "slots": [
                {"slot": "ROOT-A", "entry": "basalt-1-a.efi", "state": "installed", "version": "0.1", "root_hash": "aa".repeat(32)},
                {"slot": "ROOT-B", "entry": "basalt-2-b+2-1.efi", "state": "booted, default, trying, 2 left", "version": "0.2", "root_hash": "bb".repeat(32)}
            ],
            "notice": null,
            "last": {"image_version_floor": 4, "upgrade": {"version": "0.2", "version_seq": 5, "from_version": "0.1", "outcome": "staged"}}
        }});
        let text = status(&r);
        for needle in [
            "slot        ROOT-A basalt-1-a.efi: installed (version 0.1, root hash aaaaaaaaaaaaaaaa)",
            "slot        ROOT-B basalt-2-b+2-1.efi: booted, default, trying, 2 left (version 0.2,",
            "last        upgrade to 0.2 (version_seq 5) from 0.1: staged; image version floor 4",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let none = status(&json!({"upgrades": {"available": false, "why_not": "not a disk boot"}}));
        assert!(none.contains("slots       none: not a disk boot"), "{none}");
    }

    #[test]
    fn applied_lists_the_plan() {
        let r = json!({"generation": 2, "node": "n", "digest": "ab", "key_id": "k",
                       "services": {"started": ["a", "b"], "restarted": [], "stopped": ["c"], "unchanged": []}});
        assert_eq!(
            applied(&r),
            "applied generation 2 to node n (config ab, key k)\n  started: a, b\n  restarted: -\n  stopped: c\n  unchanged: -\n"
        );
    }
}
