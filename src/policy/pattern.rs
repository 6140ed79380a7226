//! Precompiled IAM wildcard patterns: `*` matches any run of characters (including none) and `?`
//! matches exactly one character. Compiled once when a policy is parsed; matching never allocates.
//! Case folding is the caller's business: case-insensitive users lowercase both sides up front.

/// One compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `*`: matches everything.
    Any,
    /// No wildcard: plain equality.
    Exact(String),
    /// `prefix*` with no other wildcard (the common `kms:Generate*`, `arn:...:key/*`).
    Prefix(String),
    /// Anything else.
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Byte(u8),
    /// `?`: exactly one (UTF-8) character.
    One,
    /// `*`: any run of characters.
    Star,
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Pattern {
        if pattern == "*" {
            return Pattern::Any;
        }
        if !pattern.contains(['*', '?']) {
            return Pattern::Exact(pattern.to_string());
        }
        if let Some(prefix) = pattern.strip_suffix('*') {
            if !prefix.contains(['*', '?']) {
                return Pattern::Prefix(prefix.to_string());
            }
        }
        let mut toks = Vec::with_capacity(pattern.len());
        for b in pattern.bytes() {
            let t = match b {
                b'*' => Tok::Star,
                b'?' => Tok::One,
                other => Tok::Byte(other),
            };
            // Collapse runs of `*`: they mean the same as one.
            if t == Tok::Star && toks.last() == Some(&Tok::Star) {
                continue;
            }
            toks.push(t);
        }
        Pattern::Glob(toks)
    }

    pub(crate) fn matches(&self, input: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => s == input,
            Pattern::Prefix(p) => input.starts_with(p.as_str()),
            Pattern::Glob(toks) => glob_match(toks, input.as_bytes()),
        }
    }
}

/// Width in bytes of the UTF-8 character starting with `lead`.
fn char_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        // A continuation byte never starts a character of valid UTF-8; step over it alone.
        _ => 1,
    }
}

/// Greedy matching with backtracking to the last `*`: O(pattern * input) in the worst case, no
/// recursion, no allocation. Input positions always sit on character boundaries.
fn glob_match(toks: &[Tok], input: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < input.len() {
        match toks.get(p) {
            Some(Tok::Byte(b)) if *b == input[i] => {
                p += 1;
                i += 1;
                continue;
            }
            Some(Tok::One) => {
                p += 1;
                i = (i + char_width(input[i])).min(input.len());
                continue;
            }
            Some(Tok::Star) => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, si)) => {
                let next = (si + char_width(input[si])).min(input.len());
                star = Some((sp, next));
                p = sp + 1;
                i = next;
            }
            None => return false,
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::compile(p).matches(s)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("kms:*", "kms:encrypt"));
        assert!(m("kms:generate*", "kms:generatedatakey"));
        assert!(!m("kms:generate*", "kms:encrypt"));
        assert!(m("kms:re*crypt*", "kms:reencryptfrom"));
        assert!(m("kms:?ncrypt", "kms:encrypt"));
        assert!(!m("kms:?ncrypt", "kms:ncrypt"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("??", "éa"));
        assert!(!m("???", "éa"));
        assert!(m("*é", "xxé"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "Exact"));
        assert!(m("a**?", "ab"));
    }
}
