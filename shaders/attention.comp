#version 450
// Scaled dot-product attention, one workgroup per (batch, head, query row).
// q [B, H, Sq, D], k/v [B, Hkv, Skv, D] (contiguous), optional additive mask with
// broadcast strides over [B, H, Sq, Skv]. Keys past kv_len are ignored; with `causal`,
// query i sees keys j <= i + (kv_len - Sq) (the queries are the last Sq positions).
// Two passes: the row max and sum (online softmax), then P·V in chunks of WG keys.
#include "common.glsl"
#define WG 64u
#define MAX_D 256u
layout(local_size_x = 64) in;
#include "reduce.glsl"
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
    uvec4 mstride;   // mask strides over [B, H, Sq, Skv], 0 where it broadcasts
} p;

shared float qs[MAX_D];
shared float probs[WG];

void main() {
    uint row = gl_WorkGroupID.x;     // query index
    uint h = gl_WorkGroupID.y;
    uint b = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x;
    uint hk = h / (p.heads / p.kv_heads);
    uint qbase = ((b * p.heads + h) * p.sq + row) * p.d;
    uint kbase = (b * p.kv_heads + hk) * p.skv * p.d;
    uint mbase = b * p.mstride.x + h * p.mstride.y + row * p.mstride.z;
    for (uint i = t; i < p.d; i += WG) qs[i] = float(q[qbase + i]) * p.scale;
    barrier();
    uint limit = p.kv_len;
    if (p.causal != 0u) limit = min(limit, row + (p.kv_len - p.sq) + 1u);

    // Pass 1: running max and sum of exp over this thread's keys, then combined.
    float m = -1.0 / 0.0;
    float l = 0.0;
    for (uint j = t; j < limit; j += WG) {
        float s = 0.0;
        for (uint i = 0u; i < p.d; i++) s += qs[i] * float(k[kbase + j * p.d + i]);
        if (p.has_mask != 0u) s += float(mask[mbase + j * p.mstride.w]);
        if (s > m) {
            l = l * exp(m - s) + 1.0;
            m = s;
        } else if (s > -1.0 / 0.0) {
            l += exp(s - m);
        }
    }
    float gm = wg_max(m);
    float gl = wg_sum(m > -1.0 / 0.0 ? l * exp(m - gm) : 0.0);
    float inv = gl > 0.0 ? 1.0 / gl : 0.0;

    // Pass 2: probabilities of a chunk of keys into shared memory, then accumulate P·V.
    float acc[MAX_D / WG];
    for (uint c = 0u; c < MAX_D / WG; c++) acc[c] = 0.0;
    for (uint j0 = 0u; j0 < limit; j0 += WG) {
        uint j = j0 + t;
        float pr = 0.0;
        if (j < limit && gl > 0.0) {
            float s = 0.0;
            for (uint i = 0u; i < p.d; i++) s += qs[i] * float(k[kbase + j * p.d + i]);
            if (p.has_mask != 0u) s += float(mask[mbase + j * p.mstride.w]);
            pr = exp(s - gm) * inv;
        }
        probs[t] = pr;
        barrier();
        uint cnt = min(WG, limit - j0);
        for (uint c = 0u; c < MAX_D / WG; c++) {
            uint i = t + c * WG;
            if (i < p.d) {
                float a = acc[c];
                for (uint jj = 0u; jj < cnt; jj++) a += probs[jj] * float(v[kbase + (j0 + jj) * p.d + i]);
                acc[c] = a;
            }
        }
        barrier();
    }
    for (uint c = 0u; c < MAX_D / WG; c++) {
        uint i = t + c * WG;
        if (i < p.d) o[qbase + i] = T(acc[c]);
    }
}
