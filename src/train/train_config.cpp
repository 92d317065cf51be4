#include "train/train_config.h"

#include <sstream>

#include "core/error.h"
#include "train/memory_plan.h"

namespace tuner {

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
    ConfigFile file = config_load(path);
    for (const auto& o : overrides) config_apply_set(file, o);
    return parse_train_config(std::move(file));
}

bool default_gradient_checkpointing(const std::string& method) { return method == "qlora"; }

static std::vector<std::string> string_list(const ConfigView& v) {
    std::vector<std::string> out;
    if (!v.present()) return out;
    if (v.is_scalar()) return {v.as_string()};
    for (const auto& item : v.items()) out.push_back(item.as_string());
    return out;
}

void apply_device_defaults(TrainConfig& c) {
    // LoRA on the GPU with bf16 matmuls reads the frozen base as bf16 anyway: storing it in bf16
    // loses nothing and halves its memory (25 -> 12.5 GiB for a 7B model).
    if (c.device == "cuda" && c.method == "lora" && !c.base_dtype_given && c.cuda_matmul == "bf16")
        c.base_dtype = "bf16";
    // bf16 activations exist only with bf16 CUDA matmuls: the default there; elsewhere f32, also
    // when --device cpu overrides a config that asked for bf16 (the parser refuses that
    // combination inside one file).
    const bool bf16_ok = c.device == "cuda" && c.cuda_matmul == "bf16";
    if (!c.activation_dtype_given || !bf16_ok) c.activation_dtype = bf16_ok ? "bf16" : "f32";
}

TrainConfig parse_train_config(ConfigFile file) {
    TrainConfig c;
    c.file = std::move(file);
    ConfigView root(c.file);
    root.check_keys({"model", "method", "output_dir", "resume", "base_dtype", "quant", "threads", "device",
                     "cuda_matmul", "activation_dtype", "data", "lora", "train", "eval", "save"});
    c.model = root.get_string("model", "");
    if (c.model.empty()) root.fail("'model' is required (a Hugging Face model folder)");
    c.method = root.get_choice("method", "lora", {"full", "lora", "qlora"});
    c.output_dir = root.get_string("output_dir", "");
    if (c.output_dir.empty()) root.fail("'output_dir' is required");
    c.resume = root.get_string("resume", "");
    if (c.method == "qlora") {
        if (root.has("base_dtype") && root.get_string("base_dtype", "") != "nf4")
            root.child("base_dtype").fail("method: qlora quantises the base to NF4: leave base_dtype out (or nf4)");
        c.base_dtype = "nf4";
    } else {
        c.base_dtype = root.get_choice("base_dtype", "f32", {"f32", "bf16"});
        c.base_dtype_given = root.has("base_dtype");
    }
    ConfigView quant = root.child("quant");
    if (quant.present()) {
        if (c.method != "qlora") quant.fail("'quant' applies to method: qlora only");
        quant.check_keys({"double_quant"});
        c.double_quant = quant.get_bool("double_quant", true);
    }
    c.threads = int(root.get_int("threads", 0));
    c.device = root.get_choice("device", "cpu", {"cpu", "cuda"});
    c.cuda_matmul = root.get_choice("cuda_matmul", "bf16", {"bf16", "tf32", "f32"});
    if (root.has("cuda_matmul") && c.device != "cuda") root.child("cuda_matmul").fail("cuda_matmul applies to device: cuda");
    c.activation_dtype = root.get_choice("activation_dtype", "f32", {"f32", "bf16"});
    c.activation_dtype_given = root.has("activation_dtype");
    if (c.activation_dtype == "bf16" && (c.device != "cuda" || c.cuda_matmul != "bf16"))
        root.child("activation_dtype")
            .fail("activation_dtype: bf16 needs device: cuda with cuda_matmul: bf16 (the CPU computes and stores "
                  "activations in f32)");
    apply_device_defaults(c);
    ConfigView data = root.child("data");
    if (!data.present() || !data.is_map()) root.fail("'data' is required: a mapping with at least 'train'");

    ConfigView lora = root.child("lora");
    if (lora.present()) {
        lora.check_keys({"r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "init_adapter"});
        c.lora.r = lora.get_int("r", c.lora.r);
        if (c.lora.r <= 0) lora.child("r").fail("lora.r must be positive");
        c.lora.lora_alpha = lora.get_float("lora_alpha", c.lora.lora_alpha);
        c.lora.lora_dropout = lora.get_float("lora_dropout", c.lora.lora_dropout);
        if (c.lora.lora_dropout < 0 || c.lora.lora_dropout >= 1)
            lora.child("lora_dropout").fail("lora.lora_dropout must be in [0, 1)");
        if (lora.has("target_modules")) c.lora.target_modules = string_list(lora.child("target_modules"));
        c.lora.use_rslora = lora.get_bool("use_rslora", false);
        c.lora_init_adapter = lora.get_string("init_adapter", "");
    }

    ConfigView t = root.child("train");
    TrainSettings& s = c.train;
    if (t.present()) {
        t.check_keys({"lr", "schedule", "warmup_ratio", "warmup_steps", "weight_decay", "betas", "eps",
                      "max_grad_norm", "batch_size", "grad_accum", "epochs", "max_steps", "seed", "log_every",
                      "gradient_checkpointing", "memory_limit"});
        s.lr = t.get_float("lr", -1);
        s.schedule = schedule_type_from_name(t.get_choice("schedule", "cosine", {"constant", "linear", "cosine"}));
        s.warmup_ratio = t.get_float("warmup_ratio", s.warmup_ratio);
        s.warmup_steps = t.get_int("warmup_steps", -1);
        s.weight_decay = t.get_float("weight_decay", s.weight_decay);
        if (t.has("betas")) {
            auto b = t.child("betas").items();
            if (b.size() != 2) t.child("betas").fail("train.betas should be a list of two numbers, e.g. [0.9, 0.999]");
            s.beta1 = b[0].as_float(), s.beta2 = b[1].as_float();
        }
        s.eps = t.get_float("eps", s.eps);
        s.max_grad_norm = t.get_float("max_grad_norm", s.max_grad_norm);
        s.batch_size = t.get_int("batch_size", s.batch_size);
        s.grad_accum = t.get_int("grad_accum", s.grad_accum);
        s.epochs = t.get_int("epochs", s.epochs);
        s.max_steps = t.get_int("max_steps", s.max_steps);
        s.seed = uint64_t(t.get_int("seed", 0));
        s.log_every = t.get_int("log_every", s.log_every);
        if (s.batch_size <= 0) t.child("batch_size").fail("train.batch_size must be positive");
        if (s.grad_accum <= 0) t.child("grad_accum").fail("train.grad_accum must be positive");
        if (s.epochs <= 0 && s.max_steps <= 0) t.fail("set train.epochs or train.max_steps to a positive number");
        if (t.has("memory_limit")) {
            const std::string lim = t.child("memory_limit").as_string();
            if (lim == "off" || lim == "false") {
                s.memory_check = false;
            } else if (!parse_byte_size(lim, &s.memory_limit) || s.memory_limit == 0) {
                t.child("memory_limit")
                    .fail("train.memory_limit should be a size such as 16GiB, 512MiB or 8e9 (bytes), or off");
            }
        }
    }
    // The method is known here: the default depends on it.
    s.gradient_checkpointing = t.present() ? t.get_bool("gradient_checkpointing", default_gradient_checkpointing(c.method))
                                           : default_gradient_checkpointing(c.method);
    if (s.lr < 0) s.lr = c.method == "full" ? 2e-5 : 2e-4;
    c.lora.seed = s.seed;

    ConfigView e = root.child("eval");
    if (e.present()) {
        e.check_keys({"every", "prompts", "max_new_tokens"});
        c.eval_every = e.get_int("every", 0);
        c.eval_prompts = string_list(e.child("prompts"));
        c.eval_max_new_tokens = e.get_int("max_new_tokens", c.eval_max_new_tokens);
    }
    ConfigView sv = root.child("save");
    if (sv.present()) {
        sv.check_keys({"every", "keep"});
        c.save_every = sv.get_int("every", c.save_every);
        c.save_keep = sv.get_int("keep", c.save_keep);
    }
    return c;
}

std::string TrainConfig::resolved_yaml() const {
    YAML::Node n = YAML::Clone(file.root);
    n["method"] = method;
    n["output_dir"] = output_dir;
    n["base_dtype"] = base_dtype;
    n["device"] = device;
    if (device == "cuda") n["cuda_matmul"] = cuda_matmul;
    if (device == "cuda") n["activation_dtype"] = activation_dtype;
    if (method == "qlora") n["quant"]["double_quant"] = double_quant;
    if (uses_lora()) {
        n["lora"]["r"] = lora.r;
        n["lora"]["lora_alpha"] = lora.lora_alpha;
        n["lora"]["lora_dropout"] = lora.lora_dropout;
        n["lora"]["target_modules"] = lora.target_modules;
        n["lora"]["use_rslora"] = lora.use_rslora;
    }
    const TrainSettings& s = train;
    n["train"]["lr"] = s.lr;
    n["train"]["schedule"] = s.schedule == ScheduleType::Cosine ? "cosine"
                             : s.schedule == ScheduleType::Linear ? "linear" : "constant";
    n["train"]["warmup_ratio"] = s.warmup_ratio;
    n["train"]["warmup_steps"] = s.warmup_steps;
    n["train"]["weight_decay"] = s.weight_decay;
    n["train"]["betas"] = std::vector<double>{s.beta1, s.beta2};
    n["train"]["max_grad_norm"] = s.max_grad_norm;
    n["train"]["batch_size"] = s.batch_size;
    n["train"]["grad_accum"] = s.grad_accum;
    n["train"]["epochs"] = s.epochs;
    n["train"]["max_steps"] = s.max_steps;
    n["train"]["seed"] = s.seed;
    n["train"]["gradient_checkpointing"] = s.gradient_checkpointing;
    n["save"]["every"] = save_every;
    n["save"]["keep"] = save_keep;
    n["eval"]["every"] = eval_every;
    YAML::Emitter out;
    out << n;
    return std::string(out.c_str()) + "\n";
}

}  // namespace tuner
