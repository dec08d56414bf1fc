//! A step's element-wise math as data: run the prelude and a rule's `update` on a [`Lane`]
//! that records what it is asked to compute instead of computing it.
//!
//! The record, a [`Tape`], is what other executors compile: `downhill-cuda` turns it into a
//! CUDA kernel, one C statement per operation, so the GPU runs the very operations of the CPU
//! kernel in the same order (without contraction into fused multiply-adds, both give the same
//! bits). Every constant the code asks for ([`Lane::c`], [`Lane::splat`]) becomes a slot
//! whose value the tape keeps: two tensors whose traces have the same operations share one
//! compiled kernel and differ only in the constants they pass. Branches on the rule's
//! configuration (AMSGrad, momentum, RAdam's rectification, SWATS' phase) are taken while
//! tracing, so each variant gets its own, branch-free tape. A rule's reading pass
//! ([`Rule::MEASURES`]) is traced the same way ([`trace_measure`]), into a tape that writes
//! nothing but its sums.

use std::cell::RefCell;
use std::fmt::Write;
use std::marker::PhantomData;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::{Float, Lane, Prelude};
use crate::optim::{Rule, MAX_BUFFERS};

/// What an operation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// The parameter.
    Param,
    /// The gradient.
    Grad,
    /// State buffer `k`.
    State(usize),
    /// Running sum `j` of the rule's two reductions.
    Sum(usize),
}

/// One operation of a [`Tape`]; operands are indices of earlier operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// An input of the element.
    Input(Input),
    /// Constant slot `k` (its value is [`Tape::consts`]`[k]`).
    Const(usize),
    /// `a + b`.
    Add(usize, usize),
    /// `a − b`.
    Sub(usize, usize),
    /// `a · b`.
    Mul(usize, usize),
    /// `a / b`.
    Div(usize, usize),
    /// `−a`.
    Neg(usize),
    /// `√a` (correctly rounded).
    Sqrt(usize),
    /// `a > b ? a : b`.
    Max(usize, usize),
    /// `a < b ? a : b`.
    Min(usize, usize),
    /// `|a|`.
    Abs(usize),
}

/// The element-wise update of one tensor for one step, recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Tape<F> {
    /// The operations, each reading only earlier ones.
    pub ops: Vec<Op>,
    /// The value of every constant slot.
    pub consts: Vec<F>,
    /// State buffers read and written.
    pub nbuf: usize,
    /// The operation giving the new parameter.
    pub param: usize,
    /// The operations giving the new state buffers.
    pub state: Vec<usize>,
    /// The operations giving the two running sums (`None`: the rule does not reduce).
    pub sums: [Option<usize>; 2],
}

impl<F: Float> Tape<F> {
    /// The operations and outputs as text, without the constants' values: equal keys, same
    /// code.
    pub fn key(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{}|{}|{:?}|{:?}|{:?}|",
            F::DTYPE,
            self.nbuf,
            self.param,
            self.state,
            self.sums
        );
        for op in &self.ops {
            let _ = write!(s, "{op:?};");
        }
        s
    }

    /// Run the tape on one element, as the CPU would (for tests and for checking executors).
    pub fn eval(&self, p: F, g: F, state: &mut [F], sums: &mut [F; 2]) -> F {
        let mut v: Vec<F> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let x = match *op {
                Op::Input(Input::Param) => p,
                Op::Input(Input::Grad) => g,
                Op::Input(Input::State(k)) => state.get(k).copied().unwrap_or_default(),
                Op::Input(Input::Sum(j)) => sums[j],
                Op::Const(k) => self.consts[k],
                Op::Add(a, b) => v[a] + v[b],
                Op::Sub(a, b) => v[a] - v[b],
                Op::Mul(a, b) => v[a] * v[b],
                Op::Div(a, b) => v[a] / v[b],
                Op::Neg(a) => -v[a],
                Op::Sqrt(a) => v[a].sqrt(),
                Op::Max(a, b) => Lane::max(v[a], v[b]),
                Op::Min(a, b) => Lane::min(v[a], v[b]),
                Op::Abs(a) => v[a].abs(),
            };
            v.push(x);
        }
        for (k, &o) in self.state.iter().enumerate() {
            state[k] = v[o];
        }
        for (j, o) in self.sums.iter().enumerate() {
            if let Some(o) = o {
                sums[j] = v[*o];
            }
        }
        v[self.param]
    }
}

thread_local! {
    /// The tape being recorded on this thread: operations and constants (as `f64`, which
    /// holds every `f32` and `f64` exactly).
    static RECORDING: RefCell<(Vec<Op>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn push(op: Op) -> usize {
    RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        r.0.push(op);
        r.0.len() - 1
    })
}

/// A value being traced: the index of the operation that computes it.
#[derive(Debug)]
pub struct Traced<F> {
    node: usize,
    _elem: PhantomData<F>,
}

impl<F> Clone for Traced<F> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F> Copy for Traced<F> {}

impl<F> Traced<F> {
    fn new(op: Op) -> Self {
        Traced {
            node: push(op),
            _elem: PhantomData,
        }
    }
}

macro_rules! binary {
    ($trait:ident, $method:ident, $op:ident) => {
        impl<F> $trait for Traced<F> {
            type Output = Self;
            fn $method(self, rhs: Self) -> Self {
                Traced::new(Op::$op(self.node, rhs.node))
            }
        }
    };
}
binary!(Add, add, Add);
binary!(Sub, sub, Sub);
binary!(Mul, mul, Mul);
binary!(Div, div, Div);

impl<F> Neg for Traced<F> {
    type Output = Self;
    fn neg(self) -> Self {
        Traced::new(Op::Neg(self.node))
    }
}

impl<F: Float> Lane for Traced<F> {
    type Elem = F;
    fn splat(x: F) -> Self {
        let slot = RECORDING.with(|r| {
            let mut r = r.borrow_mut();
            r.1.push(x.to_f64());
            r.1.len() - 1
        });
        Traced::new(Op::Const(slot))
    }
    fn sqrt(self) -> Self {
        Traced::new(Op::Sqrt(self.node))
    }
    fn max(self, other: Self) -> Self {
        Traced::new(Op::Max(self.node, other.node))
    }
    fn min(self, other: Self) -> Self {
        Traced::new(Op::Min(self.node, other.node))
    }
    fn abs(self) -> Self {
        Traced::new(Op::Abs(self.node))
    }
}

/// Record the element-wise work of one tensor's step: `prelude` (maximize, clipping, weight
/// decay), then rule `R` with constants `coef` over `nbuf` state buffers.
pub fn trace<F: Float, R: Rule>(prelude: &Prelude, coef: &R::Coef, nbuf: usize) -> Tape<F> {
    record::<F>(prelude, nbuf, |p, g, s, sums| {
        R::update(coef, p, g, s, sums)
    })
}

/// Record the reading pass of a rule that [measures](Rule::MEASURES), as the CPU's kernel
/// runs it: `prelude`, then [`Rule::measure`] with constants `coef` over `nbuf` state
/// buffers. Its parameter and state outputs are their unchanged inputs (an executor stores
/// nothing for them); its sums are the measure's two sums.
pub fn trace_measure<F: Float, R: Rule>(prelude: &Prelude, coef: &R::Coef, nbuf: usize) -> Tape<F> {
    record::<F>(prelude, nbuf, |p, g, s, sums| {
        R::measure(coef, p, g, s, sums);
        // The parameter as it came in, not as the prelude left it (decoupled decay).
        Traced::<F> {
            node: 0,
            _elem: PhantomData,
        }
    })
}

/// Record `body` on the parameter and gradient after `prelude`, the state buffers and the
/// running sums; `body` returns the new parameter and updates the state and sums in place.
fn record<F: Float>(
    prelude: &Prelude,
    nbuf: usize,
    body: impl FnOnce(
        Traced<F>,
        Traced<F>,
        &mut [Traced<F>; MAX_BUFFERS],
        &mut [Traced<F>; 2],
    ) -> Traced<F>,
) -> Tape<F> {
    RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        r.0.clear();
        r.1.clear();
    });
    // Node 0: the parameter as it comes in (`trace_measure` returns it).
    let p = Traced::<F>::new(Op::Input(Input::Param));
    debug_assert_eq!(p.node, 0);
    let g = Traced::<F>::new(Op::Input(Input::Grad));
    // Slots past `nbuf` are never read (the rule keeps `nbuf` buffers).
    let mut s: [Traced<F>; MAX_BUFFERS] =
        std::array::from_fn(|k| Traced::new(Op::Input(Input::State(k))));
    let sums_in = [0, 1].map(|j| Traced::<F>::new(Op::Input(Input::Sum(j))));
    let mut sums = sums_in;
    let (p, g) = prelude.resolve::<Traced<F>>().apply(p, g);
    let param = body(p, g, &mut s, &mut sums);
    let (ops, consts) = RECORDING.with(|r| std::mem::take(&mut *r.borrow_mut()));
    Tape {
        ops,
        consts: consts.into_iter().map(F::from_f64).collect(),
        nbuf,
        param: param.node,
        state: s[..nbuf].iter().map(|x| x.node).collect(),
        sums: [0, 1].map(|j| (sums[j].node != sums_in[j].node).then_some(sums[j].node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{adadelta::Adadelta, adagrad::Adagrad, adam::Adam, adamax::Adamax};
    use crate::optim::{nadam::NAdam, radam::RAdam, rmsprop::RmsProp, sgd::Sgd, swats::Swats};

    /// The tape, run on the host, gives the CPU kernel's bits: with every prelude stage on.
    fn same_bits<R: Rule>(rule: R, scalars: &mut R::Scalars, steps: usize) {
        let pre = Prelude {
            maximize: true,
            grad_scale: Some(0.75),
            clip_value: Some(0.9),
            l2: 0.01,
            decay_factor: Some(0.999),
        };
        let nbuf = rule.buffers().len();
        let mut cpu_s = [0.0f32; MAX_BUFFERS];
        for (k, s) in cpu_s.iter_mut().enumerate().take(nbuf) {
            *s = rule.buffer_init(k) as f32;
        }
        let mut tape_s = cpu_s;
        let (mut cpu_p, mut tape_p) = (0.3f32, 0.3f32);
        let (mut cpu_r, mut tape_r) = ([0.0f32; 2], [0.0f32; 2]);
        for t in 0..steps {
            let g = (t as f32 * 0.7).sin() - 0.2;
            let coef = rule.begin(scalars, 0.05);
            let tape = trace::<f32, R>(&pre, &coef, nbuf);
            let (p, gg) = pre.resolve::<f32>().apply(cpu_p, g);
            cpu_p = R::update(&coef, p, gg, &mut cpu_s, &mut cpu_r);
            tape_p = tape.eval(tape_p, g, &mut tape_s[..nbuf], &mut tape_r);
            assert_eq!(cpu_p.to_bits(), tape_p.to_bits(), "{} step {t}", R::NAME);
            assert_eq!(cpu_s, tape_s);
            assert_eq!(cpu_r, tape_r);
        }
    }

    #[test]
    fn tapes_compute_what_the_cpu_computes() {
        same_bits(Adam::adamw(), &mut Default::default(), 6);
        let ams = Adam {
            amsgrad: true,
            ..Adam::default()
        };
        same_bits(ams, &mut Default::default(), 6);
        let nesterov = Sgd {
            momentum: 0.9,
            nesterov: true,
            ..Sgd::default()
        };
        same_bits(nesterov, &mut Default::default(), 6);
        // RAdam changes branch at step 6.
        same_bits(RAdam::default(), &mut Default::default(), 9);
        same_bits(Swats::default(), &mut Default::default(), 6);
        same_bits(Adagrad::default(), &mut Default::default(), 6);
        let rms = RmsProp {
            momentum: 0.9,
            centered: true,
            ..RmsProp::default()
        };
        same_bits(rms, &mut Default::default(), 6);
        same_bits(RmsProp::default(), &mut Default::default(), 6);
        same_bits(Adamax::default(), &mut Default::default(), 6);
        same_bits(Adadelta::default(), &mut Default::default(), 6);
        same_bits(NAdam::default(), &mut Default::default(), 6);
    }

    /// The reading pass's tape, run on the host, gives the CPU's sums bit for bit and leaves
    /// the parameter and state as they came in (its outputs are its inputs' nodes).
    fn same_measure<R: Rule>(rule: R, steps: usize) {
        let pre = Prelude {
            maximize: true,
            grad_scale: Some(0.75),
            clip_value: Some(0.9),
            l2: 0.01,
            decay_factor: Some(0.999),
        };
        let nbuf = rule.buffers().len();
        let mut scalars = R::Scalars::default();
        let mut s = [0.0f64; MAX_BUFFERS];
        for (k, x) in s.iter_mut().enumerate().take(nbuf) {
            *x = rule.buffer_init(k);
        }
        let mut p = 0.3f64;
        for t in 0..steps {
            let g = (t as f64 * 0.7).sin() - 0.2;
            let mut coef = rule.begin(&mut scalars, 0.05);
            let tape = trace_measure::<f64, R>(&pre, &coef, nbuf);
            assert_eq!(tape.ops[tape.param], Op::Input(Input::Param));
            for (b, &o) in tape.state.iter().enumerate() {
                assert_eq!(tape.ops[o], Op::Input(Input::State(b)));
            }
            let (pp, gg) = pre.resolve::<f64>().apply(p, g);
            let mut cpu_r = [0.0f64; 2];
            R::measure(&coef, pp, gg, &s, &mut cpu_r);
            let mut tape_s = s;
            let mut tape_r = [0.0f64; 2];
            let tape_p = tape.eval(p, g, &mut tape_s[..nbuf], &mut tape_r);
            assert_eq!(tape_p.to_bits(), p.to_bits(), "{} step {t}", R::NAME);
            assert_eq!(tape_s, s);
            assert_eq!(cpu_r.map(f64::to_bits), tape_r.map(f64::to_bits));
            assert!(tape.sums.iter().any(Option::is_some), "{}", R::NAME);
            // On to the next step, as the CPU steps (one element: its sums are the group's).
            rule.absorb(&mut scalars, &mut coef, cpu_r, cpu_r);
            let mut red = [0.0f64; 2];
            p = R::update(&coef, pp, gg, &mut s, &mut red);
            rule.end(&mut scalars, red);
        }
    }

    #[test]
    fn measure_tapes_compute_the_cpus_sums_and_write_nothing() {
        use crate::optim::{lamb::Lamb, novograd::NovoGrad, prodigy::Prodigy};
        same_measure(Lamb::default(), 5);
        same_measure(NovoGrad::default(), 5);
        same_measure(Prodigy::default(), 5);
    }

    #[test]
    fn equal_code_has_equal_keys_whatever_the_constants() {
        let pre = Prelude::default();
        let rule = Adam::default();
        let mut s = Default::default();
        let a = trace::<f32, Adam>(&pre, &rule.begin(&mut s, 0.1), 2);
        let b = trace::<f32, Adam>(&pre, &rule.begin(&mut s, 0.2), 2);
        assert_ne!(a.consts, b.consts);
        assert_eq!(a.key(), b.key());
        let c = trace::<f64, Adam>(&pre, &rule.begin(&mut s, 0.2), 2);
        assert_ne!(a.key(), c.key());
        assert_eq!(a.sums, [None, None]);
    }
}
