/* safetensors.h: a small header-only C11 reader of the safetensors format's header.
 *
 * File layout: u64 little-endian N, then N bytes of JSON
 *   {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [b, e]}, ...}
 * then the data; offsets are relative to the end of the header (byte 8 + N).
 *
 *   st_file f; char err[256];
 *   if (st_open("model.safetensors", &f, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); ... }
 *   const st_tensor *t = st_find(&f, "embeddings.word_embeddings.weight");
 *   ... view t->offset (absolute) .. + t->nbytes of a buffer mapping the whole file ...
 *   st_close(&f);
 *
 * st_open validates everything it reports: header length within the file (and <= 100 MB),
 * well-formed JSON, known dtypes, rank <= 4, data_offsets ordered and inside the file,
 * nbytes == product(shape) * element size (no overflow), unique names, no two tensors
 * overlapping. A corrupt file gives an error message, never a crash. Only the header is read.
 */
#ifndef NH_SAFETENSORS_H
#define NH_SAFETENSORS_H

#include <npuhybrid.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char name[160];
  int dtype; /* nh_dtype value, or -1 for others (I64, ...) */
  char dtype_name[8];
  uint32_t rank;
  uint64_t shape[4];
  uint64_t offset; /* absolute byte offset in the file */
  uint64_t nbytes;
} st_tensor;

typedef struct {
  st_tensor *tensors;
  size_t count;
  uint64_t file_size;
} st_file;

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* --- internals --------------------------------------------------------------------------- */

typedef struct {
  const char *start, *p, *end;
  char *err;
  size_t errlen;
  int failed;
} st__parser;

static inline void st__fail(st__parser *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  if (ps->err && ps->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
  }
}

static inline void st__ws(st__parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static inline int st__expect(st__parser *ps, char c) {
  st__ws(ps);
  if (ps->p >= ps->end || *ps->p != c) {
    st__fail(ps, "safetensors header: expected '%c' at header byte %ld", c, (long)(ps->p - ps->start));
    return -1;
  }
  ps->p++;
  return 0;
}

/* Parses a JSON string into out (NUL-terminated, at most cap-1 bytes; longer is an error when
 * out != NULL). Escapes: \" \\ \/ \b \f \n \r \t \uXXXX (BMP, encoded as UTF-8). */
static inline int st__string(st__parser *ps, char *out, size_t cap) {
  st__ws(ps);
  if (ps->p >= ps->end || *ps->p != '"') {
    st__fail(ps, "safetensors header: expected a string");
    return -1;
  }
  ps->p++;
  size_t n = 0;
  for (;;) {
    if (ps->p >= ps->end) {
      st__fail(ps, "safetensors header: unterminated string");
      return -1;
    }
    unsigned char c = (unsigned char)*ps->p++;
    char buf[4];
    size_t bl = 0;
    if (c == '"') break;
    if (c < 0x20) {
      st__fail(ps, "safetensors header: control character in a string");
      return -1;
    }
    if (c == '\\') {
      if (ps->p >= ps->end) {
        st__fail(ps, "safetensors header: unterminated escape");
        return -1;
      }
      char e = *ps->p++;
      switch (e) {
        case '"': buf[bl++] = '"'; break;
        case '\\': buf[bl++] = '\\'; break;
        case '/': buf[bl++] = '/'; break;
        case 'b': buf[bl++] = '\b'; break;
        case 'f': buf[bl++] = '\f'; break;
        case 'n': buf[bl++] = '\n'; break;
        case 'r': buf[bl++] = '\r'; break;
        case 't': buf[bl++] = '\t'; break;
        case 'u': {
          if (ps->end - ps->p < 4) {
            st__fail(ps, "safetensors header: short \\u escape");
            return -1;
          }
          unsigned v = 0;
          for (int i = 0; i < 4; i++) {
            char h = *ps->p++;
            v <<= 4;
            if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
            else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
            else {
              st__fail(ps, "safetensors header: bad \\u escape");
              return -1;
            }
          }
          if (v < 0x80) buf[bl++] = (char)v;
          else if (v < 0x800) {
            buf[bl++] = (char)(0xC0 | (v >> 6));
            buf[bl++] = (char)(0x80 | (v & 0x3F));
          } else {
            buf[bl++] = (char)(0xE0 | (v >> 12));
            buf[bl++] = (char)(0x80 | ((v >> 6) & 0x3F));
            buf[bl++] = (char)(0x80 | (v & 0x3F));
          }
          break;
        }
        default: st__fail(ps, "safetensors header: bad escape '\\%c'", e); return -1;
      }
    } else {
      buf[bl++] = (char)c;
    }
    if (out) {
      if (n + bl >= cap) {
        st__fail(ps, "safetensors header: string longer than %zu bytes", cap - 1);
        return -1;
      }
      memcpy(out + n, buf, bl);
    }
    n += bl;
  }
  if (out) out[n] = '\0';
  return 0;
}

/* A non-negative integer that fits in 64 bits. */
static inline int st__uint(st__parser *ps, uint64_t *out) {
  st__ws(ps);
  if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
    st__fail(ps, "safetensors header: expected a non-negative integer");
    return -1;
  }
  uint64_t v = 0;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    uint64_t d = (uint64_t)(*ps->p - '0');
    if (v > (UINT64_MAX - d) / 10) {
      st__fail(ps, "safetensors header: integer overflows 64 bits");
      return -1;
    }
    v = v * 10 + d;
    ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E')) {
    st__fail(ps, "safetensors header: expected an integer, found a fraction");
    return -1;
  }
  *out = v;
  return 0;
}

/* Skips any JSON value (for __metadata__ and unknown keys), nesting at most 64 deep. */
static inline int st__skip(st__parser *ps, int depth) {
  if (depth > 64) {
    st__fail(ps, "safetensors header: nested too deep");
    return -1;
  }
  st__ws(ps);
  if (ps->p >= ps->end) {
    st__fail(ps, "safetensors header: truncated");
    return -1;
  }
  char c = *ps->p;
  if (c == '"') return st__string(ps, NULL, 0);
  if (c == '{' || c == '[') {
    char close = c == '{' ? '}' : ']';
    ps->p++;
    st__ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      return 0;
    }
    for (;;) {
      if (c == '{') {
        if (st__string(ps, NULL, 0) || st__expect(ps, ':')) return -1;
      }
      if (st__skip(ps, depth + 1)) return -1;
      st__ws(ps);
      if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        continue;
      }
      return st__expect(ps, close);
    }
  }
  /* number, true, false, null */
  const char *s = ps->p;
  while (ps->p < ps->end && (strchr("+-.eE", *ps->p) || (*ps->p >= '0' && *ps->p <= '9') ||
                             (*ps->p >= 'a' && *ps->p <= 'z')))
    ps->p++;
  if (ps->p == s) {
    st__fail(ps, "safetensors header: unexpected character '%c'", c);
    return -1;
  }
  return 0;
}

/* Element size and nh_dtype of a safetensors dtype name; size 0 if unknown. */
static inline size_t st_dtype_info(const char *name, int *nh) {
  static const struct {
    const char *name;
    size_t size;
    int nh;
  } table[] = {
      {"F32", 4, NH_F32},  {"F16", 2, NH_F16},     {"BF16", 2, NH_BF16},    {"I8", 1, NH_I8},
      {"I32", 4, NH_I32},  {"F64", 8, -1},         {"I64", 8, -1},          {"U64", 8, -1},
      {"U32", 4, -1},      {"I16", 2, -1},         {"U16", 2, -1},          {"U8", 1, -1},
      {"BOOL", 1, -1},     {"F8_E4M3", 1, -1},     {"F8_E5M2", 1, -1},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (!strcmp(name, table[i].name)) {
      if (nh) *nh = table[i].nh;
      return table[i].size;
    }
  return 0;
}

static inline int st__tensor(st__parser *ps, st_tensor *t, uint64_t data_start, uint64_t file_size) {
  int have_dtype = 0, have_shape = 0, have_offsets = 0;
  uint64_t begin = 0, end = 0;
  if (st__expect(ps, '{')) return -1;
  st__ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    st__fail(ps, "safetensors header: tensor \"%s\" has no fields", t->name);
    return -1;
  }
  for (;;) {
    char key[32];
    if (st__string(ps, key, sizeof key) || st__expect(ps, ':')) return -1;
    if (!strcmp(key, "dtype")) {
      if (st__string(ps, t->dtype_name, sizeof t->dtype_name)) return -1;
      have_dtype = 1;
    } else if (!strcmp(key, "shape")) {
      if (st__expect(ps, '[')) return -1;
      t->rank = 0;
      st__ws(ps);
      if (ps->p < ps->end && *ps->p == ']') ps->p++;
      else
        for (;;) {
          uint64_t d;
          if (st__uint(ps, &d)) return -1;
          if (t->rank >= 4) {
            st__fail(ps, "safetensors header: tensor \"%s\" has rank > 4", t->name);
            return -1;
          }
          t->shape[t->rank++] = d;
          st__ws(ps);
          if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
          }
          if (st__expect(ps, ']')) return -1;
          break;
        }
      have_shape = 1;
    } else if (!strcmp(key, "data_offsets")) {
      if (st__expect(ps, '[') || st__uint(ps, &begin) || st__expect(ps, ',') || st__uint(ps, &end) ||
          st__expect(ps, ']'))
        return -1;
      have_offsets = 1;
    } else if (st__skip(ps, 1)) {
      return -1;
    }
    st__ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (st__expect(ps, '}')) return -1;
    break;
  }
  if (!have_dtype || !have_shape || !have_offsets) {
    st__fail(ps, "safetensors header: tensor \"%s\" lacks %s", t->name,
             !have_dtype ? "\"dtype\"" : !have_shape ? "\"shape\"" : "\"data_offsets\"");
    return -1;
  }
  size_t esize = st_dtype_info(t->dtype_name, &t->dtype);
  if (esize == 0) {
    st__fail(ps, "safetensors header: tensor \"%s\" has unknown dtype \"%s\"", t->name, t->dtype_name);
    return -1;
  }
  uint64_t n = esize;
  for (uint32_t i = 0; i < t->rank; i++) {
    if (t->shape[i] != 0 && n > UINT64_MAX / t->shape[i]) {
      st__fail(ps, "safetensors header: tensor \"%s\": size overflows", t->name);
      return -1;
    }
    n *= t->shape[i];
  }
  if (end < begin) {
    st__fail(ps, "safetensors header: tensor \"%s\": data_offsets [%llu, %llu] end before begin", t->name,
             (unsigned long long)begin, (unsigned long long)end);
    return -1;
  }
  if (end - begin != n) {
    st__fail(ps, "safetensors header: tensor \"%s\": data_offsets span %llu bytes, shape and %s need %llu",
             t->name, (unsigned long long)(end - begin), t->dtype_name, (unsigned long long)n);
    return -1;
  }
  if (end > file_size - data_start) {
    st__fail(ps, "safetensors header: tensor \"%s\": data [%llu, %llu) lies beyond the end of the file (%llu data bytes)",
             t->name, (unsigned long long)begin, (unsigned long long)end,
             (unsigned long long)(file_size - data_start));
    return -1;
  }
  t->offset = data_start + begin;
  t->nbytes = n;
  return 0;
}

static inline int st__cmp_offset(const void *a, const void *b) {
  const st_tensor *x = (const st_tensor *)a, *y = (const st_tensor *)b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static inline int st__cmp_name(const void *a, const void *b) {
  return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* --- API --------------------------------------------------------------------------------- */

/* Reads and validates the header of `path`. 0 on success (free with st_close); otherwise -1
 * and a message in err. Tensors are sorted by name. */
static inline int st_open(const char *path, st_file *out, char *err, size_t errlen) {
  st__parser ps = {NULL, NULL, NULL, err, errlen, 0};
  char *hdr = NULL;
  FILE *fp = NULL;
  if (err && errlen) err[0] = '\0';
  if (!out) {
    st__fail(&ps, "st_open: out is NULL");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (!path) {
    st__fail(&ps, "st_open: path is NULL");
    return -1;
  }
  fp = fopen(path, "rb");
  if (!fp) {
    st__fail(&ps, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  if (fseek(fp, 0, SEEK_END) != 0) {
    st__fail(&ps, "%s: cannot seek: %s", path, strerror(errno));
    goto fail;
  }
  long fsz = ftell(fp);
  if (fsz < 0 || fseek(fp, 0, SEEK_SET) != 0) {
    st__fail(&ps, "%s: cannot determine the file size", path);
    goto fail;
  }
  uint64_t file_size = (uint64_t)fsz;
  unsigned char len8[8];
  if (file_size < 8 || fread(len8, 1, 8, fp) != 8) {
    st__fail(&ps, "%s: not a safetensors file: shorter than its 8-byte header length", path);
    goto fail;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
  if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > file_size - 8) {
    st__fail(&ps, "%s: not a safetensors file: header length %llu (file %llu bytes, limit %llu)", path,
             (unsigned long long)hlen, (unsigned long long)file_size, (unsigned long long)ST_MAX_HEADER);
    goto fail;
  }
  hdr = (char *)malloc((size_t)hlen);
  if (!hdr) {
    st__fail(&ps, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hlen);
    goto fail;
  }
  if (fread(hdr, 1, (size_t)hlen, fp) != (size_t)hlen) {
    st__fail(&ps, "%s: cannot read the header", path);
    goto fail;
  }
  fclose(fp);
  fp = NULL;

  uint64_t data_start = 8 + hlen;
  ps.start = ps.p = hdr;
  ps.end = hdr + hlen;
  /* Trailing spaces are allowed (the format pads the header to 8 bytes with them). */
  size_t cap = 0;
  if (st__expect(&ps, '{')) goto fail_msg;
  st__ws(&ps);
  if (ps.p < ps.end && *ps.p == '}') ps.p++;
  else
    for (;;) {
      char name[sizeof(out->tensors[0].name)];
      if (st__string(&ps, name, sizeof name) || st__expect(&ps, ':')) goto fail_msg;
      if (!strcmp(name, "__metadata__")) {
        if (st__skip(&ps, 1)) goto fail_msg;
      } else {
        if (out->count == cap) {
          size_t ncap = cap ? cap * 2 : 64;
          st_tensor *nt = (st_tensor *)realloc(out->tensors, ncap * sizeof *nt);
          if (!nt) {
            st__fail(&ps, "out of memory");
            goto fail_msg;
          }
          out->tensors = nt;
          cap = ncap;
        }
        st_tensor *t = &out->tensors[out->count];
        memset(t, 0, sizeof *t);
        memcpy(t->name, name, sizeof name);
        if (st__tensor(&ps, t, data_start, file_size)) goto fail_msg;
        out->count++;
      }
      st__ws(&ps);
      if (ps.p < ps.end && *ps.p == ',') {
        ps.p++;
        continue;
      }
      if (st__expect(&ps, '}')) goto fail_msg;
      break;
    }
  st__ws(&ps);
  while (ps.p < ps.end && *ps.p == '\0') ps.p++; /* some writers pad with NULs */
  if (ps.p != ps.end) {
    st__fail(&ps, "safetensors header: trailing bytes after the JSON object");
    goto fail_msg;
  }
  if (out->count) {
    qsort(out->tensors, out->count, sizeof *out->tensors, st__cmp_offset);
    for (size_t i = 1; i < out->count; i++) {
      const st_tensor *a = &out->tensors[i - 1], *b = &out->tensors[i];
      if (a->nbytes && b->nbytes && a->offset + a->nbytes > b->offset) {
        st__fail(&ps, "safetensors header: tensors \"%s\" and \"%s\" overlap", a->name, b->name);
        goto fail_msg;
      }
    }
    qsort(out->tensors, out->count, sizeof *out->tensors, st__cmp_name);
    for (size_t i = 1; i < out->count; i++)
      if (!strcmp(out->tensors[i - 1].name, out->tensors[i].name)) {
        st__fail(&ps, "safetensors header: tensor \"%s\" appears twice", out->tensors[i].name);
        goto fail_msg;
      }
  }
  free(hdr);
  out->file_size = file_size;
  return 0;

fail_msg:
  /* Prefix the path to the parser's message. */
  if (err && errlen) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s: %s", path, err);
    snprintf(err, errlen, "%s", tmp);
  }
fail:
  if (fp) fclose(fp);
  free(hdr);
  free(out->tensors);
  memset(out, 0, sizeof *out);
  return -1;
}

/* The tensor called `name`, or NULL. */
static inline const st_tensor *st_find(const st_file *f, const char *name) {
  if (!f || !name || !f->tensors) return NULL;
  size_t lo = 0, hi = f->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(f->tensors[mid].name, name);
    if (c == 0) return &f->tensors[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static inline void st_close(st_file *f) {
  if (!f) return;
  free(f->tensors);
  memset(f, 0, sizeof *f);
}

/* An nh_tensor viewing `t` inside `buf` (a buffer mapping the whole file): dense, the
 * tensor's shape, offset = its absolute offset. t->dtype must be an nh_dtype (>= 0). */
static inline nh_tensor st_view(nh_buffer buf, const st_tensor *t) {
  nh_tensor v;
  memset(&v, 0, sizeof v);
  v.buffer = buf;
  v.dtype = (uint32_t)(t->dtype < 0 ? 0 : t->dtype);
  v.rank = t->rank ? t->rank : 1;
  if (t->rank == 0) v.shape[0] = 1;
  for (uint32_t i = 0; i < t->rank; i++) v.shape[i] = t->shape[i];
  v.offset = t->offset;
  return v;
}

#endif
