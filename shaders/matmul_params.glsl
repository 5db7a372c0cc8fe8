// Push constants shared by matmul.comp, matmul_coopmat.comp and gemv.comp.
// Element (row r, col k) of A is a[z*a_bs + r*a_rs + k*a_ks]; element (k, n) of B is
// b[z*b_bs + k*b_ks + n*b_ns]; C is dense [batch, M, N]. Modes pick the tile loader:
// 0 scalar, fast along k; 1 scalar, fast along the row/column; 2 vec4 along k;
// 3 vec4 along the row/column (host checks divisibility and alignment).
layout(push_constant) uniform P {
    uint M;
    uint N;
    uint K;
    uint a_rs;
    uint a_ks;
    uint a_bs;
    uint b_ks;
    uint b_ns;
    uint b_bs;
    float alpha;
    float beta;
    uint flags;   // bit 0 bias, bits 1-2 activation, bit 3 gelu tanh
    uint a_mode;
    uint b_mode;
} p;

float epilogue(float acc, float old, uint n) {
    float v = p.alpha * acc;
    if (p.beta != 0.0) v += p.beta * old;
    if ((p.flags & 1u) != 0u) v += float(bias[n]);
    return activate(v, (p.flags >> 1) & 3u, (p.flags & 8u) != 0u);
}

// Output tile (n, m) of this workgroup. Workgroups run roughly in launch order; walking
// 8 tile rows per column (grouped order) keeps the A and B panels that run together small
// enough to stay in L2, where row-major order streams all of B per tile row.
uvec2 tile_of_workgroup() {
    uint tiles_n = gl_NumWorkGroups.x, tiles_m = gl_NumWorkGroups.y;
    uint id = gl_WorkGroupID.y * tiles_n + gl_WorkGroupID.x;
    uint group = 8u * tiles_n;
    uint first_m = (id / group) * 8u;
    uint rows = min(tiles_m - first_m, 8u);
    uint in_group = id % group;
    return uvec2(in_group / rows, first_m + in_group % rows);
}
