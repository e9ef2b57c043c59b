//! Where the agent is, and how to reach it.
//!
//! - `unix:PATH`: a unix socket that carries the protocol directly: QEMU's
//!   chardev socket for the provisioning serial port, or the agent's own
//!   `--listen-unix` socket.
//! - `vsock-uds:PATH:PORT`: vhost-device-vsock's host-side socket; the
//!   client writes `CONNECT <port>\n` and reads `OK ...\n` before speaking.
//! - `vsock:CID:PORT`: AF_VSOCK, on a host with a vsock transport.
//! - `serial:/dev/ttyX`: a serial device, put in raw mode at 115200 baud.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    VsockUds { path: PathBuf, port: u32 },
    Vsock { cid: u32, port: u32 },
    Serial(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError(pub String);

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; endpoints are unix:PATH, vsock-uds:PATH:PORT, vsock:CID:PORT or serial:/dev/ttyX",
            self.0
        )
    }
}

fn port(text: &str, whole: &str) -> Result<u32, EndpointError> {
    text.parse()
        .map_err(|_| EndpointError(format!("{whole:?}: {text:?} is not a port number")))
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| EndpointError(format!("{text:?} has no scheme")))?;
        let nonempty = |s: &str| {
            if s.is_empty() {
                Err(EndpointError(format!("{text:?} has an empty path")))
            } else {
                Ok(PathBuf::from(s))
            }
        };
        match scheme {
            "unix" => Ok(Endpoint::Unix(nonempty(rest)?)),
            "serial" => Ok(Endpoint::Serial(nonempty(rest)?)),
            "vsock-uds" => {
                // The path may itself hold colons; the port is after the last one.
                let (path, p) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| EndpointError(format!("{text:?} needs PATH:PORT")))?;
                Ok(Endpoint::VsockUds {
                    path: nonempty(path)?,
                    port: port(p, text)?,
                })
            }
            "vsock" => {
                let (cid, p) = rest
                    .split_once(':')
                    .ok_or_else(|| EndpointError(format!("{text:?} needs CID:PORT")))?;
                let cid = cid
                    .parse()
                    .map_err(|_| EndpointError(format!("{text:?}: {cid:?} is not a CID")))?;
                Ok(Endpoint::Vsock {
                    cid,
                    port: port(p, text)?,
                })
            }
            other => Err(EndpointError(format!("unknown endpoint scheme {other:?}"))),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::VsockUds { path, port } => write!(f, "vsock-uds:{}:{port}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Serial(p) => write!(f, "serial:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("unix:/tmp/prov.sock", Endpoint::Unix("/tmp/prov.sock".into())),
            ("serial:/dev/ttyUSB0", Endpoint::Serial("/dev/ttyUSB0".into())),
            ("vsock:4:1024", Endpoint::Vsock { cid: 4, port: 1024 }),
            (
                "vsock-uds:/run/v.sock:1024",
                Endpoint::VsockUds {
                    path: "/run/v.sock".into(),
                    port: 1024,
                },
            ),
            (
                "vsock-uds:/odd:dir/v.sock:9",
                Endpoint::VsockUds {
                    path: "/odd:dir/v.sock".into(),
                    port: 9,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Endpoint::parse(text), Ok(want.clone()), "{text}");
            assert_eq!(want.to_string(), text);
        }
        let bad = [
            ("/tmp/x", "has no scheme"),
            ("unix:", "has an empty path"),
            ("tcp:1.2.3.4:5", "unknown endpoint scheme \"tcp\""),
            ("vsock:4", "needs CID:PORT"),
            ("vsock:x:1", "\"x\" is not a CID"),
            ("vsock-uds:/p:http", "\"http\" is not a port number"),
            ("vsock-uds:/p", "needs PATH:PORT"),
        ];
        for (text, needle) in bad {
            let err = Endpoint::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
