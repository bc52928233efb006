/* Hugging Face fast-tokenizer semantics on top of a SentencePiece model: added-token splitting
 * with rstrip/lstrip, the per-segment "\xe2\x96\x81" prefix rule, BOS/EOS, and HF's decoder chain.
 * SentencePiece itself (BPE merges, byte fallback) runs behind sp_wrapper.h; no merges here. */
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "file_util.h"
#include "json.h"
#include "sp_wrapper.h"

#define MAX_FILE_BYTES ((size_t)256 << 20)
/* Added-token matching costs O(text bytes x tokens sharing a first byte); real tokenizers have
 * tens to a few hundred added tokens. */
#define MAX_ADDED_TOKENS 4096
#define MAX_ADDED_ID ((int32_t)1 << 24)

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space. */
static const char SPACE_MARK[] = "\xe2\x96\x81";
#define SPACE_MARK_LEN 3
static const char REPLACEMENT_CHAR[] = "\xef\xbf\xbd";

/* ---- small helpers ---------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return ENG_TOK_ERR_NOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return ENG_TOK_ERR_NOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return ENG_TOK_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(struct buf *b, const void *src, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc != 0)
        return rc;
    if (n > 0)
        memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

struct idvec {
    int32_t *p;
    size_t len, cap;
};

static int idvec_put(struct idvec *v, const int32_t *src, size_t n)
{
    if (n > SIZE_MAX / sizeof(int32_t) - v->len)
        return ENG_TOK_ERR_NOMEM;
    if (v->len + n > v->cap) {
        size_t cap = v->cap ? v->cap : 32;
        while (cap < v->len + n) {
            if (cap > SIZE_MAX / sizeof(int32_t) / 2)
                return ENG_TOK_ERR_NOMEM;
            cap *= 2;
        }
        int32_t *p = realloc(v->p, cap * sizeof(int32_t));
        if (p == NULL)
            return ENG_TOK_ERR_NOMEM;
        v->p = p;
        v->cap = cap;
    }
    memcpy(v->p + v->len, src, n * sizeof(int32_t));
    v->len += n;
    return 0;
}

/* Reads dir/name whole (bounded; FIFOs, devices and directories refused without blocking).
 * Returns 0, ENG_TOK_ERR_IO when it cannot be read (*missing tells absence apart for optional
 * files), or ENG_TOK_ERR_INVALID for a path that is too long. */
static int read_file(const char *dir, const char *name, char **out, size_t *out_len, bool *missing,
                     char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    *missing = false;
    char path[4096];
    if (eng_path_join(path, sizeof path, dir, name, err, errlen) != 0)
        return ENG_TOK_ERR_INVALID;
    int rc = eng_file_read_small(path, name, MAX_FILE_BYTES, out, out_len, err, errlen);
    if (rc == 0)
        return 0;
    *missing = rc == ENG_FILE_ERR_MISSING;
    return ENG_TOK_ERR_IO;
}

/* Length of the valid UTF-8 sequence at s[0..n) (json.h's rule), or 0 when it is ill-formed;
 * then *subpart gets the length of the maximal ill-formed prefix that one U+FFFD replaces
 * (Unicode / Python rule): the longest prefix, up to 3 bytes, that more bytes could still make
 * valid. A prefix of 2 or 3 bytes already holds the byte whose range depends on the lead, and
 * every later byte accepts any continuation byte, so padding it with 0x80 tells. */
static size_t utf8_valid_len(const unsigned char *s, size_t n, size_t *subpart)
{
    size_t len = eng_utf8_seq_len(s, n);
    *subpart = 1;
    if (len > 0)
        return len;
    for (size_t k = 2; k <= 3 && k <= n; ++k) {
        unsigned char probe[4] = {0x80, 0x80, 0x80, 0x80};
        memcpy(probe, s, k);
        if (eng_utf8_seq_len(probe, sizeof probe) == 0)
            break;
        *subpart = k;
    }
    return 0;
}

/* Whitespace as Rust's char::is_whitespace (Unicode White_Space), which HF's rstrip/lstrip
 * use. Returns the byte length of the whitespace character at s, or 0. */
static size_t ws_len_at(const unsigned char *s, size_t n)
{
    if (n >= 1 && (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D)))
        return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0))
        return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) /* U+1680 */
        return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) /* U+2000-200A, 2028, 2029, 202F */
        return 3;
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) /* U+205F */
        return 3;
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

/* Length of the whitespace character ending at s[n-1] (valid UTF-8 assumed), or 0. */
static size_t ws_len_before(const unsigned char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; ++k) {
        size_t w = ws_len_at(s + n - k, k);
        if (w == k)
            return k;
    }
    return 0;
}

/* ---- loading ---------------------------------------------------------------------------- */

static const char *json_token_content(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c))
            return c->valuestring;
    }
    return NULL;
}

static bool json_bool(const cJSON *obj, const char *key, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    return dflt;
}

static bool json_str_eq(const cJSON *obj, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

int eng_tokenizer_add_token(struct eng_tokenizer *tok, const char *content, int64_t id, bool lstrip, bool rstrip,
                            bool special, char *err, size_t errlen)
{
    if (id < 0 || id >= MAX_ADDED_ID) {
        eng_set_err(err, errlen, "tokenizer.json: added token id %lld out of range", (long long)id);
        return ENG_TOK_ERR_INVALID;
    }
    size_t len = strlen(content);
    if (len == 0) {
        eng_set_err(err, errlen, "tokenizer.json: empty added token (id %lld)", (long long)id);
        return ENG_TOK_ERR_INVALID;
    }
    for (int i = 0; i < tok->info.n_added; ++i) {
        if (tok->added[i].id == id) {
            eng_set_err(err, errlen, "tokenizer.json: added token id %lld listed twice", (long long)id);
            return ENG_TOK_ERR_INVALID;
        }
    }
    if (tok->info.n_added >= MAX_ADDED_TOKENS) {
        eng_set_err(err, errlen, "tokenizer: more than %d added tokens", MAX_ADDED_TOKENS);
        return ENG_TOK_ERR_INVALID;
    }
    if (tok->info.n_added == tok->cap_added) {
        int cap = tok->cap_added ? 2 * tok->cap_added : 16;
        struct added_token *p = realloc(tok->added, (size_t)cap * sizeof *p);
        if (p == NULL) {
            eng_set_err(err, errlen, "out of memory");
            return ENG_TOK_ERR_NOMEM;
        }
        tok->added = p;
        tok->cap_added = cap;
    }
    struct added_token *a = &tok->added[tok->info.n_added];
    a->content = malloc(len + 1);
    if (a->content == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    memcpy(a->content, content, len + 1);
    a->len = len;
    a->id = (int32_t)id;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->special = special;
    tok->first_byte[(unsigned char)content[0]] = true;
    tok->info.n_added++;
    return 0;
}

static const struct added_token *find_added(const struct eng_tokenizer *tok, const char *s, size_t len)
{
    for (int i = 0; i < tok->info.n_added; ++i)
        if (tok->added[i].len == len && memcmp(tok->added[i].content, s, len) == 0)
            return &tok->added[i];
    return NULL;
}

static int parse_prefix_rule(struct eng_tokenizer *tok, const cJSON *root, char *err, size_t errlen)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    bool has_norm = norm != NULL && !cJSON_IsNull(norm);
    bool has_pre = pre != NULL && !cJSON_IsNull(pre);
    tok->prefix = PREFIX_NEVER;
    if (has_norm) {
        /* The legacy Llama normalizer: Sequence[Prepend(mark)?, Replace(" ", mark)]. */
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        if (!json_str_eq(norm, "type", "Sequence") || !cJSON_IsArray(list))
            goto unsupported_norm;
        bool prepend = false, replace = false;
        const cJSON *n;
        cJSON_ArrayForEach(n, list) {
            if (json_str_eq(n, "type", "Prepend") && json_str_eq(n, "prepend", SPACE_MARK) && !replace) {
                prepend = true;
            } else if (json_str_eq(n, "type", "Replace") && json_str_eq(n, "content", SPACE_MARK) &&
                       json_str_eq(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String", " ")) {
                replace = true;
            } else {
                goto unsupported_norm;
            }
        }
        if (!replace || has_pre)
            goto unsupported_norm;
        tok->prefix = prepend ? PREFIX_LEGACY : PREFIX_NEVER;
    }
    if (has_pre) {
        if (!json_str_eq(pre, "type", "Metaspace") || !json_str_eq(pre, "replacement", SPACE_MARK) ||
            json_bool(pre, "split", false)) {
            eng_set_err(err, errlen, "tokenizer.json: unsupported pre_tokenizer (want Metaspace, split false)");
            return ENG_TOK_ERR_INVALID;
        }
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
        if (cJSON_IsString(scheme)) {
            if (strcmp(scheme->valuestring, "first") == 0)
                tok->prefix = PREFIX_META_FIRST;
            else if (strcmp(scheme->valuestring, "always") == 0)
                tok->prefix = PREFIX_META_ALWAYS;
            else if (strcmp(scheme->valuestring, "never") == 0)
                tok->prefix = PREFIX_NEVER;
            else {
                eng_set_err(err, errlen, "tokenizer.json: unknown Metaspace prepend_scheme");
                return ENG_TOK_ERR_INVALID;
            }
        } else {
            /* Files older than prepend_scheme spell it add_prefix_space. */
            tok->prefix = json_bool(pre, "add_prefix_space", true) ? PREFIX_META_ALWAYS : PREFIX_NEVER;
        }
    }

    /* Decoder: Sequence[Replace, ByteFallback, Fuse, Strip(" ", 1, 0)] or Metaspace. */
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    tok->strip_leading_space = false;
    if (json_str_eq(dec, "type", "Sequence")) {
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(dec, "decoders")) {
            const cJSON *start = cJSON_GetObjectItemCaseSensitive(d, "start");
            if (json_str_eq(d, "type", "Strip") && json_str_eq(d, "content", " ") && cJSON_IsNumber(start) &&
                start->valuedouble >= 1)
                tok->strip_leading_space = true;
        }
    } else if (json_str_eq(dec, "type", "Metaspace")) {
        tok->strip_leading_space = !json_str_eq(dec, "prepend_scheme", "never") && json_bool(dec, "add_prefix_space", true);
    }
    return 0;

unsupported_norm:
    eng_set_err(err, errlen, "tokenizer.json: unsupported normalizer (want null or Prepend/Replace of U+2581)");
    return ENG_TOK_ERR_INVALID;
}

static int parse_tokenizer_json(struct eng_tokenizer *tok, const char *text, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (root == NULL) {
        eng_set_err(err, errlen, "tokenizer.json: not valid JSON");
        return ENG_TOK_ERR_INVALID;
    }
    int rc = 0;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!json_str_eq(model, "type", "BPE") && !json_str_eq(model, "type", "Unigram")) {
        eng_set_err(err, errlen, "tokenizer.json: model.type must be BPE or Unigram (a SentencePiece model)");
        rc = ENG_TOK_ERR_INVALID;
        goto out;
    }
    if ((rc = parse_prefix_rule(tok, root, err, errlen)) != 0)
        goto out;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (list != NULL && !cJSON_IsArray(list)) {
        eng_set_err(err, errlen, "tokenizer.json: added_tokens is not an array");
        rc = ENG_TOK_ERR_INVALID;
        goto out;
    }
    int n = cJSON_GetArraySize(list);
    if (n > MAX_ADDED_TOKENS) {
        eng_set_err(err, errlen, "tokenizer.json: more than %d added tokens", MAX_ADDED_TOKENS);
        rc = ENG_TOK_ERR_INVALID;
        goto out;
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(t, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(t, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || id->valuedouble != (double)(int64_t)id->valuedouble) {
            eng_set_err(err, errlen, "tokenizer.json: added token without integer id and string content");
            rc = ENG_TOK_ERR_INVALID;
            goto out;
        }
        if (json_bool(t, "single_word", false)) {
            eng_set_err(err, errlen, "tokenizer.json: single_word added tokens are not supported (%s)", content->valuestring);
            rc = ENG_TOK_ERR_INVALID;
            goto out;
        }
        /* normalized=true tokens are matched on the raw text too: with the normalizers accepted
         * above that differs only for tokens containing spaces, which Phi-3 has none of. */
        rc = eng_tokenizer_add_token(tok, content->valuestring, (int64_t)id->valuedouble,
                                     json_bool(t, "lstrip", false), json_bool(t, "rstrip", false),
                                     json_bool(t, "special", false), err, errlen);
        if (rc != 0)
            goto out;
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* added_tokens.json: {"content": id, ...}. Entries already in tokenizer.json are ignored (the
 * fast tokenizer takes its added tokens from tokenizer.json; some Hub copies of this file carry
 * typos such as "<|user|>": 320010), the rest become plain non-special added tokens. */
static int parse_added_tokens_json(struct eng_tokenizer *tok, const char *text, size_t len, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        eng_set_err(err, errlen, "added_tokens.json: not a JSON object");
        return ENG_TOK_ERR_INVALID;
    }
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!cJSON_IsNumber(e) || e->string == NULL || e->string[0] == '\0') {
            eng_set_err(err, errlen, "added_tokens.json: entries must map a token to an integer id");
            rc = ENG_TOK_ERR_INVALID;
            break;
        }
        if (find_added(tok, e->string, strlen(e->string)) != NULL)
            continue;
        int64_t id = (int64_t)e->valuedouble;
        bool id_taken = false;
        for (int i = 0; i < tok->info.n_added; ++i)
            id_taken |= tok->added[i].id == id;
        if (id_taken || id < 0 || id >= MAX_ADDED_ID || (double)id != e->valuedouble)
            continue;
        if ((rc = eng_tokenizer_add_token(tok, e->string, id, false, false, false, err, errlen)) != 0)
            break;
    }
    cJSON_Delete(root);
    return rc;
}

static int32_t token_id_by_content(const struct eng_tokenizer *tok, const char *s)
{
    if (s == NULL)
        return -1;
    return eng_tokenizer_piece_to_id(tok, s, strlen(s));
}

static int parse_config(struct eng_tokenizer *tok, const char *cfg_text, size_t cfg_len, const char *map_text,
                        size_t map_len, char *err, size_t errlen)
{
    cJSON *cfg = cfg_text != NULL ? cJSON_ParseWithLength(cfg_text, cfg_len) : NULL;
    cJSON *map = map_text != NULL ? cJSON_ParseWithLength(map_text, map_len) : NULL;
    int rc = 0;
    if ((cfg_text != NULL && !cJSON_IsObject(cfg)) || (map_text != NULL && !cJSON_IsObject(map))) {
        eng_set_err(err, errlen, "%s: not a JSON object",
                    cfg_text != NULL && !cJSON_IsObject(cfg) ? "tokenizer_config.json" : "special_tokens_map.json");
        rc = ENG_TOK_ERR_INVALID;
        goto out;
    }
    static const char *const names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t *dst[4] = {&tok->info.bos_id, &tok->info.eos_id, &tok->info.unk_id, &tok->info.pad_id};
    for (int i = 0; i < 4; ++i) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, names[i]);
        if (v == NULL || cJSON_IsNull(v))
            v = cJSON_GetObjectItemCaseSensitive(map, names[i]);
        *dst[i] = -1;
        if (v == NULL || cJSON_IsNull(v))
            continue;
        const char *content = json_token_content(v);
        *dst[i] = token_id_by_content(tok, content);
        if (*dst[i] < 0) {
            eng_set_err(err, errlen, "tokenizer_config.json: %s %s is not in the vocabulary", names[i],
                        content != NULL ? content : "(not a string)");
            rc = ENG_TOK_ERR_INVALID;
            goto out;
        }
    }
    /* LlamaTokenizerFast defaults: add_bos_token true, add_eos_token false. */
    tok->info.add_bos = json_bool(cfg, "add_bos_token", true);
    tok->info.add_eos = json_bool(cfg, "add_eos_token", false);
out:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc;
}

int eng_tokenizer_build_tables(struct eng_tokenizer *tok, char *err, size_t errlen)
{
    int32_t n_vocab = tok->n_sp;
    for (int i = 0; i < tok->info.n_added; ++i)
        if (tok->added[i].id >= n_vocab)
            n_vocab = tok->added[i].id + 1;
    tok->info.n_vocab = n_vocab;
    tok->added_of_id = malloc((size_t)n_vocab * sizeof *tok->added_of_id);
    tok->byte_of_id = malloc((size_t)(tok->n_sp > 0 ? tok->n_sp : 1) * sizeof *tok->byte_of_id);
    if (tok->added_of_id == NULL || tok->byte_of_id == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    /* A piece's bytes bound the text it covers ("\xe2\x96\x81" stands for one space, "<0x41>" for
     * one byte); 4 covers an unknown character mapped to <unk>. */
    tok->max_piece_bytes = 4;
    for (int32_t id = 0; id < tok->n_sp; ++id) {
        size_t plen = 0;
        if (eng_sp_id_to_piece(tok->sp, id, &plen) != NULL && plen > tok->max_piece_bytes)
            tok->max_piece_bytes = plen;
    }
    for (int32_t id = 0; id < n_vocab; ++id)
        tok->added_of_id[id] = -1;
    for (int i = 0; i < tok->info.n_added; ++i)
        tok->added_of_id[tok->added[i].id] = i;
    for (int32_t id = 0; id < tok->n_sp; ++id) {
        tok->byte_of_id[id] = -1;
        size_t len;
        const char *p = eng_sp_id_to_piece(tok->sp, id, &len);
        unsigned v;
        char tail;
        if (eng_sp_is_byte(tok->sp, id)) {
            if (p == NULL || len != 6 || sscanf(p, "<0x%2X>%c", &v, &tail) != 1 || v > 255) {
                eng_set_err(err, errlen, "tokenizer.model: byte piece %d is not spelled <0xXX>", (int)id);
                return ENG_TOK_ERR_INVALID;
            }
            tok->byte_of_id[id] = (int16_t)v;
        }
    }
    return 0;
}

int eng_tokenizer_load_dir(const char *dir, struct eng_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    struct eng_tokenizer *tok = calloc(1, sizeof *tok);
    char *model = NULL, *tj = NULL, *cfg = NULL, *map = NULL, *added = NULL;
    size_t model_len, tj_len, cfg_len, map_len, added_len;
    bool missing;
    int rc;
    if (tok == NULL) {
        eng_set_err(err, errlen, "out of memory");
        return ENG_TOK_ERR_NOMEM;
    }
    if ((rc = read_file(dir, "tokenizer.model", &model, &model_len, &missing, err, errlen)) != 0)
        goto fail;
    /* The HF prefix rules decide where "\xe2\x96\x81" goes, so sentencepiece's own dummy prefix is
     * turned off: appending a second normalizer_spec (ModelProto field 3) holding only
     * add_dummy_prefix (field 3) = false is, by protobuf merge rules, that one change. */
    static const char no_dummy_prefix[] = {0x1a, 0x02, 0x18, 0x00};
    {
        struct buf b = {model, model_len, model_len};
        if ((rc = buf_put(&b, no_dummy_prefix, sizeof no_dummy_prefix)) != 0) {
            eng_set_err(err, errlen, "out of memory");
            goto fail;
        }
        model = b.p;
        model_len = b.len;
    }
    if ((rc = eng_sp_load(model, model_len, &tok->sp, err, errlen)) != 0) {
        rc = rc == ENG_SP_ERR_NOMEM ? ENG_TOK_ERR_NOMEM : ENG_TOK_ERR_INVALID;
        goto fail;
    }
    tok->n_sp = eng_sp_n_pieces(tok->sp);
    if (tok->n_sp <= 0) {
        eng_set_err(err, errlen, "tokenizer.model: no pieces");
        rc = ENG_TOK_ERR_INVALID;
        goto fail;
    }
    if ((rc = read_file(dir, "tokenizer.json", &tj, &tj_len, &missing, err, errlen)) != 0)
        goto fail;
    if ((rc = parse_tokenizer_json(tok, tj, tj_len, err, errlen)) != 0)
        goto fail;
    rc = read_file(dir, "added_tokens.json", &added, &added_len, &missing, err, errlen);
    if (rc != 0 && !missing)
        goto fail;
    if (rc == 0 && (rc = parse_added_tokens_json(tok, added, added_len, err, errlen)) != 0)
        goto fail;
    rc = read_file(dir, "tokenizer_config.json", &cfg, &cfg_len, &missing, err, errlen);
    if (rc != 0 && !missing)
        goto fail;
    rc = read_file(dir, "special_tokens_map.json", &map, &map_len, &missing, err, errlen);
    if (rc != 0 && !missing)
        goto fail;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if ((rc = eng_tokenizer_build_tables(tok, err, errlen)) != 0)
        goto fail;
    if ((rc = parse_config(tok, cfg, cfg_len, map, map_len, err, errlen)) != 0)
        goto fail;
    free(model);
    free(tj);
    free(cfg);
    free(map);
    free(added);
    *out = tok;
    return 0;
fail:
    free(model);
    free(tj);
    free(cfg);
    free(map);
    free(added);
    eng_tokenizer_destroy(tok);
    return rc;
}

void eng_tokenizer_destroy(struct eng_tokenizer *tok)
{
    if (tok == NULL)
        return;
    if (tok->added != NULL)
        for (int i = 0; i < tok->info.n_added; ++i)
            free(tok->added[i].content);
    free(tok->added);
    free(tok->added_of_id);
    free(tok->byte_of_id);
    eng_sp_destroy(tok->sp);
    free(tok);
}

const struct eng_tokenizer_info *eng_tokenizer_get_info(const struct eng_tokenizer *tok)
{
    return &tok->info;
}

/* ---- encode ----------------------------------------------------------------------------- */

/* Copies text with every maximal ill-formed UTF-8 subsequence replaced by U+FFFD. */
static int sanitize_utf8(const char *text, size_t len, struct buf *out)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t sub;
        size_t n = utf8_valid_len(s + i, len - i, &sub);
        int rc = n > 0 ? buf_put(out, s + i, n) : buf_put(out, REPLACEMENT_CHAR, 3);
        if (rc != 0)
            return rc;
        i += n > 0 ? n : sub;
    }
    return 0;
}

static bool is_valid_utf8(const char *text, size_t len)
{
    size_t i = 0, sub;
    while (i < len) {
        size_t n = utf8_valid_len((const unsigned char *)text + i, len - i, &sub);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* Encodes the plain-text segment text[a..b) (no added tokens inside) and appends its ids. */
static int encode_segment(const struct eng_tokenizer *tok, const char *text, size_t a, size_t b, struct buf *scratch,
                          struct idvec *out)
{
    if (a == b)
        return 0;
    scratch->len = 0;
    bool starts_with_space = text[a] == ' ' ||
                             (b - a >= SPACE_MARK_LEN && memcmp(text + a, SPACE_MARK, SPACE_MARK_LEN) == 0);
    bool prepend;
    switch (tok->prefix) {
    case PREFIX_LEGACY:
        prepend = true;
        break;
    case PREFIX_META_ALWAYS:
        prepend = !starts_with_space;
        break;
    case PREFIX_META_FIRST:
        prepend = !starts_with_space && a == 0;
        break;
    default:
        prepend = false;
        break;
    }
    int rc;
    if (prepend && (rc = buf_put(scratch, SPACE_MARK, SPACE_MARK_LEN)) != 0)
        return rc;
    for (size_t i = a; i < b;) {
        size_t j = i;
        while (j < b && text[j] != ' ')
            ++j;
        if ((rc = buf_put(scratch, text + i, j - i)) != 0)
            return rc;
        if (j < b && (rc = buf_put(scratch, SPACE_MARK, SPACE_MARK_LEN)) != 0)
            return rc;
        i = j + 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    rc = eng_sp_encode(tok->sp, scratch->p, scratch->len, &ids, &n);
    if (rc != 0) {
        free(ids);
        return rc == ENG_SP_ERR_NOMEM ? ENG_TOK_ERR_NOMEM : ENG_TOK_ERR_INTERNAL;
    }
    rc = idvec_put(out, ids, n);
    free(ids);
    return rc;
}

/* Leftmost, then longest, added-token match at or after pos. Returns the token or NULL. */
static const struct added_token *next_added(const struct eng_tokenizer *tok, const char *text, size_t len,
                                            size_t pos, size_t *at)
{
    for (size_t i = pos; i < len; ++i) {
        if (!tok->first_byte[(unsigned char)text[i]])
            continue;
        const struct added_token *best = NULL;
        for (int k = 0; k < tok->info.n_added; ++k) {
            const struct added_token *t = &tok->added[k];
            if (t->len <= len - i && (best == NULL || t->len > best->len) && memcmp(text + i, t->content, t->len) == 0)
                best = t;
        }
        if (best != NULL) {
            *at = i;
            return best;
        }
    }
    return NULL;
}

/* Whether encoding text[a, b) on top of n ids already made must exceed max_ids. */
static bool must_exceed(const struct eng_tokenizer *tok, size_t n, size_t a, size_t b, size_t max_ids)
{
    size_t at_least = (b - a + tok->max_piece_bytes - 1) / tok->max_piece_bytes;
    return n > max_ids || at_least > max_ids - n;
}

int eng_tokenizer_encode(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                         int32_t **ids, size_t *n_ids)
{
    return eng_tokenizer_encode_max(tok, text, len, add_special, SIZE_MAX, ids, n_ids);
}

int eng_tokenizer_encode_max(const struct eng_tokenizer *tok, const char *text, size_t len, int add_special,
                             size_t max_ids, int32_t **ids, size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (tok == NULL || (text == NULL && len > 0))
        return ENG_TOK_ERR_INVALID;
    if (len > ENG_TOK_MAX_TEXT_BYTES)
        return ENG_TOK_ERR_TOO_LONG;
    struct buf clean = {0}, scratch = {0};
    struct idvec out = {0};
    int rc = 0;
    if (len > 0 && !is_valid_utf8(text, len)) {
        if ((rc = sanitize_utf8(text, len, &clean)) != 0)
            goto done;
        text = clean.p;
        len = clean.len;
    }
    if (add_special && tok->info.add_bos && tok->info.bos_id >= 0 &&
        (rc = idvec_put(&out, &tok->info.bos_id, 1)) != 0)
        goto done;

    const unsigned char *u = (const unsigned char *)text;
    size_t seg = 0, pos = 0, at;
    const struct added_token *t;
    while ((t = next_added(tok, text, len, pos, &at)) != NULL) {
        size_t start = at, end = at + t->len, w;
        /* HF AddedToken: lstrip/rstrip swallow the whitespace next to the token. */
        while (t->lstrip && start > seg && (w = ws_len_before(u + seg, start - seg)) > 0)
            start -= w;
        while (t->rstrip && end < len && (w = ws_len_at(u + end, len - end)) > 0)
            end += w;
        if (must_exceed(tok, out.len, seg, start, max_ids)) {
            rc = ENG_TOK_ERR_TOO_LONG;
            goto done;
        }
        if ((rc = encode_segment(tok, text, seg, start, &scratch, &out)) != 0)
            goto done;
        if ((rc = idvec_put(&out, &t->id, 1)) != 0)
            goto done;
        seg = pos = end;
    }
    if (must_exceed(tok, out.len, seg, len, max_ids)) {
        rc = ENG_TOK_ERR_TOO_LONG;
        goto done;
    }
    if ((rc = encode_segment(tok, text, seg, len, &scratch, &out)) != 0)
        goto done;
    if (add_special && tok->info.add_eos && tok->info.eos_id >= 0 &&
        (rc = idvec_put(&out, &tok->info.eos_id, 1)) != 0)
        goto done;
    if (rc == 0 && out.len > max_ids)
        rc = ENG_TOK_ERR_TOO_LONG;
done:
    free(clean.p);
    free(scratch.p);
    if (rc != 0) {
        free(out.p);
        return rc;
    }
    *ids = out.p;
    *n_ids = out.len;
    return 0;
}

/* ---- decode ----------------------------------------------------------------------------- */

/* Appends s with every U+2581 turned into a space (HF decoder Replace step). */
static int put_unescaped(struct buf *b, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *m = len - i >= SPACE_MARK_LEN ? memmem(s + i, len - i, SPACE_MARK, SPACE_MARK_LEN) : NULL;
        size_t j = m != NULL ? (size_t)(m - s) : len;
        int rc = buf_put(b, s + i, j - i);
        if (rc == 0 && m != NULL)
            rc = buf_put(b, " ", 1);
        if (rc != 0)
            return rc;
        i = m != NULL ? j + SPACE_MARK_LEN : len;
    }
    return 0;
}

/* HF ByteFallback: a run of byte pieces is kept when it is valid UTF-8, else each byte of
 * the run becomes one U+FFFD. */
static int flush_bytes(struct buf *b, struct buf *run)
{
    int rc = 0;
    if (is_valid_utf8(run->p, run->len))
        rc = buf_put(b, run->p, run->len);
    else
        for (size_t i = 0; i < run->len && rc == 0; ++i)
            rc = buf_put(b, REPLACEMENT_CHAR, 3);
    run->len = 0;
    return rc;
}

int eng_tokenizer_decode(const struct eng_tokenizer *tok, const int32_t *ids, size_t n_ids, int skip_special,
                         char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    if (tok == NULL || (ids == NULL && n_ids > 0))
        return ENG_TOK_ERR_INVALID;
    if (n_ids > ENG_TOK_MAX_DECODE_IDS)
        return ENG_TOK_ERR_TOO_LONG;
    struct buf b = {0}, run = {0};
    int rc = buf_reserve(&b, 1);
    for (size_t i = 0; i < n_ids && rc == 0; ++i) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->info.n_vocab)
            continue; /* padding rows: HF finds no token and emits nothing */
        int32_t ai = tok->added_of_id[id];
        if (ai >= 0 && skip_special && tok->added[ai].special)
            continue;
        if (ai < 0 && id < tok->n_sp && tok->byte_of_id[id] >= 0) {
            unsigned char byte = (unsigned char)tok->byte_of_id[id];
            rc = buf_put(&run, &byte, 1);
            continue;
        }
        if (run.len > 0 && (rc = flush_bytes(&b, &run)) != 0)
            break;
        size_t plen = 0;
        const char *p = eng_tokenizer_id_to_piece(tok, id, &plen);
        if (p != NULL)
            rc = put_unescaped(&b, p, plen);
    }
    if (rc == 0 && run.len > 0)
        rc = flush_bytes(&b, &run);
    if (rc == 0)
        rc = buf_reserve(&b, 1);
    free(run.p);
    if (rc != 0) {
        free(b.p);
        return rc;
    }
    size_t skip = tok->strip_leading_space && b.len > 0 && b.p[0] == ' ' ? 1 : 0;
    memmove(b.p, b.p + skip, b.len - skip);
    b.len -= skip;
    b.p[b.len] = '\0';
    *text = b.p;
    *len = b.len;
    return 0;
}

/* ---- lookups ---------------------------------------------------------------------------- */

const char *eng_tokenizer_id_to_piece(const struct eng_tokenizer *tok, int32_t id, size_t *len)
{
    if (tok == NULL || id < 0 || id >= tok->info.n_vocab)
        return NULL;
    int32_t ai = tok->added_of_id[id];
    if (ai >= 0) {
        if (len != NULL)
            *len = tok->added[ai].len;
        return tok->added[ai].content;
    }
    return eng_sp_id_to_piece(tok->sp, id, len);
}

int32_t eng_tokenizer_piece_to_id(const struct eng_tokenizer *tok, const char *piece, size_t len)
{
    if (tok == NULL || (piece == NULL && len > 0))
        return -1;
    const struct added_token *a = find_added(tok, piece, len);
    if (a != NULL)
        return a->id;
    return eng_sp_piece_to_id(tok->sp, piece, len);
}

int eng_tokenizer_is_special(const struct eng_tokenizer *tok, int32_t id)
{
    if (tok == NULL || id < 0 || id >= tok->info.n_vocab)
        return 0;
    int32_t ai = tok->added_of_id[id];
    return ai >= 0 && tok->added[ai].special;
}

int eng_tokenizer_byte_value(const struct eng_tokenizer *tok, int32_t id)
{
    if (tok == NULL || id < 0 || id >= tok->n_sp || tok->added_of_id[id] >= 0)
        return -1;
    return tok->byte_of_id[id];
}

int eng_tokenizer_token_bytes(const struct eng_tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    if (tok == NULL || buf == NULL || id < 0 || id >= tok->n_sp || tok->added_of_id[id] >= 0)
        return -1;
    if (tok->byte_of_id[id] >= 0) {
        if (cap < 1)
            return -1;
        buf[0] = (char)(unsigned char)tok->byte_of_id[id];
        return 1;
    }
    if (eng_sp_is_control(tok->sp, id) || eng_sp_is_unknown(tok->sp, id))
        return -1;
    size_t plen = 0;
    const char *p = eng_sp_id_to_piece(tok->sp, id, &plen);
    if (p == NULL || plen > INT32_MAX)
        return -1;
    struct buf b = {0};
    if (put_unescaped(&b, p, plen) != 0 || b.len > cap) {
        free(b.p);
        return -1;
    }
    if (b.len > 0)
        memcpy(buf, b.p, b.len);
    int n = (int)b.len;
    free(b.p);
    return n;
}
