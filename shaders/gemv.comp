#version 450
// Matrix-vector product for m == 1 (decode): bandwidth bound, so every mode streams the
// weights along their rows in 16-byte loads and keeps several loads in flight per thread.
// b_mode 2: B is k-contiguous (weights [N, K]): each subgroup owns RPS rows (specialisation
//           constant 0) and reads x once for all of them, two steps of 16 bytes per row in
//           flight; a subgroup reduction per row.
// b_mode 3: B is n-contiguous ([K, N]): each thread owns VEC adjacent columns and walks K with
//           a stride of 256 / CG rows (CG, constant 1, threads side by side along a row), so a
//           row segment of CG*16 bytes is read whole; four rows in flight, then a tree
//           reduction over the K slices in shared memory.
// b_mode 0 / 1: scalar loads for odd K or N (k-contiguous / n-contiguous).
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint RPS = 2u;
layout(constant_id = 1) const uint CG = 4u;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 1) readonly buffer B { T b[]; };
#ifdef F16
layout(set = 0, binding = 0) readonly buffer AV { uvec4 av[]; };
layout(set = 0, binding = 1) readonly buffer BV { uvec4 bv[]; };
#define VEC 8u
#define W uvec4
#else
layout(set = 0, binding = 0) readonly buffer AV { vec4 av[]; };
layout(set = 0, binding = 1) readonly buffer BV { vec4 bv[]; };
#define VEC 4u
#define W vec4
#endif
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"

// Row groups per workgroup in the k-contiguous modes: 8 whatever the subgroup size the
// driver picks (fewer subgroups loop).
#define GROUPS 8u
shared float part[256 * VEC];

float dotw(W x, W y) {
#ifdef F16
    float s = 0.0;
    [[unroll]] for (uint i = 0u; i < 4u; i++) s += dot(unpackHalf2x16(x[i]), unpackHalf2x16(y[i]));
    return s;
#else
    return dot(x, y);
#endif
}

// y * x, lane by lane, added to acc (VEC values as two vec4).
void axpy(inout vec4 lo, inout vec4 hi, float x, W y) {
#ifdef F16
    lo += x * vec4(unpackHalf2x16(y.x), unpackHalf2x16(y.y));
    hi += x * vec4(unpackHalf2x16(y.z), unpackHalf2x16(y.w));
#else
    lo += x * y;
#endif
}

void store(uint z, uint n, float acc) {
    uint idx = z * p.N + n;
    float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
    c[idx] = TO(epilogue(acc, old, n));
}

// b_mode 2 and 0: rows of B along k.
void rows_along_k(uint z, uint wg, bool vec) {
    uint lane = gl_SubgroupInvocationID, S = gl_SubgroupSize;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    for (uint g = gl_SubgroupID; g < GROUPS; g += gl_NumSubgroups) {
        uint n0 = (wg * GROUPS + g) * RPS;
        if (n0 >= p.N) break;
        float acc[RPS];
        uint row[RPS];
        [[unroll]] for (uint r = 0u; r < RPS; r++) {
            acc[r] = 0.0;
            // Rows past N repeat the last one (loads stay in range; their sums are dropped).
            row[r] = bbase + min(n0 + r, p.N - 1u) * p.b_ns;
        }
        if (vec) {
            uint nv = p.K / VEC, ab = abase / VEC;
            [[unroll]] for (uint r = 0u; r < RPS; r++) row[r] /= VEC;
            uint i = lane;
            for (; i + S < nv; i += 2u * S) {
                W x0 = av[ab + i], x1 = av[ab + i + S];
                W w0[RPS], w1[RPS];
                [[unroll]] for (uint r = 0u; r < RPS; r++) {
                    w0[r] = bv[row[r] + i];
                    w1[r] = bv[row[r] + i + S];
                }
                [[unroll]] for (uint r = 0u; r < RPS; r++) acc[r] += dotw(x0, w0[r]) + dotw(x1, w1[r]);
            }
            if (i < nv) {
                W x0 = av[ab + i];
                [[unroll]] for (uint r = 0u; r < RPS; r++) acc[r] += dotw(x0, bv[row[r] + i]);
            }
        } else {
            for (uint k = lane; k < p.K; k += S) {
                float x = float(a[abase + k * p.a_ks]);
                [[unroll]] for (uint r = 0u; r < RPS; r++) acc[r] += x * float(b[row[r] + k * p.b_ks]);
            }
        }
        [[unroll]] for (uint r = 0u; r < RPS; r++) {
            float tot = subgroupAdd(acc[r]);
            if (lane == 0u && n0 + r < p.N) store(z, n0 + r, tot);
        }
    }
}

// b_mode 3: B is [K, N] with N % VEC == 0; this workgroup owns CG * VEC columns.
void rows_along_n(uint z, uint wg) {
    uint t = gl_LocalInvocationID.x;
    uint KR = 256u / CG;
    uint cg = t % CG, kr = t / CG;
    uint col = (wg * CG + cg) * VEC;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    vec4 lo = vec4(0.0), hi = vec4(0.0);
    if (col < p.N) {
        uint bc = (bbase + col) / VEC, rs = p.b_ks / VEC;
        uint k = kr;
        for (; k + 3u * KR < p.K; k += 4u * KR) {
            W y0 = bv[bc + k * rs], y1 = bv[bc + (k + KR) * rs];
            W y2 = bv[bc + (k + 2u * KR) * rs], y3 = bv[bc + (k + 3u * KR) * rs];
            float x0 = float(a[abase + k]), x1 = float(a[abase + k + KR]);
            float x2 = float(a[abase + k + 2u * KR]), x3 = float(a[abase + k + 3u * KR]);
            axpy(lo, hi, x0, y0);
            axpy(lo, hi, x1, y1);
            axpy(lo, hi, x2, y2);
            axpy(lo, hi, x3, y3);
        }
        for (; k < p.K; k += KR) axpy(lo, hi, float(a[abase + k]), bv[bc + k * rs]);
    }
    // Tree over the K slices: slice kr adds slice kr + s, same columns.
    uint base = t * VEC;
    [[unroll]] for (uint j = 0u; j < 4u; j++) part[base + j] = lo[j];
#ifdef F16
    [[unroll]] for (uint j = 0u; j < 4u; j++) part[base + 4u + j] = hi[j];
#endif
    barrier();
    for (uint s = KR / 2u; s > 0u; s >>= 1u) {
        if (kr < s) {
            uint other = (t + s * CG) * VEC;
            [[unroll]] for (uint j = 0u; j < VEC; j++) part[base + j] += part[other + j];
        }
        barrier();
    }
    if (kr == 0u && col < p.N) {
        [[unroll]] for (uint j = 0u; j < VEC; j++) store(z, col + j, part[base + j]);
    }
}

// b_mode 1: B is [K, N] with N % VEC != 0: 32 columns per workgroup, K split over 8 slices.
void scalar_along_n(uint z, uint wg) {
    uint t = gl_LocalInvocationID.x;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    uint n = wg * 32u + (t & 31u);
    uint slice = t >> 5;
    uint chunk = (p.K + 7u) / 8u;
    uint k = slice * chunk;
    uint k1 = min(p.K, k + chunk);
    float s0 = 0.0, s1 = 0.0;
    if (n < p.N) {
        uint bn = bbase + n * p.b_ns;
        for (; k + 1u < k1; k += 2u) {
            s0 += float(a[abase + k * p.a_ks]) * float(b[bn + k * p.b_ks]);
            s1 += float(a[abase + (k + 1u) * p.a_ks]) * float(b[bn + (k + 1u) * p.b_ks]);
        }
        if (k < k1) s0 += float(a[abase + k * p.a_ks]) * float(b[bn + k * p.b_ks]);
    }
    part[t] = s0 + s1;
    barrier();
    if (slice == 0u && n < p.N) {
        float tot = 0.0;
        [[unroll]] for (uint i = 0u; i < 8u; i++) tot += part[t + 32u * i];
        store(z, n, tot);
    }
}

void main() {
    uint z = gl_WorkGroupID.z;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (p.b_mode == 3u) rows_along_n(z, wg);
    else if (p.b_mode == 1u) scalar_along_n(z, wg);
    else rows_along_k(z, wg, p.b_mode == 2u);
}
