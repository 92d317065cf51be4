#include "core/threads.h"

#include <omp.h>
#include <sched.h>

extern "C" void openblas_set_num_threads(int num_threads);

namespace tuner {

static int g_threads = 0;

static int available_cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return omp_get_num_procs();
}

void set_num_threads(int n) {
    if (n <= 0) n = available_cores();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int num_threads() {
    if (g_threads == 0) set_num_threads(0);
    return g_threads;
}

}  // namespace tuner
