// --device cpu|cuda for the commands that run a model (generate, chat, eval, perplexity, bench,
// logits; train takes it from its config or --device).
//
//   std::string device = "cpu";
//   add_device_option(sub, &device);
//   ... const Device d = resolve_device(device, "generate");   // fails clearly without a GPU
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "core/tensor.h"

namespace tuner::cli {

void add_device_option(CLI::App* sub, std::string* device);
// Device::CUDA after checking that CUDA is built and a device is present (else a
// "[COMMAND] --device cuda: ..." error that says why); Device::CPU for "cpu".
Device resolve_device(const std::string& device, const char* command);

}  // namespace tuner::cli
