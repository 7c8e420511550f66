/* The sample-bracket hybrid of NATIVE_PERF.md §2.3, prototyped for the median on one block of
 * 16 coordinates (keys laid out [row][lane], as rust/rules/mod.rs's load_tile leaves them), to
 * decide whether it should replace the interpreted network at n > 64 (issue 3). It did not:
 * see benches/RESULTS.md, "Sample-bracket hybrid, prototyped (issue 3, session 10)".
 *
 * Per block: sort s strided sample rows (compiled network, zmm registers), take sample ranks
 * a, b around the median's as a per-lane bracket [lo, hi]; one pass over the n rows counts
 * #(key < lo) and appends the keys in [lo, hi] per lane to a candidate buffer (mode 0: an
 * AVX-512 scatter per row; mode 1: scalar stores over the mask's set bits); sort the M
 * candidate rows (compiled network) and gather each lane's rank. A lane whose bracket misses
 * the rank or holds more than M keys falls back to a scalar quickselect of its column.
 *
 *   python3 sample_bracket_sorts.py > sample_bracket_sorts.h
 *   gcc -O2 -march=znver3 -mavx512f -mavx512bw -mavx512dq -mavx512vl sample_bracket.c -lm
 *   ./a.out n s M w mode      e.g. ./a.out 200 64 64 6 0   (NOFB=1: skip the fallback, timing
 *                                                          only; results are then not checked)
 * Prints microseconds per block (best of 15 runs over 256 blocks of Gaussian keys, one thread)
 * and the fraction of lanes that fell back. Checks every lane against a sort first. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sample_bracket_sorts.h"

#define L 16

static uint32_t ord32(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return (b >> 31) ? ~b : (b | 0x80000000u);
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmpu(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}
static void qsel(uint32_t *a, int n, int k) {
  int lo = 0, hi = n - 1;
  while (hi > lo) {
    uint32_t p = a[(lo + hi) / 2];
    int i = lo, j = hi;
    while (i <= j) {
      while (a[i] < p) i++;
      while (a[j] > p) j--;
      if (i <= j) {
        uint32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return;
  }
}

static long nfail = 0, nlanes = 0;

/* The keys of ranks k1 <= k2 (k2 <= k1 + 1) of each lane of the block `kb`. */
static void hybrid(const uint32_t *kb, int n, int k1, int k2, int s, int M, double w, uint32_t *o1,
                   uint32_t *o2, uint32_t *cand, int mode, int fallback) {
  __m512i v[64];
  for (int j = 0; j < s; j++) v[j] = _mm512_loadu_si512(kb + (size_t)(j * n / s) * L);
  if (s == 32) sort32(v);
  else sort64(v);
  double ks = ((k1 + k2) / 2.0 + 0.5) * s / n - 0.5;
  int a = (int)floor(ks - w), b = (int)ceil(ks + w);
  if (a < 0) a = 0;
  if (b > s - 1) b = s - 1;
  __m512i lo = v[a], hi = v[b];
  for (int j = 0; j <= M; j++) _mm512_storeu_si512(cand + j * L, _mm512_set1_epi32(-1));
  __m512i clt = _mm512_setzero_si512(), cnt = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i capM = _mm512_set1_epi32(M);
  if (mode == 0) {
    for (int r = 0; r < n; r++) {
      __m512i x = _mm512_loadu_si512(kb + r * L);
      __mmask16 lt = _mm512_cmplt_epu32_mask(x, lo);
      __mmask16 in = _mm512_cmple_epu32_mask(x, hi) & ~lt;
      clt = _mm512_mask_add_epi32(clt, lt, clt, one);
      __m512i idx = _mm512_add_epi32(_mm512_slli_epi32(_mm512_min_epu32(cnt, capM), 4), lane);
      _mm512_mask_i32scatter_epi32(cand, in, idx, x, 4);
      cnt = _mm512_mask_add_epi32(cnt, in, cnt, one);
    }
  } else {
    uint32_t c[L] = {0};
    for (int r = 0; r < n; r++) {
      __m512i x = _mm512_loadu_si512(kb + r * L);
      __mmask16 lt = _mm512_cmplt_epu32_mask(x, lo);
      unsigned in = _mm512_cmple_epu32_mask(x, hi) & ~lt;
      clt = _mm512_mask_add_epi32(clt, lt, clt, one);
      while (in) {
        int l = __builtin_ctz(in);
        in &= in - 1;
        uint32_t p = c[l] < (uint32_t)M ? c[l] : (uint32_t)M;
        cand[p * L + l] = kb[r * L + l];
        c[l]++;
      }
    }
    cnt = _mm512_loadu_si512(c);
  }
  __m512i K1 = _mm512_set1_epi32(k1), K2 = _mm512_set1_epi32(k2);
  __mmask16 ok = _mm512_cmple_epu32_mask(clt, K1) &
                 _mm512_cmpgt_epu32_mask(_mm512_add_epi32(clt, cnt), K2) &
                 _mm512_cmple_epu32_mask(cnt, capM);
  for (int j = 0; j < M; j++) v[j] = _mm512_loadu_si512(cand + j * L);
  if (M == 32) sort32(v);
  else sort64(v);
  for (int j = 0; j < M; j++) _mm512_storeu_si512(cand + j * L, v[j]);
  __m512i i1 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(K1, clt), 4), lane);
  __m512i i2 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_sub_epi32(K2, clt), 4), lane);
  i1 = _mm512_mask_blend_epi32(ok, lane, i1);
  i2 = _mm512_mask_blend_epi32(ok, lane, i2);
  _mm512_storeu_si512(o1, _mm512_i32gather_epi32(i1, cand, 4));
  _mm512_storeu_si512(o2, _mm512_i32gather_epi32(i2, cand, 4));
  nlanes += L;
  if (ok != 0xffff && fallback) {
    unsigned bad = (~ok) & 0xffff;
    uint32_t col[2048];
    while (bad) {
      int l = __builtin_ctz(bad);
      bad &= bad - 1;
      nfail++;
      for (int r = 0; r < n; r++) col[r] = kb[r * L + l];
      qsel(col, n, k1);
      o1[l] = col[k1];
      uint32_t m2 = col[k1];
      if (k2 != k1) {
        m2 = col[k1 + 1];
        for (int r = k1 + 2; r < n; r++)
          if (col[r] < m2) m2 = col[r];
      }
      o2[l] = m2;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s n s(32|64) M(32|64) w mode(0|1)\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]), s = atoi(argv[2]), M = atoi(argv[3]), mode = atoi(argv[5]);
  double w = atof(argv[4]);
  int fallback = getenv("NOFB") == NULL;
  int NB = 256;
  uint32_t *kb = aligned_alloc(64, (size_t)NB * n * L * 4);
  srand(1);
  for (size_t i = 0; i < (size_t)NB * n * L; i++) {
    double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
    kb[i] = ord32((float)(sqrt(-2 * log(u1)) * cos(6.283185307 * u2)));
  }
  uint32_t *cand = aligned_alloc(64, (size_t)(M + 1) * L * 4), o1[L], o2[L];
  int k1 = (n - 1) / 2, k2 = n / 2;
  for (int b = 0; b < NB && fallback; b++) {
    hybrid(kb + (size_t)b * n * L, n, k1, k2, s, M, w, o1, o2, cand, mode, fallback);
    for (int l = 0; l < L; l++) {
      uint32_t col[2048];
      for (int r = 0; r < n; r++) col[r] = kb[(size_t)b * n * L + r * L + l];
      qsort(col, n, 4, cmpu);
      if (col[k1] != o1[l] || col[k2] != o2[l]) {
        printf("WRONG block %d lane %d\n", b, l);
        return 1;
      }
    }
  }
  nfail = nlanes = 0;
  double best = 1e9;
  for (int rep = 0; rep < 15; rep++) {
    double t = now();
    for (int it = 0; it < 4; it++)
      for (int b = 0; b < NB; b++)
        hybrid(kb + (size_t)b * n * L, n, k1, k2, s, M, w, o1, o2, cand, mode, fallback);
    t = now() - t;
    if (t < best) best = t;
  }
  printf("n=%d s=%d M=%d w=%.1f mode=%d fallback=%d: %.3f us/block, lanes falling back %.4f\n", n,
         s, M, w, mode, fallback, best / (4 * NB) * 1e6, (double)nfail / (nlanes ? nlanes : 1));
  return 0;
}
