#!/usr/bin/env python3
# make_image_fixtures.py: builds tests/fixtures/images: small seeded PNG/JPEG inputs of every
# kind engine/image.c decodes, what PIL decodes them to, and the Phi-3-vision HD transform of
# each as the Hugging Face processor computes it (PIL resize + pad, torchvision ToTensor +
# Normalize, torch bicubic global view, row-major crops), plus a few malformed files.
# It is a developer tool, not part of the build or of CI (CI has no torch).
#
# Pinned environment (see scripts/requirements-fixtures.txt); other versions may differ in the
# resampling arithmetic or the libjpeg build PIL bundles:
#   python 3.11, torch==2.5.1 (CPU), torchvision==0.20.1, pillow==13.0.0 (bundling
#   libjpeg-turbo 3.2.0), numpy==2.4.6
#
# Usage: python scripts/make_image_fixtures.py [--out tests/fixtures/images]
# Needs no network. Regenerates the whole directory in one run; two runs give identical files.
#
# The HD transform below is the processor's HD_transform / padding_336 / preprocess with the
# view side 336 made a parameter (crop): with crop=336 it is the processor's code path. Where the
# processor would fail (new_h = int(new_w / ratio) == 0, PIL refuses a zero-height resize), the
# case is marked "hf_raises" and new_h is clamped to 1, the behaviour engine/image.h defines.

import argparse
import io
import json
import shutil
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image, features
from torchvision import transforms
from torchvision.transforms import functional as TF

PINNED = {"torch": "2.5.1", "torchvision": "0.20.1", "pillow": "13.0.0", "numpy": "2.4.6"}

REPO_ROOT = Path(__file__).resolve().parent.parent
# OPENAI_CLIP_MEAN / OPENAI_CLIP_STD: Phi-3-vision's preprocessor_config.json.
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
N_SAMPLES = 64


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


# ---------------------------------------------------------------- input images

def pattern(w, h, seed, channels=3):
    """Gradients, a few sine bands and noise: structure for the resampler, still small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, channels))
    for c in range(channels):
        fx, fy, ph = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng.uniform(0, 6.28)
        base = 255.0 * (0.5 * x / max(w - 1, 1) + 0.3 * y / max(h - 1, 1))
        band = 60.0 * np.sin(fx * x + fy * y + ph)
        out[..., c] = base + band + rng.normal(0, 18, size=(h, w)) - 20 * c
    # Hard edges: one dark and one saturated rectangle.
    out[h // 4: h // 2, w // 5: w // 2] = 10
    out[h // 2: h // 2 + max(h // 6, 1), w // 2: w // 2 + max(w // 4, 1)] = 250
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def adam7_passes(w, h):
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)]:
        xs, ys = list(range(x0, w, dx)), list(range(y0, h, dy))
        if xs and ys:
            yield xs, ys


def pack_row(samples: np.ndarray, depth: int) -> bytes:
    """One row of samples (already flattened per pixel) at bit depth 1/2/4/8/16, big-endian."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        b = 0
        for j, s in enumerate(samples[i:i + per]):
            b |= int(s) << (8 - depth * (j + 1))
        out.append(b)
    return bytes(out)


def write_png(path, pix, color_type, depth, interlace=False, palette=None, trns=None):
    """A minimal PNG writer (filter 0, zlib level 9), so that kinds PIL cannot write (16-bit RGB,
    interlaced) exist too. pix: [h, w] or [h, w, c] integer samples."""
    h, w = pix.shape[:2]
    flat = pix.reshape(h, w, -1)
    raw = bytearray()
    rows = adam7_passes(w, h) if interlace else [(list(range(w)), list(range(h)))]
    for xs, ys in rows:
        for y in ys:
            raw.append(0)
            raw += pack_row(flat[y, xs].reshape(-1), depth)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if palette is not None:
        data += png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        data += png_chunk(b"tRNS", bytes(trns))
    data += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + png_chunk(b"IEND", b"")
    Path(path).write_bytes(data)


def save_pil(path, img, **kw):
    buf = io.BytesIO()
    img.save(buf, **kw)
    Path(path).write_bytes(buf.getvalue())


def make_inputs(out: Path):
    """Writes every input file; returns [(name, file, kind)]."""
    cases = []

    def add(name, file, kind):
        cases.append((name, file, kind))

    write_png(out / "rgb.png", pattern(40, 30, 1), 2, 8)
    add("rgb", "rgb.png", "png rgb8")
    write_png(out / "tall.png", pattern(20, 50, 2), 2, 8)
    add("tall", "tall.png", "png rgb8, taller than wide (transposed path)")
    write_png(out / "big.png", pattern(200, 150, 3), 2, 8)
    add("big", "big.png", "png rgb8, downscaled for crop 56 (antialias)")
    write_png(out / "grey.png", pattern(36, 28, 4, 1)[..., 0], 0, 8)
    add("grey", "grey.png", "png grey8")
    write_png(out / "grey1.png", (pattern(33, 17, 5, 1)[..., 0] > 127).astype(np.uint8), 0, 1)
    add("grey1", "grey1.png", "png grey1")
    g16 = pattern(24, 20, 6, 1)[..., 0].astype(np.uint32)
    g16 = np.where(np.arange(24)[None, :] % 2 == 0, g16, g16 * 257)  # half below 256
    write_png(out / "grey16.png", g16, 0, 16)
    add("grey16", "grey16.png", "png grey16 (PIL I;16: clamps to 255)")
    la = np.concatenate([pattern(30, 22, 7, 1), pattern(30, 22, 8, 1)], axis=2)
    write_png(out / "la.png", la, 4, 8)
    add("la", "la.png", "png grey+alpha 8")
    rgba = np.concatenate([pattern(32, 24, 9), pattern(32, 24, 10, 1)], axis=2)
    write_png(out / "rgba.png", rgba, 6, 8)
    add("rgba", "rgba.png", "png rgba8 (alpha dropped)")
    rgb16 = pattern(22, 18, 11).astype(np.uint32) * 257 + np.arange(22)[None, :, None]
    write_png(out / "rgb16.png", rgb16, 2, 16)
    add("rgb16", "rgb16.png", "png rgb16 (high byte)")
    rgba16 = np.concatenate([pattern(21, 17, 21), pattern(21, 17, 22, 1)], axis=2)
    write_png(out / "rgba16.png", rgba16.astype(np.uint32) * 257 + 3, 6, 16)
    add("rgba16", "rgba16.png", "png rgba16")
    pal = np.random.default_rng(12).integers(0, 256, size=(256, 3))
    idx = pattern(30, 12, 13, 1)[..., 0]
    write_png(out / "palette.png", idx, 3, 8, palette=pal,
              trns=list(np.random.default_rng(14).integers(0, 256, size=40)))
    add("palette", "palette.png", "png palette8 with tRNS")
    idx4 = pattern(25, 15, 15, 1)[..., 0] // 16
    write_png(out / "palette4.png", idx4, 3, 4, palette=pal[:16])
    add("palette4", "palette4.png", "png palette4")
    write_png(out / "interlaced.png", pattern(37, 29, 16), 2, 8, interlace=True)
    add("interlaced", "interlaced.png", "png rgb8 Adam7")
    write_png(out / "interlaced_grey2.png", pattern(19, 13, 17, 1)[..., 0] // 64, 0, 2,
              interlace=True)
    add("interlaced_grey2", "interlaced_grey2.png", "png grey2 Adam7")
    write_png(out / "one.png", np.array([[[200, 30, 90]]], np.uint8), 2, 8)
    add("one", "one.png", "png 1x1")
    write_png(out / "thin.png", pattern(3, 200, 18), 2, 8)
    add("thin", "thin.png", "png 3x200 (new side kept at 3)")
    write_png(out / "wide4096.png", pattern(4096, 1, 19), 2, 8)
    add("wide4096", "wide4096.png", "png 4096x1 (HF raises: new_h 0)")
    write_png(out / "tall4096.png", pattern(1, 4096, 20), 2, 8)
    add("tall4096", "tall4096.png", "png 1x4096 (HF raises: new_h 0)")

    save_pil(out / "jpeg.jpg", Image.fromarray(pattern(48, 20, 30)), format="JPEG", quality=90,
             subsampling=2)
    add("jpeg", "jpeg.jpg", "jpeg baseline 4:2:0")
    save_pil(out / "jpeg_prog.jpg", Image.fromarray(pattern(45, 33, 31)), format="JPEG",
             quality=85, subsampling=2, progressive=True)
    add("jpeg_prog", "jpeg_prog.jpg", "jpeg progressive 4:2:0")
    save_pil(out / "jpeg_422.jpg", Image.fromarray(pattern(41, 26, 32)), format="JPEG",
             quality=80, subsampling=1)
    add("jpeg_422", "jpeg_422.jpg", "jpeg baseline 4:2:2")
    save_pil(out / "jpeg_grey.jpg", Image.fromarray(pattern(30, 20, 33, 1)[..., 0], "L"),
             format="JPEG", quality=90)
    add("jpeg_grey", "jpeg_grey.jpg", "jpeg greyscale")
    return cases


def make_bad(out: Path):
    """Malformed and refused files; returns [(file, expected status name)]."""
    bad = out / "bad"
    bad.mkdir()

    def png_claiming(w, h):
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\x00" + b"\x00" * 30, 9)
        return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) +
                png_chunk(b"IEND", b""))

    files = []
    for name, (w, h) in {"bomb_20000.png": (20000, 20000), "bomb_65535.png": (65535, 65535),
                         "wide_4097.png": (4097, 1), "tall_4097.png": (1, 4097), "zero_height.png": (10, 0),
                         "zero_width.png": (0, 10)}.items():
        (bad / name).write_bytes(png_claiming(w, h))
        files.append((f"bad/{name}", "ERR_SIZE"))
    good = (out / "rgb.png").read_bytes()
    crc = bytearray(good)
    crc[60] ^= 0x40  # inside IDAT: the chunk's CRC no longer matches
    (bad / "bad_crc.png").write_bytes(bytes(crc))
    files.append(("bad/bad_crc.png", "ERR_DECODE"))
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    files.append(("bad/truncated.png", "ERR_DECODE"))
    jpg = (out / "jpeg.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])
    files.append(("bad/truncated.jpg", "ERR_DECODE"))
    save_pil(bad / "tiny.gif", Image.fromarray(pattern(8, 8, 40)).convert("P"), format="GIF")
    files.append(("bad/tiny.gif", "ERR_FORMAT"))
    save_pil(bad / "tiny.webp", Image.fromarray(pattern(8, 8, 41)), format="WEBP", lossless=True)
    files.append(("bad/tiny.webp", "ERR_FORMAT"))
    save_pil(bad / "cmyk.jpg", Image.fromarray(pattern(8, 8, 42)).convert("CMYK"), format="JPEG")
    files.append(("bad/cmyk.jpg", "ERR_FORMAT"))
    (bad / "text.png").write_bytes(b"this is a text file renamed to .png\n")
    files.append(("bad/text.png", "ERR_FORMAT"))
    return files


# ---------------------------------------------------------------- the HF processor's path

def hd_transform(img: Image.Image, crop: int, hd_num: int):
    """HD_transform + padding_336 with 336 -> crop. Returns (canvas, hf_raises)."""
    width, height = img.size
    trans = False
    if width < height:
        img = img.transpose(Image.TRANSPOSE)
        trans = True
        width, height = img.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * crop)
    new_h = int(new_w / ratio)
    hf_raises = new_h == 0
    if hf_raises:
        new_h = 1
    img = TF.resize(img, [new_h, new_w])
    w2, h2 = img.size
    tar = int(np.ceil(h2 / crop) * crop)
    top = int((tar - h2) / 2)
    bottom = tar - h2 - top
    img = TF.pad(img, [0, top, 0, bottom], fill=[255, 255, 255])
    if trans:
        img = img.transpose(Image.TRANSPOSE)
    return img, hf_raises


def hd_views(canvas: Image.Image, crop: int):
    proc = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    hd = proc(canvas)
    glob = torch.nn.functional.interpolate(hd.unsqueeze(0).float(), size=(crop, crop),
                                           mode="bicubic").to(hd.dtype)
    h, w = hd.shape[1], hd.shape[2]
    crops = (hd.reshape(1, 3, h // crop, crop, w // crop, crop).permute(0, 2, 4, 1, 3, 5)
             .reshape(-1, 3, crop, crop).contiguous())
    return torch.cat([glob, crops], dim=0), h // crop, w // crop


# Parameter sets: (crop, num_crops, which cases store all views as float32).
PARAMS = [
    (56, 4, {"rgb", "tall", "big", "jpeg"}),
    (336, 4, set()),
]
CASES_336 = {"rgb", "tall", "big"}
# Small inputs for tests/fuzz/fuzz_image.c: one of each decoder path, and some refusals.
SEEDS = ["one.png", "grey1.png", "grey16.png", "la.png", "palette4.png", "palette.png",
         "rgba16.png", "interlaced_grey2.png", "thin.png", "jpeg.jpg", "jpeg_prog.jpg",
         "jpeg_grey.jpg", "jpeg_422.jpg", "bad/bomb_20000.png", "bad/zero_height.png",
         "bad/truncated.png", "bad/truncated.jpg", "bad/bad_crc.png", "bad/cmyk.jpg",
         "bad/tiny.gif", "bad/tiny.webp"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(REPO_ROOT / "tests" / "fixtures" / "images"))
    ap.add_argument("--seeds", default=str(REPO_ROOT / "tests" / "fuzz" / "corpus" / "image"),
                    help="where the fuzz seed corpus (small copies of some inputs) goes")
    args = ap.parse_args()
    got = {"torch": torch.__version__.split("+")[0],
           "torchvision": torchvision.__version__.split("+")[0],
           "pillow": PIL.__version__, "numpy": np.__version__}
    for k, v in PINNED.items():
        if got[k] != v:
            print(f"warning: {k} {got[k]} is not the pinned {v}", file=sys.stderr)
    torch.set_num_threads(1)
    # PIL's advice to convert palette+tRNS images to RGBA; the processor uses RGB regardless.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cases = make_inputs(out)
    bad = make_bad(out)

    index = {
        "generator": "scripts/make_image_fixtures.py",
        "versions": {**got, "libjpeg_turbo": features.version("libjpeg_turbo")},
        "mean": MEAN, "std": STD,
        "cases": [],
        "bad": [{"file": f, "status": s} for f, s in bad],
    }
    rng = np.random.default_rng(99)
    for name, file, kind in cases:
        img = Image.open(out / file)
        img.load()
        rgb = img.convert("RGB")
        arr = np.asarray(rgb)
        entry = {"name": name, "file": file, "kind": kind, "pil_mode": img.mode,
                 "width": rgb.size[0], "height": rgb.size[1],
                 "rgb_fnv1a64": fnv1a64(arr.tobytes()), "hd": []}
        if file.endswith(".jpg"):
            (out / f"{name}.rgb").write_bytes(arr.tobytes())
            entry["rgb_file"] = f"{name}.rgb"
        for crop, num, raw_cases in PARAMS:
            if crop == 336 and name not in CASES_336:
                continue
            canvas, raises = hd_transform(rgb, crop, num)
            views, h_crop, w_crop = hd_views(canvas, crop)
            v = views.numpy().astype("<f4")
            hd = {"crop": crop, "num_crops": num, "hf_raises": raises,
                  "w_pad": canvas.size[0], "h_pad": canvas.size[1],
                  "h_crop": h_crop, "w_crop": w_crop, "n_views": int(v.shape[0]),
                  "canvas_fnv1a64": fnv1a64(np.asarray(canvas).tobytes())}
            if crop == 56:
                cfile = f"{name}.c{crop}.png"
                save_pil(out / cfile, canvas, format="PNG")
                hd["canvas"] = cfile
            if name in raw_cases:
                vfile = f"{name}.c{crop}.f32"
                (out / vfile).write_bytes(v.tobytes())
                hd["views"] = vfile
            flat = v.reshape(-1)
            pos = sorted(rng.choice(flat.size, size=min(N_SAMPLES, flat.size), replace=False))
            hd["samples"] = [[int(i), float(flat[i])] for i in pos]
            per = v.reshape(v.shape[0], -1).astype(np.float64)
            hd["view_sums"] = [float(s) for s in per.sum(axis=1)]
            hd["view_abs_sums"] = [float(s) for s in np.abs(per).sum(axis=1)]
            entry["hd"].append(hd)
        index["cases"].append(entry)
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    seeds = Path(args.seeds)
    if seeds.exists():
        shutil.rmtree(seeds)
    seeds.mkdir(parents=True)
    for f in SEEDS:
        shutil.copyfile(out / f, seeds / f.replace("/", "_"))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(cases)} cases, {len(bad)} bad files, {total} bytes to {out}")
    if total > 1_500_000:
        print("error: the fixtures exceed 1.5 MB", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
