//! Which certificate a TLS client gets, by the name it asks for (SNI): a certificate whose DNS names
//! include the name exactly comes first, then one with a wildcard (`*.example.com`) covering it, then
//! the first certificate configured, which is also what clients that send no name get (a client
//! asking for an IP address, or an old one). Names compare without regard to ASCII case, and a
//! wildcard stands for exactly one whole leftmost label, as RFC 6125 has clients check it.

/// The DNS names one certificate covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Exact names, lower-cased.
    exact: Vec<String>,
    /// For each `*.suffix` name: the suffix, lower-cased, without the `*.`.
    wildcard: Vec<String>,
}

impl Names {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Names {
        let mut set = Names::default();
        for name in names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => set.wildcard.push(suffix.to_string()),
                _ => set.exact.push(name),
            }
        }
        set
    }

    fn matches_exactly(&self, name: &str) -> bool {
        self.exact.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn matches_wildcard(&self, name: &str) -> bool {
        // One label, then the suffix: "a.example.com" is covered by "*.example.com", "example.com" and
        // "a.b.example.com" are not.
        let Some((label, rest)) = name.split_once('.') else {
            return false;
        };
        !label.is_empty() && self.wildcard.iter().any(|s| s.eq_ignore_ascii_case(rest))
    }

    /// Every name, for logs: exact ones, then wildcards.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self
            .exact
            .iter()
            .cloned()
            .chain(self.wildcard.iter().map(|s| format!("*.{s}")))
            .collect();
        if all.is_empty() {
            "no DNS names".to_string()
        } else {
            all.join(", ")
        }
    }
}

/// The configured certificates (any `T`: rustls's certified keys in use, plain values in tests) with
/// their names, in configuration order.
#[derive(Debug)]
pub struct Chooser<T> {
    entries: Vec<(Names, T)>,
}

impl<T> Chooser<T> {
    pub fn new(entries: Vec<(Names, T)>) -> Chooser<T> {
        Chooser { entries }
    }

    /// The certificate for a client that asked for `server_name` (`None`: it sent no name).
    pub fn choose(&self, server_name: Option<&str>) -> Option<&T> {
        let default = self.entries.first().map(|(_, t)| t);
        let Some(name) = server_name.map(|n| n.trim_end_matches('.')) else {
            return default;
        };
        self.entries
            .iter()
            .find(|(names, _)| names.matches_exactly(name))
            .or_else(|| {
                self.entries
                    .iter()
                    .find(|(names, _)| names.matches_wildcard(name))
            })
            .map(|(_, t)| t)
            .or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_by_name() {
        let chooser = Chooser::new(vec![
            (Names::new(["a.example", "www.a.example"]), "a"),
            (Names::new(["*.b.example", "b.example"]), "b"),
            (Names::new(["*.wild.example"]), "wild"),
            (Names::new(["exact.wild.example"]), "exact"),
            (Names::new([]), "nameless"),
        ]);
        let cases: &[(Option<&str>, &str)] = &[
            (None, "a"),
            (Some("a.example"), "a"),
            (Some("A.EXAMPLE"), "a"),
            (Some("www.a.example"), "a"),
            (Some("a.example."), "a"),
            (Some("b.example"), "b"),
            (Some("x.b.example"), "b"),
            (Some("X.B.Example"), "b"),
            // A wildcard covers one label only.
            (Some("x.y.b.example"), "a"),
            (Some(".b.example"), "a"),
            // An exact name wins over an earlier wildcard.
            (Some("exact.wild.example"), "exact"),
            (Some("other.wild.example"), "wild"),
            (Some("wild.example"), "a"),
            // Unknown names get the first certificate.
            (Some("unknown.example"), "a"),
            (Some("localhost"), "a"),
            (Some(""), "a"),
        ];
        for (name, expected) in cases {
            assert_eq!(chooser.choose(*name), Some(expected), "name {name:?}");
        }
        let empty: Chooser<&str> = Chooser::new(Vec::new());
        assert_eq!(empty.choose(Some("a.example")), None);
    }

    #[test]
    fn names_are_normalised() {
        let names = Names::new(["WWW.Example.COM.", "*.Example.com", "*.", "plain"]);
        assert_eq!(names.describe(), "www.example.com, *, plain, *.example.com");
        assert!(names.matches_exactly("www.example.com"));
        assert!(names.matches_wildcard("api.EXAMPLE.com"));
        assert!(!names.matches_wildcard("example.com"));
        assert_eq!(Names::new([]).describe(), "no DNS names");
    }
}
