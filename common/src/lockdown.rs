//! Reading the kernel lockdown level from securityfs.

/// The active level in `/sys/kernel/security/lockdown`: the bracketed word,
/// e.g. `integrity` from `none [integrity] confidentiality`.
pub fn active_level(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("[none] integrity confidentiality\n", Some("none")),
            ("none [integrity] confidentiality", Some("integrity")),
            ("none integrity [confidentiality]", Some("confidentiality")),
            ("none integrity", None),
            ("[unterminated", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(active_level(text), want, "{text:?}");
        }
    }
}
