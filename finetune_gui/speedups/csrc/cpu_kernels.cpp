// Fused CPU kernels for the training step: each does in one or two passes over memory what
// PyTorch's eager CPU ops do in five to ten, with the same roundings as the eager code they
// replace (fp32 maths, bf16 results where the eager code rounds to bf16).
//
// Built once per machine by finetune_gui/cpu_kernels.py (torch.utils.cpp_extension).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

// fp32 and bf16 only: check_cpu turns the rest away
#define DISPATCH_FP32_BF16(TYPE, NAME, ...)                \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace {

using at::BFloat16;

// bf16 <-> fp32 and exp written with plain arithmetic and bit operations, so that the
// compiler vectorises the loops that use them (c10's conversions and libm's exp are not
// vectorised without -ffast-math, which would also drop NaN semantics).
inline float to_float(float x) { return x; }
inline float to_float(BFloat16 x) {
  uint32_t bits = uint32_t(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename T> inline T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
// round to nearest even; a NaN stays a (quiet) NaN
template <> inline BFloat16 from_float<BFloat16>(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return BFloat16(static_cast<uint16_t>(x != x ? 0x7FC0u : rounded), BFloat16::from_bits());
}
// the value eager code would hold after rounding an fp32 result to the tensor's dtype
template <typename T> inline float rounded(float x) { return to_float(from_float<T>(x)); }

// exp(x) = 2^n * exp(r) with |r| <= ln2/2 and Cephes' polynomial for exp(r): within 2 ulp of
// libm where fp32 exp is finite and normal, 0 below that; NaN in, NaN out.
inline float vexp(float x) {
  const bool underflow = x < -87.0f;  // exp < 1.6e-38: 0, as the masked scores need
  x = underflow ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + shifter;
  const float n = shifted - shifter;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  uint32_t scale_bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return underflow ? 0.f : y * scale;
}

inline float sigmoid(float v) { return 1.f / (1.f + vexp(-v)); }

void check_cpu(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat,
              name, " must be bf16 or fp32");
}

// Softmax of an fp32 row: `r` ends up holding the probabilities, `out` them in T. Returns the
// row's log-sum-exp.
template <typename T>
float softmax_row(float* r, int64_t n, T* out) {
  float top = -INFINITY;
#pragma omp simd reduction(max : top)
  for (int64_t j = 0; j < n; ++j) top = r[j] > top ? r[j] : top;
  float total = 0.f;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < n; ++j) {
    r[j] = vexp(r[j] - top);
    total += r[j];
  }
  const float inv = 1.f / total;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    r[j] *= inv;
    out[j] = from_float<T>(r[j]);
  }
  return top + std::log(total);
}

// ---- cross-entropy over the vocabulary, with its gradient -------------------------------
// Per row: loss = logsumexp(x) - x[target]; grad = softmax(x) - onehot(target), in the
// logits' dtype (the eager path casts its fp32 gradient to that dtype before the head's
// matmul). The row is read twice and the gradient written once; no fp32 copy of the logits.
template <typename T>
void xent_rows(const T* x, const int64_t* targets, float* loss, T* grad, int64_t rows,
               int64_t vocab) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(vocab);
    for (int64_t i = begin; i < end; ++i) {
      const T* xi = x + i * vocab;
      float* r = row.data();
#pragma omp simd
      for (int64_t j = 0; j < vocab; ++j) r[j] = to_float(xi[j]);
      T* gi = grad + i * vocab;
      const float lse = softmax_row(r, vocab, gi);
      const int64_t t = targets[i];
      loss[i] = lse - to_float(xi[t]);
      gi[t] = from_float<T>(r[t] - 1.f);
    }
  });
}

std::vector<torch::Tensor> softmax_xent(const torch::Tensor& logits, const torch::Tensor& targets) {
  check_cpu(logits, "logits");
  TORCH_CHECK(logits.dim() == 2, "logits must be rows x vocabulary");
  TORCH_CHECK(targets.scalar_type() == torch::kLong && targets.is_contiguous() &&
              targets.numel() == logits.size(0), "one int64 target per row");
  const int64_t* t = targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i)
    TORCH_CHECK(t[i] >= 0 && t[i] < logits.size(1), "target ", t[i], " out of range for a vocabulary of ",
                logits.size(1));
  auto loss = torch::empty({logits.size(0)}, logits.options().dtype(torch::kFloat));
  auto grad = torch::empty_like(logits);
  DISPATCH_FP32_BF16(logits.scalar_type(), "softmax_xent", [&] {
    xent_rows<scalar_t>(logits.data_ptr<scalar_t>(), targets.data_ptr<int64_t>(),
                        loss.data_ptr<float>(), grad.data_ptr<scalar_t>(), logits.size(0),
                        logits.size(1));
  });
  return {loss, grad};
}

// ---- RMSNorm (Llama form) ---------------------------------------------------------------
// y = w * to_dtype(x * rsqrt(mean(x^2) + eps)), statistics in fp32, as transformers' eager
// LlamaRMSNorm. Returns y and the per-row rsqrt for the backward.
template <typename T>
void rms_forward(const T* x, const T* w, T* y, float* inv_rms, int64_t rows, int64_t width,
                 float eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* xi = x + i * width;
      float squares = 0.f;
#pragma omp simd reduction(+ : squares)
      for (int64_t j = 0; j < width; ++j) squares += to_float(xi[j]) * to_float(xi[j]);
      const float r = 1.f / std::sqrt(squares / width + eps);
      inv_rms[i] = r;
      T* yi = y + i * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j)
        yi[j] = from_float<T>(to_float(w[j]) * rounded<T>(to_float(xi[j]) * r));
    }
  });
}

// dx = r * (gn - n * mean(gn * n)) with n = x * r and gn = to_dtype(g * w): the gradient of
// the eager graph, weight frozen.
template <typename T>
void rms_backward(const T* g, const T* x, const T* w, const float* inv_rms, T* dx, int64_t rows,
                  int64_t width) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> gn(width);
    for (int64_t i = begin; i < end; ++i) {
      const T* gi = g + i * width;
      const T* xi = x + i * width;
      const float r = inv_rms[i];
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < width; ++j) {
        gn[j] = rounded<T>(to_float(gi[j]) * to_float(w[j]));
        dot += gn[j] * to_float(xi[j]) * r;
      }
      const float mean_dot = dot / width;
      T* di = dx + i * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j)
        di[j] = from_float<T>(r * (gn[j] - to_float(xi[j]) * r * mean_dot));
    }
  });
}

std::vector<torch::Tensor> rms_norm_forward(const torch::Tensor& x, const torch::Tensor& weight,
                                            double eps) {
  check_cpu(x, "x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.is_contiguous() &&
              weight.numel() == x.size(-1), "weight must match the last dimension and dtype");
  const int64_t width = x.size(-1), rows = x.numel() / width;
  auto y = torch::empty_like(x);
  auto inv_rms = torch::empty({rows}, x.options().dtype(torch::kFloat));
  DISPATCH_FP32_BF16(x.scalar_type(), "rms_norm_forward", [&] {
    rms_forward<scalar_t>(x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                          y.data_ptr<scalar_t>(), inv_rms.data_ptr<float>(), rows, width,
                          static_cast<float>(eps));
  });
  return {y, inv_rms};
}

torch::Tensor rms_norm_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                const torch::Tensor& weight, const torch::Tensor& inv_rms) {
  check_cpu(x, "x");
  auto g = grad.contiguous();
  TORCH_CHECK(g.scalar_type() == x.scalar_type() && g.sizes() == x.sizes(), "grad must match x");
  const int64_t width = x.size(-1), rows = x.numel() / width;
  auto dx = torch::empty_like(x);
  DISPATCH_FP32_BF16(x.scalar_type(), "rms_norm_backward", [&] {
    rms_backward<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                           weight.data_ptr<scalar_t>(), inv_rms.data_ptr<float>(),
                           dx.data_ptr<scalar_t>(), rows, width);
  });
  return dx;
}

// ---- SwiGLU: silu(gate) * up ---------------------------------------------------------------
// out = to_dtype(to_dtype(silu(gate)) * up), as eager silu then mul round.
template <typename T>
void swiglu_rows(const T* gate, const T* up, T* out, int64_t count) {
  at::parallel_for(0, count, 16384, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float v = to_float(gate[i]);
      out[i] = from_float<T>(rounded<T>(v * sigmoid(v)) * to_float(up[i]));
    }
  });
}

// Gradients of the eager pair (silu, then mul), each rounded where eager code rounds.
template <typename T>
void swiglu_grad_rows(const T* grad, const T* gate, const T* up, T* d_gate, T* d_up,
                      int64_t count) {
  at::parallel_for(0, count, 16384, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float v = to_float(gate[i]), s = sigmoid(v), g = to_float(grad[i]);
      d_up[i] = from_float<T>(g * rounded<T>(v * s));
      const float d_act = rounded<T>(g * to_float(up[i]));
      d_gate[i] = from_float<T>(d_act * s * (1.f + v * (1.f - s)));
    }
  });
}

torch::Tensor swiglu_forward(const torch::Tensor& gate, const torch::Tensor& up) {
  check_cpu(gate, "gate");
  check_cpu(up, "up");
  TORCH_CHECK(gate.sizes() == up.sizes() && gate.scalar_type() == up.scalar_type(),
              "gate and up must match");
  auto out = torch::empty_like(gate);
  DISPATCH_FP32_BF16(gate.scalar_type(), "swiglu_forward", [&] {
    swiglu_rows<scalar_t>(gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(),
                          out.data_ptr<scalar_t>(), gate.numel());
  });
  return out;
}

std::vector<torch::Tensor> swiglu_backward(const torch::Tensor& grad, const torch::Tensor& gate,
                                           const torch::Tensor& up) {
  auto g = grad.contiguous();
  TORCH_CHECK(g.sizes() == gate.sizes() && g.scalar_type() == gate.scalar_type(),
              "grad must match gate");
  auto d_gate = torch::empty_like(gate);
  auto d_up = torch::empty_like(up);
  DISPATCH_FP32_BF16(gate.scalar_type(), "swiglu_backward", [&] {
    swiglu_grad_rows<scalar_t>(g.data_ptr<scalar_t>(), gate.data_ptr<scalar_t>(),
                               up.data_ptr<scalar_t>(), d_gate.data_ptr<scalar_t>(),
                               d_up.data_ptr<scalar_t>(), gate.numel());
  });
  return {d_gate, d_up};
}

// ---- attention probabilities: softmax(scores * scale + mask) --------------------------------
// As transformers' eager attention: the scaled scores and the masked scores are each rounded
// to the tensor's dtype, the softmax is taken in fp32 and rounded back. scores: (B, H, Q, K)
// contiguous; mask: (B, 1 or H, Q, K), additive, any strides but a unit last one.
template <typename T>
void softmax_rows(const T* scores, const T* mask, T* probs, int64_t heads, int64_t queries,
                  int64_t keys, const int64_t* mask_strides, bool mask_per_head, float scale,
                  int64_t rows) {
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> row(keys);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t q = i % queries, h = (i / queries) % heads, b = i / (queries * heads);
      const T* x = scores + i * keys;
      const T* m = mask + b * mask_strides[0] + (mask_per_head ? h * mask_strides[1] : 0) +
                   q * mask_strides[2];
      float* r = row.data();
#pragma omp simd
      for (int64_t j = 0; j < keys; ++j)
        r[j] = rounded<T>(rounded<T>(to_float(x[j]) * scale) + to_float(m[j]));
      softmax_row(r, keys, probs + i * keys);
    }
  });
}

// d scores = scale * to_dtype(p * (g - sum(g * p))): the eager chain's backward, from the
// rounded probabilities the forward returned.
template <typename T>
void softmax_grad_rows(const T* grad, const T* probs, T* out, float scale, int64_t rows,
                       int64_t keys) {
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* g = grad + i * keys;
      const T* p = probs + i * keys;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < keys; ++j) dot += to_float(g[j]) * to_float(p[j]);
      T* o = out + i * keys;
#pragma omp simd
      for (int64_t j = 0; j < keys; ++j)
        o[j] = from_float<T>(rounded<T>(to_float(p[j]) * (to_float(g[j]) - dot)) * scale);
    }
  });
}

torch::Tensor attention_softmax_forward(const torch::Tensor& scores, const torch::Tensor& mask,
                                        double scale) {
  check_cpu(scores, "scores");
  TORCH_CHECK(scores.dim() == 4 && mask.dim() == 4 && mask.scalar_type() == scores.scalar_type(),
              "scores and mask must be 4-D and of one dtype");
  TORCH_CHECK(mask.size(0) == scores.size(0) && mask.size(2) == scores.size(2) &&
              mask.size(3) == scores.size(3) && mask.stride(3) == 1 &&
              (mask.size(1) == 1 || mask.size(1) == scores.size(1)),
              "mask must be (batch, 1 or heads, queries, keys) with a unit last stride");
  auto probs = torch::empty_like(scores);
  const int64_t strides[3] = {mask.stride(0), mask.stride(1), mask.stride(2)};
  DISPATCH_FP32_BF16(scores.scalar_type(), "attention_softmax_forward", [&] {
    softmax_rows<scalar_t>(scores.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
                           probs.data_ptr<scalar_t>(), scores.size(1), scores.size(2),
                           scores.size(3), strides, mask.size(1) > 1, static_cast<float>(scale),
                           scores.numel() / scores.size(3));
  });
  return probs;
}

torch::Tensor attention_softmax_backward(const torch::Tensor& grad, const torch::Tensor& probs,
                                         double scale) {
  check_cpu(probs, "probs");
  auto g = grad.contiguous();
  TORCH_CHECK(g.sizes() == probs.sizes() && g.scalar_type() == probs.scalar_type(),
              "grad must match probs");
  auto out = torch::empty_like(probs);
  DISPATCH_FP32_BF16(probs.scalar_type(), "attention_softmax_backward", [&] {
    softmax_grad_rows<scalar_t>(g.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                                out.data_ptr<scalar_t>(), static_cast<float>(scale),
                                probs.numel() / probs.size(-1), probs.size(-1));
  });
  return out;
}

// ---- dropout masks -----------------------------------------------------------------------
// -1 (all bits set: keep) or 0 (drop) per element, as 16- or 32-bit integers the width of the
// activations they mask with one bitwise AND. Element i is dropped when the i % 4-th 16-bit
// lane of splitmix64(seed + (i / 4 + 1) * golden) is below p * 65536: a counter-based draw,
// so the same seed gives the same mask in any thread split.
inline uint64_t splitmix64(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + (counter + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// the mask of lane k (0..3) of a draw, `width` bits wide, at bit offset `shift` of a word
inline uint64_t lane_mask(uint64_t draw, int k, uint64_t threshold, int width, int shift) {
  const uint64_t ones = width == 16 ? 0xFFFFull : 0xFFFFFFFFull;
  return ((draw >> (16 * k)) & 0xFFFFull) < threshold ? 0ull : ones << shift;
}

// 16-bit masks: four lanes fill one 64-bit word; 32-bit masks: two words per draw
void dropout_words(uint64_t* out, int64_t draws, int width, uint64_t threshold, uint64_t seed) {
  at::parallel_for(0, draws, 2048, [&](int64_t begin, int64_t end) {
    if (width == 16) {
#pragma omp simd
      for (int64_t w = begin; w < end; ++w) {
        const uint64_t z = splitmix64(seed, w);
        out[w] = lane_mask(z, 0, threshold, 16, 0) | lane_mask(z, 1, threshold, 16, 16) |
                 lane_mask(z, 2, threshold, 16, 32) | lane_mask(z, 3, threshold, 16, 48);
      }
    } else {
#pragma omp simd
      for (int64_t w = begin; w < end; ++w) {
        const uint64_t z = splitmix64(seed, w);
        out[2 * w] = lane_mask(z, 0, threshold, 32, 0) | lane_mask(z, 1, threshold, 32, 32);
        out[2 * w + 1] = lane_mask(z, 2, threshold, 32, 0) | lane_mask(z, 3, threshold, 32, 32);
      }
    }
  });
}

torch::Tensor dropout_bits(int64_t count, double p, int64_t seed, int64_t bytes) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout p must be in [0, 1)");
  TORCH_CHECK(bytes == 2 || bytes == 4, "masks are 16 or 32 bits wide");
  const int64_t draws = (count + 3) / 4;
  auto words = torch::empty({draws * bytes / 2}, torch::dtype(torch::kInt64));
  dropout_words(reinterpret_cast<uint64_t*>(words.data_ptr<int64_t>()), draws, 8 * bytes,
                static_cast<uint64_t>(std::lround(p * 65536)), static_cast<uint64_t>(seed));
  return words.view(bytes == 2 ? torch::kInt16 : torch::kInt32).narrow(0, 0, count);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("softmax_xent", &softmax_xent, "per-row cross-entropy and its logits gradient");
  m.def("rms_norm_forward", &rms_norm_forward, "Llama RMSNorm forward, with 1/rms per row");
  m.def("rms_norm_backward", &rms_norm_backward, "Llama RMSNorm input gradient (frozen weight)");
  m.def("swiglu_forward", &swiglu_forward, "silu(gate) * up");
  m.def("swiglu_backward", &swiglu_backward, "gradients of silu(gate) * up");
  m.def("attention_softmax_forward", &attention_softmax_forward,
        "softmax(scores * scale + mask) as eager attention rounds it");
  m.def("attention_softmax_backward", &attention_softmax_backward,
        "gradient of attention_softmax_forward for its scores");
  m.def("dropout_bits", &dropout_bits, "integer dropout mask: -1 keep, 0 drop");
}
