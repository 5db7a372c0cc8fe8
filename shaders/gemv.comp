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
#define ROWS 16u

// x[ai] against two weight rows at once, so x is loaded once for both.
vec2 dot2(uint ai, uint b0, uint b1) {
#ifdef F16
    uvec4 x = av[ai], y0 = bv[b0], y1 = bv[b1];
    vec2 s = vec2(0.0);
    for (uint i = 0u; i < 4u; i++) {
        vec2 xa = unpackHalf2x16(x[i]);
        s.x += dot(xa, unpackHalf2x16(y0[i]));
        s.y += dot(xa, unpackHalf2x16(y1[i]));
    }
    return s;
#else
    vec4 x = av[ai];
    return vec2(dot(x, bv[b0]), dot(x, bv[b1]));
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
    // ROWS outputs per workgroup whatever the subgroup size the driver picks; each
    // subgroup takes two rows at a time.
    uint lane = gl_SubgroupInvocationID, S = gl_SubgroupSize;
    for (uint r = 2u * gl_SubgroupID; r < ROWS; r += 2u * gl_NumSubgroups) {
        uint n = wg * ROWS + r;
        if (n >= p.N) break;
        bool two = n + 1u < p.N;
        uint n1 = two ? n + 1u : n;
        vec2 s0 = vec2(0.0), s1 = vec2(0.0);
        if (p.b_mode == 2u) {
            uint nv = p.K / VEC;
            uint ab = abase / VEC;
            uint b0 = (bbase + n * p.b_ns) / VEC, b1 = (bbase + n1 * p.b_ns) / VEC;
            uint i = lane;
            for (; i + S < nv; i += 2u * S) {
                s0 += dot2(ab + i, b0 + i, b1 + i);
                s1 += dot2(ab + i + S, b0 + i + S, b1 + i + S);
            }
            for (; i < nv; i += S) s0 += dot2(ab + i, b0 + i, b1 + i);
        } else {
            for (uint k = lane; k < p.K; k += S) {
                float x = float(a[abase + k * p.a_ks]);
                s0.x += x * float(b[bbase + k * p.b_ks + n * p.b_ns]);
                s0.y += x * float(b[bbase + k * p.b_ks + n1 * p.b_ns]);
            }
        }
        vec2 tot = subgroupAdd(s0 + s1);
        if (subgroupElect()) {
            store(z, n, tot.x);
            if (two) store(z, n1, tot.y);
        }
    }
}
