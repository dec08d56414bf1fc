//! CUDA C from a traced step ([`downhill::kernel::trace`]).
//!
//! The step kernel walks a device-side table of chunks (tensor, first element, end), each
//! chunk at most [`GPU_CHUNK`] elements of one tensor; a block takes chunks `blockIdx.x`,
//! `blockIdx.x + gridDim.x`, …, so one launch covers any number of tensors of any sizes,
//! and the grid is sized to fill the card, not to the tensor count. A table of tensors gives
//! each one's parameter, gradient and state addresses and the offset of its constants.
//! Tensors whose addresses are 16-byte aligned are read and written 16 bytes at a time
//! (`float4`, `double2`); the element math between is the tape, one statement per
//! operation, in the CPU kernel's order.
//!
//! Reductions (SWATS' dot products, the gradient norm) are summed per chunk by a fixed tree
//! in shared memory, then over chunks in a fixed order: the same inputs give the same bits
//! on every run.

use std::fmt::Write;

use downhill::kernel::trace::{Input, Op, Tape};
use downhill::optim::MAX_BUFFERS;

use crate::device::GpuFloat;

/// Threads per block of every kernel here.
pub const THREADS: u32 = 256;

/// Elements per chunk: a multiple of every vector width, large enough to amortize a block's
/// table reads, small enough that a one-wave grid splits 201.5 M parameters (12 300 chunks)
/// evenly: about 23 chunks a block on an H100, so blocks differ by at most 4%.
pub const GPU_CHUNK: usize = 16 * 1024;

/// How the step kernels are laid out: what [`Gpu::tuned`](crate::Gpu::tuned) changes, for
/// `downhill bench --device cuda --tuning` to compare layouts on a card. The default is the
/// layout described above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Elements per chunk (a multiple of 4, at least 256): [`GPU_CHUNK`].
    pub chunk: usize,
    /// 16-byte vectors a thread loads before computing, per loop turn (1 to 4): 1.
    pub unroll: u32,
    /// Blocks per multiprocessor the compiler must leave registers for (the second argument
    /// of `__launch_bounds__`, 0 to 8; 0 asks nothing): 0.
    pub min_blocks: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            chunk: GPU_CHUNK,
            unroll: 1,
            min_blocks: 0,
        }
    }
}

impl Tuning {
    /// Refuse a layout the kernels cannot take.
    pub fn validate(&self) -> Result<(), String> {
        if self.chunk < 256 || !self.chunk.is_multiple_of(4) || self.chunk > 1 << 26 {
            return Err(format!(
                "chunk {} must be a multiple of 4 from 256 to 2^26",
                self.chunk
            ));
        }
        if !(1..=4).contains(&self.unroll) {
            return Err(format!("unroll {} must be 1 to 4", self.unroll));
        }
        if self.min_blocks > 2048 / THREADS {
            return Err(format!(
                "min-blocks {} must be 0 to {}",
                self.min_blocks,
                2048 / THREADS
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chunk={},unroll={},min-blocks={}",
            self.chunk, self.unroll, self.min_blocks
        )
    }
}

impl std::str::FromStr for Tuning {
    type Err = String;

    /// `chunk=16384,unroll=2,min-blocks=4`; absent keys keep their defaults.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut tuning = Tuning::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not key=value"))?;
            let number = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{key}: '{v}' is not a whole number"))
            };
            let value = number(value)?;
            match key.trim() {
                "chunk" => tuning.chunk = usize::try_from(value).map_err(|e| e.to_string())?,
                "unroll" => tuning.unroll = u32::try_from(value).map_err(|e| e.to_string())?,
                "min-blocks" => {
                    tuning.min_blocks = u32::try_from(value).map_err(|e| e.to_string())?
                }
                other => return Err(format!("unknown key '{other}' (chunk, unroll, min-blocks)")),
            }
        }
        tuning.validate()?;
        Ok(tuning)
    }
}

/// Words (`u64`) per entry of the tensor table: parameter, gradient, four state buffers,
/// offset of the constants, flags.
pub const TENSOR_WORDS: usize = 8;
/// Words per entry of the chunk table: tensor, first element, end.
pub const CHUNK_WORDS: usize = 3;
/// Flag of a tensor whose buffers are all 16-byte aligned.
pub const ALIGNED: u64 = 1;

/// One entry of the tensor table: parameter and gradient addresses, the state buffers'
/// (0 where unused), the offset of the tensor's constants, and [`ALIGNED`] when every
/// address is 16-byte aligned (checked here).
pub fn tensor_row(p: u64, g: u64, state: [u64; 4], coef: u64) -> [u64; TENSOR_WORDS] {
    let aligned = [p, g].iter().chain(&state).all(|a| a % 16 == 0);
    [
        p,
        g,
        state[0],
        state[1],
        state[2],
        state[3],
        coef,
        if aligned { ALIGNED } else { 0 },
    ]
}

/// Declarations every kernel shares.
fn prologue<F: GpuFloat>() -> String {
    format!(
        r#"typedef {t} T;
typedef {v} V;
#define W {w}
struct Tensor {{ T* p; const T* g; T* s[4]; unsigned long long coef; unsigned long long flags; }};
struct Chunk {{ unsigned long long tensor, start, end; }};
union Lanes {{ V v; T a[W]; }};
"#,
        t = F::C,
        v = F::VEC,
        w = F::WIDTH,
    )
}

/// The deterministic block sum of `a` and `b` into `out[0..2]` (thread 0).
const BLOCK_SUM: &str = r#"
__device__ __forceinline__ void block_sum(double a, double b, double* sh, double* out) {
    sh[threadIdx.x] = a;
    sh[blockDim.x + threadIdx.x] = b;
    __syncthreads();
    for (unsigned int w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) {
            sh[threadIdx.x] += sh[threadIdx.x + w];
            sh[blockDim.x + threadIdx.x] += sh[blockDim.x + threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { out[0] = sh[0]; out[1] = sh[blockDim.x]; }
    __syncthreads();
}
"#;

/// The element function of a tape: `p` and the state updated in place, the sums
/// accumulated in `r`.
fn element<F: GpuFloat>(tape: &Tape<F>) -> String {
    let mut s = String::from(
        "__device__ __forceinline__ void element(const T* __restrict__ k, T& p, const T g, T* s, T* r) {\n",
    );
    for (i, op) in tape.ops.iter().enumerate() {
        let e = match *op {
            Op::Input(Input::Param) => "p".to_string(),
            Op::Input(Input::Grad) => "g".to_string(),
            Op::Input(Input::State(b)) if b < tape.nbuf => format!("s[{b}]"),
            Op::Input(Input::State(_)) => "(T)0".to_string(),
            Op::Input(Input::Sum(j)) => format!("r[{j}]"),
            Op::Const(c) => format!("k[{c}]"),
            Op::Add(a, b) => format!("v{a} + v{b}"),
            Op::Sub(a, b) => format!("v{a} - v{b}"),
            Op::Mul(a, b) => format!("v{a} * v{b}"),
            Op::Div(a, b) => format!("v{a} / v{b}"),
            Op::Neg(a) => format!("-v{a}"),
            Op::Sqrt(a) => format!("{}(v{a})", F::SQRT),
            Op::Max(a, b) => format!("(v{a} > v{b} ? v{a} : v{b})"),
            Op::Min(a, b) => format!("(v{a} < v{b} ? v{a} : v{b})"),
            Op::Abs(a) => format!("{}(v{a})", F::ABS),
        };
        let _ = writeln!(s, "    const T v{i} = {e};");
    }
    let _ = writeln!(s, "    p = v{};", tape.param);
    for (b, o) in tape.state.iter().enumerate() {
        let _ = writeln!(s, "    s[{b}] = v{o};");
    }
    for (j, o) in tape.sums.iter().enumerate() {
        if let Some(o) = o {
            let _ = writeln!(s, "    r[{j}] = v{o};");
        }
    }
    s.push_str("}\n");
    s
}

/// Whether the tape changes the parameter, and each state buffer: an output that is the
/// input itself (a reading pass's) needs no store.
pub fn writes<F>(tape: &Tape<F>) -> (bool, Vec<bool>) {
    let param = tape.ops[tape.param] != Op::Input(Input::Param);
    let state = (tape.state.iter().enumerate())
        .map(|(b, &o)| tape.ops[o] != Op::Input(Input::State(b)))
        .collect();
    (param, state)
}

/// Whether the tape reduces.
pub fn reduces<F>(tape: &Tape<F>) -> bool {
    tape.sums.iter().any(Option::is_some)
}

/// The step kernel `name` for every tensor whose trace is `tape` (up to its constants).
/// Arguments: chunk table, chunk count, tensor table, constants, per-chunk sums (two
/// `double`s per chunk; written only when the tape reduces).
pub fn step_kernel<F: GpuFloat>(tape: &Tape<F>, name: &str, tuning: &Tuning) -> String {
    // One piece of code per state buffer `b`, concatenated.
    let each = |line: &dyn Fn(usize) -> String| (0..tape.nbuf).map(line).collect::<String>();
    // Stores only of what the tape changes: an output that is its own input (every output
    // of a reading pass) is not written back.
    let (writes_p, writes_s) = writes(tape);
    let stored = |line: &dyn Fn(usize) -> String| {
        (0..tape.nbuf)
            .filter(|&b| writes_s[b])
            .map(line)
            .collect::<String>()
    };
    let load = each(&|b| format!("            Lanes S{b}; S{b}.v = ((const V*)t.s[{b}])[i];\n"));
    let store = stored(&|b| format!("            ((V*)t.s[{b}])[i] = S{b}.v;\n"));
    // The state's initializer list: the buffers, then zeros for the rest (C++ zero-fills
    // what a list leaves out, but refuses one longer than the array: a rule with all four
    // buffers gets no padding).
    let init = |line: &dyn Fn(usize) -> String| {
        let list = each(line);
        if tape.nbuf < MAX_BUFFERS {
            format!("{list}(T)0")
        } else {
            list.trim_end_matches(", ").to_string()
        }
    };
    let lanes_in = init(&|b| format!("S{b}.a[j], "));
    let lanes_out = each(&|b| format!("                S{b}.a[j] = s[{b}];\n"));
    let scalar_in = init(&|b| format!("t.s[{b}][i], "));
    let scalar_out = stored(&|b| format!("        t.s[{b}][i] = s[{b}];\n"));
    let (store_p, store_p_u, scalar_p) = if writes_p {
        (
            "            ((V*)t.p)[i] = P.v;\n",
            "                    ((V*)t.p)[i] = P[u].v;\n",
            "    t.p[i] = p;\n",
        )
    } else {
        ("", "", "")
    };
    let reduce = if reduces(tape) {
        "        block_sum((double)r[0], (double)r[1], sh, partials + 2 * c);\n"
    } else {
        ""
    };
    let vector_loop = if tuning.unroll <= 1 {
        format!(
            r#"            for (unsigned long long i = ch.start / W + threadIdx.x; i < vend; i += blockDim.x) {{
            Lanes P; P.v = ((const V*)t.p)[i];
            Lanes G; G.v = ((const V*)t.g)[i];
{load}            #pragma unroll
            for (int j = 0; j < W; ++j) {{
                T s[4] = {{ {lanes_in} }};
                element(k, P.a[j], G.a[j], s, r);
{lanes_out}            }}
{store_p}{store}            }}
"#
        )
    } else {
        // `U` vectors per thread and turn, all loaded before any is computed; a thread
        // still takes its elements in the order of the loop above (the reductions' order).
        let decl_u = each(&|b| format!(" Lanes S{b}[U];"));
        let load_u =
            each(&|b| format!("                    S{b}[u].v = ((const V*)t.s[{b}])[i];\n"));
        let store_u = stored(&|b| format!("                    ((V*)t.s[{b}])[i] = S{b}[u].v;\n"));
        let lanes_in_u = init(&|b| format!("S{b}[u].a[j], "));
        let lanes_out_u = each(&|b| format!("                        S{b}[u].a[j] = s[{b}];\n"));
        format!(
            r#"            const unsigned long long first = ch.start / W + threadIdx.x;
            for (unsigned long long i0 = first; i0 < vend; i0 += U * blockDim.x) {{
                Lanes P[U]; Lanes G[U];{decl_u}
                #pragma unroll
                for (int u = 0; u < U; ++u) {{
                    const unsigned long long i = i0 + u * blockDim.x;
                    if (i >= vend) break;
                    P[u].v = ((const V*)t.p)[i];
                    G[u].v = ((const V*)t.g)[i];
{load_u}                }}
                #pragma unroll
                for (int u = 0; u < U; ++u) {{
                    const unsigned long long i = i0 + u * blockDim.x;
                    if (i >= vend) break;
                    #pragma unroll
                    for (int j = 0; j < W; ++j) {{
                        T s[4] = {{ {lanes_in_u} }};
                        element(k, P[u].a[j], G[u].a[j], s, r);
{lanes_out_u}                    }}
{store_p_u}{store_u}                }}
            }}
"#
        )
    };
    let bounds = if tuning.min_blocks > 0 {
        format!("{THREADS}, {}", tuning.min_blocks)
    } else {
        THREADS.to_string()
    };
    format!(
        r#"{prologue}{block_sum}{element}
__device__ __forceinline__ void scalar(const Tensor& t, const T* k, unsigned long long i, T* r) {{
    T s[4] = {{ {scalar_in} }};
    T p = t.p[i];
    element(k, p, t.g[i], s, r);
{scalar_p}{scalar_out}}}

#define U {unroll}
extern "C" __global__ void __launch_bounds__({bounds}) {name}(
    const Chunk* __restrict__ chunks, unsigned long long nchunks,
    const Tensor* __restrict__ tensors, const T* __restrict__ consts,
    double* __restrict__ partials) {{
    __shared__ double sh[2 * {threads}];
    for (unsigned long long c = blockIdx.x; c < nchunks; c += gridDim.x) {{
        const Chunk ch = chunks[c];
        const Tensor t = tensors[ch.tensor];
        const T* k = consts + t.coef;
        T r[2] = {{ (T)0, (T)0 }};
        unsigned long long tail = ch.start;
        if (t.flags & 1ull) {{
            const unsigned long long vend = ch.end / W;
{vector_loop}            tail = vend * W;
        }}
        for (unsigned long long i = tail + threadIdx.x; i < ch.end; i += blockDim.x) {{
            scalar(t, k, i, r);
        }}
{reduce}    }}
}}
"#,
        prologue = prologue::<F>(),
        block_sum = BLOCK_SUM,
        element = element(tape),
        threads = THREADS,
        unroll = tuning.unroll.max(1),
    )
}

/// The gradient scan: per chunk, the sum of squares and the count of non-finite elements
/// (`partials[2c]`, `partials[2c + 1]`).
pub fn scan_kernel<F: GpuFloat>() -> String {
    format!(
        r#"{prologue}{block_sum}
extern "C" __global__ void __launch_bounds__({threads}) scan(
    const Chunk* __restrict__ chunks, unsigned long long nchunks,
    const Tensor* __restrict__ tensors, double* __restrict__ partials) {{
    __shared__ double sh[2 * {threads}];
    for (unsigned long long c = blockIdx.x; c < nchunks; c += gridDim.x) {{
        const Chunk ch = chunks[c];
        const T* g = tensors[ch.tensor].g;
        double sq = 0.0, bad = 0.0;
        for (unsigned long long i = ch.start + threadIdx.x; i < ch.end; i += blockDim.x) {{
            const double x = (double)g[i];
            sq += x * x;
            bad += (x - x == 0.0) ? 0.0 : 1.0;
        }}
        block_sum(sq, bad, sh, partials + 2 * c);
    }}
}}

extern "C" __global__ void __launch_bounds__({threads}) total(
    const double* __restrict__ partials, unsigned long long n, double* __restrict__ out) {{
    __shared__ double sh[2 * {threads}];
    double a = 0.0, b = 0.0;
    for (unsigned long long i = threadIdx.x; i < n; i += blockDim.x) {{
        a += partials[2 * i];
        b += partials[2 * i + 1];
    }}
    block_sum(a, b, sh, out);
}}
"#,
        prologue = prologue::<F>(),
        block_sum = BLOCK_SUM,
        threads = THREADS,
    )
}

/// Horner's rule over `series` in `x` into `acc`, from the last coefficient, as
/// [`downhill::normal`] computes it: one statement per step, each coefficient a literal that
/// reads back as the same `double` (Rust prints the shortest round trip).
fn horner(acc: &str, x: &str, series: &[f64]) -> String {
    let mut out = format!("double {acc} = {:e};", series[series.len() - 1]);
    for c in series.iter().rev().skip(1) {
        let _ = write!(out, " {acc} = {acc} * {x} + {c:e};");
    }
    out
}

/// Gradient noise ([`downhill::noise`]) over the tensor table (`g` the caller's gradients,
/// `p` where the noisy copy goes): per element, in `double`,
/// `x = clamp(scale · g)`, then `p = (T)(x + sigma · z)` with `z` the standard normal of
/// [`downhill::normal::standard_normal`]`(key, tensor, element)`. Its Philox rounds,
/// logarithm and cosine are the CPU's operations in the CPU's order, with the CPU's
/// constants, so the noisy gradients are the CPU's bits. `scale` 1 and `clamp` +∞ stand for
/// no clipping (both exact).
pub fn noise_kernel<F: GpuFloat>() -> String {
    use downhill::normal::{COS_SERIES, LN_SERIES, PHILOX_M, PHILOX_W, SIN_SERIES};
    format!(
        r#"{prologue}
__device__ __forceinline__ double ln_arith(double x) {{
    const unsigned long long bits = (unsigned long long)__double_as_longlong(x);
    long long e = (long long)((bits >> 52) & 0x7ffull) - 1023;
    double m = __longlong_as_double((long long)((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull));
    if (m > {sqrt2:e}) {{ m = m * 0.5; e += 1; }}
    const double s = (m - 1.0) / (m + 1.0);
    const double s2 = s * s;
    {ln}
    return (double)e * {ln2:e} + 2.0 * s * poly;
}}

__device__ __forceinline__ double cos_2pi(double u) {{
    const double x = 4.0 * u;
    const double q = floor(x + 0.5);
    const double phi = (x - q) * {half_pi:e};
    const double p2 = phi * phi;
    const long long quadrant = (long long)q & 3;
    if (quadrant % 2 == 0) {{
        {cos}
        return quadrant == 0 ? c : -c;
    }}
    {sin}
    s = phi * s;
    return quadrant == 1 ? -s : s;
}}

__device__ __forceinline__ double standard_normal(unsigned long long key,
                                                  unsigned long long stream,
                                                  unsigned long long index) {{
    unsigned c0 = (unsigned)index, c1 = (unsigned)(index >> 32);
    unsigned c2 = (unsigned)stream, c3 = (unsigned)(stream >> 32);
    unsigned k0 = (unsigned)key, k1 = (unsigned)(key >> 32);
    for (int round = 0; round < 10; ++round) {{
        if (round > 0) {{ k0 += {w0}u; k1 += {w1}u; }}
        const unsigned long long p0 = (unsigned long long){m0}u * c0;
        const unsigned long long p1 = (unsigned long long){m1}u * c2;
        const unsigned n0 = (unsigned)(p1 >> 32) ^ c1 ^ k0;
        const unsigned n2 = (unsigned)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (unsigned)p1; c2 = n2; c3 = (unsigned)p0;
    }}
    const unsigned long long a = ((((unsigned long long)c0) << 32) | c1) >> 11;
    const unsigned long long b = ((((unsigned long long)c2) << 32) | c3) >> 11;
    const double ulp = 1.0 / 9007199254740992.0;
    const double u1 = (double)(a + 1) * ulp;
    const double u2 = (double)b * ulp;
    return sqrt(-2.0 * ln_arith(u1)) * cos_2pi(u2);
}}

extern "C" __global__ void __launch_bounds__({threads}) noise(
    const Chunk* __restrict__ chunks, unsigned long long nchunks,
    const Tensor* __restrict__ tensors, unsigned long long key, double sigma, double scale,
    double clamp) {{
    for (unsigned long long c = blockIdx.x; c < nchunks; c += gridDim.x) {{
        const Chunk ch = chunks[c];
        const Tensor t = tensors[ch.tensor];
        for (unsigned long long i = ch.start + threadIdx.x; i < ch.end; i += blockDim.x) {{
            double x = (double)t.g[i] * scale;
            x = x < -clamp ? -clamp : (x > clamp ? clamp : x);
            t.p[i] = (T)(x + sigma * standard_normal(key, ch.tensor, i));
        }}
    }}
}}
"#,
        prologue = prologue::<F>(),
        ln = horner("poly", "s2", &LN_SERIES),
        sin = horner("s", "p2", &SIN_SERIES),
        cos = horner("c", "p2", &COS_SERIES),
        sqrt2 = std::f64::consts::SQRT_2,
        ln2 = std::f64::consts::LN_2,
        half_pi = std::f64::consts::FRAC_PI_2,
        w0 = PHILOX_W[0],
        w1 = PHILOX_W[1],
        m0 = PHILOX_M[0],
        m1 = PHILOX_M[1],
        threads = THREADS,
    )
}

/// Lookahead's synchronization over the tensor table (`p` the fast weights, `s[0]` the slow
/// ones): `slow ← slow + α(p − slow); p ← slow`, as the CPU computes it.
pub fn lookahead_kernel<F: GpuFloat>() -> String {
    format!(
        r#"{prologue}
extern "C" __global__ void __launch_bounds__({threads}) lookahead_sync(
    const Chunk* __restrict__ chunks, unsigned long long nchunks,
    const Tensor* __restrict__ tensors, const T alpha) {{
    for (unsigned long long c = blockIdx.x; c < nchunks; c += gridDim.x) {{
        const Chunk ch = chunks[c];
        const Tensor t = tensors[ch.tensor];
        for (unsigned long long i = ch.start + threadIdx.x; i < ch.end; i += blockDim.x) {{
            const T s = t.s[0][i] + alpha * (t.p[i] - t.s[0][i]);
            t.s[0][i] = s;
            t.p[i] = s;
        }}
    }}
}}
"#,
        prologue = prologue::<F>(),
        threads = THREADS,
    )
}

/// Where each tensor of the given lengths starts in an arena of `width`-element vectors, each
/// start 16-byte aligned when `width` elements are 16 bytes; and the arena's length.
pub fn arena_offsets(lens: &[usize], width: usize) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(lens.len());
    let mut total = 0;
    for &n in lens {
        offsets.push(total);
        total += n.div_ceil(width) * width;
    }
    (offsets, total)
}

/// The chunk table of tensors of the given lengths (only those `keep` selects), in chunks of
/// at most `chunk` elements.
pub fn chunks(lens: &[usize], chunk: usize, keep: impl Fn(usize) -> bool) -> Vec<u64> {
    let mut out = Vec::new();
    for (t, &n) in lens.iter().enumerate() {
        if !keep(t) {
            continue;
        }
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            out.extend([t as u64, start as u64, end as u64]);
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use downhill::kernel::{trace::trace, Prelude};
    use downhill::optim::{adam::Adam, swats::Swats, Rule};

    fn adam_tape() -> Tape<f32> {
        let rule = Adam::adamw();
        let coef = rule.begin(&mut Default::default(), 1e-3);
        let pre = Prelude {
            decay_factor: Some(1.0 - 1e-5),
            ..Prelude::default()
        };
        trace::<f32, Adam>(&pre, &coef, 2)
    }

    #[test]
    fn the_kernel_is_the_tape_one_statement_per_operation() {
        let tape = adam_tape();
        let src = step_kernel(&tape, "adam_f32", &Tuning::default());
        assert_eq!(src.matches("    const T v").count(), tape.ops.len());
        assert!(src.contains("typedef float4 V;"));
        assert!(src.contains("sqrtf("));
        assert!(src.contains("extern \"C\" __global__ void __launch_bounds__(256) adam_f32("));
        // Adam does not reduce: no per-chunk sums.
        assert!(!src.contains("block_sum((double)r[0]"));
        let swats = Swats::default();
        let coef = swats.begin(&mut Default::default(), 1e-3);
        let tape = trace::<f64, Swats>(&Prelude::default(), &coef, 3);
        let src = step_kernel(&tape, "swats_f64", &Tuning::default());
        assert!(src.contains("block_sum((double)r[0]"));
        assert!(src.contains("typedef double2 V;"));
    }

    /// A reading pass's kernel stores nothing but its sums, in every path and layout; an
    /// update kernel stores the parameter and every buffer.
    #[test]
    fn a_reading_pass_writes_nothing_back() {
        use downhill::kernel::trace::trace_measure;
        use downhill::optim::lamb::Lamb;
        let rule = Lamb::default();
        let coef = rule.begin(&mut Default::default(), 1e-3);
        let pre = Prelude {
            decay_factor: Some(0.99),
            ..Prelude::default()
        };
        let unrolled = Tuning {
            unroll: 2,
            ..Tuning::default()
        };
        for tuning in [Tuning::default(), unrolled] {
            let measure = trace_measure::<f32, Lamb>(&pre, &coef, 2);
            assert_eq!(writes(&measure), (false, vec![false, false]));
            let src = step_kernel(&measure, "m", &tuning);
            assert!(!src.contains("t.p[i] ="), "{src}");
            assert!(!src.contains("((V*)t.p)[i] ="), "{src}");
            assert!(!src.contains("t.s[0][i] ="), "{src}");
            assert!(!src.contains("((V*)t.s[0])[i] ="), "{src}");
            assert!(src.contains("block_sum((double)r[0]"));
            let update = trace::<f32, Lamb>(&pre, &coef, 2);
            assert_eq!(writes(&update), (true, vec![true, true]));
            let src = step_kernel(&update, "u", &tuning);
            assert!(src.contains("t.p[i] = p;"));
            assert!(src.contains("t.s[1][i] = s[1];"));
        }
    }

    #[test]
    fn tunings_read_back_and_bad_ones_are_refused() {
        let t: Tuning = "chunk=4096, unroll=2,min-blocks=4".parse().unwrap();
        assert_eq!(
            t,
            Tuning {
                chunk: 4096,
                unroll: 2,
                min_blocks: 4
            }
        );
        assert_eq!(t.to_string().parse::<Tuning>(), Ok(t));
        assert_eq!("".parse::<Tuning>(), Ok(Tuning::default()));
        for bad in [
            "chunk=100",
            "chunk=4098",
            "unroll=0",
            "unroll=5",
            "min-blocks=9",
            "x=1",
            "unroll",
        ] {
            assert!(bad.parse::<Tuning>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chunks_cover_every_element_once() {
        let lens = [0, 5, GPU_CHUNK, GPU_CHUNK + 1];
        let c = chunks(&lens, GPU_CHUNK, |_| true);
        let mut covered = [0usize; 4];
        for e in c.chunks(CHUNK_WORDS) {
            assert!(e[2] - e[1] <= GPU_CHUNK as u64 && e[1] < e[2]);
            assert_eq!(e[1] % GPU_CHUNK as u64, 0);
            covered[e[0] as usize] += (e[2] - e[1]) as usize;
        }
        assert_eq!(covered.to_vec(), lens.to_vec());
        assert_eq!(chunks(&lens, GPU_CHUNK, |t| t == 1), vec![1, 0, 5]);
    }

    /// Every generated kernel compiles, where NVRTC is installed (no GPU needed).
    #[test]
    fn kernels_compile_with_nvrtc() {
        if !crate::device::nvrtc_present() {
            eprintln!("skipped: NVRTC (libnvrtc.so) is not installed here");
            return;
        }
        let compile = |src: String, name: &str| {
            crate::device::compile(&src, name, Some("compute_90"))
                .unwrap_or_else(|e| panic!("{e}\n{src}"))
        };
        fn every_prelude<R: Rule>(rule: R, compile: &dyn Fn(String, &str) -> String) {
            let full = Prelude {
                maximize: true,
                grad_scale: Some(0.5),
                clip_value: Some(1.0),
                l2: 0.01,
                decay_factor: Some(0.99),
            };
            for pre in [Prelude::default(), full] {
                let nbuf = rule.buffers().len();
                let coef = rule.begin(&mut Default::default(), 1e-3);
                let wide = Tuning {
                    unroll: 2,
                    min_blocks: 4,
                    ..Tuning::default()
                };
                for tuning in [Tuning::default(), wide] {
                    let f32_tape = trace::<f32, R>(&pre, &coef, nbuf);
                    compile(step_kernel(&f32_tape, "k", &tuning), "k");
                    let f64_tape = trace::<f64, R>(&pre, &coef, nbuf);
                    compile(step_kernel(&f64_tape, "k", &tuning), "k");
                }
            }
        }
        use downhill::optim::{adadelta::Adadelta, adagrad::Adagrad, adamax::Adamax};
        use downhill::optim::{nadam::NAdam, radam::RAdam, rmsprop::RmsProp, sgd::Sgd};
        let momentum = Sgd {
            momentum: 0.9,
            nesterov: true,
            ..Sgd::default()
        };
        let rms = RmsProp {
            momentum: 0.9,
            centered: true,
            ..RmsProp::default()
        };
        every_prelude(Sgd::default(), &compile);
        every_prelude(momentum, &compile);
        every_prelude(Adam::adamw(), &compile);
        every_prelude(Adagrad::default(), &compile);
        every_prelude(rms, &compile);
        every_prelude(Adamax::default(), &compile);
        every_prelude(Adadelta::default(), &compile);
        every_prelude(NAdam::default(), &compile);
        every_prelude(RAdam::default(), &compile);
        every_prelude(Swats::default(), &compile);
        // The rules with a reading pass: its kernel and the update's.
        fn with_measure<R: Rule>(rule: R, compile: &dyn Fn(String, &str) -> String) {
            use downhill::kernel::trace::trace_measure;
            every_prelude(rule.clone(), compile);
            let nbuf = rule.buffers().len();
            let coef = rule.begin(&mut Default::default(), 1e-3);
            let pre = Prelude::default();
            let tape = trace_measure::<f32, R>(&pre, &coef, nbuf);
            compile(step_kernel(&tape, "k", &Tuning::default()), "k");
            let tape = trace_measure::<f64, R>(&pre, &coef, nbuf);
            compile(step_kernel(&tape, "k", &Tuning::default()), "k");
        }
        use downhill::optim::{lamb::Lamb, novograd::NovoGrad, prodigy::Prodigy};
        with_measure(Lamb::default(), &compile);
        with_measure(NovoGrad::default(), &compile);
        with_measure(Prodigy::default(), &compile);
        compile(scan_kernel::<f32>(), "scan");
        compile(scan_kernel::<f64>(), "scan");
        compile(lookahead_kernel::<f32>(), "lookahead_sync");
        compile(noise_kernel::<f32>(), "noise");
        compile(noise_kernel::<f64>(), "noise");
    }
}
