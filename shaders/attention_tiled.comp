#version 450
// Scaled dot-product attention for head_dim <= TD, flash-attention style: one workgroup per
// (batch, head, block of 64 query rows), one query row per thread. Keys and values go through
// shared memory in tiles of 64, read once per block (the one-row-per-workgroup shader,
// attention.comp, re-reads them for every row); each thread keeps its query, its output row
// and an online softmax (running max and sum) in registers. Same contract as attention.comp:
// q [B, H, Sq, D], k/v [B, Hkv, Skv, D] contiguous, optional additive mask with broadcast
// strides over [B, H, Sq, Skv], keys past kv_len ignored, causal rows aligned to the last
// queries. TD (32, 64 or 128) is fixed at compile time so the row arrays live in registers;
// rows with D < TD are zero-padded. At TD = 128 two adjacent threads share a query row, each
// holding 64 of its dims (a thread's arrays stay at 128 floats): they add their halves of
// each score with one subgroup shuffle and keep identical softmax statistics. Key / value
// tiles are loaded by all threads together, consecutive threads on consecutive elements.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_shuffle : require
#define ROWS 64u
#ifdef SPLIT2   // set with TD = 128 (the preprocessor cannot compare 128u)
#define SPLIT 2u
#define KT 32u    // two tiles of 32 x 128 floats: 32 KiB of shared memory
#else
#define SPLIT 1u
#define KT 64u
#endif
#define HD (TD / SPLIT)   // dims per thread
#define WG (ROWS * SPLIT)
layout(local_size_x = WG) in;
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
    uint half_ = t % SPLIT;          // which part of the row's dims this thread holds
    uint d0 = half_ * HD;
    uint row = gl_WorkGroupID.x * ROWS + t / SPLIT;
    uint h = gl_WorkGroupID.y;
    uint b = gl_WorkGroupID.z;
    uint hk = h / (p.heads / p.kv_heads);
    bool live = row < p.sq;
    uint qbase = ((b * p.heads + h) * p.sq + row) * p.d;
    uint kbase = (b * p.kv_heads + hk) * p.skv * p.d;
    uint mbase = b * p.mstride.x + h * p.mstride.y + row * p.mstride.z;

    float qr[HD];
    float acc[HD];
    for (uint i = 0u; i < HD; i++) {
        qr[i] = (live && d0 + i < p.d) ? float(q[qbase + d0 + i]) * p.scale : 0.0;
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
        for (uint e = t; e < KT * TD; e += WG) {
            uint jj = e / TD, i = e % TD, j = j0 + jj;
            bool in_range = j < block_limit && i < p.d;
            ks[jj][i] = in_range ? float(k[kbase + j * p.d + i]) : 0.0;
            vs[jj][i] = in_range ? float(v[kbase + j * p.d + i]) : 0.0;
        }
        barrier();
        uint cnt = min(KT, block_limit - j0);
        // Every thread walks every key of the tile, so the shuffle runs in uniform control
        // flow; keys past a row's limit (and every key of rows past Sq) are skipped after it.
        uint row_limit = live ? limit : 0u;
        for (uint jj = 0u; jj < cnt; jj++) {
            uint key = j0 + jj;
            float s = 0.0;
            for (uint i = 0u; i < HD; i++) s += qr[i] * ks[jj][d0 + i];
#ifdef SPLIT2
            s += subgroupShuffleXor(s, 1u);
#endif
            if (key >= row_limit) continue;
            if (p.has_mask != 0u) s += float(mask[mbase + key * p.mstride.w]);
            if (!(s > -1.0 / 0.0)) continue;  // a fully masked key weighs nothing
            if (s > m) {
                float corr = exp(m - s);
                l *= corr;
                for (uint i = 0u; i < HD; i++) acc[i] *= corr;
                m = s;
            }
            float w = exp(s - m);
            l += w;
            for (uint i = 0u; i < HD; i++) acc[i] += w * vs[jj][d0 + i];
        }
        barrier();
    }
    if (live) {
        float inv = l > 0.0 ? 1.0 / l : 0.0;
        for (uint i = 0u; i < HD; i++) {
            if (d0 + i < p.d) o[qbase + d0 + i] = T(acc[i] * inv);
        }
    }
}
