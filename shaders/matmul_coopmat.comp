#version 450
// f16 matmul on tensor cores through GL_NV_cooperative_matrix (16x16x16, f32 accumulation),
// which Debian's glslc compiles (unlike GL_KHR_cooperative_matrix). 128x128 tile per
// workgroup of 8 subgroups of 32 (2 x 4, each 64x32), K in steps of 32 through shared memory
// with the next tile prefetched into registers. A must be k-contiguous (a_mode 2); B is
// n-contiguous (b_mode 3) or k-contiguous (b_mode 2, read column-major). The host checks.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
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
#define BK 32u
// Row strides in halves, padded by 8 against bank conflicts. This glslang loads matrices
// from scalar arrays only, so the vec4 registers are written as 4 halves.
#define AS 40u   // As as [m][k]
#define BSN 136u // Bs as [k][n]
#define BSK 40u  // Bs as [n][k]

shared float16_t As[BM * AS];
shared float16_t Bs[BN * BSK > BK * BSN ? BN * BSK : BK * BSN];
shared float scratch[8 * 256];

f16vec4 ra[4];
f16vec4 rb[4];

void load(uint m0, uint n0, uint k0, uint abase, uint bbase) {
    uint t = gl_LocalInvocationID.x;
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint e = t + i * 256u;                       // 1024 vec4 per tile
        uint gm = m0 + (e >> 3), gk = k0 + (e & 7u) * 4u;
        ra[i] = (gm < p.M && gk < p.K) ? a4[(abase + gm * p.a_rs + gk) >> 2] : f16vec4(0.0);
        if (BMODE == 3u) {
            uint bk = k0 + (e >> 5), gn = n0 + (e & 31u) * 4u;
            rb[i] = (gn < p.N && bk < p.K) ? b4[(bbase + bk * p.b_ks + gn) >> 2] : f16vec4(0.0);
        } else {
            uint gn = n0 + (e >> 3);
            rb[i] = (gn < p.N && gk < p.K) ? b4[(bbase + gn * p.b_ns + gk) >> 2] : f16vec4(0.0);
        }
    }
}

void store() {
    uint t = gl_LocalInvocationID.x;
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint e = t + i * 256u;
        uint ai = (e >> 3) * AS + (e & 7u) * 4u;
        uint bi = BMODE == 3u ? (e >> 5) * BSN + (e & 31u) * 4u : (e >> 3) * BSK + (e & 7u) * 4u;
        [[unroll]] for (uint q = 0u; q < 4u; q++) {
            As[ai + q] = ra[i][q];
            Bs[bi + q] = rb[i][q];
        }
    }
}

void main() {
    uint warp = gl_SubgroupID;
    uint lane = gl_SubgroupInvocationID;
    uint wm = (warp >> 2) * 64u, wn = (warp & 3u) * 32u;
    uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;

    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[4][2];
    [[unroll]] for (uint i = 0u; i < 4u; i++)
        [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);

    load(m0, n0, 0u, abase, bbase);
    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        barrier();
        store();
        barrier();
        if (k0 + BK < p.K) load(m0, n0, k0 + BK, abase, bbase);
        [[unroll]] for (uint kk = 0u; kk < BK; kk += 16u) {
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fa[4];
            fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> fb[2];
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                coopMatLoadNV(fa[i], As, (wm + i * 16u) * AS + kk, AS, false);
            [[unroll]] for (uint j = 0u; j < 2u; j++) {
                if (BMODE == 3u) coopMatLoadNV(fb[j], Bs, kk * BSN + wn + j * 16u, BSN, false);
                else coopMatLoadNV(fb[j], Bs, (wn + j * 16u) * BSK + kk, BSK, true);
            }
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                [[unroll]] for (uint j = 0u; j < 2u; j++) acc[i][j] = coopMatMulAddNV(fa[i], fb[j], acc[i][j]);
        }
    }

    // Epilogue per 16x16 fragment through this subgroup's scratch (bounds, bias, activation).
    uint cbase = z * p.M * p.N;
    uint sbase = warp * 256u;
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        [[unroll]] for (uint j = 0u; j < 2u; j++) {
            coopMatStoreNV(acc[i][j], scratch, sbase, 16u, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = lane; e < 256u; e += gl_SubgroupSize) {
                uint gm = m0 + wm + i * 16u + (e >> 4), gn = n0 + wn + j * 16u + (e & 15u);
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
