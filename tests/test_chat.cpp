// Chat (infer/chat.h, `tuner chat`, `generate --chat`) and evaluation (`tuner eval`, `tuner
// perplexity --text`), on a tiny random model with the project's byte tokenizer (made by
// `tuner init-model tiny DIR --tokenizer bytes`; chatml template) and on stories260K (shared data;
// `default` template or plain text).
//
// The chat's cache reuse is checked against a reference without any KV cache: greedy decoding by
// the full forward (LlamaModel::last_logits) over the session's own token ids. Evaluation numbers
// are checked against sums of LlamaModel::forward_loss over windows / samples built in the test.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/samples.h"
#include "data/templates.h"
#include "infer/chat.h"
#include "io/peft.h"
#include "models/llama.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

using namespace tuner;
using tuner::testing::make_temp_dir;
using tuner::testing::run_command;
using tuner::testing::tuner_exe;

namespace {

// A tiny random model with the byte tokenizer, made once per test program.
const std::string& byte_model() {
    static const std::string dir = [] {
        std::string d = make_temp_dir("chat-bytes") + "/m";
        std::string out;
        int rc = run_command(tuner_exe() + " init-model tiny " + d + " --tokenizer bytes --seed 5", &out);
        if (rc != 0) ADD_FAILURE() << out;
        return d;
    }();
    return dir;
}

std::string stories_dir() {
    std::string d = tuner::testing::shared_data_dir();
    return d.empty() ? "" : d + "/stories260K/hf";
}

struct Loaded {
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<Tokenizer> tok;
};

Loaded load(const std::string& dir) {
    ModelOptions mo;
    mo.trainable = false;
    return {LlamaModel::load(dir, mo), Tokenizer::load(dir)};
}

ChatOptions greedy_options(const Tokenizer& tok, const ChatTemplate* tmpl, int max_new) {
    ChatOptions o;
    o.tmpl = tmpl;
    o.encode = encode_options_for(tok, -1);
    o.sampling.temperature = 0;
    o.max_new_tokens = max_new;
    return o;
}

// Greedy decoding without a KV cache: the full forward over the whole sequence for every token.
// Returns n tokens (or fewer, ending with eos).
std::vector<int32_t> greedy_uncached(LlamaModel& m, std::vector<int32_t> ids, int n, int32_t eos) {
    m.prepare(1, int(ids.size()) + n, false);
    std::vector<float> logits(size_t(m.config.vocab_size));
    std::vector<int32_t> out;
    for (int i = 0; i < n; i++) {
        Batch b;
        b.B = 1, b.T = int(ids.size()), b.tokens = ids.data();
        m.last_logits(b, logits.data());
        int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        out.push_back(best);
        ids.push_back(best);
        if (best == eos) break;
    }
    return out;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// The prompt tokens of turn `turns.size()` alone (what a send() appends before the reply).
std::vector<int32_t> turn_prompt(const Tokenizer& tok, const ChatOptions& o, const std::vector<ChatTurn>& turns,
                                 const std::string& user) {
    auto with = render_chat(tok, o, turns, user), without = render_chat(tok, o, turns, "");
    return std::vector<int32_t>(with.begin() + long(without.size()), with.end());
}

// The reply's sampled tokens must be what greedy decoding without a cache gives on `ids`.
void expect_reply_is_uncached_greedy(LlamaModel& m, const Tokenizer& tok, const std::vector<int32_t>& ids,
                                     const ChatReply& r) {
    auto ref = greedy_uncached(m, ids, r.generated, tok.eos_id());
    ASSERT_GE(ref.size(), r.tokens.size());
    EXPECT_EQ(std::vector<int32_t>(ref.begin(), ref.begin() + long(r.tokens.size())), r.tokens);
    if (r.stop == ChatStop::Eos) {
        EXPECT_EQ(ref.back(), tok.eos_id());
    }
}

// Two turns: the layout of the history, the reply of turn 2 equal to uncached greedy decoding of
// the whole two-turn prompt, and only the new turn run through the model.
void check_two_turns(const std::string& dir, const std::string& tmpl_name) {
    auto [model, tok] = load(dir);
    const ChatTemplate* tmpl = tmpl_name == "none" ? nullptr : &get_chat_template(tmpl_name);
    ChatOptions o = greedy_options(*tok, tmpl, 12);
    o.system = "You tell stories.";
    ChatSession chat(*model, *tok, o);
    const std::string u1 = "Once upon a time", u2 = "What happened next?";

    const auto p1 = render_chat(*tok, o, {}, u1);
    ChatReply r1 = chat.send(u1);
    const auto h1 = chat.history();
    ASSERT_GE(h1.size(), p1.size() + r1.tokens.size());
    EXPECT_EQ(std::vector<int32_t>(h1.begin(), h1.begin() + long(p1.size())), p1);
    EXPECT_EQ(std::vector<int32_t>(h1.begin() + long(p1.size()), h1.begin() + long(p1.size() + r1.tokens.size())),
              r1.tokens);
    expect_reply_is_uncached_greedy(*model, *tok, p1, r1);
    EXPECT_EQ(r1.prompt_tokens, int(p1.size()));
    EXPECT_EQ(tok->decode(r1.tokens, true), r1.text);

    const int cached = chat.cached_tokens();
    const auto ids2 = concat(h1, turn_prompt(*tok, o, {{u1, r1.text}}, u2));
    ChatReply r2 = chat.send(u2);
    EXPECT_FALSE(r2.reprefilled);
    EXPECT_EQ(r2.prompt_tokens, int(ids2.size()) - cached) << "only the tokens the cache lacks run";
    EXPECT_LT(r2.prompt_tokens, int(ids2.size()) / 2);
    expect_reply_is_uncached_greedy(*model, *tok, ids2, r2);
    const auto& h2 = chat.history();
    EXPECT_EQ(std::vector<int32_t>(h2.begin(), h2.begin() + long(ids2.size())), ids2);
}

std::string read_file(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

nlohmann::json run_json(const std::string& args) {
    std::string out;
    int rc = run_command("(" + tuner_exe() + " " + args + " 2>/dev/null)", &out);
    EXPECT_EQ(rc, 0) << args << "\n" << out;
    try {
        return nlohmann::json::parse(out);
    } catch (const std::exception&) {
        ADD_FAILURE() << args << " printed: " << out;
        return nlohmann::json::object();
    }
}

// stdout of a command fed `input` on stdin (stderr dropped).
std::string run_stdin(const std::string& input, const std::string& args, int* rc = nullptr) {
    std::string dir = make_temp_dir("chat-in"), in = dir + "/in.txt";
    std::ofstream(in, std::ios::binary) << input;
    std::string out;
    int r = run_command("(" + tuner_exe() + " " + args + " < " + in + " 2>/dev/null)", &out);
    if (rc) {
        *rc = r;
    } else {
        EXPECT_EQ(r, 0) << args;
    }
    return out;
}

}  // namespace

// ---- ChatSession --------------------------------------------------------------------------------

TEST(Chat, ByteModelChatmlTwoTurnsReuseTheCache) { check_two_turns(byte_model(), "chatml"); }

TEST(Chat, Stories260KDefaultTemplateTwoTurns) {
    TUNER_REQUIRE_SHARED_DATA(data);
    check_two_turns(stories_dir(), "default");
}

TEST(Chat, Stories260KPlainTextTwoTurns) {
    TUNER_REQUIRE_SHARED_DATA(data);
    check_two_turns(stories_dir(), "none");
}

TEST(Chat, AutoTemplateOfTheByteModelIsChatmlAndTheLayoutIsTrainings) {
    auto [model, tok] = load(byte_model());
    TemplateChoice tc = choose_chat_template("auto", byte_model(), "", *tok);
    ASSERT_NE(tc.tmpl, nullptr);
    EXPECT_EQ(tc.tmpl->name, "chatml");
    ChatOptions o = greedy_options(*tok, tc.tmpl, 4);
    o.system = "S";
    // Byte tokens: <s>=256, <|im_start|>=258, <|im_end|>=259.
    auto bytes = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
    std::vector<int32_t> want = {256, 258};
    want = concat(want, bytes("system\nS"));
    want.push_back(259);
    want = concat(want, bytes("\n"));
    want.push_back(258);
    want = concat(want, bytes("user\nhi"));
    want.push_back(259);
    want = concat(want, bytes("\n"));
    want.push_back(258);
    want = concat(want, bytes("assistant\n"));
    EXPECT_EQ(render_chat(*tok, o, {}, "hi"), want);
    // The same as training encodes a chat record, up to the turn's end.
    Record rec;
    rec.turns = {Turn{"S", "hi", "ok", true}};
    std::vector<int32_t> toks, labels;
    encode_chat(rec, *tc.tmpl, *tok, o.encode, &toks, &labels);
    EXPECT_EQ(render_chat(*tok, o, {{"hi", "ok"}}, ""), toks);
    // After a reply: the reply's tokens, <|im_end|>, "\n".
    ChatSession chat(*model, *tok, o);
    ChatReply r = chat.send("hi");
    auto h = chat.history();
    EXPECT_EQ(h, concat(concat(want, r.tokens), {259, '\n'}));
}

TEST(Chat, ResetGivesTheReplyOfAFreshSession) {
    auto [model, tok] = load(byte_model());
    for (double temperature : {0.0, 0.9}) {
        ChatOptions o = greedy_options(*tok, &get_chat_template("chatml"), 10);
        o.sampling.temperature = temperature;
        o.sampling.seed = 11;
        o.sampling.top_k = 0, o.sampling.top_p = 1.0;
        ChatSession fresh(*model, *tok, o);
        ChatReply want = fresh.send("Hello there");
        ChatSession chat(*model, *tok, o);
        chat.send("Something else first");
        chat.send("and more");
        chat.reset();
        EXPECT_EQ(chat.history().size(), 0u);
        EXPECT_EQ(chat.cached_tokens(), 0);
        ChatReply got = chat.send("Hello there");
        EXPECT_EQ(got.tokens, want.tokens) << "temperature " << temperature;
        EXPECT_EQ(got.text, want.text);
        EXPECT_EQ(chat.history(), fresh.history());
    }
}

// A stop word spanning several tokens in the middle of the greedy reply: the reply ends before it,
// the streamed text never contains it, and the next turn equals uncached greedy decoding of the
// session's history (the cache was made consistent by re-reading it).
void check_stop_word(Loaded loaded, const std::string& tmpl_name) {
    auto& [model, tok] = loaded;
    const ChatTemplate* tmpl = tmpl_name == "none" ? nullptr : &get_chat_template(tmpl_name);
    ChatOptions o = greedy_options(*tok, tmpl, 24);
    const std::string u1 = "Once upon a time";
    std::string full;
    {
        ChatSession chat(*model, *tok, o);
        full = chat.send(u1).text;
    }
    // A stop string from the middle of the reply, on character boundaries, first occurring there.
    size_t a = full.size() / 3;
    while (a < full.size() && (full[a] & 0xC0) == 0x80) a++;
    size_t len = 5;
    while (a + len < full.size() && (full[a + len] & 0xC0) == 0x80) len++;
    ASSERT_LT(a + len, full.size()) << "reply too short: " << full;
    const std::string stop = full.substr(a, len);
    const size_t first = full.find(stop);
    EXPECT_GT(first, 0u) << "a stop word that leaves some reply";

    o.stop_words = {stop};
    ChatSession chat(*model, *tok, o);
    std::string streamed;
    ChatReply r = chat.send(u1, [&](std::string_view s) { streamed += s; });
    EXPECT_EQ(r.stop, ChatStop::StopWord);
    EXPECT_EQ(r.stop_word, stop);
    EXPECT_EQ(r.text, full.substr(0, first));
    EXPECT_EQ(streamed, r.text);
    EXPECT_EQ(tok->decode(r.tokens, true), r.text);
    // The history holds the reply up to the stop word, then the turn's end.
    const auto p1 = render_chat(*tok, o, {}, u1);
    const auto& h = chat.history();
    ASSERT_GE(h.size(), p1.size() + r.tokens.size());
    EXPECT_EQ(std::vector<int32_t>(h.begin() + long(p1.size()), h.begin() + long(p1.size() + r.tokens.size())), r.tokens);

    const std::string u2 = "And then?";
    const auto ids2 = concat(chat.history(), turn_prompt(*tok, o, {{u1, r.text}}, u2));
    ChatReply r2 = chat.send(u2);
    EXPECT_TRUE(r2.reprefilled) << "the stop word's tokens were in the cache";
    EXPECT_EQ(r2.prompt_tokens, int(ids2.size()));
    expect_reply_is_uncached_greedy(*model, *tok, ids2, r2);
}

TEST(Chat, ByteModelStopWordAcrossTokens) {
    // The initialised model repeats one token; weights of a larger scale make a varied reply.
    Loaded l = load(byte_model());
    ModelOptions mo;
    mo.trainable = false;
    l.model = LlamaModel::random(l.model->config, mo, 9);
    std::mt19937 rng(4);
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (Param* p : l.model->params()) {
        bool norm = p->name.find("norm") != std::string::npos;
        for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] = norm ? 1.0f : d(rng);
    }
    check_stop_word(std::move(l), "chatml");
}

TEST(Chat, Stories260KStopWordAcrossTokens) {
    TUNER_REQUIRE_SHARED_DATA(data);
    check_stop_word(load(stories_dir()), "default");
}

TEST(Chat, ContextOverflowDropsOldTurns) {
    auto [model, tok] = load(byte_model());
    ChatOptions o = greedy_options(*tok, &get_chat_template("chatml"), 16);
    o.context = 96;
    o.system = "sys";
    ChatSession chat(*model, *tok, o);
    std::vector<std::string> notes;
    chat.on_note = [&](const std::string& s) { notes.push_back(s); };
    int dropped = 0;
    for (int i = 0; i < 6; i++) {
        const std::string u = "message number " + std::to_string(i);
        // What the session will read: the history after dropping, then this turn's prompt.
        ChatReply r = chat.send(u);
        EXPECT_LE(chat.cached_tokens(), chat.context());
        EXPECT_GE(chat.turns(), 1);
        if (r.dropped_turns > 0) {
            dropped += r.dropped_turns;
            EXPECT_TRUE(r.reprefilled);
            // The ids it read: history without this turn's reply and end.
            auto h = chat.history();
            std::vector<int32_t> tail = concat(r.tokens, {259, '\n'});
            ASSERT_GE(h.size(), tail.size());
            std::vector<int32_t> ids(h.begin(), h.end() - long(tail.size()));
            EXPECT_EQ(r.prompt_tokens, int(ids.size()));
            expect_reply_is_uncached_greedy(*model, *tok, ids, r);
            // The first turn left keeps the system text.
            EXPECT_EQ(std::vector<int32_t>(h.begin(), h.begin() + 3), (std::vector<int32_t>{256, 258, 's'}));
        }
    }
    EXPECT_GT(dropped, 0);
    ASSERT_FALSE(notes.empty());
    EXPECT_CONTAINS(notes[0], "dropped the oldest");
    // A message longer than the whole context is refused and changes nothing.
    const auto before = chat.history();
    std::string msg = tuner::testing::error_of([&] { chat.send(std::string(200, 'x')); });
    EXPECT_CONTAINS(msg, "context");
    EXPECT_EQ(chat.history(), before);
    chat.send("still works");
}

TEST(Chat, ReplyCutWhenTheContextIsFull) {
    auto [model, tok] = load(byte_model());
    ChatOptions o = greedy_options(*tok, &get_chat_template("chatml"), 200);
    o.context = 48;
    ChatSession chat(*model, *tok, o);
    ChatReply r = chat.send("hello");
    EXPECT_EQ(r.stop, ChatStop::ContextFull);
    EXPECT_EQ(chat.cached_tokens(), 48);
    ChatReply r2 = chat.send("again");  // drops the first turn
    EXPECT_EQ(r2.dropped_turns, 1);
}

TEST(Chat, AdapterChangesTheReplyAndIsUsedByTheCache) {
    std::string adir = make_temp_dir("chat-adapter") + "/adapter";
    {
        auto [model, tok] = load(byte_model());
        LoraConfig lc;
        lc.r = 4;
        lc.lora_alpha = 8;
        model->enable_lora(lc);
        std::mt19937 rng(3);
        std::normal_distribution<float> d(0.0f, 0.5f);
        for (LoraAdapter* ad : model->adapters())
            for (int64_t i = 0; i < ad->B.value.numel(); i++) ad->B.value.f32()[i] = d(rng);
        save_peft_adapter(*model, adir, byte_model());
    }
    auto [model, tok] = load(byte_model());
    ChatOptions o = greedy_options(*tok, &get_chat_template("chatml"), 12);
    std::string base_reply = ChatSession(*model, *tok, o).send("hi").text;
    load_peft_adapter(*model, adir);
    ChatSession chat(*model, *tok, o);
    ChatReply r = chat.send("hi");
    EXPECT_NE(r.text, base_reply);
    expect_reply_is_uncached_greedy(*model, *tok, render_chat(*tok, o, {}, "hi"), r);
    // The CLI applies the adapter the same way.
    std::string out = run_stdin("hi\n", "chat " + byte_model() + " --adapter " + adir +
                                            " --temperature 0 --max-new-tokens 12 --template chatml");
    EXPECT_EQ(out, r.text + "\n");
}

// ---- the CLI ------------------------------------------------------------------------------------

TEST(ChatCli, PipedConversationWithResetAndExit) {
    const std::string args = "chat " + byte_model() + " --temperature 0 --max-new-tokens 10";
    auto [model, tok] = load(byte_model());
    ChatOptions o = greedy_options(*tok, &get_chat_template("chatml"), 10);
    ChatSession chat(*model, *tok, o);
    std::string r1 = chat.send("Hello").text, r2 = chat.send("How are you?").text;
    std::string out = run_stdin("Hello\nHow are you?\n/reset\nHello\n/exit\nnot read\n", args);
    EXPECT_EQ(out, r1 + "\n" + r2 + "\n" + r1 + "\n");
    // EOF ends the chat too; empty lines are skipped; /help lists the commands.
    out = run_stdin("\nHello\n", args);
    EXPECT_EQ(out, r1 + "\n");
    out = run_stdin("/help\n", args);
    EXPECT_CONTAINS(out, "/reset");
    EXPECT_CONTAINS(out, "/exit");
    // generate --chat answers like the first turn of chat.
    std::string gen;
    ASSERT_EQ(0, run_command("(" + tuner_exe() + " generate " + byte_model() +
                                 " --chat --prompt Hello --temperature 0 --max-new-tokens 10 2>/dev/null)",
                             &gen));
    EXPECT_EQ(gen, r1 + "\n");
}

TEST(ChatCli, VerbosePrintsTokensPerSecondOnStderr) {
    std::string dir = make_temp_dir("chat-v"), in = dir + "/in.txt";
    std::ofstream(in) << "Hello\n";
    std::string out, err;
    ASSERT_EQ(0, run_command("(" + tuner_exe() + " chat " + byte_model() +
                                 " --temperature 0 --max-new-tokens 5 --verbose < " + in + " 2>&1 >/dev/null)",
                             &err));
    EXPECT_CONTAINS(err, "tokens/s");
    ASSERT_EQ(0, run_command("(" + tuner_exe() + " chat " + byte_model() + " --temperature 0 --max-new-tokens 5 < " + in +
                                 " 2>&1 >/dev/null)",
                             &err));
    EXPECT_EQ(err, "") << "no statistics without a terminal or --verbose";
}

TEST(ChatCli, ContextOverflowIsANoteAndTooLongIsAnError) {
    std::string dir = make_temp_dir("chat-ctx"), in = dir + "/in.txt";
    std::ofstream(in) << "first message\nsecond message\nthird message\n" << std::string(300, 'y') << "\nlast\n";
    std::string out;
    int rc = run_command(tuner_exe() + " chat " + byte_model() + " --temperature 0 --max-new-tokens 16 --ctx 80 < " + in,
                         &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "dropped the oldest");
    EXPECT_CONTAINS(out, "error: [chat] the message is");
}

TEST(ChatCli, Stories260KStopWordAndReset) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string args = "chat " + stories_dir() + " --template none --temperature 0 --max-new-tokens 30";
    std::string out = run_stdin("Once upon a time\n/reset\nOnce upon a time\n", args);
    std::istringstream lines(out);
    std::string a, b;
    std::getline(lines, a);
    std::getline(lines, b);
    EXPECT_EQ(a, b);
    ASSERT_GT(a.size(), 12u) << out;
    // Stop at a word from the middle of the reply (several tokens).
    size_t at = a.size() / 2;
    while (at + 6 < a.size() && a.substr(at, 6).find('\'') != std::string::npos) at++;
    std::string stop = a.substr(at, 6);
    std::string cut = run_stdin("Once upon a time\n", args + " --stop '" + stop + "'");
    EXPECT_EQ(cut, a.substr(0, a.find(stop)) + "\n");
}

TEST(ChatCli, UnknownTemplateIsAnError) {
    std::string out;
    EXPECT_EQ(1, run_command("echo hi | " + tuner_exe() + " chat " + byte_model() + " --template nope", &out));
    EXPECT_CONTAINS(out, "unknown chat template 'nope'");
}

// ---- eval and perplexity --------------------------------------------------------------------------

// Loss by hand: windows [begin, end) with begin += stride, each token scored once (HF's loop).
double manual_window_loss(LlamaModel& m, const std::vector<int32_t>& ids, int ctx, int stride, int64_t* count) {
    double sum = 0;
    *count = 0;
    m.prepare(1, ctx, false);
    size_t prev_end = 0;
    for (size_t begin = 0; begin < ids.size(); begin += size_t(stride)) {
        size_t end = std::min(begin + size_t(ctx), ids.size());
        std::vector<int32_t> toks(ids.begin() + long(begin), ids.begin() + long(end)), targets(toks.size(), -100);
        size_t first_new = std::max(prev_end, begin + 1);  // label index (in ids) of the first scored token
        for (size_t j = first_new; j < end; j++) targets[j - begin - 1] = ids[j];
        Batch b;
        b.B = 1, b.T = int(toks.size()), b.tokens = toks.data(), b.targets = targets.data();
        int64_t c = 0;
        sum += m.forward_loss(b, &c);
        *count += c;
        prev_end = end;
        if (end == ids.size()) break;
    }
    return sum / double(*count);
}

void check_text_eval(const std::string& dir, const std::string& text, const std::string& adapter) {
    std::string tdir = make_temp_dir("eval-text"), file = tdir + "/t.txt";
    std::ofstream(file, std::ios::binary) << text;
    auto [model, tok] = load(dir);
    if (!adapter.empty()) load_peft_adapter(*model, adapter);
    std::vector<int32_t> ids;
    if (tok->adds_bos() && tok->bos_id() >= 0) ids.push_back(tok->bos_id());
    auto body = tok->encode(text, false);
    ids.insert(ids.end(), body.begin(), body.end());
    std::string ids_file = tdir + "/ids.txt";
    {
        std::ofstream f(ids_file);
        for (int32_t id : ids) f << id << " ";
    }
    const std::string ad = adapter.empty() ? "" : " --adapter " + adapter;
    for (auto [ctx, stride] : {std::pair{64, 64}, std::pair{64, 24}}) {
        int64_t count = 0;
        double want = manual_window_loss(*model, ids, ctx, stride, &count);
        const std::string w = " --ctx " + std::to_string(ctx) + " --stride " + std::to_string(stride) + " --json";
        for (const std::string& cmd : {"eval " + dir + ad + " --text " + file + w,
                                       "perplexity " + dir + ad + " --text " + file + w,
                                       "perplexity " + dir + ad + " --ids " + ids_file + w}) {
            nlohmann::json j = run_json(cmd);
            ASSERT_TRUE(j.contains("loss")) << cmd;
            // The same f32 forward on the same windows; %.6f printing bounds the difference.
            EXPECT_NEAR(j["loss"].get<double>(), want, 2e-6 + 1e-6 * want) << cmd;
            EXPECT_NEAR(j["ppl"].get<double>(), std::exp(want), 1e-5 * std::exp(want)) << cmd;
            EXPECT_EQ(j["tokens"].get<int64_t>(), count) << cmd;
            EXPECT_EQ(j["stride"].get<int>(), stride) << cmd;
        }
        if (stride < ctx) {
            EXPECT_EQ(count, int64_t(ids.size()) - 1) << "overlapping windows score every token but the first";
        }
    }
}

TEST(Eval, TextLossEqualsForwardLossByHand) {
    std::string text;
    for (int i = 0; i < 12; i++) text += "The quick brown fox " + std::to_string(i) + " jumps over the lazy dog.\n";
    check_text_eval(byte_model(), text, "");
}

TEST(Eval, Stories260KTextLossEqualsForwardLossByHand) {
    TUNER_REQUIRE_SHARED_DATA(data);
    check_text_eval(stories_dir(), read_file(data + "/text/input.txt").substr(0, 1500), "");
}

TEST(Eval, TextLossWithAnAdapter) {
    std::string adir = make_temp_dir("eval-adapter") + "/adapter";
    {
        auto [model, tok] = load(byte_model());
        LoraConfig lc;
        lc.r = 2;
        lc.target_modules = {"q_proj", "v_proj"};
        model->enable_lora(lc);
        for (LoraAdapter* ad : model->adapters())
            for (int64_t i = 0; i < ad->B.value.numel(); i++) ad->B.value.f32()[i] = 0.3f * float((i % 7) - 3);
        save_peft_adapter(*model, adir, byte_model());
    }
    std::string text(300, 'a');
    for (size_t i = 0; i < text.size(); i++) text[i] = char('a' + (i * 7) % 26);
    check_text_eval(byte_model(), text, adir);
    // ... and the adapter changes the loss.
    std::string file = make_temp_dir("eval-adapter-t") + "/t.txt";
    std::ofstream(file) << text;
    double with = run_json("eval " + byte_model() + " --adapter " + adir + " --text " + file + " --json")["loss"];
    double without = run_json("eval " + byte_model() + " --text " + file + " --json")["loss"];
    EXPECT_GT(std::fabs(with - without), 1e-4);
}

TEST(Eval, InstructionDataCountsOnlyTrainedTokens) {
    std::string dir = make_temp_dir("eval-data"), file = dir + "/d.jsonl";
    std::vector<std::pair<std::string, std::string>> recs = {
        {"Say hi", "hi"}, {"Count to three", "one two three"}, {"Name a colour", "blue"}};
    {
        std::ofstream f(file);
        for (auto& [q, a] : recs) f << nlohmann::json{{"instruction", q}, {"output", a}}.dump() << "\n";
    }
    auto [model, tok] = load(byte_model());
    const ChatTemplate& t = get_chat_template("chatml");
    EncodeOptions enc = encode_options_for(*tok, -1);
    double sum = 0;
    int64_t count = 0;
    model->prepare(1, 128, false);
    for (auto& [q, a] : recs) {
        Record r;
        r.turns = {Turn{"", q, a, true}};
        std::vector<int32_t> toks, labels;
        encode_chat(r, t, *tok, enc, &toks, &labels);
        std::vector<int32_t> targets(toks.size(), -100);
        for (size_t i = 0; i + 1 < toks.size(); i++) targets[i] = labels[i + 1];
        Batch b;
        b.B = 1, b.T = int(toks.size()), b.tokens = toks.data(), b.targets = targets.data();
        int64_t c = 0;
        sum += model->forward_loss(b, &c);
        count += c;
    }
    for (std::string batch : {"1", "2"}) {
        nlohmann::json j = run_json("eval " + byte_model() + " --data " + file + " --ctx 128 --batch " + batch + " --json");
        ASSERT_TRUE(j.contains("loss"));
        EXPECT_EQ(j["tokens"].get<int64_t>(), count);
        EXPECT_EQ(j["samples"].get<int64_t>(), 3);
        EXPECT_EQ(j["template"], "chatml");
        // Packed rows (attention kept inside samples) against one sample per forward: the same
        // sums in another order, f32.
        EXPECT_NEAR(j["loss"].get<double>(), sum / double(count), 1e-4);
    }
    std::string out;
    EXPECT_EQ(0, run_command(tuner_exe() + " eval " + byte_model() + " --data " + file + " --ctx 128", &out));
    EXPECT_CONTAINS(out, "perplexity");
    EXPECT_CONTAINS(out, "template chatml");
}

TEST(Eval, ConfigValidationDataAndTheTrainedAdapter) {
    std::string dir = make_temp_dir("eval-config"), data = dir + "/d.jsonl", cfg = dir + "/c.yaml";
    {
        std::ofstream f(data);
        for (int i = 0; i < 6; i++)
            f << nlohmann::json{{"instruction", "q" + std::to_string(i)}, {"output", "answer " + std::to_string(i)}}.dump()
              << "\n";
    }
    std::ofstream(cfg) << "model: " << byte_model() << "\noutput_dir: " << dir << "/out\n"
                       << "data:\n  train: [{path: " << data << "}]\n  eval: [{path: " << data
                       << "}]\n  max_length: 64\n";
    nlohmann::json j = run_json("eval " + cfg + " --json");
    nlohmann::json k = run_json("eval " + byte_model() + " --data " + data + " --ctx 64 --json");
    EXPECT_NEAR(j["loss"].get<double>(), k["loss"].get<double>(), 1e-5);
    EXPECT_EQ(j["tokens"], k["tokens"]);
    // A trained adapter in output_dir/adapter is what gets evaluated (unless --base).
    {
        auto [model, tok] = load(byte_model());
        LoraConfig lc;
        lc.r = 2;
        model->enable_lora(lc);
        for (LoraAdapter* ad : model->adapters())
            for (int64_t i = 0; i < ad->B.value.numel(); i++) ad->B.value.f32()[i] = 0.2f * float((i % 5) - 2);
        save_peft_adapter(*model, dir + "/out/adapter", byte_model());
    }
    nlohmann::json trained = run_json("eval " + cfg + " --json");
    nlohmann::json with = run_json("eval " + byte_model() + " --adapter " + dir + "/out/adapter --data " + data +
                                   " --ctx 64 --json");
    EXPECT_NEAR(trained["loss"].get<double>(), with["loss"].get<double>(), 1e-5);
    EXPECT_GT(std::fabs(trained["loss"].get<double>() - k["loss"].get<double>()), 1e-4);
    EXPECT_NEAR(run_json("eval " + cfg + " --base --json")["loss"].get<double>(), k["loss"].get<double>(), 1e-5);
    std::string out;
    std::ofstream(dir + "/noeval.yaml") << "model: " << byte_model() << "\noutput_dir: " << dir
                                        << "/o2\ndata:\n  train: [{path: " << data << "}]\n";
    EXPECT_EQ(1, run_command(tuner_exe() + " eval " + dir + "/noeval.yaml", &out));
    EXPECT_CONTAINS(out, "no validation data");
}

TEST(Eval, BadArguments) {
    std::string out;
    EXPECT_EQ(1, run_command(tuner_exe() + " eval " + byte_model(), &out));
    EXPECT_CONTAINS(out, "--text");
    std::string file = make_temp_dir("eval-bad") + "/t.txt";
    std::ofstream(file) << "some text here";
    EXPECT_EQ(1, run_command(tuner_exe() + " eval " + byte_model() + " --text " + file + " --ctx 8 --stride 9", &out));
    EXPECT_CONTAINS(out, "--stride 9");
    EXPECT_EQ(1, run_command(tuner_exe() + " perplexity " + byte_model(), &out));
    EXPECT_CONTAINS(out, "--ids FILE or --text FILE");
}
