//! The adapter's errors: what it refuses, each naming the variable concerned.

use candle_core::DType;

/// Why the adapter refused: a variable or gradient it cannot step in place, a checkpoint for
/// other variables, or an error of downhill's core (bad options, non-finite gradient, state
/// of another optimizer, I/O). Converts into [`candle_core::Error`] (as a message) so that
/// `?` works in candle code.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The variable (or its gradient) is not on the CPU.
    NotCpu {
        /// The variable's name.
        name: String,
        /// `"variable"` or `"gradient"`.
        what: &'static str,
    },
    /// The variable (or its gradient) is neither `f32` nor `f64`, or not of the type of the
    /// first variable (all variables of one optimizer share one element type).
    DType {
        /// The variable's name.
        name: String,
        /// `"variable"` or `"gradient"`.
        what: &'static str,
        /// Its element type.
        dtype: DType,
        /// The optimizer's element type.
        expected: DType,
    },
    /// The variable (or its gradient) is not contiguous, so it cannot be stepped in place.
    NotContiguous {
        /// The variable's name.
        name: String,
        /// `"variable"` or `"gradient"`.
        what: &'static str,
    },
    /// A gradient's shape differs from its variable's.
    GradientShape {
        /// The variable's name.
        name: String,
        /// The gradient's shape.
        shape: Vec<usize>,
        /// The variable's shape.
        expected: Vec<usize>,
    },
    /// A gradient shares its storage with one of the variables being stepped (it would have
    /// to be read while the variable is written).
    AliasedGradient {
        /// The variable whose gradient it is.
        name: String,
    },
    /// The same variable is listed twice.
    Duplicate {
        /// Its (second) name.
        name: String,
    },
    /// The checkpoint does not hold state for some of this optimizer's variables.
    MissingVariables {
        /// Their names.
        names: Vec<String>,
    },
    /// The checkpoint holds state for variables this optimizer does not hold.
    UnexpectedVariables {
        /// Their names.
        names: Vec<String>,
    },
    /// A variable has another shape in the checkpoint.
    ShapeMismatch {
        /// The variable's name.
        name: String,
        /// Its shape in the checkpoint.
        saved: Vec<usize>,
        /// Its shape here.
        expected: Vec<usize>,
    },
    /// An error of downhill's core: options, the step itself (non-finite gradient), state of
    /// another optimizer, a corrupt checkpoint, I/O.
    Core(downhill::Error),
    /// An error from candle (allocating a zero gradient, taking a storage lock).
    Candle(candle_core::Error),
    /// The thread that holds the variables' locks during a step failed.
    Locker(String),
}

fn names(list: &[String]) -> String {
    list.iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotCpu { name, what } => {
                write!(f, "downhill: {what} '{name}' is not on the CPU")
            }
            Error::DType {
                name,
                what,
                dtype,
                expected,
            } => write!(
                f,
                "downhill: {what} '{name}' is {dtype:?}, expected {expected:?} \
                 (all variables must be F32, or all F64)"
            ),
            Error::NotContiguous { name, what } => {
                write!(f, "downhill: {what} '{name}' is not contiguous")
            }
            Error::GradientShape {
                name,
                shape,
                expected,
            } => write!(
                f,
                "downhill: gradient of '{name}' has shape {shape:?}, the variable {expected:?}"
            ),
            Error::AliasedGradient { name } => write!(
                f,
                "downhill: the gradient of '{name}' shares storage with a variable being stepped"
            ),
            Error::Duplicate { name } => {
                write!(f, "downhill: variable '{name}' is listed twice")
            }
            Error::MissingVariables { names: n } => write!(
                f,
                "downhill: the checkpoint has no state for {}",
                names(n)
            ),
            Error::UnexpectedVariables { names: n } => write!(
                f,
                "downhill: the checkpoint has state for variables this optimizer does not hold: {}",
                names(n)
            ),
            Error::ShapeMismatch {
                name,
                saved,
                expected,
            } => write!(
                f,
                "downhill: variable '{name}' has shape {saved:?} in the checkpoint, {expected:?} here"
            ),
            Error::Core(e) => write!(f, "downhill: {e}"),
            Error::Candle(e) => write!(f, "downhill: {e}"),
            Error::Locker(e) => write!(f, "downhill: step thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            Error::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<downhill::Error> for Error {
    fn from(e: downhill::Error) -> Self {
        Error::Core(e)
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            e => candle_core::Error::Msg(e.to_string()),
        }
    }
}

/// The adapter's result type.
pub type Result<T> = std::result::Result<T, Error>;
