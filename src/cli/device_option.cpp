#include "cli/device_option.h"

#include <cstdio>

#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/error.h"

namespace tuner::cli {

void add_device_option(CLI::App* sub, std::string* device) {
    sub->add_option("--device", *device, "cpu (default) or cuda: where the model runs");
}

Device resolve_device(const std::string& device, const char* command) {
    if (device.empty() || device == "cpu") return Device::CPU;
    if (device != "cuda") fail("[{}] --device {}: expected cpu or cuda", command, device);
    std::string why;
    if (!cuda::available(&why)) fail("[{}] --device cuda: no CUDA device: {}", command, why);
    std::fprintf(stderr, "device: %s\n", cuda::device_summary().c_str());
    return Device::CUDA;
}

}  // namespace tuner::cli
