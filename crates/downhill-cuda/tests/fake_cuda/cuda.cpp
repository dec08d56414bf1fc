// A stand-in for the CUDA driver (libcuda.so) over host memory: device pointers are host
// pointers, copies are memcpy, and a module's "PTX" is the CUDA C source the fake NVRTC
// (nvrtc.cpp) kept, compiled here for the host with the C++ compiler (shim.h: CUDA's
// keywords; every thread of a block an OS thread, `__syncthreads` a barrier). One device, a
// few multiprocessors, everything synchronous. It runs downhill's GPU code path (tables,
// arenas, launches, state) on a machine without a GPU; it says nothing of GPU speed.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <functional>
#include <barrier>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <string>
#include <vector>
#include <dlfcn.h>
#include <unistd.h>

extern "C" {
typedef int CUresult;
typedef int CUdevice;
typedef void* CUcontext;
typedef void* CUstream;
typedef unsigned long long CUdeviceptr;
// A kernel's per-thread entry (`NAME__thread`): thread `th` of every block of the grid.
typedef void (*Entry)(void** params, unsigned grid, unsigned block, unsigned th, void* bar);
struct Module { void* handle; };
struct Function { Entry entry; };
typedef Module* CUmodule;
typedef Function* CUfunction;
struct Event { double ms; };
typedef Event* CUevent;
}

static const CUresult OK = 0;

// The threads of a block, kept across launches (starting 256 threads per block per launch
// cost more than the kernels): each launch wakes them, each runs its part of every block.
struct Pool {
    std::mutex m;
    std::condition_variable start, done;
    std::vector<std::thread> threads;
    unsigned long generation = 0;
    unsigned running = 0;
    Entry entry = nullptr;
    void** params = nullptr;
    unsigned grid = 0, block = 0;
    std::barrier<>* bar = nullptr;

    void serve(unsigned th) {
        unsigned long seen = 0;
        std::unique_lock<std::mutex> lock(m);
        for (;;) {
            start.wait(lock, [&] { return generation != seen; });
            seen = generation;
            if (th >= block) continue;
            Entry e = entry;
            void** p = params;
            unsigned g = grid, b = block;
            std::barrier<>* br = bar;
            lock.unlock();
            e(p, g, b, th, br);
            lock.lock();
            if (--running == 0) done.notify_one();
        }
    }

    void launch(Entry e, void** p, unsigned g, unsigned b) {
        while (threads.size() < b) {
            unsigned th = threads.size();
            threads.emplace_back([this, th] { serve(th); });
        }
        std::barrier<> barrier(b);
        std::unique_lock<std::mutex> lock(m);
        entry = e; params = p; grid = g; block = b; bar = &barrier; running = b;
        ++generation;
        start.notify_all();
        done.wait(lock, [&] { return running == 0; });
    }
};
// Never destroyed: its threads wait for work until the process ends.
static Pool* pool = new Pool;
static thread_local CUcontext current = nullptr;
static int primary_ctx_token;

// The shim for CUDA's keywords (shim.h beside this file), by the path given when the driver
// is built: -DDOWNHILL_SHIM='"/path/to/shim.h"'.
#ifndef DOWNHILL_SHIM
#error "build with -DDOWNHILL_SHIM='\"<path of shim.h>\"'"
#endif
static const char* SHIM = "#include \"" DOWNHILL_SHIM "\"\n";

// Each kernel's per-thread entry, unpacking its parameter list by the kernel's name (as
// downhill-cuda's codegen writes them).
static std::string entry(const std::string& name) {
    std::string args, call;
    if (name == "scan") {
        args = "auto a0 = *(const Chunk**)p[0]; auto a1 = *(unsigned long long*)p[1]; "
               "auto a2 = *(const Tensor**)p[2]; auto a3 = *(double**)p[3];";
        call = "a0, a1, a2, a3";
    } else if (name == "total") {
        args = "auto a0 = *(const double**)p[0]; auto a1 = *(unsigned long long*)p[1]; "
               "auto a2 = *(double**)p[2];";
        call = "a0, a1, a2";
    } else if (name == "noise") {
        args = "auto a0 = *(const Chunk**)p[0]; auto a1 = *(unsigned long long*)p[1]; "
               "auto a2 = *(const Tensor**)p[2]; auto a3 = *(unsigned long long*)p[3]; "
               "auto a4 = *(double*)p[4]; auto a5 = *(double*)p[5]; auto a6 = *(double*)p[6];";
        call = "a0, a1, a2, a3, a4, a5, a6";
    } else if (name == "lookahead_sync") {
        args = "auto a0 = *(const Chunk**)p[0]; auto a1 = *(unsigned long long*)p[1]; "
               "auto a2 = *(const Tensor**)p[2]; auto a3 = *(const T*)p[3];";
        call = "a0, a1, a2, a3";
    } else {
        args = "auto a0 = *(const Chunk**)p[0]; auto a1 = *(unsigned long long*)p[1]; "
               "auto a2 = *(const Tensor**)p[2]; auto a3 = *(const T**)p[3]; "
               "auto a4 = *(double**)p[4];";
        call = "a0, a1, a2, a3, a4";
    }
    return "extern \"C\" void " + name +
           "__thread(void** p, unsigned grid, unsigned block, unsigned th, void* bar) { " + args +
           " run_thread(grid, block, th, (std::barrier<>*)bar, [=] { " + name + "(" + call +
           "); }); }\n";
}

extern "C" {
CUresult cuInit(unsigned int) { return OK; }
CUresult cuDriverGetVersion(int* v) { *v = 12080; return OK; }
CUresult cuDeviceGetCount(int* count) { *count = 1; return OK; }
CUresult cuDeviceGet(CUdevice* d, int ordinal) { *d = ordinal; return ordinal == 0 ? OK : 101; }
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, len, "downhill fake GPU (host threads)");
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) { *bytes = size_t(1) << 34; return OK; }
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    switch (attr) {
        case 16: *v = 2; break;   // multiprocessors
        case 75: *v = 9; break;   // compute capability 9.0
        case 76: *v = 0; break;
        default: *v = 0;          // no memory pools, and the rest
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) { *c = &primary_ctx_token; return OK; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuDevicePrimaryCtxRelease(CUdevice) { return OK; }
CUresult cuCtxGetCurrent(CUcontext* c) { *c = current; return OK; }
CUresult cuCtxSetCurrent(CUcontext c) { current = c; return OK; }
CUresult cuCtxSynchronize() { return OK; }
CUresult cuStreamSynchronize(CUstream) { return OK; }
CUresult cuGetErrorString(CUresult, const char** s) { *s = "fake driver error"; return OK; }
CUresult cuGetErrorName(CUresult, const char** s) { *s = "FAKE_ERROR"; return OK; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    void* m = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    if (!m) return 2;
    *p = (CUdeviceptr)m;
    if (std::getenv("DOWNHILL_FAKE_CUDA_TRACE")) std::fprintf(stderr, "alloc %zu -> %p\n", n, m);
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, CUstream) { return cuMemAlloc_v2(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) {
    if (std::getenv("DOWNHILL_FAKE_CUDA_TRACE")) std::fprintf(stderr, "free %p\n", (void*)p);
    std::free((void*)p);
    return OK;
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return cuMemFree_v2(p); }
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
    std::memset((void*)p, v, n);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream) {
    return cuMemsetD8_v2(p, v, n);
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { std::memcpy((void*)d, s, n); return OK; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, CUstream) { return cuMemcpyHtoD_v2(d, s, n); }
CUresult cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { std::memcpy(d, (void*)s, n); return OK; }
CUresult cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, CUstream) { return cuMemcpyDtoH_v2(d, s, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { std::memmove((void*)d, (void*)s, n); return OK; }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream) { return cuMemcpyDtoD_v2(d, s, n); }

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    std::string src = (const char*)image;
    std::string entries;
    const std::string marker = "__global__ void __launch_bounds__(";
    for (size_t at = src.find(marker); at != std::string::npos; at = src.find(marker, at + 1)) {
        size_t open = src.find(')', at) + 1;
        while (src[open] == ' ') ++open;
        size_t paren = src.find('(', open);
        entries += entry(src.substr(open, paren - open));
    }
    std::string dir = std::getenv("DOWNHILL_FAKE_CUDA_DIR") ? std::getenv("DOWNHILL_FAKE_CUDA_DIR") : "/tmp";
    std::string base = dir + "/module-" + std::to_string(std::hash<std::string>{}(src));
    std::string so = base + ".so";
    if (FILE* f = std::fopen(so.c_str(), "r")) {
        std::fclose(f);
    } else {
        // Built under a name of this thread's, then renamed: concurrent loads of one source
        // do not write over each other.
        std::string tmp = base + "." + std::to_string(getpid()) + "." +
                          std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
        FILE* out = std::fopen((tmp + ".cpp").c_str(), "w");
        if (!out) return 218;
        std::fputs(SHIM, out);
        std::fputs(src.c_str(), out);
        std::fputs(entries.c_str(), out);
        std::fclose(out);
        std::string cmd = "c++ -std=c++20 -O1 -ffp-contract=off -pthread -shared -fPIC -o " + tmp +
                          ".so " + tmp + ".cpp && mv " + tmp + ".so " + so + " && rm " + tmp + ".cpp";
        if (std::system(cmd.c_str()) != 0) return 218;  // CUDA_ERROR_INVALID_PTX
    }
    void* h = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) return 218;
    *module = new Module{h};
    return OK;
}
CUresult cuModuleUnload(CUmodule m) { dlclose(m->handle); delete m; return OK; }
CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    void* sym = dlsym(m->handle, (std::string(name) + "__thread").c_str());
    if (!sym) return 500;  // CUDA_ERROR_NOT_FOUND
    *f = new Function{(Entry)sym};
    if (std::getenv("DOWNHILL_FAKE_CUDA_TRACE")) std::fprintf(stderr, "function %s -> %p (%p)\n", name, (void*)*f, sym);
    return OK;
}
CUresult cuFuncGetAttribute(int* v, int, CUfunction) { *v = 0; return OK; }
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, CUfunction, int, size_t) {
    *n = 1;
    return OK;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, CUfunction, int, size_t, unsigned) {
    *n = 1;
    return OK;
}
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned, unsigned, unsigned bx, unsigned,
                        unsigned, unsigned, CUstream, void** params, void**) {
    // A module's block and thread indices and its barrier are globals of the module: one
    // launch at a time (tests launch from several threads).
    static std::mutex one_at_a_time;
    std::lock_guard<std::mutex> guard(one_at_a_time);
    if (std::getenv("DOWNHILL_FAKE_CUDA_TRACE")) std::fprintf(stderr, "launch %p (%p) grid %u block %u\n", (void*)f, (void*)f->entry, gx, bx);
    // Launches that do nothing: events then time the host's half of a step alone.
    static const bool skip = std::getenv("DOWNHILL_FAKE_CUDA_NO_LAUNCH") != nullptr;
    if (!skip) pool->launch(f->entry, params, gx, bx);
    return OK;
}

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}
CUresult cuEventCreate(CUevent* e, unsigned) { *e = new Event{0}; return OK; }
CUresult cuEventRecord(CUevent e, CUstream) { e->ms = now_ms(); return OK; }
CUresult cuEventSynchronize(CUevent) { return OK; }
CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) { *ms = float(b->ms - a->ms); return OK; }
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }
CUresult cuEventDestroy_v2(CUevent e) { delete e; return OK; }
CUresult cuEventDestroy(CUevent e) { return cuEventDestroy_v2(e); }
}
