#version 450
// C = epilogue(A·B): 128x128 tile per workgroup, 256 threads each computing 8x8 in
// registers, K in steps of 16 through two shared-memory stages: the next step's global loads
// are in flight while the current stage is multiplied, then stored into the other stage, so
// one barrier per step suffices (one stage needed two). Accumulators and prefetch registers are
// plain variables, not arrays: a driver compiler that does not unroll would otherwise keep
// arrays in (slow) local memory.
// QUANT_B: B is a block-quantized weight [N, K] (quant.glsl), dequantised by the tile loader
// (B_MODE 2: four weights along k at a time); A and the rest are unchanged.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 0) readonly buffer A4 { T4 a4[]; };
#ifdef QUANT_B
layout(set = 0, binding = 1) readonly buffer BQ { uint bq[]; };
#else
layout(set = 0, binding = 1) readonly buffer B { T b[]; };
layout(set = 0, binding = 1) readonly buffer B4 { T4 b4[]; };
#endif
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"
#ifdef QUANT_B
#include "quant.glsl"
#endif

// Loader modes fixed at compile time for the common layouts (NN, NT), else read at run time.
#ifdef A_MODE
#define AMODE A_MODE
#else
#define AMODE p.a_mode
#endif
#ifdef B_MODE
#define BMODE B_MODE
#else
#define BMODE p.b_mode
#endif

#define BM 128u
#define BN 128u
#define BK 16u

shared float As[2][BK][BM];   // [stage][k][m]
shared float Bs[2][BK][BN];   // [stage][k][n]
vec4 ra0, ra1, rb0, rb1;

// Element e of a 128 x 16 tile of an operand whose element (r, k) is x[base + r*rs + k*ks],
// in the order of the scalar modes (0: k fastest, 1: r fastest).
uint scalar_r(uint mode, uint e) { return mode == 0u ? e / BK : e % BM; }
uint scalar_k(uint mode, uint e) { return mode == 0u ? e % BK : e / BM; }

vec4 vload_a(uint mode, uint m0, uint k0, uint base, uint e) {
    uint gm, gk;
    if (mode == 2u) { gm = m0 + (e >> 2); gk = k0 + (e & 3u) * 4u; }
    else { gk = k0 + (e >> 5); gm = m0 + (e & 31u) * 4u; }
    bool ok = gm < p.M && gk < p.K;
    return ok ? vec4(a4[(base + gm * p.a_rs + gk * p.a_ks) >> 2]) : vec4(0.0);
}

vec4 sload_a(uint mode, uint m0, uint k0, uint base, uint e0) {
    vec4 v;
    for (uint c = 0u; c < 4u; c++) {
        uint e = e0 + c * 256u;
        uint gm = m0 + scalar_r(mode, e), gk = k0 + scalar_k(mode, e);
        v[c] = (gm < p.M && gk < p.K) ? float(a[base + gm * p.a_rs + gk * p.a_ks]) : 0.0;
    }
    return v;
}

#ifdef QUANT_B
// Weights (gn, gk .. gk+3) of the quantized B (K is a whole number of blocks).
vec4 vload_b(uint mode, uint n0, uint k0, uint base, uint e) {
    uint gn = n0 + (e >> 2), gk = k0 + (e & 3u) * 4u;
    if (gn >= p.N || gk >= p.K) return vec4(0.0);
    uint blk = (gn * (p.K / QK) + gk / QK) * QB;
    return dequant4(blk, gk % QK, block_dm(blk));
}
#else
vec4 vload_b(uint mode, uint n0, uint k0, uint base, uint e) {
    uint gn, gk;
    if (mode == 2u) { gn = n0 + (e >> 2); gk = k0 + (e & 3u) * 4u; }
    else { gk = k0 + (e >> 5); gn = n0 + (e & 31u) * 4u; }
    bool ok = gn < p.N && gk < p.K;
    return ok ? vec4(b4[(base + gn * p.b_ns + gk * p.b_ks) >> 2]) : vec4(0.0);
}

vec4 sload_b(uint mode, uint n0, uint k0, uint base, uint e0) {
    vec4 v;
    for (uint c = 0u; c < 4u; c++) {
        uint e = e0 + c * 256u;
        uint gn = n0 + scalar_r(mode, e), gk = k0 + scalar_k(mode, e);
        v[c] = (gn < p.N && gk < p.K) ? float(b[base + gk * p.b_ks + gn * p.b_ns]) : 0.0;
    }
    return v;
}
#endif

void load(uint m0, uint n0, uint k0, uint abase, uint bbase) {
    uint t = gl_LocalInvocationID.x;
    if (AMODE >= 2u) {
        ra0 = vload_a(AMODE, m0, k0, abase, t);
        ra1 = vload_a(AMODE, m0, k0, abase, t + 256u);
    } else {
        ra0 = sload_a(AMODE, m0, k0, abase, t);
        ra1 = sload_a(AMODE, m0, k0, abase, t + 1024u);
    }
#ifdef QUANT_B
    rb0 = vload_b(BMODE, n0, k0, bbase, t);
    rb1 = vload_b(BMODE, n0, k0, bbase, t + 256u);
#else
    if (BMODE >= 2u) {
        rb0 = vload_b(BMODE, n0, k0, bbase, t);
        rb1 = vload_b(BMODE, n0, k0, bbase, t + 256u);
    } else {
        rb0 = sload_b(BMODE, n0, k0, bbase, t);
        rb1 = sload_b(BMODE, n0, k0, bbase, t + 1024u);
    }
#endif
}

// Writes a prefetched vec4 into a [k][r] tile.
#define PUT(S, MODE, E, V) \
    if (MODE == 2u) { \
        uint r_ = (E) >> 2, k_ = ((E) & 3u) * 4u; \
        S[k_][r_] = V.x; S[k_ + 1u][r_] = V.y; S[k_ + 2u][r_] = V.z; S[k_ + 3u][r_] = V.w; \
    } else if (MODE == 3u) { \
        uint k_ = (E) >> 5, r_ = ((E) & 31u) * 4u; \
        S[k_][r_] = V.x; S[k_][r_ + 1u] = V.y; S[k_][r_ + 2u] = V.z; S[k_][r_ + 3u] = V.w; \
    } else { \
        for (uint c_ = 0u; c_ < 4u; c_++) { \
            uint e_ = (E) + c_ * 256u; \
            S[scalar_k(MODE, e_)][scalar_r(MODE, e_)] = V[c_]; \
        } \
    }

void store(uint t, uint st) {
    uint e1a = AMODE >= 2u ? t + 256u : t + 1024u;
    uint e1b = BMODE >= 2u ? t + 256u : t + 1024u;
    PUT(As[st], AMODE, t, ra0)
    PUT(As[st], AMODE, e1a, ra1)
    PUT(Bs[st], BMODE, t, rb0)
    PUT(Bs[st], BMODE, e1b, rb1)
}

void store_row(uint cbase, uint gm, uint gn0, vec4 lo, vec4 hi) {
    if (gm >= p.M) return;
    for (uint h = 0u; h < 2u; h++) {
        vec4 v = h == 0u ? lo : hi;
        for (uint q = 0u; q < 4u; q++) {
            uint gn = gn0 + h * 64u + q;
            if (gn < p.N) {
                uint idx = cbase + gm * p.N + gn;
                float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
                c[idx] = TO(epilogue(v[q], old, gn));
            }
        }
    }
}

#define FMA_ROW(I, X) c##I##a += (X) * b0; c##I##b += (X) * b1;

void main() {
    uint t = gl_LocalInvocationID.x;
    uint tx = t & 15u, ty = t >> 4;
    uvec2 tile = tile_of_workgroup();
    uint n0 = tile.x * BN, m0 = tile.y * BM, z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    vec4 c0a = vec4(0.0), c0b = vec4(0.0), c1a = vec4(0.0), c1b = vec4(0.0);
    vec4 c2a = vec4(0.0), c2b = vec4(0.0), c3a = vec4(0.0), c3b = vec4(0.0);
    vec4 c4a = vec4(0.0), c4b = vec4(0.0), c5a = vec4(0.0), c5b = vec4(0.0);
    vec4 c6a = vec4(0.0), c6b = vec4(0.0), c7a = vec4(0.0), c7b = vec4(0.0);
    uint r = ty * 4u, q = tx * 4u;

    load(m0, n0, 0u, abase, bbase);
    store(t, 0u);
    barrier();
    uint st = 0u;
    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        bool more = k0 + BK < p.K;
        if (more) load(m0, n0, k0 + BK, abase, bbase);
        for (uint kk = 0u; kk < BK; kk++) {
            vec4 a0 = vec4(As[st][kk][r], As[st][kk][r + 1u], As[st][kk][r + 2u], As[st][kk][r + 3u]);
            vec4 a1 = vec4(As[st][kk][r + 64u], As[st][kk][r + 65u], As[st][kk][r + 66u], As[st][kk][r + 67u]);
            vec4 b0 = vec4(Bs[st][kk][q], Bs[st][kk][q + 1u], Bs[st][kk][q + 2u], Bs[st][kk][q + 3u]);
            vec4 b1 = vec4(Bs[st][kk][q + 64u], Bs[st][kk][q + 65u], Bs[st][kk][q + 66u], Bs[st][kk][q + 67u]);
            FMA_ROW(0, a0.x) FMA_ROW(1, a0.y) FMA_ROW(2, a0.z) FMA_ROW(3, a0.w)
            FMA_ROW(4, a1.x) FMA_ROW(5, a1.y) FMA_ROW(6, a1.z) FMA_ROW(7, a1.w)
        }
        // The other stage was last read before the previous barrier: safe to overwrite.
        if (more) store(t, st ^ 1u);
        barrier();
        st ^= 1u;
    }

    uint cbase = z * p.M * p.N;
    uint gn0 = n0 + q;
    store_row(cbase, m0 + r, gn0, c0a, c0b);
    store_row(cbase, m0 + r + 1u, gn0, c1a, c1b);
    store_row(cbase, m0 + r + 2u, gn0, c2a, c2b);
    store_row(cbase, m0 + r + 3u, gn0, c3a, c3b);
    store_row(cbase, m0 + r + 64u, gn0, c4a, c4b);
    store_row(cbase, m0 + r + 65u, gn0, c5a, c5b);
    store_row(cbase, m0 + r + 66u, gn0, c6a, c6b);
    store_row(cbase, m0 + r + 67u, gn0, c7a, c7b);
}
