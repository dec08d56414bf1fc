//! The crate as a caller sees it: load, split, standardize.

use downhill_data::{by_name, digits, train_test_split, DataError, Dataset};

fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn digits_split_standardized_globally() {
    let mut split = by_name("digits", None, 2024).expect("digits");
    assert_eq!(split.train.len(), 1348);
    assert_eq!(split.test.len(), 449);
    let (mean, std) = split.standardize_global();
    // Raw digits pixels average about 4.9 with a spread of about 6.0.
    assert!(
        (4.0..6.0).contains(&mean) && (5.0..7.0).contains(&std),
        "{mean} {std}"
    );
    let (m, s) = mean_std(&split.train.x);
    assert!(
        m.abs() < 1e-5 && (s - 1.0).abs() < 1e-5,
        "train mean {m}, std {s}"
    );
    let (m, s) = mean_std(&split.test.x);
    assert!(
        m.abs() < 0.1 && (s - 1.0).abs() < 0.1,
        "test mean {m}, std {s}"
    );
}

#[test]
fn breast_cancer_split_standardized_per_feature() {
    let mut split = by_name("breast-cancer", None, 1).expect("breast cancer");
    split.standardize_per_feature();
    let f = split.train.features;
    for j in 0..f {
        let column: Vec<f32> = (0..split.train.len())
            .map(|i| split.train.example(i)[j])
            .collect();
        let (m, s) = mean_std(&column);
        assert!(
            m.abs() < 1e-4 && (s - 1.0).abs() < 1e-4,
            "column {j}: {m} {s}"
        );
    }
}

#[test]
fn same_seed_same_split() {
    let d: Dataset = digits();
    let a = train_test_split(&d, 0.25, 99).expect("split");
    let b = train_test_split(&d, 0.25, 99).expect("split");
    assert_eq!(a, b);
    let err = train_test_split(&d, 1.0, 99).expect_err("fraction 1");
    assert!(matches!(err, DataError::Invalid { .. }));
    assert!(err.to_string().contains("test_fraction"));
}
