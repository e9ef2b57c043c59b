//! The agent's framing and request parsing (common/src/proto.rs), and the
//! client's response parsing.
//!
//! Input: a cap selector byte, a cut count byte, that many little-endian u16
//! cut points, then the byte stream. The stream is fed to a FrameReader in
//! the chunks the cuts make. Checked:
//! - the reader never holds (or has allocated) more than the cap;
//! - the frames do not depend on the chunking: they equal a line-by-line
//!   model of the whole stream (each complete line gives exactly one frame,
//!   an oversize line gives TooLarge with its length, blank lines none), and
//!   what stays buffered is exactly the unfinished last line;
//! - each line parses to a request that writes back to the same request, or
//!   to an error whose response line is one line and reads back the same;
//! - each line read as a response writes back to the same response.
#![no_main]

use basalt_common::proto::{self, Frame, FrameReader, Response, MAX_FRAME};
use basalt_fuzz::{has_float, request_line, Input};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let cap = match selector >> 6 {
        3 => MAX_FRAME,
        _ => 1 + usize::from(selector & 63),
    };
    let cut_count = usize::from(input.byte() % 16);
    let mut cuts: Vec<usize> = (0..cut_count).map(|_| usize::from(input.u16())).collect();
    let stream = input.rest();
    for c in &mut cuts {
        *c %= stream.len() + 1;
    }
    cuts.sort_unstable();
    cuts.push(stream.len());

    let mut reader = FrameReader::new(cap);
    let mut frames = Vec::new();
    let mut from = 0;
    for &to in &cuts {
        frames.extend(reader.feed(&stream[from..to]));
        from = to;
        assert!(reader.buffered() <= cap, "buffered {} > cap {cap}", reader.buffered());
        assert!(reader.capacity() <= cap, "capacity {} > cap {cap}", reader.capacity());
    }

    let (want, unfinished) = model(stream, cap);
    assert_eq!(frames, want, "cap {cap}, cuts {cuts:?}");
    let held = if unfinished.len() > cap { 0 } else { unfinished.len() };
    assert_eq!(
        reader.buffered(),
        held,
        "cap {cap}: unfinished line of {}",
        unfinished.len()
    );

    for frame in &frames {
        if let Frame::Line(line) = frame {
            check_request(line);
            check_response(line);
        }
    }
});

/// What the frames of `stream` must be, read line by line, and the
/// unfinished last line.
fn model(stream: &[u8], cap: usize) -> (Vec<Frame>, &[u8]) {
    let mut lines: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let unfinished = lines.pop().unwrap_or_default();
    let mut frames = Vec::new();
    for line in lines {
        if line.len() > cap {
            frames.push(Frame::TooLarge { len: line.len() });
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            frames.push(Frame::Line(line.to_vec()));
        }
    }
    (frames, unfinished)
}

fn check_request(line: &[u8]) {
    match proto::parse_request(line) {
        Ok(req) => {
            assert!(
                req.id.is_u64()
                    || req
                        .id
                        .as_str()
                        .is_some_and(|s| !s.is_empty() && s.len() <= proto::MAX_ID_LEN),
                "accepted id {}",
                req.id
            );
            if let proto::Op::Logs { tail, .. } = &req.op {
                assert!(*tail <= proto::MAX_TAIL);
            }
            let again = request_line(&req);
            assert_eq!(again.last(), Some(&b'\n'));
            assert_eq!(proto::parse_request(&again[..again.len() - 1]), Ok(req.clone()));
            // The success response for it reads back with the same id.
            let ok = proto::ok_line(&req.id, json!({"op": req.op.name()}));
            assert_one_line(&ok);
            match proto::parse_response(&ok) {
                Ok(Response::Ok { id, .. }) => assert_eq!(id, req.id),
                other => panic!("ok_line read back as {other:?}"),
            }
        }
        Err(e) => {
            assert!(e.id.is_null() || e.id.is_u64() || e.id.is_string(), "error id {}", e.id);
            let err = proto::error_line(&e.id, e.code, &e.message);
            assert_one_line(&err);
            match proto::parse_response(&err) {
                Ok(Response::Error { id, code, message }) => {
                    assert_eq!(id, e.id);
                    assert_eq!(code, e.code.as_str());
                    assert_eq!(proto::ErrorCode::parse(&code), Some(e.code));
                    assert!(!message.chars().any(char::is_control), "{message:?}");
                    assert_eq!(message.chars().count(), e.message.chars().count());
                }
                other => panic!("error_line read back as {other:?}"),
            }
        }
    }
}

fn check_response(line: &[u8]) {
    let Ok(resp) = proto::parse_response(line) else {
        return;
    };
    let doc = match &resp {
        Response::Ok { id, result } => json!({"id": id, "ok": true, "result": result}),
        Response::Error { id, code, message } => {
            json!({"id": id, "ok": false, "error": {"code": code, "message": message}})
        }
    };
    if has_float(&doc) {
        return;
    }
    let text = serde_json::to_vec(&doc).expect("a Value always serialises");
    assert_eq!(proto::parse_response(&text).as_ref(), Ok(&resp));
    if let Response::Ok { id, result } = &resp {
        assert_eq!(
            proto::parse_response(&proto::ok_line(id, result.clone())).as_ref(),
            Ok(&resp)
        );
    }
    assert_eq!(resp.id(), &doc["id"]);
}

fn assert_one_line(line: &[u8]) {
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(
        line.iter().filter(|&&b| b == b'\n').count(),
        1,
        "{}",
        String::from_utf8_lossy(line)
    );
}
