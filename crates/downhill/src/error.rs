//! The one error type of the library.

use thiserror::Error;

/// Everything that can go wrong in downhill. A step that returns an error has changed nothing:
/// parameters, optimizer state and step counts are exactly as they were.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A hyperparameter is outside its valid range.
    #[error("{optimizer}: invalid {name} = {value}: {reason}")]
    InvalidHyperparameter {
        /// The optimizer (or schedule / clipping stage) that refused it.
        optimizer: &'static str,
        /// The hyperparameter's PyTorch name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What the valid range is.
        reason: &'static str,
    },
    /// The number of tensors passed to `step` is not the number the optimizer was built for.
    #[error("{what}: expected {expected} tensors, got {got}")]
    TensorCount {
        /// `"params"` or `"grads"`.
        what: &'static str,
        /// How many the optimizer holds.
        expected: usize,
        /// How many were passed.
        got: usize,
    },
    /// A tensor's length differs from the one the optimizer was built for.
    #[error("{what} of parameter '{param}': expected {expected} elements, got {got}")]
    LengthMismatch {
        /// `"params"` or `"grads"`.
        what: &'static str,
        /// The parameter's name.
        param: String,
        /// Its length at construction.
        expected: usize,
        /// The length passed.
        got: usize,
    },
    /// A gradient holds NaN or an infinity; the step was refused.
    #[error(
        "non-finite gradient in parameter '{param}' at element {index} ({value}); step refused"
    )]
    NonFiniteGradient {
        /// The parameter's name.
        param: String,
        /// The first offending element.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// The optimizer was built wrongly (no parameters, duplicate names, unknown group, …).
    #[error("invalid optimizer setup: {0}")]
    Setup(String),
    /// No optimizer or schedule of that name.
    #[error("unknown {kind} '{name}' (known: {known})")]
    Unknown {
        /// `"optimizer"` or `"schedule"`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// Options that do not parse (unknown field, wrong type).
    #[error("invalid options for {what}: {message}")]
    Options {
        /// What the options were for.
        what: String,
        /// The parser's message.
        message: String,
    },
    /// A state file or state dictionary that cannot be loaded.
    #[error("cannot load optimizer state: {0}")]
    State(String),
    /// The ranks of a sharded optimizer could not exchange what a step needs.
    #[error("communication between ranks failed: {0}")]
    Communication(String),
    /// An I/O failure, with the path involved.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Shorthand for `Result<T, downhill::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Refuse `value` for `name` unless `ok`.
pub(crate) fn ensure(
    ok: bool,
    optimizer: &'static str,
    name: &'static str,
    value: f64,
    reason: &'static str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHyperparameter {
            optimizer,
            name,
            value,
            reason,
        })
    }
}

/// Common range checks, each refusing NaN.
pub(crate) mod check {
    use super::{ensure, Result};

    /// `x >= 0` and finite.
    pub fn non_negative(opt: &'static str, name: &'static str, x: f64) -> Result<()> {
        ensure(
            x.is_finite() && x >= 0.0,
            opt,
            name,
            x,
            "must be finite and >= 0",
        )
    }
    /// `x > 0` and finite.
    pub fn positive(opt: &'static str, name: &'static str, x: f64) -> Result<()> {
        ensure(
            x.is_finite() && x > 0.0,
            opt,
            name,
            x,
            "must be finite and > 0",
        )
    }
    /// `0 <= x < 1`.
    pub fn unit_interval(opt: &'static str, name: &'static str, x: f64) -> Result<()> {
        ensure((0.0..1.0).contains(&x), opt, name, x, "must be in [0, 1)")
    }
    /// `0 <= x <= 1`.
    pub fn closed_unit_interval(opt: &'static str, name: &'static str, x: f64) -> Result<()> {
        ensure((0.0..=1.0).contains(&x), opt, name, x, "must be in [0, 1]")
    }
}
