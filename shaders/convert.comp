#version 450
// copy with dtype conversion (f32 <-> f16); T is the input type, TO the output type.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer A { T a[]; };
layout(set = 0, binding = 4) writeonly buffer O { TO o[]; };
layout(push_constant) uniform P { uint n; } p;

void main() {
    uint i = flat_group() * 256u + gl_LocalInvocationID.x;
    if (i >= p.n) return;
    o[i] = TO(float(a[i]));
}
