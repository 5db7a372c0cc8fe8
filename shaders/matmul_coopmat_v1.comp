#version 450
// f16 matmul on tensor cores through GL_NV_cooperative_matrix (16x16x16, f32 accumulation),
// which Debian's glslc compiles (unlike GL_KHR_cooperative_matrix). 128x128 tile per
// workgroup of 8 subgroups of 32 (2 x 4, each 64x32), K in steps of 64 (128-byte rows of f16) through shared memory
// with the next tile prefetched into registers. A must be k-contiguous (a_mode 2); B is
// n-contiguous (b_mode 3) or k-contiguous (b_mode 2, read column-major). The host checks.
#include "common.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A4 { f16vec4 a4[]; };
layout(set = 0, binding = 1) readonly buffer B4 { f16vec4 b4[]; };
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"

#ifdef B_MODE
#define BMODE B_MODE
#else
#define BMODE p.b_mode
#endif

#define BM 128u
#define BN 128u
#define BK 64u
#define KV (BK / 4u)   // vec4 per tile row along k
// Row strides in halves, padded by 8 against bank conflicts. This glslang loads matrices
// from scalar arrays only, so the vec4 registers are written as 4 halves.
#define AS 72u   // As as [m][k]
#define BSN 136u // Bs as [k][n]
#define BSK 72u  // Bs as [n][k]

shared float16_t As[BM * AS];
shared float16_t Bs[BN * BSK > BK * BSN ? BN * BSK : BK * BSN];
shared float scratch[8 * 256];

f16vec4 ra0, ra1, ra2, ra3, ra4, ra5, ra6, ra7;
f16vec4 rb0, rb1, rb2, rb3, rb4, rb5, rb6, rb7;

f16vec4 ld_a(uint m0, uint k0, uint abase, uint e) {
    uint gm = m0 + e / KV, gk = k0 + (e % KV) * 4u;
    return (gm < p.M && gk < p.K) ? a4[(abase + gm * p.a_rs + gk) >> 2] : f16vec4(0.0);
}

f16vec4 ld_b(uint n0, uint k0, uint bbase, uint e) {
    if (BMODE == 3u) {
        uint bk = k0 + (e >> 5), gn = n0 + (e & 31u) * 4u;
        return (gn < p.N && bk < p.K) ? b4[(bbase + bk * p.b_ks + gn) >> 2] : f16vec4(0.0);
    }
    uint gn = n0 + e / KV, gk = k0 + (e % KV) * 4u;
    return (gn < p.N && gk < p.K) ? b4[(bbase + gn * p.b_ns + gk) >> 2] : f16vec4(0.0);
}

// 2048 vec4 per tile and operand, eight per thread (plain variables, not arrays).
#define LOAD1(I) ra##I = ld_a(m0, k0, abase, t + uint(I) * 256u); rb##I = ld_b(n0, k0, bbase, t + uint(I) * 256u);
void load(uint m0, uint n0, uint k0, uint abase, uint bbase) {
    uint t = gl_LocalInvocationID.x;
    LOAD1(0) LOAD1(1) LOAD1(2) LOAD1(3) LOAD1(4) LOAD1(5) LOAD1(6) LOAD1(7)
}

void put(uint e, f16vec4 va, f16vec4 vb) {
    uint ai = (e / KV) * AS + (e % KV) * 4u;
    uint bi = BMODE == 3u ? (e >> 5) * BSN + (e & 31u) * 4u : (e / KV) * BSK + (e % KV) * 4u;
    As[ai] = va.x; As[ai + 1u] = va.y; As[ai + 2u] = va.z; As[ai + 3u] = va.w;
    Bs[bi] = vb.x; Bs[bi + 1u] = vb.y; Bs[bi + 2u] = vb.z; Bs[bi + 3u] = vb.w;
}

#define PUT1(I) put(t + uint(I) * 256u, ra##I, rb##I);
void store() {
    uint t = gl_LocalInvocationID.x;
    PUT1(0) PUT1(1) PUT1(2) PUT1(3) PUT1(4) PUT1(5) PUT1(6) PUT1(7)
}

#define CM16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void epilogue_tile(CM32 acc, uint m, uint n, uint cbase, uint sbase, uint lane) {
    coopMatStoreNV(acc, scratch, sbase, 16u, false);
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    for (uint e = lane; e < 256u; e += gl_SubgroupSize) {
        uint gm = m + (e >> 4), gn = n + (e & 15u);
        if (gm < p.M && gn < p.N) {
            uint idx = cbase + gm * p.N + gn;
            float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
            c[idx] = TO(epilogue(scratch[sbase + e], old, gn));
        }
    }
    subgroupBarrier();
}

void main() {
    uint warp = gl_SubgroupID;
    uint lane = gl_SubgroupInvocationID;
    uint wm = (warp >> 2) * 64u, wn = (warp & 3u) * 32u;
    uvec2 tile = tile_of_workgroup();
    uint n0 = tile.x * BN, m0 = tile.y * BM, z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;

    CM32 c00 = CM32(0.0), c01 = CM32(0.0), c10 = CM32(0.0), c11 = CM32(0.0);
    CM32 c20 = CM32(0.0), c21 = CM32(0.0), c30 = CM32(0.0), c31 = CM32(0.0);

    load(m0, n0, 0u, abase, bbase);
    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        barrier();
        store();
        barrier();
        if (k0 + BK < p.K) load(m0, n0, k0 + BK, abase, bbase);
        for (uint kk = 0u; kk < BK; kk += 16u) {
            CM16 a0, a1, a2, a3, b0, b1;
            coopMatLoadNV(a0, As, wm * AS + kk, AS, false);
            coopMatLoadNV(a1, As, (wm + 16u) * AS + kk, AS, false);
            coopMatLoadNV(a2, As, (wm + 32u) * AS + kk, AS, false);
            coopMatLoadNV(a3, As, (wm + 48u) * AS + kk, AS, false);
            if (BMODE == 3u) {
                coopMatLoadNV(b0, Bs, kk * BSN + wn, BSN, false);
                coopMatLoadNV(b1, Bs, kk * BSN + wn + 16u, BSN, false);
            } else {
                coopMatLoadNV(b0, Bs, wn * BSK + kk, BSK, true);
                coopMatLoadNV(b1, Bs, (wn + 16u) * BSK + kk, BSK, true);
            }
            c00 = coopMatMulAddNV(a0, b0, c00);
            c01 = coopMatMulAddNV(a0, b1, c01);
            c10 = coopMatMulAddNV(a1, b0, c10);
            c11 = coopMatMulAddNV(a1, b1, c11);
            c20 = coopMatMulAddNV(a2, b0, c20);
            c21 = coopMatMulAddNV(a2, b1, c21);
            c30 = coopMatMulAddNV(a3, b0, c30);
            c31 = coopMatMulAddNV(a3, b1, c31);
        }
    }

    // Epilogue per 16x16 fragment through this subgroup's scratch (bounds, bias, activation).
    uint cbase = z * p.M * p.N;
    uint sbase = warp * 256u;
    uint m = m0 + wm, n = n0 + wn;
    epilogue_tile(c00, m, n, cbase, sbase, lane);
    epilogue_tile(c01, m, n + 16u, cbase, sbase, lane);
    epilogue_tile(c10, m + 16u, n, cbase, sbase, lane);
    epilogue_tile(c11, m + 16u, n + 16u, cbase, sbase, lane);
    epilogue_tile(c20, m + 32u, n, cbase, sbase, lane);
    epilogue_tile(c21, m + 32u, n + 16u, cbase, sbase, lane);
    epilogue_tile(c30, m + 48u, n, cbase, sbase, lane);
    epilogue_tile(c31, m + 48u, n + 16u, cbase, sbase, lane);
}
