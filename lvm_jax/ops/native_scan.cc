// The Mamba-1 selective scan as two XLA FFI handlers for the CPU (mode "native").
//
// Why a native kernel: on CPU, XLA emits the scan's backward as hundreds of small
// dots and one memory pass per reduction; here every (channel, batch row) pair is
// one loop over time that keeps its state in L1 and fuses all of it.
//
//   h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) * B_t,   y_t = <h_t, C_t>
//
// Layouts (row-major float32): u, delta, y, gy [batch, L, D]; A [D, N];
// B, C [batch, L, N]; h0, h_final, gh, dh0 [batch, D, N], or an empty buffer
// when there is no initial state / no final state is asked for.
// The channels are split among `threads` worker threads; the backward's dB and
// dC, which sum over channels, are accumulated per thread and added at the end.
// Built and loaded by native_scan.py, which holds it to the XLA modes.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The inputs both handlers share, checked against u's shape: sizes and data pointers
// (h0 is null when its buffer is empty: the scan starts from zeros).
struct ScanInputs {
  int64_t batch, length, channels, state;
  const float *u, *delta, *A, *B, *C, *h0;
};

// Denormals flushed to zero (inputs and results) while it lives, as XLA:CPU runs its own
// code: exp(delta * A) underflows into denormals for strongly decaying channels, and
// arithmetic on them is microcoded, many times slower.
class ScopedFlushDenormals {
 public:
  ScopedFlushDenormals() {
#if defined(__SSE__)
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040);  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
    saved_ = __builtin_aarch64_get_fpcr64();
    __builtin_aarch64_set_fpcr64(saved_ | (uint64_t{1} << 24));  // FZ
#endif
  }
  ~ScopedFlushDenormals() {
#if defined(__SSE__)
    _mm_setcsr(saved_);
#elif defined(__aarch64__)
    __builtin_aarch64_set_fpcr64(saved_);
#endif
  }

 private:
#if defined(__aarch64__)
  uint64_t saved_ = 0;
#else
  unsigned int saved_ = 0;
#endif
};

// exp(x) in float32 that the compiler can vectorise (libm's expf is a call per element):
// x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^7 (truncation error
// 0.347^8 / 8! < 6e-9, below float32's 6e-8), then 2^k through the exponent bits. Results
// below float32's smallest normal are 0, as with denormals flushed; NaN stays NaN.
inline float VectorExp(float x) {
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float k = (x * 1.44269504f + kRound) - kRound;
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-06f;  // ln2 split in two parts
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t exponent = static_cast<int32_t>(k) + 127;
  const float scale = __builtin_bit_cast(float, (exponent < 1 ? 1 : exponent > 254 ? 254
                                                                                   : exponent)
                                                    << 23);
  const float value = p * scale;
  return x < -87.3f ? 0.0f : x > 88.7f ? __builtin_huge_valf() : value;
}

// Runs body(first_channel, end_channel, worker) over `threads` contiguous channel ranges,
// each with denormals flushed.
template <typename Body>
void ForChannelRanges(int64_t channels, int64_t threads, Body body) {
  threads = std::max<int64_t>(1, std::min(threads, channels));
  auto flushed = [&body](int64_t first, int64_t end, int64_t worker) {
    ScopedFlushDenormals flush;
    body(first, end, worker);
  };
  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  for (int64_t w = 1; w < threads; ++w) {
    workers.emplace_back(flushed, channels * w / threads, channels * (w + 1) / threads, w);
  }
  flushed(0, channels / threads, 0);
  for (auto& worker : workers) worker.join();
}

ffi::Error ReadInputs(const ffi::Buffer<ffi::F32>& u, const ffi::Buffer<ffi::F32>& delta,
                      const ffi::Buffer<ffi::F32>& A, const ffi::Buffer<ffi::F32>& B,
                      const ffi::Buffer<ffi::F32>& C, const ffi::Buffer<ffi::F32>& h0,
                      ScanInputs* inputs) {
  auto u_dims = u.dimensions();
  auto a_dims = A.dimensions();
  if (u_dims.size() != 3 || a_dims.size() != 2) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "lvm_jax native scan: u must be [batch, L, D] and A [D, N]");
  }
  inputs->batch = u_dims[0];
  inputs->length = u_dims[1];
  inputs->channels = u_dims[2];
  inputs->state = a_dims[1];
  const int64_t sequence = inputs->batch * inputs->length;
  if (delta.element_count() != u.element_count() || a_dims[0] != inputs->channels ||
      B.element_count() != static_cast<size_t>(sequence * inputs->state) ||
      C.element_count() != B.element_count() ||
      (h0.element_count() != 0 &&
       h0.element_count() !=
           static_cast<size_t>(inputs->batch * inputs->channels * inputs->state))) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "lvm_jax native scan: delta, A, B, C or h0 disagree with u's shape");
  }
  inputs->u = u.typed_data();
  inputs->delta = delta.typed_data();
  inputs->A = A.typed_data();
  inputs->B = B.typed_data();
  inputs->C = C.typed_data();
  inputs->h0 = h0.element_count() ? h0.typed_data() : nullptr;
  return ffi::Error::Success();
}

ffi::Error ScanForward(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> delta,
                       ffi::Buffer<ffi::F32> A, ffi::Buffer<ffi::F32> B,
                       ffi::Buffer<ffi::F32> C, ffi::Buffer<ffi::F32> h0, int64_t threads,
                       ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> h_final) {
  ScanInputs s;
  ffi::Error error = ReadInputs(u, delta, A, B, C, h0, &s);
  if (error.failure()) return error;
  float* y_ = y->typed_data();
  float* h_final_ = h_final->element_count() ? h_final->typed_data() : nullptr;
  const int64_t L = s.length, D = s.channels, N = s.state;

  ForChannelRanges(D, threads, [&](int64_t first, int64_t end, int64_t) {
    std::vector<float> h(N);
    for (int64_t d = first; d < end; ++d) {
      const float* A_d = s.A + d * N;
      for (int64_t b = 0; b < s.batch; ++b) {
        const size_t state_at = (static_cast<size_t>(b) * D + d) * N;
        if (s.h0) {
          std::memcpy(h.data(), s.h0 + state_at, N * sizeof(float));
        } else {
          std::fill(h.begin(), h.end(), 0.0f);
        }
        for (int64_t t = 0; t < L; ++t) {
          const size_t at = (static_cast<size_t>(b) * L + t) * D + d;
          const float* B_t = s.B + (static_cast<size_t>(b) * L + t) * N;
          const float* C_t = s.C + (static_cast<size_t>(b) * L + t) * N;
          const float step = s.delta[at], drive = step * s.u[at];
          float out = 0.0f;
#pragma omp simd reduction(+ : out)
          for (int64_t n = 0; n < N; ++n) {
            h[n] = VectorExp(step * A_d[n]) * h[n] + drive * B_t[n];
            out += h[n] * C_t[n];
          }
          y_[at] = out;
        }
        if (h_final_) std::memcpy(h_final_ + state_at, h.data(), N * sizeof(float));
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error ScanBackward(ffi::Buffer<ffi::F32> u, ffi::Buffer<ffi::F32> delta,
                        ffi::Buffer<ffi::F32> A, ffi::Buffer<ffi::F32> B,
                        ffi::Buffer<ffi::F32> C, ffi::Buffer<ffi::F32> h0,
                        ffi::Buffer<ffi::F32> gy, ffi::Buffer<ffi::F32> gh, int64_t threads,
                        ffi::ResultBuffer<ffi::F32> du, ffi::ResultBuffer<ffi::F32> ddelta,
                        ffi::ResultBuffer<ffi::F32> dA, ffi::ResultBuffer<ffi::F32> dB,
                        ffi::ResultBuffer<ffi::F32> dC, ffi::ResultBuffer<ffi::F32> dh0) {
  ScanInputs s;
  ffi::Error error = ReadInputs(u, delta, A, B, C, h0, &s);
  if (error.failure()) return error;
  const int64_t L = s.length, D = s.channels, N = s.state;
  const size_t sequence_state = static_cast<size_t>(s.batch) * L * N;
  if (gy.element_count() != u.element_count() ||
      (gh.element_count() != 0 &&
       gh.element_count() != static_cast<size_t>(s.batch) * D * N)) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "lvm_jax native scan: the cotangents disagree with u's shape");
  }
  const float* gy_ = gy.typed_data();
  const float* gh_ = gh.element_count() ? gh.typed_data() : nullptr;
  float* du_ = du->typed_data();
  float* ddelta_ = ddelta->typed_data();
  float* dA_ = dA->typed_data();
  float* dh0_ = dh0->element_count() ? dh0->typed_data() : nullptr;

  const int64_t workers = std::max<int64_t>(1, std::min(threads, D));
  // dB and dC sum over channels: one accumulator per worker, added up below.
  std::vector<float> dB_parts(workers * sequence_state, 0.0f);
  std::vector<float> dC_parts(workers * sequence_state, 0.0f);

  ForChannelRanges(D, workers, [&](int64_t first, int64_t end, int64_t worker) {
    float* dB_w = dB_parts.data() + worker * sequence_state;
    float* dC_w = dC_parts.data() + worker * sequence_state;
    // states[t] is h_{t-1} (states[0] = h0); decays[t] = exp(delta_t * A).
    std::vector<float> states((L + 1) * N), decays(L * N), dh(N), dA_d(N);
    for (int64_t d = first; d < end; ++d) {
      const float* A_d = s.A + d * N;
      std::fill(dA_d.begin(), dA_d.end(), 0.0f);
      for (int64_t b = 0; b < s.batch; ++b) {
        const size_t state_at = (static_cast<size_t>(b) * D + d) * N;
        if (s.h0) {
          std::memcpy(states.data(), s.h0 + state_at, N * sizeof(float));
        } else {
          std::fill(states.begin(), states.begin() + N, 0.0f);
        }
        for (int64_t t = 0; t < L; ++t) {  // recompute the states
          const size_t at = (static_cast<size_t>(b) * L + t) * D + d;
          const float* B_t = s.B + (static_cast<size_t>(b) * L + t) * N;
          const float step = s.delta[at], drive = step * s.u[at];
          const float* before = states.data() + t * N;
          float* after = states.data() + (t + 1) * N;
          float* decay = decays.data() + t * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) {
            decay[n] = VectorExp(step * A_d[n]);
            after[n] = decay[n] * before[n] + drive * B_t[n];
          }
        }
        if (gh_) {
          std::memcpy(dh.data(), gh_ + state_at, N * sizeof(float));
        } else {
          std::fill(dh.begin(), dh.end(), 0.0f);
        }
        for (int64_t t = L - 1; t >= 0; --t) {  // dh holds dL/dh_t from the later steps
          const size_t at = (static_cast<size_t>(b) * L + t) * D + d;
          const size_t row = (static_cast<size_t>(b) * L + t) * N;
          const float* B_t = s.B + row;
          const float* C_t = s.C + row;
          float* dB_t = dB_w + row;
          float* dC_t = dC_w + row;
          const float g = gy_[at], step = s.delta[at], input = s.u[at], drive = step * input;
          const float* before = states.data() + t * N;
          const float* after = states.data() + (t + 1) * N;
          const float* decay = decays.data() + t * N;
          float d_drive = 0.0f, d_step_through_decay = 0.0f;
#pragma omp simd reduction(+ : d_drive, d_step_through_decay)
          for (int64_t n = 0; n < N; ++n) {
            const float dh_t = dh[n] + g * C_t[n];
            const float d_log_decay = dh_t * before[n] * decay[n];  // d/d(delta_t * A_n)
            d_drive += dh_t * B_t[n];
            d_step_through_decay += d_log_decay * A_d[n];
            dA_d[n] += d_log_decay * step;
            dB_t[n] += dh_t * drive;
            dC_t[n] += g * after[n];
            dh[n] = decay[n] * dh_t;
          }
          du_[at] = d_drive * step;
          ddelta_[at] = d_step_through_decay + d_drive * input;
        }
        if (dh0_) std::memcpy(dh0_ + state_at, dh.data(), N * sizeof(float));
      }
      std::memcpy(dA_ + d * N, dA_d.data(), N * sizeof(float));
    }
  });
  float* dB_ = dB->typed_data();
  float* dC_ = dC->typed_data();
  std::memcpy(dB_, dB_parts.data(), sequence_state * sizeof(float));
  std::memcpy(dC_, dC_parts.data(), sequence_state * sizeof(float));
  for (int64_t w = 1; w < workers; ++w) {
    const float* dB_w = dB_parts.data() + w * sequence_state;
    const float* dC_w = dC_parts.data() + w * sequence_state;
    for (size_t i = 0; i < sequence_state; ++i) {
      dB_[i] += dB_w[i];
      dC_[i] += dC_w[i];
    }
  }
  return ffi::Error::Success();
}

}  // namespace

namespace {

using F32Buffer = ffi::Buffer<ffi::F32>;

// The arguments both handlers start with: u, delta, A, B, C, and h0 (or empty).
auto BindScanInputs() {
  return ffi::Ffi::Bind()
      .Arg<F32Buffer>()
      .Arg<F32Buffer>()
      .Arg<F32Buffer>()
      .Arg<F32Buffer>()
      .Arg<F32Buffer>()
      .Arg<F32Buffer>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LvmJaxScanForward, ScanForward,
                              BindScanInputs()
                                  .Attr<int64_t>("threads")
                                  .Ret<F32Buffer>()    // y
                                  .Ret<F32Buffer>());  // h_final, or empty

XLA_FFI_DEFINE_HANDLER_SYMBOL(LvmJaxScanBackward, ScanBackward,
                              BindScanInputs()
                                  .Arg<F32Buffer>()  // gy
                                  .Arg<F32Buffer>()  // gh, or empty
                                  .Attr<int64_t>("threads")
                                  .Ret<F32Buffer>()    // du
                                  .Ret<F32Buffer>()    // ddelta
                                  .Ret<F32Buffer>()    // dA
                                  .Ret<F32Buffer>()    // dB
                                  .Ret<F32Buffer>()    // dC
                                  .Ret<F32Buffer>());  // dh0, or empty
