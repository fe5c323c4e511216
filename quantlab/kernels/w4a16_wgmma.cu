// W4A16 on Hopper tensor cores: y = x @ W.T with W's 4-bit codes dequantized in registers and fed to
// wgmma as its register (A) operand, so that the dequantization of one k16 step runs while the
// tensor cores multiply the previous one. Roles are swapped (y.T = W @ x.T): a warpgroup owns 64
// output features (W rows) and BN tokens; x's rows are the shared-memory (B) operand.
//
// Compiled at run time by NVRTC (quantlab/kernels/cuda_ops.py), which defines before this text:
//   BN      tokens per program (a wgmma N: 16 ... 256)        WGS    warpgroups per program (64 rows each)
//   STAGES  shared-memory slabs of x (64 inputs each)         WBUF   weight tiles held in registers (>= 2)
//   GROUP   inputs per scale (a multiple of 64), 0: one scale per row      ASYM  zero points present
//   HALF    0: bf16 activations, 1: fp16                      DEPTH  wgmmas left in flight (1 or 3)
//   TMA     1: x slabs through the bulk tensor copy engine (one thread, an mbarrier per stage);
//           0: cp.async by every thread
//   PROBE   0; 1 for timing experiments only: skip the dequantization (wrong results)
// and the wgmma wrapper `mma_step(acc, a, desc)` for m64nBNk16, generated for this BN.
//
// Weight words are cuda_ops.cuda_words' order: per row and 256-input tile, 32 words whose 16-bit
// halves hold field s (bits 4s..4s+3) of inputs s*64 + 2c + h (layout.py's interleave), permuted so
// that lane (gid, tig) of a warp finds the 8 words its A fragments need in two 16-byte vectors.

typedef unsigned int u32;
typedef unsigned long long u64;

#define THREADS (WGS * 128)
#define ROWS (WGS * 64)
#define SLAB_BYTES (BN * 128)

#if HALF
#define MAGIC2 0x64006400u  // fp16 1024.0 twice: 10 mantissa bits take the code
#define MAGIC_VALUE 1024.0f
#else
#define MAGIC2 0x43004300u  // bf16 128.0 twice: 7 mantissa bits take the code
#define MAGIC_VALUE 128.0f
#endif

__device__ __forceinline__ u32 smem_addr(const void* p) {
  return static_cast<u32>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ u32 pack2(float lo, float hi) {
  u32 out;
#if HALF
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(out) : "f"(hi), "f"(lo));
#else
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(out) : "f"(hi), "f"(lo));
#endif
  return out;
}

__device__ __forceinline__ unsigned short from_float(float v) {
  unsigned short out;
#if HALF
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out) : "f"(v));
#else
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(out) : "f"(v));
#endif
  return out;
}

__device__ __forceinline__ u32 lane_word(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// Two weights (q - zp) * scale from field `shift/4` of both halves of `word`: OR the field into the
// mantissa of the magic (exactly magic + u), subtract magic + 8 + zp, multiply by the scale; each
// step is exact but the last, which rounds once, as quantlab.dequantize does.
__device__ __forceinline__ u32 weight_pair(u32 word, int shift, u32 bias2, u32 scale2) {
  u32 t, v;
  asm("{ .reg .b32 s; shr.u32 s, %1, %2; lop3.b32 %0, s, 0x000f000f, %3, 0xea; }"
      : "=r"(t) : "r"(word), "r"(shift), "r"(MAGIC2));
#if HALF
  asm("sub.f16x2 %0, %1, %2;" : "=r"(v) : "r"(t), "r"(bias2));
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(v) : "r"(v), "r"(scale2));
#else
  asm("sub.rn.bf16x2 %0, %1, %2;" : "=r"(v) : "r"(t), "r"(bias2));
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(v) : "r"(v), "r"(scale2));
#endif
  return v;
}

__device__ __forceinline__ void fence_operands() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_mma() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }

// A K-major, 128-byte-swizzled [rows, 64] bf16 tile: rows 128 bytes apart, 8-row atoms 1024 apart.
__device__ __forceinline__ u64 smem_desc(u32 addr) {
  return static_cast<u64>((addr & 0x3FFFF) >> 4) | (1ull << 16) | (static_cast<u64>(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}

struct alignas(64) TensorMap {  // CUtensorMap: 128 opaque bytes made by cuTensorMapEncodeTiled
  u64 opaque[16];
};

__device__ __forceinline__ void mbar_init(u32 bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_wait(u32 bar, u32 phase) {
  asm volatile(
      "{ .reg .pred p;\n"
      "WAIT: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT; }" ::"r"(bar), "r"(phase) : "memory");
}

// The [BN, 64] box of x at (k0, m0), 128-byte swizzled by the copy engine as the descriptor expects;
// rows past M and inputs past K arrive as zeros, and the box's full byte count completes the barrier.
__device__ __forceinline__ void tma_slab(u32 stage, u32 bar, const TensorMap& map, int k0, int m0) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(SLAB_BYTES) : "memory");
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
      ::"r"(stage), "l"(reinterpret_cast<u64>(&map)), "r"(k0), "r"(m0), "r"(bar) : "memory");
}

// Slab `slab` of x (inputs 64*slab .. +63 of BN rows from m0) into one stage, 16-byte chunk c of row r
// at r*128 + (c ^ (r % 8))*16: the 128-byte swizzle wgmma's descriptor names. Rows past M and inputs
// past K are zero-filled, so padded weights multiply zeros.
__device__ __forceinline__ void load_slab(u32 stage, const unsigned short* x, int m0, int M, int K, int stride_xm,
                                          int slab) {
  const int k0 = slab * 64;
#pragma unroll
  for (int q = 0; q < (BN * 8 + THREADS - 1) / THREADS; ++q) {
    const int i = q * THREADS + threadIdx.x;
    if (BN * 8 % THREADS && i >= BN * 8) break;
    const int r = i >> 3, c = i & 7, k = k0 + c * 8;
    const int m = m0 + r;
    int bytes = 0;
    if (m < M && k < K) bytes = min(16, (K - k) * 2);
    const unsigned short* src = bytes ? x + static_cast<long long>(m) * stride_xm + k : x;
    cp_async16(stage + r * 128 + ((c ^ (r & 7)) << 4), src, bytes);
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

struct Tile {
  uint4 w[4];          // words: row gid (w[0], w[1]) and row gid + 8 (w[2], w[3])
  unsigned short s[2][4];  // scale of rows gid, gid + 8 for the tile's 4 slabs
  float b[2][4];       // magic + 8 + zero point, same order (ASYM only)
};

extern "C" __global__ void __launch_bounds__(THREADS, 1)
w4a16_wgmma(const unsigned short* __restrict__ x, const uint4* __restrict__ words,
            const unsigned short* __restrict__ scale, const float* __restrict__ bias, unsigned short* __restrict__ y,
            float* __restrict__ partials, int* __restrict__ counters, int M, int N, int K, int KT, int NG,
            int stride_xm, int stride_ym, int split, const __grid_constant__ TensorMap x_map) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // the swizzle is a function of address bits, so stages sit on 1024-byte boundaries
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<size_t>(smem_raw) + 1023) & ~size_t(1023));
  const u32 stages = smem_addr(smem);
#if TMA
  __shared__ __align__(8) u64 full[STAGES];  // slab landed in stage s (phase: the stage's use count & 1)
  if (threadIdx.x == 0) {
    for (int st = 0; st < STAGES; ++st) mbar_init(smem_addr(&full[st]), 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
#endif

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int n0 = blockIdx.x * ROWS, m0 = blockIdx.y * BN;
  const int row0 = n0 + warp * 16 + gid, row1 = row0 + 8;
  const bool ok0 = row0 < N, ok1 = row1 < N;
  const int per = (KT + split - 1) / split;
  const int first = blockIdx.z * per, last = min(first + per, KT);
  const int tiles = max(last - first, 0);

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;

  // row r's tile t: 32 words = 8 uint4; this lane's two vectors are uint4 tig and 4 + tig
  const uint4* wrow0 = words + static_cast<long long>(ok0 ? row0 : 0) * KT * 8 + tig;
  const uint4* wrow1 = words + static_cast<long long>(ok1 ? row1 : 0) * KT * 8 + tig;
  auto fetch = [&](Tile& tile, int t) {
    if (t >= last) return;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    tile.w[0] = ok0 ? __ldg(wrow0 + t * 8) : zero;
    tile.w[1] = ok0 ? __ldg(wrow0 + t * 8 + 4) : zero;
    tile.w[2] = ok1 ? __ldg(wrow1 + t * 8) : zero;
    tile.w[3] = ok1 ? __ldg(wrow1 + t * 8 + 4) : zero;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      // a group past the last (K's padding) reuses the last scale: its inputs are zero-filled
      const int g = GROUP ? min((t * 256 + s * 64) / (GROUP ? GROUP : 1), NG - 1) : 0;
      tile.s[0][s] = ok0 ? scale[static_cast<long long>(row0) * NG + g] : 0;
      tile.s[1][s] = ok1 ? scale[static_cast<long long>(row1) * NG + g] : 0;
#if ASYM
      tile.b[0][s] = ok0 ? bias[static_cast<long long>(row0) * NG + g] : 8388608.f;
      tile.b[1][s] = ok1 ? bias[static_cast<long long>(row1) * NG + g] : 8388608.f;
#endif
    }
  };

  Tile held[WBUF];
#pragma unroll
  for (int u = 0; u < WBUF; ++u) fetch(held[u], first + u);

  const int slabs = tiles * 4;
  // slab i goes to stage i % STAGES; it is asked for STAGES - 2 slabs ahead (see the loop)
  auto fill = [&](int i) {
    const int st = i % STAGES;
#if TMA
    if (threadIdx.x == 0 && i < slabs)
      tma_slab(stages + st * SLAB_BYTES, smem_addr(&full[st]), x_map, (first * 4 + i) * 64, m0);
#else
    if (i < slabs) load_slab(stages + st * SLAB_BYTES, x, m0, M, K, stride_xm, first * 4 + i);
    else asm volatile("cp.async.commit_group;" ::: "memory");
#endif
  };
#pragma unroll
  for (int p = 0; p < STAGES - 2; ++p) fill(p);

  u32 a[DEPTH + 1][4];
  for (int t0 = first; t0 < last; t0 += WBUF) {
#pragma unroll
    for (int u = 0; u < WBUF; ++u) {
      const int t = t0 + u;
      if (t < last) {
        Tile& tile = held[u];
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const int i = (t - first) * 4 + s;
#if TMA
          mbar_wait(smem_addr(&full[i % STAGES]), (i / STAGES) & 1);
#else
          asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 3) : "memory");
          asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
          // past this barrier every warpgroup has retired the wgmmas of slab i - 2 (each waits until
          // at most DEPTH <= 3 of its wgmmas, all from slab i - 1, are in flight), so its stage is free
          __syncthreads();
          const u32 stage = stages + (i % STAGES) * SLAB_BYTES;
          const u32 s0 = tile.s[0][s] * 0x10001u, s1 = tile.s[1][s] * 0x10001u;
#if ASYM
          const u32 b0 = pack2(tile.b[0][s] - (8388608.f - MAGIC_VALUE), tile.b[0][s] - (8388608.f - MAGIC_VALUE));
          const u32 b1 = pack2(tile.b[1][s] - (8388608.f - MAGIC_VALUE), tile.b[1][s] - (8388608.f - MAGIC_VALUE));
#else
          const u32 b0 = pack2(MAGIC_VALUE + 8.f, MAGIC_VALUE + 8.f), b1 = b0;
#endif
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            // k16 step j of slab s: words 8j + tig (inputs 16j + 2tig, +1) and 8j + 4 + tig (+8)
            const uint4 &v0 = tile.w[j >> 1], &v1 = tile.w[2 + (j >> 1)];
            const int q = (j & 1) * 2;
            u32* frag = a[j % (DEPTH + 1)];
#if PROBE == 1  // timing only: the scales stand in for the weights, so no dequantization runs
            frag[0] = s0, frag[1] = s1, frag[2] = s0 ^ q, frag[3] = s1 ^ q;
#else
            frag[0] = weight_pair(lane_word(v0, q), 4 * s, b0, s0);
            frag[1] = weight_pair(lane_word(v1, q), 4 * s, b1, s1);
            frag[2] = weight_pair(lane_word(v0, q + 1), 4 * s, b0, s0);
            frag[3] = weight_pair(lane_word(v1, q + 1), 4 * s, b1, s1);
#endif
            fence_operands();
            mma_step(acc, frag, smem_desc(stage + j * 32));
            commit();
            // the step DEPTH + 1 back is done, so its A registers (the next step's) may be rewritten
            wait_mma<DEPTH>();
            // refill after the slab's first wgmma is queued, so the tensor cores have work meanwhile
            if (j == 0) {
              fill(i + STAGES - 2);
              __syncwarp();
            }
          }
        }
        fetch(tile, t + WBUF);
      }
    }
  }
  wait_mma<0>();

  // acc[4i + e]: feature row0 (e < 2) or row1, token m0 + 8i + 2tig + (e & 1)
  auto store_y = [&]() {
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = m0 + 8 * i + 2 * tig + (e & 1), n = e < 2 ? row0 : row1;
        if (m < M && n < N) y[static_cast<long long>(m) * stride_ym + n] = from_float(acc[4 * i + e]);
      }
    }
  };
  if (split == 1) {
    store_y();
    return;
  }
  // Split K: each program leaves its partial tile in its own slot; the last to arrive adds them up,
  // writes y and resets the counter, so the next call finds it at zero.
  const int tile_id = blockIdx.y * gridDim.x + blockIdx.x, tiles_mn = gridDim.x * gridDim.y;
  float* mine = partials + (static_cast<long long>(blockIdx.z) * tiles_mn + tile_id) * (BN / 2) * THREADS;
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) mine[i * THREADS + threadIdx.x] = acc[i];
  __threadfence();
  __syncthreads();
  __shared__ int arrived;
  if (threadIdx.x == 0) arrived = atomicAdd(counters + tile_id, 1);
  __syncthreads();
  if (arrived != split - 1) return;
  __threadfence();
  for (int z = 0; z < split; ++z) {
    if (z == blockIdx.z) continue;
    const float* theirs = partials + (static_cast<long long>(z) * tiles_mn + tile_id) * (BN / 2) * THREADS;
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] += __ldcg(theirs + i * THREADS + threadIdx.x);
  }
  store_y();
  if (threadIdx.x == 0) counters[tile_id] = 0;
}
