//! Client-supplied text, cut to size before it is echoed.
//!
//! Anything a client sends may come back in an error message or a log line:
//! an unknown op, a key, a path, a log source. Echoed whole, a 200 KB op
//! name becomes a 200 KB console line, which holds the agent's one thread
//! for seconds at 115200 baud. Every such piece goes through [`clip`] first,
//! so no echoed piece is longer than [`MAX_ECHO`] bytes plus its marker.

use std::fmt;

/// The most bytes of one piece of client text that are echoed.
pub const MAX_ECHO: usize = 128;

/// A piece of client text, shown cut to [`MAX_ECHO`] bytes (on a character
/// boundary) followed by `…(+N bytes)` when it was longer. `{:?}` quotes the
/// kept part and leaves the marker outside the quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Clip<'a> {
    kept: &'a str,
    cut: usize,
}

/// Wraps `text` for echoing.
pub fn clip(text: &str) -> Clip<'_> {
    let mut end = text.len().min(MAX_ECHO);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Clip {
        kept: &text[..end],
        cut: text.len() - end,
    }
}

impl Clip<'_> {
    /// True when part of the text was left out.
    pub fn is_cut(&self) -> bool {
        self.cut > 0
    }

    fn marker(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cut > 0 {
            write!(f, "…(+{} bytes)", self.cut)?;
        }
        Ok(())
    }
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kept)?;
        self.marker(f)
    }
}

impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kept)?;
        self.marker(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_on_char_boundaries_with_a_marker() {
        let long = "x".repeat(200_000);
        let accents = "é".repeat(100); // 200 bytes, 2 each
        let cases: [(&str, String, String); 5] = [
            ("", String::new(), "\"\"".into()),
            ("status", "status".into(), "\"status\"".into()),
            (&long[..128], "x".repeat(128), format!("{:?}", "x".repeat(128))),
            (
                &long,
                format!("{}…(+199872 bytes)", "x".repeat(128)),
                format!("{:?}…(+199872 bytes)", "x".repeat(128)),
            ),
            (
                &accents,
                format!("{}…(+72 bytes)", "é".repeat(64)),
                format!("{:?}…(+72 bytes)", "é".repeat(64)),
            ),
        ];
        for (text, display, debug) in cases {
            assert_eq!(clip(text).to_string(), display);
            assert_eq!(format!("{:?}", clip(text)), debug);
            assert_eq!(clip(text).is_cut(), text.len() > MAX_ECHO);
        }
        // A multi-byte character straddling the limit is left out whole.
        let straddle = format!("{}é", "a".repeat(127));
        assert_eq!(clip(&straddle).to_string(), format!("{}…(+2 bytes)", "a".repeat(127)));
    }
}
