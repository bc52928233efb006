/* The per-sequence random number generator of the sampler: xoshiro256** (Blackman and Vigna)
 * seeded through splitmix64, as its authors recommend. Small, fast and reproducible across
 * platforms; it is not a cryptographic generator and must never be used for secrets. */
#ifndef PHISERVE_ENGINE_RNG_H
#define PHISERVE_ENGINE_RNG_H

#include <stdint.h>

struct eng_rng {
    uint64_t s[4]; /* never all zero once seeded */
};

/* One step of splitmix64: advances *x and returns the next output. Used to spread a 64-bit
 * seed over the 256-bit xoshiro state (consecutive seeds give unrelated streams). */
static inline uint64_t eng_splitmix64_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Seeds the generator from any 64-bit value (0 included). */
static inline void eng_rng_seed(struct eng_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = eng_splitmix64_next(&x);
    /* splitmix64 is a bijection of its counter, so four consecutive outputs cannot all be
     * zero; the guard only documents the invariant xoshiro needs. */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

static inline uint64_t eng_rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* Next 64 random bits (xoshiro256**). */
static inline uint64_t eng_rng_next(struct eng_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = eng_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = eng_rng_rotl(s[3], 45);
    return result;
}

/* A uniform double in [0, 1) with 53 random bits (never 1.0). */
static inline double eng_rng_uniform(struct eng_rng *r)
{
    return (double)(eng_rng_next(r) >> 11) * 0x1.0p-53;
}

#endif
