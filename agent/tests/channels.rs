//! The agent's channels: a serial port (a pty pair here) and stream sockets.
//! Garbage or a dropped connection on one must never disturb another.

mod support;

use basaltctl::client::Client;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use serde_json::{json, Map};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use support::*;

/// A pty whose slave the agent opens as its serial port.
fn pty() -> (PtyMaster, String) {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave = ptsname_r(&master).unwrap();
    (master, slave)
}

fn serial_node(tag: &str) -> (TestNode, PtyMaster) {
    let (master, slave) = pty();
    let opts = Options {
        cmdline: format!("basalt.node={NODE} basalt.serial={slave} basalt.vsock_port=none"),
        ..Options::default()
    };
    let node = TestNode::start(tag, opts);
    node.wait_status("serial open", |_| {
        node.stderr().contains(&format!("provisioning on serial {slave}"))
    });
    (node, master)
}

fn serial_client(master: &PtyMaster) -> Client {
    let fd = master.as_fd().try_clone_to_owned().unwrap();
    Client::from_fd("pty", fd, TIMEOUT).unwrap()
}

#[test]
fn garbage_on_serial_gets_error_frames_and_never_disturbs_the_socket() {
    let (node, master) = serial_node("serial-garbage");
    let mut serial = serial_client(&master);
    let cases: &[(&[u8], &str)] = &[
        (b"\x00\xff\xfe line noise\r\n", "malformed_json"),
        (b"{not json}\n", "malformed_json"),
        (b"[1,2,3]\n", "bad_request"),
        (b"{\"id\":1,\"op\":\"status\",\"extra\":true}\n", "bad_request"),
    ];
    for (bytes, code) in cases {
        serial.send(bytes).unwrap();
        let (got, message) = expect_error(next_response(&mut serial));
        assert_eq!(&got, code, "{bytes:?}: {message}");
        // The socket client is unaffected between every bit of garbage.
        assert_eq!(node.status()["state"], "maintenance");
    }

    // 3 MiB without a newline, streamed from another thread while the socket
    // client keeps asking for status: every answer must stay prompt.
    let mut flood = serial_client(&master);
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..48 {
            flood.send(&chunk).unwrap();
        }
        flood.send(b"\n").unwrap();
        flood
    });
    let (mut slowest, mut asked) = (Duration::ZERO, 0);
    loop {
        let started = Instant::now();
        node.status();
        slowest = slowest.max(started.elapsed());
        asked += 1;
        if writer.is_finished() {
            break;
        }
    }
    println!("{asked} status calls during the flood, slowest {slowest:?}");
    let mut flood = writer.join().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "a status took {slowest:?} during the flood"
    );
    let (code, message) = expect_error(next_response(&mut flood));
    assert_eq!(code, "frame_too_large", "{message}");
    assert!(message.contains("request line of 3145728 bytes"), "{message}");

    // Resynchronised: a real request on the serial line works.
    let status = serial.call("status", Map::new()).unwrap();
    assert_eq!(expect_ok(status)["node"], NODE);
}

#[test]
fn apply_over_serial() {
    let (node, master) = serial_node("serial-apply");
    let mut serial = serial_client(&master);
    // Leftover partial line from "an earlier session": the client's resync
    // newline turns it into one error response, which the client skips.
    serial.send(b"{\"id\":\"stale\",\"op\":").unwrap();
    let mut resynced = serial_client(&master);
    let doc = config(1, vec![node.service_spec("svc", "while :; do sleep 1; done")], vec![]);
    let fields = json!({"envelope": node.sign(&doc).to_json()})
        .as_object()
        .cloned()
        .unwrap();
    let r = expect_ok(resynced.call("apply", fields).unwrap());
    assert_eq!(r["generation"], 1);
    let svc = node.wait_running("svc");
    let over_serial = expect_ok(resynced.call("status", Map::new()).unwrap());
    assert_eq!(service_in(&over_serial, "svc").unwrap()["pid"], svc["pid"]);
}

#[test]
fn a_dropped_or_silent_connection_does_not_block_others() {
    let node = TestNode::start("conns", Options::default());
    // Half a request, then the client vanishes.
    {
        let mut c = node.client();
        c.send(b"{\"id\":1,\"op\":\"sta").unwrap();
    }
    // A client that sends a request and never reads its responses.
    let mut silent = std::os::unix::net::UnixStream::connect(&node.sock).unwrap();
    use std::io::Write;
    for _ in 0..200 {
        silent
            .write_all(b"{\"id\":1,\"op\":\"logs\",\"source\":\"agent\",\"tail\":1000}\n")
            .unwrap();
    }
    // A client holding an idle connection open.
    let _idle = std::os::unix::net::UnixStream::connect(&node.sock).unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(node.status()["state"], "maintenance");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// A serial line cannot tell that its client left: half a request from one
/// client is dropped after 2 s of silence, so the next client's first
/// request is answered instead of being glued to it.
#[test]
fn an_abandoned_half_request_on_serial_does_not_swallow_the_next_one() {
    let (node, master) = serial_node("serial-half");
    let mut first = serial_client(&master);
    first.send(b"{\"id\": \"half\", \"op\": \"sta").unwrap();
    drop(first);
    node.wait_status("the partial line dropped", |_| {
        node.stderr()
            .contains("bytes of an unfinished request after 2 s without a newline")
    });
    // A client that does not send basaltctl's leading newline.
    let mut second = serial_client(&master);
    second.send(b"{\"id\": \"next\", \"op\": \"status\"}\n").unwrap();
    let r = next_response(&mut second);
    assert_eq!(r.id(), &json!("next"));
    assert_eq!(expect_ok(r)["state"], "maintenance");
}
