//! What part of serving a replica of a fleet takes on (prefill/decode disaggregation).

/// A replica's role: which requests a router sends it and at which phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Computes prompts and decodes them (colocated serving; every replica outside a
    /// disaggregated fleet).
    #[default]
    Both,
    /// Computes prompts and their first token, then hands each request to a decode replica.
    Prefill,
    /// Takes requests over after their first token and decodes them; routers send it no
    /// prompts.
    Decode,
}

impl Role {
    /// Every role, in the order `--role` lists them.
    pub const ALL: [Role; 3] = [Role::Both, Role::Prefill, Role::Decode];

    /// Its name (`both`, `prefill`, `decode`), as flags and registrations spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::Prefill => "prefill",
            Self::Decode => "decode",
        }
    }

    /// Whether a router may send it a prompt.
    pub fn prefills(self) -> bool {
        self != Self::Decode
    }

    /// Whether a router may hand it a request to decode.
    pub fn decodes(self) -> bool {
        self != Self::Prefill
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected both, prefill or decode)"))
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let err = "Prefill".parse::<Role>().unwrap_err();
        assert!(err.contains("expected both, prefill or decode"), "{err}");
        assert!(Role::Both.prefills() && Role::Both.decodes());
        assert!(Role::Prefill.prefills() && !Role::Prefill.decodes());
        assert!(!Role::Decode.prefills() && Role::Decode.decodes());
    }
}
