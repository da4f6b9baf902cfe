//! Stop strings, matched across token boundaries and never leaked into the output.
//!
//! Text is released only once no suffix of it could still grow into a stop string: a suffix
//! that is a prefix of some stop string is held back until the next token settles it.

/// Incremental stop-string matcher for one choice.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    max_len: usize,
    text: String,
    emitted: usize,
    stopped: bool,
}

/// What a push released.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    /// Text safe to send.
    pub text: String,
    /// A stop string matched; nothing more will be released.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let max_len = stops.iter().map(String::len).max().unwrap_or(0);
        Self {
            stops,
            max_len,
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Adds generated text; returns what can be released.
    pub fn push(&mut self, piece: &str) -> Released {
        if self.stopped {
            return Released {
                text: String::new(),
                stopped: true,
            };
        }
        self.text.push_str(piece);
        if self.stops.is_empty() {
            return self.release_to(self.text.len(), false);
        }
        let mut from = self.emitted.saturating_sub(self.max_len);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min();
        if let Some(pos) = found {
            self.stopped = true;
            let pos = pos.max(self.emitted);
            return self.release_to(pos, true);
        }
        let hold = self.held_back_len();
        let mut end = self.text.len() - hold;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        self.release_to(end.max(self.emitted), false)
    }

    /// Releases whatever was held back (generation ended without a match).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        self.release_to(self.text.len(), false).text
    }

    /// Whether a stop string matched.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Length of the longest suffix of the text that is a proper prefix of a stop string.
    fn held_back_len(&self) -> usize {
        let bytes = self.text.as_bytes();
        let mut best = 0;
        for stop in &self.stops {
            let s = stop.as_bytes();
            for k in (1..s.len().min(bytes.len() + 1)).rev() {
                if k <= best {
                    break;
                }
                if bytes.ends_with(&s[..k]) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    fn release_to(&mut self, end: usize, stopped: bool) -> Released {
        let text = self.text[self.emitted..end].to_string();
        self.emitted = end;
        Released { text, stopped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let r = m.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_matched_and_not_leaked() {
        assert_eq!(
            run(&["\n\n"], &["Hello", "\n", "\nWorld"]),
            ("Hello".into(), true)
        );
        assert_eq!(
            run(&["STOP"], &["ab", "cS", "TO", "Pxyz"]),
            ("abc".into(), true)
        );
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["abc".into()]);
        assert_eq!(m.push("xxab").text, "xx");
        assert_eq!(m.push("d").text, "abd");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn text_held_at_the_end_is_flushed_by_finish() {
        assert_eq!(run(&["abc"], &["hello a", "b"]), ("hello ab".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), true)
        );
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(run(&["é!"], &["café", "s"]), ("cafés".into(), false));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&[], &["日本", "語"]), ("日本語".into(), false));
    }
}
