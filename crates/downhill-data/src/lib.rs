//! Datasets for downhill's optimizer comparisons.
//!
//! * [`digits`] and [`breast_cancer`]: small classification tables embedded in
//!   the crate (from scikit-learn's bundled copies; see [`DIGITS_ATTRIBUTION`]
//!   and [`BREAST_CANCER_ATTRIBUTION`]).
//! * [`load_idx`] and [`fashion_mnist`]: MNIST-format IDX files read from disk,
//!   gzipped or not.
//! * [`train_test_split`], [`Split::standardize_global`] and
//!   [`Split::standardize_per_feature`]: deterministic preprocessing.
//!
//! Every loader returns a typed [`DataError`] on bad input; nothing here panics
//! on the contents of a file.

#![warn(missing_docs)]

mod dataset;
mod embedded;
mod error;
mod idx;

use std::path::Path;

pub use dataset::{train_test_split, Dataset, Split};
pub use embedded::{breast_cancer, digits, BREAST_CANCER_ATTRIBUTION, DIGITS_ATTRIBUTION};
pub use error::DataError;
pub use idx::{
    fashion_mnist, load_idx, FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_DIR, MAX_IDX_BYTES,
};

/// The names [`by_name`] accepts (its canonical spellings).
pub const DATASET_NAMES: &[&str] = &["digits", "breast-cancer", "fashion-mnist"];

/// The fraction of an embedded dataset that [`by_name`] holds out for testing.
pub const DEFAULT_TEST_FRACTION: f64 = 0.25;

/// A dataset by name, as a train/test [`Split`].
///
/// * `"digits"` and `"breast-cancer"` (also `"breast_cancer"`): the embedded
///   tables, split with [`train_test_split`]`(…, 0.25, seed)`.
/// * `"fashion-mnist"` (also `"fashion_mnist"`): the official 60 000 / 10 000
///   split, read by [`fashion_mnist`] from `data_dir` (or the Debian package's
///   location when `None`); `seed` is not used.
///
/// Any other name gives [`DataError::Unknown`] listing [`DATASET_NAMES`].
pub fn by_name(name: &str, data_dir: Option<&Path>, seed: u64) -> Result<Split, DataError> {
    match name {
        "digits" => train_test_split(&digits(), DEFAULT_TEST_FRACTION, seed),
        "breast-cancer" | "breast_cancer" => {
            train_test_split(&breast_cancer(), DEFAULT_TEST_FRACTION, seed)
        }
        "fashion-mnist" | "fashion_mnist" => fashion_mnist(data_dir),
        _ => Err(DataError::Unknown {
            name: name.to_string(),
            known: DATASET_NAMES.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_embedded_sets() {
        let s = by_name("digits", None, 7).expect("digits");
        assert_eq!(s.train.len() + s.test.len(), 1797);
        assert_eq!(s.test.len(), 449);
        let s = by_name("breast-cancer", None, 7).expect("breast cancer");
        assert_eq!(s.train.len() + s.test.len(), 569);
        assert_eq!(s.test.len(), 142);
        let again = by_name("breast_cancer", None, 7).expect("alias");
        assert_eq!(s.train, again.train);
        assert_eq!(s.test, again.test);
    }

    #[test]
    fn by_name_unknown_lists_known_names() {
        let err = by_name("cifar", None, 0).expect_err("unknown");
        match &err {
            DataError::Unknown { name, known } => {
                assert_eq!(name, "cifar");
                assert_eq!(known.len(), DATASET_NAMES.len());
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("cifar") && msg.contains("digits, breast-cancer, fashion-mnist"));
    }

    #[test]
    fn by_name_fashion_mnist_missing_dir() {
        let dir = std::env::temp_dir().join(format!(
            "downhill-data-{}-by-name-no-such-dir",
            std::process::id()
        ));
        let err = by_name("fashion-mnist", Some(&dir), 0).expect_err("missing");
        assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    }
}
