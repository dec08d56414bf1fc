//! Counter-based standard normals: the same bits on every machine, thread count and device.
//!
//! Element $j$ of stream $i$ under key $k$ draws four 32-bit words from Philox4x32-10
//! (Salmon, Moraes, Dror & Shaw, *Parallel Random Numbers: As Easy as 1, 2, 3*, SC 2011,
//! <https://doi.org/10.1145/2063384.2063405>) with counter $(j, i)$ and key $k$, makes two
//! uniforms of 53 bits, $u_1 \in (0, 1]$ and $u_2 \in [0, 1)$, and returns one Box–Muller
//! normal (Box & Muller, *A Note on the Generation of Random Normal Deviates*, 1958):
//!
//! $$ z = \sqrt{-2 \ln u_1}\,\cos(2\pi u_2). $$
//!
//! No sample depends on another, so any thread (or GPU lane) computes any element directly.
//! The logarithm and cosine are computed here from `+ − × ÷` and `sqrt` alone (series in
//! fixed order, coefficients below), each correctly rounded in IEEE arithmetic, instead of
//! the platform's `log`/`cos`, which differ between C libraries and from CUDA's by an ulp:
//! so `downhill-cuda`'s kernel, which emits the same operations from these constants, gives
//! the same bits as the CPU. Both are accurate to about 1e-15 relative (tested against the
//! standard library: a few ulps).

/// Philox4x32's multipliers and Weyl key increments (Salmon et al. 2011, Random123).
pub const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
/// Philox4x32's key schedule increments.
pub const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// `1/(2k+1)`, k = 0‥11: $\ln m = 2s \sum_k s^{2k}/(2k+1)$ with $s = (m-1)/(m+1)$,
/// $|s| \le 0.1716$ for $m \in [\sqrt{1/2}, \sqrt 2]$ (the last term is below 1e-18).
pub const LN_SERIES: [f64; 12] = [
    1.0,
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
    1.0 / 15.0,
    1.0 / 17.0,
    1.0 / 19.0,
    1.0 / 21.0,
    1.0 / 23.0,
];

/// `(−1)^k/(2k+1)!`, k = 0‥8: $\sin\varphi = \varphi \sum_k (-1)^k \varphi^{2k}/(2k+1)!$ for
/// $|\varphi| \le \pi/4$.
pub const SIN_SERIES: [f64; 9] = [
    1.0,
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
    -1.0 / 1_307_674_368_000.0,
    1.0 / 355_687_428_096_000.0,
];

/// `(−1)^k/(2k)!`, k = 0‥9: $\cos\varphi = \sum_k (-1)^k \varphi^{2k}/(2k)!$ for
/// $|\varphi| \le \pi/4$.
pub const COS_SERIES: [f64; 10] = [
    1.0,
    -1.0 / 2.0,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
    -1.0 / 87_178_291_200.0,
    1.0 / 20_922_789_888_000.0,
    -1.0 / 6_402_373_705_728_000.0,
];

/// Philox4x32 with 10 rounds: four words from a 128-bit counter and a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W[0]);
            k[1] = k[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = u64::from(PHILOX_M[0]) * u64::from(c[0]);
        let p1 = u64::from(PHILOX_M[1]) * u64::from(c[2]);
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// $\sum_k c_k x^k$ by Horner's rule from the last coefficient (the order `downhill-cuda`'s
/// kernel emits).
fn horner(series: &[f64], x: f64) -> f64 {
    let (last, rest) = series.split_last().unwrap_or((&0.0, &[]));
    rest.iter().rev().fold(*last, |acc, &c| acc * x + c)
}

/// Natural logarithm of `x` in [2⁻⁵³, 1] (a normal number) by `+ − × ÷` alone.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * horner(&LN_SERIES, s2)
}

/// $\cos(2\pi u)$ for `u` in [0, 1) by `+ − × ÷` alone: the quadrant from `4u`, then a
/// series in an angle of at most π/4.
pub fn cos_2pi(u: f64) -> f64 {
    let x = 4.0 * u;
    let q = (x + 0.5).floor();
    let phi = (x - q) * std::f64::consts::FRAC_PI_2;
    let p2 = phi * phi;
    let quadrant = q as i64 & 3;
    if quadrant % 2 == 0 {
        let c = horner(&COS_SERIES, p2);
        if quadrant == 0 {
            c
        } else {
            -c
        }
    } else {
        let s = phi * horner(&SIN_SERIES, p2);
        if quadrant == 1 {
            -s
        } else {
            s
        }
    }
}

/// The standard normal of element `index` of stream `stream` under `key`.
pub fn standard_normal(key: u64, stream: u64, index: u64) -> f64 {
    let w = philox4x32_10(
        [
            index as u32,
            (index >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [key as u32, (key >> 32) as u32],
    );
    let a = ((u64::from(w[0]) << 32) | u64::from(w[1])) >> 11;
    let b = ((u64::from(w[2]) << 32) | u64::from(w[3])) >> 11;
    const ULP: f64 = 1.0 / (1u64 << 53) as f64;
    let u1 = (a + 1) as f64 * ULP;
    let u2 = b as f64 * ULP;
    (-2.0 * ln(u1)).sqrt() * cos_2pi(u2)
}

/// SplitMix64's finalizer (Steele, Lea & Flood 2014): a 64-bit key from a seed and a step.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known answers (`kat_vectors`, philox4x32 10).
    #[test]
    fn philox_gives_random123s_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn ln_and_cos_match_the_standard_library() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..200_000u64 {
            let a = (mix(i) >> 11) + 1;
            let u = a as f64 / (1u64 << 53) as f64;
            // Also the smallest and largest arguments, and powers of two.
            let u = match i {
                0 => 1.0,
                1 => 1.0 / (1u64 << 53) as f64,
                2..=54 => 1.0 / (1u64 << (i - 2)) as f64,
                _ => u,
            };
            let want = u.ln();
            let err = (ln(u) - want).abs() / want.abs().max(1e-300);
            worst.0 = worst.0.max(if want == 0.0 { ln(u).abs() } else { err });
            let v = (mix(i ^ 0xabc) >> 11) as f64 / (1u64 << 53) as f64;
            let v = if i < 8 { i as f64 / 8.0 } else { v };
            let c = (2.0 * std::f64::consts::PI * v).cos();
            worst.1 = worst.1.max((cos_2pi(v) - c).abs());
        }
        // A few ulps: `e·ln 2 + ln m` cancels partly for u just below 1/√2 (measured 4.4e-16).
        assert!(worst.0 < 1e-15, "ln: worst relative error {:e}", worst.0);
        assert!(worst.1 < 2e-15, "cos: worst absolute error {:e}", worst.1);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(cos_2pi(0.0), 1.0);
        assert_eq!(cos_2pi(0.5), -1.0);
    }

    #[test]
    fn normals_have_the_moments_of_a_standard_normal() {
        let n = 400_000u64;
        let (mut m1, mut m2, mut m4, mut tail) = (0.0, 0.0, 0.0, 0u64);
        for j in 0..n {
            let z = standard_normal(mix(7), 3, j);
            m1 += z;
            m2 += z * z;
            m4 += z * z * z * z;
            tail += u64::from(z.abs() > 3.0);
        }
        let (m1, m2, m4) = (m1 / n as f64, m2 / n as f64, m4 / n as f64);
        // Standard errors: 1/√n ≈ 0.0016 for the mean, √(2/n) ≈ 0.0022 for the variance.
        assert!(m1.abs() < 0.008, "mean {m1}");
        assert!((m2 - 1.0).abs() < 0.012, "variance {m2}");
        assert!((m4 - 3.0).abs() < 0.06, "fourth moment {m4}");
        // P(|z| > 3) = 0.0027.
        let p = tail as f64 / n as f64;
        assert!((p - 0.0027).abs() < 0.0005, "tail {p}");
        // Streams and keys are independent: neighbouring ones are uncorrelated.
        let corr = (0..n)
            .map(|j| standard_normal(mix(7), 3, j) * standard_normal(mix(7), 4, j))
            .sum::<f64>()
            / n as f64;
        assert!(corr.abs() < 0.008, "correlation {corr}");
    }
}
