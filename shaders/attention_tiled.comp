#version 450
// Scaled dot-product attention for head_dim <= TD, flash-attention style: one workgroup per
// (batch, head, block of 64 query rows), one query row per thread. Keys and values go through
// shared memory in tiles of 64, read once per block (the one-row-per-workgroup shader,
// attention.comp, re-reads them for every row); each thread keeps its query, its output row
// and an online softmax (running max and sum) in registers. Same contract as attention.comp:
// q [B, H, Sq, D], k/v [B, Hkv, Skv, D] contiguous, optional additive mask with broadcast
// strides over [B, H, Sq, Skv], keys past kv_len ignored, causal rows aligned to the last
// queries. TD (32 or 64) is fixed at compile time so the row arrays live in registers; rows
// with D < TD are zero-padded.
#include "common.glsl"
#define ROWS 64u
#define KT 64u
layout(local_size_x = 64) in;
layout(set = 0, binding = 0) readonly buffer Q { T q[]; };
layout(set = 0, binding = 1) readonly buffer K { T k[]; };
layout(set = 0, binding = 2) readonly buffer V { T v[]; };
layout(set = 0, binding = 3) readonly buffer M { T mask[]; };
layout(set = 0, binding = 4) writeonly buffer O { T o[]; };
layout(push_constant) uniform P {
    uint heads;
    uint kv_heads;
    uint sq;
    uint skv;
    uint d;
    uint kv_len;
    uint causal;
    uint has_mask;
    float scale;
    uvec4 mstride;
} p;

shared float ks[KT][TD];
shared float vs[KT][TD];

void main() {
    uint t = gl_LocalInvocationID.x;
    uint row = gl_WorkGroupID.x * ROWS + t;
    uint h = gl_WorkGroupID.y;
    uint b = gl_WorkGroupID.z;
    uint hk = h / (p.heads / p.kv_heads);
    bool live = row < p.sq;
    uint qbase = ((b * p.heads + h) * p.sq + row) * p.d;
    uint kbase = (b * p.kv_heads + hk) * p.skv * p.d;
    uint mbase = b * p.mstride.x + h * p.mstride.y + row * p.mstride.z;

    float qr[TD];
    float acc[TD];
    for (uint i = 0u; i < TD; i++) {
        qr[i] = (live && i < p.d) ? float(q[qbase + i]) * p.scale : 0.0;
        acc[i] = 0.0;
    }
    uint shift = p.kv_len - p.sq;
    uint limit = p.kv_len;
    if (p.causal != 0u) limit = min(limit, row + shift + 1u);
    // Keys any row of the block sees: up to its last live row's limit.
    uint last = min(gl_WorkGroupID.x * ROWS + ROWS, p.sq) - 1u;
    uint block_limit = p.causal != 0u ? min(p.kv_len, last + shift + 1u) : p.kv_len;

    float m = -1.0 / 0.0;
    float l = 0.0;
    for (uint j0 = 0u; j0 < block_limit; j0 += KT) {
        // Each thread loads one key row and one value row of the tile.
        uint j = j0 + t;
        for (uint i = 0u; i < TD; i++) {
            bool in_range = j < block_limit && i < p.d;
            ks[t][i] = in_range ? float(k[kbase + j * p.d + i]) : 0.0;
            vs[t][i] = in_range ? float(v[kbase + j * p.d + i]) : 0.0;
        }
        barrier();
        uint cnt = min(KT, block_limit - j0);
        if (live) {
            for (uint jj = 0u; jj < cnt; jj++) {
                uint key = j0 + jj;
                if (key >= limit) break;
                float s = 0.0;
                for (uint i = 0u; i < TD; i++) s += qr[i] * ks[jj][i];
                if (p.has_mask != 0u) s += float(mask[mbase + key * p.mstride.w]);
                if (!(s > -1.0 / 0.0)) continue;  // a fully masked key weighs nothing
                if (s > m) {
                    float corr = exp(m - s);
                    l *= corr;
                    for (uint i = 0u; i < TD; i++) acc[i] *= corr;
                    m = s;
                }
                float w = exp(s - m);
                l += w;
                for (uint i = 0u; i < TD; i++) acc[i] += w * vs[jj][i];
            }
        }
        barrier();
    }
    if (live) {
        float inv = l > 0.0 ? 1.0 / l : 0.0;
        for (uint i = 0u; i < TD; i++) {
            if (i < p.d) o[qbase + i] = T(acc[i] * inv);
        }
    }
}
