//! Which node this is. A signed config or command names the node it is for,
//! and the agent accepts it only if that name is this node's identity:
//!
//! 1. `basalt.node=ID` on the kernel command line, if present;
//! 2. else the SMBIOS system UUID (`/sys/class/dmi/id/product_uuid`,
//!    lower-cased; QEMU sets it with `-uuid`);
//! 3. else none, and the agent refuses everything that must be bound to a node.
//!
//! `status` reports it: that is how an operator learns it.

use basalt_common::config::check_node_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdentity {
    Known { id: String, source: &'static str },
    Unknown { reason: String },
}

/// UUIDs firmware writes when it has none of its own. Two machines with the
/// same placeholder must not be able to take each other's configuration.
const PLACEHOLDER_UUIDS: [&str; 3] = [
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
];

/// Decides the identity from the command line's `basalt.node` (if any) and
/// the SMBIOS UUID file's contents (or why it could not be read).
pub fn resolve(cmdline_node: Option<&str>, smbios: Result<String, String>) -> NodeIdentity {
    if let Some(id) = cmdline_node {
        // An explicit but invalid id is a mistake to surface, not to paper over
        // with the UUID: the operator meant a specific name.
        return match check_node_id(id) {
            Ok(()) => NodeIdentity::Known {
                id: id.into(),
                source: "basalt.node on the kernel command line",
            },
            Err(why) => NodeIdentity::Unknown {
                reason: format!("basalt.node on the kernel command line: {why}"),
            },
        };
    }
    let uuid = match smbios {
        Ok(text) => text.trim().to_ascii_lowercase(),
        Err(why) => {
            return NodeIdentity::Unknown {
                reason: format!("no basalt.node= on the kernel command line and no SMBIOS system UUID ({why})"),
            }
        }
    };
    if PLACEHOLDER_UUIDS.contains(&uuid.as_str()) {
        return NodeIdentity::Unknown {
            reason: format!(
                "the SMBIOS system UUID {uuid} is a placeholder; set basalt.node= on the kernel command line"
            ),
        };
    }
    match check_node_id(&uuid) {
        Ok(()) => NodeIdentity::Known {
            id: uuid,
            source: "SMBIOS system UUID",
        },
        Err(why) => NodeIdentity::Unknown {
            reason: format!("SMBIOS system UUID: {why}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Command line value, SMBIOS read, and the identity (or a piece of the reason there is none).
    type Case<'a> = (Option<&'a str>, Result<String, String>, Result<NodeIdentity, &'a str>);

    #[test]
    fn table() {
        let uuid = "4C4C4544-0042-3510-8056-B4C04F4E4D32\n";
        let known = |id: &str, source| NodeIdentity::Known { id: id.into(), source };
        let cases: Vec<Case> = vec![
            (
                Some("worker-1"),
                Ok(uuid.into()),
                Ok(known("worker-1", "basalt.node on the kernel command line")),
            ),
            (
                None,
                Ok(uuid.into()),
                Ok(known("4c4c4544-0042-3510-8056-b4c04f4e4d32", "SMBIOS system UUID")),
            ),
            (
                Some("a b"),
                Ok(uuid.into()),
                Err("basalt.node on the kernel command line"),
            ),
            (
                None,
                Err("No such file or directory".into()),
                Err("no SMBIOS system UUID (No such file"),
            ),
            (
                None,
                Ok("00000000-0000-0000-0000-000000000000\n".into()),
                Err("is a placeholder"),
            ),
            (None, Ok("\n".into()), Err("SMBIOS system UUID: node id \"\"")),
        ];
        for (cmdline, smbios, want) in cases {
            let got = resolve(cmdline, smbios.clone());
            match (&got, want) {
                (got, Ok(want)) => assert_eq!(got, &want, "{cmdline:?} {smbios:?}"),
                (NodeIdentity::Unknown { reason }, Err(needle)) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                (got, Err(needle)) => panic!("{cmdline:?} {smbios:?}: got {got:?}, want error {needle}"),
            }
        }
    }
}
