// A stand-in for NVRTC: "compiling" keeps the CUDA C source, which the fake driver
// (cuda.cpp) compiles for the host when the module is loaded. For running the GPU code path
// on a machine without a GPU; see README.md beside this file.
#include <cstddef>
#include <cstring>
#include <string>

extern "C" {
typedef int nvrtcResult;
typedef struct Program { std::string src; } *nvrtcProgram;

nvrtcResult nvrtcVersion(int* major, int* minor) { *major = 12; *minor = 8; return 0; }
const char* nvrtcGetErrorString(nvrtcResult) { return "fake NVRTC error"; }
nvrtcResult nvrtcCreateProgram(nvrtcProgram* prog, const char* src, const char*, int,
                               const char* const*, const char* const*) {
    *prog = new Program{src};
    return 0;
}
nvrtcResult nvrtcCompileProgram(nvrtcProgram, int, const char* const*) { return 0; }
nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t* size) {
    *size = prog->src.size() + 1;
    return 0;
}
nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char* ptx) {
    std::memcpy(ptx, prog->src.c_str(), prog->src.size() + 1);
    return 0;
}
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram, size_t* size) { *size = 1; return 0; }
nvrtcResult nvrtcGetProgramLog(nvrtcProgram, char* log) { log[0] = 0; return 0; }
nvrtcResult nvrtcDestroyProgram(nvrtcProgram* prog) { delete *prog; *prog = nullptr; return 0; }
}
