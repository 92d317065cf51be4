// CPU emulator of the CUDA execution model: the scheduler (grids, blocks, threads as fibers,
// barriers, warp exchanges) and the runtime API on host memory. See include/cuda_runtime.h.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "mma_ptx_emu.h"

uint3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0};
dim3 blockDim{1, 1, 1}, gridDim{1, 1, 1};

// ---- fiber switch ---------------------------------------------------------------------------------
// tuner_emu_switch(save, to): saves the callee-saved registers and the FP control words on the
// current stack, stores the stack pointer in *save and resumes the fiber whose stack pointer is
// `to`. A few nanoseconds, against ~1 us for swapcontext (which also saves the signal mask).
#if defined(__x86_64__)
asm(R"(
    .text
    .globl tuner_emu_switch
    .hidden tuner_emu_switch
    .type tuner_emu_switch,@function
tuner_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tuner_emu_switch, .-tuner_emu_switch
)");
extern "C" void tuner_emu_switch(void** save, void* to);
#else
#include <ucontext.h>
#endif

namespace tuner::emu {

namespace {

constexpr size_t kStackBytes = size_t(256) << 10;  // per emulated thread (touched pages only)
constexpr size_t kMaxDynamicSmem = 232448;          // H100/H200: 227 KiB per block after opting in
constexpr size_t kDefaultDynamicSmem = 48 << 10;    // without cudaFuncSetAttribute
constexpr int kMaxThreads = 1024;

enum class St : uint8_t { Ready, Block, Warp, Done };

struct Thread {
    void* sp = nullptr;
    St st = St::Ready;
    uint3 idx{0, 0, 0};
    // The pending warp operation (St::Warp) and its result.
    WarpOp op = kSyncwarp;
    unsigned mask = 0;
    int param = 0, width = 32;
    uint64_t value = 0, result = 0;
    BlockOp bop = kBarSync;
    // A pending warp_collective: its function and name.
    CollectiveFn coll_fn = nullptr;
    const char* coll_name = nullptr;
    // cp.async copies issued and not yet completed (mma_ptx_emu.h): their bytes (read at issue),
    // destination and commit group; cp_open is the index of the open (uncommitted) group.
    struct CpAsync {
        uint8_t* dst;
        uint8_t bytes[16];
        int n, group;
    };
    std::vector<CpAsync> cp_pending;
    int cp_open = 0;
#if !defined(__x86_64__)
    ucontext_t ctx;
#endif
};

struct Stack {
    uint8_t* base = nullptr;  // guard page at base, usable memory above it
    size_t bytes = 0;
};

struct State {
    std::mutex mutex;  // one launch at a time (the globals above belong to it)
    std::vector<Thread> th;
    std::vector<Stack> stacks;
    std::vector<int> queue;  // ring of ready threads; each thread is in it at most once
    size_t qhead = 0, qcount = 0;
    int n = 0, cur = -1, done = 0;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_ctx;
#endif
    // block barrier
    int bar_arrived = 0, bar_accum = 0, bar_result = 0;
    std::vector<uint32_t> warp_waiting;  // lanes of each warp waiting in a warp operation
    std::vector<uint32_t> warp_lanes;    // lanes that exist in each warp
    // the launch
    void (*invoke)(void*) = nullptr;
    void* closure = nullptr;
    std::string name;
    bool in_kernel = false;
    // dynamic shared memory: [smem_region, smem_end) then a PROT_NONE page
    uint8_t* smem_region = nullptr;
    uint8_t* smem_end = nullptr;
    uint8_t* smem = nullptr;
    size_t smem_bytes = 0;
    std::map<const void*, int> func_smem_limit;
    // sticky "last error" of the runtime API, with the emulator's explanation
    cudaError_t last_error = cudaSuccess;
    std::string last_detail, reported_detail;
    cudaError_t reported_error = cudaSuccess;
    // device allocations (base -> bytes), for copy direction checks
    std::map<uintptr_t, size_t> allocs;
    size_t allocated = 0;  // bytes of the live cudaMalloc allocations (cudaMemGetInfo's "used")
};

State& S() {
    static State* s = new State();  // never destroyed: launches may happen from static destructors
    return *s;
}

void push_ready(State& s, int t) {
    s.queue[(s.qhead + s.qcount) % size_t(s.n)] = t;
    s.qcount++;
}

std::string fmt_idx(uint3 v) {
    return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

// The kernel's name from the launch() text "kernel<T>, grid, block, ...".
std::string kernel_name(const char* text) {
    std::string s(text ? text : "?");
    int depth = 0;
    for (size_t i = 0; i < s.size(); i++) {
        const char c = s[i];
        if (c == '<' || c == '(') depth++;
        else if (c == '>' || c == ')') depth--;
        else if (c == ',' && depth == 0) return s.substr(0, i);
    }
    return s;
}

[[noreturn]] void die(const std::string& what) {
    State& s = S();
    std::string msg = "[cuda emu] kernel " + s.name + ", block " + fmt_idx(blockIdx);
    if (s.cur >= 0) msg += ", thread " + fmt_idx(s.th[size_t(s.cur)].idx);
    msg += ": " + what + "\n";
    std::fputs(msg.c_str(), stderr);
    std::fflush(stderr);
    std::abort();
}

const char* warp_op_name(WarpOp op) {
    switch (op) {
        case kSyncwarp: return "__syncwarp";
        case kShflIdx: return "__shfl_sync";
        case kShflUp: return "__shfl_up_sync";
        case kShflDown: return "__shfl_down_sync";
        case kShflXor: return "__shfl_xor_sync";
        case kBallot: return "__ballot_sync";
        case kAny: return "__any_sync";
        case kAll: return "__all_sync";
        case kCollective: return "a warp-collective operation";
    }
    return "?";
}

[[noreturn]] void deadlock(State& s) {
    std::string msg = "DEADLOCK: no thread can run, " + std::to_string(s.n - s.done) + " of " + std::to_string(s.n) +
                      " threads wait at barriers that can never release (" + std::to_string(s.done) + " exited)";
    int shown = 0;
    for (int t = 0; t < s.n && shown < 12; t++) {
        const Thread& th = s.th[size_t(t)];
        if (th.st == St::Done || th.st == St::Ready) continue;
        char buf[160];
        if (th.st == St::Block) {
            std::snprintf(buf, sizeof buf, "\n  thread %s waits at __syncthreads", fmt_idx(th.idx).c_str());
        } else {
            std::snprintf(buf, sizeof buf, "\n  thread %s (warp %d lane %d) waits at %s(mask 0x%08x)",
                          fmt_idx(th.idx).c_str(), t / 32, t % 32, th.coll_name ? th.coll_name : warp_op_name(th.op),
                          th.mask);
        }
        msg += buf;
        shown++;
    }
    if (s.n - s.done > shown) msg += "\n  ...";
    s.cur = -1;
    die(msg);
}

// ---- fibers ---------------------------------------------------------------------------------------

// Completes thread t's pending cp.async copies of groups < `before` (all of them: INT_MAX).
void cp_complete(Thread& t, int before) {
    size_t keep = 0;
    for (size_t i = 0; i < t.cp_pending.size(); i++) {
        Thread::CpAsync& c = t.cp_pending[i];
        if (c.group < before) std::memcpy(c.dst, c.bytes, size_t(c.n));
        else t.cp_pending[keep++] = c;
    }
    t.cp_pending.resize(keep);
}

[[noreturn]] void fiber_main() {
    State& s = S();
    s.invoke(s.closure);
    Thread& t = s.th[size_t(s.cur)];
    cp_complete(t, INT_MAX);  // copies never waited for still land (the kernel cannot read them)
    t.st = St::Done;
    s.done++;
#if defined(__x86_64__)
    tuner_emu_switch(&t.sp, s.sched_sp);
#else
    swapcontext(&t.ctx, &s.sched_ctx);
#endif
    __builtin_unreachable();
}

// Back to the scheduler (the calling thread has set its state).
inline void yield_to_scheduler(State& s) {
    Thread& t = s.th[size_t(s.cur)];
#if defined(__x86_64__)
    tuner_emu_switch(&t.sp, s.sched_sp);
#else
    swapcontext(&t.ctx, &s.sched_ctx);
#endif
}

void ensure_stacks(State& s, int n) {
    while (int(s.stacks.size()) < n) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            std::fputs("[cuda emu] cannot map a fiber stack\n", stderr);
            std::abort();
        }
        mprotect(p, page, PROT_NONE);  // overflow faults instead of corrupting the neighbour
        s.stacks.push_back({static_cast<uint8_t*>(p), kStackBytes + page});
    }
}

// Sets up thread t to start fiber_main on its stack when first switched to.
void start_fiber(State& s, int t) {
    Thread& th = s.th[size_t(t)];
    const Stack& st = s.stacks[size_t(t)];
    th.cp_pending.clear();
    th.cp_open = 0;
#if defined(__x86_64__)
    uintptr_t top = reinterpret_cast<uintptr_t>(st.base + st.bytes) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    sp[0] = uint64_t(mxcsr) | (uint64_t(fpucw) << 32);
    for (int i = 1; i <= 6; i++) sp[i] = 0;                          // r15 r14 r13 r12 rbx rbp
    sp[7] = reinterpret_cast<uint64_t>(&fiber_main);                  // ret: as if called, rsp = top - 8
    sp[8] = 0;
    th.sp = sp;
#else
    getcontext(&th.ctx);
    th.ctx.uc_stack.ss_sp = st.base + (st.bytes - kStackBytes);
    th.ctx.uc_stack.ss_size = kStackBytes;
    th.ctx.uc_link = nullptr;
    makecontext(&th.ctx, reinterpret_cast<void (*)()>(&fiber_main), 0);
#endif
}

// ---- faults inside a kernel -----------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;

void fault_handler(int sig, siginfo_t* info, void* uctx) {
    State& s = S();
    if (s.in_kernel && s.cur >= 0) {
        const uint8_t* a = static_cast<const uint8_t*>(info->si_addr);
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        char buf[256];
        if (a >= s.smem_end && a < s.smem_end + page) {
            std::snprintf(buf, sizeof buf,
                          "reads or writes byte %zu of dynamic shared memory, past the launch's %zu bytes",
                          size_t(a - s.smem), s.smem_bytes);
        } else if (a >= s.stacks[size_t(s.cur)].base && a < s.stacks[size_t(s.cur)].base + page) {
            std::snprintf(buf, sizeof buf, "overflows its %zu KiB emulator stack (local arrays too large?)",
                          kStackBytes >> 10);
        } else {
            std::snprintf(buf, sizeof buf, "invalid memory access at %p (signal %d)", static_cast<const void*>(a), sig);
        }
        const std::string what = buf;
        std::string msg = "[cuda emu] kernel " + s.name + ", block " + fmt_idx(blockIdx) + ", thread " +
                          fmt_idx(s.th[size_t(s.cur)].idx) + ": " + what + "\n";
        (void)!write(2, msg.data(), msg.size());
    }
    // Let the previous disposition (default: core dump) handle the fault.
    sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);
    (void)uctx;
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
    // An alternate signal stack for this OS thread: a fiber stack overflow leaves no stack to run on.
    thread_local bool have_altstack = false;
    if (!have_altstack) {
        stack_t ss{};
        ss.ss_size = 64 << 10;
        ss.ss_sp = std::malloc(ss.ss_size);
        sigaltstack(&ss, nullptr);
        have_altstack = true;
    }
}

void ensure_smem_region(State& s) {
    if (s.smem_region) return;
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t bytes = (kMaxDynamicSmem + page - 1) / page * page;
    void* p = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        std::fputs("[cuda emu] cannot map shared memory\n", stderr);
        std::abort();
    }
    s.smem_region = static_cast<uint8_t*>(p);
    s.smem_end = s.smem_region + bytes;
    mprotect(s.smem_end, page, PROT_NONE);
}

void set_error(State& s, cudaError_t err, std::string detail) {
    s.last_error = err;
    s.last_detail = std::move(detail);
}

}  // namespace

// ---- the scheduler -------------------------------------------------------------------------------------

void run_grid(const char* launch_text, const void* kernel, dim3 grid, dim3 block, size_t smem_bytes,
              cudaStream_t, void (*invoke)(void*), void* closure) {
    State& s = S();
    std::lock_guard<std::mutex> lock(s.mutex);
    const std::string name = kernel_name(launch_text);
    const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
        block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        nthreads > uint64_t(kMaxThreads)) {
        set_error(s, cudaErrorInvalidConfiguration,
                  name + ": grid " + fmt_idx(grid) + " block " + fmt_idx(block) + " is not a valid configuration");
        return;
    }
    auto lim = s.func_smem_limit.find(kernel);
    const size_t limit = lim == s.func_smem_limit.end() ? kDefaultDynamicSmem : size_t(lim->second);
    if (smem_bytes > limit) {
        set_error(s, cudaErrorInvalidValue,
                  name + ": " + std::to_string(smem_bytes) + " bytes of dynamic shared memory, the kernel allows " +
                      std::to_string(limit) + " (cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize))");
        return;
    }
    install_fault_handler();
    ensure_smem_region(s);
    const int n = int(nthreads);
    ensure_stacks(s, n);
    if (int(s.th.size()) < n) s.th.resize(size_t(n));
    s.queue.assign(size_t(n), 0);
    const int nwarps = (n + 31) / 32;
    s.warp_waiting.assign(size_t(nwarps), 0);
    s.warp_lanes.assign(size_t(nwarps), 0);
    for (int w = 0; w < nwarps; w++) {
        const int lanes = std::min(32, n - 32 * w);
        s.warp_lanes[size_t(w)] = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    }
    for (int t = 0; t < n; t++)
        s.th[size_t(t)].idx = uint3{unsigned(t) % block.x, (unsigned(t) / block.x) % block.y,
                                    unsigned(t) / (block.x * block.y)};
    s.n = n;
    s.name = name;
    s.invoke = invoke, s.closure = closure;
    s.smem_bytes = smem_bytes;
    s.smem = s.smem_end - (smem_bytes + 15) / 16 * 16;
    gridDim = grid, blockDim = block;
    s.in_kernel = true;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = uint3{bx, by, bz};
                // Uninitialised shared memory reads as NaN (0xff bytes), not as the last block's data.
                if (smem_bytes) std::memset(s.smem, 0xff, smem_bytes);
                s.done = 0, s.bar_arrived = 0, s.bar_accum = 0;
                std::fill(s.warp_waiting.begin(), s.warp_waiting.end(), 0u);
                s.qhead = 0, s.qcount = 0;
                for (int t = 0; t < n; t++) {
                    s.th[size_t(t)].st = St::Ready;
                    start_fiber(s, t);
                    push_ready(s, t);
                }
                while (s.qcount) {
                    const int t = s.queue[s.qhead];
                    s.qhead = (s.qhead + 1) % size_t(n), s.qcount--;
                    s.cur = t;
                    threadIdx = s.th[size_t(t)].idx;
#if defined(__x86_64__)
                    tuner_emu_switch(&s.sched_sp, s.th[size_t(t)].sp);
#else
                    swapcontext(&s.sched_ctx, &s.th[size_t(t)].ctx);
#endif
                }
                s.cur = -1;
                if (s.done != n) deadlock(s);
            }
    s.in_kernel = false;
}

void* dynamic_shared() { return S().smem; }

int block_barrier(BlockOp op, int pred) {
    State& s = S();
    Thread& t = s.th[size_t(s.cur)];
    if (s.bar_arrived == 0) s.bar_accum = op == kBarAnd ? 1 : 0;
    switch (op) {
        case kBarSync: break;
        case kBarOr: s.bar_accum |= pred != 0; break;
        case kBarAnd: s.bar_accum &= pred != 0; break;
        case kBarCount: s.bar_accum += pred != 0; break;
    }
    t.st = St::Block;
    t.bop = op;
    if (++s.bar_arrived == s.n) {  // the last thread: release every thread of the block
        s.bar_result = s.bar_accum;
        s.bar_arrived = 0;
        for (int i = 0; i < s.n; i++) {
            s.th[size_t(i)].st = St::Ready;
            push_ready(s, i);
        }
    }
    yield_to_scheduler(s);
    return s.bar_result;  // read before this thread can reach the next barrier
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width) {
    State& s = S();
    const int me = s.cur, w = me >> 5, lane = me & 31, base = w * 32;
    Thread& t = s.th[size_t(me)];
    const uint32_t exists = s.warp_lanes[size_t(w)];
    const uint32_t eff = mask & exists;
    if (!((eff >> lane) & 1u)) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s with mask 0x%08x that does not include the calling lane %d",
                      warp_op_name(op), mask, lane);
        die(buf);
    }
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) die(std::string(warp_op_name(op)) + ": width must be a power of 2 <= 32");
    t.st = St::Warp, t.op = op, t.mask = mask, t.param = param, t.width = width, t.value = value;
    if (op != kCollective) t.coll_fn = nullptr, t.coll_name = nullptr;
    s.warp_waiting[size_t(w)] |= 1u << lane;
    if ((s.warp_waiting[size_t(w)] & eff) == eff) {
        // Every lane of the mask is here: check they agree, then exchange.
        for (int l = 0; l < 32; l++) {
            if (!((eff >> l) & 1u)) continue;
            const Thread& o = s.th[size_t(base + l)];
            if (o.op != op || (o.mask & exists) != eff || o.width != width || o.coll_fn != t.coll_fn) {
                char buf[320];
                std::snprintf(buf, sizeof buf,
                              "lane %d is at %s(mask 0x%08x, width %d) while lane %d is at %s(mask 0x%08x, width %d): "
                              "the lanes of a warp operation must execute the same one",
                              lane, t.coll_name ? t.coll_name : warp_op_name(op), mask, width, l,
                              o.coll_name ? o.coll_name : warp_op_name(o.op), o.mask, o.width);
                die(buf);
            }
        }
        if (op == kCollective) {
            void* args[32] = {};
            for (int l = 0; l < 32; l++)
                if ((eff >> l) & 1u) args[l] = reinterpret_cast<void*>(s.th[size_t(base + l)].value);
            t.coll_fn(args);  // runs as the last lane to arrive (its index in reports)
        }
        uint32_t ballot = 0;
        for (int l = 0; l < 32; l++)
            if (((eff >> l) & 1u) && s.th[size_t(base + l)].value) ballot |= 1u << l;
        for (int l = 0; l < 32; l++) {
            if (!((eff >> l) & 1u)) continue;
            Thread& o = s.th[size_t(base + l)];
            const int seg = l & ~(width - 1);
            int src = l;
            switch (op) {
                case kSyncwarp: break;
                case kShflIdx: src = seg + (o.param & (width - 1)); break;
                case kShflUp: src = (l - seg) >= o.param ? l - o.param : l; break;
                case kShflDown: src = (l - seg) + o.param < width ? l + o.param : l; break;
                case kShflXor: src = (l ^ o.param) < seg + width ? l ^ o.param : l; break;
                case kBallot: o.result = ballot; break;
                case kAny: o.result = ballot != 0; break;
                case kAll: o.result = ballot == eff; break;
            }
            if (op >= kShflIdx && op <= kShflXor) {
                if (src < 0 || src > 31 || !((eff >> src) & 1u)) {
                    char buf[200];
                    std::snprintf(buf, sizeof buf,
                                  "lane %d's %s reads lane %d, which is not in the mask 0x%08x (or does not exist): "
                                  "an undefined value on the GPU",
                                  l, warp_op_name(op), src, mask);
                    die(buf);
                }
                o.result = s.th[size_t(base + src)].value;
            }
        }
        s.warp_waiting[size_t(w)] &= ~eff;
        for (int l = 0; l < 32; l++)
            if ((eff >> l) & 1u) {
                s.th[size_t(base + l)].st = St::Ready;
                push_ready(s, base + l);
            }
    }
    yield_to_scheduler(s);
    return t.result;
}

void warp_collective(const char* name, unsigned mask, void* arg, CollectiveFn fn) {
    State& s = S();
    Thread& t = s.th[size_t(s.cur)];
    t.coll_fn = fn, t.coll_name = name;
    warp_op(kCollective, mask, reinterpret_cast<uint64_t>(arg), 0, 32);
}

void die_in_kernel(const char* what) { die(what); }

// ---- cp.async (mma_ptx_emu.h) -------------------------------------------------------------------

void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
    State& s = S();
    if (!s.in_kernel || s.cur < 0) {
        std::fputs("[cuda emu] cp.async outside a kernel\n", stderr);
        std::abort();
    }
    char buf[240];
    if (bytes != 4 && bytes != 8 && bytes != 16) {
        std::snprintf(buf, sizeof buf, "cp.async of %d bytes (4, 8 or 16)", bytes);
        die(buf);
    }
    if (src_bytes < 0 || src_bytes > bytes) {
        std::snprintf(buf, sizeof buf, "cp.async src-size %d outside [0, %d]", src_bytes, bytes);
        die(buf);
    }
    uint8_t* d = static_cast<uint8_t*>(dst);
    const uintptr_t align = uintptr_t(bytes);
    if (reinterpret_cast<uintptr_t>(dst) % align != 0 || reinterpret_cast<uintptr_t>(src) % align != 0) {
        std::snprintf(buf, sizeof buf, "cp.async of %d bytes from %p to %p: both must be %d-byte aligned", bytes, src,
                      dst, bytes);
        die(buf);
    }
    if (d < s.smem || d + bytes > s.smem + s.smem_bytes) {
        std::snprintf(buf, sizeof buf,
                      "cp.async destination %p is not inside the launch's %zu bytes of dynamic shared memory", dst,
                      s.smem_bytes);
        die(buf);
    }
    Thread::CpAsync c{};
    c.dst = d, c.n = bytes, c.group = s.th[size_t(s.cur)].cp_open;
    if (src_bytes > 0) {
        // The source must lie inside one cudaMalloc allocation (global memory).
        const uintptr_t a = reinterpret_cast<uintptr_t>(src);
        auto it = s.allocs.upper_bound(a);
        bool ok = it != s.allocs.begin();
        if (ok) {
            --it;
            ok = a >= it->first && a + size_t(src_bytes) <= it->first + it->second;
        }
        if (!ok) {
            std::snprintf(buf, sizeof buf, "cp.async reads %d bytes at %p, outside every device allocation", src_bytes,
                          src);
            die(buf);
        }
        std::memcpy(c.bytes, src, size_t(src_bytes));
    }
    s.th[size_t(s.cur)].cp_pending.push_back(c);  // bytes past src_bytes stay 0 (zero fill)
}

void cp_async_commit() {
    State& s = S();
    s.th[size_t(s.cur)].cp_open++;
}

void cp_async_wait(int n) {
    State& s = S();
    Thread& t = s.th[size_t(s.cur)];
    cp_complete(t, t.cp_open - (n < 0 ? 0 : n));  // committed groups are 0 .. cp_open - 1
}

cudaError_t func_get_attributes(cudaFuncAttributes* attr, const void* func) {
    if (!attr || !func) return cudaErrorInvalidValue;
    State& s = S();
    std::lock_guard<std::mutex> lock(s.mutex);
    *attr = cudaFuncAttributes{};
    attr->maxThreadsPerBlock = kMaxThreads;
    attr->numRegs = 32;
    attr->ptxVersion = attr->binaryVersion = 90;
    auto it = s.func_smem_limit.find(func);
    attr->maxDynamicSharedSizeBytes = it == s.func_smem_limit.end() ? int(kDefaultDynamicSmem) : it->second;
    return cudaSuccess;
}

cudaError_t func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
    State& s = S();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || size_t(value) > kMaxDynamicSmem) {
            set_error(s, cudaErrorInvalidValue,
                      "cudaFuncSetAttribute: " + std::to_string(value) + " bytes of dynamic shared memory, the device allows " +
                          std::to_string(kMaxDynamicSmem));
            return cudaErrorInvalidValue;
        }
        s.func_smem_limit[func] = value;
    }
    return cudaSuccess;
}

cudaError_t copy_to_symbol(void* symbol, size_t symbol_bytes, const void* src, size_t count, size_t offset) {
    if (offset + count > symbol_bytes) return cudaErrorInvalidValue;
    std::memcpy(static_cast<uint8_t*>(symbol) + offset, src, count);
    return cudaSuccess;
}

cudaError_t copy_from_symbol(void* dst, const void* symbol, size_t symbol_bytes, size_t count, size_t offset) {
    if (offset + count > symbol_bytes) return cudaErrorInvalidValue;
    std::memcpy(dst, static_cast<const uint8_t*>(symbol) + offset, count);
    return cudaSuccess;
}

}  // namespace tuner::emu

// ---- runtime API ------------------------------------------------------------------------------------------

using tuner::emu::S;

namespace {

// Whether [p, p + bytes) lies inside one cudaMalloc allocation.
bool in_device(const void* p, size_t bytes) {
    auto& allocs = S().allocs;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

cudaError_t fail_with(cudaError_t err, std::string detail) {
    tuner::emu::set_error(S(), err, std::move(detail));
    return err;
}

cudaError_t check_copy(const char* call, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return fail_with(cudaErrorInvalidValue, std::string(call) + ": null pointer");
    const bool dst_dev = in_device(dst, bytes), src_dev = in_device(src, bytes);
    const bool want_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool want_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyDefault) return cudaSuccess;
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
        return fail_with(cudaErrorInvalidMemcpyDirection, std::string(call) + ": bad cudaMemcpyKind");
    if (want_dst && !dst_dev)
        return fail_with(cudaErrorInvalidValue, std::string(call) + ": the destination range is not inside one device allocation");
    if (want_src && !src_dev)
        return fail_with(cudaErrorInvalidValue, std::string(call) + ": the source range is not inside one device allocation");
    return cudaSuccess;
}

const char* error_string(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInitializationError: return "initialization error";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidSymbol: return "invalid device symbol";
        case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNotReady: return "device not ready";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        case cudaErrorNotSupported: return "operation not supported";
        default: return "unknown error";
    }
}

struct EventRec {
    double ms = 0.0;
};

double now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

}  // namespace

const char* cudaGetErrorString(cudaError_t err) {
    // The emulator's explanation of the error cudaGetLastError last returned, if it is this one.
    thread_local std::string text;
    auto& s = S();
    if (err != cudaSuccess && err == s.reported_error && !s.reported_detail.empty()) {
        text = std::string(error_string(err)) + " (emulator: " + s.reported_detail + ")";
        return text.c_str();
    }
    return error_string(err);
}

const char* cudaGetErrorName(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
        default: return "cudaErrorUnknown";
    }
}

cudaError_t cudaGetLastError() {
    auto& s = S();
    const cudaError_t e = s.last_error;
    s.reported_error = e, s.reported_detail = s.last_detail;
    s.last_error = cudaSuccess, s.last_detail.clear();
    return e;
}
cudaError_t cudaPeekAtLastError() { return S().last_error; }

cudaError_t cudaGetDeviceCount(int* n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail_with(cudaErrorInvalidDevice, "one emulated device"); }
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    if (device != 0) return fail_with(cudaErrorInvalidDevice, "one emulated device");
    *p = cudaDeviceProp{};
    std::snprintf(p->name, sizeof p->name, "CPU emulator of the CUDA execution model");
    p->totalGlobalMem = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = tuner::emu::kMaxDynamicSmem;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = 9, p->minor = 0;  // what the kernels are written for (sm_90)
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    cudaDeviceProp p;
    if (cudaError_t e = cudaGetDeviceProperties(&p, device)) return e;
    switch (attr) {
        case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
        case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
        case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
        case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
        case cudaDevAttrWarpSize: *value = 32; break;
        case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
        case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
        case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
        case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = int(p.sharedMemPerMultiprocessor); break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
        default: return fail_with(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceReset() { return cudaSuccess; }

cudaError_t cudaMalloc(void** p, size_t bytes) {
    const size_t n = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
    void* m = std::aligned_alloc(256, n);  // cudaMalloc aligns to at least 256 bytes
    if (!m) {
        *p = nullptr;
        return fail_with(cudaErrorMemoryAllocation, "cudaMalloc of " + std::to_string(bytes) + " bytes");
    }
    std::lock_guard<std::mutex> lock(S().mutex);
    S().allocs[reinterpret_cast<uintptr_t>(m)] = n;
    S().allocated += n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(S().mutex);
        auto it = S().allocs.find(reinterpret_cast<uintptr_t>(p));
        if (it == S().allocs.end()) return fail_with(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
        S().allocated -= it->second;
        S().allocs.erase(it);
    }
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }

cudaError_t cudaMallocHost(void** p, size_t bytes) {
    *p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
    return *p ? cudaSuccess : fail_with(cudaErrorMemoryAllocation, "cudaMallocHost");
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void* p) {
    std::free(p);
    return cudaSuccess;
}

// An emulated device of 80 GiB (an H100's) whose used memory is exactly the live cudaMalloc
// allocations, so memory plans can be checked against what the code really allocates (no CUDA
// context, no other processes). Allocations themselves are host memory and may exceed it.
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    const size_t total = size_t(80) << 30;
    std::lock_guard<std::mutex> lock(S().mutex);
    *total_bytes = total;
    *free_bytes = S().allocated < total ? total - S().allocated : 0;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    {
        std::lock_guard<std::mutex> lock(S().mutex);
        if (cudaError_t e = check_copy("cudaMemcpy", dst, src, bytes, kind)) return e;
    }
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
    if (bytes == 0) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(S().mutex);
        if (!in_device(dst, bytes))
            return fail_with(cudaErrorInvalidValue, "cudaMemset: the range is not inside one device allocation");
    }
    std::memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* s) {
    *s = reinterpret_cast<cudaStream_t>(new char(0));
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete reinterpret_cast<char*>(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = reinterpret_cast<cudaEvent_t>(new EventRec());
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete reinterpret_cast<EventRec*>(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    reinterpret_cast<EventRec*>(e)->ms = now_ms();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
// CPU time of the emulation: says nothing about the GPU.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    *ms = float(reinterpret_cast<EventRec*>(end)->ms - reinterpret_cast<EventRec*>(start)->ms);
    return cudaSuccess;
}

unsigned __activemask() {
    auto& s = S();
    return s.cur >= 0 ? s.warp_lanes[size_t(s.cur >> 5)] : 1u;
}

long long clock64() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
