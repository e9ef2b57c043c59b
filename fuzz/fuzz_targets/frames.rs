//! The agent's framing and request parsing (common/src/proto.rs), and the
//! client's response parsing.
//!
//! Input: a cap selector byte, a cut count byte, that many little-endian u16
//! cut points, then the byte stream. The stream is fed to a FrameReader in
//! the chunks the cuts make. Checked:
//! - the reader never holds (or has allocated) more than the cap;
//! - the frames do not depend on the chunking: they equal a frame-by-frame
//!   model of the whole stream (each complete line gives exactly one frame,
//!   an oversize line gives TooLarge with its length, blank lines none; a
//!   line that starts with the binary magic is a binary frame of its
//!   declared lengths, or TooLarge over the cap), and what stays buffered is
//!   exactly the unfinished last frame's bytes;
//! - each line (or binary frame) parses to a request that writes back to
//!   the same request, or to an error whose response line is one line and
//!   reads back the same;
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

    let (want, held) = model(stream, cap);
    assert_eq!(frames, want, "cap {cap}, cuts {cuts:?}");
    assert_eq!(reader.buffered(), held, "cap {cap}: the unfinished frame");

    for frame in frames {
        match frame {
            Frame::Line(line) => {
                check_request(&line, None);
                check_response(&line);
            }
            Frame::Binary { header, payload } => check_request(&header, Some(payload)),
            Frame::TooLarge { .. } => {}
        }
    }
});

/// What the frames of `stream` must be, read frame by frame, and how many
/// bytes of the unfinished last one the reader holds.
fn model(stream: &[u8], cap: usize) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let rest = &stream[i..];
        if rest.starts_with(&proto::BINARY_MAGIC) {
            let Some(lens) = rest.get(2..proto::BINARY_PREAMBLE) else {
                return (frames, 0);
            };
            let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let (h, p) = (len(&lens[..4]), len(&lens[4..]));
            let body = &rest[proto::BINARY_PREAMBLE..];
            if body.len() < h + p {
                return (frames, if h + p > cap { 0 } else { body.len() });
            }
            frames.push(match h + p > cap {
                true => Frame::TooLarge { len: h + p },
                false => Frame::Binary {
                    header: body[..h].to_vec(),
                    payload: body[h..h + p].to_vec(),
                },
            });
            i += proto::BINARY_PREAMBLE + h + p;
            continue;
        }
        if rest == [proto::BINARY_MAGIC[0]] {
            // The NUL that may begin a binary frame is not held.
            return (frames, 0);
        }
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return (frames, if rest.len() > cap { 0 } else { rest.len() });
        };
        let line = &rest[..end];
        i += end + 1;
        if line.len() > cap {
            frames.push(Frame::TooLarge { len: line.len() });
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            frames.push(Frame::Line(line.to_vec()));
        }
    }
    (frames, 0)
}

fn check_request(line: &[u8], payload: Option<Vec<u8>>) {
    let binary = payload.is_some();
    let parsed = match payload {
        None => proto::parse_request(line),
        Some(p) => proto::parse_binary_request(line, p),
    };
    match parsed {
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
            if binary {
                let proto::Op::UpgradeData { upgrade, offset, data } = &req.op else {
                    panic!("a binary frame gave {}", req.op.name());
                };
                let mut fields = serde_json::Map::new();
                fields.insert("upgrade".into(), json!(upgrade));
                fields.insert("offset".into(), json!(offset));
                let again = proto::binary_request(&req.id, "upgrade-data", fields, data);
                let frames = proto::FrameReader::new(proto::MAX_FRAME + 1024).feed(&again);
                let [Frame::Binary { header, payload }] = &frames[..] else {
                    panic!("binary_request read back as {frames:?}");
                };
                assert_eq!(proto::parse_binary_request(header, payload.clone()), Ok(req.clone()));
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
