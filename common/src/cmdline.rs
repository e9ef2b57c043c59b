//! Tokenizing the kernel command line (`/proc/cmdline`) the way the kernel
//! does: words split on whitespace, double quotes group, `key=value` pairs.
//! Interpreting `basalt.*` keys is each program's own business.

/// One word of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    /// `None` for a bare flag (`quiet`), `Some("")` for `key=`.
    pub value: Option<String>,
}

/// Splits a command line into parameters. Everything after a lone `--` is
/// for init's argv, not kernel parameters, and is dropped here.
pub fn tokenize(cmdline: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !quoted {
                break;
            }
            chars.next();
            if c == '"' {
                quoted = !quoted;
            } else {
                word.push(c);
            }
        }
        if word == "--" {
            break;
        }
        let param = match word.split_once('=') {
            Some((k, v)) => Param {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => Param { key: word, value: None },
        };
        params.push(param);
    }
    params
}

/// The value of the last occurrence of `key` (the kernel's rule too: later wins).
pub fn last<'a>(params: &'a [Param], key: &str) -> Option<&'a Param> {
    params.iter().rev().find(|p| p.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param {
            key: key.into(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Vec<Param>)] = &[
            ("", vec![]),
            ("  \n", vec![]),
            ("quiet", vec![p("quiet", None)]),
            (
                "console=ttyS0 basalt.lockdown=none\n",
                vec![p("console", Some("ttyS0")), p("basalt.lockdown", Some("none"))],
            ),
            ("a= b==c", vec![p("a", Some("")), p("b", Some("=c"))]),
            ("x=\"one two\" y", vec![p("x", Some("one two")), p("y", None)]),
            ("\"x=a b\"", vec![p("x", Some("a b"))]),
            ("a -- b=c", vec![p("a", None)]),
            ("a --b", vec![p("a", None), p("--b", None)]),
            ("x=\"unterminated rest", vec![p("x", Some("unterminated rest"))]),
        ];
        for (line, want) in cases {
            assert_eq!(&tokenize(line), want, "{line:?}");
        }
    }

    #[test]
    fn last_wins() {
        let params = tokenize("k=1 k=2 other");
        assert_eq!(last(&params, "k").and_then(|p| p.value.as_deref()), Some("2"));
        assert_eq!(last(&params, "missing"), None);
    }
}
