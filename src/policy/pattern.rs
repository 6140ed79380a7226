//! Precompiled IAM wildcard patterns: `*` matches any run of characters (including none) and `?`
//! matches exactly one character. Compiled once when a policy is parsed. A short match
//! backtracks (no allocation). A longer one runs a bit-parallel automaton, 64 pattern positions
//! per machine word, so a policy's author can't make a match cost pattern x input steps. A long
//! pattern's automaton tables are built on its first use and kept with the pattern: a request can
//! match one pattern against thousands of context keys, and building them each time (up to a
//! megabyte of masks for a 32 KB pattern) would cost that many times the match.
//! Case folding is the caller's business: case-insensitive users lowercase both sides up front.

use std::sync::OnceLock;

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
    Glob(Glob),
}

/// A pattern with wildcards anywhere: its tokens, and the automaton's tables once a match needed
/// them.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    automaton: OnceLock<Box<Automaton>>,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.toks == other.toks
    }
}

impl Eq for Glob {}

impl Glob {
    fn new(toks: Vec<Tok>) -> Glob {
        Glob {
            toks,
            automaton: OnceLock::new(),
        }
    }

    /// Backtracking while its worst case is small, else the automaton, whose cost grows with the
    /// input times pattern / 64 instead: a policy's author chooses the pattern and a caller the
    /// input (an encryption context value may be 8 KB).
    fn matches(&self, input: &[u8]) -> bool {
        if self.toks.len().saturating_mul(input.len()) <= BACKTRACK_LIMIT {
            backtrack(&self.toks, input)
        } else if self.toks.len() <= KEEP_AUTOMATON_PAST {
            // Building costs no more than this match does: nothing to keep.
            Automaton::new(&self.toks).run(input)
        } else {
            self.automaton
                .get_or_init(|| Box::new(Automaton::new(&self.toks)))
                .run(input)
        }
    }
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
        Pattern::Glob(Glob::new(tokens(pattern)))
    }

    pub(crate) fn matches(&self, input: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => s == input,
            Pattern::Prefix(p) => input.starts_with(p.as_str()),
            Pattern::Glob(glob) => glob.matches(input.as_bytes()),
        }
    }
}

fn tokens(pattern: &str) -> Vec<Tok> {
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
    toks
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

/// Patterns of more tokens than this keep their automaton once built. Building one for a shorter
/// pattern costs about what a match that needs it does; keeping them all would let a policy of
/// thousands of short patterns hold a 512-byte class table each. So a policy keeps at most about
/// 30 times its size in automata (1 MB for 32 KB).
const KEEP_AUTOMATON_PAST: usize = 64;

/// Backtracking costs up to pattern x input steps; below this many it is the faster way.
const BACKTRACK_LIMIT: usize = 1 << 12;

/// Greedy matching with backtracking to the last `*`: O(pattern * input) in the worst case, no
/// recursion, no allocation. Input positions always sit on character boundaries.
fn backtrack(toks: &[Tok], input: &[u8]) -> bool {
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

/// The pattern as a nondeterministic automaton run on all its states at once (shift-and), one
/// input byte at a time: state `j` (bit `j`) means the first `j` tokens matched. A byte token
/// advances on its byte; `?` advances on a character's first byte and its state then takes the
/// character's continuation bytes; a `*` state takes every byte, and is entered as soon as the
/// state before it is (it may match nothing). In valid UTF-8 the token after `?` or `*` starts
/// a character, so no continuation byte can end either early: the matches are `backtrack`'s.
#[derive(Debug, Clone)]
struct Automaton {
    /// Each byte a token names has a class with its own row of `masks`; every other byte is
    /// class 0 (an empty row).
    class: [u16; 256],
    /// Words of states: `(tokens + 1) / 64` rounded up.
    w: usize,
    /// `w` words per row: one row per class, then `?` advancing, `?` taking a continuation byte,
    /// `*` taking any byte, and the `*` states.
    masks: Vec<u64>,
    /// The accepting state: every token matched.
    last: usize,
}

impl Automaton {
    fn new(toks: &[Tok]) -> Automaton {
        let w = (toks.len() + 1).div_ceil(64);
        let mut class = [0u16; 256];
        let mut classes = 1usize;
        for t in toks {
            if let Tok::Byte(b) = t {
                if class[usize::from(*b)] == 0 {
                    class[usize::from(*b)] = classes as u16;
                    classes += 1;
                }
            }
        }
        let mut masks = vec![0u64; (classes + 4) * w];
        let mut set = |row: usize, state: usize| masks[row * w + state / 64] |= 1 << (state % 64);
        let (one_adv, one_loop, star_loop, star_at) = (classes, classes + 1, classes + 2, classes + 3);
        for (j, t) in toks.iter().enumerate() {
            match t {
                Tok::Byte(b) => set(usize::from(class[usize::from(*b)]), j + 1),
                Tok::One => {
                    set(one_adv, j + 1);
                    set(one_loop, j + 1);
                }
                Tok::Star => {
                    set(star_at, j);
                    set(star_loop, j + 1);
                }
            }
        }
        Automaton {
            class,
            w,
            masks,
            last: toks.len(),
        }
    }

    fn row(&self, r: usize) -> &[u64] {
        &self.masks[r * self.w..(r + 1) * self.w]
    }

    /// The special rows, after the classes' rows.
    fn special(&self, i: usize) -> &[u64] {
        self.row(self.masks.len() / self.w - 4 + i)
    }

    fn run(&self, input: &[u8]) -> bool {
        let w = self.w;
        let (one_adv, one_loop, star_loop, star_at) =
            (self.special(0), self.special(1), self.special(2), self.special(3));
        let mut state = vec![0u64; 2 * w];
        let (mut now, mut next) = state.split_at_mut(w);
        now[0] = 1;
        enter_stars(now, star_at);
        for &x in input {
            let continuation = x & 0xc0 == 0x80;
            let byte_adv = self.row(usize::from(self.class[usize::from(x)]));
            let mut carry = 0;
            for k in 0..w {
                let shifted = (now[k] << 1) | carry;
                carry = now[k] >> 63;
                let (adv, stay) = if continuation {
                    (byte_adv[k], star_loop[k] | one_loop[k])
                } else {
                    (byte_adv[k] | one_adv[k], star_loop[k])
                };
                next[k] = (shifted & adv) | (now[k] & stay);
            }
            if !enter_stars(next, star_at) {
                return false;
            }
            std::mem::swap(&mut now, &mut next);
        }
        now[self.last / 64] >> (self.last % 64) & 1 == 1
    }
}

/// The automaton of `toks`, built and run once (tests compare it with `backtrack`).
#[cfg(test)]
fn automaton(toks: &[Tok], input: &[u8]) -> bool {
    Automaton::new(toks).run(input)
}

/// Enters the state after each live `*` state (a `*` may match nothing); whether any state lives.
/// One pass is enough: runs of `*` were collapsed, so no `*` follows a `*`.
fn enter_stars(states: &mut [u64], star_at: &[u64]) -> bool {
    let mut carry = 0;
    let mut alive = 0;
    for (s, at) in states.iter_mut().zip(star_at) {
        let stars = *s & at;
        *s |= (stars << 1) | carry;
        carry = stars >> 63;
        alive |= *s;
    }
    alive != 0
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

    /// The automaton matches exactly what backtracking matches, multi-byte characters, `?`, runs
    /// of `*` and patterns of more than 63 tokens (several words of states) included.
    mod same_as_backtracking {
        use super::super::*;
        use proptest::prelude::*;

        fn text(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(alphabet), 0..max).prop_map(|v| v.concat())
        }

        const PATTERN: &[&str] = &["a", "b", "é", "€", "𝄞", "*", "?", "?", "*"];
        const INPUT: &[&str] = &["a", "b", "é", "€", "𝄞"];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn short(pattern in text(PATTERN, 12), input in text(INPUT, 24)) {
                let toks = tokens(&pattern);
                prop_assert_eq!(automaton(&toks, input.as_bytes()), backtrack(&toks, input.as_bytes()));
            }

            #[test]
            fn long(pattern in text(PATTERN, 160), input in text(INPUT, 200)) {
                let toks = tokens(&pattern);
                prop_assert_eq!(automaton(&toks, input.as_bytes()), backtrack(&toks, input.as_bytes()));
            }

            /// Mostly-`a` inputs and patterns, so that long patterns match often.
            #[test]
            fn long_and_likely(pattern in text(&["a", "a", "a", "?", "*", "é"], 150), input in text(&["a", "a", "a", "é"], 160)) {
                let toks = tokens(&pattern);
                prop_assert_eq!(automaton(&toks, input.as_bytes()), backtrack(&toks, input.as_bytes()));
            }
        }

        #[test]
        fn the_examples() {
            for (p, s, want) in [
                ("*", "", true),
                ("kms:re*crypt*", "kms:reencryptfrom", true),
                ("kms:?ncrypt", "kms:ncrypt", false),
                ("a*b*c", "aXbYbZc", true),
                ("a*b*c", "aXbYbZ", false),
                ("??", "éa", true),
                ("???", "éa", false),
                ("*é", "xxé", true),
                ("a**?", "ab", true),
                ("?*?", "𝄞", false),
                ("?*?", "𝄞€", true),
            ] {
                assert_eq!(automaton(&tokens(p), s.as_bytes()), want, "{p} {s}");
            }
        }

        /// A long pattern builds its automaton on the first match that needs it and keeps it: a
        /// request matching one pattern against thousands of context keys builds it once, not
        /// once per key (with the tables rebuilt per match, 4000 one-byte keys against a 30 KB
        /// pattern of 160 distinct bytes took 144 ms; kept, 4 ms).
        #[test]
        fn the_automaton_is_built_once() {
            let pattern = format!("*{}*", "ab?".repeat(2000));
            let Pattern::Glob(glob) = Pattern::compile(&pattern) else {
                panic!("not a glob")
            };
            assert!(!glob.matches(b""));
            assert!(glob.automaton.get().is_none(), "backtracking was enough for no input");
            let input = "abé".repeat(2000);
            assert!(glob.matches(input.as_bytes()));
            let built = glob.automaton.get().expect("built by the long match").masks.as_ptr();
            assert!(!glob.matches(&input.as_bytes()[3..]));
            assert_eq!(glob.automaton.get().unwrap().masks.as_ptr(), built, "rebuilt");
            // A short pattern builds one for each match that needs it, and keeps none.
            let Pattern::Glob(short) = Pattern::compile("*a?b*") else {
                panic!("not a glob")
            };
            assert!(short.matches(format!("{}a-b", "x".repeat(8192)).as_bytes()));
            assert!(short.automaton.get().is_none());
        }

        /// The case backtracking is slow at (each start of the input tried against the whole
        /// pattern) goes to the automaton, and still matches as it should.
        #[test]
        fn costly_patterns_go_to_the_automaton() {
            let input = "a".repeat(8192);
            for pattern in [format!("*{}b", "a".repeat(30)), format!("*{}b", "?".repeat(30))] {
                let compiled = Pattern::compile(&pattern);
                assert!(matches!(compiled, Pattern::Glob(ref g) if g.toks.len() * input.len() > BACKTRACK_LIMIT));
                assert!(!compiled.matches(&input), "{pattern}");
                assert!(compiled.matches(&format!("{input}b")), "{pattern}");
            }
        }
    }
}
