#version 450
// add / mul with b broadcast to a (shapes padded to rank 4 on the host).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 1) readonly buffer B { T b[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P {
    uint n;
    uint op;        // 0 add, 1 mul
    uvec4 shape;    // of a and the output
    uvec4 bstride;  // of b, 0 where it broadcasts
} p;

void main() {
    uint i = flat_group() * 256u + gl_LocalInvocationID.x;
    if (i >= p.n) return;
    uint r = i;
    uint i3 = r % p.shape.w; r /= p.shape.w;
    uint i2 = r % p.shape.z; r /= p.shape.z;
    uint i1 = r % p.shape.y; r /= p.shape.y;
    uint i0 = r;
    uint j = i0 * p.bstride.x + i1 * p.bstride.y + i2 * p.bstride.z + i3 * p.bstride.w;
    float x = float(a[i]);
    float y = float(b[j]);
    o[i] = T(p.op == 0u ? x + y : x * y);
}
