#version 450
// Scaled dot-product attention, one workgroup per (batch, head, query row): the path of
// decode (one or a few query rows over a long KV) and of heads wider than the tiled shader's.
// q [B, H, Sq, D], k/v [B, Hkv, Skv, D] (contiguous), optional additive mask with
// broadcast strides over [B, H, Sq, Skv]. Keys past kv_len are ignored; with `causal`,
// query i sees keys j <= i + (kv_len - Sq) (the queries are the last Sq positions).
//
// One pass, keys read once: GROUPS groups of GT threads take tiles of GT keys in turn (the
// workgroup walks WG keys per step). In a tile, each thread scores one key, the group keeps
// a running max and sum (online softmax) and each thread accumulates P·V for its dims of D
// (V rows read along D: coalesced). The groups' partial results are merged at the end.
#include "common.glsl"
#define GT 64u
#define GROUPS 4u
#define WG (GT * GROUPS)
#define MAX_D 256u
#define NEG_INF (-1.0 / 0.0)
layout(local_size_x = 256) in;
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
shared float scores[WG];
shared float probs[WG];
shared float group_m[GROUPS];
shared float group_l[GROUPS];
shared float group_acc[GROUPS * MAX_D];

void main() {
    uint row = gl_WorkGroupID.x;     // query index
    uint h = gl_WorkGroupID.y;
    uint b = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x;
    uint g = t / GT;                 // this thread's group
    uint lane = t % GT;
    uint hk = h / (p.heads / p.kv_heads);
    uint qbase = ((b * p.heads + h) * p.sq + row) * p.d;
    uint kbase = (b * p.kv_heads + hk) * p.skv * p.d;
    uint mbase = b * p.mstride.x + h * p.mstride.y + row * p.mstride.z;
    for (uint i = t; i < p.d; i += WG) qs[i] = float(q[qbase + i]) * p.scale;
    barrier();
    uint limit = p.kv_len;
    if (p.causal != 0u) limit = min(limit, row + (p.kv_len - p.sq) + 1u);

    // Uniform within a group: every thread of it tracks the same max and sum.
    float m = NEG_INF;
    float l = 0.0;
    float acc[MAX_D / GT];
    for (uint c = 0u; c < MAX_D / GT; c++) acc[c] = 0.0;
    for (uint step0 = 0u; step0 < limit; step0 += WG) {
        uint j0 = step0 + g * GT;    // this group's tile
        uint j = j0 + lane;
        float s = NEG_INF;
        if (j < limit) {
            s = 0.0;
            for (uint i = 0u; i < p.d; i++) s += qs[i] * float(k[kbase + j * p.d + i]);
            if (p.has_mask != 0u) s += float(mask[mbase + j * p.mstride.w]);
        }
        scores[t] = s;
        barrier();
        float tile_max = NEG_INF;
        for (uint jj = 0u; jj < GT; jj++) tile_max = max(tile_max, scores[g * GT + jj]);
        float m_new = max(m, tile_max);
        // exp(-inf - -inf) is NaN: a max still at -inf scales nothing.
        float alpha = m == NEG_INF ? 0.0 : exp(m - m_new);
        probs[t] = s == NEG_INF ? 0.0 : exp(s - m_new);
        barrier();
        uint cnt = j0 < limit ? min(GT, limit - j0) : 0u;
        float tile_sum = 0.0;
        for (uint jj = 0u; jj < cnt; jj++) tile_sum += probs[g * GT + jj];
        l = l * alpha + tile_sum;
        m = m_new;
        for (uint c = 0u; c < MAX_D / GT; c++) {
            uint i = lane + c * GT;
            if (i < p.d) {
                float a = acc[c] * alpha;
                for (uint jj = 0u; jj < cnt; jj++) a += probs[g * GT + jj] * float(v[kbase + (j0 + jj) * p.d + i]);
                acc[c] = a;
            }
        }
        barrier();
    }

    // Merge the groups: rescale each to the common max.
    if (lane == 0u) {
        group_m[g] = m;
        group_l[g] = l;
    }
    for (uint c = 0u; c < MAX_D / GT; c++) {
        uint i = lane + c * GT;
        if (i < p.d) group_acc[g * MAX_D + i] = acc[c];
    }
    barrier();
    float gm = NEG_INF;
    for (uint x = 0u; x < GROUPS; x++) gm = max(gm, group_m[x]);
    float total = 0.0;
    for (uint x = 0u; x < GROUPS; x++) total += group_m[x] == NEG_INF ? 0.0 : group_l[x] * exp(group_m[x] - gm);
    float inv = total > 0.0 ? 1.0 / total : 0.0;
    for (uint i = t; i < p.d; i += WG) {
        float out_i = 0.0;
        for (uint x = 0u; x < GROUPS; x++) {
            if (group_m[x] != NEG_INF) out_i += group_acc[x * MAX_D + i] * exp(group_m[x] - gm);
        }
        o[qbase + i] = T(out_i * inv);
    }
}
