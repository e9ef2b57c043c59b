//! The host end of the provisioning serial port (guest ttyS1): QEMU listens
//! on a unix socket and relays its bytes to and from the UART. Output the
//! guest writes while no client is connected is dropped by QEMU, so connect
//! before the guest speaks, or have the host speak first.

use crate::error::QemuError;
use crate::vsock::retryable_connect;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Connects to the provisioning socket, retrying until `timeout` while
/// QEMU has not created it yet.
pub fn connect_prov(path: &Path, timeout: Duration) -> Result<UnixStream, QemuError> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) if retryable_connect(&e) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(QemuError::ProvTimeout {
                        path: path.to_path_buf(),
                        waited,
                        last: e,
                    });
                }
                std::thread::sleep(RETRY_INTERVAL.min(timeout - waited));
            }
            Err(source) => {
                return Err(QemuError::ProvConnect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn waits_for_the_socket_to_appear() {
        let path = std::env::temp_dir().join(format!("basalt-qemu-prov-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                let listener = UnixListener::bind(&path).unwrap();
                let (mut conn, _) = listener.accept().unwrap();
                conn.write_all(b"hi").unwrap();
            })
        };
        let mut stream = connect_prov(&path, Duration::from_secs(10)).unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
        server.join().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn gives_up_at_the_timeout() {
        let path = Path::new("/nonexistent/basalt-prov.sock");
        let started = Instant::now();
        let err = connect_prov(path, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, QemuError::ProvTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
