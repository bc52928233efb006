#!/usr/bin/env python3
# make_fixtures_vision.py: builds tests/fixtures/models/vision-demo, a tiny seeded Phi-3-vision
# (Phi3VForCausalLM, model_type "phi3_v") checkpoint in the real on-disk format, plus the outputs
# of a transformers-based reference for it (image preprocessing, tower, projector, logits, greedy).
# It is a developer tool, not part of the build or of CI (CI has no torch).
#
# Pinned environment (see scripts/requirements-fixtures.txt):
#   python 3.11, torch==2.5.1 (CPU), transformers==4.46.3, safetensors==0.8.0,
#   torchvision==0.20.1, pillow==13.0.0, tokenizers==0.20.3, numpy==2.4.6
#
# Usage: python scripts/make_fixtures_vision.py [--out tests/fixtures/models]
# Needs no network. Deterministic: two runs give byte-identical files with the pinned versions.
#
# The fixture
# -----------
# The remote-code Phi3VForCausalLM is not available offline, so the reference is assembled from
# transformers pieces plus glue written from shared/reference/phi3-models.md 5:
#   - HD transform (5.2): PIL + torchvision exactly as processing_phi3_v.py does it (transpose if
#     taller than wide, torchvision resize on the PIL image, white pad of the height, ToTensor,
#     Normalize, F.interpolate bicubic for the global view, crops row-major);
#   - tower (5.3): transformers CLIPVisionModel (eager), hidden_states[layer_idx = -2], CLS dropped;
#   - HD feature assembly (5.4, "sub_glb"): 2x2 merge, crops stitched into one grid, sub_GN after
#     every row, glb_GN, then the global view (also with sub_GN per row);
#   - projector Linear -> nn.GELU() (erf) -> Linear; embedding merge at the negative ids;
#   - language model: transformers Phi3ForCausalLM called with inputs_embeds (eager).
#
# Generalisation so that the model can be tiny: the crop size is the CLIP image_size (336 on the
# real model), a crop gives T = R*R tokens with R = image_size/patch_size/2 merged rows (real:
# R = 12, T = 144), so an image of h_crop x w_crop crops has (h_crop*w_crop + 1)*T + 1 +
# (h_crop + 1)*R tokens. Here image_size 56, patch 14: a 4x4 patch grid, R = 2, T = 4.
#
# config.json is a Phi-3 text config (vocab 32064 with the real tokenizer, hidden 32, 2 layers,
# 2 heads of 16 (a head size the CUDA attention kernel has), intermediate 64, max pos 4096,
# rope_scaling null, sliding_window null) plus the real model's "embd_layer" and "img_processor"
# objects. img_processor.vision_config is phiserve's extension for tiny models: a real
# Phi-3-vision config has no such object and then means CLIP ViT-L/14-336 (hidden 1024,
# intermediate 4096, 16 heads, 24 layers, image 336, patch 14, eps 1e-5, quick_gelu). Here:
# hidden 32, intermediate 64, 4 heads, 3 layers, image 56, patch 14; with layer_idx -2 the
# features are the output of encoder layer 2 (index 1); encoder layer 3 and post_layernorm are
# in the file but unused. image_dim_out = 32, so the merged features are 128
# wide and the projector is Linear(128 -> 32) -> GELU -> Linear(32 -> 32).
# Deviation from the real model: tie_word_embeddings is true (no lm_head.weight) to keep the file
# small; the real Phi-3-vision has a separate lm_head. The real file also carries
# model.vision_embed_tokens.wte.weight (a copy of model.embed_tokens.weight), left out here for
# size: readers ignore it (the unused encoder layer 3 and post_layernorm show that already).
# Weights are stored as bfloat16 like the other fixtures (make_fixtures.py); every reference
# number is computed in fp32 from exactly the stored values (the reference modules are loaded
# back from the written model.safetensors with strict name/shape checks).
#
# golden/ holds the input PNGs, raw little-endian arrays (*.f32 float32, *.u8 uint8) and
# golden.json (schema: the docstring of write_golden below). Greedy paths have every top-1 minus
# top-2 logit gap >= 1e-3 (seeds are tried in order, as make_fixtures.py does).
# Precision notes for ports: an fp32 re-implementation of everything after the pixels (done in
# check_independent_pipeline) lands ~5e-6 (relative to the row's max |logit|) from the golden
# rows, but changing ONE canvas pixel by one grey level moves them by ~7e-4: the resize must
# reproduce PIL's antialiased bilinear resize byte for byte (compare with canvas_file).
# Size: about 8.6 MB on disk: model.safetensors 2.2 MB (mostly the 32064-row bf16 table),
# golden/ 2.2 MB (mostly 128 KB logit rows), and 4.2 MB of
# tokenizer files that are byte-identical to tests/fixtures/tokenizer/phi3-legacy (same git blobs).

import argparse
import json
import re
import shutil
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets the offline environment, pins, helpers)

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    Phi3Config,
    Phi3ForCausalLM,
)

PINNED_TORCHVISION = "0.20.1"
PINNED_PILLOW = "13.0.0"

VISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + "
    "'<|end|>\\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != "
    "'assistant' %}{{- '<|assistant|>\\n' -}}{% endif %}")
NAME = "vision-demo"
SEED = 8000
SEED_TRIES = mf.SEED_TRIES
IMAGE_SEED = 4242          # images and random prompt text do not depend on the model seed
MAX_NEW_TOKENS = 8
LOGIT_RTOL = 1e-4          # the C golden tests' tolerance (relative to the row's max |logit|)
WRONG_MIN_REL = 100 * LOGIT_RTOL  # a deliberately wrong assembly must move the logits this much

PROJ_GAIN = {"img_projection.0.weight": 0.25, "img_projection.2.weight": 1.0}

SPECIALS = mf.DEMO_SPECIALS
VOCAB = 32064
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
NUM_CROPS = 4
LAYER_IDX = -2

VISION_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                 "num_hidden_layers": 3, "image_size": 56, "patch_size": 14,
                 "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}
CROP = VISION_CONFIG["image_size"]                       # 336 on the real model
GRID = VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]   # patches per side (24)
R = GRID // 2                                            # merged rows per crop (12)
T = R * R                                                # tokens per crop (144)
VD = VISION_CONFIG["hidden_size"]                        # image_dim_out (1024)

TEXT_CONFIG = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                   original_max_position_embeddings=4096, rope_scaling=None, sliding_window=None,
                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                   bos_token_id=SPECIALS["bos"], eos_token_id=SPECIALS["eos"],
                   pad_token_id=SPECIALS["pad"])

EMBD_LAYER = {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
              "use_hd_transform": True, "with_learnable_separator": True}
IMG_PROCESSOR = {"image_dim_out": VD, "model_name": "openai/clip-vit-large-patch14-336",
                 "name": "clip_vision_model", "num_img_tokens": T, "layer_idx": LAYER_IDX,
                 "vision_config": VISION_CONFIG}
PREPROCESSOR = {"num_crops": NUM_CROPS, "num_img_tokens": T, "image_mean": IMAGE_MEAN,
                "image_std": IMAGE_STD, "do_convert_rgb": True,
                "image_processor_type": "Phi3VImageProcessor", "processor_class": "Phi3VProcessor"}

VPRE = "model.vision_embed_tokens."
CLIP_PRE = VPRE + "img_processor."

# Input images (width, height): 2x2 crops; taller than wide (transpose path, 2x1); wide (1x2);
# very wide (1x4, large white padding). For the strip, new_h = int(224 / (224/25)) is 24 in
# double arithmetic (224 / 8.96 = 24.999999999999996), not the exact 25: a port must compute
# ratio and new_h exactly as Python does. Pixels are seeded noise over a colour gradient.
IMAGES = [("a", 40, 30), ("tall", 30, 70), ("wide", 120, 50), ("strip", 224, 25)]

CHAT_ONE = "<|user|>\n<|image_1|>\nWhat is in this picture?<|end|>\n<|assistant|>\n"
CHAT_TWO = "<|user|>\n<|image_1|>\n<|image_2|>\nCompare.<|end|>\n<|assistant|>\n"

# Cases. "ids": a layout of ("bos",), ("text", n random ids), ("image", k); "chat": a prompt.
CASES = [
    {"name": "one_image", "images": ["a"],
     "layout": [("bos",), ("text", 5), ("image", 1), ("text", 4)]},
    {"name": "image_first", "images": ["tall"], "layout": [("image", 1), ("text", 3)]},
    {"name": "image_last", "images": ["wide"], "layout": [("bos",), ("text", 6), ("image", 1)]},
    {"name": "two_images", "images": ["strip", "a"],
     "layout": [("bos",), ("text", 3), ("image", 1), ("text", 2), ("image", 2), ("text", 3)]},
    {"name": "chat_one", "images": ["a"], "prompt": CHAT_ONE},
    {"name": "chat_two", "images": ["tall", "strip"], "prompt": CHAT_TWO},
]

log = mf.log


# ----------------------------------------------------------------------------------------------
# checkpoint


def text_config():
    return Phi3Config(**TEXT_CONFIG)


def vision_config():
    return CLIPVisionConfig(**VISION_CONFIG)


def init_vision(named, seed):
    """Seeded bf16-rounded values for the vision side, given (name, shape) pairs in a fixed
    order. Linear/conv weights ~ N(0, (2/sqrt(fan_in))^2), biases ~ N(0, BIAS_STD^2), LayerNorm
    gains ~ U(0.8, 1.2), class/position embeddings ~ N(0, 0.5^2), glb_GN/sub_GN ~ N(0, 1).
    The projector is scaled down (PROJ_GAIN instead of 2) because the tower's features have an
    rms near 7: this way its GELU sees inputs of order 1 and the image embeddings come out with
    an rms near 1, like the N(0, 1) token embeddings, instead of dominating them 20 to 1."""
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for name, shape in named:
        if name.endswith(".bias"):
            v = mf.BIAS_STD * torch.randn(shape, generator=g)
        elif "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
            v = 0.8 + 0.4 * torch.rand(shape, generator=g)
        elif name.endswith("class_embedding") or "position_embedding" in name:
            v = 0.5 * torch.randn(shape, generator=g)
        elif name.endswith("_GN"):
            v = torch.randn(shape, generator=g)
        else:  # Linear [out, in] or the patch conv [out, 3, p, p]
            fan_in = int(np.prod(shape[1:]))
            gain = next((v for k, v in PROJ_GAIN.items() if name.endswith(k)), 2.0)
            v = torch.randn(shape, generator=g) * (gain / fan_in ** 0.5)
        out[name] = v.to(torch.bfloat16)
    return out


def build_checkpoint(seed, outdir):
    """Writes config.json, preprocessor_config.json, generation_config.json and
    model.safetensors (bf16) for one seed."""
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    lm = Phi3ForCausalLM._from_config(text_config(), attn_implementation="eager",
                                      torch_dtype=torch.float32)
    mf.init_weights(lm, seed)  # the text rules of make_fixtures.py (tied: no lm_head row scaling)
    tensors = {k: v.to(torch.bfloat16).contiguous().clone()
               for k, v in lm.state_dict().items() if k != "lm_head.weight"}
    clip = CLIPVisionModel._from_config(vision_config(), attn_implementation="eager",
                                        torch_dtype=torch.float32)
    named = [(CLIP_PRE + k, tuple(v.shape)) for k, v in sorted(clip.state_dict().items())]
    named += [(VPRE + "glb_GN", (1, 1, 4 * VD)), (VPRE + "sub_GN", (1, 1, 1, 4 * VD)),
              (VPRE + "img_projection.0.weight", (TEXT_CONFIG["hidden_size"], 4 * VD)),
              (VPRE + "img_projection.0.bias", (TEXT_CONFIG["hidden_size"],)),
              (VPRE + "img_projection.2.weight", (TEXT_CONFIG["hidden_size"],) * 2),
              (VPRE + "img_projection.2.bias", (TEXT_CONFIG["hidden_size"],))]
    tensors.update(init_vision(named, seed))
    path = outdir / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    path.chmod(0o644)

    cfg = text_config().to_diff_dict()
    cfg["architectures"] = ["Phi3VForCausalLM"]
    cfg["model_type"] = "phi3_v"
    cfg["torch_dtype"] = "bfloat16"
    cfg["embd_layer"] = EMBD_LAYER
    cfg["img_processor"] = IMG_PROCESSOR
    write_json(outdir / "config.json", dict(sorted(cfg.items())), indent=2)
    write_json(outdir / "preprocessor_config.json", PREPROCESSOR, indent=2)
    write_json(outdir / "generation_config.json",
               {"bos_token_id": SPECIALS["bos"], "eos_token_id": list(SPECIALS["stop"]),
                "pad_token_id": SPECIALS["pad"], "transformers_version": transformers.__version__},
               indent=2)


def write_json(path, obj, indent=1):
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


class Reference:
    """The fp32 reference model, loaded back from a written directory. Every tensor of the file
    must be consumed by a strict load_state_dict (names and shapes as the real checkpoint)."""

    def __init__(self, d):
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["model_type"] == "phi3_v" and cfg["img_processor"]["layer_idx"] == LAYER_IDX
        sd = {k: v.float() for k, v in load_file(str(d / "model.safetensors")).items()}
        assert "lm_head.weight" not in sd
        text = {k: v for k, v in sd.items() if not k.startswith(VPRE)}
        text["lm_head.weight"] = text["model.embed_tokens.weight"]
        self.lm = Phi3ForCausalLM._from_config(text_config(), attn_implementation="eager",
                                               torch_dtype=torch.float32)
        self.lm.load_state_dict(text, strict=True)
        assert self.lm.lm_head.weight.data_ptr() == self.lm.model.embed_tokens.weight.data_ptr()
        self.lm.eval()
        self.clip = CLIPVisionModel._from_config(vision_config(), attn_implementation="eager",
                                                 torch_dtype=torch.float32)
        self.clip.load_state_dict({k[len(CLIP_PRE):]: v for k, v in sd.items()
                                   if k.startswith(CLIP_PRE)}, strict=True)
        self.clip.eval()
        h = TEXT_CONFIG["hidden_size"]
        self.proj = torch.nn.Sequential(torch.nn.Linear(4 * VD, h), torch.nn.GELU(),
                                        torch.nn.Linear(h, h))
        self.proj.load_state_dict({k[len(VPRE + "img_projection."):]: v for k, v in sd.items()
                                   if k.startswith(VPRE + "img_projection.")}, strict=True)
        self.proj.eval()
        self.glb_gn = sd[VPRE + "glb_GN"]  # [1, 1, 4*VD]
        self.sub_gn = sd[VPRE + "sub_GN"]  # [1, 1, 1, 4*VD]
        used = {k for k in sd if not k.startswith(VPRE)} | {k for k in sd if k.startswith(CLIP_PRE)}
        used |= {k for k in sd if k.startswith(VPRE + "img_projection.")}
        used |= {VPRE + "glb_GN", VPRE + "sub_GN"}
        assert used == set(sd), set(sd) - used
        self.sd = sd


# ----------------------------------------------------------------------------------------------
# images and the HD transform (phi3-models.md 5.2)


def make_images(gdir):
    """Writes the seeded input PNGs; returns {key: file name}."""
    g = np.random.default_rng(IMAGE_SEED)
    files = {}
    for key, w, h in IMAGES:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([255.0 * x / max(w - 1, 1), 255.0 * y / max(h - 1, 1),
                         127.5 + 100.0 * np.sin((x + 2 * y) / 5.0)], axis=-1)
        px = np.clip(base * 0.6 + g.integers(0, 256, size=(h, w, 3)) * 0.4, 0, 255).astype(np.uint8)
        name = f"{key}_{w}x{h}.png"
        Image.fromarray(px, "RGB").save(gdir / name, optimize=False)
        files[key] = name
    return files


def hd_transform(img, hd_num, int_new_h=False):
    """processing_phi3_v.py HD_transform + padding_336 with 336 -> CROP. Returns the padded PIL
    canvas and the facts the golden records. int_new_h (a deliberate mistake): new_h in exact
    integer arithmetic instead of int(new_w / ratio) in doubles."""
    width, height = img.size
    transposed = width < height
    if transposed:
        img = img.transpose(Image.TRANSPOSE)
        width, height = img.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * CROP)
    new_h = new_w * height // width if int_new_h else int(new_w / ratio)
    img = TF.resize(img, [new_h, new_w])
    tar = int(np.ceil(new_h / CROP) * CROP)
    top = int((tar - new_h) / 2)
    bottom = tar - new_h - top
    img = TF.pad(img, [0, top, 0, bottom], fill=[255, 255, 255])
    if transposed:
        img = img.transpose(Image.TRANSPOSE)
    info = {"transposed": transposed, "scale": scale, "resize_hw": [new_h, new_w],
            "pad_top": top, "pad_bottom": bottom}
    return img, info


def preprocess(img, int_new_h=False):
    """Phi3VImageProcessor.preprocess for one image: returns (views [1 + h_crop*w_crop, 3, CROP,
    CROP] float32 with the global view first, canvas uint8 [H, W, 3], info)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    canvas, info = hd_transform(img, NUM_CROPS, int_new_h)
    norm = torchvision.transforms.Compose([torchvision.transforms.ToTensor(),
                                           torchvision.transforms.Normalize(IMAGE_MEAN, IMAGE_STD)])
    hd = norm(canvas)  # [3, H, W]
    h, w = hd.shape[1], hd.shape[2]
    assert h % CROP == 0 and w % CROP == 0
    hc, wc = h // CROP, w // CROP
    assert hc * wc <= NUM_CROPS
    glob = torch.nn.functional.interpolate(hd.unsqueeze(0).float(), size=(CROP, CROP),
                                           mode="bicubic").to(hd.dtype)
    crops = hd.reshape(1, 3, hc, CROP, wc, CROP).permute(0, 2, 4, 1, 3, 5)
    crops = crops.reshape(-1, 3, CROP, CROP)
    views = torch.cat([glob, crops], dim=0).contiguous()
    info.update({"canvas_height": h, "canvas_width": w, "h_crop": hc, "w_crop": wc})
    return views, np.asarray(canvas, dtype=np.uint8).copy(), hd, info


def token_count(hc, wc):
    return (hc * wc + 1) * T + 1 + (hc + 1) * R


# ----------------------------------------------------------------------------------------------
# tower, HD feature assembly (5.3, 5.4), embedding merge


def clip_hidden(ref, views, layer_idx=LAYER_IDX):
    with torch.no_grad():
        out = ref.clip(pixel_values=views, output_hidden_states=True)
    return out.hidden_states[layer_idx]  # [n_views, 1 + GRID*GRID, VD]


def merge_2x2(f, swap=False):
    """[N, GRID*GRID, C] patch features -> [N, R, R, 4C]; merged cell (r, c) is
    concat(f[2r][2c], f[2r][2c+1], f[2r+1][2c], f[2r+1][2c+1]) (swap: dy and dx exchanged)."""
    n, _, c = f.shape
    x = f.reshape(n, R, 2, R, 2, c)
    x = x.permute(0, 1, 3, 4, 2, 5) if swap else x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, R, R, 4 * c)


def assemble(ref, hidden, hc, wc, variant=None):
    """hd_feature_transform for one image, order sub_glb. hidden: [1 + hc*wc, 1 + GRID^2, VD]
    (global view first). Returns [n_tokens, 4*VD]. variant names a deliberate mistake."""
    patches = hidden[:, :-1] if variant == "keep_cls" else hidden[:, 1:]
    merged = merge_2x2(patches, swap=variant == "swap_dy_dx")  # [1 + hc*wc, R, R, 4VD]
    sub_gn = torch.zeros_like(ref.sub_gn) if variant == "zero_sub_gn" else ref.sub_gn
    crops = merged[1:].reshape(hc, wc, R, R, 4 * VD)
    if variant == "crops_col_major":
        crops = merged[1:].reshape(wc, hc, R, R, 4 * VD).transpose(0, 1)
    grid = crops.permute(0, 2, 1, 3, 4).reshape(hc * R, wc * R, 4 * VD)
    sub = torch.cat([grid, sub_gn[0].expand(hc * R, 1, 4 * VD)], dim=1).reshape(-1, 4 * VD)
    glb = torch.cat([merged[0], sub_gn[0].expand(R, 1, 4 * VD)], dim=1).reshape(-1, 4 * VD)
    parts = [sub, ref.glb_gn[0], glb]
    if variant == "glb_sub":
        parts = [glb, ref.glb_gn[0], sub]
    return torch.cat(parts, dim=0)


def assemble_by_index(ref, hidden, hc, wc):
    """The same assembly written as explicit index arithmetic (a check on assemble())."""
    f = hidden[:, 1:].reshape(-1, GRID, GRID, VD)
    rows = []
    for gy in range(hc * R):
        cy, r = divmod(gy, R)
        for gx in range(wc * R):
            cx, c = divmod(gx, R)
            k = 1 + cy * wc + cx
            rows.append(torch.cat([f[k, 2 * r, 2 * c], f[k, 2 * r, 2 * c + 1],
                                   f[k, 2 * r + 1, 2 * c], f[k, 2 * r + 1, 2 * c + 1]]))
        rows.append(ref.sub_gn.reshape(-1))
    rows.append(ref.glb_gn.reshape(-1))
    for r in range(R):
        for c in range(R):
            rows.append(torch.cat([f[0, 2 * r, 2 * c], f[0, 2 * r, 2 * c + 1],
                                   f[0, 2 * r + 1, 2 * c], f[0, 2 * r + 1, 2 * c + 1]]))
        rows.append(ref.sub_gn.reshape(-1))
    return torch.stack(rows)


def image_features(ref, views, hc, wc, variant=None):
    """Returns (clip hidden [n_views, 1+GRID^2, VD], features [n, 4VD], projected [n, H])."""
    hidden = clip_hidden(ref, views, -1 if variant == "layer_last" else LAYER_IDX)
    feats = assemble(ref, hidden, hc, wc, variant)
    with torch.no_grad():
        if variant == "gelu_tanh":
            p = ref.proj
            emb = p[2](torch.nn.functional.gelu(p[0](feats), approximate="tanh"))
        else:
            emb = ref.proj(feats)
    return hidden, feats, emb


def merge_embeddings(ref, ids, feats):
    """Phi3ImageEmbedding.forward: positions with -1e9 < id < 0 take the concatenated image
    features in order; the rest look up the (clamped) token ids."""
    ids = torch.tensor(ids)
    slots = (ids < 0) & (ids > -1000000000)
    emb = ref.lm.model.embed_tokens.weight[ids.clamp(0, VOCAB - 1)].detach().clone()
    allf = torch.cat(feats, dim=0)
    assert int(slots.sum()) == allf.shape[0], (int(slots.sum()), allf.shape)
    emb[slots] = allf
    return emb


def forward_embeds(ref, emb):
    with torch.no_grad():
        return ref.lm(inputs_embeds=emb[None], use_cache=False).logits[0].float()


def greedy(ref, emb, n_new):
    """Greedy with the KV cache (image features only in the prompt); also re-runs the full
    sequence without a cache each step and checks the same tokens come out. Returns (tokens,
    margins, max |cached - uncached| logit difference)."""
    toks, margins, worst = [], [], 0.0
    embed = ref.lm.model.embed_tokens.weight
    with torch.no_grad():
        res = ref.lm(inputs_embeds=emb[None], use_cache=True)
        for step in range(n_new):
            row = res.logits[0, -1].float()
            top2 = torch.topk(row, 2)
            t = int(top2.indices[0])
            toks.append(t)
            margins.append(float(top2.values[0] - top2.values[1]))
            full = torch.cat([emb, embed[torch.tensor(toks[:-1], dtype=torch.long)]], dim=0)
            nc = ref.lm(inputs_embeds=full[None], use_cache=False).logits[0, -1].float()
            worst = max(worst, float((nc - row).abs().max()))
            if int(torch.argmax(nc)) != t:
                raise RuntimeError("cached and uncached greedy differ")
            if step + 1 < n_new:
                res = ref.lm(input_ids=torch.tensor([[t]]), past_key_values=res.past_key_values,
                             use_cache=True)
    return toks, margins, worst


# ----------------------------------------------------------------------------------------------
# prompts


def chat_ids(tok, prompt, n_tokens):
    """processing_phi3_v.py _convert_images_texts_to_inputs: split at <|image_k|>, tokenize each
    chunk with the tokenizer's default special-token handling, interleave [-k] * n_tokens[k-1]."""
    pattern = r"<\|image_\d+\|>"
    texts = re.split(pattern, prompt)
    chunks = [tok(t).input_ids for t in texts]
    tags = [int(s.split("|")[1].split("_")[-1]) for s in re.findall(pattern, prompt)]
    assert sorted(set(tags)) == list(range(1, len(n_tokens) + 1))
    pads = [[-k] * n_tokens[k - 1] for k in tags]
    if len(chunks) > len(pads):
        pads.append([])
    ids = []
    for c, p in zip(chunks, pads):
        ids.extend(c)
        ids.extend(p)
    return ids, [{"text": t, "ids": c} for t, c in zip(texts, chunks)]


def layout_ids(layout, n_tokens, case_idx):
    g = torch.Generator().manual_seed(IMAGE_SEED * 1000 + 17 * case_idx)
    ids = []
    for part in layout:
        if part[0] == "bos":
            ids.append(SPECIALS["bos"])
        elif part[0] == "text":
            ids += torch.randint(SPECIALS["prompt_lo"], SPECIALS["prompt_hi"], (part[1],),
                                 generator=g).tolist()
        else:
            ids += [-part[1]] * n_tokens[part[1] - 1]
    return ids


def logit_rows_for(ids):
    """A row inside the first image span, the first row of every later span, and the last row."""
    spans = []
    for i, t in enumerate(ids):
        if t < 0 and (i == 0 or ids[i - 1] != t):
            spans.append(i)
    first_end = spans[0]
    while first_end + 1 < len(ids) and ids[first_end + 1] == ids[spans[0]]:
        first_end += 1
    rows = {(spans[0] + first_end) // 2, len(ids) - 1} | set(spans[1:])
    return sorted(rows)


# ----------------------------------------------------------------------------------------------
# independent checks


def clip_by_hand(ref, view, n_layers):
    """CLIP ViT forward of phi3-models.md 5.3 for one view [3, CROP, CROP], written without the
    transformers modules: patch conv as a matmul over 14x14 patches (no bias), CLS + positions,
    pre_layrnorm, n_layers pre-LN layers (q/k/v/out with bias, scale hd^-0.5, quick_gelu MLP).
    Returns [1 + GRID^2, VD]."""
    sd = {k[len(CLIP_PRE + "vision_model."):]: v for k, v in ref.sd.items()
          if k.startswith(CLIP_PRE + "vision_model.")}
    p = VISION_CONFIG["patch_size"]
    eps = VISION_CONFIG["layer_norm_eps"]
    nh = VISION_CONFIG["num_attention_heads"]
    hd = VD // nh
    patches = view.reshape(3, GRID, p, GRID, p).permute(1, 3, 0, 2, 4).reshape(GRID * GRID, -1)
    x = patches @ sd["embeddings.patch_embedding.weight"].reshape(VD, -1).T
    x = torch.cat([sd["embeddings.class_embedding"][None], x])
    x = x + sd["embeddings.position_embedding.weight"]

    def ln(x, pre):
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * sd[pre + ".weight"] + sd[pre + ".bias"]

    def lin(x, pre):
        return x @ sd[pre + ".weight"].T + sd[pre + ".bias"]

    x = ln(x, "pre_layrnorm")
    n = x.shape[0]
    for i in range(n_layers):
        pre = f"encoder.layers.{i}."
        h = ln(x, pre + "layer_norm1")
        q = lin(h, pre + "self_attn.q_proj").view(n, nh, hd).transpose(0, 1)
        k = lin(h, pre + "self_attn.k_proj").view(n, nh, hd).transpose(0, 1)
        v = lin(h, pre + "self_attn.v_proj").view(n, nh, hd).transpose(0, 1)
        a = torch.softmax((q @ k.transpose(1, 2)) * hd ** -0.5, dim=-1) @ v
        x = x + lin(a.transpose(0, 1).reshape(n, VD), pre + "self_attn.out_proj")
        h = lin(ln(x, pre + "layer_norm2"), pre + "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), pre + "mlp.fc2")
    return x


def bicubic_by_hand(img, out):
    """F.interpolate(mode='bicubic', align_corners=False, no antialias) written out in float64:
    src = (dst + 0.5) * in/out - 0.5, Keys cubic with A = -0.75, taps clamped to the edge."""
    a = -0.75

    def weights(t):
        def near(x):  # |x| <= 1
            return ((a + 2) * x - (a + 3)) * x * x + 1

        def far(x):  # 1 < |x| < 2
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return [far(t + 1), near(t), near(1 - t), far(2 - t)]

    def axis(n_in):
        m = np.zeros((out, n_in))
        for d in range(out):
            s = (d + 0.5) * n_in / out - 0.5
            i0 = int(np.floor(s))
            for j, w in enumerate(weights(s - i0)):
                m[d, min(max(i0 - 1 + j, 0), n_in - 1)] += w
        return m

    x = img.double().numpy()  # [3, H, W]
    my, mx = axis(x.shape[1]), axis(x.shape[2])
    return torch.from_numpy(np.einsum("yh,chw,xw->cyx", my, x, mx))


def check_image_pipeline(ref, key, pil, views, hd, canvas, info, hidden, feats):
    """Independent checks of one image's preprocessing, tower and assembly."""
    # torchvision's PIL resize is PIL's bilinear (antialiased) resize.
    work = pil.transpose(Image.TRANSPOSE) if info["transposed"] else pil
    nh, nw = info["resize_hw"]
    direct = np.asarray(work.resize((nw, nh), Image.BILINEAR))
    c = canvas.transpose(1, 0, 2) if info["transposed"] else canvas
    assert np.array_equal(c[info["pad_top"]:info["pad_top"] + nh], direct), key
    assert (c[:info["pad_top"]] == 255).all() and (c[info["pad_top"] + nh:] == 255).all(), key
    # Crops are the normalized canvas; the global view is a bicubic resample of it.
    want = (torch.from_numpy(canvas).permute(2, 0, 1).float() / 255.0
            - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]
    assert float((want - hd).abs().max()) < 1e-6, key
    hc, wc = info["h_crop"], info["w_crop"]
    for k in range(hc * wc):
        cy, cx = divmod(k, wc)
        crop = hd[:, cy * CROP:(cy + 1) * CROP, cx * CROP:(cx + 1) * CROP]
        assert torch.equal(views[1 + k], crop), (key, k)
    bic = float((bicubic_by_hand(hd, CROP) - views[0].double()).abs().max())
    assert bic < 1e-5, (key, bic)
    # Feature count, the index-arithmetic assembly, and the tower's layer selection.
    assert feats.shape[0] == token_count(hc, wc), key
    assert torch.equal(assemble_by_index(ref, hidden, hc, wc), feats), key
    return bic


def check_layer_index(ref, views):
    """hidden_states[-2] of a 3-layer tower must be encoder layer 2's output: recompute one crop
    by hand with 2 and with 3 layers."""
    v = views[-1]
    hs = clip_hidden(ref, v[None], LAYER_IDX)[0]
    last = clip_hidden(ref, v[None], -1)[0]
    two = clip_by_hand(ref, v, VISION_CONFIG["num_hidden_layers"] - 1)
    three = clip_by_hand(ref, v, VISION_CONFIG["num_hidden_layers"])
    d2 = float((hs - two).abs().max())
    d3 = float((last - three).abs().max())
    apart = float((two - three).abs().max())
    assert d2 < 1e-4 and d3 < 1e-4 and apart > 1e-1, (d2, d3, apart)
    return d2, apart


def spec_text_forward(ref, emb):
    """make_fixtures.spec_forward (the Phi-3 forward written from the reference doc) over input
    embeddings: a stand-in model whose embedding table is the prompt's rows (ids 0..n-1) and
    whose lm_head is the real tied table. Returns [n, V]."""
    sd = dict(ref.lm.state_dict())
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    sd["model.embed_tokens.weight"] = emb
    fake = types.SimpleNamespace(config=ref.lm.config, state_dict=lambda: sd)
    with torch.no_grad():
        return mf.spec_forward(fake, torch.arange(emb.shape[0]))


def check_text_forward(ref, results):
    """The stored logits against spec_text_forward on the same merged embeddings."""
    worst = max(float((spec_text_forward(ref, r["emb"]) - r["logits"]).abs().max())
                for r in results)
    assert worst < 1e-3, f"written-down forward disagrees with transformers by {worst}"
    return worst


def check_independent_pipeline(ref, imgs, results):
    """Everything after the pixels without transformers or torch.nn modules: tower by hand,
    assembly by index arithmetic, projector with an explicit erf GELU, merge by hand, text
    forward by spec_text_forward. An fp32 port with another summation order lands about this
    far from the golden; it must stay well inside the C tests' LOGIT_RTOL."""
    sd = ref.sd
    pj = VPRE + "img_projection."
    emb = {}
    for key, im in imgs.items():
        hid = torch.stack([clip_by_hand(ref, x, VISION_CONFIG["num_hidden_layers"] + 1 + LAYER_IDX)
                           for x in im["views"]])
        h = assemble_by_index(ref, hid, im["info"]["h_crop"], im["info"]["w_crop"])
        h = h @ sd[pj + "0.weight"].T + sd[pj + "0.bias"]
        h = 0.5 * h * (1 + torch.erf(h / 2 ** 0.5))
        emb[key] = h @ sd[pj + "2.weight"].T + sd[pj + "2.bias"]
    worst = 0.0
    for r in results:
        e = sd["model.embed_tokens.weight"][[max(t, 0) for t in r["ids"]]].clone()
        slots = [i for i, t in enumerate(r["ids"]) if t < 0]
        e[slots] = torch.cat([emb[k] for k in r["case"]["images"]])
        lg = spec_text_forward(ref, e)[r["rows"]]
        base = r["logits"][r["rows"]]
        rel = (lg - base).abs().max(dim=-1).values / base.abs().max(dim=-1).values
        worst = max(worst, float(rel.max()))
    assert worst < LOGIT_RTOL / 10, f"independent pipeline differs by {worst:.2e} (relative)"
    return worst


# ----------------------------------------------------------------------------------------------
# one seed


def evaluate(d, gdir, files, tok):
    ref = Reference(d)
    imgs = {}
    checks = {"bicubic_max_diff": 0.0}
    for key, _, _ in IMAGES:
        pil = Image.open(gdir / files[key])
        pil.load()
        views, canvas, hd, info = preprocess(pil)
        hidden, feats, emb = image_features(ref, views, info["h_crop"], info["w_crop"])
        bic = check_image_pipeline(ref, key, pil, views, hd, canvas, info, hidden, feats)
        checks["bicubic_max_diff"] = max(checks["bicubic_max_diff"], bic)
        imgs[key] = {"pil": pil, "views": views, "hd": hd, "canvas": canvas, "info": info,
                     "hidden": hidden, "feats": feats, "emb": emb, "n_tokens": feats.shape[0]}
    checks["layer_idx"] = check_layer_index(ref, imgs["a"]["views"])
    results = []
    for idx, c in enumerate(CASES):
        n_tok = [imgs[k]["n_tokens"] for k in c["images"]]
        r = {"case": c}
        if "prompt" in c:
            r["ids"], r["chunks"] = chat_ids(tok, c["prompt"], n_tok)
        else:
            r["ids"] = layout_ids(c["layout"], n_tok, idx)
        for k, n in enumerate(n_tok, start=1):
            assert r["ids"].count(-k) == n
        emb = merge_embeddings(ref, r["ids"], [imgs[k]["emb"] for k in c["images"]])
        r["emb"] = emb
        r["logits"] = forward_embeds(ref, emb)
        r["rows"] = logit_rows_for(r["ids"])
        r["greedy"], r["margins"], r["cache_diff"] = greedy(ref, emb, MAX_NEW_TOKENS)
        results.append(r)
    return ref, imgs, results, checks


def wrong_variants(ref, imgs, results):
    """Each deliberate assembly/tower mistake must move the stored logit rows by more than
    WRONG_MIN_REL of the row's max |logit| in some case (gelu_tanh is only reported)."""
    variants = ["swap_dy_dx", "zero_sub_gn", "crops_col_major", "glb_sub", "keep_cls",
                "layer_last", "global_bilinear", "int_new_h", "gelu_tanh"]
    report = {}
    for v in variants:
        worst = 0.0
        for r in results:
            feats = []
            for k in r["case"]["images"]:
                im = imgs[k]
                views = im["views"]
                if v == "global_bilinear":
                    views = views.clone()
                    views[0] = torch.nn.functional.interpolate(im["hd"][None], size=(CROP, CROP),
                                                               mode="bilinear")[0]
                if v == "int_new_h":
                    views = preprocess(im["pil"], int_new_h=True)[0]
                feats.append(image_features(ref, views, im["info"]["h_crop"],
                                            im["info"]["w_crop"], v)[2])
            lg = forward_embeds(ref, merge_embeddings(ref, r["ids"], feats))[r["rows"]]
            base = r["logits"][r["rows"]]
            rel = (lg - base).abs().max(dim=-1).values / base.abs().max(dim=-1).values
            worst = max(worst, float(rel.max()))
        report[v] = worst
        if v != "gelu_tanh" and worst < WRONG_MIN_REL:
            raise RuntimeError(f"wrong variant {v} moves the logits by only {worst:.2e} (relative)")
    return report


# ----------------------------------------------------------------------------------------------
# output


def stats(views):
    v = views.double()
    return {"view_sums": [[round(float(x), 6) for x in row] for row in v.sum(dim=(2, 3))],
            "view_sq_sums": [round(float(x), 6) for x in (v * v).sum(dim=(1, 2, 3))]}


def write_golden(d, seed, files, imgs, results, tok):
    """Writes golden/golden.json and its arrays. Arrays are raw little-endian, C order, no
    header: *.f32 float32, *.u8 uint8. golden.json:
      top level: model, arch ("phi3_v"), vocab_size, hidden_size, dtype ("float32": every
        number is an fp32 reference), seed, generator, transformers/torch/torchvision/pillow
        versions, attn_implementation, stop_token_ids, num_crops, crop_size (S), patch_size,
        rows_per_crop (R), tokens_per_crop (T), layer_idx, image_dim_out (VD), image_mean,
        image_std, images (list), cases (list).
      images[i]: key, file (PNG in golden/), width, height (of the PNG), transposed (taller than
        wide), scale, resize_hw ([new_h, new_w] of the resize, in the transposed frame when
        transposed), pad_top, pad_bottom (white rows added in that frame), canvas_height,
        canvas_width (padded canvas, original orientation), h_crop, w_crop, n_views
        (1 + h_crop*w_crop), n_tokens ((h_crop*w_crop + 1)*T + 1 + (h_crop + 1)*R),
        canvas_file (u8 [canvas_height, canvas_width, 3] RGB after resize + pad + transpose back),
        global_view_file (f32 [3, S, S] normalized bicubic global view),
        clip_file (f32 [n_views, 1 + (S/patch)^2, VD] CLIP hidden_states[layer_idx] incl. CLS,
        view 0 = global, then the crops row-major), features_file (f32 [n_tokens, 4*VD]
        assembled HD features before the projector), embeds_file (f32 [n_tokens, hidden_size]
        projected image embeddings), view_sums ([n_views][3] per-channel sums of the normalized
        views, float64), view_sq_sums ([n_views] sums of squares).
      cases[j]: name, kind ("ids" or "chat"), images (PNG file names, image k = entry k-1),
        image_tokens (n_tokens per image), input_ids (HF convention: image k's span is
        n_tokens_k copies of -k), logits_file (f32 [len(logit_rows), vocab_size]), logit_rows
        (prompt rows stored), greedy (MAX_NEW_TOKENS greedy ids after the prompt), max_new_tokens,
        greedy_margins (top-1 minus top-2 logit per step), min_margin, first_stop_index (first
        greedy index whose id is a stop id, or null); chat cases also: prompt (the text),
        tokenizer_adds_bos, chunks ([{text, ids}] the text split at <|image_k|>, each tokenized
        on its own with default special-token handling)."""
    gdir = d / "golden"
    images = []
    for key, w, h in IMAGES:
        im = imgs[key]
        info = im["info"]
        stem = f"{key}_{w}x{h}"
        im["canvas"].tofile(gdir / f"{stem}.canvas.u8")
        mf.write_f32(gdir / f"{stem}.global.f32", im["views"][0])
        mf.write_f32(gdir / f"{stem}.clip.f32", im["hidden"])
        mf.write_f32(gdir / f"{stem}.features.f32", im["feats"])
        mf.write_f32(gdir / f"{stem}.embeds.f32", im["emb"])
        e = {"key": key, "file": files[key], "width": w, "height": h,
             "transposed": info["transposed"], "scale": info["scale"],
             "resize_hw": info["resize_hw"], "pad_top": info["pad_top"],
             "pad_bottom": info["pad_bottom"], "canvas_height": info["canvas_height"],
             "canvas_width": info["canvas_width"], "h_crop": info["h_crop"],
             "w_crop": info["w_crop"], "n_views": int(im["views"].shape[0]),
             "n_tokens": im["n_tokens"], "canvas_file": f"{stem}.canvas.u8",
             "global_view_file": f"{stem}.global.f32", "clip_file": f"{stem}.clip.f32",
             "features_file": f"{stem}.features.f32", "embeds_file": f"{stem}.embeds.f32"}
        e.update(stats(im["views"]))
        images.append(e)
    stop = set(SPECIALS["stop"])
    cases = []
    for r in results:
        c = r["case"]
        name = c["name"]
        mf.write_f32(gdir / f"{name}.f32", r["logits"][r["rows"]])
        g = {"name": name, "kind": "chat" if "prompt" in c else "ids",
             "images": [files[k] for k in c["images"]],
             "image_tokens": [imgs[k]["n_tokens"] for k in c["images"]],
             "input_ids": r["ids"], "logits_file": f"{name}.f32", "logit_rows": r["rows"],
             "greedy": r["greedy"], "max_new_tokens": MAX_NEW_TOKENS,
             "greedy_margins": [round(m, 6) for m in r["margins"]],
             "min_margin": round(min(r["margins"]), 6),
             "first_stop_index": next((i for i, t in enumerate(r["greedy"]) if t in stop), None)}
        if "prompt" in c:
            adds = all(ch["ids"][:1] == [SPECIALS["bos"]] for ch in r["chunks"])
            assert adds == bool(tok.add_bos_token)
            g["prompt"] = c["prompt"]
            g["tokenizer_adds_bos"] = adds
            g["chunks"] = r["chunks"]
        cases.append(g)
    doc = {
        "model": NAME, "arch": "phi3_v", "vocab_size": VOCAB,
        "hidden_size": TEXT_CONFIG["hidden_size"], "dtype": "float32", "seed": seed,
        "generator": "scripts/make_fixtures_vision.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "torchvision_version": torchvision.__version__.split("+")[0],
        "pillow_version": PIL.__version__, "attn_implementation": "eager",
        "stop_token_ids": SPECIALS["stop"], "num_crops": NUM_CROPS, "crop_size": CROP,
        "patch_size": VISION_CONFIG["patch_size"], "rows_per_crop": R, "tokens_per_crop": T,
        "layer_idx": LAYER_IDX, "image_dim_out": VD, "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD, "images": images, "cases": cases,
    }
    write_json(gdir / "golden.json", doc)


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="Generate the vision-demo golden fixture.")
    ap.add_argument("--out", default=str(mf.REPO_ROOT / "tests" / "fixtures" / "models"))
    args = ap.parse_args()
    pins = [(transformers.__version__, mf.PINNED_TRANSFORMERS),
            (torch.__version__, mf.PINNED_TORCH),
            (torchvision.__version__, PINNED_TORCHVISION), (PIL.__version__, PINNED_PILLOW)]
    for have, want in pins:
        if not have.startswith(want):
            log(f"WARNING: pinned {want}, running {have}")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = Path(args.out)
    final = out / NAME
    stage = out / f".stage-{NAME}"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "golden").mkdir(parents=True)
    if not mf.copy_tokenizer(stage):
        raise RuntimeError(f"no tokenizer files in {mf.TOKENIZER_SRC}")
    # Phi-3-vision's own chat template (reference/phi3-models.md 5.5: no bos_token, the role
    # tag from the role name), so that a rendered one-image chat is exactly the chat cases'
    # prompt text.
    tc_path = stage / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = VISION_CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    tok = AutoTokenizer.from_pretrained(str(stage))
    files = make_images(stage / "golden")

    log(f"[{NAME}]")
    best = None
    for seed in range(SEED, SEED + SEED_TRIES):
        build_checkpoint(seed, stage)
        ref, imgs, results, checks = evaluate(stage, stage / "golden", files, tok)
        mm = min(min(r["margins"]) for r in results)
        log(f"  seed {seed}: min greedy margin {mm:.5f}")
        if best is None or mm > best[1]:
            best = (seed, mm)
        if mm >= mf.WANT_MIN_MARGIN:
            break
    if best[1] < mf.HARD_MIN_MARGIN:
        raise RuntimeError(f"no seed gives a greedy margin >= {mf.HARD_MIN_MARGIN}")
    if best[0] != seed:  # the last seed tried is not the best one: rebuild the best
        seed, mm = best
        build_checkpoint(seed, stage)
        ref, imgs, results, checks = evaluate(stage, stage / "golden", files, tok)
    wrong = wrong_variants(ref, imgs, results)
    checks["text_forward"] = check_text_forward(ref, results)
    checks["independent"] = check_independent_pipeline(ref, imgs, results)
    write_golden(stage, seed, files, imgs, results, tok)

    # Reload check: a fresh reference from the written files reproduces the first case.
    ref2 = Reference(stage)
    r0 = results[0]
    feats = []
    for k in r0["case"]["images"]:
        views, _, _, info = preprocess(Image.open(stage / "golden" / files[k]))
        feats.append(image_features(ref2, views, info["h_crop"], info["w_crop"])[2])
    lg = forward_embeds(ref2, merge_embeddings(ref2, r0["ids"], feats))[r0["rows"]].numpy()
    saved = np.fromfile(stage / "golden" / f"{r0['case']['name']}.f32", dtype="<f4")
    assert np.array_equal(lg.reshape(-1), saved), "reloaded logits differ"

    shutil.rmtree(final, ignore_errors=True)
    stage.rename(final)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    log("[summary]")
    log(f"  seed {seed}, min greedy margin {mm:.5f}, max |prompt logit| "
        f"{max(float(r['logits'].abs().max()) for r in results):.2f}, cached vs uncached greedy "
        f"logits max |diff| {max(r['cache_diff'] for r in results):.2e}")
    log(f"  bicubic by hand vs F.interpolate max |diff| {checks['bicubic_max_diff']:.2e}; "
        f"hidden_states[-2] vs 2 layers by hand {checks['layer_idx'][0]:.2e} "
        f"(layer 2 vs layer 3 differ by {checks['layer_idx'][1]:.2f}); written-down text forward "
        f"max |diff| {checks['text_forward']:.1e}")
    log(f"  independent pipeline (tower by hand, index assembly, erf projector, written-down text "
        f"forward) vs golden rows: max relative diff {checks['independent']:.1e}")
    for key, _, _ in IMAGES:
        info = imgs[key]["info"]
        log(f"  image {files[key]}: canvas {info['canvas_width']}x{info['canvas_height']}, "
            f"{info['h_crop']}x{info['w_crop']} crops, {imgs[key]['n_tokens']} tokens")
    for r in results:
        log(f"  case {r['case']['name']}: {len(r['ids'])} ids, rows {r['rows']}, "
            f"greedy {r['greedy']}, min margin {min(r['margins']):.4f}")
    for v, rel in wrong.items():
        log(f"  wrong variant {v}: max relative logit change {rel:.3e}")
    log(f"  {final.relative_to(mf.REPO_ROOT) if final.is_relative_to(mf.REPO_ROOT) else final}: "
        f"{size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
