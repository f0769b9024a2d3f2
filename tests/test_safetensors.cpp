// safetensors reader/writer: format rules of merge_and_eval.md §C.4, checked byte by byte, and
// every kind of broken file refused with one line naming the file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/fs.h"

using namespace mf;

namespace {

// One directory per test: ctest runs the tests of this file in parallel processes.
std::string tmp(const std::string& name) {
  std::string dir = testing::TempDir() + "/mf_st/" + testing::UnitTest::GetInstance()->current_test_info()->name();
  make_dirs(dir);
  return dir + "/" + name;
}

// Builds a file by hand: 8-byte LE length + header + data. Independent of the writer under test.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

// Expect opening `bytes` to fail with a one-line message that names the file and contains `what`.
void expect_refused(const std::string& bytes, const std::string& what) {
  std::string path = tmp("bad.safetensors");
  write_file_atomic(path, bytes);
  try {
    SafetensorsFile::open(path);
    FAIL() << "accepted a broken file; expected: " << what;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace

TEST(Safetensors, ReadsHandWrittenFile) {
  // Two F32 values and one I64, laid out by hand.
  float f[2] = {1.5f, -2.0f};
  int64_t i = 7;
  std::string data(reinterpret_cast<char*>(f), 8);
  data.append(reinterpret_cast<char*>(&i), 8);
  std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"__metadata__":{"format":"pt","x":"y"}})";
  std::string path = tmp("hand.safetensors");
  write_file_atomic(path, raw_file(header, data));
  auto st = SafetensorsFile::open(path);
  ASSERT_EQ(st->tensors().size(), 2u);
  auto a = st->get("a");
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_EQ(a[0].item<float>(), 1.5f);
  EXPECT_EQ(a[1].item<float>(), -2.0f);
  auto b = st->get("b");
  EXPECT_EQ(b.dim(), 0);
  EXPECT_EQ(b.item<int64_t>(), 7);
  EXPECT_EQ(st->metadata().at("x"), "y");
}

TEST(Safetensors, WriterFollowsReferenceLayout) {
  std::string path = tmp("w.safetensors");
  auto f32 = torch::arange(6, torch::kFloat).reshape({2, 3});
  auto bf = torch::arange(4, torch::kFloat).to(torch::kBFloat16);
  auto i64 = torch::tensor({int64_t(1), int64_t(2)});
  auto u8 = torch::tensor({1, 2, 3}, torch::kUInt8);
  save_safetensors(path, {{"z_bf16", bf}, {"a_u8", u8}, {"m_f32", f32}, {"b_i64", i64}});
  std::string bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  std::string header = bytes.substr(8, n);
  // Space padding, compact JSON, metadata format=pt first.
  EXPECT_EQ(header.rfind(R"({"__metadata__":{"format":"pt"},)", 0), 0u) << header;
  EXPECT_EQ(header.find(": "), std::string::npos);
  // Descending alignment then name: I64 (8) < F32 (4) < BF16 (2) < U8 (1).
  size_t p_i64 = header.find("b_i64"), p_f32 = header.find("m_f32"), p_bf = header.find("z_bf16"),
         p_u8 = header.find("a_u8");
  EXPECT_LT(p_i64, p_f32);
  EXPECT_LT(p_f32, p_bf);
  EXPECT_LT(p_bf, p_u8);
  EXPECT_NE(header.find(R"("b_i64":{"dtype":"I64","shape":[2],"data_offsets":[0,16]})"), std::string::npos);
  EXPECT_NE(header.find(R"("m_f32":{"dtype":"F32","shape":[2,3],"data_offsets":[16,40]})"), std::string::npos);
  EXPECT_EQ(bytes.size(), 8 + n + 16 + 24 + 8 + 3);
  auto st = SafetensorsFile::open(path);
  EXPECT_TRUE(torch::equal(st->get("m_f32"), f32));
  EXPECT_TRUE(torch::equal(st->get("z_bf16"), bf));
  EXPECT_TRUE(torch::equal(st->get("b_i64"), i64));
  EXPECT_TRUE(torch::equal(st->get("a_u8"), u8));
  EXPECT_EQ(st->metadata().at("format"), "pt");
}

TEST(Safetensors, AllDtypesRoundTripBitExactly) {
  std::vector<std::pair<std::string, at::Tensor>> ts;
  auto base = torch::randn({3, 5});
  for (auto t : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                 at::kByte, at::kBool})
    ts.push_back({std::string("t_") + c10::toString(t), (base * 10).to(t)});
  ts.push_back({"empty", torch::zeros({0, 4})});
  ts.push_back({"scalar", torch::tensor(3.25)});
  std::string path = tmp("all.safetensors");
  save_safetensors(path, ts);
  auto st = SafetensorsFile::open(path);
  for (const auto& [name, t] : ts) {
    auto r = st->get(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
}

TEST(Safetensors, SharedStorageWrittenAsSeparateCopies) {
  auto w = torch::randn({4, 4});
  std::string path = tmp("tied.safetensors");
  save_safetensors(path, {{"embed", w}, {"lm_head", w}, {"row", w[1]}});
  auto st = SafetensorsFile::open(path);
  EXPECT_TRUE(torch::equal(st->get("embed"), w));
  EXPECT_TRUE(torch::equal(st->get("lm_head"), w));
  EXPECT_TRUE(torch::equal(st->get("row"), w[1]));
  EXPECT_EQ(st->tensors().back().end, uint64_t(2 * 16 * 4 + 4 * 4));  // three full copies
}

TEST(Safetensors, ZeroCopyTensorsAreWritableWithoutTouchingTheFile) {
  std::string path = tmp("cow.safetensors");
  auto w = torch::ones({256});
  save_safetensors(path, {{"w", w}});
  std::string before = read_file(path);
  {
    auto st = SafetensorsFile::open(path);
    auto t = st->get("w");
    t.mul_(3);  // private copy-on-write mapping
    EXPECT_EQ(t[0].item<float>(), 3.0f);
  }
  EXPECT_EQ(read_file(path), before);
}

// The pages of a tensor leave RSS when its last zero-copy view is freed (release_view), never
// while another view lives: a view's in-place changes survive a second view of the same tensor
// being dropped; its neighbour is untouched.
TEST(Safetensors, DroppingAViewKeepsTheOtherViewsChanges) {
  std::string path = tmp("views.safetensors");
  save_safetensors(path, {{"a", torch::ones({8192})}, {"w", torch::ones({16384})}});  // 64 KB: whole pages
  auto st = SafetensorsFile::open(path);
  at::Tensor kept = st->get("w");
  kept.mul_(5);
  st->get("w");  // a second view, freed at once
  EXPECT_TRUE(at::equal(kept, torch::full({16384}, 5.0f)));
  EXPECT_TRUE(at::equal(st->get("a"), torch::ones({8192})));
}

TEST(Safetensors, MisalignedDataIsCopied) {
  // A U8 first then an F32 at offset 1: the F32 is misaligned (MLX-style writers do this).
  float v = 4.5f;
  std::string data = std::string(1, '\x09') + std::string(reinterpret_cast<char*>(&v), 4);
  std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  std::string path = tmp("mis.safetensors");
  write_file_atomic(path, raw_file(header, data));
  auto st = SafetensorsFile::open(path);
  EXPECT_EQ(st->get("b")[0].item<float>(), 4.5f);
  EXPECT_EQ(st->get("a")[0].item<uint8_t>(), 9);
}

TEST(Safetensors, Float8IsUpcast) {
  // E4M3: 0x38 = 1.0, 0xC0 = -2.0, 0x01 = 2^-9 (smallest subnormal), 0x7E = 448 (max).
  // E5M2: 0x3C = 1.0, 0x7C = +inf, 0x01 = 2^-16.
  std::string data = "\x38\xC0\x01\x7E\x3C\x7C\x01";
  std::string header = R"({"e4":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]},"e5":{"dtype":"F8_E5M2","shape":[3],"data_offsets":[4,7]}})";
  std::string path = tmp("f8.safetensors");
  write_file_atomic(path, raw_file(header, data));
  auto st = SafetensorsFile::open(path);
  auto e4 = st->get("e4");
  EXPECT_EQ(e4.scalar_type(), at::kFloat);
  EXPECT_EQ(e4[0].item<float>(), 1.0f);
  EXPECT_EQ(e4[1].item<float>(), -2.0f);
  EXPECT_EQ(e4[2].item<float>(), std::ldexp(1.0f, -9));
  EXPECT_EQ(e4[3].item<float>(), 448.0f);
  auto e5 = st->get("e5");
  EXPECT_EQ(e5[0].item<float>(), 1.0f);
  EXPECT_TRUE(std::isinf(e5[1].item<float>()));
  EXPECT_EQ(e5[2].item<float>(), std::ldexp(1.0f, -16));
}

TEST(Safetensors, ConvertingGetReturnsRequestedDtype) {
  std::string path = tmp("conv.safetensors");
  auto w = torch::randn({64, 64});
  save_safetensors(path, {{"w", w}});
  auto st = SafetensorsFile::open(path);
  auto b = st->get("w", at::kBFloat16);
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(torch::equal(b, w.to(at::kBFloat16)));
  EXPECT_TRUE(torch::equal(st->get("w"), w));  // pages come back after release
}

const std::string kOkHeader = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST(SafetensorsBadInput, TruncatedBeforeLength) { expect_refused("\x05\x00\x00", "truncated"); }

TEST(SafetensorsBadInput, HeaderLengthBeyondFile) {
  std::string f = raw_file(kOkHeader, std::string(8, '\0'));
  f[0] = static_cast<char>(0xff);
  f[1] = static_cast<char>(0x7f);
  expect_refused(f, "runs past the end of the file");
}

TEST(SafetensorsBadInput, HeaderTooLarge) {
  std::string f(16, '\0');
  f[4] = 1;  // 2^32
  expect_refused(f, "exceeds the 100 MB limit");
}

TEST(SafetensorsBadInput, InvalidJson) { expect_refused(raw_file("{\"a\": [1,", ""), "not valid JSON"); }

TEST(SafetensorsBadInput, InvalidUtf8) {
  expect_refused(raw_file("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", ""),
                 "not valid JSON");
}

TEST(SafetensorsBadInput, TruncatedData) { expect_refused(raw_file(kOkHeader, std::string(5, '\0')), "truncated"); }

TEST(SafetensorsBadInput, TrailingBytes) {
  expect_refused(raw_file(kOkHeader, std::string(12, '\0')), "trailing bytes");
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          std::string(8, '\0')),
                 "overlaps");
}

TEST(SafetensorsBadInput, GappedOffsets) {
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                          std::string(12, '\0')),
                 "gap in data");
}

TEST(SafetensorsBadInput, ByteSizeDoesNotMatchShape) {
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
                 "needs 12");
}

TEST(SafetensorsBadInput, UnknownDtype) {
  expect_refused(raw_file(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                 "unknown dtype 'F33'");
}

TEST(SafetensorsBadInput, DuplicateNames) {
  expect_refused(raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          std::string(2, '\0')),
                 "duplicate tensor name 'a'");
}

TEST(SafetensorsBadInput, MissingFieldsAndWrongTypes) {
  expect_refused(raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "no dtype");
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                 "invalid shape");
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')),
                 "data_offsets");
  expect_refused(raw_file(R"([1,2])", ""), "not a JSON object");
  expect_refused(raw_file(R"({"__metadata__":{"format":1}})", ""), "__metadata__");
}

TEST(SafetensorsBadInput, ImpossiblyLargeShapeDoesNotOverflow) {
  expect_refused(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                          std::string(8, '\0')),
                 "impossibly large");
}

TEST(SafetensorsBadInput, MissingFileAndDirectory) {
  try {
    SafetensorsFile::open("/nonexistent/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/x.safetensors: no such file");
  }
  EXPECT_THROW(SafetensorsFile::open(testing::TempDir()), Error);
}
