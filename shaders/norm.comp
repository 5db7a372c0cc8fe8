#version 450
// rmsnorm (mode 0) and layernorm (mode 1) over the last dimension, one workgroup per row.
#include "common.glsl"
#define WG 256u
layout(local_size_x = 256) in;
#include "reduce.glsl"
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
layout(set = 0, binding = 1) readonly buffer W { T w[]; };
layout(set = 0, binding = 2) readonly buffer Bi { T bias[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P {
    uint rows;
    uint n;
    uint mode;
    uint has_weight;
    uint has_bias;
    float eps;
} p;

void main() {
    uint row = flat_group();
    if (row >= p.rows) return;
    uint base = row * p.n;
    uint t = gl_LocalInvocationID.x;
    float mean = 0.0;
    if (p.mode == 1u) {
        float s = 0.0;
        for (uint i = t; i < p.n; i += WG) s += float(x[base + i]);
        mean = wg_sum(s) / float(p.n);
    }
    float q = 0.0;
    for (uint i = t; i < p.n; i += WG) {
        float d = float(x[base + i]) - mean;
        q += d * d;
    }
    float inv = inversesqrt(wg_sum(q) / float(p.n) + p.eps);
    for (uint i = t; i < p.n; i += WG) {
        float y = (float(x[base + i]) - mean) * inv;
        if (p.has_weight != 0u) y *= float(w[i]);
        if (p.has_bias != 0u) y += float(bias[i]);
        o[base + i] = T(y);
    }
}
