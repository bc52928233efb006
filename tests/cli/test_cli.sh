#!/usr/bin/env bash
# Black-box tests of the phiserve command line: --help/--version, generate and tokenize on the
# demo model, and the startup harness of reliability.md group K: broken model directories
# must give a clear "error:" message and exit code 1 — never a crash, a hang or a 0.
#   test_cli.sh PHISERVE FIXTURES_DIR
set -uo pipefail
bin=$1
fixtures=$2
demo=$fixtures/models/phi3-demo
small=$fixtures/models/mha-window
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 n=0

pass() { n=$((n + 1)); }
fail() { n=$((n + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }

# expect_ok NAME CMD... : exit 0
expect_ok() {
  local name=$1; shift
  if timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"; then pass; else fail "$name (exit $?): $(head -c 300 "$tmp/err")"; fi
}

# expect_error NAME PATTERN CMD... : exit 1 with "error:" and PATTERN on stderr
expect_error() {
  local name=$1 pat=$2; shift 2
  timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 1 ]; then
    fail "$name: exit $rc, expected 1 ($(head -c 300 "$tmp/err"))"
  elif ! grep -q "error:" "$tmp/err" || ! grep -qE "$pat" "$tmp/err"; then
    fail "$name: message does not match '$pat': $(head -c 300 "$tmp/err")"
  else
    pass
  fi
}

expect_ok "--help" "$bin" --help
grep -q "generate" "$tmp/out" || fail "--help does not list generate"
expect_ok "--version" "$bin" --version
grep -qE '^phiserve [0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" || fail "--version: $(cat "$tmp/out")"

# generate: token ids in, token ids out, deterministic, the demo model by default.
expect_ok "generate demo" "$bin" generate --tokens 1,450,4996 --max-tokens 5 --ignore-eos
first=$(head -n1 "$tmp/out")
[ "$(echo "$first" | tr ',' '\n' | wc -l)" -eq 5 ] || fail "generate: expected 5 ids, got '$first'"
expect_ok "generate ref" "$bin" generate --tokens 1,450,4996 --max-tokens 5 --ignore-eos --device ref
[ "$(head -n1 "$tmp/out")" = "$first" ] || fail "generate: ref and cpu backends disagree"
# --quantization q8_0 on the plain path (--int8-activations=off: auto would take the int8 dot
# on the cpu): the tokens transformers chose on the dequantized weights
# (tests/fixtures/models/gqa/golden/q8_0, case len20), which part from the unquantized
# model's at the fifth token; q8_0 is refused with --device cuda and unknown names with 2.
gqa20=61,185,159,474,119,166,408,236,38,26,346,17,319,218,169,119,297,318,291,74
for dev in cpu ref; do
  expect_ok "generate q8_0 $dev" "$bin" generate --model "$fixtures/models/gqa" --device $dev \
    --tokens $gqa20 --max-tokens 8 --ignore-eos --quantization q8_0 --int8-activations=off
  [ "$(head -n1 "$tmp/out")" = "249,265,76,297,199,71,434,240" ] ||
    fail "generate q8_0 $dev: got '$(head -n1 "$tmp/out")', transformers gave 249,265,76,297,199,71,434,240"
done
expect_ok "generate unquantized" "$bin" generate --model "$fixtures/models/gqa" --tokens $gqa20 \
  --max-tokens 8 --ignore-eos --quantization none
[ "$(head -n1 "$tmp/out")" = "249,265,76,297,346,67,492,240" ] ||
  fail "generate unquantized: got '$(head -n1 "$tmp/out")', transformers gave 249,265,76,297,346,67,492,240"
# q4_0: case len1 of golden/q4_0 (a one-token prompt; margins >= 0.15 on these 8 steps).
expect_ok "generate q4_0" "$bin" generate --model "$fixtures/models/gqa" --tokens 294 \
  --max-tokens 8 --ignore-eos --quantization q4_0 --int8-activations=off
[ "$(head -n1 "$tmp/out")" = "222,52,44,332,240,71,192,52" ] ||
  fail "generate q4_0: got '$(head -n1 "$tmp/out")', transformers gave 222,52,44,332,240,71,192,52"
expect_error "q8_0 on cuda" "cpu and ref devices" "$bin" generate --device cuda --quantization q8_0 \
  --tokens 1
"$bin" generate --quantization q4 --tokens 1 >/dev/null 2>&1; [ $? -eq 2 ] && pass ||
  fail "unknown --quantization not exit 2"
# --int8-activations: listed in the help; on both host devices it runs and changes the logits
# against plain q8_0 / q4_0 (the values themselves: tests/engine/test_model_quant.c), and
# without the flag (auto) the cpu takes it for quantized weights (the same logits) while ref
# keeps the plain path; with a Q8_0/Q4_0 GGUF file it needs no --quantization; a float model
# without --quantization, --device cuda and a bad word are errors that say what to do (auto
# leaves a float model alone).
expect_ok "generate --help" "$bin" generate --help
grep -q -- "--int8-activations" "$tmp/out" || fail "generate --help does not list --int8-activations"
for q in q8_0 q4_0; do
  expect_ok "generate $q plain" "$bin" generate --model "$fixtures/models/gqa" --tokens $gqa20 \
    --max-tokens 4 --ignore-eos --quantization $q --int8-activations=off --dump-logits "$tmp/plain.f32"
  for dev in cpu ref; do
    expect_ok "generate $q int8 $dev" "$bin" generate --model "$fixtures/models/gqa" --device $dev \
      --tokens $gqa20 --max-tokens 4 --ignore-eos --quantization $q --int8-activations \
      --dump-logits "$tmp/int8.f32"
    [ "$(head -n1 "$tmp/out" | tr ',' '\n' | wc -l)" -eq 4 ] || fail "generate $q int8 $dev: '$(head -n1 "$tmp/out")'"
    [ "$(stat -c %s "$tmp/int8.f32")" -eq $((4 * 512 * 4)) ] && ! cmp -s "$tmp/plain.f32" "$tmp/int8.f32" ||
      fail "generate $q int8 $dev: the logits are the plain path's (or missing)"
  done
  expect_ok "generate $q auto" "$bin" generate --model "$fixtures/models/gqa" --tokens $gqa20 \
    --max-tokens 4 --ignore-eos --quantization $q --dump-logits "$tmp/auto.f32"
  expect_ok "generate $q int8 cpu again" "$bin" generate --model "$fixtures/models/gqa" \
    --tokens $gqa20 --max-tokens 4 --ignore-eos --quantization $q --int8-activations=on \
    --dump-logits "$tmp/int8.f32"
  cmp -s "$tmp/int8.f32" "$tmp/auto.f32" || fail "generate $q: auto on the cpu is not the int8 path"
  expect_ok "generate $q auto ref" "$bin" generate --model "$fixtures/models/gqa" --device ref \
    --tokens $gqa20 --max-tokens 4 --ignore-eos --quantization $q --dump-logits "$tmp/auto.f32"
  expect_ok "generate $q plain ref" "$bin" generate --model "$fixtures/models/gqa" --device ref \
    --tokens $gqa20 --max-tokens 4 --ignore-eos --quantization $q --int8-activations=off \
    --dump-logits "$tmp/plain.f32"
  cmp -s "$tmp/plain.f32" "$tmp/auto.f32" || fail "generate $q: auto on ref is not the plain path"
done
expect_ok "auto on a float model" "$bin" generate --model "$small" --tokens 5,77,300 --max-tokens 2
"$bin" generate --int8-activations=sometimes --tokens 1 >/dev/null 2>&1; [ $? -eq 2 ] && pass ||
  fail "--int8-activations=sometimes not exit 2"
expect_ok "gguf q4_0 int8" "$bin" generate --model "$small/gguf/q4_0.gguf" --tokens 5,77,300 \
  --max-tokens 4 --ignore-eos --int8-activations
[ "$(head -n1 "$tmp/out" | tr ',' '\n' | wc -l)" -eq 4 ] || fail "gguf q4_0 int8: '$(head -n1 "$tmp/out")'"
expect_error "int8 on a float model" "int8 activations need Q8_0, Q4_0, Q4_K, Q5_K or Q6_K .*--quantization q8_0\|q4_0" \
  "$bin" generate --model "$small" --tokens 1 --int8-activations
expect_error "int8 on cuda" "int8-activations runs on the cpu and ref devices" \
  "$bin" generate --device cuda --int8-activations --tokens 1

# A NaN weight cannot be quantized: a load error naming the tensor.
mkdir -p "$tmp/nan"; cp "$fixtures/models/gqa"/*.json "$fixtures/models/gqa/model.safetensors" "$tmp/nan/"
f="$tmp/nan/model.safetensors"
hlen=$(od -An -tu8 -N8 "$f" | tr -d ' ')
start=$(head -c $((8 + hlen)) "$f" | tail -c +9 |
  grep -o '"model.layers.1.mlp.down_proj.weight":{[^}]*}' | sed 's/.*data_offsets":\[\([0-9]*\),.*/\1/')
[ -n "$start" ] || fail "test setup: no down_proj offsets in the header"
printf '\xc0\x7f' | dd of="$f" bs=1 seek=$((8 + hlen + start + 2 * 100)) conv=notrunc 2>/dev/null
expect_error "q8_0 NaN weight" "model.layers.1.mlp.down_proj.weight .* cannot be quantized" \
  "$bin" generate --model "$tmp/nan" --tokens 1 --quantization q8_0
expect_ok "NaN weight unquantized" "$bin" generate --model "$tmp/nan" --tokens 1 --max-tokens 1

# GGUF files (llama.cpp's format): the same tokens as the directory they were written from
# (bf16 as stored, q4_0 with the blocks --quantization q4_0 makes), on both host devices; the
# CUDA backend refuses block-format matrices; broken files are clean load errors (K1, K2).
gg=$small/gguf
for dev in cpu ref; do
  expect_ok "dir $dev" "$bin" generate --model "$small" --device $dev --tokens 5,77,300 --max-tokens 8 --ignore-eos
  want=$(head -n1 "$tmp/out")
  expect_ok "gguf bf16 $dev" "$bin" generate --model "$gg/bf16.gguf" --device $dev --tokens 5,77,300 --max-tokens 8 --ignore-eos
  [ "$(head -n1 "$tmp/out")" = "$want" ] || fail "gguf bf16 $dev: got '$(head -n1 "$tmp/out")', the directory gave '$want'"
  expect_ok "dir q4_0 $dev" "$bin" generate --model "$small" --device $dev --tokens 5,77,300 --max-tokens 8 --ignore-eos --quantization q4_0
  want=$(head -n1 "$tmp/out")
  expect_ok "gguf q4_0 $dev" "$bin" generate --model "$gg/q4_0.gguf" --device $dev --tokens 5,77,300 --max-tokens 8 --ignore-eos
  [ "$(head -n1 "$tmp/out")" = "$want" ] || fail "gguf q4_0 $dev: got '$(head -n1 "$tmp/out")', --quantization q4_0 gave '$want'"
done
expect_error "gguf q4_0 on cuda" "no q4_0 kernels" "$bin" generate --model "$gg/q4_0.gguf" --device cuda --tokens 1
# K-quants run as stored, or requantized with --quantization (the golden suite checks the values).
kmix=$fixtures/models/gqa/gguf/kmix.gguf
for q in none q8_0 q4_0; do
  expect_ok "gguf k-quants --quantization $q" "$bin" generate --model "$kmix" --tokens 5,77,300 --max-tokens 4 --ignore-eos --quantization $q
  [ "$(head -n1 "$tmp/out" | tr ',' '\n' | wc -l)" -eq 4 ] || fail "gguf k-quants $q: '$(head -n1 "$tmp/out")'"
done
expect_error "gguf k-quants on cuda" "no q4_k kernels" "$bin" generate --model "$kmix" --device cuda --tokens 1
head -c 150000 "$gg/bf16.gguf" >"$tmp/trunc.gguf"
expect_error "gguf truncated" "runs past the end of the file" "$bin" generate --model "$tmp/trunc.gguf" --tokens 1
: >"$tmp/empty.gguf"
expect_error "gguf empty" "empty file" "$bin" generate --model "$tmp/empty.gguf" --tokens 1
head -c 4096 "$small/model.safetensors" >"$tmp/notgguf.gguf"
expect_error "gguf bad magic" "bad magic" "$bin" generate --model "$tmp/notgguf.gguf" --tokens 1
# A header-only GGUF v3 whose one key says general.architecture = "llama".
printf 'GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x14\0\0\0\0\0\0\0general.architecture\x08\0\0\0\x05\0\0\0\0\0\0\0llama' >"$tmp/llama.gguf"
expect_error "gguf llama" "architecture 'llama' is not supported" "$bin" generate --model "$tmp/llama.gguf" --tokens 1

# The demo model as a pure-Q4_0 GGUF with its vocabulary: tokenize gives the directory's ids,
# and generate --prompt runs through the file's tokenizer.
txt=$'<|user|>\n Hello  world, 世界 🙂<|end|>\n<|assistant|>\n'
expect_ok "tokenize dir" "$bin" tokenize --model "$demo" --text "$txt"
want=$(cat "$tmp/out")
expect_ok "tokenize gguf" "$bin" tokenize --model "$demo/gguf/q4_0.gguf" --text "$txt"
[ "$(cat "$tmp/out")" = "$want" ] || fail "tokenize gguf: got '$(cat "$tmp/out")', the directory gave '$want'"
expect_ok "generate gguf prompt" "$bin" generate --model "$demo/gguf/q4_0.gguf" --prompt "$txt" --max-tokens 3 --ignore-eos
[ "$(head -n1 "$tmp/out" | tr ',' '\n' | wc -l)" -eq 3 ] || fail "generate gguf prompt: '$(head -n1 "$tmp/out")'"
expect_error "tokenize gguf without vocabulary" "no tokenizer" "$bin" tokenize --model "$gg/bf16.gguf" --text hi

# A Phi-3.5-MoE model: the tokens transformers chose (tests/fixtures/models/moe, case len7).
for dev in cpu ref; do
  expect_ok "generate moe $dev" "$bin" generate --model "$fixtures/models/moe" --device $dev \
    --tokens 264,471,440,286,225,274,418 --max-tokens 8 --ignore-eos
  [ "$(head -n1 "$tmp/out")" = "282,10,327,300,147,424,139,202" ] ||
    fail "generate moe $dev: got '$(head -n1 "$tmp/out")', transformers gave 282,10,327,300,147,424,139,202"
done

# A Phi-3-vision model with images from files: the tokens transformers chose for the chat
# prompts of tests/fixtures/models/vision-demo (cases chat_one and chat_two).
vd=$fixtures/models/vision-demo
for dev in cpu ref; do
  expect_ok "generate vision $dev" "$bin" generate --model "$vd" --device $dev --max-tokens 8 \
    --image "$vd/golden/a_40x30.png" --prompt $'<|user|>\n<|image_1|>\nWhat is in this picture?<|end|>\n<|assistant|>\n'
  [ "$(head -n1 "$tmp/out")" = "3539,5344,24515,17560,9746,3797,2880,9755" ] ||
    fail "generate vision $dev: got '$(head -n1 "$tmp/out")', transformers gave 3539,5344,24515,17560,9746,3797,2880,9755"
done
expect_ok "generate vision two images" "$bin" generate --model "$vd" --max-tokens 8 \
  --image "$vd/golden/tall_30x70.png" --image "$vd/golden/strip_224x25.png" \
  --prompt $'<|user|>\n<|image_1|>\n<|image_2|>\nCompare.<|end|>\n<|assistant|>\n'
[ "$(head -n1 "$tmp/out")" = "23682,30765,5749,31694,3341,1440,17540,4461" ] ||
  fail "generate vision two images: got '$(head -n1 "$tmp/out")'"
expect_error "image without its tag" "not referenced" "$bin" generate --model "$vd" \
  --image "$vd/golden/a_40x30.png" --prompt "no tag"
expect_error "image for a text model" "needs a Phi-3-vision model" "$bin" generate \
  --model "$fixtures/models/phi3-demo" \
  --image "$vd/golden/a_40x30.png" --prompt "<|image_1|>"
expect_error "not an image" "PNG and JPEG" "$bin" generate --model "$vd" \
  --image "$vd/config.json" --prompt "<|image_1|>"

# --dump-logits writes [steps, vocab] float32.
expect_ok "dump logits" "$bin" generate --model "$small" --tokens 5,6,7 --max-tokens 3 --ignore-eos \
  --dump-logits "$tmp/logits.f32"
[ "$(stat -c %s "$tmp/logits.f32")" -eq $((3 * 512 * 4)) ] || fail "dump-logits size $(stat -c %s "$tmp/logits.f32")"

# tokenize: the reference ids of reference/phi3-models.md §6.3, and back.
expect_ok "tokenize" "$bin" tokenize --text $'<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n'
[ "$(cat "$tmp/out")" = "1,32010,317,21554,13,17628,32007,32001" ] || fail "tokenize: got $(cat "$tmp/out")"
expect_ok "detokenize" "$bin" tokenize --detokenize 1,15043,3186 --skip-special
[ "$(cat "$tmp/out")" = "Hello world" ] || fail "detokenize: got '$(cat "$tmp/out")'"
expect_ok "generate --prompt" "$bin" generate --prompt "Hello" --max-tokens 3 --ignore-eos
[ "$(wc -l <"$tmp/out")" -eq 2 ] || fail "generate --prompt: expected ids and text lines"

# Usage errors exit 2.
"$bin" generate --max-tokens -1 --tokens 1 >/dev/null 2>&1; [ $? -eq 2 ] && pass || fail "bad --max-tokens not exit 2"
"$bin" frobnicate >/dev/null 2>&1; [ $? -eq 2 ] && pass || fail "unknown command not exit 2"
expect_error "token outside vocab" "outside the vocabulary" "$bin" generate --model "$small" --tokens 5,99999

# Group K: broken model directories.
mk() { rm -rf "$tmp/m"; mkdir -p "$tmp/m"; cp "$small"/config.json "$small"/generation_config.json "$tmp/m/"; }
expect_error "K7 missing dir" "config.json" "$bin" generate --model "$tmp/nope" --tokens 1
mk; rm "$tmp/m/config.json"
expect_error "K7 no config.json" "config.json" "$bin" generate --model "$tmp/m" --tokens 1
mk
expect_error "K7 no weights" "safetensors" "$bin" generate --model "$tmp/m" --tokens 1
mk; mkdir "$tmp/m/model.safetensors"
expect_error "K7 weights is a directory" "model.safetensors" "$bin" generate --model "$tmp/m" --tokens 1
mk; ln -s /dev/zero "$tmp/m/model.safetensors"
expect_error "K7 symlink to /dev/zero" "model.safetensors" "$bin" generate --model "$tmp/m" --tokens 1
size=$(stat -c %s "$small/model.safetensors")
mk; head -c $((size - 1)) "$small/model.safetensors" >"$tmp/m/model.safetensors"
expect_error "K2 truncated by one byte" "model.safetensors" "$bin" generate --model "$tmp/m" --tokens 1
mk; head -c $((size / 2)) "$small/model.safetensors" >"$tmp/m/model.safetensors"
expect_error "K2 truncated by half" "model.safetensors" "$bin" generate --model "$tmp/m" --tokens 1
mk; printf '\xff\xff\xff\xff\xff\xff\xff\x7f{}' >"$tmp/m/model.safetensors"
expect_error "K4 huge header length" "model.safetensors" "$bin" generate --model "$tmp/m" --tokens 1
mk; cp "$small/model.safetensors" "$tmp/m/"; sed -i 's/"hidden_size": 64/"hidden_size": 0/' "$tmp/m/config.json"
grep -q '"hidden_size": 0' "$tmp/m/config.json" || fail "test setup: hidden_size edit did not apply"
expect_error "K3 hidden_size 0" "hidden_size" "$bin" generate --model "$tmp/m" --tokens 1
mk; cp "$small/model.safetensors" "$tmp/m/"; sed -i 's/"num_hidden_layers": 2/"num_hidden_layers": 3/' "$tmp/m/config.json"
expect_error "missing layer tensor" "model.layers.2" "$bin" generate --model "$tmp/m" --tokens 1
mk; cp "$small/model.safetensors" "$tmp/m/"; sed -i 's/"intermediate_size": 128/"intermediate_size": 96/' "$tmp/m/config.json"
expect_error "shape mismatch" "shape" "$bin" generate --model "$tmp/m" --tokens 1
mk; cp "$small/model.safetensors" "$tmp/m/"; printf '{"architectures": ["Phi4MMForCausalLM"], "model_type": "phi4mm"}' >"$tmp/m/config.json"
expect_error "unknown architecture" "architectures|model_type" "$bin" generate --model "$tmp/m" --tokens 1
# A Phi-3-vision checkpoint missing a tower layer its config selects is refused, naming it.
vis=$fixtures/models/vision-demo
rm -rf "$tmp/m"; mkdir -p "$tmp/m"; cp "$vis"/config.json "$vis"/preprocessor_config.json "$vis"/model.safetensors "$tmp/m/"
sed -i 's/"num_hidden_layers": 3/"num_hidden_layers": 5/' "$tmp/m/config.json"
grep -q '"num_hidden_layers": 5' "$tmp/m/config.json" || fail "test setup: num_hidden_layers edit did not apply"
expect_error "vision layer missing" "encoder.layers.3" "$bin" generate --model "$tmp/m" --tokens 1
cp "$vis"/config.json "$tmp/m/"; printf '{"num_crops": 4, "num_img_tokens": 144}' >"$tmp/m/preprocessor_config.json"
expect_error "vision num_img_tokens" "num_img_tokens 144" "$bin" generate --model "$tmp/m" --tokens 1
# A Phi-3.5-MoE checkpoint whose config and tensors disagree is refused, naming the tensor.
moe=$fixtures/models/moe
mkmoe() { rm -rf "$tmp/m"; mkdir -p "$tmp/m"; cp "$moe"/config.json "$moe"/model.safetensors "$tmp/m/"; }
mkmoe; sed -i 's/"num_local_experts": 4/"num_local_experts": 5/' "$tmp/m/config.json"
grep -q '"num_local_experts": 5' "$tmp/m/config.json" || fail "test setup: num_local_experts edit did not apply"
expect_error "moe: more experts than tensors" "block_sparse_moe.gate.weight' has shape \[4, 64\], expected \[5, 64\]" \
  "$bin" generate --model "$tmp/m" --tokens 1
mkmoe; sed -i 's/"intermediate_size": 64/"intermediate_size": 32/' "$tmp/m/config.json"
expect_error "moe: expert shape" "experts.0.w1.weight' has shape" "$bin" generate --model "$tmp/m" --tokens 1
mkmoe; sed -i 's/"model_type": "phimoe"/"model_type": "phi3"/; s/PhimoeForCausalLM/Phi3ForCausalLM/' "$tmp/m/config.json"
expect_error "moe config as phi3" "'attention_bias' = true is not supported by the phi3 model" "$bin" generate --model "$tmp/m" --tokens 1
mkmoe; sed -i 's/"num_experts_per_tok": 2/"num_experts_per_tok": 3/' "$tmp/m/config.json"
expect_error "moe: top-3 routing" "num_experts_per_tok 3" "$bin" generate --model "$tmp/m" --tokens 1
expect_error "tokenize without tokenizer" "tokenizer" "$bin" tokenize --model "$small" --text hi
# A FIFO planted as a tokenizer file must not hang start-up (K7).
rm -rf "$tmp/t"; mkdir -p "$tmp/t"; cp "$demo"/tokenizer.model "$demo"/tokenizer_config.json "$tmp/t/"
mkfifo "$tmp/t/tokenizer.json"
expect_error "K7 tokenizer.json is a FIFO" "tokenizer.json" "$bin" tokenize --model "$tmp/t" --text hi

echo "$n checks, $fails failed"
[ $fails -eq 0 ]
