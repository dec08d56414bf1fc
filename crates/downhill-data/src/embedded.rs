//! The two small datasets embedded in the crate: digits and breast cancer.

use std::io::Read;
use std::path::PathBuf;

use crate::{DataError, Dataset};

/// The gzipped digits CSV: 1797 rows of 64 pixels (0..16) and a label (0..9).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The breast-cancer CSV: header `569,30,malignant,benign`, then 569 rows of
/// 30 features and a label (0 = malignant, 1 = benign).
const BREAST_CANCER_CSV: &str = include_str!("../data/breast_cancer.csv");

/// Description and attribution of the digits dataset (scikit-learn's
/// `digits.rst`), for reports.
pub const DIGITS_ATTRIBUTION: &str = include_str!("../data/digits.rst");

/// Description and attribution of the breast-cancer dataset (scikit-learn's
/// `breast_cancer.rst`), for reports.
pub const BREAST_CANCER_ATTRIBUTION: &str = include_str!("../data/breast_cancer.rst");

/// The 1797 8×8 handwritten digits (the UCI optdigits test set, as bundled
/// with scikit-learn), decoded from the embedded gzipped CSV on each call.
///
/// Pixels are the original integers 0..=16 as f32 (not scaled); labels are
/// 0..=9 with class names `"0"`..`"9"`; `shape` is `[8, 8]`.
pub fn digits() -> Dataset {
    // The embedded bytes are fixed at compile time and checked by the tests,
    // so a failure here is a build defect, not bad input.
    parse_digits(DIGITS_CSV_GZ).expect("the embedded digits data is valid")
}

/// The 569 × 30 Wisconsin diagnostic breast-cancer table (as bundled with
/// scikit-learn), parsed from the embedded CSV on each call.
///
/// Labels are 0 = malignant (212 examples), 1 = benign (357); features are
/// the raw measurements (use [`crate::Split::standardize_per_feature`]);
/// `shape` is `[30]`.
pub fn breast_cancer() -> Dataset {
    // As for `digits`: the embedded text is fixed and checked by the tests.
    parse_breast_cancer(BREAST_CANCER_CSV).expect("the embedded breast-cancer data is valid")
}

fn malformed(file: &str, reason: String) -> DataError {
    DataError::Malformed {
        file: PathBuf::from(file),
        reason,
    }
}

const DIGITS_FILE: &str = "<embedded>/digits.csv.gz";
const BREAST_CANCER_FILE: &str = "<embedded>/breast_cancer.csv";

fn parse_digits(gz: &[u8]) -> Result<Dataset, DataError> {
    const FEATURES: usize = 64;
    const CLASSES: usize = 10;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| malformed(DIGITS_FILE, format!("cannot decompress: {e}")))?;
    let mut x = Vec::with_capacity(1797 * FEATURES);
    let mut y = Vec::with_capacity(1797);
    for (lineno, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != FEATURES + 1 {
            return Err(malformed(
                DIGITS_FILE,
                format!(
                    "line {}: {} fields, expected {}",
                    lineno + 1,
                    fields.len(),
                    FEATURES + 1
                ),
            ));
        }
        for field in &fields[..FEATURES] {
            match field.parse::<u8>() {
                Ok(v) if v <= 16 => x.push(f32::from(v)),
                _ => {
                    return Err(malformed(
                        DIGITS_FILE,
                        format!(
                            "line {}: pixel `{field}` is not an integer in 0..=16",
                            lineno + 1
                        ),
                    ))
                }
            }
        }
        y.push(parse_label(DIGITS_FILE, lineno, fields[FEATURES], CLASSES)?);
    }
    Ok(Dataset {
        name: "digits".into(),
        features: FEATURES,
        classes: CLASSES,
        x,
        y,
        class_names: (0..CLASSES).map(|c| c.to_string()).collect(),
        shape: vec![8, 8],
    })
}

fn parse_label(file: &str, lineno: usize, field: &str, classes: usize) -> Result<u32, DataError> {
    match field.parse::<u32>() {
        Ok(v) if (v as usize) < classes => Ok(v),
        _ => Err(malformed(
            file,
            format!(
                "line {}: label `{field}` is not an integer below {classes}",
                lineno + 1
            ),
        )),
    }
}

fn parse_breast_cancer(text: &str) -> Result<Dataset, DataError> {
    let file = BREAST_CANCER_FILE;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| malformed(file, "empty file".into()))?;
    // Header: "<rows>,<features>,<class name>,<class name>,…"
    let head: Vec<&str> = header.split(',').map(str::trim).collect();
    let parse_count = |s: Option<&&str>, what: &str| {
        s.and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| malformed(file, format!("header `{header}`: bad {what}")))
    };
    let rows = parse_count(head.first(), "row count")?;
    let features = parse_count(head.get(1), "feature count")?;
    let class_names: Vec<String> = head.iter().skip(2).map(|s| s.to_string()).collect();
    if class_names.len() < 2 || features == 0 {
        return Err(malformed(
            file,
            format!("header `{header}`: need a feature count and at least two class names"),
        ));
    }
    let mut x = Vec::with_capacity(rows.min(1 << 16) * features);
    let mut y = Vec::with_capacity(rows.min(1 << 16));
    for (lineno, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != features + 1 {
            return Err(malformed(
                file,
                format!(
                    "line {}: {} fields, expected {}",
                    lineno + 1,
                    fields.len(),
                    features + 1
                ),
            ));
        }
        for field in &fields[..features] {
            match field.parse::<f32>() {
                Ok(v) if v.is_finite() => x.push(v),
                _ => {
                    return Err(malformed(
                        file,
                        format!("line {}: `{field}` is not a finite number", lineno + 1),
                    ))
                }
            }
        }
        y.push(parse_label(
            file,
            lineno,
            fields[features],
            class_names.len(),
        )?);
    }
    if y.len() != rows {
        return Err(malformed(
            file,
            format!("header promises {rows} rows, found {}", y.len()),
        ));
    }
    Ok(Dataset {
        name: "breast-cancer".into(),
        features,
        classes: class_names.len(),
        x,
        y,
        class_names,
        shape: vec![features],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_counts(d: &Dataset) -> Vec<usize> {
        let mut counts = vec![0; d.classes];
        for &l in &d.y {
            counts[l as usize] += 1;
        }
        counts
    }

    #[test]
    fn digits_shape_labels_and_range() {
        let d = digits();
        assert_eq!(d.name, "digits");
        assert_eq!(d.len(), 1797);
        assert_eq!(d.features, 64);
        assert_eq!(d.shape, vec![8, 8]);
        assert_eq!(d.classes, 10);
        assert_eq!(d.x.len(), 1797 * 64);
        assert_eq!(
            d.class_names,
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        );
        // scikit-learn's documented per-class counts for load_digits().
        assert_eq!(
            class_counts(&d),
            [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        let min = d.x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = d.x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((min, max), (0.0, 16.0));
        assert!(d.x.iter().all(|v| v.fract() == 0.0));
        // The first row of sklearn's digits is a zero.
        assert_eq!(d.y[0], 0);
        assert_eq!(
            &d.example(0)[..8],
            &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn breast_cancer_shape_and_counts() {
        let d = breast_cancer();
        assert_eq!(d.name, "breast-cancer");
        assert_eq!(d.len(), 569);
        assert_eq!(d.features, 30);
        assert_eq!(d.shape, vec![30]);
        assert_eq!(d.classes, 2);
        assert_eq!(d.class_names, ["malignant", "benign"]);
        assert_eq!(class_counts(&d), [212, 357]);
        assert!(d.x.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert_eq!(d.example(0)[0], 17.99);
        assert_eq!(d.y[0], 0);
    }

    #[test]
    fn attributions_are_the_rst_texts() {
        assert!(DIGITS_ATTRIBUTION.contains("Optical recognition of handwritten digits"));
        assert!(BREAST_CANCER_ATTRIBUTION
            .to_lowercase()
            .contains("breast cancer"));
    }

    #[test]
    fn bad_csv_is_malformed_not_a_panic() {
        for bad in [
            "",
            "x,30,a,b\n",
            "2,2,a\n1,2,0\n3,4,1\n",
            "2,2,a,b\n1,2,0\n",
            "1,2,a,b\n1,2\n",
            "1,2,a,b\n1,zz,0\n",
            "1,2,a,b\n1,NaN,0\n",
            "1,2,a,b\n1,2,2\n",
            "1,2,a,b\n1,2,-1\n",
        ] {
            let err = parse_breast_cancer(bad).expect_err(bad);
            assert!(
                matches!(&err, DataError::Malformed { file, .. } if file.ends_with("breast_cancer.csv")),
                "{bad:?}: {err:?}"
            );
        }
        let err = parse_digits(b"not gzip").expect_err("not gzip");
        assert!(matches!(err, DataError::Malformed { .. }));
    }
}
