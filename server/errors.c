/* The error table look-ups and the OpenAI error-body renderer (see errors.h).
 * Not a logger and not an HTTP writer: callers send the bytes. */
#include "errors.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

struct error_row {
    int code;
    int status;
    const char *type;
    const char *code_string;
    const char *message;
    const char *name;
};

static const struct error_row error_rows[] = {
#define SRV_ERROR_ROW(name, value, status, type, code, msg) {value, status, type, code, msg, #name},
    SRV_ERROR_TABLE(SRV_ERROR_ROW)
#undef SRV_ERROR_ROW
};

static const struct error_row *find_row(int code)
{
    const struct error_row *internal = NULL;
    for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++) {
        if (error_rows[i].code == code)
            return &error_rows[i];
        if (error_rows[i].code == SRV_ERR_INTERNAL)
            internal = &error_rows[i];
    }
    return internal;
}

int srv_error_status(int code) { return find_row(code)->status; }
const char *srv_error_type(int code) { return find_row(code)->type; }
const char *srv_error_code_string(int code) { return find_row(code)->code_string; }
const char *srv_error_default_message(int code) { return find_row(code)->message; }
const char *srv_error_name(int code) { return find_row(code)->name; }

/* Copies src into dst[cap] and cuts it at the last whole UTF-8 sequence that fits. */
static void copy_cut_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src), len = 0;
    /* Walk whole sequences (an invalid byte counts as one) until the next one would not fit. */
    while (len < n) {
        size_t k = eng_utf8_seq_len((const unsigned char *)src + len, n - len);
        if (k == 0)
            k = 1;
        if (len + k > cap - 1)
            break;
        len += k;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

int srv_error_set(struct srv_error *e, int code, const char *param, const char *fmt, ...)
{
    e->code = code;
    copy_cut_utf8(e->param, sizeof(e->param), param ? param : "");
    e->message[0] = '\0';
    if (fmt != NULL) {
        char tmp[SRV_ERROR_MESSAGE_MAX * 2];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        copy_cut_utf8(e->message, sizeof(e->message), tmp);
    }
    return code;
}

/* A bounded writer: counts every byte, stores what fits. */
struct out {
    char *buf;
    size_t cap;
    size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t room = o->cap - o->len;
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static void put_str(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* Writes s as a JSON string literal (with quotes). Control characters are escaped; bytes that
 * do not start a valid UTF-8 sequence become U+FFFD. */
static void put_json_string(struct out *o, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    put(o, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(o, esc, 2);
            i++;
        } else if (c < 0x20) {
            char esc[8];
            switch (c) {
            case '\n': put(o, "\\n", 2); break;
            case '\r': put(o, "\\r", 2); break;
            case '\t': put(o, "\\t", 2); break;
            default:
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                put(o, esc, 6);
            }
            i++;
        } else if (c < 0x80) {
            put(o, (const char *)p + i, 1);
            i++;
        } else {
            size_t k = eng_utf8_seq_len(p + i, n - i);
            if (k == 0) {
                put(o, "\xEF\xBF\xBD", 3);
                i++;
            } else {
                put(o, (const char *)p + i, k);
                i += k;
            }
        }
    }
    put(o, "\"", 1);
}

size_t srv_error_render(int code, const char *param, const char *message, char *buf, size_t cap)
{
    const struct error_row *row = find_row(code);
    struct out o = {buf, cap, 0};
    put_str(&o, "{\"error\":{\"message\":");
    put_json_string(&o, message != NULL && message[0] != '\0' ? message : row->message);
    put_str(&o, ",\"type\":");
    put_json_string(&o, row->type);
    put_str(&o, ",\"param\":");
    if (param != NULL && param[0] != '\0')
        put_json_string(&o, param);
    else
        put_str(&o, "null");
    put_str(&o, ",\"code\":");
    if (row->code_string != NULL)
        put_json_string(&o, row->code_string);
    else
        put_str(&o, "null");
    put_str(&o, "}}");
    if (cap > 0)
        buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len;
}

size_t srv_error_render_err(const struct srv_error *e, char *buf, size_t cap)
{
    return srv_error_render(e->code, e->param, e->message, buf, cap);
}
