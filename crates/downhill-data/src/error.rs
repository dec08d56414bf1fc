//! The crate's error type.

use std::path::PathBuf;

/// What went wrong while loading or preparing a dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The dataset's files are not where they were looked for.
    #[error("{dataset} not found in {}: {hint}", looked_in.display())]
    Missing {
        /// The dataset's name, e.g. `"fashion-mnist"`.
        dataset: String,
        /// The directory (or file) that was searched.
        looked_in: PathBuf,
        /// How to get the data, e.g. which package to install or flag to pass.
        hint: String,
    },
    /// A file exists but its contents are not what its format requires.
    #[error("malformed data in {}: {reason}", file.display())]
    Malformed {
        /// The offending file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading a file failed at the operating-system level.
    #[error("cannot read {}: {message}", file.display())]
    Io {
        /// The file being read.
        file: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// No dataset has this name.
    #[error("unknown dataset `{name}` (known: {})", known.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// An argument is out of range, e.g. a test fraction outside (0, 1).
    #[error("invalid argument: {what}")]
    Invalid {
        /// What is invalid, and why.
        what: String,
    },
}
