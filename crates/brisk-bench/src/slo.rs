//! Latency objectives: one `--slo` for every request, or several `--slo-class`es, each
//! assigned to requests by a rule (DistServe judges each request against one TTFT/TPOT
//! pair; production mixes — interactive chat beside batch summarization — give each kind
//! of request its own pair, so goodput is counted per class and overall).
//!
//! `--slo-class NAME:ttft=MS,tpot=MS[,min-prompt=N][,max-prompt=N][,share=F]`:
//! - `min-prompt`/`max-prompt` keep the class to prompts of that many tokens (inclusive);
//! - `share=F` gives the class a fraction F of the requests, drawn per request from the
//!   run's seed (share classes split `[0, 1)` in the order given, so shares add up);
//! - a class without a rule takes every request.
//!
//! A request belongs to the first class, in command-line order, whose rules all match;
//! requests that no class claims fall to `--slo` (the class `default`). Validation
//! refuses a set of classes that could leave a request without one.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::Slo;
use crate::error::BenchError;

/// The class that `--slo` (or no objective at all) defines.
pub const DEFAULT_CLASS: &str = "default";

/// Which requests a class takes; every given bound must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassRule {
    /// Prompts of at least this many tokens.
    pub min_prompt: Option<usize>,
    /// Prompts of at most this many tokens.
    pub max_prompt: Option<usize>,
    /// This fraction of all requests (a seeded draw per request).
    pub share: Option<f64>,
}

impl ClassRule {
    /// Whether the rule takes every request.
    pub fn is_catch_all(&self) -> bool {
        *self == ClassRule::default()
    }

    /// The rule as written on the command line (`all` for a catch-all).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.min_prompt {
            parts.push(format!("min-prompt={n}"));
        }
        if let Some(n) = self.max_prompt {
            parts.push(format!("max-prompt={n}"));
        }
        if let Some(f) = self.share {
            parts.push(format!("share={f}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(",")
        }
    }
}

/// A named objective and the requests it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct SloClass {
    /// Name used in the report.
    pub name: String,
    /// TTFT and TPOT bounds.
    pub slo: Slo,
    /// Which requests it takes.
    pub rule: ClassRule,
}

/// The objectives of a run, in assignment order; the last class takes every request left.
#[derive(Clone, Debug, PartialEq)]
pub struct SloPolicy {
    /// The classes; never empty, and the last is a catch-all unless shares cover every request.
    pub classes: Vec<SloClass>,
}

fn bad(reason: impl Into<String>) -> BenchError {
    BenchError::config("slo-class", reason)
}

impl SloClass {
    /// Parses `NAME:ttft=MS,tpot=MS[,min-prompt=N][,max-prompt=N][,share=F]`.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        let (name, spec) = s
            .split_once(':')
            .ok_or_else(|| bad(format!("`{s}` is not NAME:ttft=MS,tpot=MS[,RULE…]")))?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(bad(format!(
                "class name `{name}` must be letters, digits, `-` or `_`"
            )));
        }
        let mut slo = Slo::unbounded();
        let mut rule = ClassRule::default();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` in class `{name}` is not key=value")))?;
            let v = v.trim();
            let count = || {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("`{k}={v}` in class `{name}`: not a token count")))
            };
            match k.trim() {
                "ttft" => slo.ttft_ms = Slo::parse_ms(v, "slo-class")?,
                "tpot" => slo.tpot_ms = Slo::parse_ms(v, "slo-class")?,
                "min-prompt" => rule.min_prompt = Some(count()?),
                "max-prompt" => rule.max_prompt = Some(count()?),
                "share" => {
                    let f: f64 = v
                        .parse()
                        .map_err(|_| bad(format!("`share={v}` in class `{name}`: not a number")))?;
                    if !(f > 0.0 && f <= 1.0) {
                        return Err(bad(format!(
                            "`share={v}` in class `{name}`: must be in (0, 1]"
                        )));
                    }
                    rule.share = Some(f);
                }
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}` in class `{name}` (ttft, tpot, min-prompt, max-prompt, share)"
                    )))
                }
            }
        }
        if let (Some(lo), Some(hi)) = (rule.min_prompt, rule.max_prompt) {
            if lo > hi {
                return Err(bad(format!(
                    "class `{name}`: min-prompt={lo} > max-prompt={hi} takes no request"
                )));
            }
        }
        Ok(SloClass {
            name: name.to_string(),
            slo,
            rule,
        })
    }
}

impl SloPolicy {
    /// One objective for every request.
    pub fn single(slo: Slo) -> Self {
        SloPolicy {
            classes: vec![SloClass {
                name: DEFAULT_CLASS.into(),
                slo,
                rule: ClassRule::default(),
            }],
        }
    }

    /// Builds the policy from `--slo` and the `--slo-class` values, refusing duplicate
    /// names, shares adding up to more than 1, and classes that could leave a request
    /// without an objective.
    pub fn from_flags(slo: Option<&str>, classes: &[String]) -> Result<Self, BenchError> {
        let default = slo.map(Slo::parse).transpose()?;
        if classes.is_empty() {
            return Ok(SloPolicy::single(default.unwrap_or_else(Slo::unbounded)));
        }
        let mut parsed: Vec<SloClass> = classes
            .iter()
            .map(|c| SloClass::parse(c))
            .collect::<Result<_, _>>()?;
        for (i, c) in parsed.iter().enumerate() {
            if c.name == DEFAULT_CLASS && default.is_some() {
                return Err(bad(format!(
                    "`{DEFAULT_CLASS}` is the class --slo defines; name this one otherwise"
                )));
            }
            if parsed[..i].iter().any(|p| p.name == c.name) {
                return Err(bad(format!("class `{}` is given twice", c.name)));
            }
        }
        let shares: f64 = parsed.iter().filter_map(|c| c.rule.share).sum();
        if shares > 1.0 + 1e-9 {
            return Err(bad(format!("the shares add up to {shares}, more than 1")));
        }
        if let Some(i) = parsed.iter().position(|c| c.rule.is_catch_all()) {
            if i + 1 < parsed.len() {
                return Err(bad(format!(
                    "class `{}` has no rule and takes every request, so `{}` after it would take none",
                    parsed[i].name,
                    parsed[i + 1].name
                )));
            }
        }
        // Shares alone cover every request when they add up to 1 and bound nothing else.
        let shares_cover = (shares - 1.0).abs() <= 1e-9
            && parsed
                .iter()
                .all(|c| c.rule.min_prompt.is_none() && c.rule.max_prompt.is_none());
        let covered = parsed.last().is_some_and(|c| c.rule.is_catch_all()) || shares_cover;
        match default {
            Some(slo) => parsed.push(SloClass {
                name: DEFAULT_CLASS.into(),
                slo,
                rule: ClassRule::default(),
            }),
            None if !covered => {
                return Err(bad(
                    "some requests would match no class: add a class without a rule, or --slo for the rest",
                ))
            }
            None => {}
        }
        Ok(SloPolicy { classes: parsed })
    }

    /// Whether there is more than the one default class.
    pub fn is_single(&self) -> bool {
        self.classes.len() == 1 && self.classes[0].name == DEFAULT_CLASS
    }

    /// The class index of each request, from its prompt length and a draw seeded by
    /// `(seed, request index)`, so the same run assigns the same classes at every rate.
    pub fn assign(&self, prompt_lens: &[usize], seed: u64) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5C0_C1A55);
        prompt_lens
            .iter()
            .map(|&len| {
                let u: f64 = rng.random();
                let mut below = 0.0;
                let mut pick = None;
                for (i, c) in self.classes.iter().enumerate() {
                    let r = &c.rule;
                    let mut ok = r.min_prompt.is_none_or(|m| len >= m)
                        && r.max_prompt.is_none_or(|m| len <= m);
                    if let Some(f) = r.share {
                        ok &= (below..below + f).contains(&u);
                        below += f;
                    }
                    if ok && pick.is_none() {
                        pick = Some(i);
                    }
                }
                // Validation guarantees a match up to rounding of the shares' sum.
                pick.unwrap_or(self.classes.len() - 1)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classes_parse_with_rules_and_slo_becomes_the_default() {
        let p = SloPolicy::from_flags(
            Some("ttft=2000,tpot=200"),
            &classes(&["short:ttft=500,tpot=50,max-prompt=256"]),
        )
        .unwrap();
        assert_eq!(p.classes.len(), 2);
        assert_eq!(p.classes[0].rule.max_prompt, Some(256));
        assert_eq!(p.classes[0].slo.ttft_ms, 500.0);
        assert_eq!(p.classes[1].name, DEFAULT_CLASS);
        assert_eq!(p.assign(&[100, 256, 257], 0), vec![0, 0, 1]);
    }

    #[test]
    fn invalid_class_sets_are_refused_with_a_reason() {
        let err = |flags: Option<&str>, v: &[&str]| {
            SloPolicy::from_flags(flags, &classes(v))
                .unwrap_err()
                .to_string()
        };
        assert!(err(None, &["a:ttft=1,max-prompt=10"]).contains("match no class"));
        assert!(err(None, &["a:ttft=1", "a:ttft=2"]).contains("twice"));
        assert!(err(None, &["a:ttft=1", "b:ttft=2,share=0.5"]).contains("would take none"));
        assert!(err(None, &["a:share=0.7", "b:share=0.7"]).contains("more than 1"));
        assert!(err(None, &["a:ttft=x"]).contains("not a number"));
        assert!(err(None, &["a:e2e=5"]).contains("unknown key `e2e`"));
        assert!(err(None, &["a:share=0"]).contains("(0, 1]"));
        assert!(err(None, &["noname"]).contains("NAME:"));
        assert!(err(None, &["a b:ttft=1"]).contains("letters"));
        assert!(err(None, &["a:min-prompt=9,max-prompt=3"]).contains("takes no request"));
        assert!(err(Some("ttft=1"), &["default:ttft=2"]).contains("--slo defines"));
    }

    #[test]
    fn shares_split_requests_in_proportion_and_repeat_with_the_seed() {
        let p = SloPolicy::from_flags(None, &classes(&["a:ttft=1,share=0.25", "b:share=0.75"]))
            .unwrap();
        let lens = vec![10; 20_000];
        let got = p.assign(&lens, 3);
        let a = got.iter().filter(|c| **c == 0).count() as f64 / 20_000.0;
        assert!((a - 0.25).abs() < 0.02, "{a}");
        assert_eq!(got, p.assign(&lens, 3));
        assert_ne!(got, p.assign(&lens, 4));
    }

    #[test]
    fn no_flags_give_one_unbounded_default_class() {
        let p = SloPolicy::from_flags(None, &[]).unwrap();
        assert!(p.is_single());
        assert_eq!(p.classes[0].slo, Slo::unbounded());
        assert_eq!(p.classes[0].rule.describe(), "all");
    }
}
