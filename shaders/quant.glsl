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

// The GEMV's unit: 8 weights of a block, the bytes of adjacent units adjacent, so a subgroup
// reads whole runs of blocks. Unit s (< UPB) of the block at byte `base` covers weights
// k0 .. k0+3 and k1 .. k1+3 of the block (q8_0: 8 bytes, k1 = k0 + 4; 4-bit types: 4 bytes,
// their low nibbles at k0 and high nibbles at k1 = k0 + QK/2).
void unit_ks(uint s, out uint k0, out uint k1) {
#if defined(Q8_0)
    k0 = 8u * s;
    k1 = k0 + 4u;
#else
    k0 = 4u * s;
    k1 = k0 + QK / 2u;
#endif
}

// Every word unit s of the block at byte `base` needs, as loads only (issued together, before
// any arithmetic waits on them): x = the word holding the block's header, y .. w = the words
// holding its bytes. q8_0 and q4_0 blocks start on any even byte: their bytes start on a word
// (one fewer load: the last stays 0) or in the middle of one (a funnel shift in unit_decode).
// q4_1 and q4_g128 blocks (20 and 68 bytes) are always word-aligned.
uvec4 unit_words(uint base, uint s) {
    uint h = bq[base >> 2u];
#if defined(Q8_0)
    uint o = base + 2u + 8u * s;
    uint i = o >> 2u;
    uint w0 = bq[i], w1 = bq[i + 1u];
    uint w2 = (o & 2u) != 0u ? bq[i + 2u] : 0u;
    return uvec4(h, w0, w1, w2);
#elif defined(Q4_0)
    uint o = base + 2u + 4u * s;
    uint i = o >> 2u;
    uint w0 = bq[i];
    uint w1 = (o & 2u) != 0u ? bq[i + 1u] : 0u;
    return uvec4(h, w0, w1, 0u);
#else
    return uvec4(h, bq[(base + QS + 4u * s) >> 2u], 0u, 0u);
#endif
}

// Decodes unit_words(base, s): the block's (scale d, offset m, bias b) and the unit's quants,
// two words of 4 bytes (q8_0, each byte biased by 128: q ^ 0x80) or one word of 8 nibbles
// (4-bit types; q.y = 0). Weight = d * (q - b) + m, b a constant of the type: 128 for q8_0
// and 8 for q4_0 (m = 0), 0 for q4_1 (m its min) and q4_g128 (m = -d * zero point). Every block starts on an
// even byte, so its header is the low or the high half of word x, and the quants of q8_0 and
// q4_0 start mid-word exactly when the block starts on a word.
void unit_decode(uvec4 w, uint base, out vec3 dmb, out uvec2 q) {
    bool odd = (base & 2u) != 0u;
    uint h = odd ? w.x >> 16u : w.x;
    float d = unpackHalf2x16(h).x;
#if defined(Q8_0)
    dmb = vec3(d, 0.0, 128.0);
    q = odd ? w.yz : uvec2((w.y >> 16u) | (w.z << 16u), (w.z >> 16u) | (w.w << 16u));
    q ^= uvec2(0x80808080u);
#elif defined(Q4_0)
    dmb = vec3(d, 0.0, 8.0);
    q = uvec2(odd ? w.y : (w.y >> 16u) | (w.z << 16u), 0u);
#elif defined(Q4_1)
    dmb = vec3(d, unpackHalf2x16(w.x >> 16u).x, 0.0);
    q = uvec2(w.y, 0u);
#else
    dmb = vec3(d, -float((w.x >> 16u) & 0xffu) * d, 0.0);
    q = uvec2(w.y, 0u);
#endif
}

// Fields of w as exact floats less `bias`, with no integer-to-float conversion (a slower unit
// on some GPUs): a field masked in place below bit 23, ORed into the float 2^23, is 2^23 +
// v * 2^s; one fma by 2^-s takes 2^(23-s) + bias off (every step exact). A field at bit 23 or
// above is shifted down first (one shift serves several).
float field_less(uint w, uint mask, float scale, float bias) {
    return fma(uintBitsToFloat((w & mask) | 0x4b000000u), scale, -(8388608.0 * scale + bias));
}

// The 4 bytes of w, less bias.
vec4 bytes_less(uint w, float bias) {
    uint u = w >> 16u;
    return vec4(field_less(w, 0xffu, 1.0, bias), field_less(w, 0xff00u, 1.0 / 256.0, bias),
                field_less(u, 0xffu, 1.0, bias), field_less(u, 0xff00u, 1.0 / 256.0, bias));
}

// The low nibbles of w's 4 bytes (bits 0, 8, 16, 24 up), less bias.
vec4 low_nibbles_less(uint w, float bias) {
    uint u = w >> 12u;
    return vec4(field_less(w, 0xfu, 1.0, bias), field_less(w, 0xf00u, 1.0 / 256.0, bias),
                field_less(w, 0xf0000u, 1.0 / 65536.0, bias), field_less(u, 0xf000u, 1.0 / 4096.0, bias));
}

// The high nibbles of w's 4 bytes (bits 4, 12, 20, 28 up), less bias.
vec4 high_nibbles_less(uint w, float bias) {
    uint u = w >> 12u;
    return vec4(field_less(w, 0xf0u, 1.0 / 16.0, bias), field_less(w, 0xf000u, 1.0 / 4096.0, bias),
                field_less(u, 0xf00u, 1.0 / 256.0, bias), field_less(u, 0xf0000u, 1.0 / 65536.0, bias));
}

// The 8 weights of unit_words(base, s) before the block's scale and offset: w0 = weights
// k0 .. k0+3, w1 = k1 .. k1+3 (unit_ks), less the type's bias; dm = (scale, offset).
void unit_weights(uvec4 raw, uint base, out vec2 dm, out vec4 w0, out vec4 w1) {
    uvec2 q;
    vec3 dmb;
    unit_decode(raw, base, dmb, q);
    dm = dmb.xy;
#if defined(Q8_0)
    w0 = bytes_less(q.x, dmb.z);
    w1 = bytes_less(q.y, dmb.z);
#else
    w0 = low_nibbles_less(q.x, dmb.z);
    w1 = high_nibbles_less(q.x, dmb.z);
#endif
}
