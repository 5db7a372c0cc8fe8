#version 450
// Matrix-vector product for m == 1 (decode), bandwidth bound.
// b_mode 2: B is k-contiguous (weights [N, K]): one subgroup per output row, 16-byte loads,
//           four independent accumulators in flight, a subgroup reduction.
// b_mode 0: the same with scalar loads (odd K or strides).
// b_mode 1: B is n-contiguous ([K, N]): 32 outputs per workgroup, K split over 8 slices.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 1) readonly buffer B { T b[]; };
#ifdef F16
layout(set = 0, binding = 0) readonly buffer AV { uvec4 av[]; };
layout(set = 0, binding = 1) readonly buffer BV { uvec4 bv[]; };
#define VEC 8u
#else
layout(set = 0, binding = 0) readonly buffer AV { vec4 av[]; };
layout(set = 0, binding = 1) readonly buffer BV { vec4 bv[]; };
#define VEC 4u
#endif
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"

shared float part[256];
#define ROWS 8u

float dot_vec(uint ai, uint bi) {
#ifdef F16
    uvec4 x = av[ai], y = bv[bi];
    float s = 0.0;
    for (uint i = 0u; i < 4u; i++) {
        vec2 xa = unpackHalf2x16(x[i]);
        vec2 ya = unpackHalf2x16(y[i]);
        s += xa.x * ya.x + xa.y * ya.y;
    }
    return s;
#else
    return dot(av[ai], bv[bi]);
#endif
}

void store(uint z, uint n, float acc) {
    uint idx = z * p.N + n;
    float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
    c[idx] = TO(epilogue(acc, old, n));
}

void main() {
    uint t = gl_LocalInvocationID.x;
    uint z = gl_WorkGroupID.z;
    uint abase = z * p.a_bs, bbase = z * p.b_bs;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (p.b_mode == 1u) {
        uint n = wg * 32u + (t & 31u);
        uint slice = t >> 5;
        uint chunk = (p.K + 7u) / 8u;
        uint k = slice * chunk;
        uint k1 = min(p.K, k + chunk);
        float s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        if (n < p.N) {
            uint bn = bbase + n * p.b_ns;
            for (; k + 3u < k1; k += 4u) {
                s0 += float(a[abase + k * p.a_ks]) * float(b[bn + k * p.b_ks]);
                s1 += float(a[abase + (k + 1u) * p.a_ks]) * float(b[bn + (k + 1u) * p.b_ks]);
                s2 += float(a[abase + (k + 2u) * p.a_ks]) * float(b[bn + (k + 2u) * p.b_ks]);
                s3 += float(a[abase + (k + 3u) * p.a_ks]) * float(b[bn + (k + 3u) * p.b_ks]);
            }
            for (; k < k1; k++) s0 += float(a[abase + k * p.a_ks]) * float(b[bn + k * p.b_ks]);
        }
        part[t] = (s0 + s1) + (s2 + s3);
        barrier();
        if (slice == 0u && n < p.N) {
            float tot = 0.0;
            [[unroll]] for (uint i = 0u; i < 8u; i++) tot += part[t + 32u * i];
            store(z, n, tot);
        }
        return;
    }
    // ROWS outputs per workgroup whatever the subgroup size the driver picks.
    uint lane = gl_SubgroupInvocationID, S = gl_SubgroupSize;
    for (uint r = gl_SubgroupID; r < ROWS; r += gl_NumSubgroups) {
        uint n = wg * ROWS + r;
        if (n >= p.N) break;
        float s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        if (p.b_mode == 2u) {
            uint nv = p.K / VEC;
            uint ab = abase / VEC, bb = (bbase + n * p.b_ns) / VEC;
            uint i = lane;
            for (; i + 3u * S < nv; i += 4u * S) {
                s0 += dot_vec(ab + i, bb + i);
                s1 += dot_vec(ab + i + S, bb + i + S);
                s2 += dot_vec(ab + i + 2u * S, bb + i + 2u * S);
                s3 += dot_vec(ab + i + 3u * S, bb + i + 3u * S);
            }
            for (; i < nv; i += S) s0 += dot_vec(ab + i, bb + i);
        } else {
            for (uint k = lane; k < p.K; k += S)
                s0 += float(a[abase + k * p.a_ks]) * float(b[bbase + k * p.b_ks + n * p.b_ns]);
        }
        float tot = subgroupAdd((s0 + s1) + (s2 + s3));
        if (subgroupElect()) store(z, n, tot);
    }
}
