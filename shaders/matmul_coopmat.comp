#version 450
// f16 matmul on tensor cores through GL_NV_cooperative_matrix (f32 accumulation), which
// Debian's glslc compiles (unlike GL_KHR_cooperative_matrix). Shapes come from the driver:
// the fragment FM x FN x FK (constants 0-2, from vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)
// and the subgroup size (the workgroup is 4 subgroups, constant 3 = 4 * subgroup size).
// A 128 x 128 block per workgroup; each subgroup owns a 64 x 64 quadrant, a grid of
// (64/FM) x (64/FN) fragments, so each fragment loaded from shared memory feeds 64/FN or
// 64/FM multiply-adds. K advances in steps of 32 through two shared-memory stages: the next
// step's global loads (16 bytes each) are in flight while this one is multiplied, and one
// barrier per step suffices. Rows are padded by 8 halves (16 bytes) so the 8 rows a fragment
// load reads at once fall in different banks.
// A must be k-contiguous; B n-contiguous (B_MODE 3, [K, N]) or k-contiguous (B_MODE 2,
// [N, K], loaded column-major). The host checks K % 8 == 0 (and N % 8 == 0 for B_MODE 3).
// EMULATE_COOPMAT replaces the fragments by plain code with the same semantics (lavapipe has
// no cooperative matrices), so CI runs this shader's staging, indexing and epilogue.
#include "common.glsl"
#ifndef EMULATE_COOPMAT
#extension GL_NV_cooperative_matrix : require
#endif
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_control_flow_attributes : require
layout(constant_id = 0) const uint FM = 16u;
layout(constant_id = 1) const uint FN = 16u;
layout(constant_id = 2) const uint FK = 16u;
layout(constant_id = 3) const uint WG = 128u;
layout(local_size_x_id = 3) in;
layout(set = 0, binding = 0) readonly buffer A8 { uvec4 a8[]; };
layout(set = 0, binding = 1) readonly buffer B8 { uvec4 b8[]; };
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"

// Full unrolling makes the fragment arrays registers on the GPU; the emulation keeps its
// loops (lavapipe unrolled them on its own and took minutes to compile the result).
#ifdef EMULATE_COOPMAT
#define UNROLL
#else
#define UNROLL [[unroll]]
#endif

#ifdef EMULATE_COOPMAT
// Lavapipe: 32 KiB of shared memory, and wrong results once a thread's private arrays are
// as large as 16 emulated fragments; the same code on a 64 x 64 block, K steps of 16.
#define BM 64u
#define BN 64u
#define BK 16u
#define WM 32u
#define WN 32u
#else
#define BM 128u
#define BN 128u
#define BK 32u
#define WM 64u
#define WN 64u
#endif
const uint TM = WM / FM;   // fragments per subgroup along M
const uint TN = WN / FN;   // and along N
#define AS (BK + 8u)       // A stage as [m][k]
#define BSN (BN + 8u)      // B stage as [k][n] (B_MODE 3)
#define BSK (BK + 8u)      // B stage as [n][k] (B_MODE 2)
#define A_STAGE (BM * AS)
#define B_STAGE (B_MODE == 3u ? BK * BSN : BN * BSK)
// 16-byte chunks per stage and operand: 512 on the GPU (four per thread at 128 threads).
#define CHUNKS (BM * BK / 8u)
const uint PER_THREAD = (CHUNKS + WG - 1u) / WG;

shared float16_t As[2u * A_STAGE];
shared float16_t Bs[2u * B_STAGE];
shared float scratch[4u * FM * FN];

uvec4 ra[PER_THREAD], rb[PER_THREAD];

// Chunk e of the A block: row e / 4, halves (e % 4) * 8 .. + 8 along k.
uvec4 ld_a(uint m0, uint k0, uint abase, uint e) {
    uint gm = m0 + e / (BK / 8u), gk = k0 + (e % (BK / 8u)) * 8u;
    return (gm < p.M && gk < p.K) ? a8[(abase + gm * p.a_rs + gk) >> 3] : uvec4(0u);
}

uvec4 ld_b(uint n0, uint k0, uint bbase, uint e) {
    if (B_MODE == 3u) {
        // k row e / 16, halves (e % 16) * 8 along n.
        uint gk = k0 + e / (BN / 8u), gn = n0 + (e % (BN / 8u)) * 8u;
        return (gn < p.N && gk < p.K) ? b8[(bbase + gk * p.b_ks + gn) >> 3] : uvec4(0u);
    }
    uint gn = n0 + e / (BK / 8u), gk = k0 + (e % (BK / 8u)) * 8u;
    return (gn < p.N && gk < p.K) ? b8[(bbase + gn * p.b_ns + gk) >> 3] : uvec4(0u);
}

void load(uint m0, uint n0, uint k0, uint abase, uint bbase) {
    uint t = gl_LocalInvocationID.x;
    UNROLL for (uint i = 0u; i < PER_THREAD; i++) {
        uint e = t + i * WG;
        ra[i] = e < CHUNKS ? ld_a(m0, k0, abase, e) : uvec4(0u);
        rb[i] = e < CHUNKS ? ld_b(n0, k0, bbase, e) : uvec4(0u);
    }
}

// This glslang loads fragments from scalar arrays only, so the chunks go in as halves.
void store(uint stage) {
    uint t = gl_LocalInvocationID.x;
    UNROLL for (uint i = 0u; i < PER_THREAD; i++) {
        uint e = t + i * WG;
        if (e >= CHUNKS) break;
        uint ai = stage * A_STAGE + (e / (BK / 8u)) * AS + (e % (BK / 8u)) * 8u;
        uint bi = stage * B_STAGE
            + (B_MODE == 3u ? (e / (BN / 8u)) * BSN + (e % (BN / 8u)) * 8u
                            : (e / (BK / 8u)) * BSK + (e % (BK / 8u)) * 8u);
        UNROLL for (uint j = 0u; j < 4u; j++) {
            vec2 x = unpackHalf2x16(ra[i][j]), y = unpackHalf2x16(rb[i][j]);
            As[ai + 2u * j] = float16_t(x.x);
            As[ai + 2u * j + 1u] = float16_t(x.y);
            Bs[bi + 2u * j] = float16_t(y.x);
            Bs[bi + 2u * j + 1u] = float16_t(y.y);
        }
    }
}

#ifdef EMULATE_COOPMAT
// A fragment is where it lies in shared memory; an accumulator is spread over the lanes,
// element lane + i * subgroup size of the row-major FM x FN block.
const uint EPL = FM * FN * 4u / WG;
struct Frag { uint off; uint stride; bool col; };
#define FRAG_A Frag
#define FRAG_B Frag
// The accumulators are one private array (array parameters sized by constants defeat
// glslc's optimiser).
float acc[TM * TN * EPL];
#define ACC_DECL
#define ACC_ZERO(I) [[dont_unroll]] for (uint e_ = 0u; e_ < EPL; e_++) acc[(I) * EPL + e_] = 0.0
#define LOAD_A(F, OFF, STRIDE, COL) F = Frag(OFF, STRIDE, COL)
#define LOAD_B(F, OFF, STRIDE, COL) F = Frag(OFF, STRIDE, COL)
#define MULADD(I, FA, FB) muladd((I) * EPL, FA, FB)
#define STORE_C(I, OFF) store_c((I) * EPL, OFF)

void muladd(uint base, Frag fa, Frag fb) {
    [[dont_unroll]] for (uint e = 0u; e < EPL; e++) {
        uint idx = gl_SubgroupInvocationID + e * gl_SubgroupSize;
        uint r = idx / FN, cn = idx % FN;
        float s = acc[base + e];
        [[dont_unroll]] for (uint k = 0u; k < FK; k++) {
            float x = float(As[fa.off + (fa.col ? k * fa.stride + r : r * fa.stride + k)]);
            float y = float(Bs[fb.off + (fb.col ? cn * fb.stride + k : k * fb.stride + cn)]);
            s += x * y;
        }
        acc[base + e] = s;
    }
}

void store_c(uint base, uint off) {
    [[dont_unroll]] for (uint e = 0u; e < EPL; e++) {
        uint idx = gl_SubgroupInvocationID + e * gl_SubgroupSize;
        scratch[off + idx] = acc[base + e];
    }
}
#else
#define FRAG_A fcoopmatNV<16, gl_ScopeSubgroup, FM, FK>
#define FRAG_B fcoopmatNV<16, gl_ScopeSubgroup, FK, FN>
#define CMC fcoopmatNV<32, gl_ScopeSubgroup, FM, FN>
#define ACC_DECL CMC acc[TM * TN]
#define ACC_ZERO(I) acc[I] = CMC(0.0)
#define LOAD_A(F, OFF, STRIDE, COL) coopMatLoadNV(F, As, OFF, STRIDE, COL)
#define LOAD_B(F, OFF, STRIDE, COL) coopMatLoadNV(F, Bs, OFF, STRIDE, COL)
#define MULADD(I, FA, FB) acc[I] = coopMatMulAddNV(FA, FB, acc[I])
#define STORE_C(I, OFF) coopMatStoreNV(acc[I], scratch, OFF, FN, false)
#endif

void main() {
    uint warp = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm = (warp >> 1) * WM, wn = (warp & 1u) * WN;
    uvec2 tile = tile_of_workgroup();
    uint n0 = tile.x * BN, m0 = tile.y * BM, z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;

    ACC_DECL;
    UNROLL for (uint i = 0u; i < TM * TN; i++) ACC_ZERO(i);

    uint steps = (p.K + BK - 1u) / BK;
    load(m0, n0, 0u, abase, bbase);
    store(0u);
    barrier();
    for (uint s = 0u; s < steps; s++) {
        uint cur = s & 1u;
        bool more = s + 1u < steps;
        if (more) load(m0, n0, (s + 1u) * BK, abase, bbase);
        uint ab = cur * A_STAGE, bb = cur * B_STAGE;
        UNROLL for (uint kk = 0u; kk < BK; kk += FK) {
            FRAG_A fa[TM];
            UNROLL for (uint i = 0u; i < TM; i++) LOAD_A(fa[i], ab + (wm + i * FM) * AS + kk, AS, false);
            UNROLL for (uint j = 0u; j < TN; j++) {
                FRAG_B fb;
                if (B_MODE == 3u) LOAD_B(fb, bb + kk * BSN + wn + j * FN, BSN, false);
                else LOAD_B(fb, bb + (wn + j * FN) * BSK + kk, BSK, true);
                UNROLL for (uint i = 0u; i < TM; i++) MULADD(i * TN + j, fa[i], fb);
            }
        }
        // The other stage was last read before the previous barrier: safe to overwrite.
        if (more) store(cur ^ 1u);
        barrier();
    }

    // Epilogue per fragment through this subgroup's scratch (bounds, bias, activation).
    uint cbase = z * p.M * p.N;
    uint sbase = warp * FM * FN;
    UNROLL for (uint i = 0u; i < TM; i++) {
        UNROLL for (uint j = 0u; j < TN; j++) {
            STORE_C(i * TN + j, sbase);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            uint m = m0 + wm + i * FM, n = n0 + wn + j * FN;
            for (uint e = lane; e < FM * FN; e += gl_SubgroupSize) {
                uint gm = m + e / FN, gn = n + e % FN;
                if (gm < p.M && gn < p.N) {
                    uint idx = cbase + gm * p.N + gn;
                    float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
                    c[idx] = TO(epilogue(scratch[sbase + e], old, gn));
                }
            }
            subgroupBarrier();
        }
    }
}
