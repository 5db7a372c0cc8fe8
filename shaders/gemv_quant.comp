#version 450
// C = epilogue(A B^T) for a block-quantized B ([N, K], blocks along K) and a few rows of A
// (decode: M <= 8). Bandwidth bound on the weights, so the design is about keeping enough
// weight bytes in flight, with every weight read once for all rows of A:
// - A workgroup of WG threads (constant 2) owns NR rows of B (constant 0); the rows run side
//   by side, so each activation load serves NR rows.
// - The unit of work is 8 weights of a block (quant.glsl): adjacent threads take adjacent
//   units, so a subgroup reads a contiguous run of blocks and of activations. Each thread
//   takes US units (constant 3) WG apart in one step and issues the loads of all US * NR of
//   them before any arithmetic, then dequantises in registers (no int-to-float conversions:
//   quant.glsl's bytes_less).
// - Then a subgroup sum per output and one over the subgroups (shared memory), and the
//   epilogue. NM (constant 1) is M, the rows of A (at most 8).
// Subgroups of at least 4 invocations are assumed (the planner checks the device's size).
// DENSE_F16: plain f16 weights through the same structure (dense_f16.glsl: a unit is 8
// halves, one 16-byte load), the f16 GEMV under NPUHYBRID_VULKAN_GEMV=rows.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x_id = 2) in;
layout(constant_id = 0) const uint NR = 1u;
layout(constant_id = 1) const uint NM = 1u;
layout(constant_id = 2) const uint WG = 128u;
layout(constant_id = 3) const uint US = 2u;
#ifdef F16
layout(set = 0, binding = 0) readonly buffer AV { uvec2 av[]; };
#else
layout(set = 0, binding = 0) readonly buffer AV { vec4 av[]; };
#endif
#ifndef DENSE_F16
layout(set = 0, binding = 1) readonly buffer BQ { uint bq[]; };
#endif
layout(set = 0, binding = 2) readonly buffer Bias { TO bias[]; };
layout(set = 0, binding = 4) buffer C { TO c[]; };
#include "matmul_params.glsl"
#ifdef DENSE_F16
#include "dense_f16.glsl"
#else
#include "quant.glsl"
#endif

// Per subgroup (at most WG / 4 of them), its sum of each of the NR * NM outputs.
shared float part[(WG / 4u) * NR * NM];

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
    for (uint u0 = t; u0 < units; u0 += WG * US) {
        // Every weight load of the step first: US units of NR rows.
        uvec4 raw[US][NR];
        [[unroll]] for (uint j = 0u; j < US; j++) {
            // Units past the row's end repeat its last one (loads stay in range; not summed).
            uint u = min(u0 + j * WG, units - 1u);
            uint blk = u / UPB, s = u % UPB;
            [[unroll]] for (uint r = 0u; r < NR; r++) raw[j][r] = unit_words(rows[r] + blk * QB, s);
        }
        [[unroll]] for (uint j = 0u; j < US; j++) {
            uint u = u0 + j * WG;
            if (j > 0u && u >= units) break;
            uint blk = u / UPB, s = u % UPB;
            uint k0, k1;
            unit_ks(s, k0, k1);
            // Dequantise: the unit's 8 quants of each row less their bias, exact in f32, and
            // its block's scale and offset.
            vec4 w0[NR], w1[NR];
            vec2 dm[NR];
            [[unroll]] for (uint r = 0u; r < NR; r++) unit_weights(raw[j][r], rows[r] + blk * QB, dm[r], w0[r], w1[r]);
            uint kb = abase + blk * QK;
            [[unroll]] for (uint i = 0u; i < NM; i++) {
                uint ar = kb + i * p.a_rs;
                vec4 x0 = a4(ar + k0), x1 = a4(ar + k1);
#if defined(Q4_1) || defined(Q4G128)
                // sum (d q + m) x = d sum q x + m sum x: the sum of x serves every row.
                float xs = dot(x0 + x1, vec4(1.0));
#endif
                [[unroll]] for (uint r = 0u; r < NR; r++) {
                    float qx = dot(w0[r], x0) + dot(w1[r], x1);
#if defined(Q4_1) || defined(Q4G128)
                    acc[r][i] += dm[r].x * qx + dm[r].y * xs;
#else
                    acc[r][i] += dm[r].x * qx;
#endif
                }
            }
        }
    }
    const uint OUTS = NR * NM;
    [[unroll]] for (uint r = 0u; r < NR; r++) {
        [[unroll]] for (uint i = 0u; i < NM; i++) {
            float v = subgroupAdd(acc[r][i]);
            if (subgroupElect()) part[gl_SubgroupID * OUTS + r * NM + i] = v;
        }
    }
    barrier();
    for (uint o = t; o < OUTS; o += WG) {
        uint r = o / NM, i = o % NM, n = n0 + r;
        float tot = 0.0;
        for (uint g = 0u; g < gl_NumSubgroups; g++) tot += part[g * OUTS + o];
        if (n < p.N) {
            uint idx = (z * p.M + i) * p.N + n;
            float old = p.beta != 0.0 ? float(c[idx]) : 0.0;
            c[idx] = TO(epilogue(tot, old, n));
        }
    }
}
