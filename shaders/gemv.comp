#version 450
// Matrix-vector product for m == 1 (decode), bandwidth bound.
// b_mode 2: B is k-contiguous (weights [N, K]): one workgroup per output, 16-byte loads,
//           subgroup reductions.  b_mode 0: the same with scalar loads (odd K or strides).
// b_mode 1: B is n-contiguous ([K, N]): 64 outputs per workgroup, K split over 4 slices.
#include "common.glsl"
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
    if (p.b_mode == 1u) {
        uint n = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 64u + (t & 63u);
        uint slice = t >> 6;
        uint chunk = (p.K + 3u) / 4u;
        uint k1 = min(p.K, (slice + 1u) * chunk);
        float s = 0.0;
        if (n < p.N) {
            for (uint k = slice * chunk; k < k1; k++)
                s += float(a[abase + k * p.a_ks]) * float(b[bbase + k * p.b_ks + n * p.b_ns]);
        }
        part[t] = s;
        barrier();
        if (slice == 0u && n < p.N) store(z, n, part[t] + part[t + 64u] + part[t + 128u] + part[t + 192u]);
        return;
    }
    uint n = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (n >= p.N) return;
    float s = 0.0;
    if (p.b_mode == 2u) {
        uint nv = p.K / VEC;
        uint ab = abase / VEC, bb = (bbase + n * p.b_ns) / VEC;
        for (uint i = t; i < nv; i += 256u) s += dot_vec(ab + i, bb + i);
    } else {
        for (uint k = t; k < p.K; k += 256u)
            s += float(a[abase + k * p.a_ks]) * float(b[bbase + k * p.b_ks + n * p.b_ns]);
    }
    s = subgroupAdd(s);
    if (subgroupElect()) part[gl_SubgroupID] = s;
    barrier();
    if (t == 0u) {
        float tot = 0.0;
        for (uint i = 0u; i < gl_NumSubgroups; i++) tot += part[i];
        store(z, n, tot);
    }
}
