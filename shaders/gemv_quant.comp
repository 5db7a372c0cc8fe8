#version 450
// C = epilogue(A B^T) for a block-quantized B ([N, K], blocks along K) and a few rows of A
// (decode: M <= 8). Bandwidth bound on the weights, so each weight is read once for every row
// of A and dequantised in registers. A workgroup of 64 threads owns NR rows of B
// (specialisation constant 0); thread t walks the units of 8 weights t, t + 64, ... of each
// row, so adjacent threads read adjacent bytes, and the activations it loads serve all NR
// rows. Then a subgroup sum, and one over the subgroups, per output. NM (constant 1) is M.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint NR = 1u;
layout(constant_id = 1) const uint NM = 1u;
#ifdef F16
layout(set = 0, binding = 0) readonly buffer AV { uvec2 av[]; };
#else
layout(set = 0, binding = 0) readonly buffer AV { vec4 av[]; };
#endif
layout(set = 0, binding = 1) readonly buffer BQ { uint bq[]; };
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"
#include "quant.glsl"

#define WG 64u
// Per subgroup, its sum of each output (NR * NM <= 32; at most 64 subgroups).
shared float part[WG * 32u];

// Elements e .. e+3 of A (e a multiple of 4: rows are whole blocks).
vec4 a4(uint e) {
#ifdef F16
    uvec2 h = av[e >> 2u];
    return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
#else
    return av[e >> 2u];
#endif
}

void main() {
    uint t = gl_LocalInvocationID.x, z = gl_WorkGroupID.z;
    uint n0 = flat_group() * NR;
    if (n0 >= p.N) return;
    uint row_bytes = (p.K / QK) * QB;
    uint abase = z * p.a_bs;
    uint rows[NR];
    float acc[NR][NM];
    [[unroll]] for (uint r = 0u; r < NR; r++) {
        // Rows past N repeat the last one (loads stay in range; their sums are dropped).
        rows[r] = min(n0 + r, p.N - 1u) * row_bytes;
        [[unroll]] for (uint i = 0u; i < NM; i++) acc[r][i] = 0.0;
    }
    uint units = p.K / 8u;
    for (uint u = t; u < units; u += WG) {
        uint blk = u / UPB, s = u % UPB;
        vec4 w0[NR], w1[NR];
        uint k0, k1;
        // Every weight load of this step first, then the arithmetic.
        [[unroll]] for (uint r = 0u; r < NR; r++) {
            uint base = rows[r] + blk * QB;
            dequant8(base, s, block_dm(base), w0[r], w1[r], k0, k1);
        }
        uint kb = blk * QK;
        [[unroll]] for (uint i = 0u; i < NM; i++) {
            uint ar = abase + i * p.a_rs + kb;
            vec4 x0 = a4(ar + k0), x1 = a4(ar + k1);
            [[unroll]] for (uint r = 0u; r < NR; r++) acc[r][i] += dot(w0[r], x0) + dot(w1[r], x1);
        }
    }
    uint outs = NR * NM;
    [[unroll]] for (uint r = 0u; r < NR; r++) {
        [[unroll]] for (uint i = 0u; i < NM; i++) {
            float v = subgroupAdd(acc[r][i]);
            if (subgroupElect()) part[gl_SubgroupID * outs + r * NM + i] = v;
        }
    }
    barrier();
    if (t < outs) {
        uint r = t / NM, i = t % NM, n = n0 + r;
        float tot = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++) tot += part[g * outs + t];
        if (n < p.N) {
            uint idx = (z * p.M + i) * p.N + n;
            float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
            c[idx] = TO(epilogue(tot, old, n));
        }
    }
}
