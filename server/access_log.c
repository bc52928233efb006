/* The access log: one line per finished request on stderr (time, client, method, path, status,
 * tokens, latency, request id; the prompt only with --log-prompts). Every field that a client
 * controls is escaped, so a request cannot forge log lines. Not a logging framework. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http.h"

/* Copies s into out with control characters, backslash, quote and DEL escaped, cut at cap. */
static void escape(const char *s, size_t max_in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; s && s[i] && i < max_in; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        const char *e = NULL;
        if (c == '\n')
            e = "\\n";
        else if (c == '\r')
            e = "\\r";
        else if (c == '\t')
            e = "\\t";
        else if (c == '\\')
            e = "\\\\";
        else if (c == '"')
            e = "\\\"";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\x%02x", c);
            e = tmp;
        }
        size_t n = e ? strlen(e) : 1;
        if (o + n + 4 >= cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (e)
            memcpy(out + o, e, n);
        else
            out[o] = (char)c;
        o += n;
    }
    out[o] = '\0';
}

void srv_access_log(struct srv_server *s, const struct srv_req *r, bool completed_ok)
{
    if (s->cfg->no_access_log)
        return;
    char path[600], method[40], prompt[2100] = "";
    escape(r->path, sizeof r->path, path, sizeof path);
    escape(r->method, sizeof r->method, method, sizeof method);
    if (s->cfg->log_prompts && r->log_prompt)
        escape(r->log_prompt, 1024, prompt, sizeof prompt);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    double ms = (double)(srv_now_ns() - r->t_start_ns) * 1e-6;
    pthread_mutex_lock(&s->log_mu);
    fprintf(stderr, "%s %s \"%s %s\" %d prompt_tokens=%d completion_tokens=%d %.1fms id=%s%s%s%s%s\n", ts, r->ip,
            method, path, r->status ? r->status : 0, r->prompt_tokens, r->completion_tokens, ms, r->id,
            completed_ok ? "" : " aborted", prompt[0] ? " prompt=\"" : "", prompt, prompt[0] ? "\"" : "");
    fflush(stderr);
    pthread_mutex_unlock(&s->log_mu);
}
