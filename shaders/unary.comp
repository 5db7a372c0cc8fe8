#version 450
// scale / silu / gelu, elementwise.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P {
    uint n;
    uint op;        // 0 scale, 1 silu, 2 gelu
    float alpha;
    uint gelu_tanh;
} p;

void main() {
    uint i = flat_group() * 256u + gl_LocalInvocationID.x;
    if (i >= p.n) return;
    float x = float(a[i]);
    float y;
    if (p.op == 0u) y = p.alpha * x;
    else if (p.op == 1u) y = silu(x);
    else y = gelu(x, p.gelu_tanh != 0u);
    o[i] = T(y);
}
