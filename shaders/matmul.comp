#version 450
// C = epilogue(A·B): 128x128 tile per workgroup, 256 threads each computing 8x8 in
// registers, K in steps of 16 through shared memory, the next tile prefetched into
// registers while the current one is multiplied.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 0) readonly buffer A4 { T4 a4[]; };
layout(set = 0, binding = 1) readonly buffer B { T b[]; };
layout(set = 0, binding = 1) readonly buffer B4 { T4 b4[]; };
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"

// Loader modes fixed at compile time for the common layouts (NN, NT), else read at run time.
#ifdef A_MODE
#define AMODE A_MODE
#define BMODE B_MODE
#else
#define AMODE p.a_mode
#define BMODE p.b_mode
#endif

#define BM 128u
#define BN 128u
#define BK 16u

shared float As[BK][BM];   // [k][m]
shared float Bs[BK][BN];   // [k][n]
vec4 ra[2];
vec4 rb[2];

void load_a(uint m0, uint k0, uint base) {
    uint t = gl_LocalInvocationID.x;
    if (AMODE == 2u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint gm = m0 + (e >> 2), gk = k0 + (e & 3u) * 4u;
            ra[i] = (gm < p.M && gk < p.K) ? vec4(a4[(base + gm * p.a_rs + gk) >> 2]) : vec4(0.0);
        }
    } else if (AMODE == 3u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint gk = k0 + (e >> 5), gm = m0 + (e & 31u) * 4u;
            ra[i] = (gm < p.M && gk < p.K) ? vec4(a4[(base + gk * p.a_ks + gm) >> 2]) : vec4(0.0);
        }
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            uint e = t + i * 256u;
            uint mm = AMODE == 0u ? e / BK : e % BM;
            uint kk = AMODE == 0u ? e % BK : e / BM;
            uint gm = m0 + mm, gk = k0 + kk;
            ra[i >> 2][i & 3u] = (gm < p.M && gk < p.K) ? float(a[base + gm * p.a_rs + gk * p.a_ks]) : 0.0;
        }
    }
}

void store_a() {
    uint t = gl_LocalInvocationID.x;
    if (AMODE == 2u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint mm = e >> 2, kq = (e & 3u) * 4u;
            [[unroll]] for (uint c = 0u; c < 4u; c++) As[kq + c][mm] = ra[i][c];
        }
    } else if (AMODE == 3u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint m4 = (e & 31u) * 4u;
            [[unroll]] for (uint c = 0u; c < 4u; c++) As[e >> 5][m4 + c] = ra[i][c];
        }
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            uint e = t + i * 256u;
            uint mm = AMODE == 0u ? e / BK : e % BM;
            uint kk = AMODE == 0u ? e % BK : e / BM;
            As[kk][mm] = ra[i >> 2][i & 3u];
        }
    }
}

void load_b(uint n0, uint k0, uint base) {
    uint t = gl_LocalInvocationID.x;
    if (BMODE == 2u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint gn = n0 + (e >> 2), gk = k0 + (e & 3u) * 4u;
            rb[i] = (gn < p.N && gk < p.K) ? vec4(b4[(base + gn * p.b_ns + gk) >> 2]) : vec4(0.0);
        }
    } else if (BMODE == 3u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint gk = k0 + (e >> 5), gn = n0 + (e & 31u) * 4u;
            rb[i] = (gn < p.N && gk < p.K) ? vec4(b4[(base + gk * p.b_ks + gn) >> 2]) : vec4(0.0);
        }
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            uint e = t + i * 256u;
            uint nn = BMODE == 0u ? e / BK : e % BN;
            uint kk = BMODE == 0u ? e % BK : e / BN;
            uint gn = n0 + nn, gk = k0 + kk;
            rb[i >> 2][i & 3u] = (gn < p.N && gk < p.K) ? float(b[base + gk * p.b_ks + gn * p.b_ns]) : 0.0;
        }
    }
}

void store_b() {
    uint t = gl_LocalInvocationID.x;
    if (BMODE == 2u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint nn = e >> 2, kq = (e & 3u) * 4u;
            [[unroll]] for (uint c = 0u; c < 4u; c++) Bs[kq + c][nn] = rb[i][c];
        }
    } else if (BMODE == 3u) {
        [[unroll]] for (uint i = 0u; i < 2u; i++) {
            uint e = t + i * 256u;
            uint n4 = (e & 31u) * 4u;
            [[unroll]] for (uint c = 0u; c < 4u; c++) Bs[e >> 5][n4 + c] = rb[i][c];
        }
    } else {
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            uint e = t + i * 256u;
            uint nn = BMODE == 0u ? e / BK : e % BN;
            uint kk = BMODE == 0u ? e % BK : e / BN;
            Bs[kk][nn] = rb[i >> 2][i & 3u];
        }
    }
}

void main() {
    uint t = gl_LocalInvocationID.x;
    uint tx = t & 15u, ty = t >> 4;
    uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    vec4 acc[8][2];
    [[unroll]] for (uint i = 0u; i < 8u; i++) { acc[i][0] = vec4(0.0); acc[i][1] = vec4(0.0); }

    load_a(m0, 0u, abase);
    load_b(n0, 0u, bbase);
    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        barrier();
        store_a();
        store_b();
        barrier();
        if (k0 + BK < p.K) {
            load_a(m0, k0 + BK, abase);
            load_b(n0, k0 + BK, bbase);
        }
        [[unroll]] for (uint kk = 0u; kk < BK; kk++) {
            uint r = ty * 4u, q = tx * 4u;
            vec4 av[2] = vec4[2](vec4(As[kk][r], As[kk][r + 1u], As[kk][r + 2u], As[kk][r + 3u]),
                                 vec4(As[kk][r + 64u], As[kk][r + 65u], As[kk][r + 66u], As[kk][r + 67u]));
            vec4 bv[2] = vec4[2](vec4(Bs[kk][q], Bs[kk][q + 1u], Bs[kk][q + 2u], Bs[kk][q + 3u]),
                                 vec4(Bs[kk][q + 64u], Bs[kk][q + 65u], Bs[kk][q + 66u], Bs[kk][q + 67u]));
            [[unroll]] for (uint i = 0u; i < 8u; i++) {
                float x = av[i >> 2][i & 3u];
                acc[i][0] += x * bv[0];
                acc[i][1] += x * bv[1];
            }
        }
    }

    uint cbase = z * p.M * p.N;
    [[unroll]] for (uint i = 0u; i < 8u; i++) {
        uint gm = m0 + (i >> 2) * 64u + ty * 4u + (i & 3u);
        if (gm >= p.M) continue;
        [[unroll]] for (uint j = 0u; j < 2u; j++) {
            [[unroll]] for (uint q = 0u; q < 4u; q++) {
                uint gn = n0 + j * 64u + tx * 4u + q;
                if (gn < p.N) {
                    uint idx = cbase + gm * p.N + gn;
                    float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
                    c[idx] = TO(epilogue(acc[i][j][q], old, gn));
                }
            }
        }
    }
}
