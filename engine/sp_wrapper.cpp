// The extern "C" wrapper over sentencepiece::SentencePieceProcessor declared in sp_wrapper.h.
// No tokenization policy lives here; every exception is caught at this boundary so none
// crosses into C.
#include "sp_wrapper.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

struct eng_sp {
    sentencepiece::SentencePieceProcessor proc;
    int32_t n_pieces = 0;
};

namespace {

void set_err(char *err, size_t errlen, const char *msg)
{
    if (err == nullptr || errlen == 0)
        return;
    size_t n = std::strlen(msg);
    if (n >= errlen)
        n = errlen - 1;
    std::memcpy(err, msg, n);
    err[n] = '\0';
}

bool in_range(const eng_sp *sp, int32_t id)
{
    return sp != nullptr && id >= 0 && id < sp->n_pieces;
}

} // namespace

extern "C" int eng_sp_load(const void *buf, size_t len, eng_sp **out, char *err, size_t errlen)
{
    *out = nullptr;
    if (buf == nullptr && len > 0) {
        set_err(err, errlen, "sentencepiece: NULL model buffer");
        return ENG_SP_ERR_INVALID;
    }
    eng_sp *sp = new (std::nothrow) eng_sp;
    if (sp == nullptr) {
        set_err(err, errlen, "sentencepiece: out of memory");
        return ENG_SP_ERR_NOMEM;
    }
    try {
        const auto st = sp->proc.LoadFromSerializedProto(
            absl::string_view(static_cast<const char *>(buf), len));
        if (!st.ok()) {
            std::string msg = std::string("sentencepiece: ") + st.ToString();
            set_err(err, errlen, msg.c_str());
            delete sp;
            return ENG_SP_ERR_INVALID;
        }
        sp->n_pieces = sp->proc.GetPieceSize();
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "sentencepiece: out of memory");
        delete sp;
        return ENG_SP_ERR_NOMEM;
    } catch (...) {
        set_err(err, errlen, "sentencepiece: exception while loading the model");
        delete sp;
        return ENG_SP_ERR_INVALID;
    }
    *out = sp;
    return 0;
}

extern "C" void eng_sp_destroy(eng_sp *sp)
{
    delete sp;
}

extern "C" int eng_sp_encode(const eng_sp *sp, const char *text, size_t len, int32_t **ids, size_t *n_ids)
{
    *ids = nullptr;
    *n_ids = 0;
    if (sp == nullptr || (text == nullptr && len > 0))
        return ENG_SP_ERR_INVALID;
    try {
        std::vector<int> v;
        const auto st = sp->proc.Encode(absl::string_view(text, len), &v);
        if (!st.ok())
            return ENG_SP_ERR_INTERNAL;
        if (v.empty())
            return 0;
        int32_t *a = static_cast<int32_t *>(std::malloc(v.size() * sizeof(int32_t)));
        if (a == nullptr)
            return ENG_SP_ERR_NOMEM;
        for (size_t i = 0; i < v.size(); ++i)
            a[i] = static_cast<int32_t>(v[i]);
        *ids = a;
        *n_ids = v.size();
        return 0;
    } catch (const std::bad_alloc &) {
        return ENG_SP_ERR_NOMEM;
    } catch (...) {
        return ENG_SP_ERR_INTERNAL;
    }
}

extern "C" int32_t eng_sp_n_pieces(const eng_sp *sp)
{
    return sp != nullptr ? sp->n_pieces : 0;
}

extern "C" const char *eng_sp_id_to_piece(const eng_sp *sp, int32_t id, size_t *len)
{
    if (!in_range(sp, id))
        return nullptr;
    // IdToPiece returns a reference into the loaded model, stable until the processor dies.
    const std::string &p = sp->proc.IdToPiece(id);
    if (len != nullptr)
        *len = p.size();
    return p.c_str();
}

extern "C" int32_t eng_sp_piece_to_id(const eng_sp *sp, const char *piece, size_t len)
{
    if (sp == nullptr || (piece == nullptr && len > 0))
        return -1;
    try {
        // PieceToId answers the unknown id for pieces it does not know; confirm the spelling.
        const int id = sp->proc.PieceToId(absl::string_view(piece, len));
        if (!in_range(sp, id))
            return -1;
        const std::string &p = sp->proc.IdToPiece(id);
        if (p.size() != len || (len > 0 && std::memcmp(p.data(), piece, len) != 0))
            return -1;
        return id;
    } catch (...) {
        return -1;
    }
}

extern "C" int eng_sp_is_byte(const eng_sp *sp, int32_t id)
{
    return in_range(sp, id) && sp->proc.IsByte(id);
}

extern "C" int eng_sp_is_unknown(const eng_sp *sp, int32_t id)
{
    return in_range(sp, id) && sp->proc.IsUnknown(id);
}

extern "C" int eng_sp_is_control(const eng_sp *sp, int32_t id)
{
    return in_range(sp, id) && sp->proc.IsControl(id);
}

extern "C" float eng_sp_score(const eng_sp *sp, int32_t id)
{
    return in_range(sp, id) ? sp->proc.GetScore(id) : 0.0f;
}
