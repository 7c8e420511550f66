//! The core's error type. No Python here: `rust/python/mod.rs` maps each variant to one
//! exception class of the `aggkit.AggkitError` hierarchy.

use std::fmt;

/// Everything a rule can refuse. Messages state the violated condition with the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggError {
    /// No inputs at all (`n = 0`).
    Empty { rule: &'static str },
    /// Rows of different lengths; `row` is the first one that differs from row 0.
    Ragged {
        row: usize,
        expected: usize,
        got: usize,
    },
    /// `n` is below what the rule needs for the requested `f` (e.g. Krum: `n >= 2f + 3`).
    TooFewInputs {
        rule: &'static str,
        requirement: &'static str,
        n: usize,
        f: usize,
    },
    /// A parameter out of range (`m`, weights, thread count, ...), with a full sentence.
    InvalidParameter { rule: &'static str, message: String },
    /// Non-finite values where the policy forbids them; `rows` lists the offending inputs.
    NonFinite {
        rule: &'static str,
        rows: Vec<usize>,
        detail: &'static str,
    },
    /// The allocator refused a buffer whose size follows from the input (`bytes` saturates at
    /// `usize::MAX` when the size itself overflows).
    OutOfMemory { bytes: usize },
    /// The caller asked to stop (Ctrl-C) while a long kernel ran ([`crate::interrupt`]).
    Interrupted,
}

/// A lower bound `n >= a·f + b` on the number of inputs that tolerates `f` faulty ones. `f`
/// comes from the caller, so the bound is computed without overflow: an `f` whose bound
/// exceeds every `usize` is refused like any other too-large `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    a: usize,
    b: usize,
    /// The bound as the error message states it.
    text: &'static str,
}

/// `n >= 2f + 1`: a strict majority of honest inputs (trimmed mean, meamed, MDA, ...).
pub const MAJORITY: Needs = Needs {
    a: 2,
    b: 1,
    text: "n >= 2f + 1",
};
/// `n >= 2f + 3`: Krum and Multi-Krum.
pub const KRUM: Needs = Needs {
    a: 2,
    b: 3,
    text: "n >= 2f + 3",
};
/// `n >= 4f + 3`: Bulyan.
pub const BULYAN: Needs = Needs {
    a: 4,
    b: 3,
    text: "n >= 4f + 3",
};

impl Needs {
    /// The fewest inputs that tolerate `f`, or `None` where that exceeds `usize::MAX`.
    pub fn min_n(self, f: usize) -> Option<usize> {
        f.checked_mul(self.a)?.checked_add(self.b)
    }

    /// `Ok` when `n` inputs tolerate `f`, else [`AggError::TooFewInputs`].
    pub fn check(self, rule: &'static str, n: usize, f: usize) -> Result<(), AggError> {
        match self.min_n(f) {
            Some(m) if n >= m => Ok(()),
            _ => Err(AggError::TooFewInputs {
                rule,
                requirement: self.text,
                n,
                f,
            }),
        }
    }
}

/// The message of [`AggError::NonFinite`]: the rule, why, and the first ten offending rows.
pub fn nonfinite_message(rule: &str, rows: &[usize], detail: &str) -> String {
    const SHOWN: usize = 10;
    let list: Vec<String> = rows.iter().take(SHOWN).map(|r| r.to_string()).collect();
    let more = if rows.len() > SHOWN {
        format!(" and {} more", rows.len() - SHOWN)
    } else {
        String::new()
    };
    format!(
        "{rule}: {detail}; non-finite inputs (row indices): [{}]{more}",
        list.join(", ")
    )
}

/// The message of [`AggError::TooFewInputs`] (`n` and `f` as the caller wrote them: Python's
/// integers are unbounded).
pub fn too_few_message(
    rule: &str,
    requirement: &str,
    n: impl fmt::Display,
    f: impl fmt::Display,
) -> String {
    format!("{rule} needs {requirement}, got n={n}, f={f}")
}

/// The message of [`AggError::Empty`].
pub fn empty_message(rule: &str) -> String {
    format!("{rule} needs at least one input, got n=0")
}

impl fmt::Display for AggError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggError::Empty { rule } => f.write_str(&empty_message(rule)),
            AggError::Ragged { row, expected, got } => write!(
                f,
                "all inputs must have the same size: input 0 has {expected} values, input {row} has {got}"
            ),
            AggError::TooFewInputs {
                rule,
                requirement,
                n,
                f: ff,
            } => f.write_str(&too_few_message(rule, requirement, n, ff)),
            AggError::InvalidParameter { rule, message } => write!(f, "{rule}: {message}"),
            AggError::NonFinite { rule, rows, detail } => {
                f.write_str(&nonfinite_message(rule, rows, detail))
            }
            AggError::Interrupted => f.write_str("interrupted"),
            AggError::OutOfMemory { bytes } if *bytes == usize::MAX => {
                f.write_str("unable to allocate a buffer: its size overflows")
            }
            AggError::OutOfMemory { bytes } => {
                let gib = *bytes as f64 / f64::from(1u32 << 30);
                write!(f, "unable to allocate {gib:.3} GiB ({bytes} bytes)")
            }
        }
    }
}

impl std::error::Error for AggError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_never_overflow_and_match_their_text() {
        for needs in [MAJORITY, KRUM, BULYAN] {
            assert_eq!(needs.text, format!("n >= {}f + {}", needs.a, needs.b));
            assert_eq!(needs.min_n(1), Some(needs.a + needs.b));
            for f in [usize::MAX, usize::MAX / 2 + 1, 1 << 63] {
                assert!(
                    needs.check("rule", usize::MAX, f).is_err(),
                    "{needs:?} f={f}"
                );
            }
        }
        assert_eq!(MAJORITY.min_n(usize::MAX / 2), Some(usize::MAX));
        assert!(MAJORITY.check("rule", usize::MAX, usize::MAX / 2).is_ok());
        assert_eq!(BULYAN.min_n(usize::MAX / 4), Some(usize::MAX));
        assert_eq!(BULYAN.min_n(usize::MAX / 4 + 1), None);
    }

    #[test]
    fn messages_state_the_condition_with_values() {
        let e = AggError::TooFewInputs {
            rule: "Krum",
            requirement: "n >= 2f + 3",
            n: 6,
            f: 2,
        };
        assert_eq!(e.to_string(), "Krum needs n >= 2f + 3, got n=6, f=2");
        let e = AggError::NonFinite {
            rule: "median",
            rows: (0..12).collect(),
            detail: "nonfinite='raise'",
        };
        assert!(e
            .to_string()
            .ends_with("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and 2 more"));
    }
}
