/* safetensors_test: checks safetensors.h on synthetic files (valid and corrupt, plus random
 * mutations of a valid header) and, if given, on a real model file.
 *
 *   safetensors_test WORKDIR [MODEL.safetensors]
 */
#include "safetensors.h"

#include <stdio.h>

static int failures = 0;
static char dir[512];

#define EXPECT(cond, ...)                          \
  do {                                             \
    if (!(cond)) {                                 \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                \
      fprintf(stderr, "\n");                       \
      failures++;                                  \
    }                                              \
  } while (0)

/* Writes u64 len + header + data_len bytes of data; returns the path. */
static const char *write_file(const char *name, const char *header, size_t hlen, uint64_t claimed_len,
                              size_t data_len) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    exit(1);
  }
  unsigned char l8[8];
  for (int i = 0; i < 8; i++) l8[i] = (unsigned char)(claimed_len >> (8 * i));
  fwrite(l8, 1, 8, f);
  fwrite(header, 1, hlen, f);
  for (size_t i = 0; i < data_len; i++) fputc((int)(i & 0xFF), f);
  fclose(f);
  return path;
}

static const char *write_hdr(const char *name, const char *header, size_t data_len) {
  return write_file(name, header, strlen(header), strlen(header), data_len);
}

/* Expects st_open to fail with a message containing `needle`. */
static void expect_error(const char *what, const char *path, const char *needle) {
  st_file f;
  char err[512];
  int rc = st_open(path, &f, err, sizeof err);
  EXPECT(rc != 0, "%s: st_open accepted a corrupt file", what);
  EXPECT(rc != 0 && strstr(err, needle) != NULL, "%s: error \"%s\" does not mention \"%s\"", what, err, needle);
  EXPECT(f.tensors == NULL && f.count == 0, "%s: out not cleared on failure", what);
  if (rc == 0) st_close(&f);
  else printf("ok   %-28s -> %s\n", what, err);
}

static const char *VALID =
    "{\"__metadata__\":{\"format\":\"pt\",\"nested\":\"{\\\"x\\\": [1]}\"},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},"
    "\"h\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[40,42]},"
    "\"empty\":{\"dtype\":\"BF16\",\"shape\":[0,4],\"data_offsets\":[42,42]}}    ";

static void test_valid(void) {
  const char *path = write_hdr("valid.safetensors", VALID, 42);
  st_file f;
  char err[512];
  int rc = st_open(path, &f, err, sizeof err);
  EXPECT(rc == 0, "valid file rejected: %s", err);
  if (rc) return;
  uint64_t base = 8 + strlen(VALID);
  EXPECT(f.count == 4, "count %zu, expected 4", f.count);
  EXPECT(f.file_size == base + 42, "file_size %llu", (unsigned long long)f.file_size);
  const st_tensor *a = st_find(&f, "a.weight");
  EXPECT(a && a->dtype == NH_F32 && a->rank == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->offset == base &&
             a->nbytes == 24 && !strcmp(a->dtype_name, "F32"),
         "a.weight wrong");
  const st_tensor *ids = st_find(&f, "ids");
  EXPECT(ids && ids->dtype == -1 && !strcmp(ids->dtype_name, "I64") && ids->offset == base + 24 && ids->nbytes == 16,
         "ids wrong");
  const st_tensor *h = st_find(&f, "h");
  EXPECT(h && h->dtype == NH_F16 && h->rank == 0 && h->nbytes == 2, "scalar h wrong");
  const st_tensor *e = st_find(&f, "empty");
  EXPECT(e && e->dtype == NH_BF16 && e->nbytes == 0, "empty wrong");
  EXPECT(st_find(&f, "missing") == NULL, "st_find found a missing tensor");
  EXPECT(st_find(&f, "__metadata__") == NULL, "__metadata__ listed as a tensor");
  nh_buffer fake = {7};
  nh_tensor v = st_view(fake, a);
  EXPECT(v.buffer.id == 7 && v.rank == 2 && v.shape[1] == 3 && v.offset == base && v.dtype == NH_F32, "st_view wrong");
  st_close(&f);
  EXPECT(f.tensors == NULL && f.count == 0, "st_close did not clear");
  st_close(&f); /* twice is harmless */
  printf("ok   valid file (4 tensors, metadata, padding)\n");

  const char *empty = write_hdr("empty.safetensors", "{}", 0);
  rc = st_open(empty, &f, err, sizeof err);
  EXPECT(rc == 0 && f.count == 0, "empty header rejected: %s", err);
  if (rc == 0) st_close(&f);
}

static void test_corrupt(void) {
  char big[400];
  expect_error("missing file", "/nonexistent/dir/x.safetensors", "cannot open");
  expect_error("header length 0", write_file("short.st", "", 0, 0, 0), "header length 0");
  {
    /* 5 bytes only */
    char p[1024];
    snprintf(p, sizeof p, "%s/five.st", dir);
    FILE *f = fopen(p, "wb");
    fwrite("abcde", 1, 5, f);
    fclose(f);
    expect_error("5-byte file", p, "shorter than");
  }
  expect_error("header length > file", write_file("long.st", VALID, strlen(VALID), strlen(VALID) + 100, 10),
               "header length");
  expect_error("header length 2^63", write_file("huge.st", VALID, strlen(VALID), (uint64_t)1 << 63, 42),
               "header length");
  expect_error("header length 1", write_file("one.st", "{", 1, 1, 0), "header length");
  expect_error("not JSON", write_hdr("notjson.st", "hello world", 0), "expected '{'");
  expect_error("truncated JSON", write_hdr("trunc.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2", 0), "header");
  expect_error("unterminated string", write_hdr("unterm.st", "{\"abc", 0), "unterminated");
  expect_error("nbytes mismatch",
               write_hdr("size.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24),
               "need 24");
  expect_error("data beyond file",
               write_hdr("beyond.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 23),
               "beyond the end");
  expect_error("huge offsets",
               write_hdr("hugeoff.st",
                         "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551614,18446744073709551615]}}", 4),
               "beyond the end");
  expect_error("offset overflows u64",
               write_hdr("ovf.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 4),
               "overflows");
  expect_error("shape product overflows",
               write_hdr("shapeovf.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 4),
               "overflows");
  expect_error("end before begin",
               write_hdr("order.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,2]}}", 4), "end before begin");
  expect_error("overlap",
               write_hdr("overlap.st",
                         "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                         "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                         8),
               "overlap");
  expect_error("duplicate name",
               write_hdr("dup.st",
                         "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                         "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                         4),
               "twice");
  expect_error("unknown dtype",
               write_hdr("dtype.st", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 4), "unknown dtype");
  expect_error("rank 5", write_hdr("rank.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 4),
               "rank > 4");
  expect_error("negative dim", write_hdr("neg.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 4),
               "non-negative integer");
  expect_error("fractional dim", write_hdr("frac.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 4),
               "fraction");
  expect_error("missing data_offsets", write_hdr("nooff.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 4), "lacks");
  expect_error("tensor not an object", write_hdr("notobj.st", "{\"a\":[1,2]}", 4), "expected '{'");
  expect_error("trailing garbage",
               write_hdr("trail.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 4), "trailing");
  memset(big, 'n', sizeof big);
  big[0] = '{';
  big[1] = '"';
  strcpy(big + 300, "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
  expect_error("name too long", write_hdr("name.st", big, 4), "longer than");
  {
    char deep[300];
    strcpy(deep, "{\"__metadata__\":");
    size_t n = strlen(deep);
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    deep[n] = '\0';
    expect_error("nesting too deep", write_hdr("deep.st", deep, 0), "too deep");
  }
}

/* Random byte mutations of the valid header: each must be accepted with consistent fields or
 * rejected with a message; never crash. */
static void test_mutations(void) {
  size_t hl = strlen(VALID);
  char *h = malloc(hl + 1);
  uint32_t s = 12345;
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(h, VALID, hl + 1);
    int flips = 1 + it % 4;
    for (int k = 0; k < flips; k++) {
      s ^= s << 13;
      s ^= s >> 17;
      s ^= s << 5;
      size_t pos = s % hl;
      static const char alphabet[] = "{}[]\",:0123456789 \\aFU8x";
      h[pos] = (it & 1) ? alphabet[(s >> 8) % (sizeof alphabet - 1)] : (char)(s >> 16);
    }
    const char *path = write_file("mut.st", h, hl, hl, 42 + (it % 3) * 7);
    st_file f;
    char err[512] = "";
    if (st_open(path, &f, err, sizeof err) == 0) {
      accepted++;
      for (size_t i = 0; i < f.count; i++) {
        const st_tensor *t = &f.tensors[i];
        EXPECT(t->offset >= 8 + hl && t->offset + t->nbytes <= f.file_size && t->rank <= 4,
               "mutation %d accepted an out-of-file tensor", it);
      }
      st_close(&f);
    } else {
      rejected++;
      EXPECT(err[0] != '\0', "mutation %d rejected without a message", it);
    }
  }
  free(h);
  printf("ok   3000 mutations: %d accepted consistently, %d rejected with a message\n", accepted, rejected);
}

static void test_model(const char *path) {
  st_file f;
  char err[512];
  int rc = st_open(path, &f, err, sizeof err);
  EXPECT(rc == 0, "model rejected: %s", err);
  if (rc) return;
  const st_tensor *we = st_find(&f, "embeddings.word_embeddings.weight");
  const st_tensor *pid = st_find(&f, "embeddings.position_ids");
  EXPECT(we && we->dtype == NH_F32 && we->rank == 2 && we->shape[1] > 0, "word embeddings missing or wrong");
  EXPECT(pid == NULL || pid->dtype == -1, "position_ids should be a non-nh dtype");
  uint64_t total = 0;
  for (size_t i = 0; i < f.count; i++) total += f.tensors[i].nbytes;
  printf("ok   %s: %zu tensors, %llu data bytes of %llu\n", path, f.count, (unsigned long long)total,
         (unsigned long long)f.file_size);
  st_close(&f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s WORKDIR [MODEL.safetensors]\n", argv[0]);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  test_valid();
  test_corrupt();
  test_mutations();
  if (argc > 2) test_model(argv[2]);
  if (failures) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("all safetensors checks passed\n");
  return 0;
}
