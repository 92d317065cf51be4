// tuner merge MODEL_DIR ADAPTER_DIR OUT_DIR [--dtype f32|bf16|f16] [--base-quant auto|none|nf4|nf4-single]
// Merges a PEFT LoRA adapter into its base: W' = W + scale * B A in f32 for every adapted
// weight, every other tensor copied, tokenizer files copied; written to a temporary folder and
// renamed to OUT_DIR. A merge that produces NaN/inf is refused and leaves nothing behind.
// A QLoRA adapter (tuner_base.json says nf4, or --base-quant nf4) is merged into the base as the
// adapter saw it: projections NF4-quantised and dequantised in f32, embeddings/head bf16-rounded.
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/peft.h"

namespace tuner::cli {

Command add_merge(CLI::App& app) {
    struct Opts {
        std::string model, adapter, out, dtype, base_quant = "auto";
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("merge", "merge a LoRA adapter (PEFT folder) into its base model");
    sub->add_option("model", o->model, "base model: Hugging Face folder")->required();
    sub->add_option("adapter", o->adapter, "PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
        ->required();
    sub->add_option("out", o->out, "output folder (must not exist)")->required();
    sub->add_option("--dtype", o->dtype, "output dtype of the weights: f32, bf16 or f16 (default: as stored in MODEL)");
    sub->add_option("--base-quant", o->base_quant,
                    "how the base was stored in training: auto (the adapter's tuner_base.json), none, nf4 "
                    "(double-quantised, qlora's default) or nf4-single");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                std::optional<DType> dtype;
                if (o->dtype == "f32" || o->dtype == "float32") dtype = DType::F32;
                else if (o->dtype == "bf16" || o->dtype == "bfloat16") dtype = DType::BF16;
                else if (o->dtype == "f16" || o->dtype == "float16") dtype = DType::F16;
                else if (!o->dtype.empty()) fail("[merge] --dtype {}: expected f32, bf16 or f16", o->dtype);
                std::optional<AdapterBaseQuant> bq;
                if (o->base_quant == "none") bq = AdapterBaseQuant{};
                else if (o->base_quant == "nf4") bq = AdapterBaseQuant{"nf4", true};
                else if (o->base_quant == "nf4-single") bq = AdapterBaseQuant{"nf4", false};
                else if (o->base_quant != "auto")
                    fail("[merge] --base-quant {}: expected auto, none, nf4 or nf4-single", o->base_quant);
                merge_peft_adapter(o->model, o->adapter, o->out, dtype, bq);
                std::printf("merged %s + %s -> %s\n", o->model.c_str(), o->adapter.c_str(), o->out.c_str());
                return 0;
            }};
}

}  // namespace tuner::cli
