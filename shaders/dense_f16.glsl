// Plain f16 weights ([N, K], K a multiple of 8) behind quant.glsl's unit interface, so that
// gemv_quant.comp streams them with its shape (threads, rows per workgroup, units in flight):
// a "block" is one unit of 8 halves, 16 bytes read in one load, with scale 1 and no offset.

#define QK 8u
#define QB 16u
#define UPB 1u

layout(set = 0, binding = 1) readonly buffer BD { uvec4 bd[]; };

// The unit's 16 bytes (`base` is a multiple of 16: rows of 2K bytes, K % 8 == 0).
uvec4 unit_words(uint base, uint s) {
    return bd[base >> 4u];
}

void unit_ks(uint s, out uint k0, out uint k1) {
    k0 = 0u;
    k1 = 4u;
}

void unit_weights(uvec4 raw, uint base, out vec2 dm, out vec4 w0, out vec4 w1) {
    dm = vec2(1.0, 0.0);
    w0 = vec4(unpackHalf2x16(raw.x), unpackHalf2x16(raw.y));
    w1 = vec4(unpackHalf2x16(raw.z), unpackHalf2x16(raw.w));
}
