//! Two-dimensional test functions with analytic gradients and known minima, for watching
//! optimizers walk (`downhill trajectories`) and for tests.
//!
//! | function | $f(x, y)$ | global minima |
//! |---|---|---|
//! | Rosenbrock (1960) | $(1-x)^2 + 100\,(y-x^2)^2$ | $(1, 1)$ |
//! | Beale (1958) | $(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2$ | $(3, 0.5)$ |
//! | Himmelblau (1972) | $(x^2+y-11)^2 + (x+y^2-7)^2$ | four, $f = 0$ |
//! | saddle | $x^2 - y^2$ | none (unbounded below); a saddle point at $(0, 0)$ |
//! | ill-conditioned quadratic | $\tfrac12\,(x^2 + 25\,y^2)$ (condition number 25) | $(0, 0)$ |
//! | Rastrigin (1974) | $20 + \sum_{i} \left(x_i^2 - 10\cos 2\pi x_i\right)$ | $(0, 0)$, among many local minima |
//!
//! # References
//! - H. H. Rosenbrock, *An automatic method for finding the greatest or least value of a
//!   function*, The Computer Journal 3 (1960).
//! - E. M. L. Beale, *On an iterative method for finding a local minimum of a function of more
//!   than one variable*, Princeton University technical report 25 (1958).
//! - D. M. Himmelblau, *Applied Nonlinear Programming*, McGraw-Hill (1972).
//! - L. A. Rastrigin, *Systems of Extremal Control*, Nauka (1974).
//!
//! # Example
//! ```
//! use downhill::test_functions::TestFunction;
//! let f = TestFunction::Rosenbrock;
//! assert_eq!(f.value([1.0, 1.0]), 0.0);
//! assert_eq!(f.gradient([1.0, 1.0]), [0.0, 0.0]);
//! assert_eq!(f.distance_to_minimum([1.0, 4.0]), Some(3.0));
//! ```

use std::f64::consts::PI;

use crate::{Optimizer, Result};

/// A 2-D test function: value, analytic gradient, known minima and a window to draw it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestFunction {
    /// $(1-x)^2 + 100\,(y-x^2)^2$: a curved, flat-bottomed valley.
    Rosenbrock,
    /// $(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2$: flat plateaus and steep walls.
    Beale,
    /// $(x^2+y-11)^2 + (x+y^2-7)^2$: four minima, so the start and the method decide which.
    Himmelblau,
    /// $x^2 - y^2$: a saddle; descent started on the ridge $y = 0$ stays on it.
    Saddle,
    /// $\tfrac12(x^2 + 25y^2)$: a narrow valley where plain gradient descent zig-zags.
    IllConditioned,
    /// $20 + \sum_i (x_i^2 - 10\cos 2\pi x_i)$: a bowl covered with local minima.
    Rastrigin,
}

/// Himmelblau's four minima (to 6 decimals; $f < 10^{-9}$ at each).
const HIMMELBLAU_MINIMA: [[f64; 2]; 4] = [
    [3.0, 2.0],
    [-2.805118, 3.131312],
    [-3.779310, -3.283186],
    [3.584428, -1.848126],
];

impl TestFunction {
    /// Every function, in the order above.
    pub const ALL: [TestFunction; 6] = [
        TestFunction::Rosenbrock,
        TestFunction::Beale,
        TestFunction::Himmelblau,
        TestFunction::Saddle,
        TestFunction::IllConditioned,
        TestFunction::Rastrigin,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            TestFunction::Rosenbrock => "rosenbrock",
            TestFunction::Beale => "beale",
            TestFunction::Himmelblau => "himmelblau",
            TestFunction::Saddle => "saddle",
            TestFunction::IllConditioned => "ill-conditioned",
            TestFunction::Rastrigin => "rastrigin",
        }
    }

    /// The function called `name` (see [`TestFunction::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The formula, as plain text (for titles).
    pub fn formula(self) -> &'static str {
        match self {
            TestFunction::Rosenbrock => "(1 − x)² + 100 (y − x²)²",
            TestFunction::Beale => "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
            TestFunction::Himmelblau => "(x² + y − 11)² + (x + y² − 7)²",
            TestFunction::Saddle => "x² − y²",
            TestFunction::IllConditioned => "(x² + 25 y²) / 2",
            TestFunction::Rastrigin => "20 + x² − 10 cos 2πx + y² − 10 cos 2πy",
        }
    }

    /// $f(x, y)$.
    pub fn value(self, [x, y]: [f64; 2]) -> f64 {
        match self {
            TestFunction::Rosenbrock => (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2),
            TestFunction::Beale => {
                let [t1, t2, t3] = beale_terms(x, y);
                t1 * t1 + t2 * t2 + t3 * t3
            }
            TestFunction::Himmelblau => (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2),
            TestFunction::Saddle => x * x - y * y,
            TestFunction::IllConditioned => 0.5 * (x * x + 25.0 * y * y),
            TestFunction::Rastrigin => {
                20.0 + x * x - 10.0 * (2.0 * PI * x).cos() + y * y - 10.0 * (2.0 * PI * y).cos()
            }
        }
    }

    /// $\nabla f(x, y)$, analytically.
    pub fn gradient(self, [x, y]: [f64; 2]) -> [f64; 2] {
        match self {
            TestFunction::Rosenbrock => [
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            ],
            TestFunction::Beale => {
                let [t1, t2, t3] = beale_terms(x, y);
                [
                    2.0 * (t1 * (y - 1.0) + t2 * (y * y - 1.0) + t3 * (y * y * y - 1.0)),
                    2.0 * x * (t1 + 2.0 * t2 * y + 3.0 * t3 * y * y),
                ]
            }
            TestFunction::Himmelblau => {
                let (a, b) = (x * x + y - 11.0, x + y * y - 7.0);
                [4.0 * x * a + 2.0 * b, 2.0 * a + 4.0 * y * b]
            }
            TestFunction::Saddle => [2.0 * x, -2.0 * y],
            TestFunction::IllConditioned => [x, 25.0 * y],
            TestFunction::Rastrigin => [
                2.0 * x + 20.0 * PI * (2.0 * PI * x).sin(),
                2.0 * y + 20.0 * PI * (2.0 * PI * y).sin(),
            ],
        }
    }

    /// The global minima (empty for the saddle, which has none).
    pub fn minima(self) -> &'static [[f64; 2]] {
        match self {
            TestFunction::Rosenbrock => &[[1.0, 1.0]],
            TestFunction::Beale => &[[3.0, 0.5]],
            TestFunction::Himmelblau => &HIMMELBLAU_MINIMA,
            TestFunction::Saddle => &[],
            TestFunction::IllConditioned | TestFunction::Rastrigin => &[[0.0, 0.0]],
        }
    }

    /// Euclidean distance from `p` to the nearest global minimum (`None` for the saddle).
    pub fn distance_to_minimum(self, [x, y]: [f64; 2]) -> Option<f64> {
        self.minima()
            .iter()
            .map(|[mx, my]| (x - mx).hypot(y - my))
            .min_by(f64::total_cmp)
    }

    /// The window to draw: `([x_min, x_max], [y_min, y_max])`.
    pub fn bounds(self) -> ([f64; 2], [f64; 2]) {
        match self {
            TestFunction::Rosenbrock => ([-2.0, 2.0], [-1.0, 3.0]),
            TestFunction::Beale => ([-4.5, 4.5], [-4.5, 4.5]),
            TestFunction::Himmelblau => ([-5.0, 5.0], [-5.0, 5.0]),
            TestFunction::Saddle => ([-2.0, 2.0], [-2.0, 2.0]),
            TestFunction::IllConditioned => ([-3.0, 3.0], [-1.5, 1.5]),
            TestFunction::Rastrigin => ([-5.12, 5.12], [-5.12, 5.12]),
        }
    }

    /// A starting point that shows the function's difficulty: the far side of Rosenbrock's
    /// valley, Beale's plateau, between Himmelblau's basins, just off the saddle's ridge (where
    /// the gradient across it is tiny), across the narrow valley, and a few basins out on
    /// Rastrigin's bowl.
    pub fn start(self) -> [f64; 2] {
        match self {
            TestFunction::Rosenbrock => [-1.5, 2.0],
            TestFunction::Beale => [1.0, 1.5],
            TestFunction::Himmelblau => [0.0, 0.0],
            TestFunction::Saddle => [1.5, 1e-3],
            TestFunction::IllConditioned => [-2.5, 1.0],
            TestFunction::Rastrigin => [2.2, -1.7],
        }
    }
}

/// How a [`walk`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// Within the tolerance of a global minimum.
    Reached,
    /// Every step taken without reaching a minimum.
    OutOfSteps,
    /// Left the window by more than its own size (or a coordinate stopped being finite):
    /// diverged, or ran down the saddle.
    Escaped,
}

/// The path of one optimizer over a [`TestFunction`].
#[derive(Clone, Debug, PartialEq)]
pub struct Walk {
    /// The start, then the point after every step.
    pub path: Vec<[f64; 2]>,
    /// Why it stopped.
    pub end: WalkEnd,
}

impl Walk {
    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.path.len() - 1
    }

    /// The last point.
    pub fn last(&self) -> [f64; 2] {
        self.path[self.path.len() - 1]
    }
}

/// Walk `f` from `start` with `opt` (built over one parameter of 2 elements), for at most
/// `max_steps` steps, stopping early within `tolerance` of a global minimum or once the path
/// has left the window by more than the window's size. An error of the optimizer's (a
/// non-finite gradient it refuses) ends the walk with that error.
pub fn walk(
    f: TestFunction,
    opt: &mut dyn Optimizer<f64>,
    start: [f64; 2],
    max_steps: usize,
    tolerance: f64,
) -> Result<Walk> {
    let ([x0, x1], [y0, y1]) = f.bounds();
    let (w, h) = (x1 - x0, y1 - y0);
    let inside =
        |[x, y]: [f64; 2]| (x0 - w..=x1 + w).contains(&x) && (y0 - h..=y1 + h).contains(&y);
    let reached = |p: [f64; 2]| f.distance_to_minimum(p).is_some_and(|d| d < tolerance);
    let mut p = start;
    let mut path = vec![p];
    let mut end = WalkEnd::OutOfSteps;
    if reached(p) {
        end = WalkEnd::Reached;
    }
    while end == WalkEnd::OutOfSteps && path.len() <= max_steps {
        let g = f.gradient(p);
        opt.step(&mut [&mut p[..]], &[&g[..]])?;
        path.push(p);
        if reached(p) {
            end = WalkEnd::Reached;
        } else if !inside(p) {
            end = WalkEnd::Escaped;
        }
    }
    Ok(Walk { path, end })
}

/// Beale's three residuals at `(x, y)`.
fn beale_terms(x: f64, y: f64) -> [f64; 3] {
    [
        1.5 - x + x * y,
        2.25 - x + x * y * y,
        2.625 - x + x * y * y * y,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every gradient against central finite differences, at points spread over each
    /// function's window (relative error, since Beale's and Rosenbrock's gradients reach 10⁵).
    #[test]
    fn gradients_match_finite_differences() {
        let h = 1e-6;
        for f in TestFunction::ALL {
            let ([x0, x1], [y0, y1]) = f.bounds();
            for i in 0..=8 {
                for j in 0..=8 {
                    let p = [
                        x0 + (x1 - x0) * (i as f64 + 0.37) / 9.0,
                        y0 + (y1 - y0) * (j as f64 + 0.61) / 9.0,
                    ];
                    let g = f.gradient(p);
                    for k in 0..2 {
                        let (mut a, mut b) = (p, p);
                        a[k] += h;
                        b[k] -= h;
                        let fd = (f.value(a) - f.value(b)) / (2.0 * h);
                        let err = (g[k] - fd).abs() / g[k].abs().max(1.0);
                        assert!(err < 1e-5, "{} at {p:?}, ∂{k}: {} vs {fd}", f.name(), g[k]);
                    }
                }
            }
        }
    }

    #[test]
    fn minima_are_stationary_and_lowest() {
        for f in TestFunction::ALL {
            for &m in f.minima() {
                let [gx, gy] = f.gradient(m);
                assert!(gx.hypot(gy) < 1e-4, "{} at {m:?}", f.name());
                assert!(f.value(m) < 1e-9, "{} at {m:?}: {}", f.name(), f.value(m));
                let ([x0, x1], [y0, y1]) = f.bounds();
                assert!((x0..=x1).contains(&m[0]) && (y0..=y1).contains(&m[1]));
            }
            // The start is inside the window and not already at a minimum.
            let s = f.start();
            assert!(f.distance_to_minimum(s).is_none_or(|d| d > 0.5));
        }
        assert!(TestFunction::Saddle.minima().is_empty());
        assert_eq!(TestFunction::Saddle.distance_to_minimum([1.0, 1.0]), None);
    }

    fn sgd(momentum: f64, noise: Option<crate::GradientNoise>) -> Box<dyn Optimizer<f64>> {
        let setup = crate::registry::Setup {
            noise,
            ..Default::default()
        };
        let options = serde_json::json!({"lr": 0.02, "momentum": momentum});
        let params = vec![crate::ParamInfo::new("xy", [2])];
        crate::registry::build::<f64>("sgd", &options, params, &setup).unwrap()
    }

    /// The lecture's picture of momentum: across a narrow valley plain gradient descent
    /// crawls along the flat direction; momentum builds speed there.
    #[test]
    fn momentum_reaches_the_ill_conditioned_minimum_in_fewer_steps() {
        let f = TestFunction::IllConditioned;
        let plain = walk(f, sgd(0.0, None).as_mut(), f.start(), 5000, 1e-3).unwrap();
        let heavy = walk(f, sgd(0.9, None).as_mut(), f.start(), 5000, 1e-3).unwrap();
        assert_eq!((plain.end, heavy.end), (WalkEnd::Reached, WalkEnd::Reached));
        assert!(
            heavy.steps() * 3 < plain.steps(),
            "momentum {} steps, plain {}",
            heavy.steps(),
            plain.steps()
        );
    }

    /// On the ridge y = 0 of x² − y² the gradient has no y component: plain descent slides
    /// into the saddle point and stays; gradient noise pushes it off, and then it runs down.
    #[test]
    fn gradient_noise_leaves_the_saddle_ridge() {
        let f = TestFunction::Saddle;
        let ridge = [1.5, 0.0];
        let plain = walk(f, sgd(0.0, None).as_mut(), ridge, 2000, 1e-3).unwrap();
        assert_eq!(plain.end, WalkEnd::OutOfSteps);
        assert!(plain.path.iter().all(|p| p[1] == 0.0));
        assert!(plain.last()[0].abs() < 1e-6, "{:?}", plain.last());
        let noise = crate::GradientNoise {
            seed: 7,
            ..Default::default()
        };
        let noisy = walk(f, sgd(0.0, Some(noise)).as_mut(), ridge, 2000, 1e-3).unwrap();
        assert_eq!(noisy.end, WalkEnd::Escaped, "{:?}", noisy.last());
    }

    #[test]
    fn walk_stops_at_a_minimum_and_counts_steps() {
        let f = TestFunction::IllConditioned;
        let w = walk(f, sgd(0.9, None).as_mut(), [0.0, 0.0], 100, 1e-3).unwrap();
        assert_eq!((w.steps(), w.end), (0, WalkEnd::Reached));
        let w = walk(f, sgd(0.0, None).as_mut(), f.start(), 10, 1e-3).unwrap();
        assert_eq!((w.steps(), w.end), (10, WalkEnd::OutOfSteps));
    }

    #[test]
    fn names_round_trip() {
        for f in TestFunction::ALL {
            assert_eq!(TestFunction::from_name(f.name()), Some(f));
        }
        assert_eq!(TestFunction::from_name("sphere"), None);
    }
}
