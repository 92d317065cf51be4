// tuner eval MODEL_DIR [--adapter DIR] (--text FILE | --ids FILE) [--ctx N] [--stride S] [--json]
// tuner eval MODEL_DIR [--adapter DIR] --data FILE [--format F] [--template NAME] [--system TEXT]
//     [--ctx N] [--batch N] [--json]
// tuner eval CONFIG.yaml [--adapter DIR | --base] [--set key=value ...] [--json]
// Loss and perplexity of a model (+ adapter):
//  * on text (--text: the file's text tokenized with BOS when the tokenizer adds one; --ids:
//    whitespace-separated token ids) in windows of --ctx tokens whose starts are --stride apart
//    (default: --ctx, non-overlapping windows). This is Hugging Face's sliding-window perplexity:
//    each token is scored at most once, with the tokens before it in its window as context; with
//    stride < ctx every token after the first is scored, with stride = ctx the first token of each
//    window is not. `tuner perplexity` is the same computation.
//  * on an instruction dataset (--data: any file or folder the data pipeline reads, data.md),
//    rendered with the chat template and masked exactly as training does: only trained tokens
//    (the answers) count. --ctx is data.max_length (longer chat samples are cut, as in training).
//  * on the validation data of a training config (data.eval or data.eval_ratio), with the trained
//    result of its output_dir when there is one (output_dir/adapter, or output_dir/model for full
//    fine-tuning) unless --adapter or --base says otherwise.
// The loss is the mean cross-entropy over the scored tokens (nats); perplexity is exp(loss).
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "io/peft.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"
#include "train/train_config.h"

namespace fs = std::filesystem;

namespace tuner::cli {

WindowLoss window_loss(LlamaModel& model, const std::vector<int32_t>& ids, int ctx, int stride) {
    TUNER_ASSERT(ctx >= 2 && stride >= 1 && stride <= ctx);
    WindowLoss r;
    const size_t N = ids.size();
    if (N < 2) return r;
    const int T = int(std::min<size_t>(size_t(ctx), N));
    r.ctx = T;
    model.prepare(1, T, false);
    std::vector<int32_t> targets(static_cast<size_t>(T));
    size_t prev_end = 0;
    for (size_t begin = 0; begin < N; begin += size_t(stride)) {
        const size_t end = std::min(begin + size_t(T), N);
        const int n = int(end - begin);
        // Position t predicts token begin+t+1: scored when that token is new (>= prev_end).
        int64_t scored = 0;
        for (int t = 0; t < n; t++) {
            const size_t next = begin + size_t(t) + 1;
            const bool score = next < end && next >= prev_end;
            targets[size_t(t)] = score ? ids[next] : -100;
            scored += score;
        }
        if (scored > 0) {
            Batch b;
            b.B = 1, b.T = n, b.tokens = ids.data() + begin, b.targets = targets.data();
            int64_t c = 0;
            r.sum += model.forward_loss(b, &c);
            r.tokens += c;
            r.windows++;
        }
        prev_end = end;
        if (end == N) break;
    }
    return r;
}

void print_window_loss(const WindowLoss& r, int stride, bool json) {
    if (r.tokens == 0) fail("[eval] nothing to score: the text needs at least 2 tokens");
    const double loss = r.sum / double(r.tokens);
    if (json)
        std::printf("{\"loss\": %.6f, \"ppl\": %.6f, \"tokens\": %lld, \"windows\": %lld, \"ctx\": %d, \"stride\": %d}\n",
                    loss, std::exp(loss), (long long)r.tokens, (long long)r.windows, r.ctx, std::min(stride, r.ctx));
    else
        std::printf("loss %.4f  perplexity %.3f  (%lld scored tokens in %lld windows of up to %d, stride %d)\n", loss,
                    std::exp(loss), (long long)r.tokens, (long long)r.windows, r.ctx, std::min(stride, r.ctx));
}

std::vector<int32_t> read_text_ids(const std::string& path, const Tokenizer& tok) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("[eval] {}: cannot open ({})", path, std::strerror(errno));
    std::string text((std::istreambuf_iterator<char>(f)), {});
    std::vector<int32_t> ids;
    EncodeOptions enc = encode_options_for(tok, -1);
    if (enc.text_bos && enc.bos_id >= 0) ids.push_back(enc.bos_id);
    auto body = tok.encode(text, false);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
}

namespace {

// Mean loss over every trained token of a dataset's rows, as the trainer's validation loss.
struct DataLoss {
    double sum = 0;
    int64_t tokens = 0, rows = 0;
};

DataLoss dataset_loss(LlamaModel& model, const Dataset& ds, int64_t batch_size) {
    DataLoss r;
    if (ds.empty()) return r;
    model.prepare(int(batch_size), int(ds.max_length), false);
    std::vector<int64_t> rows(size_t(ds.num_rows()));
    for (size_t i = 0; i < rows.size(); i++) rows[i] = int64_t(i);
    BatchData b;
    for (size_t i = 0; i < rows.size(); i += size_t(batch_size)) {
        int64_t n = std::min<int64_t>(batch_size, int64_t(rows.size() - i));
        ds.make_batch(rows.data() + i, n, &b);
        int64_t c = 0;
        r.sum += model.forward_loss(b.batch(), &c);
        r.tokens += c;
    }
    r.rows = ds.num_rows();
    return r;
}

void print_data_loss(const DataLoss& r, const Dataset& ds, const Datasets& data, bool json) {
    if (r.tokens == 0) fail("[eval] the data has no trained tokens to score");
    const double loss = r.sum / double(r.tokens);
    const DataStats& st = ds.stats;
    const std::string tmpl = data.chat_template.tmpl ? data.chat_template.tmpl->name : "none";
    if (json)
        std::printf("{\"loss\": %.6f, \"ppl\": %.6f, \"tokens\": %lld, \"samples\": %lld, \"rows\": %lld, "
                    "\"truncated\": %lld, \"max_length\": %lld, \"template\": \"%s\"}\n",
                    loss, std::exp(loss), (long long)r.tokens, (long long)st.samples, (long long)r.rows,
                    (long long)st.truncated, (long long)ds.max_length, tmpl.c_str());
    else
        std::printf("loss %.4f  perplexity %.3f  (%lld trained tokens of %lld samples in %lld rows of %lld; template "
                    "%s%s)\n",
                    loss, std::exp(loss), (long long)r.tokens, (long long)st.samples, (long long)r.rows,
                    (long long)ds.max_length, tmpl.c_str(),
                    st.truncated ? fmt::format(", {} samples cut at max_length", st.truncated).c_str() : "");
}

DataFormat parse_format(const std::string& name) {
    for (DataFormat f : {DataFormat::Auto, DataFormat::Alpaca, DataFormat::OpenAI, DataFormat::ShareGPT, DataFormat::Text})
        if (name == format_name(f)) return f;
    fail("[eval] --format {}: expected auto, alpaca, openai, sharegpt or text", name);
}

bool is_config_file(const std::string& p) {
    std::string ext = fs::path(p).extension().string();
    return (ext == ".yaml" || ext == ".yml") && fs::is_regular_file(p);
}

}  // namespace

Command add_eval(CLI::App& app) {
    struct Opts {
        std::string model, adapter, text, ids, data, format = "auto", tmpl = "auto", system;
        std::vector<std::string> sets;
        int ctx = 0, stride = 0, batch = 1, threads = 0;
        bool json = false, base = false;
        std::string device = "cpu";
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("eval", "loss and perplexity on a text, a dataset, or a config's validation data");
    sub->add_option("model", o->model, "Hugging Face model folder, or a training config (.yaml)")->required();
    sub->add_option("--adapter", o->adapter, "a PEFT LoRA adapter folder to apply");
    sub->add_option("--text", o->text, "a text file: perplexity over its tokens");
    sub->add_option("--ids", o->ids, "a file of whitespace-separated token ids");
    sub->add_option("--data", o->data, "a dataset file or folder (alpaca, openai, sharegpt, text): loss on trained tokens");
    sub->add_option("--format", o->format, "--data format: auto, alpaca, openai, sharegpt, text");
    sub->add_option("--template", o->tmpl, "--data chat template: auto or a name (tuner templates)");
    sub->add_option("--system", o->system, "--data system text for records without one");
    sub->add_option("--ctx", o->ctx, "window length (text; default 512) or max_length (data; default 2048)");
    sub->add_option("--stride", o->stride, "text: tokens between window starts (default: --ctx, no overlap)");
    sub->add_option("--batch", o->batch, "data: rows per forward pass");
    sub->add_option("--set", o->sets, "config: override a key, e.g. --set data.max_length=512 (repeatable)");
    sub->add_flag("--base", o->base, "config: evaluate the base model even when output_dir has a trained result");
    sub->add_flag("--json", o->json, "print one JSON object");
    add_threads_option(sub, &o->threads);
    add_device_option(sub, &o->device);
    return {sub, [o]() {
                set_num_threads(o->threads);
                const Device device = resolve_device(o->device, "eval");
                if (o->batch < 1) fail("[eval] --batch must be at least 1");
                if (is_config_file(o->model)) {
                    if (!o->text.empty() || !o->ids.empty() || !o->data.empty())
                        fail("[eval] {} is a training config: it brings its own validation data (no --text/--ids/--data)",
                             o->model);
                    TrainConfig cfg = load_train_config(o->model, o->sets);
                    DataConfig dc = data_config_from_yaml(ConfigView(cfg.file).child("data"));
                    if (o->ctx > 0) dc.max_length = o->ctx;
                    auto tok = Tokenizer::load(tokenizer_path_for(dc, cfg.model));
                    DataBuildOptions dbo;
                    dbo.model_dir = cfg.model;
                    dbo.seed = cfg.train.seed;
                    Datasets data = build_datasets(dc, *tok, dbo);
                    if (data.eval.empty())
                        fail("[eval] {}: the config has no validation data (set data.eval or data.eval_ratio)", o->model);
                    std::string model_dir = cfg.model, adapter = o->adapter;
                    const fs::path out = cfg.output_dir;
                    if (adapter.empty() && !o->base && !cfg.output_dir.empty()) {
                        if (cfg.method == "full" && fs::exists(out / "model" / "config.json")) model_dir = (out / "model").string();
                        else if (cfg.method != "full" && fs::exists(out / "adapter" / "adapter_config.json"))
                            adapter = (out / "adapter").string();
                    }
                    std::fprintf(stderr, "eval: %s%s%s on the validation data of %s\n", model_dir.c_str(),
                                 adapter.empty() ? "" : " + ", adapter.c_str(), o->model.c_str());
                    auto model = load_model_with_adapter(model_dir, adapter, device);
                    const int64_t B = o->batch > 1 ? o->batch : std::max<int64_t>(1, cfg.train.batch_size);
                    print_data_loss(dataset_loss(*model, data.eval, B), data.eval, data, o->json);
                    return 0;
                }
                const int given = !o->text.empty() + !o->ids.empty() + !o->data.empty();
                if (given != 1) fail("[eval] give exactly one of --text FILE, --ids FILE or --data FILE");
                auto model = load_model_with_adapter(o->model, o->adapter, device);
                const int64_t max_pos = model->config.max_position_embeddings;
                if (!o->data.empty()) {
                    DataConfig dc;
                    DataSource src;
                    src.path = o->data;
                    src.format = parse_format(o->format);
                    src.where = "--data";
                    dc.train.push_back(src);
                    dc.template_name = o->tmpl;
                    dc.system = o->system;
                    dc.max_length = o->ctx > 0 ? o->ctx : std::min<int64_t>(2048, max_pos);
                    dc.shuffle = false;  // rows in file order (packing cannot change the loss)
                    if (dc.max_length < 2) fail("[eval] --ctx must be at least 2");
                    auto tok = Tokenizer::load(o->model);
                    DataBuildOptions dbo;
                    dbo.model_dir = o->model;
                    Datasets data = build_datasets(dc, *tok, dbo);
                    print_data_loss(dataset_loss(*model, data.train, o->batch), data.train, data, o->json);
                    return 0;
                }
                const int ctx = o->ctx > 0 ? o->ctx : int(std::min<int64_t>(512, max_pos));
                if (ctx < 2) fail("[eval] --ctx must be at least 2");
                if (ctx > max_pos) fail("[eval] --ctx {} is longer than the model's max_position_embeddings ({})", ctx, max_pos);
                const int stride = o->stride > 0 ? o->stride : ctx;
                if (stride > ctx) fail("[eval] --stride {} is longer than --ctx {} (tokens would be skipped)", stride, ctx);
                std::vector<int32_t> ids;
                if (!o->ids.empty()) ids = read_token_ids(o->ids, model->config.vocab_size);
                else ids = read_text_ids(o->text, *Tokenizer::load(o->model));
                if (ids.size() < 2)
                    fail("[eval] {}: needs at least 2 tokens, found {}", o->ids.empty() ? o->text : o->ids, ids.size());
                print_window_loss(window_loss(*model, ids, ctx, stride), stride, o->json);
                return 0;
            }};
}

}  // namespace tuner::cli
