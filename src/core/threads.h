// Threading: OpenMP for our kernels; oneDNN (built on the same libgomp) and OpenBLAS follow
// the same count. `--threads N` on every command calls set_num_threads(N); the default is every
// core the process may run on.
#pragma once

namespace tuner {

void set_num_threads(int n);  // n <= 0: all available cores
int num_threads();

}  // namespace tuner
