//! The [`Dataset`] and [`Split`] types, seeded splitting and standardization.

use crate::DataError;

/// A classification dataset: `n` examples of `features` f32 values each
/// (row-major in `x`), with labels in `0..classes` in `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// A short name, e.g. `"digits"`.
    pub name: String,
    /// Values per example (`x.len() / n`); the product of `shape`.
    pub features: usize,
    /// Number of classes; every label is below it.
    pub classes: usize,
    /// The examples, one after another, `features` values each.
    pub x: Vec<f32>,
    /// One label per example, in `0..classes`.
    pub y: Vec<u32>,
    /// A human-readable name per class (`classes` of them).
    pub class_names: Vec<String>,
    /// The per-example shape, e.g. `[8, 8]`, `[28, 28]` or `[30]`.
    pub shape: Vec<usize>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The features of example `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn example(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// A new dataset holding the examples at `indices`, in that order
    /// (repeats allowed); name, classes and shape are kept.
    ///
    /// # Panics
    /// If an index is `>= self.len()`, like slice indexing.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(indices.len() * self.features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(self.example(i));
            y.push(self.y[i]);
        }
        Dataset {
            name: self.name.clone(),
            features: self.features,
            classes: self.classes,
            x,
            y,
            class_names: self.class_names.clone(),
            shape: self.shape.clone(),
        }
    }
}

/// A train/test pair of the same dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The part to fit on.
    pub train: Dataset,
    /// The held-out part to evaluate on.
    pub test: Dataset,
}

impl Split {
    /// Standardize both parts by the TRAINING set's global mean and standard
    /// deviation (one scalar each, over all pixels/features), as in the PyTorch
    /// reference runs; returns `(mean, std)`.
    ///
    /// The standard deviation is the population one (divide by the count),
    /// computed in f64. If it is zero or not finite (e.g. an empty or constant
    /// training set), 1 is used so that nothing is divided by zero.
    pub fn standardize_global(&mut self) -> (f32, f32) {
        let (mean, std) = mean_std(self.train.x.iter().copied());
        let std = if std > 0.0 && std.is_finite() {
            std
        } else {
            1.0
        };
        let mean = if mean.is_finite() { mean } else { 0.0 };
        for v in self.train.x.iter_mut().chain(self.test.x.iter_mut()) {
            *v = ((f64::from(*v) - mean) / std) as f32;
        }
        (mean as f32, std as f32)
    }

    /// Standardize each feature column by the training set's per-column mean
    /// and (population) standard deviation, for tabular data like breast
    /// cancer. Constant columns (all training values equal) get std 1, so they
    /// become 0 in training and keep their offset in test.
    pub fn standardize_per_feature(&mut self) {
        let f = self.train.features;
        if f == 0 {
            return;
        }
        for j in 0..f {
            let column = self.train.x.iter().skip(j).step_by(f).copied();
            let (mean, std) = mean_std(column);
            let first = self.train.x.get(j).copied();
            let constant = self
                .train
                .x
                .iter()
                .skip(j)
                .step_by(f)
                .all(|&v| Some(v) == first);
            let mean = if mean.is_finite() { mean } else { 0.0 };
            let std = if constant || !(std > 0.0 && std.is_finite()) {
                1.0
            } else {
                std
            };
            for part in [&mut self.train, &mut self.test] {
                if part.features != f {
                    continue;
                }
                for v in part.x.iter_mut().skip(j).step_by(f) {
                    *v = ((f64::from(*v) - mean) / std) as f32;
                }
            }
        }
    }
}

/// Two-pass mean and population standard deviation in f64; `(0, 0)` if empty.
fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f64, f64) {
    let (mut n, mut sum) = (0usize, 0.0f64);
    for v in values.clone() {
        n += 1;
        sum += f64::from(v);
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let sq: f64 = values.map(|v| (f64::from(v) - mean).powi(2)).sum();
    (mean, (sq / n as f64).sqrt())
}

/// SplitMix64 (Steele, Lea & Flood 2014), written out so that a split never
/// changes with a dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`), by Lemire's multiply-shift
    /// (bias below 2^-40 for any dataset size that fits in memory).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }
}

/// Split `data` into train and test parts by a seeded shuffle (not
/// stratified): the same seed always gives the same split.
///
/// The test part gets `round(len × test_fraction)` examples, kept between 1
/// and `len − 1`; both parts are in shuffled order. Errors with
/// [`DataError::Invalid`] if `test_fraction` is not strictly between 0 and 1,
/// if `data` has fewer than 2 examples, or if `x` and `y` disagree in size.
pub fn train_test_split(data: &Dataset, test_fraction: f64, seed: u64) -> Result<Split, DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::Invalid {
            what: format!("test_fraction must be strictly between 0 and 1, got {test_fraction}"),
        });
    }
    let n = data.len();
    if n < 2 {
        return Err(DataError::Invalid {
            what: format!(
                "cannot split `{}`: it has {n} example(s), need at least 2",
                data.name
            ),
        });
    }
    if data.features.checked_mul(n) != Some(data.x.len()) {
        return Err(DataError::Invalid {
            what: format!(
                "dataset `{}` is inconsistent: {} values for {n} examples of {} features",
                data.name,
                data.x.len(),
                data.features
            ),
        });
    }
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let (test_idx, train_idx) = order.split_at(n_test);
    Ok(Split {
        train: data.subset(train_idx),
        test: data.subset(test_idx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` examples of 3 features; example `i` holds `[i, 2i, 3i]`, label `i % 3`.
    fn toy(n: usize) -> Dataset {
        Dataset {
            name: "toy".into(),
            features: 3,
            classes: 3,
            x: (0..n)
                .flat_map(|i| [i as f32, 2.0 * i as f32, 3.0 * i as f32])
                .collect(),
            y: (0..n).map(|i| (i % 3) as u32).collect(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            shape: vec![3],
        }
    }

    /// Recover each example's original index from its first feature.
    fn ids(d: &Dataset) -> Vec<usize> {
        (0..d.len()).map(|i| d.example(i)[0] as usize).collect()
    }

    #[test]
    fn splitmix64_matches_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let data = toy(101);
        let a = train_test_split(&data, 0.25, 42).expect("split");
        let b = train_test_split(&data, 0.25, 42).expect("split");
        assert_eq!(a, b);
        assert_eq!(a.test.len(), 25);
        assert_eq!(a.train.len(), 76);
        let mut all: Vec<usize> = ids(&a.train).into_iter().chain(ids(&a.test)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..101).collect::<Vec<_>>());
        // Rows stay intact and labels follow their rows.
        for part in [&a.train, &a.test] {
            for i in 0..part.len() {
                let e = part.example(i);
                let id = e[0] as usize;
                assert_eq!(e, &[id as f32, 2.0 * id as f32, 3.0 * id as f32]);
                assert_eq!(part.y[i], (id % 3) as u32);
            }
            assert_eq!(part.x.len(), part.len() * 3);
            assert_eq!(part.shape, vec![3]);
        }
        let c = train_test_split(&data, 0.25, 43).expect("split");
        assert_ne!(
            ids(&a.test),
            ids(&c.test),
            "a different seed should shuffle differently"
        );
    }

    #[test]
    fn split_sizes_are_clamped_and_arguments_checked() {
        let s = train_test_split(&toy(2), 0.01, 0).expect("split");
        assert_eq!((s.train.len(), s.test.len()), (1, 1));
        let s = train_test_split(&toy(10), 0.99, 0).expect("split");
        assert_eq!((s.train.len(), s.test.len()), (1, 9));
        for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = train_test_split(&toy(10), bad, 0).expect_err("bad fraction");
            assert!(matches!(err, DataError::Invalid { .. }), "{bad}: {err:?}");
        }
        let err = train_test_split(&toy(1), 0.5, 0).expect_err("too small");
        assert!(matches!(err, DataError::Invalid { .. }));
        let mut broken = toy(5);
        broken.x.pop();
        let err = train_test_split(&broken, 0.5, 0).expect_err("inconsistent");
        assert!(matches!(err, DataError::Invalid { .. }));
    }

    #[test]
    fn subset_and_accessors() {
        let d = toy(4);
        assert_eq!(d.len(), 4);
        assert!(!d.is_empty());
        assert_eq!(d.example(2), &[2.0, 4.0, 6.0]);
        let s = d.subset(&[3, 1, 3]);
        assert_eq!(s.x, vec![3.0, 6.0, 9.0, 1.0, 2.0, 3.0, 3.0, 6.0, 9.0]);
        assert_eq!(s.y, vec![0, 1, 0]);
        assert!(d.subset(&[]).is_empty());
    }

    #[test]
    fn standardize_global_uses_training_statistics() {
        let mut s = train_test_split(&toy(200), 0.25, 5).expect("split");
        let test_before = s.test.x.clone();
        let (mean, std) = s.standardize_global();
        let (m, sd) = mean_std(s.train.x.iter().copied());
        assert!(m.abs() < 1e-6, "train mean {m}");
        assert!((sd - 1.0).abs() < 1e-6, "train std {sd}");
        for (after, before) in s.test.x.iter().zip(&test_before) {
            let expect = (before - mean) / std;
            assert!((after - expect).abs() < 1e-4, "{after} vs {expect}");
        }
        // A constant training set is only shifted.
        let mut c = Split {
            train: toy(3),
            test: toy(3),
        };
        c.train.x = vec![5.0; 9];
        assert_eq!(c.standardize_global(), (5.0, 1.0));
        assert_eq!(c.train.x, vec![0.0; 9]);
    }

    #[test]
    fn standardize_per_feature_makes_columns_unit() {
        let mut data = toy(50);
        for i in 0..50 {
            data.x[i * 3 + 1] = 0.1; // a constant column
        }
        let mut s = train_test_split(&data, 0.2, 9).expect("split");
        s.standardize_per_feature();
        for j in [0, 2] {
            let (m, sd) = mean_std(s.train.x.iter().skip(j).step_by(3).copied());
            assert!(
                m.abs() < 1e-6 && (sd - 1.0).abs() < 1e-6,
                "column {j}: {m} {sd}"
            );
        }
        assert!(s.train.x.iter().skip(1).step_by(3).all(|&v| v.abs() < 1e-7));
        assert!(s.test.x.iter().skip(1).step_by(3).all(|&v| v.abs() < 1e-7));
    }
}
