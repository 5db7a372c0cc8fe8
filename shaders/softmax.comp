#version 450
// Softmax over the last dimension, one workgroup per row.
#include "common.glsl"
#define WG 256u
layout(local_size_x = 256) in;
#include "reduce.glsl"
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P { uint rows; uint n; } p;

void main() {
    uint row = flat_group();
    if (row >= p.rows) return;
    uint base = row * p.n;
    uint t = gl_LocalInvocationID.x;
    float m = -1.0 / 0.0;
    for (uint i = t; i < p.n; i += WG) m = max(m, float(a[base + i]));
    m = wg_max(m);
    float s = 0.0;
    for (uint i = t; i < p.n; i += WG) s += exp(float(a[base + i]) - m);
    s = wg_sum(s);
    float inv = 1.0 / s;
    for (uint i = t; i < p.n; i += WG) o[base + i] = T(exp(float(a[base + i]) - m) * inv);
}
