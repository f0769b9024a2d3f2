// GGUF export driver: output checks, general.* keys, tensor types and encodings, and the
// streaming write (one tensor — one expert of a stacked tensor — in memory at a time).
#include "gguf/export.h"

#include <ATen/Parallel.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "gguf/export_internal.h"
#include "gguf/gguf_reader.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf::gguf {

OutType parse_outtype(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (n == "f32" || n == "fp32" || n == "float32") return OutType::f32;
  if (n == "f16" || n == "fp16" || n == "float16") return OutType::f16;
  if (n == "bf16" || n == "bfloat16") return OutType::bf16;
  if (n == "q8_0" || n == "q8") return OutType::q8_0;
  throw UsageError("--outtype: '" + name + "' is not supported (f32, f16, bf16, q8_0)");
}

const char* outtype_name(OutType t) {
  switch (t) {
    case OutType::f32: return "f32";
    case OutType::f16: return "f16";
    case OutType::bf16: return "bf16";
    case OutType::q8_0: return "q8_0";
  }
  return "?";
}

void check_gguf_output_path(const std::string& out, const std::vector<std::string>& inputs) {
  if (out.empty()) throw UsageError("--out: empty path");
  if (out.back() == '/' || is_directory(out))
    fail_file(out, "is a directory; --out names the .gguf file to write");
  struct stat st {};
  if (::stat(out.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) fail_file(out, "exists and is not a regular file (not overwritten)");
    if (!has_gguf_magic(out)) fail_file(out, "exists and is not a GGUF file (not overwritten)");
  } else if (::lstat(out.c_str(), &st) == 0) {
    fail_file(out, "is a dangling symbolic link (not followed)");
  }
  for (const auto& in : inputs)
    if (!in.empty() && same_path(out, in)) fail_file(out, "is the input (" + in + ")");
  const std::string dir = parent_dir(out);
  if (!dir.empty() && !is_directory(dir)) fail_file(out, "its directory does not exist");
}

void check_exportable(const ModelConfig& cfg) { (void)gguf_architecture(cfg); }

TensorType tensor_type_for(const TensorJob& job, OutType outtype) {
  if (job.keep_f32) return TensorType::F32;
  switch (outtype) {
    case OutType::f32: return TensorType::F32;
    case OutType::f16: return TensorType::F16;
    case OutType::bf16: return TensorType::BF16;
    case OutType::q8_0:
      if (job.shape.back() % 32 != 0) {
        log_info("GGUF: ", job.name, " has rows of ", job.shape.back(), " (not a multiple of 32): stored as F16");
        return TensorType::F16;
      }
      return TensorType::Q8_0;
  }
  return TensorType::F32;
}

namespace {

void sink_tensor(const at::Tensor& t, const Sink& sink) {
  sink(t.data_ptr(), static_cast<size_t>(t.numel()) * static_cast<size_t>(t.element_size()));
}

// ggml's quantize_row_q8_0_ref over a contiguous float buffer of whole blocks.
void quantize_q8_0(const float* x, int64_t n_blocks, uint8_t* out) {
  at::parallel_for(0, n_blocks, 1024, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* xb = x + b * 32;
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const uint16_t dh = c10::Half(d).x;  // round to nearest even, as GGML_FP32_TO_FP16
      uint8_t* ob = out + b * 34;
      std::memcpy(ob, &dh, 2);
      for (int j = 0; j < 32; ++j) ob[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(xb[j] * id)));
    }
  });
}

}  // namespace

void encode_tensor(const at::Tensor& t, TensorType type, const Sink& sink) {
  switch (type) {
    case TensorType::F32: return sink_tensor(t.to(at::kFloat).contiguous(), sink);
    case TensorType::F16: return sink_tensor(t.to(at::kHalf).contiguous(), sink);
    case TensorType::BF16: return sink_tensor(t.to(at::kBFloat16).contiguous(), sink);
    case TensorType::Q8_0: {
      const at::Tensor flat = t.contiguous().reshape({-1});
      const int64_t n = flat.numel();
      if (n % 32 != 0) fail("internal: Q8_0 tensor of " + std::to_string(n) + " elements");
      constexpr int64_t kChunk = int64_t(32) << 16;  // converted to fp32 a chunk at a time
      std::vector<uint8_t> buf;
      for (int64_t s = 0; s < n; s += kChunk) {
        const at::Tensor part = flat.slice(0, s, std::min(n, s + kChunk)).to(at::kFloat).contiguous();
        const int64_t blocks = part.numel() / 32;
        buf.resize(static_cast<size_t>(blocks) * 34);
        quantize_q8_0(part.data_ptr<float>(), blocks, buf.data());
        sink(buf.data(), buf.size());
      }
      return;
    }
    default: fail("internal: no encoder for GGUF type " + std::string(type_traits(static_cast<uint32_t>(type)).name));
  }
}

ExportResult export_gguf(const std::string& model_dir, const ModelConfig& cfg, const TensorGetter& get,
                         const std::string& out, OutType outtype) {
  const std::string arch = gguf_architecture(cfg);  // every refusal first
  Writer w(arch);
  std::string dir = model_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::string name = base_name(dir);
  if (name.empty() || name == "." || name == "/") name = "model";
  w.add_string("general.name", name);
  const TensorType main_type = outtype == OutType::f32    ? TensorType::F32
                               : outtype == OutType::f16  ? TensorType::F16
                               : outtype == OutType::bf16 ? TensorType::BF16
                                                          : TensorType::Q8_0;
  w.add_u32("general.file_type", file_type_for(main_type));
  w.add_u32("general.quantization_version", kQuantizationVersion);
  std::vector<TensorJob> jobs = plan_architecture(cfg, get, arch, w);
  add_tokenizer_metadata(w, model_dir, cfg);

  for (const TensorJob& job : jobs) {
    std::vector<int64_t> ne(job.shape.rbegin(), job.shape.rend());
    const TensorType type = tensor_type_for(job, outtype);
    w.add_tensor(job.name, ne, type, [job, type](const Sink& sink) {
      auto check = [&](const at::Tensor& t, const std::vector<int64_t>& want) {
        if (std::vector<int64_t>(t.sizes().begin(), t.sizes().end()) != want)
          fail("internal: GGUF tensor " + job.name + " has shape " + shape_string(t.sizes().vec()) + ", expected " +
               shape_string(want));
      };
      if (job.parts > 0) {
        for (int64_t e = 0; e < job.parts; ++e) {
          const at::Tensor t = job.make_part(e);
          check(t, {job.shape[1], job.shape[2]});
          encode_tensor(t, type, sink);
        }
      } else {
        const at::Tensor t = job.make();
        check(t, job.shape);
        encode_tensor(t, type, sink);
      }
    });
  }

  const uint64_t total = w.data_bytes();
  Progress bar("gguf", static_cast<int64_t>(total >> 20), "MiB");
  w.write(out, [&](uint64_t done, uint64_t) { bar.set(static_cast<int64_t>(done >> 20)); });
  bar.finish();
  ExportResult r;
  r.architecture = arch;
  r.tensors = w.tensor_count();
  r.metadata_keys = w.kv_count();
  r.bytes = file_size(out);
  return r;
}

}  // namespace mf::gguf
