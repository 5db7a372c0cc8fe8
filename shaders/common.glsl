// Shared by every shader. Variants are chosen by -D flags from buildsrc/shaders.rs:
//   F16      element type of the tensors is f16 (arithmetic stays in f32)
//   OUT_F16  (matmul, convert) the output is f16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require

#ifdef F16
#define T float16_t
#define T4 f16vec4
#else
#define T float
#define T4 vec4
#endif

#ifdef OUT_F16
#define TO float16_t
#else
#define TO float
#endif

// Large 1-D launches are folded into a 2-D grid (at most 65535 groups per dimension).
uint flat_group() {
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

// erf with max error 1.5e-7 (Abramowitz and Stegun 7.1.26); GLSL has no erf.
float erf_approx(float x) {
    float s = sign(x);
    x = abs(x);
    float t = 1.0 / (1.0 + 0.3275911 * x);
    float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                     + 0.254829592) * t * exp(-x * x);
    return s * y;
}

float gelu(float x, bool tanh_approx) {
    if (tanh_approx) {
        float u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        // tanh through exp, stable for large |u|
        float e = exp(-2.0 * abs(u));
        float th = sign(u) * (1.0 - e) / (1.0 + e);
        return 0.5 * x * (1.0 + th);
    }
    return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

float silu(float x) {
    return x / (1.0 + exp(-x));
}

// Activation codes match op::Activation.
float activate(float x, uint act, bool gelu_tanh) {
    if (act == 1u) return max(x, 0.0);
    if (act == 2u) return silu(x);
    if (act == 3u) return gelu(x, gelu_tanh);
    return x;
}
