// Block-quantized weights (byte layouts in src/quant/format.rs), read from `bq`, a uint[]
// buffer the including shader declares. Blocks of 34 and 18 bytes are not 4-byte aligned, so
// words are assembled from byte offsets; every block and field starts on an even byte, so a
// word is one aligned load or two halves. This needs no 8- or 16-bit storage feature.
// One of Q8_0, Q4_0, Q4_1, Q4G128 selects the type.

#if defined(Q8_0)
#define QK 32u
#define QB 34u
#define QS 2u
#elif defined(Q4_0)
#define QK 32u
#define QB 18u
#define QS 2u
#elif defined(Q4_1)
#define QK 32u
#define QB 20u
#define QS 4u
#elif defined(Q4G128)
#define QK 128u
#define QB 68u
#define QS 4u
#else
#error "a quantized type (Q8_0, Q4_0, Q4_1, Q4G128) must be defined"
#endif

// Units of 8 weights per block (the GEMV's step per thread).
#define UPB (QK / 8u)

// The 4 bytes from even byte offset `at`, little-endian.
uint qword(uint at) {
    uint w = at >> 2u;
    if ((at & 2u) == 0u) return bq[w];
    return (bq[w] >> 16u) | (bq[w + 1u] << 16u);
}

// (scale, offset) of the block at byte `base`: weight = scale * q + offset, the form the CPU's
// dequantize_row uses (q signed for q8_0, a nibble for the others).
vec2 block_dm(uint base) {
    uint h = qword(base);
    float d = unpackHalf2x16(h).x;
#if defined(Q8_0)
    return vec2(d, 0.0);
#elif defined(Q4_0)
    return vec2(d, -8.0 * d);
#elif defined(Q4_1)
    return vec2(d, unpackHalf2x16(h >> 16u).x);
#else
    return vec2(d, -float((h >> 16u) & 0xffu) * d);
#endif
}

vec4 signed_bytes(uint w) {
    int s = int(w);
    return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8),
                bitfieldExtract(s, 24, 8));
}

vec4 nibbles(uint w, uint shift) {
    return vec4((uvec4(w, w >> 8u, w >> 16u, w >> 24u) >> shift) & 0xfu);
}

// Weights j .. j+3 (j a multiple of 4) of the block at byte `base`. 4-bit types keep weight j
// in the low nibble of byte j for j < QK/2, in the high nibble of byte j - QK/2 otherwise.
vec4 dequant4(uint base, uint j, vec2 dm) {
#if defined(Q8_0)
    return signed_bytes(qword(base + QS + j)) * dm.x;
#else
    uint h = QK / 2u;
    uint w = qword(base + QS + (j % h));
    return nibbles(w, j >= h ? 4u : 0u) * dm.x + dm.y;
#endif
}

// Unit s (< UPB) of the block at byte `base`: 8 weights as w0 (at k0 .. k0+3 of the block)
// and w1 (at k1 .. k1+3). A 4-bit unit is one word: its low and high nibbles.
void dequant8(uint base, uint s, vec2 dm, out vec4 w0, out vec4 w1, out uint k0, out uint k1) {
#if defined(Q8_0)
    k0 = 8u * s;
    k1 = k0 + 4u;
    w0 = signed_bytes(qword(base + QS + k0)) * dm.x;
    w1 = signed_bytes(qword(base + QS + k1)) * dm.x;
#else
    k0 = 4u * s;
    k1 = k0 + QK / 2u;
    uint w = qword(base + QS + k0);
    w0 = nibbles(w, 0u) * dm.x + dm.y;
    w1 = nibbles(w, 4u) * dm.x + dm.y;
#endif
}
