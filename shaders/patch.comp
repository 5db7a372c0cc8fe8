#version 450
// Brings what an op wrote through view w (its dense copy, binding 0) into the dense copy of
// another view r of the same buffer (binding 4): one thread per element of w, which lands at
// its place in r's packing, or nowhere when r does not read it (pack.rs: patch_push).
#include "common.glsl"
layout(local_size_x = 256) in;
#ifdef B16
#define E float16_t  // moved, never computed on: the f16 views' own type
#else
#define E uint
#endif
layout(set = 0, binding = 0) readonly buffer W { E w[]; };
layout(set = 0, binding = 4) buffer R { E r[]; };
layout(push_constant) uniform P {
    uvec4 w_shape;
    uvec4 w_stride;
    uvec4 r_shape;  // r's dims by decreasing stride; padding has stride 0
    uvec4 r_stride;
    uvec4 r_packed;
    uint w_base;
    uint r_base;
    uint n;
} p;

void main() {
    uint i = flat_group() * 256u + gl_LocalInvocationID.x;
    if (i >= p.n) return;
    // w's index of element i (row-major), then its address in the buffer.
    uint rest = i;
    uint addr = p.w_base;
    for (int d = 3; d >= 0; d--) {
        uint idx = rest % p.w_shape[d];
        rest /= p.w_shape[d];
        addr += idx * p.w_stride[d];
    }
    if (addr < p.r_base) return;
    uint rel = addr - p.r_base;
    uint at = 0u;
    for (int d = 0; d < 4; d++) {
        if (p.r_stride[d] == 0u) continue;
        uint idx = rel / p.r_stride[d];
        if (idx >= p.r_shape[d]) return;
        rel -= idx * p.r_stride[d];
        at += idx * p.r_packed[d];
    }
    if (rel != 0u) return;
    r[at] = w[i];
}
