// safetensors reader/writer: round trips, every kind of corrupt or lying header, sharded
// models, and the real stories260K file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "testing.h"

using namespace tuner;
using tuner::testing::error_of;

namespace {


void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good());
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string le64(uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[size_t(i)] = char(uint8_t(n >> (8 * i)));
    return s;
}

// A safetensors file made by hand: length prefix, header text, then data_size zero bytes.
std::string make_file(const std::string& header, size_t data_size) {
    return le64(header.size()) + header + std::string(data_size, '\0');
}

bool exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

class SafetensorsCorrupt : public ::testing::Test {
  protected:
    void SetUp() override { dir_ = tuner::testing::make_temp_dir("safetensors-corrupt"); }
    // Writes the header + data into a file named after the test case and returns the error.
    std::string open_error(const std::string& name, const std::string& header, size_t data_size) {
        return open_error_bytes(name, make_file(header, data_size));
    }
    std::string open_error_bytes(const std::string& name, const std::string& bytes) {
        path_ = dir_ + "/" + name + ".safetensors";
        write_bytes(path_, bytes);
        std::string msg = error_of([&] { SafetensorsFile f(path_); });
        EXPECT_CONTAINS(msg, "[safetensors] " + path_ + ": ");
        return msg;
    }
    std::string dir_, path_;
};

}  // namespace

// ---- round trips ---------------------------------------------------------------------------

TEST(Safetensors, WriterReaderRoundTrip) {
    std::string dir = tuner::testing::make_temp_dir("safetensors-rt");
    std::string path = dir + "/model.safetensors";

    std::vector<float> a = tuner::testing::random_floats(6, 1);
    std::vector<uint16_t> b = {0x3c00, 0xc000, 0x7bff, 0x0001};  // f16: 1, -2, 65504, tiny
    std::vector<uint16_t> c = {f32_to_bf16(1.5f), f32_to_bf16(-3.0f), f32_to_bf16(1e-3f), 0x7f80};
    std::vector<int32_t> d = {7, -1, 2147483647};
    {
        SafetensorsWriter w(path, {{"step", "10"}, {"note", "hello \"quoted\""}});
        w.declare("a", DType::F32, {2, 3});
        w.declare("b.f16", DType::F16, {4});
        w.declare("c.bf16", DType::BF16, {2, 2});
        w.declare("empty", DType::F32, {0, 5});
        w.declare("d", DType::I32, {3});
        w.write("a", a.data());
        w.write("b.f16", b.data());
        w.write("c.bf16", c.data());
        w.write("empty", nullptr);
        w.write("d", d.data());
        EXPECT_TRUE(exists(path + ".tmp"));
        EXPECT_FALSE(exists(path));
        w.finish();
    }
    EXPECT_TRUE(exists(path));
    EXPECT_FALSE(exists(path + ".tmp"));

    // The data section starts 8-byte aligned (header padded with spaces).
    std::string raw = read_bytes(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | uint8_t(raw[size_t(i)]);
    EXPECT_EQ((8 + n) % 8, 0u);
    EXPECT_EQ(raw.size(), 8 + n + 24 + 8 + 8 + 0 + 12);
    auto header = nlohmann::json::parse(raw.substr(8, n));
    EXPECT_EQ(header["__metadata__"]["format"], "pt");
    EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json::array({0, 24}));
    EXPECT_EQ(header["d"]["data_offsets"], nlohmann::json::array({40, 52}));

    SafetensorsFile f(path);
    ASSERT_EQ(f.tensors().size(), 5u);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.metadata().at("step"), "10");
    EXPECT_EQ(f.metadata().at("note"), "hello \"quoted\"");
    // In file (declaration) order; the zero-size tensor sits at offset 40 before "d".
    std::vector<std::string> order;
    for (const auto& t : f.tensors()) order.push_back(t.name);
    EXPECT_EQ(order, (std::vector<std::string>{"a", "b.f16", "c.bf16", "empty", "d"}));

    const SafetensorsTensor* ta = f.find("a");
    ASSERT_NE(ta, nullptr);
    EXPECT_EQ(ta->dtype, DType::F32);
    EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(ta->nbytes, 24u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ta->data) % 8, 0u);
    EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
    Tensor v = ta->view();
    EXPECT_EQ(v.ndim, 2);
    EXPECT_EQ(v.shape[0], 2);
    EXPECT_EQ(v.shape[1], 3);
    EXPECT_EQ(v.f32()[5], a[5]);

    const SafetensorsTensor* tb = f.find("b.f16");
    ASSERT_NE(tb, nullptr);
    EXPECT_EQ(tb->dtype, DType::F16);
    EXPECT_EQ(std::memcmp(tb->data, b.data(), 8), 0);
    EXPECT_EQ(f16_to_f32(reinterpret_cast<const uint16_t*>(tb->data)[2]), 65504.0f);

    const SafetensorsTensor* tc = f.find("c.bf16");
    ASSERT_NE(tc, nullptr);
    EXPECT_EQ(tc->dtype, DType::BF16);
    EXPECT_EQ(tc->shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(std::memcmp(tc->data, c.data(), 8), 0);

    const SafetensorsTensor* te = f.find("empty");
    ASSERT_NE(te, nullptr);
    EXPECT_EQ(te->nbytes, 0u);
    EXPECT_EQ(te->shape, (std::vector<int64_t>{0, 5}));
    EXPECT_EQ(te->view().numel(), 0);

    const SafetensorsTensor* td = f.find("d");
    ASSERT_NE(td, nullptr);
    EXPECT_EQ(td->dtype, DType::I32);
    EXPECT_EQ(std::memcmp(td->data, d.data(), 12), 0);

    EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(Safetensors, WriterNoTensors) {
    std::string path = tuner::testing::make_temp_dir("safetensors-empty") + "/empty.safetensors";
    SafetensorsWriter w(path);
    w.finish();
    SafetensorsFile f(path);
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(Safetensors, WriterWithoutFinishRemovesTemporary) {
    std::string dir = tuner::testing::make_temp_dir("safetensors-abort");
    std::string path = dir + "/x.safetensors";
    std::vector<float> a(4, 1.0f);
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::F32, {4});
        w.declare("b", DType::F32, {4});
        w.write("a", a.data());
        EXPECT_TRUE(exists(path + ".tmp"));
    }  // destroyed half-way, e.g. by an exception
    EXPECT_FALSE(exists(path + ".tmp"));
    EXPECT_FALSE(exists(path));
}

TEST(Safetensors, WriterKeepsOldFileUntilFinish) {
    std::string dir = tuner::testing::make_temp_dir("safetensors-keep");
    std::string path = dir + "/x.safetensors";
    write_bytes(path, "previous contents");
    std::vector<float> a(4, 1.0f);
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::F32, {4});
        w.write("a", a.data());
        EXPECT_EQ(read_bytes(path), "previous contents");
    }
    EXPECT_EQ(read_bytes(path), "previous contents");
}

TEST(Safetensors, WriterDiskFullIsAnError) {
    if (!exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
    std::string dir = tuner::testing::make_temp_dir("safetensors-full");
    std::string path = dir + "/x.safetensors";
    // The temporary file is a link to /dev/full: every write that reaches it fails with ENOSPC.
    ASSERT_EQ(symlink("/dev/full", (path + ".tmp").c_str()), 0);
    std::vector<float> a(1 << 16, 1.0f);
    std::string msg = error_of([&] {
        SafetensorsWriter w(path);
        w.declare("a", DType::F32, {int64_t(a.size())});
        w.write("a", a.data());
        w.finish();
    });
    EXPECT_CONTAINS(msg, "[safetensors] " + path + ".tmp: write failed");
    EXPECT_CONTAINS(msg, "No space left on device");
    EXPECT_FALSE(exists(path));
}

TEST(Safetensors, WriterDeathOnOutOfOrderWrite) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    std::string path = tuner::testing::make_temp_dir("safetensors-order") + "/x.safetensors";
    EXPECT_DEATH(
        {
            SafetensorsWriter w(path);
            float x = 0;
            w.declare("a", DType::F32, {1});
            w.declare("b", DType::F32, {1});
            w.write("b", &x);
        },
        "declaration order");
}

TEST(Safetensors, ParseHeaderDirectly) {
    std::string h =
        R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
        R"("a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"__metadata__":{"k":"v"}})";
    SafetensorsHeader hdr = parse_safetensors_header(h.data(), h.size(), 16, "mem");
    ASSERT_EQ(hdr.tensors.size(), 2u);
    EXPECT_EQ(hdr.tensors[0].name, "a");  // sorted by offset
    EXPECT_EQ(hdr.tensors[1].name, "b");
    EXPECT_EQ(hdr.offsets, (std::vector<size_t>{0, 8}));
    EXPECT_EQ(hdr.tensors[0].data, nullptr);
    EXPECT_EQ(hdr.metadata.at("k"), "v");
    // Trailing spaces (the padding the format allows) are fine; gaps between tensors too.
    std::string padded = R"({"x":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}     )";
    hdr = parse_safetensors_header(padded.data(), padded.size(), 100, "mem");
    ASSERT_EQ(hdr.tensors.size(), 1u);
    EXPECT_TRUE(hdr.tensors[0].shape.empty());  // a scalar
    EXPECT_EQ(hdr.tensors[0].nbytes, 4u);
}

TEST(Safetensors, ZeroSizeTensorsAreLegal) {
    // Zero-size tensors anywhere, including at the start of or inside another tensor's bytes.
    std::string h =
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
        R"("z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
        R"("z2":{"dtype":"BF16","shape":[3,0,1000000],"data_offsets":[4,4]},)"
        R"("z3":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})";
    SafetensorsHeader hdr = parse_safetensors_header(h.data(), h.size(), 8, "mem");
    EXPECT_EQ(hdr.tensors.size(), 4u);
}

// ---- corrupt and lying files ---------------------------------------------------------------

TEST_F(SafetensorsCorrupt, ShorterThanEightBytes) {
    std::string msg = open_error_bytes("short", "abc");
    EXPECT_CONTAINS(msg, "file is 3 bytes, shorter than the 8-byte header length");
    msg = open_error_bytes("empty", "");
    EXPECT_CONTAINS(msg, "file is 0 bytes");
}

TEST_F(SafetensorsCorrupt, MissingFile) {
    std::string path = dir_ + "/absent.safetensors";
    std::string msg = error_of([&] { SafetensorsFile f(path); });
    EXPECT_CONTAINS(msg, "[safetensors] " + path + ": cannot open (No such file or directory)");
}

TEST_F(SafetensorsCorrupt, HeaderLengthPastFileEnd) {
    std::string msg = open_error_bytes("len", le64(100) + "{}");
    EXPECT_CONTAINS(msg, "header length 100 is larger than the rest of the file (2 bytes)");
    msg = open_error_bytes("len63", le64(uint64_t(1) << 63) + "{}");
    EXPECT_CONTAINS(msg, "header length 9223372036854775808 is larger than the rest of the file (2 bytes)");
    msg = open_error_bytes("lenmax", le64(UINT64_MAX) + "{}");
    EXPECT_CONTAINS(msg, "header length 18446744073709551615 is larger");
}

TEST_F(SafetensorsCorrupt, InvalidJson) {
    std::string msg = open_error("json", R"({"a": {"dtype": "F32",)", 0);
    EXPECT_CONTAINS(msg, "header is not valid JSON");
    EXPECT_CONTAINS(msg, "parse error");  // nlohmann's message with its position
    msg = open_error("nul", std::string("{}\0\0\0\0\0\0", 8), 0);
    EXPECT_CONTAINS(msg, "header is not valid JSON");
    msg = open_error("utf8", "{\"\xff\":{}}", 0);
    EXPECT_CONTAINS(msg, "header is not valid JSON");
}

TEST_F(SafetensorsCorrupt, HeaderNotAnObject) {
    std::string msg = open_error("array", "[1, 2]", 0);
    EXPECT_CONTAINS(msg, "header is a JSON array, not an object");
}

TEST_F(SafetensorsCorrupt, EntryNotAnObject) {
    std::string msg = open_error("entry", R"({"w": [1, 2]})", 0);
    EXPECT_CONTAINS(msg, "tensor 'w': entry should be an object, got array");
}

TEST_F(SafetensorsCorrupt, MissingFields) {
    EXPECT_CONTAINS(open_error("nodtype", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "tensor 'w': missing 'dtype'");
    EXPECT_CONTAINS(open_error("noshape", R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), "tensor 'w': missing 'shape'");
    EXPECT_CONTAINS(open_error("nooffs", R"({"w":{"dtype":"F32","shape":[1]}})", 4), "tensor 'w': missing 'data_offsets'");
}

TEST_F(SafetensorsCorrupt, IllTypedFields) {
    EXPECT_CONTAINS(open_error("dtype", R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
                    "tensor 'w': 'dtype' should be a string, got integer");
    EXPECT_CONTAINS(open_error("shape", R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", 4),
                    "tensor 'w': 'shape' should be an array, got string");
    EXPECT_CONTAINS(open_error("dimf", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4),
                    "tensor 'w': shape [1.5] has a dimension that is not an integer");
    EXPECT_CONTAINS(open_error("offs1", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4),
                    "tensor 'w': 'data_offsets' should be an array [begin, end], got [0]");
    EXPECT_CONTAINS(open_error("offs3", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":{"a":1}}})", 4),
                    "'data_offsets' should be an array [begin, end]");
    EXPECT_CONTAINS(open_error("offstr", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}})", 4),
                    "tensor 'w': 'data_offsets' [\"0\",4] has an offset that is not an integer");
    EXPECT_CONTAINS(open_error("offneg", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,4]}})", 4),
                    "tensor 'w': 'data_offsets' [-4,4] has an offset that is negative");
}

TEST_F(SafetensorsCorrupt, UnknownDtype) {
    std::string msg = open_error("dt", R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,4]}})", 4);
    EXPECT_CONTAINS(msg, "tensor 'w': unknown dtype 'Q4_K'");
}

TEST_F(SafetensorsCorrupt, NegativeDimension) {
    std::string msg = open_error("neg", R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}})", 4);
    EXPECT_CONTAINS(msg, "tensor 'w': shape [2,-1] has a dimension that is negative");
}

TEST_F(SafetensorsCorrupt, ShapeOverflow) {
    // 2^32 * 2^32 elements overflow 64 bits; 2^62 F32 elements overflow in the byte count.
    std::string msg = open_error(
        "ovf", R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4);
    EXPECT_CONTAINS(msg, "tensor 'w': shape [4294967296,4294967296] overflows 64 bits");
    msg = open_error("ovf2", R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4);
    EXPECT_CONTAINS(msg, "tensor 'w': shape [4611686018427387904] overflows 64 bits");
    msg = open_error("ovf3", R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})", 4);
    EXPECT_CONTAINS(msg, "tensor 'w': shape [18446744073709551615] has a dimension that is too large");
}

TEST_F(SafetensorsCorrupt, BeginAfterEnd) {
    std::string msg = open_error("order", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8);
    EXPECT_CONTAINS(msg, "tensor 'w': data_offsets begin 8 is after end 4");
}

TEST_F(SafetensorsCorrupt, SizeMismatch) {
    std::string msg = open_error("size", R"({"w":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,32]}})", 32);
    EXPECT_CONTAINS(msg, "tensor 'w': data_offsets give 32 bytes but BF16 [3,5] needs 30 bytes");
}

TEST_F(SafetensorsCorrupt, RangePastDataEnd) {
    std::string msg = open_error("past", R"({"w":{"dtype":"F32","shape":[203],"data_offsets":[0,812]}})", 640);
    EXPECT_CONTAINS(msg, "tensor 'w': ends at byte 812 past the file end (640)");
}

TEST_F(SafetensorsCorrupt, OverlappingRanges) {
    std::string msg = open_error("overlap",
                                 R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                 R"("second":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                 16);
    EXPECT_CONTAINS(msg, "tensor 'second': bytes [8, 16) overlap tensor 'first' at [0, 16)");
    // Same range twice.
    msg = open_error("same",
                     R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("y":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                     4);
    EXPECT_CONTAINS(msg, "overlap tensor 'x'");
    // A small tensor inside a big one that is not its neighbour in offset order.
    msg = open_error("inside",
                     R"({"big":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},)"
                     R"("mid":{"dtype":"U8","shape":[10],"data_offsets":[20,30]},)"
                     R"("late":{"dtype":"U8","shape":[10],"data_offsets":[50,60]}})",
                     100);
    EXPECT_CONTAINS(msg, "tensor 'mid': bytes [20, 30) overlap tensor 'big' at [0, 100)");
}

TEST_F(SafetensorsCorrupt, DuplicateNames) {
    std::string msg = open_error("dup",
                                 R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                 R"("v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                 R"("w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                 12);
    EXPECT_CONTAINS(msg, "tensor 'w': appears twice in the header");
    // The same key inside different entries is not a duplicate.
    std::string ok = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
    EXPECT_EQ(parse_safetensors_header(ok.data(), ok.size(), 8, "mem").tensors.size(), 2u);
}

TEST_F(SafetensorsCorrupt, BadMetadata) {
    EXPECT_CONTAINS(open_error("meta", R"({"__metadata__":["pt"]})", 0),
                    "__metadata__ should be an object, got array");
    EXPECT_CONTAINS(open_error("metaval", R"({"__metadata__":{"format":"pt","step":10}})", 0),
                    "__metadata__ value of 'step' should be a string, got integer");
}

TEST_F(SafetensorsCorrupt, TruncatedFile) {
    std::string path = dir_ + "/truncated.safetensors";
    std::vector<float> a(64, 0.5f);
    {
        SafetensorsWriter w(path);
        w.declare("a", DType::F32, {8, 8});
        w.write("a", a.data());
        w.finish();
    }
    std::string bytes = read_bytes(path);
    bytes.resize(bytes.size() - 10);  // a download cut short
    std::string msg = open_error_bytes("truncated", bytes);
    EXPECT_CONTAINS(msg, "tensor 'a': ends at byte 256 past the file end (246)");
    // Cut inside the header.
    msg = open_error_bytes("truncated_header", bytes.substr(0, 20));
    EXPECT_CONTAINS(msg, "is larger than the rest of the file (12 bytes)");
}

TEST(Safetensors, ViewOfHighRankTensorIsAnError) {
    std::string h = R"({"conv3d":{"dtype":"U8","shape":[1,1,1,1,2],"data_offsets":[0,2]}})";
    SafetensorsHeader hdr = parse_safetensors_header(h.data(), h.size(), 2, "mem");
    ASSERT_EQ(hdr.tensors.size(), 1u);
    std::string msg = error_of([&] { hdr.tensors[0].view(); });
    EXPECT_CONTAINS(msg, "tensor 'conv3d' has 5 dimensions");
}

// ---- models: single file and sharded ------------------------------------------------------

namespace {
void write_shard(const std::string& path, const std::vector<std::pair<std::string, std::vector<float>>>& tensors) {
    SafetensorsWriter w(path);
    for (const auto& [name, v] : tensors) w.declare(name, DType::F32, {int64_t(v.size())});
    for (const auto& [name, v] : tensors) w.write(name, v.data());
    w.finish();
}
}  // namespace

TEST(SafetensorsModel, SingleFile) {
    std::string dir = tuner::testing::make_temp_dir("model-single");
    write_shard(dir + "/model.safetensors", {{"x", {1, 2}}, {"y", {3}}});
    SafetensorsModel m(dir);
    EXPECT_EQ(m.names(), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(m.get("y").view().f32()[0], 3.0f);
    EXPECT_EQ(m.find("z"), nullptr);
    std::string msg = error_of([&] { m.get("z"); });
    EXPECT_CONTAINS(msg, "[model] " + dir + ": no tensor 'z'");
}

TEST(SafetensorsModel, Sharded) {
    std::string dir = tuner::testing::make_temp_dir("model-sharded");
    write_shard(dir + "/model-00001-of-00002.safetensors", {{"embed", {1, 2, 3}}, {"layer0", {4, 5}}});
    write_shard(dir + "/model-00002-of-00002.safetensors", {{"layer1", {6}}, {"head", {7, 8}}});
    write_bytes(dir + "/model.safetensors.index.json", R"({
      "metadata": {"total_size": 32},
      "weight_map": {
        "embed": "model-00001-of-00002.safetensors",
        "layer0": "model-00001-of-00002.safetensors",
        "layer1": "model-00002-of-00002.safetensors",
        "head": "model-00002-of-00002.safetensors"
      }})");
    SafetensorsModel m(dir);
    EXPECT_EQ(m.dir(), dir);
    EXPECT_EQ(m.names(), (std::vector<std::string>{"embed", "head", "layer0", "layer1"}));
    EXPECT_EQ(m.get("embed").view().f32()[2], 3.0f);
    EXPECT_EQ(m.get("layer0").view().f32()[1], 5.0f);
    EXPECT_EQ(m.get("layer1").view().f32()[0], 6.0f);
    EXPECT_EQ(m.get("head").view().f32()[1], 8.0f);
    EXPECT_EQ(m.get("head").shape, (std::vector<int64_t>{2}));
}

TEST(SafetensorsModel, MissingShard) {
    std::string dir = tuner::testing::make_temp_dir("model-missing-shard");
    write_shard(dir + "/a.safetensors", {{"x", {1}}});
    write_bytes(dir + "/model.safetensors.index.json",
                R"({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})");
    std::string msg = error_of([&] { SafetensorsModel m(dir); });
    EXPECT_CONTAINS(msg, "[model] " + dir + "/model.safetensors.index.json: shard 'b.safetensors'");
    EXPECT_CONTAINS(msg, "does not exist");
}

TEST(SafetensorsModel, TensorAbsentFromItsShard) {
    std::string dir = tuner::testing::make_temp_dir("model-absent");
    write_shard(dir + "/a.safetensors", {{"x", {1}}});
    write_shard(dir + "/b.safetensors", {{"y", {1}}});
    write_bytes(dir + "/model.safetensors.index.json",
                R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})");
    std::string msg = error_of([&] { SafetensorsModel m(dir); });
    EXPECT_CONTAINS(msg, "[model] " + dir + "/model.safetensors.index.json: tensor 'y' is listed in shard "
                         "'a.safetensors' but that file does not contain it");
}

TEST(SafetensorsModel, BadIndex) {
    std::string dir = tuner::testing::make_temp_dir("model-bad-index");
    std::string index = dir + "/model.safetensors.index.json";
    write_bytes(index, R"({"weight_map": )");
    std::string msg = error_of([&] { SafetensorsModel m(dir); });
    EXPECT_CONTAINS(msg, "[model] " + index + ": ");
    EXPECT_CONTAINS(msg, "parse error");
    write_bytes(index, R"({"metadata": {}})");
    EXPECT_CONTAINS(error_of([&] { SafetensorsModel m(dir); }), "[model] " + index + ": missing key 'weight_map'");
    write_bytes(index, R"({"weight_map": {"x": 3}})");
    EXPECT_CONTAINS(error_of([&] { SafetensorsModel m(dir); }),
                    "[model] " + index + ": weight_map entry 'x' should be a string, got integer");
}

TEST(SafetensorsModel, CorruptShardNamesTheShard) {
    std::string dir = tuner::testing::make_temp_dir("model-corrupt-shard");
    write_bytes(dir + "/a.safetensors", make_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4));
    write_bytes(dir + "/model.safetensors.index.json", R"({"weight_map": {"x": "a.safetensors"}})");
    std::string msg = error_of([&] { SafetensorsModel m(dir); });
    EXPECT_CONTAINS(msg, "[safetensors] " + dir + "/a.safetensors: tensor 'x': ends at byte 8 past the file end (4)");
}

TEST(SafetensorsModel, NoWeights) {
    std::string dir = tuner::testing::make_temp_dir("model-none");
    std::string msg = error_of([&] { SafetensorsModel m(dir); });
    EXPECT_EQ(msg, "[model] " + dir + ": no model.safetensors or model.safetensors.index.json");
}

// ---- the real thing ------------------------------------------------------------------------

TEST(SafetensorsReal, Stories260K) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = data + "/stories260K/hf";
    SafetensorsModel m(dir);
    // 5 layers x 9 tensors + embedding + final norm; the head is tied (no lm_head.weight).
    EXPECT_EQ(m.names().size(), 47u);
    EXPECT_EQ(m.find("lm_head.weight"), nullptr);
    const auto& emb = m.get("model.embed_tokens.weight");
    EXPECT_EQ(emb.dtype, DType::F32);
    EXPECT_EQ(emb.shape, (std::vector<int64_t>{512, 64}));
    EXPECT_EQ(emb.nbytes, 512u * 64 * 4);
    EXPECT_EQ(m.get("model.norm.weight").shape, (std::vector<int64_t>{64}));
    for (int il = 0; il < 5; il++) {
        std::string p = "model.layers." + std::to_string(il) + ".";
        EXPECT_EQ(m.get(p + "input_layernorm.weight").shape, (std::vector<int64_t>{64}));
        EXPECT_EQ(m.get(p + "post_attention_layernorm.weight").shape, (std::vector<int64_t>{64}));
        EXPECT_EQ(m.get(p + "self_attn.q_proj.weight").shape, (std::vector<int64_t>{64, 64}));
        EXPECT_EQ(m.get(p + "self_attn.k_proj.weight").shape, (std::vector<int64_t>{32, 64}));
        EXPECT_EQ(m.get(p + "self_attn.v_proj.weight").shape, (std::vector<int64_t>{32, 64}));
        EXPECT_EQ(m.get(p + "self_attn.o_proj.weight").shape, (std::vector<int64_t>{64, 64}));
        EXPECT_EQ(m.get(p + "mlp.gate_proj.weight").shape, (std::vector<int64_t>{172, 64}));
        EXPECT_EQ(m.get(p + "mlp.up_proj.weight").shape, (std::vector<int64_t>{172, 64}));
        EXPECT_EQ(m.get(p + "mlp.down_proj.weight").shape, (std::vector<int64_t>{64, 172}));
        EXPECT_EQ(m.get(p + "mlp.down_proj.weight").dtype, DType::F32);
    }
    // Values are finite and not all zero; norms of a trained model are near 1.
    const float* norm = m.get("model.norm.weight").view().f32();
    double sum = 0;
    for (int i = 0; i < 64; i++) {
        EXPECT_TRUE(std::isfinite(norm[i]));
        sum += norm[i];
    }
    EXPECT_NE(sum, 0.0);

    SafetensorsFile f(dir + "/model.safetensors");
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.tensors().front().name, "model.embed_tokens.weight");
    EXPECT_EQ(f.tensors().back().name, "model.norm.weight");

    // Rewriting every tensor gives a file that reads back identically.
    std::string out = tuner::testing::make_temp_dir("stories-rewrite") + "/model.safetensors";
    {
        SafetensorsWriter w(out);
        for (const auto& t : f.tensors()) w.declare(t.name, t.dtype, t.shape);
        for (const auto& t : f.tensors()) w.write(t.name, t.data);
        w.finish();
    }
    SafetensorsFile g(out);
    ASSERT_EQ(g.tensors().size(), f.tensors().size());
    for (const auto& t : f.tensors()) {
        const SafetensorsTensor* u = g.find(t.name);
        ASSERT_NE(u, nullptr) << t.name;
        EXPECT_EQ(u->shape, t.shape);
        EXPECT_EQ(u->nbytes, t.nbytes);
        EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name;
    }
}

TEST(Safetensors, OverflowingShapeWithAZeroDimensionIsEmpty) {
    std::string h = R"({"z":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})";
    SafetensorsHeader hdr = parse_safetensors_header(h.data(), h.size(), 0, "mem");
    ASSERT_EQ(hdr.tensors.size(), 1u);
    EXPECT_EQ(hdr.tensors[0].nbytes, 0u);
}
