/* generate: text generation with a decoder-only (Llama-style) transformer whose f32 weights
 * are read from a safetensors file through nh_buffer_map_file and views into it.
 *
 * Per layer: RMSNorm, Q/K/V projections (K and V written straight into the layer's KV cache,
 * a library buffer of [positions, kv_heads * head_dim]), RoPE on Q and on the new cache rows
 * (half-split "NeoX / Hugging Face Llama" pairs, the library's default), grouped-query causal
 * attention over the cache, output projection accumulated into the residual stream (matmul
 * with beta = 1), RMSNorm, SwiGLU FFN (gate matmul with fused SiLU, up, mul, down accumulated
 * into the residual). Then the final RMSNorm and the LM head; sampling is host side.
 *
 * Prefill runs the whole prompt at once (ops tagged phase=prefill), decode one token a step
 * (phase=decode), so a policy like llm_inference places them: prefill matmuls on the NPU,
 * decode on the GPU. A decode step is recorded once as a graph and submitted as one unit each
 * step; the ops that depend on the position or the token (the embedding row, the K/V cache
 * rows written, rope_position, the attention's key count: 1 + 5 per layer) are replaced with
 * nh_graph_set_op before each submission. `--decode rerecord` records the step's graph anew
 * each step, `--decode ops` submits the same ops one by one.
 *
 * Prefill is recorded as a graph too (one submission per device segment) unless --decode ops.
 * --prefill-chunk N runs the prompt N tokens at a time (each chunk attending to the keys the
 * earlier ones cached, one graph updated chunk to chunk like a decode step's), so the
 * activations take N rows; --kv-cache f16 under f32 activations
 * keeps the cache in f16 (the new rows are converted in by a copy op; the CPU's attention
 * widens them as it reads). Both save memory: a 512-token prompt's activations and cache are
 * most of what a mapped q4_0 model holds beyond its file.
 *
 * --synthetic CONFIG runs a model of the shapes in CONFIG (a Hugging Face config.json, or
 * `llama-3.2-1b`) with random weights made in-process, in f16 (--dtype f32 for f32), for speed
 * measurements on machines without the model; its prefill computes the last row's logits only.
 *
 *   generate [--model DIR | --synthetic CONFIG [--dtype f16|f32] [--prompt-len N]]
 *            [--policy NAME|FILE.nhp] [--devices cpu|gpu,sim,npu] [--steps N]
 *            [--prompt IDS] [--sample greedy|topk:K|topp:P] [--temperature T] [--seed S]
 *            [--check REF] [--tol X] [--follow IDS] [--trace FILE] [--threads N] [--decode graph|rerecord|ops]
 *            [--warmup N] [--expect-placement] [--quiet] [--quant q8_0|q4_0|q4_1|q4_g128]
 *            [--explain] [--activations q8|f32] [--kv-cache f32|f16] [--prefill-chunk N]
 *
 * --model FILE.gguf reads a llama-architecture GGUF file instead (nh_gguf_open: mapped, its
 * header checked): configuration from its metadata, f32 / f16 / bf16 / q8_0 / q4_0 / q4_1
 * matmul weights used where they lie in the file under f32 activations (the CPU widens half
 * weights as it reads them, the Vulkan GPU f16 ones in its decode GEMV only: --dtype f32
 * converts them to f32 at load, --dtype f16 makes the activations f16 too); rope on adjacent
 * pairs, as llama.cpp's converter permutes Q and K for. --quant quantizes a safetensors
 * model's matmul weights at load (those whose inner size is whole blocks).
 *
 * --follow IDS teacher-forces decoding: each step is fed the next of IDS (another model's
 * greedy tokens after the same prompt, say the f32 model's for a quantized one) instead of
 * its own choice, and the fraction of steps whose top-1 token equals the fed one is printed
 * (tools/top1_agreement.sh).
 *
 * Matmuls with q8_0 / q4_0 / q4_1 weights carry NH_FLAG_ALLOW_Q8_ACTIVATIONS (as llama.cpp,
 * the CPU rounds decode activations to int8 blocks and takes integer dot products);
 * --activations f32 keeps them f32 (f32 math on the dequantised weights).
 */
#include "common.h"
#include "safetensors.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <time.h>

#ifndef NH_DEFAULT_MODEL
#define NH_DEFAULT_MODEL "tests/data/tiny_llama"
#endif

#define MAX_DEVICES 16
#define MAX_LAYERS 256
#define NKINDS 12

enum { PHASE_PREFILL = 0, PHASE_DECODE = 1, NPHASES = 2 };
static const char *phase_tag[NPHASES] = {"phase=prefill", "phase=decode"};
static const char *phase_name[NPHASES] = {"prefill", "decode"};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "generate: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) die("%s: cannot open: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek", path);
  long n = ftell(f);
  if (n < 0 || n > (1L << 30) || fseek(f, 0, SEEK_SET) != 0) die("%s: cannot determine its size", path);
  char *s = malloc((size_t)n + 1);
  if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) die("%s: cannot read", path);
  s[n] = '\0';
  fclose(f);
  return s;
}

/* ---- A minimal reader for flat JSON objects: "key": number or "key": [numbers]. ---- */

/* The text right after `"key":` at the top level of the object (keys inside nested arrays
 * of numbers cannot collide since they hold no strings). */
static const char *json_value(const char *json, const char *key, const char *path) {
  size_t kl = strlen(key);
  for (const char *p = json; (p = strchr(p, '"')) != NULL; p++) {
    if (!strncmp(p + 1, key, kl) && p[kl + 1] == '"') {
      const char *q = p + kl + 2;
      while (isspace((unsigned char)*q)) q++;
      if (*q == ':') {
        q++;
        while (isspace((unsigned char)*q)) q++;
        return q;
      }
    }
  }
  die("%s: no \"%s\"", path, key);
  return NULL;
}

static double json_number(const char *json, const char *key, const char *path) {
  const char *v = json_value(json, key, path);
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (end == v || errno) die("%s: \"%s\" is not a number", path, key);
  return d;
}

/* A JSON array of numbers; *n gets its length. */
static double *json_numbers(const char *json, const char *key, const char *path, size_t *n) {
  const char *p = json_value(json, key, path);
  if (*p != '[') die("%s: \"%s\" is not an array", path, key);
  p++;
  size_t cap = 256, len = 0;
  double *out = malloc(cap * sizeof *out);
  for (;;) {
    while (isspace((unsigned char)*p)) p++;
    if (*p == ']' && len == 0) break;
    char *end;
    errno = 0;
    double d = strtod(p, &end);
    if (end == p || errno) die("%s: \"%s\": element %zu is not a number", path, key, len);
    if (len == cap) out = realloc(out, (cap *= 2) * sizeof *out);
    out[len++] = d;
    p = end;
    while (isspace((unsigned char)*p)) p++;
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p != ']') die("%s: \"%s\": expected ',' or ']' after element %zu", path, key, len - 1);
    break;
  }
  *n = len;
  return out;
}

static uint64_t json_uint(const char *json, const char *key, const char *path, uint64_t lo, uint64_t hi) {
  double d = json_number(json, key, path);
  if (d != floor(d) || d < (double)lo || d > (double)hi)
    die("%s: \"%s\" = %g must be a whole number in %llu..%llu", path, key, d, (unsigned long long)lo,
        (unsigned long long)hi);
  return (uint64_t)d;
}

/* ---- Model ---- */

typedef struct {
  uint64_t vocab, dim, layers, heads, kv_heads, head_dim, ffn, max_pos;
  float theta, eps;
} config;

typedef struct {
  nh_tensor attn_norm, wq, wk, wv, wo, ffn_norm, wgate, wup, wdown;
} layer_weights;

typedef struct {
  config c;
  nh_buffer file;
  nh_tensor embed; /* [vocab, D], any dtype: rows are copied (converted) to the activations' type */
  nh_tensor norm, lm_head;
  layer_weights layer[MAX_LAYERS];
  /* Prefill matmuls carry NH_FLAG_ALLOW_BF16: an NPU that takes bf16 only may run them,
   * rounding f32 operands (the scheduler decides whether that pays). */
  int bf16;
  int rope_pairs;    /* rope on adjacent pairs (GGUF's llama) instead of rotated halves */
  const char *wtype; /* what the matmul weights are, for the summary line */
} model;

/* Element type of the weights and activations (logits are always f32). */
static uint32_t g_dt = NH_F32;
static size_t g_es = sizeof(float);

/* ---- Quantized and converted weights ---- */

static const char *nh_dtype_label(uint32_t dt) {
  static const char *names[] = {"f32", "f16", "bf16", "i8", "i32", "q8_0", "q4_0", "q4_1", "q4_g128"};
  return dt < sizeof names / sizeof names[0] ? names[dt] : "?";
}

static uint64_t block_elems(uint32_t dt) {
  return dt == NH_Q4_G128 ? 128 : (dt >= NH_Q8_0 && dt <= NH_Q4_1) ? 32 : 1;
}

/* Bytes of n elements of dtype dt (n whole blocks for quantized types). */
static uint64_t dtype_bytes(uint32_t dt, uint64_t n) {
  switch (dt) {
    case NH_F32: case NH_I32: return 4 * n;
    case NH_F16: case NH_BF16: return 2 * n;
    case NH_Q8_0: return n / 32 * 34;
    case NH_Q4_0: return n / 32 * 18;
    case NH_Q4_1: return n / 32 * 20;
    case NH_Q4_G128: return n / 128 * 68;
    default: return n;
  }
}

static int parse_quant(const char *s, uint32_t *dt) {
  static const struct { const char *name; uint32_t dt; } q[] = {
      {"q8_0", NH_Q8_0}, {"q4_0", NH_Q4_0}, {"q4_1", NH_Q4_1}, {"q4_g128", NH_Q4_G128}};
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
    if (!strcmp(s, q[i].name)) { *dt = q[i].dt; return 0; }
  return -1;
}

/* Copies (converts, quantizes) the view src into a new dense buffer of dtype dt, now. */
static nh_tensor convert_now(nh_runtime rt, nh_tensor src, uint32_t dt) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < src.rank; i++) n *= src.shape[i];
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, dtype_bytes(dt, n), &b));
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_COPY;
  op.inputs[0] = src;
  op.output = nh_dense(b, dt, src.rank, src.shape, 0);
  nh_event ev;
  NH_CHECK(nh_submit(rt, &op, &ev));
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));
  return op.output;
}

/* The view of weight `name`, which must be F32 and shaped [d0] or [d0, d1]. */
static nh_tensor weight(const st_file *st, nh_buffer file, const char *path, const char *name, uint64_t d0,
                        uint64_t d1) {
  const st_tensor *t = st_find(st, name);
  if (!t) die("%s: no tensor \"%s\"", path, name);
  if (t->dtype != NH_F32) die("%s: \"%s\" is %s; this example reads f32 weights only", path, name, t->dtype_name);
  uint32_t rank = d1 ? 2 : 1;
  if (t->rank != rank || t->shape[0] != d0 || (d1 && t->shape[1] != d1)) {
    if (d1)
      die("%s: \"%s\" must be [%llu, %llu] (rank %u, first dim %llu)", path, name, (unsigned long long)d0,
          (unsigned long long)d1, t->rank, (unsigned long long)t->shape[0]);
    die("%s: \"%s\" must be [%llu]", path, name, (unsigned long long)d0);
  }
  if (t->offset % 4 != 0) die("%s: \"%s\" is not 4-byte aligned in the file", path, name);
  return st_view(file, t);
}

/* --activations f32: no NH_FLAG_ALLOW_Q8_ACTIVATIONS on quantized matmuls. */
static int g_f32_activations = 0;
/* GGUF: f16 / bf16 matmul weights stay in the file under f32 activations (not --dtype f32). */
static int g_half_weights = 1;

/* --quant: matmul weights whose rows are whole blocks, quantized at load. */
static uint32_t load_quant = NH_F32;

static nh_tensor matmul_weight(nh_runtime rt, nh_tensor w) {
  if (load_quant == NH_F32 || w.shape[1] % block_elems(load_quant)) return w;
  return convert_now(rt, w, load_quant);
}

/* Reads a Hugging Face config.json's Llama fields into c (`path` names it in errors). */
static void parse_config(const char *cj, const char *path, config *c) {
  c->vocab = json_uint(cj, "vocab_size", path, 1, 1u << 24);
  c->dim = json_uint(cj, "hidden_size", path, 2, 1u << 16);
  c->layers = json_uint(cj, "num_hidden_layers", path, 1, MAX_LAYERS);
  c->heads = json_uint(cj, "num_attention_heads", path, 1, 1024);
  c->kv_heads = json_uint(cj, "num_key_value_heads", path, 1, 1024);
  c->ffn = json_uint(cj, "intermediate_size", path, 1, 1u << 20);
  c->max_pos = json_uint(cj, "max_position_embeddings", path, 1, 1u << 20);
  c->theta = (float)json_number(cj, "rope_theta", path);
  c->eps = (float)json_number(cj, "rms_norm_eps", path);
  if (c->dim % c->heads || c->heads % c->kv_heads || (c->dim / c->heads) % 2)
    die("%s: hidden_size %llu, %llu heads and %llu kv heads do not give an even head_dim shared by whole groups",
        path, (unsigned long long)c->dim, (unsigned long long)c->heads, (unsigned long long)c->kv_heads);
  if (!(c->theta > 0) || !(c->eps >= 0)) die("%s: rope_theta must be > 0 and rms_norm_eps >= 0", path);
  c->head_dim = c->dim / c->heads;
}

static void load_model(nh_runtime rt, const char *dir, model *m, st_file *st) {
  size_t path_cap = strlen(dir) + 32;
  char *path = malloc(path_cap); /* heap: its size is not a compile-time constant */
  snprintf(path, path_cap, "%s/config.json", dir);
  char *cj = read_text(path);
  config *c = &m->c;
  parse_config(cj, path, c);
  free(cj);

  snprintf(path, path_cap, "%s/model.safetensors", dir);
  char err[512];
  if (st_open(path, st, err, sizeof err) != 0) die("%s", err);
  NH_CHECK(nh_buffer_map_file(rt, path, &m->file));
  uint64_t D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
  m->embed = weight(st, m->file, path, "model.embed_tokens.weight", c->vocab, D);
  m->norm = weight(st, m->file, path, "model.norm.weight", D, 0);
  m->lm_head = matmul_weight(rt, weight(st, m->file, path, "lm_head.weight", c->vocab, D));
  m->rope_pairs = 0;
  m->wtype = load_quant == NH_F32 ? "f32" : nh_dtype_label(load_quant);
  for (uint64_t i = 0; i < c->layers; i++) {
    layer_weights *l = &m->layer[i];
    char name[160];
#define W(field, suffix, d0, d1)                                                         \
  snprintf(name, sizeof name, "model.layers.%llu.%s", (unsigned long long)i, suffix); \
  l->field = weight(st, m->file, path, name, d0, d1)
    W(attn_norm, "input_layernorm.weight", D, 0);
    W(wq, "self_attn.q_proj.weight", Q, D);
    W(wk, "self_attn.k_proj.weight", KV, D);
    W(wv, "self_attn.v_proj.weight", KV, D);
    W(wo, "self_attn.o_proj.weight", D, Q);
    W(ffn_norm, "post_attention_layernorm.weight", D, 0);
    W(wgate, "mlp.gate_proj.weight", c->ffn, D);
    W(wup, "mlp.up_proj.weight", c->ffn, D);
    W(wdown, "mlp.down_proj.weight", D, c->ffn);
#undef W
    l->wq = matmul_weight(rt, l->wq);
    l->wk = matmul_weight(rt, l->wk);
    l->wv = matmul_weight(rt, l->wv);
    l->wo = matmul_weight(rt, l->wo);
    l->wgate = matmul_weight(rt, l->wgate);
    l->wup = matmul_weight(rt, l->wup);
    l->wdown = matmul_weight(rt, l->wdown);
  }
  free(path);
}

/* ---- GGUF (llama architecture, llama.cpp's tensor names and metadata keys) ---- */

static double gguf_number(nh_runtime rt, nh_gguf g, const char *path, const char *key, int required, double dflt) {
  double v;
  if (nh_gguf_meta_number(rt, g, key, NH_GGUF_SCALAR, &v) == NH_OK) return v;
  if (required) die("%s: %s", path, nh_last_error_message());
  return dflt;
}

static uint64_t gguf_uint(nh_runtime rt, nh_gguf g, const char *path, const char *key, uint64_t lo, uint64_t hi) {
  double v = gguf_number(rt, g, path, key, 1, 0);
  if (!(v >= (double)lo && v <= (double)hi) || v != floor(v))
    die("%s: %s = %g is not a whole number in [%llu, %llu]", path, key, v, (unsigned long long)lo,
        (unsigned long long)hi);
  return (uint64_t)v;
}

/* Tensor `name` shaped [d0] or [d0, d1]; matmul weights stay as they are in the file when
 * of the activations' type (f32, or f16 with --dtype f16), quantized, or f16 / bf16 under
 * f32 activations (unless --dtype f32); everything else is converted to the activations'
 * type (norms; half weights with --dtype f32). */
static nh_tensor gguf_weight(nh_runtime rt, nh_gguf g, const char *path, const char *name, uint64_t d0, uint64_t d1,
                             int matmul) {
  nh_tensor t;
  if (nh_gguf_tensor(rt, g, name, &t) != NH_OK) die("%s: %s", path, nh_last_error_message());
  uint32_t rank = d1 ? 2 : 1;
  if (t.rank != rank || t.shape[0] != d0 || (d1 && t.shape[1] != d1))
    die("%s: \"%s\" must be [%llu%s%llu], it is rank %u with first dim %llu", path, name, (unsigned long long)d0,
        d1 ? ", " : "", (unsigned long long)d1, t.rank, (unsigned long long)t.shape[0]);
  int half = (t.dtype == NH_F16 || t.dtype == NH_BF16) && g_dt == NH_F32 && g_half_weights;
  if (t.dtype == g_dt || (matmul && (block_elems(t.dtype) > 1 || half))) return t;
  return convert_now(rt, t, g_dt);
}

static void load_gguf(nh_runtime rt, const char *path, model *m) {
  nh_gguf g;
  if (nh_gguf_open(rt, path, &g, &m->file) != NH_OK) die("%s", nh_last_error_message());
  char arch[32];
  if (nh_gguf_meta_string(rt, g, "general.architecture", NH_GGUF_SCALAR, arch, sizeof arch, NULL) != NH_OK ||
      strcmp(arch, "llama"))
    die("%s: general.architecture must be \"llama\"", path);
  config *c = &m->c;
  c->dim = gguf_uint(rt, g, path, "llama.embedding_length", 2, 1u << 16);
  c->layers = gguf_uint(rt, g, path, "llama.block_count", 1, MAX_LAYERS);
  c->heads = gguf_uint(rt, g, path, "llama.attention.head_count", 1, 1024);
  c->kv_heads = (uint64_t)gguf_number(rt, g, path, "llama.attention.head_count_kv", 0, (double)c->heads);
  c->ffn = gguf_uint(rt, g, path, "llama.feed_forward_length", 1, 1u << 20);
  c->max_pos = gguf_uint(rt, g, path, "llama.context_length", 1, 1u << 20);
  c->theta = (float)gguf_number(rt, g, path, "llama.rope.freq_base", 0, 10000.0);
  c->eps = (float)gguf_number(rt, g, path, "llama.attention.layer_norm_rms_epsilon", 1, 0);
  if (nh_gguf_meta_length(rt, g, "tokenizer.ggml.tokens", &c->vocab) != NH_OK)
    die("%s: %s", path, nh_last_error_message());
  if (c->kv_heads < 1 || c->dim % c->heads || c->heads % c->kv_heads || (c->dim / c->heads) % 2)
    die("%s: embedding length %llu, %llu heads and %llu kv heads do not give an even head_dim shared by whole groups",
        path, (unsigned long long)c->dim, (unsigned long long)c->heads, (unsigned long long)c->kv_heads);
  if (!(c->theta > 0) || !(c->eps >= 0)) die("%s: rope freq_base must be > 0 and the rms epsilon >= 0", path);
  c->head_dim = c->dim / c->heads;
  uint64_t D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim;
  nh_tensor e;
  if (nh_gguf_tensor(rt, g, "token_embd.weight", &e) != NH_OK) die("%s: %s", path, nh_last_error_message());
  if (e.rank != 2 || e.shape[0] != c->vocab || e.shape[1] != D)
    die("%s: token_embd.weight must be [%llu, %llu]", path, (unsigned long long)c->vocab, (unsigned long long)D);
  m->embed = e;
  m->norm = gguf_weight(rt, g, path, "output_norm.weight", D, 0, 0);
  nh_tensor out;
  m->lm_head = nh_gguf_tensor(rt, g, "output.weight", &out) == NH_OK
                   ? gguf_weight(rt, g, path, "output.weight", c->vocab, D, 1)
                   : gguf_weight(rt, g, path, "token_embd.weight", c->vocab, D, 1); /* tied */
  m->wtype = NULL;
  for (uint64_t i = 0; i < c->layers; i++) {
    layer_weights *l = &m->layer[i];
    char name[96];
#define W(field, suffix, d0, d1, mm)                                          \
  snprintf(name, sizeof name, "blk.%llu.%s", (unsigned long long)i, suffix); \
  l->field = gguf_weight(rt, g, path, name, d0, d1, mm)
    W(attn_norm, "attn_norm.weight", D, 0, 0);
    W(wq, "attn_q.weight", Q, D, 1);
    W(wk, "attn_k.weight", KV, D, 1);
    W(wv, "attn_v.weight", KV, D, 1);
    W(wo, "attn_output.weight", D, Q, 1);
    W(ffn_norm, "ffn_norm.weight", D, 0, 0);
    W(wgate, "ffn_gate.weight", c->ffn, D, 1);
    W(wup, "ffn_up.weight", c->ffn, D, 1);
    W(wdown, "ffn_down.weight", D, c->ffn, 1);
#undef W
    if (!m->wtype) m->wtype = nh_dtype_label(l->wq.dtype);
  }
  m->rope_pairs = 1;
  NH_CHECK(nh_gguf_close(rt, g));
}

/* ---- Synthetic models: real shapes, random weights made here ---- */

/* Llama-3.2-1B's shapes (hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, vocab 128256). */
static const char *LLAMA_3_2_1B =
    "{\"vocab_size\": 128256, \"hidden_size\": 2048, \"num_hidden_layers\": 16, \"num_attention_heads\": 32,"
    " \"num_key_value_heads\": 8, \"intermediate_size\": 8192, \"max_position_embeddings\": 131072,"
    " \"rope_theta\": 500000.0, \"rms_norm_eps\": 1e-5}";

static uint16_t f32_to_f16(float f) { /* round to nearest even; the values here are small and finite */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
  int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return (uint16_t)sign; /* underflow to zero */
  if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
  uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13), rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;
  return (uint16_t)h;
}

/* Random values for synthetic weights repeat with a period of SYN_PERIOD elements: a table
 * of them (per scale) is copied into each tensor from a random start, at memory speed (drawn
 * one by one, Llama-3.2-1B's 2.5 GB took 34 s on 16 cores). Weights for timing only. */
#define SYN_PERIOD 65536u
static unsigned char syn_table[SYN_PERIOD * 4];
static float syn_scale = -1.0f;

/* A library buffer of n elements of the model's type: uniform in [-scale, scale), or all
 * `scale` when constant (norm weights). Written through nh_buffer_map, no host copy. */
static nh_buffer synthetic_tensor(nh_runtime rt, uint64_t n, float scale, int constant, uint64_t *rng) {
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, n * g_es, &b));
  void *p;
  size_t size;
  NH_CHECK(nh_buffer_map(rt, b, &p, &size));
  uint64_t s = *rng;
  if (!constant && scale != syn_scale) {
    for (uint32_t i = 0; i < SYN_PERIOD; i++) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
      float v = ((float)(s >> 40) / (float)(1u << 24) * 2.0f - 1.0f) * scale;
      if (g_dt == NH_F16) ((uint16_t *)syn_table)[i] = f32_to_f16(v);
      else ((float *)syn_table)[i] = v;
    }
    syn_scale = scale;
  }
  if (constant) {
    for (uint64_t i = 0; i < n; i++) {
      if (g_dt == NH_F16) ((uint16_t *)p)[i] = f32_to_f16(scale);
      else ((float *)p)[i] = scale;
    }
  } else {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint64_t at = s % SYN_PERIOD;
    for (uint64_t i = 0; i < n;) {
      uint64_t run = SYN_PERIOD - at < n - i ? SYN_PERIOD - at : n - i;
      memcpy((unsigned char *)p + i * g_es, syn_table + at * g_es, run * g_es);
      i += run;
      at = 0;
    }
  }
  *rng = s;
  NH_CHECK(nh_buffer_unmap(rt, b, 1));
  return b;
}

static nh_tensor whole(nh_buffer b, uint64_t d0, uint64_t d1) {
  uint64_t shape[2] = {d0, d1};
  return nh_dense(b, g_dt, d1 ? 2 : 1, shape, 0);
}

/* Random weights of the shapes in `spec` (a config.json path or `llama-3.2-1b`). */
static void synthetic_model(nh_runtime rt, const char *spec, model *m, uint64_t seed) {
  config *c = &m->c;
  if (!strcmp(spec, "llama-3.2-1b")) parse_config(LLAMA_3_2_1B, spec, c);
  else {
    char *cj = read_text(spec);
    parse_config(cj, spec, c);
    free(cj);
  }
  if (c->layers > MAX_LAYERS) die("%s: at most %d layers", spec, MAX_LAYERS);
  uint64_t D = c->dim, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim, F = c->ffn;
  uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
  /* Uniform weights of std ~ 1/sqrt(fan_in) keep activations O(1) through the layers. */
  float sd = 1.7f / sqrtf((float)D), sf = 1.7f / sqrtf((float)F);
  m->file.id = 0;
  m->embed = whole(synthetic_tensor(rt, c->vocab * D, 1.0f, 0, &rng), c->vocab, D);
  m->rope_pairs = 0;
  m->wtype = g_dt == NH_F16 ? "f16" : "f32";
  m->norm = whole(synthetic_tensor(rt, D, 1.0f, 1, &rng), D, 0);
  m->lm_head = whole(synthetic_tensor(rt, c->vocab * D, sd, 0, &rng), c->vocab, D);
  for (uint64_t i = 0; i < c->layers; i++) {
    layer_weights *l = &m->layer[i];
    l->attn_norm = whole(synthetic_tensor(rt, D, 1.0f, 1, &rng), D, 0);
    l->ffn_norm = whole(synthetic_tensor(rt, D, 1.0f, 1, &rng), D, 0);
    l->wq = whole(synthetic_tensor(rt, Q * D, sd, 0, &rng), Q, D);
    l->wk = whole(synthetic_tensor(rt, KV * D, sd, 0, &rng), KV, D);
    l->wv = whole(synthetic_tensor(rt, KV * D, sd, 0, &rng), KV, D);
    l->wo = whole(synthetic_tensor(rt, D * Q, sd, 0, &rng), D, Q);
    l->wgate = whole(synthetic_tensor(rt, F * D, sd, 0, &rng), F, D);
    l->wup = whole(synthetic_tensor(rt, F * D, sd, 0, &rng), F, D);
    l->wdown = whole(synthetic_tensor(rt, D * F, sf, 0, &rng), D, F);
  }
}

static double tensor_bytes(nh_tensor t) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < t.rank; i++) n *= t.shape[i];
  return (double)dtype_bytes(t.dtype, n);
}

/* Bytes of weights one decode step reads (every matrix and norm once, the embedding row
 * aside), in the types they have (quantized blocks included). */
static double weight_bytes(const model *m) {
  double total = tensor_bytes(m->norm) + tensor_bytes(m->lm_head);
  for (uint64_t i = 0; i < m->c.layers; i++) {
    const layer_weights *l = &m->layer[i];
    nh_tensor all[] = {l->attn_norm, l->wq, l->wk, l->wv, l->wo, l->ffn_norm, l->wgate, l->wup, l->wdown};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) total += tensor_bytes(all[j]);
  }
  return total;
}

/* An NPU that runs bf16 matmuls but not f32 ones (every real one, and the simulated XDNA
 * profile) gets f32 prefill matmuls only if they allow bf16 operands. */
static int npu_needs_bf16(const nh_device_info *infos, uint32_t ndev) {
  for (uint32_t i = 0; i < ndev; i++) {
    const nh_device_info *d = &infos[i];
    if (d->available && (d->kind == NH_DEVICE_NPU || d->kind == NH_DEVICE_SIMULATED_NPU) &&
        (d->dtypes & (1u << NH_BF16)) && !(d->dtypes & (1u << NH_F32)))
      return 1;
  }
  return 0;
}


/* ---- Activations and the KV cache ---- */

typedef struct {
  nh_buffer x, h, q, attn, g, u, logits;
  nh_buffer k[MAX_LAYERS], v[MAX_LAYERS];
  /* A cache of another type than the activations (--kv-cache f16 under f32): the new K / V
   * rows land here first (the matmul writes the activations' type), then a copy converts
   * them into the cache. */
  nh_buffer k_new, v_new;
  uint64_t rows, positions; /* rows: of a prefill chunk (--prefill-chunk) */
  uint32_t kv_dt;
} state;

/* n elements of the model's type (`f32`: of f32, for the logits). */
static nh_buffer alloc_act(nh_runtime rt, uint64_t n, int f32) {
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, n * (f32 ? sizeof(float) : g_es), &b));
  return b;
}

/* [rows, cols] of type dt (f32, f16 or bf16) at row `row0` of a [.., cols] buffer. */
static nh_tensor rows_view_of(nh_buffer b, uint32_t dt, uint64_t row0, uint64_t rows, uint64_t cols) {
  uint64_t s[2] = {rows, cols};
  return nh_dense(b, dt, 2, s, row0 * cols * (dt == NH_F32 ? sizeof(float) : 2));
}

/* [rows, cols] of the model's type at row `row0` of a [.., cols] buffer. */
static nh_tensor rows_view(nh_buffer b, uint64_t row0, uint64_t rows, uint64_t cols) {
  return rows_view_of(b, g_dt, row0, rows, cols);
}

/* Rows [row0, row0 + seq) of a [.., heads * hd] buffer of the activations' type seen as
 * [seq, heads, hd] (RoPE's layout). */
static nh_tensor seq_heads_view(nh_buffer b, uint64_t row0, uint64_t seq, uint64_t heads, uint64_t hd) {
  uint64_t s[3] = {seq, heads, hd};
  return nh_dense(b, g_dt, 3, s, row0 * heads * hd * g_es);
}

/* The first `seq` rows of a [.., heads * hd] buffer of type dt seen as [heads, seq, hd]
 * (attention's). */
static nh_tensor heads_seq_view(nh_buffer b, uint32_t dt, uint64_t seq, uint64_t heads, uint64_t hd) {
  uint64_t s[3] = {heads, seq, hd};
  nh_tensor t = nh_dense(b, dt, 3, s, 0);
  t.strides[0] = hd;
  t.strides[1] = heads * hd;
  t.strides[2] = 1;
  return t;
}

/* ---- Submission: op by op (events kept for placement) or into a graph ---- */

typedef struct {
  nh_event ev;
  uint32_t kind;
  uint32_t phase;
} pending_op;

typedef struct {
  nh_runtime rt;
  nh_graph graph; /* id 0: submit op by op */
  /* With a graph: 0 = record (append every op), 1 = update (replace only the ops that depend
   * on the position or the token, found by their index in the recorded order). */
  int updating;
  size_t index;
  pending_op *pending;
  size_t npending, cap;
  /* placement[phase][op kind][device] = ops, from each op's event (op-by-op only) */
  uint64_t placement[NPHASES][NKINDS][MAX_DEVICES];
  uint64_t tracked[NPHASES];
  uint32_t ndev;
} submitter;

/* `varies`: the op changes with the position or the token (the rest of a decode step is the
 * same every step). */
static void emit(submitter *s, const nh_op_desc *op, uint32_t phase, int varies) {
  if (s->graph.id) {
    if (!s->updating) NH_CHECK(nh_graph_add(s->rt, s->graph, op));
    else if (varies) NH_CHECK(nh_graph_set_op(s->rt, s->graph, s->index, op));
    s->index++;
    return;
  }
  if (s->npending == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 256;
    s->pending = realloc(s->pending, s->cap * sizeof *s->pending);
  }
  pending_op *p = &s->pending[s->npending++];
  NH_CHECK(nh_submit(s->rt, op, &p->ev));
  p->kind = op->kind;
  p->phase = phase;
}

/* Waits for every op submitted one by one and counts where each ran. */
static void retire(submitter *s) {
  for (size_t i = 0; i < s->npending; i++) {
    pending_op *p = &s->pending[i];
    NH_CHECK(nh_event_wait(s->rt, p->ev, UINT64_MAX));
    nh_event_info info;
    info.struct_size = sizeof info;
    NH_CHECK(nh_event_get_info(s->rt, p->ev, &info));
    NH_CHECK(nh_event_release(s->rt, p->ev));
    if (info.device >= 0 && (uint32_t)info.device < s->ndev && p->kind < NKINDS) {
      s->placement[p->phase][p->kind][info.device]++;
      s->tracked[p->phase]++;
    }
  }
  s->npending = 0;
}

static nh_op_desc op_init(uint32_t kind, uint32_t phase) {
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = kind;
  op.tags = phase_tag[phase];
  return op;
}

/* out (+)= a[rows, in] * W^T, W an nn.Linear weight [out, in]. */
static void linear(submitter *s, const model *m, uint32_t phase, nh_tensor a, nh_tensor w, nh_tensor out,
                   int accumulate, uint32_t act, int varies) {
  nh_op_desc op = op_init(NH_OP_MATMUL, phase);
  op.inputs[0] = a;
  op.inputs[1] = w;
  op.output = out;
  /* Decode stays f32: its matmuls are weight-streaming GEMVs an NPU would not win anyway. */
  op.flags = NH_FLAG_TRANS_B | (m->bf16 && phase == PHASE_PREFILL ? NH_FLAG_ALLOW_BF16 : 0);
  /* Quantized weights: int8 activations as llama.cpp (the CPU's integer decode kernels). */
  if (!g_f32_activations && block_elems(w.dtype) > 1) op.flags |= NH_FLAG_ALLOW_Q8_ACTIVATIONS;
  op.beta = accumulate ? 1.0f : 0.0f;
  op.activation = act;
  emit(s, &op, phase, varies);
}

static void rmsnorm(submitter *s, uint32_t phase, nh_tensor x, nh_tensor w, nh_tensor out, float eps) {
  nh_op_desc op = op_init(NH_OP_RMSNORM, phase);
  op.inputs[0] = x;
  op.inputs[1] = w;
  op.output = out;
  op.eps = eps;
  emit(s, &op, phase, 0);
}

/* Which rows' logits forward() computes: none (a prefill chunk before the last), the last
 * row's (into st->logits row 0), or every row's (into st->logits rows pos..pos + n). */
typedef enum { LOGITS_NONE, LOGITS_LAST, LOGITS_ALL } logits_rows;

/* Where the new K or V rows of a layer go: into its cache at rows pos.., or into k_new / v_new
 * (row 0) when the cache has another type. */
static nh_tensor kv_dest(const state *st, nh_buffer cache, nh_buffer fresh, uint64_t pos, uint64_t n, uint64_t w) {
  return st->kv_dt == g_dt ? rows_view(cache, pos, n, w) : rows_view(fresh, 0, n, w);
}

/* Runs tokens[0..n) at positions pos.. through the model (n <= st->rows), writing their K and
 * V into the cache; logits as `lr` says. The ops are emitted (submitted or recorded), not
 * waited for. */
static void forward(submitter *s, const model *m, const state *st, const int32_t *tokens, uint64_t n, uint64_t pos,
                    uint32_t phase, logits_rows lr) {
  const config *c = &m->c;
  uint64_t D = c->dim, H = c->heads, HKV = c->kv_heads, HD = c->head_dim, QW = H * HD, KVW = HKV * HD;
  nh_op_desc op;
  /* Token embeddings: one row copy each, out of the mapped file. */
  for (uint64_t i = 0; i < n; i++) {
    op = op_init(NH_OP_COPY, phase);
    uint64_t shape[2] = {1, D};
    op.inputs[0] = nh_dense(m->embed.buffer, m->embed.dtype, 2, shape,
                            m->embed.offset + dtype_bytes(m->embed.dtype, (uint64_t)tokens[i] * D));
    op.output = rows_view(st->x, i, 1, D);
    emit(s, &op, phase, 1);
  }
  nh_tensor x = rows_view(st->x, 0, n, D), h = rows_view(st->h, 0, n, D);
  for (uint64_t l = 0; l < c->layers; l++) {
    const layer_weights *w = &m->layer[l];
    rmsnorm(s, phase, x, w->attn_norm, h, c->eps);
    linear(s, m, phase, h, w->wq, rows_view(st->q, 0, n, QW), 0, NH_ACT_NONE, 0);
    int convert = st->kv_dt != g_dt;
    nh_tensor k_rows = kv_dest(st, st->k[l], st->k_new, pos, n, KVW);
    linear(s, m, phase, h, w->wk, k_rows, 0, NH_ACT_NONE, !convert);
    linear(s, m, phase, h, w->wv, kv_dest(st, st->v[l], st->v_new, pos, n, KVW), 0, NH_ACT_NONE, !convert);
    op = op_init(NH_OP_ROPE, phase);
    op.inputs[0] = op.output = seq_heads_view(st->q, 0, n, H, HD);
    op.rope_theta = c->theta;
    op.rope_position = (uint32_t)pos;
    op.flags = m->rope_pairs ? NH_FLAG_ROPE_INTERLEAVED : 0;
    emit(s, &op, phase, 1);
    op.inputs[0] = op.output = seq_heads_view(k_rows.buffer, convert ? 0 : pos, n, HKV, HD);
    emit(s, &op, phase, 1);
    if (convert) { /* the roped K rows and the V rows into the cache, converted */
      op = op_init(NH_OP_COPY, phase);
      op.inputs[0] = k_rows;
      op.output = rows_view_of(st->k[l], st->kv_dt, pos, n, KVW);
      emit(s, &op, phase, 1);
      op.inputs[0] = rows_view(st->v_new, 0, n, KVW);
      op.output = rows_view_of(st->v[l], st->kv_dt, pos, n, KVW);
      emit(s, &op, phase, 1);
    }
    op = op_init(NH_OP_ATTENTION, phase);
    op.flags = NH_FLAG_CAUSAL; /* queries are the last n of the pos + n keys */
    /* The whole cache, the first pos + n keys valid: the same views every step, so a device
     * keeps its copy of the cache and only the new rows reach it. */
    op.inputs[0] = heads_seq_view(st->q, g_dt, n, H, HD);
    op.inputs[1] = heads_seq_view(st->k[l], st->kv_dt, st->positions, HKV, HD);
    op.inputs[2] = heads_seq_view(st->v[l], st->kv_dt, st->positions, HKV, HD);
    op.kv_len = (uint32_t)(pos + n);
    op.output = heads_seq_view(st->attn, g_dt, n, H, HD);
    emit(s, &op, phase, 1);
    linear(s, m, phase, rows_view(st->attn, 0, n, QW), w->wo, x, 1, NH_ACT_NONE, 0); /* x += attn Wo^T */
    rmsnorm(s, phase, x, w->ffn_norm, h, c->eps);
    nh_tensor g = rows_view(st->g, 0, n, c->ffn), u = rows_view(st->u, 0, n, c->ffn);
    linear(s, m, phase, h, w->wgate, g, 0, NH_ACT_SILU, 0);
    linear(s, m, phase, h, w->wup, u, 0, NH_ACT_NONE, 0);
    op = op_init(NH_OP_MUL, phase);
    op.inputs[0] = g;
    op.inputs[1] = u;
    op.output = g;
    emit(s, &op, phase, 0);
    linear(s, m, phase, g, w->wdown, x, 1, NH_ACT_NONE, 0); /* x += (silu(gate) * up) Wdown^T */
  }
  if (lr == LOGITS_NONE) return;
  uint64_t first = lr == LOGITS_LAST ? n - 1 : 0, rows = lr == LOGITS_LAST ? 1 : n;
  nh_tensor hl = rows_view(st->h, first, rows, D);
  rmsnorm(s, phase, rows_view(st->x, first, rows, D), m->norm, hl, c->eps);
  nh_tensor out = rows_view_of(st->logits, NH_F32, lr == LOGITS_ALL ? pos : 0, rows, c->vocab);
  linear(s, m, phase, hl, m->lm_head, out, 0, NH_ACT_NONE, lr == LOGITS_ALL);
}

/* A graph of one prefill chunk's ops, recorded at its first use: later chunks of the same
 * size replace only the ops that depend on the position or the tokens, as decode steps do,
 * so a long prompt's prefill holds one chunk's ops, not the prompt's. */
typedef struct {
  nh_graph g;
  size_t ops;
} chunk_graph;

static void run_chunk(submitter *s, chunk_graph *cg, const model *m, const state *st, const int32_t *tokens,
                      uint64_t n, uint64_t pos, logits_rows lr) {
  if (!cg->g.id) NH_CHECK(nh_graph_create(s->rt, &cg->g));
  s->graph = cg->g;
  s->updating = cg->ops > 0;
  s->index = 0;
  forward(s, m, st, tokens, n, pos, PHASE_PREFILL, lr);
  s->graph.id = 0;
  if (!cg->ops) NH_CHECK(nh_graph_op_count(s->rt, cg->g, &cg->ops));
  if (s->index != cg->ops) die("internal: a prefill chunk emitted %zu ops, its graph has %zu", s->index, cg->ops);
  nh_event ev;
  NH_CHECK(nh_graph_submit(s->rt, cg->g, &ev));
  NH_CHECK(nh_event_wait(s->rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(s->rt, ev));
}

/* The prompt in chunks of at most st->rows tokens (--prefill-chunk): each chunk attends to the
 * keys the earlier ones cached, so the activations take st->rows rows, not the prompt's.
 * Logits of the last token (or of every token, `all_logits`). With `graphs`, the chunks
 * before the last run as graphs[0], the last as graphs[1]; else their ops are submitted one
 * by one. */
static void prefill(submitter *s, chunk_graph *graphs, const model *m, const state *st, const int32_t *prompt,
                    uint64_t len, int all_logits) {
  for (uint64_t pos = 0; pos < len; pos += st->rows) {
    uint64_t n = len - pos < st->rows ? len - pos : st->rows;
    int last = pos + n == len;
    logits_rows lr = all_logits ? LOGITS_ALL : last ? LOGITS_LAST : LOGITS_NONE;
    if (graphs) run_chunk(s, &graphs[last], m, st, prompt + pos, n, pos, lr);
    else forward(s, m, st, prompt + pos, n, pos, PHASE_PREFILL, lr);
  }
}

/* ---- Sampling ---- */

typedef enum { SAMPLE_GREEDY, SAMPLE_TOPK, SAMPLE_TOPP } sample_kind;

typedef struct {
  sample_kind kind;
  uint64_t k;
  double p, temperature;
  uint64_t rng;
} sampler;

static double rng_uniform(uint64_t *s) { /* splitmix64, [0, 1) */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0;
}

typedef struct {
  float logit;
  int32_t id;
} cand;

static int cand_desc(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
  return x->id - y->id;
}

static int32_t argmax(const float *logits, uint64_t V) {
  uint64_t best = 0;
  for (uint64_t i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  return (int32_t)best;
}

static int32_t sample(sampler *sm, const float *logits, uint64_t V, cand *scratch) {
  if (sm->kind == SAMPLE_GREEDY) return argmax(logits, V);
  for (uint64_t i = 0; i < V; i++) scratch[i] = (cand){logits[i], (int32_t)i};
  qsort(scratch, V, sizeof *scratch, cand_desc);
  uint64_t n = sm->kind == SAMPLE_TOPK ? (sm->k < V ? sm->k : V) : V;
  /* Softmax over the candidates (at the temperature), largest first. */
  double *pr = malloc(n * sizeof *pr), total = 0;
  for (uint64_t i = 0; i < n; i++) total += pr[i] = exp((scratch[i].logit - scratch[0].logit) / sm->temperature);
  if (sm->kind == SAMPLE_TOPP) { /* the smallest prefix whose probability reaches p */
    double acc = 0;
    uint64_t keep = 0;
    while (keep < n && acc < sm->p * total) acc += pr[keep++];
    n = keep ? keep : 1;
    total = acc > 0 ? acc : pr[0];
  }
  double r = rng_uniform(&sm->rng) * total, acc = 0;
  int32_t id = scratch[n - 1].id;
  for (uint64_t i = 0; i < n; i++) {
    acc += pr[i];
    if (r < acc) {
      id = scratch[i].id;
      break;
    }
  }
  free(pr);
  return id;
}

/* ---- Options ---- */

static uint64_t parse_uint(const char *opt, const char *s, uint64_t lo, uint64_t hi) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (!*s || *end || errno || s[0] == '-' || v < lo || v > hi)
    die("%s: '%s' is not a whole number in %llu..%llu", opt, s, (unsigned long long)lo, (unsigned long long)hi);
  return v;
}

static double parse_double(const char *opt, const char *s, double lo, double hi) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (!*s || *end || errno || !(v >= lo && v <= hi)) die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
  return v;
}

static uint32_t parse_devices(const char *list) {
  uint32_t bits = 0;
  char buf[128];
  if (strlen(list) >= sizeof buf) die("--devices: list too long");
  strcpy(buf, list);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (!strcmp(tok, "cpu")) continue; /* always there */
    else if (!strcmp(tok, "gpu")) bits |= NH_ENABLE_GPU;
    else if (!strcmp(tok, "npu")) bits |= NH_ENABLE_NPU;
    else if (!strcmp(tok, "sim")) bits |= NH_ENABLE_SIMULATED_NPU;
    else die("--devices: unknown device '%s' (expected cpu, gpu, npu or sim, comma-separated)", tok);
  }
  return bits;
}

/* Where the scheduler puts a graph now: its segments, their expected times and the
 * candidate plans it weighed (nh_graph_explain). */
static void explain_graph(nh_runtime rt, const char *name, nh_graph g) {
  if (!g.id) return;
  size_t need = 0;
  NH_CHECK(nh_graph_explain(rt, g, NULL, 0, &need));
  char *text = malloc(need);
  if (!text) die("out of memory");
  NH_CHECK(nh_graph_explain(rt, g, text, need, NULL));
  printf("%s graph placement: %s\n", name, text);
  free(text);
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--model DIR | FILE.gguf [--dtype f32|f16] | --synthetic CONFIG [--dtype f16|f32]] [--prompt-len N]\n"
          "          [--policy NAME|FILE.nhp] [--devices cpu|gpu,sim,npu] [--steps N]\n"
          "          [--prompt ID,ID,...] [--sample greedy|topk:K|topp:P] [--temperature T] [--seed S]\n"
          "          [--check REF] [--tol X] [--follow ID,ID,...] [--trace FILE] [--threads N] [--decode graph|rerecord|ops]\n"
          "          [--warmup N] [--expect-placement] [--quiet] [--quant q8_0|q4_0|q4_1|q4_g128]\n"
          "          [--kv-cache f32|f16]   (the KV cache's type; default the activations'; f16 under f32\n"
          "           activations halves it, attention widening it as it reads: CPU only)\n"
          "          [--prefill-chunk N]   (prefill N prompt tokens at a time: activations for N rows)\n"
          "          [--explain]   (print where the scheduler puts the prefill and decode graphs)\n"
          "          [--activations q8|f32]   (quantized weights: q8 (default) lets the CPU round\n"
          "           activations to int8 blocks as llama.cpp does; f32 keeps f32 math)\n"
          "       --model takes a safetensors directory or a llama GGUF file (FILE.gguf)\n",
          argv0);
  exit(2);
}

static const char *kind_label(uint32_t k) {
  switch (k) {
    case NH_OP_MATMUL: return "matmul";
    case NH_OP_MUL: return "mul";
    case NH_OP_RMSNORM: return "rmsnorm";
    case NH_OP_ROPE: return "rope";
    case NH_OP_ATTENTION: return "attention";
    case NH_OP_COPY: return "copy";
    default: return "other";
  }
}

static void device_stats(nh_runtime rt, uint32_t ndev, uint64_t *ops) {
  for (uint32_t i = 0; i < ndev; i++) {
    nh_device_stats s;
    s.struct_size = sizeof s;
    NH_CHECK(nh_device_get_stats(rt, i, &s));
    ops[i] = s.ops_run;
  }
}

int main(int argc, char **argv) {
  const char *model_dir = NH_DEFAULT_MODEL, *policy = "llm_inference", *check = NULL, *trace = NULL;
  const char *prompt_arg = NULL, *synthetic = NULL, *dtype_arg = NULL, *follow_arg = NULL;
  uint64_t prompt_len = 0, prefill_chunk = 0;
  uint32_t kv_dt = 0; /* 0: the activations' type */
  uint32_t devices = NH_ENABLE_GPU | NH_ENABLE_NPU, threads = 0;
  uint64_t steps = 0, seed = 1, warmup = 1;
  int steps_given = 0, expect_placement = 0, quiet = 0, sample_given = 0, explain = 0;
  enum { DECODE_GRAPH, DECODE_RERECORD, DECODE_OPS } decode = DECODE_GRAPH;
  double tol = 0;
  sampler sm = {SAMPLE_GREEDY, 0, 0, 1.0, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                     \
  do {                                                   \
    if (!v) die("%s needs a value (see --help)", a); \
    i++;                                                 \
  } while (0)
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) usage(argv[0]);
    else if (!strcmp(a, "--model")) { NEED_VALUE(); model_dir = v; }
    else if (!strcmp(a, "--synthetic")) { NEED_VALUE(); synthetic = v; }
    else if (!strcmp(a, "--dtype")) { NEED_VALUE(); dtype_arg = v; }
    else if (!strcmp(a, "--prompt-len")) { NEED_VALUE(); prompt_len = parse_uint(a, v, 1, 1u << 20); }
    else if (!strcmp(a, "--prefill-chunk")) { NEED_VALUE(); prefill_chunk = parse_uint(a, v, 1, 1u << 20); }
    else if (!strcmp(a, "--kv-cache")) {
      NEED_VALUE();
      if (!strcmp(v, "f16")) kv_dt = NH_F16;
      else if (!strcmp(v, "f32")) kv_dt = NH_F32;
      else die("--kv-cache: '%s' is not f16 or f32", v);
    }
    else if (!strcmp(a, "--policy")) { NEED_VALUE(); policy = v; }
    else if (!strcmp(a, "--devices")) { NEED_VALUE(); devices = parse_devices(v); }
    else if (!strcmp(a, "--steps")) { NEED_VALUE(); steps = parse_uint(a, v, 1, 1u << 20); steps_given = 1; }
    else if (!strcmp(a, "--prompt")) { NEED_VALUE(); prompt_arg = v; }
    else if (!strcmp(a, "--follow")) { NEED_VALUE(); follow_arg = v; }
    else if (!strcmp(a, "--seed")) { NEED_VALUE(); seed = parse_uint(a, v, 0, UINT64_MAX); }
    else if (!strcmp(a, "--check")) { NEED_VALUE(); check = v; }
    else if (!strcmp(a, "--tol")) { NEED_VALUE(); tol = parse_double(a, v, 0, 1e6); }
    else if (!strcmp(a, "--trace")) { NEED_VALUE(); trace = v; }
    else if (!strcmp(a, "--threads")) { NEED_VALUE(); threads = (uint32_t)parse_uint(a, v, 1, 1024); }
    else if (!strcmp(a, "--warmup")) { NEED_VALUE(); warmup = parse_uint(a, v, 0, 100); }
    else if (!strcmp(a, "--temperature")) { NEED_VALUE(); sm.temperature = parse_double(a, v, 1e-3, 1e3); }
    else if (!strcmp(a, "--expect-placement")) expect_placement = 1;
    else if (!strcmp(a, "--quiet")) quiet = 1;
    else if (!strcmp(a, "--explain")) explain = 1;
    else if (!strcmp(a, "--activations")) {
      NEED_VALUE();
      if (!strcmp(v, "q8")) g_f32_activations = 0;
      else if (!strcmp(v, "f32")) g_f32_activations = 1;
      else die("--activations: '%s' is not q8 or f32", v);
    }
    else if (!strcmp(a, "--quant")) {
      NEED_VALUE();
      if (parse_quant(v, &load_quant)) die("--quant: '%s' is not q8_0, q4_0, q4_1 or q4_g128", v);
    }
    else if (!strcmp(a, "--decode")) {
      NEED_VALUE();
      if (!strcmp(v, "graph")) decode = DECODE_GRAPH;
      else if (!strcmp(v, "rerecord")) decode = DECODE_RERECORD;
      else if (!strcmp(v, "ops")) decode = DECODE_OPS;
      else die("--decode: '%s' is not graph, rerecord or ops", v);
    } else if (!strcmp(a, "--sample")) {
      NEED_VALUE();
      sample_given = 1;
      if (!strcmp(v, "greedy")) sm.kind = SAMPLE_GREEDY;
      else if (!strncmp(v, "topk:", 5)) { sm.kind = SAMPLE_TOPK; sm.k = parse_uint("--sample topk:K", v + 5, 1, 1u << 24); }
      else if (!strncmp(v, "topp:", 5)) { sm.kind = SAMPLE_TOPP; sm.p = parse_double("--sample topp:P", v + 5, 1e-9, 1); }
      else die("--sample: '%s' is not greedy, topk:K or topp:P", v);
    } else {
      fprintf(stderr, "generate: unknown option '%s'\n", a);
      usage(argv[0]);
    }
#undef NEED_VALUE
  }
  sm.rng = seed;
  size_t mlen = strlen(model_dir);
  int is_gguf = !synthetic && mlen > 5 && !strcmp(model_dir + mlen - 5, ".gguf");
  if (dtype_arg && !synthetic && !is_gguf)
    die("--dtype is for --synthetic and GGUF models (a safetensors model's file decides)");
  if (prompt_len && prompt_arg) die("--prompt-len makes random ids: drop --prompt");
  if (synthetic && check) die("--check needs a real model's reference: drop --synthetic");
  if (is_gguf && dtype_arg) { /* GGUF: f32 activations unless --dtype f16 */
    if (!strcmp(dtype_arg, "f16")) g_dt = NH_F16;
    else if (strcmp(dtype_arg, "f32")) die("--dtype: '%s' is not f16 or f32", dtype_arg);
    else g_half_weights = 0; /* all f32: half weights converted at load */
    g_es = g_dt == NH_F16 ? 2 : sizeof(float);
  }
  if (synthetic) {
    g_dt = NH_F16;
    if (dtype_arg && !strcmp(dtype_arg, "f32")) g_dt = NH_F32;
    else if (dtype_arg && strcmp(dtype_arg, "f16")) die("--dtype: '%s' is not f16 or f32", dtype_arg);
    g_es = g_dt == NH_F16 ? 2 : sizeof(float);
  }
  if (check && sample_given && sm.kind != SAMPLE_GREEDY) die("--check compares greedy tokens: drop --sample");
  if (kv_dt == NH_F32 && g_dt == NH_F16) die("--kv-cache f32 needs f32 activations (an f16 query reads an f16 cache)");
  if (follow_arg && (check || sample_given || steps_given))
    die("--follow sets the steps and compares top-1 tokens: drop --check, --sample and --steps");
  if (expect_placement && decode != DECODE_OPS)
    die("--expect-placement reads each op's event: use it with --decode ops");

  /* The reference, when checking: prompt, tokens, logits. */
  char *ref = NULL;
  double *ref_prompt = NULL, *ref_tokens = NULL, *ref_logits = NULL, *ref_prefill = NULL;
  size_t n_ref_prompt = 0, n_ref_tokens = 0, n_ref_logits = 0, n_ref_prefill = 0;
  double ref_scale = 1;
  if (check) {
    ref = read_text(check);
    ref_prompt = json_numbers(ref, "prompt", check, &n_ref_prompt);
    ref_tokens = json_numbers(ref, "tokens", check, &n_ref_tokens);
    ref_logits = json_numbers(ref, "logits", check, &n_ref_logits);
    ref_prefill = json_numbers(ref, "prefill_logits", check, &n_ref_prefill);
    ref_scale = json_number(ref, "logits_abs_max", check);
    if (n_ref_prompt == 0 || n_ref_tokens == 0) die("%s: empty prompt or tokens", check);
    if (!steps_given) steps = n_ref_tokens;
    if (steps > n_ref_tokens)
      die("--steps %llu: the reference %s has %zu steps", (unsigned long long)steps, check, n_ref_tokens);
    if (prompt_arg) die("--check uses the reference's prompt: drop --prompt");
  }
  if (!steps) steps = 64;
  /* Justified in docs/PERFORMANCE.md: f32 rounding (f32 vs f64) is ~5e-6 at logit scale ~13;
   * 1e-4 of the scale leaves room for other summation orders (GPU, split K) and stays far
   * below the smallest gap between the best and second-best logit (0.18). */
  int tol_given = tol != 0;
  if (tol == 0) tol = 1e-4 * (ref_scale > 1 ? ref_scale : 1);

  nh_runtime_desc desc;
  NH_CHECK(nh_runtime_desc_init(&desc));
  desc.devices = devices;
  desc.threads = threads;
  size_t plen = strlen(policy);
  int policy_is_file = plen > 4 && !strcmp(policy + plen - 4, ".nhp");
  desc.policy_kind = policy_is_file ? NH_POLICY_FILE : NH_POLICY_BUILTIN;
  desc.policy = policy;
  nh_runtime rt;
  NH_CHECK(nh_runtime_create(&desc, &rt));

  uint32_t ndev = 0;
  NH_CHECK(nh_device_count(rt, &ndev));
  if (ndev > MAX_DEVICES) ndev = MAX_DEVICES;
  nh_device_info infos[MAX_DEVICES];
  int gpu_available = 0, npu_available = 0;
  printf("devices:\n");
  for (uint32_t i = 0; i < ndev; i++) {
    infos[i].struct_size = sizeof infos[i];
    NH_CHECK(nh_device_get_info(rt, i, &infos[i]));
    if (infos[i].available && infos[i].kind == NH_DEVICE_GPU) gpu_available = 1;
    if (infos[i].available && (infos[i].kind == NH_DEVICE_NPU || infos[i].kind == NH_DEVICE_SIMULATED_NPU))
      npu_available = 1;
    printf("  [%u] %-14s %s%s%s%s\n", i, nh_kind_name(infos[i].kind), infos[i].name,
           infos[i].available ? "" : "  (unavailable: ", infos[i].available ? "" : infos[i].unavailable_reason,
           infos[i].available ? "" : ")");
  }
  char pname[64];
  NH_CHECK(nh_policy_name(rt, pname, sizeof pname, NULL));

  model m;
  memset(&m, 0, sizeof m);
  st_file stf;
  memset(&stf, 0, sizeof stf);
  double t_load = now_s();
  if ((is_gguf || synthetic) && load_quant != NH_F32)
    die("--quant applies to safetensors models; a GGUF file or a synthetic model keeps its types");
  if (synthetic) synthetic_model(rt, synthetic, &m, seed);
  else if (is_gguf) load_gguf(rt, model_dir, &m);
  else load_model(rt, model_dir, &m, &stf);
  m.bf16 = npu_needs_bf16(infos, ndev);
  t_load = now_s() - t_load;
  /* bf16 keeps 8 significant bits (relative rounding 2^-9 per operand); over the layers the
   * prefill logits move by up to about 1e-2 of their scale, still below the 0.18 gap between
   * the best two logits that greedy decoding depends on. */
  if (m.bf16 && !tol_given) tol = 1e-2 * (ref_scale > 1 ? ref_scale : 1);
  const config *c = &m.c;
  /* Without a reference to check, prefill computes the last row's logits only (all that
   * sampling reads; llama.cpp's prompt processing does the same). */
  int last_logits = synthetic != NULL || !check;

  /* The prompt. */
  uint64_t plen_tok = 0;
  int32_t *prompt = NULL;
  if (check) {
    plen_tok = n_ref_prompt;
    prompt = malloc(plen_tok * sizeof *prompt);
    for (uint64_t i = 0; i < plen_tok; i++) prompt[i] = (int32_t)ref_prompt[i];
  } else if (prompt_arg) {
    char *buf = strdup(prompt_arg);
    prompt = malloc((strlen(prompt_arg) / 2 + 1) * sizeof *prompt);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
      prompt[plen_tok++] = (int32_t)parse_uint("--prompt", tok, 0, c->vocab - 1);
    free(buf);
    if (!plen_tok) die("--prompt: no token ids");
  } else { /* pseudo-random ids from the seed: --prompt-len of them, else 16 */
    plen_tok = prompt_len ? prompt_len : 16 < c->max_pos ? 16 : 1;
    prompt = malloc(plen_tok * sizeof *prompt);
    uint64_t r = seed ^ 0x5DEECE66Dull;
    for (uint64_t i = 0; i < plen_tok; i++) prompt[i] = (int32_t)(rng_uniform(&r) * (double)c->vocab);
  }
  for (uint64_t i = 0; i < plen_tok; i++)
    if (prompt[i] < 0 || (uint64_t)prompt[i] >= c->vocab)
      die("prompt token %llu = %d is outside the vocabulary of %llu", (unsigned long long)i, prompt[i],
          (unsigned long long)c->vocab);
  if (check && (n_ref_logits != n_ref_tokens * c->vocab || n_ref_prefill != plen_tok * c->vocab))
    die("%s: logits do not match %zu steps and %llu prompt positions of a %llu-token vocabulary", check, n_ref_tokens,
        (unsigned long long)plen_tok, (unsigned long long)c->vocab);
  /* Teacher forcing: step i is compared with, then fed, follow[i]. */
  int32_t *follow = NULL;
  uint64_t agree = 0;
  if (follow_arg) {
    char *buf = strdup(follow_arg);
    follow = malloc((strlen(follow_arg) / 2 + 1) * sizeof *follow);
    steps = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ","))
      follow[steps++] = (int32_t)parse_uint("--follow", t, 0, c->vocab - 1);
    free(buf);
    if (steps < 2) die("--follow: at least 2 token ids");
  }
  if (plen_tok + steps > c->max_pos)
    die("prompt (%llu) + steps (%llu) exceed max_position_embeddings %llu", (unsigned long long)plen_tok,
        (unsigned long long)steps, (unsigned long long)c->max_pos);

  printf("policy: %s\nmodel: %s%s: vocab %llu, hidden %llu, %llu layers, %llu heads (%llu kv, head_dim %llu), ffn %llu (%s%s)"
         ", %.2f GB of weights, ready in %.1f s\n",
         pname, synthetic ? "synthetic " : "", synthetic ? synthetic : model_dir, (unsigned long long)c->vocab,
         (unsigned long long)c->dim, (unsigned long long)c->layers, (unsigned long long)c->heads,
         (unsigned long long)c->kv_heads, (unsigned long long)c->head_dim, (unsigned long long)c->ffn,
         m.wtype, m.bf16 ? "; prefill matmuls may round to bf16 on the NPU" : "", weight_bytes(&m) / 1e9,
         t_load);
  if (block_elems(m.layer[0].wq.dtype) > 1)
    printf("activations: %s\n", g_f32_activations ? "f32 (--activations f32)"
                                                   : "quantized matmuls may round them to int8 blocks (NH_FLAG_ALLOW_Q8_ACTIVATIONS; --activations f32 to keep f32)");
  printf("prompt: %llu tokens, %llu steps, decode as %s, sampling %s\n\n", (unsigned long long)plen_tok,
         (unsigned long long)steps,
         decode == DECODE_GRAPH      ? "a graph recorded once, its position-dependent ops replaced each step"
         : decode == DECODE_RERECORD ? "a graph recorded anew each step"
                                     : "ops one by one",
         sm.kind == SAMPLE_GREEDY ? "greedy" : sm.kind == SAMPLE_TOPK ? "top-k" : "top-p");

  state st;
  memset(&st, 0, sizeof st);
  st.rows = prefill_chunk && prefill_chunk < plen_tok ? prefill_chunk : plen_tok;
  st.positions = plen_tok + steps;
  st.kv_dt = kv_dt ? kv_dt : g_dt;
  uint64_t QW = c->heads * c->head_dim, KVW = c->kv_heads * c->head_dim;
  st.x = alloc_act(rt, st.rows * c->dim, 0);
  st.h = alloc_act(rt, st.rows * c->dim, 0);
  st.q = alloc_act(rt, st.rows * QW, 0);
  st.attn = alloc_act(rt, st.rows * QW, 0);
  st.g = alloc_act(rt, st.rows * c->ffn, 0);
  st.u = alloc_act(rt, st.rows * c->ffn, 0);
  st.logits = alloc_act(rt, (last_logits ? 1 : plen_tok) * c->vocab, 1);
  for (uint64_t l = 0; l < c->layers; l++) {
    NH_CHECK(nh_buffer_alloc(rt, st.positions * KVW * (st.kv_dt == NH_F32 ? 4 : 2), &st.k[l]));
    NH_CHECK(nh_buffer_alloc(rt, st.positions * KVW * (st.kv_dt == NH_F32 ? 4 : 2), &st.v[l]));
  }
  if (st.kv_dt != g_dt) {
    st.k_new = alloc_act(rt, st.rows * KVW, 0);
    st.v_new = alloc_act(rt, st.rows * KVW, 0);
  }

  submitter sub;
  memset(&sub, 0, sizeof sub);
  nh_graph graph = {0};
  size_t graph_ops = 0;
  sub.rt = rt;
  sub.ndev = ndev;
  uint64_t prefill_rows = last_logits ? 1 : plen_tok;
  float *logits = malloc(prefill_rows * c->vocab * sizeof(float));
  cand *scratch = malloc(c->vocab * sizeof *scratch);
  int32_t *out_tokens = malloc(steps * sizeof *out_tokens);
  double max_diff_prefill = 0, max_diff_steps = 0;
  uint64_t matched = 0, first_mismatch = UINT64_MAX;
  double t_prefill = 0, t_decode = 0, t_record = 0, decode_device_s = 0;
  /* A decode step's calls, summed over the timed steps: where the wall time goes. */
  double t_submit = 0, t_wait = 0, t_read = 0, t_sample = 0;
  chunk_graph prefill_graphs[2] = {{{0}, 0}, {{0}, 0}};
  uint64_t ops_before[MAX_DEVICES], ops_mid[MAX_DEVICES], ops_after[MAX_DEVICES];
  uint64_t ops_per_step = 0;

  /* Warm-up runs (weights reach the devices, shaders compile, the performance model learns),
   * then the timed, traced and checked run. */
  for (uint64_t run = 0; run <= warmup; run++) {
    int timed = run == warmup;
    uint64_t run_steps = timed ? steps : (steps < 4 ? steps : 4);
    sampler rs = sm;
    if (timed) {
      memset(sub.placement, 0, sizeof sub.placement);
      memset(sub.tracked, 0, sizeof sub.tracked);
      if (trace) NH_CHECK(nh_trace_start(rt, trace));
      device_stats(rt, ndev, ops_before);
    }
    /* Prefill: the prompt (in chunks with --prefill-chunk), logits of every position (or of
     * the last). As graphs recorded once, unless ops are submitted one by one. */
    double t0 = now_s();
    prefill(&sub, decode != DECODE_OPS ? prefill_graphs : NULL, &m, &st, prompt, plen_tok, !last_logits);
    NH_CHECK(nh_buffer_read(rt, st.logits, 0, logits, prefill_rows * c->vocab * sizeof(float)));
    retire(&sub);
    double t1 = now_s();
    int32_t tok = sample(&rs, logits + (prefill_rows - 1) * c->vocab, c->vocab, scratch);
    if (follow && timed) agree += tok == follow[0];
    if (follow) tok = follow[0];
    if (timed) {
      t_prefill = t1 - t0;
      device_stats(rt, ndev, ops_mid);
      if (check) {
        for (uint64_t i = 0; i < prefill_rows * c->vocab; i++) {
          double d = fabs(logits[i] - ref_prefill[i]);
          if (!(d <= max_diff_prefill)) max_diff_prefill = d; /* NaN propagates */
        }
        for (uint64_t i = 0; i < c->vocab; i++) {
          double d = fabs(logits[(plen_tok - 1) * c->vocab + i] - ref_logits[i]);
          if (!(d <= max_diff_steps)) max_diff_steps = d;
        }
      }
      out_tokens[0] = tok;
    }
    /* Decode: one token a step. */
    double td = now_s();
    for (uint64_t step = 1; step < run_steps; step++) {
      uint64_t pos = plen_tok + step - 1;
      if (decode != DECODE_OPS) {
        /* The step's graph: recorded at the first step (or every step with
         * --decode rerecord); later steps replace only the ops that depend on the position
         * or the token. */
        double tr = now_s();
        if (!graph.id) NH_CHECK(nh_graph_create(rt, &graph));
        sub.graph = graph;
        sub.updating = graph_ops > 0;
        sub.index = 0;
        forward(&sub, &m, &st, &tok, 1, pos, PHASE_DECODE, LOGITS_LAST);
        sub.graph.id = 0;
        if (!graph_ops) NH_CHECK(nh_graph_op_count(rt, graph, &graph_ops));
        if (sub.index != graph_ops) die("internal: a decode step emitted %zu ops, its graph has %zu", sub.index, graph_ops);
        if (timed) t_record += now_s() - tr;
        ops_per_step = graph_ops;
        nh_event ev;
        double ts = now_s();
        NH_CHECK(nh_graph_submit(rt, graph, &ev));
        double tw = now_s();
        NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
        if (timed) {
          t_submit += tw - ts;
          t_wait += now_s() - tw;
        }
        if (timed) { /* the devices' own time for the step (GPU timestamps where there are) */
          nh_event_info info;
          info.struct_size = sizeof info;
          NH_CHECK(nh_event_get_info(rt, ev, &info));
          decode_device_s += info.device_ns / 1e9;
        }
        NH_CHECK(nh_event_release(rt, ev));
        if (decode == DECODE_RERECORD) {
          NH_CHECK(nh_graph_destroy(rt, graph));
          graph.id = 0;
          graph_ops = 0;
        }
      } else {
        size_t before = sub.npending;
        forward(&sub, &m, &st, &tok, 1, pos, PHASE_DECODE, LOGITS_LAST);
        if (!ops_per_step) ops_per_step = sub.npending - before;
      }
      double tl = now_s();
      NH_CHECK(nh_buffer_read(rt, st.logits, 0, logits, c->vocab * sizeof(float)));
      if (decode == DECODE_OPS) retire(&sub);
      double tsm = now_s();
      tok = sample(&rs, logits, c->vocab, scratch);
      if (follow && timed) agree += tok == follow[step];
      if (timed) {
        t_read += tsm - tl;
        t_sample += now_s() - tsm;
      }
      if (timed) {
        out_tokens[step] = tok;
        if (check) {
          for (uint64_t i = 0; i < c->vocab; i++) {
            double d = fabs(logits[i] - ref_logits[step * c->vocab + i]);
            if (!(d <= max_diff_steps)) max_diff_steps = d;
          }
        }
      }
      /* Greedy decoding against a reference stops at the first wrong token: later steps
       * would compare different sequences. */
      if (timed && check && tok != (int32_t)ref_tokens[step]) {
        run_steps = step + 1;
        steps = step + 1;
      }
      if (follow) tok = follow[step];
    }
    if (timed) t_decode = now_s() - td;
    if (timed) {
      device_stats(rt, ndev, ops_after);
      if (trace) {
        NH_CHECK(nh_trace_stop(rt));
        printf("trace written to %s\n", trace);
      }
    }
  }

  if (!quiet) {
    printf("tokens:");
    for (uint64_t i = 0; i < steps; i++) printf(" %d", out_tokens[i]);
    printf("\n\n");
  }
  printf("prefill: %llu tokens in %.2f ms: %.1f tokens/s\n", (unsigned long long)plen_tok, t_prefill * 1e3,
         plen_tok / t_prefill);
  if (steps > 1) {
    printf("decode:  %llu tokens in %.2f ms: %.1f tokens/s (%.3f ms/token, %llu ops a step", (unsigned long long)(steps - 1),
           t_decode * 1e3, (steps - 1) / t_decode, t_decode * 1e3 / (steps - 1), (unsigned long long)ops_per_step);
    if (decode != DECODE_OPS)
      printf(", %s %.3f ms/token", decode == DECODE_GRAPH ? "graph updates" : "recording", t_record * 1e3 / (steps - 1));
    printf(")\n");
    if (decode != DECODE_OPS)
      printf("decode:  per token: submit %.3f ms, wait %.3f ms, logits read %.3f ms, sampling %.3f ms\n",
             t_submit * 1e3 / (steps - 1), t_wait * 1e3 / (steps - 1), t_read * 1e3 / (steps - 1),
             t_sample * 1e3 / (steps - 1));
    if (decode != DECODE_OPS)
      printf("decode:  devices busy %.1f%% of the wall time (their own timers: GPU timestamps, else wall time on the device)\n",
             100.0 * decode_device_s / t_decode);
    printf("decode:  %.2f GB of weights a token: %.1f GB/s of weights\n", weight_bytes(&m) / 1e9,
           weight_bytes(&m) * (steps - 1) / t_decode / 1e9);
  }

  printf("\nops run per device (nh_device_get_stats):\n%-4s %-36s %10s %10s\n", "dev", "name", "prefill", "decode");
  for (uint32_t i = 0; i < ndev; i++)
    printf("[%u]  %-36.36s %10llu %10llu\n", i, infos[i].name, (unsigned long long)(ops_mid[i] - ops_before[i]),
           (unsigned long long)(ops_after[i] - ops_mid[i]));

  int failed = 0;
  /* Placement from each op's event (ops submitted one by one). */
  if (sub.tracked[PHASE_PREFILL] || sub.tracked[PHASE_DECODE]) {
    printf("\nplacement by op kind (from each op's event):\n");
    for (uint32_t ph = 0; ph < NPHASES; ph++) {
      for (uint32_t k = 0; k < NKINDS; k++) {
        uint64_t total = 0;
        for (uint32_t d = 0; d < ndev; d++) total += sub.placement[ph][k][d];
        if (!total) continue;
        printf("  %-8s %-10s", phase_name[ph], kind_label(k));
        for (uint32_t d = 0; d < ndev; d++)
          if (sub.placement[ph][k][d]) printf("  %s[%u]: %llu", nh_kind_name(infos[d].kind), d, (unsigned long long)sub.placement[ph][k][d]);
        printf("\n");
      }
    }
  }
  /* A graph has one event for all its ops: say where the rows of each phase went. */
  if (decode != DECODE_OPS) {
    printf("\nplacement by op kind: --decode ops (or --trace) shows it\n");
    printf("  prefill    ran as a graph: no per-op events (ops per device above)\n");
    printf("  decode     ran as a %s: no per-op events (ops per device above)\n",
           decode == DECODE_GRAPH ? "graph" : "re-recorded graph");
  }
  if (expect_placement) {
    /* Every prefill matmul on an NPU; every decode matmul on the GPU when there is one
     * (else on the CPU). */
    if (!npu_available) {
      fprintf(stderr, "FAILED: --expect-placement needs an NPU (real or --devices sim)\n");
      failed = 1;
    }
    for (uint32_t ph = 0; ph < NPHASES; ph++) {
      uint64_t want = 0, total = 0;
      for (uint32_t d = 0; d < ndev; d++) {
        uint32_t kind = infos[d].kind;
        int ok = ph == PHASE_PREFILL ? (kind == NH_DEVICE_NPU || kind == NH_DEVICE_SIMULATED_NPU)
                                     : (gpu_available ? kind == NH_DEVICE_GPU : kind == NH_DEVICE_CPU);
        total += sub.placement[ph][NH_OP_MATMUL][d];
        if (ok) want += sub.placement[ph][NH_OP_MATMUL][d];
      }
      /* Each prefill chunk runs the layers' 7 matmuls, the LM head once (every chunk with --check). */
      uint64_t chunks = (plen_tok + st.rows - 1) / st.rows, heads = last_logits ? 1 : chunks;
      uint64_t expected = ph == PHASE_PREFILL ? chunks * 7 * c->layers + heads : (steps - 1) * (7 * c->layers + 1);
      const char *where = ph == PHASE_PREFILL ? "the NPU" : gpu_available ? "the GPU" : "the CPU";
      printf("placement check: %llu of %llu %s matmuls ran on %s (expected %llu)\n", (unsigned long long)want,
             (unsigned long long)total, phase_name[ph], where, (unsigned long long)expected);
      if (want != expected || total != expected) {
        fprintf(stderr, "FAILED: %s matmuls did not all run on %s\n", phase_name[ph], where);
        failed = 1;
      }
    }
  }

  if (follow) {
    printf("\nteacher-forced top-1 agreement: %llu of %llu steps (%.1f%%)\n", (unsigned long long)agree,
           (unsigned long long)steps, 100.0 * (double)agree / (double)steps);
    free(follow);
  }

  if (check) {
    for (uint64_t i = 0; i < steps; i++) {
      if (out_tokens[i] == (int32_t)ref_tokens[i]) matched++;
      else if (first_mismatch == UINT64_MAX) first_mismatch = i;
    }
    printf("\ncheck against %s:\n", check);
    printf("  greedy tokens: %llu of %llu match (the reference has %zu)%s\n", (unsigned long long)matched,
           (unsigned long long)steps, n_ref_tokens, first_mismatch == UINT64_MAX ? "" : "; stopped at the first mismatch");
    printf("  max |logit - reference|: prefill (%llu positions) %.3g, steps %.3g; tolerance %.3g (%s of max |logit| %.2f)\n",
           (unsigned long long)plen_tok, max_diff_prefill, max_diff_steps, tol,
           tol_given ? "given" : m.bf16 ? "1e-2, bf16 prefill" : "1e-4", ref_scale);
    if (first_mismatch != UINT64_MAX) {
      fprintf(stderr, "FAILED: token %llu is %d, the reference has %d\n", (unsigned long long)first_mismatch,
              out_tokens[first_mismatch], (int)ref_tokens[first_mismatch]);
      failed = 1;
    }
    if (!(max_diff_prefill <= tol) || !(max_diff_steps <= tol)) {
      fprintf(stderr, "FAILED: logits differ from the reference by more than %.3g\n", tol);
      failed = 1;
    }
    if (!failed) printf("  OK\n");
  }

  if (explain) {
    explain_graph(rt, "prefill (chunks before the last)", prefill_graphs[0].g);
    explain_graph(rt, "prefill", prefill_graphs[1].g);
    explain_graph(rt, "decode", graph);
    nh_runtime_stats rs_stats;
    rs_stats.struct_size = sizeof rs_stats;
    NH_CHECK(nh_runtime_get_stats(rt, &rs_stats));
    /* Host ops run on the submitting thread save a thread hand-off each (tiny ops). */
    printf("runtime: %llu ops submitted, %llu run on the submitting thread, %llu fallbacks\n",
           (unsigned long long)rs_stats.ops_submitted, (unsigned long long)rs_stats.inline_ops,
           (unsigned long long)rs_stats.fallbacks);
  }
  if (graph.id) NH_CHECK(nh_graph_destroy(rt, graph));
  for (int i = 0; i < 2; i++)
    if (prefill_graphs[i].g.id) NH_CHECK(nh_graph_destroy(rt, prefill_graphs[i].g));
  if (!synthetic) st_close(&stf);
  free(logits);
  free(scratch);
  free(out_tokens);
  free(prompt);
  free(sub.pending);
  free(ref_prompt);
  free(ref_tokens);
  free(ref_logits);
  free(ref_prefill);
  free(ref);
  NH_CHECK(nh_runtime_destroy(rt));
  return failed;
}
