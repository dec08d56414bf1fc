// CUDA C's keywords and built-ins for the host's C++ compiler (C++20), so that downhill's
// generated kernels compile and run on the CPU: a block's threads are OS threads,
// `__syncthreads` a barrier, `__shared__` memory a static. Used by `tests/host_emulation.rs`
// and by the fake driver (`cuda.cpp`), which put it before the kernels' source.
#include <barrier>
#include <bit>
#include <cmath>
#include <thread>
#include <vector>
using std::sqrt; using std::fabs; using std::floor;
static inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
static inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
struct float4 { float x, y, z, w; } __attribute__((aligned(16)));
struct double2 { double x, y; } __attribute__((aligned(16)));
struct Dim { unsigned int x, y, z; };
static thread_local Dim threadIdx;
static Dim blockIdx, blockDim, gridDim;
static std::barrier<>* block_barrier;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
static inline void __syncthreads() { block_barrier->arrive_and_wait(); }

// Runs `k` as `grid` blocks of `block` threads, one block after the other.
template <class K> static void run_blocks(unsigned grid, unsigned block, K k) {
    blockDim.x = block; gridDim.x = grid;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b; std::barrier<> bar(block); block_barrier = &bar;
        std::vector<std::thread> threads;
        for (unsigned th = 0; th < block; ++th) threads.emplace_back([=] { threadIdx.x = th; k(); });
        for (auto& x : threads) x.join();
    }
}

// For a pool that keeps a block's threads across launches (the fake driver's): thread `th`
// runs its part of every block of the grid, one block after the other; the block's threads
// meet at `bar` before and after each block, and thread 0 sets the shared indices between.
template <class K>
static void run_thread(unsigned grid, unsigned block, unsigned th, std::barrier<>* bar, K k) {
    threadIdx.x = th;
    for (unsigned b = 0; b < grid; ++b) {
        if (th == 0) {
            blockDim.x = block; gridDim.x = grid; blockIdx.x = b; block_barrier = bar;
        }
        bar->arrive_and_wait();
        k();
        bar->arrive_and_wait();
    }
}
