#version 450
// Rotary position embedding on x [.., seq, heads, head_dim]; one thread per rotated pair.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) readonly buffer X { T x[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P {
    uint pairs;       // total pairs = numel / 2
    uint seq;
    uint heads;
    uint head_dim;
    uint position;    // absolute position of sequence index 0
    uint interleaved; // GPT-J pairs (2i, 2i+1) instead of halves (i, i + d/2)
    float theta;
} p;

void main() {
    uint g = flat_group() * 256u + gl_LocalInvocationID.x;
    if (g >= p.pairs) return;
    uint half_d = p.head_dim / 2u;
    uint i = g % half_d;
    uint row = g / half_d;                 // index over [.., seq, heads]
    uint s = (row / p.heads) % p.seq;
    uint base = row * p.head_dim;
    uint i0 = p.interleaved != 0u ? base + 2u * i : base + i;
    uint i1 = p.interleaved != 0u ? i0 + 1u : i0 + half_d;
    // Angle in f32 like the CPU reference: pos * theta^(-2i/d).
    float freq = pow(p.theta, -2.0 * float(i) / float(p.head_dim));
    float ang = float(p.position + s) * freq;
    float c = cos(ang), sn = sin(ang);
    float a = float(x[i0]), b = float(x[i1]);
    o[i0] = T(a * c - b * sn);
    o[i1] = T(a * sn + b * c);
}
