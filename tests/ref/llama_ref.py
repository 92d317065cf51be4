#!/usr/bin/python3
"""Independent PyTorch reference for the Llama family (Llama 1/2/3, Mistral, Qwen2).

Written from the math, not from any library, to produce golden files for tests/test_golden.cpp.
The semantics are those of Hugging Face transformers' LlamaForCausalLM / MistralForCausalLM /
Qwen2ForCausalLM:

  x = embed[tokens]                                              (B, T, C)
  per layer il:
    h = rmsnorm(x) * w_in        rmsnorm(x) = x * rsqrt(mean(x^2) + eps)
    q = h Wq^T (+bq), k = h Wk^T (+bk), v = h Wv^T (+bv)         (B, NH|NKV, T, HD)
    q, k = rope(q), rope(k)      rotate-half layout: pairs (i, i + HD/2)
    a = softmax(q k^T / sqrt(HD) + mask) v     q head h reads kv head h // (NH / NKV)
    x = x + a Wo^T
    h = rmsnorm(x) * w_post
    x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T
  logits = rmsnorm(x) * w_final  Wlm^T        (Wlm = embed when tied)
  loss = mean over {t : targets[t] != -100} of -log softmax(logits[t])[targets[t]]

`targets[b, t]` is the label of position t (the next token, already shifted), -100 = not
trained. The mask lets position i attend to key j iff seg_start[b, i] <= j <= i; seg_start is 0
everywhere for ordinary rows and the index of the sample's first token for packed rows, where
positions also restart at 0 per sample.

  /usr/bin/python3 tests/ref/llama_ref.py --out DIR

writes DIR/<case>/{config.json, model.safetensors, golden.safetensors} for every case in CASES.
golden.safetensors holds: tokens, targets (I32, B x T), positions and seg_start (I32, packed case
only), logits (F32, B*T x V), loss (F32 [1], the mean), grad.<param> (F32, gradient of the mean
loss; a tied model has only grad.model.embed_tokens.weight, head contribution included), and
logits_bf16_matrices / loss_bf16_matrices: the same with every 2-D weight rounded to bf16 (norms
and biases kept), what a model loaded with frozen bf16 weights must give.
Goldens are computed in float64 and stored as F32; bench/bench_torch.py imports this module.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100


# ---- config --------------------------------------------------------------------------------

def head_dim(cfg):
    hd = cfg.get("head_dim")
    return int(hd) if hd else cfg["hidden_size"] // cfg["num_attention_heads"]


def num_kv_heads(cfg):
    n = cfg.get("num_key_value_heads")
    return int(n) if n else cfg["num_attention_heads"]


def has_qkv_bias(cfg):
    # Qwen2 always has q/k/v biases (its config.json has no attention_bias key).
    return cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False))


def rope_inv_freq(cfg, dtype=torch.float64):
    """Inverse frequencies (HD/2,) after rope_scaling."""
    hd = head_dim(cfg)
    theta = float(cfg.get("rope_theta", 10000.0))
    exponent = torch.arange(0, hd, 2, dtype=torch.float64) / hd
    inv = 1.0 / (theta ** exponent)
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            # Positions divided by factor == frequencies divided by factor.
            inv = inv / float(rs["factor"])
        elif kind == "llama3":
            # Llama 3.1: low frequencies (long wavelengths) are slowed by `factor`, high
            # frequencies kept, and the band in between blended linearly in orig_max / wavelen.
            factor = float(rs["factor"])
            low = float(rs["low_freq_factor"])
            high = float(rs["high_freq_factor"])
            orig = float(rs["original_max_position_embeddings"])
            low_freq_wavelen = orig / low
            high_freq_wavelen = orig / high
            out = []
            for f in inv.tolist():
                wavelen = 2.0 * math.pi / f
                if wavelen > low_freq_wavelen:
                    out.append(f / factor)
                elif wavelen < high_freq_wavelen:
                    out.append(f)
                else:
                    smooth = (orig / wavelen - low) / (high - low)
                    out.append((1.0 - smooth) * f / factor + smooth * f)
            inv = torch.tensor(out, dtype=torch.float64)
        elif kind in (None, "default"):
            pass
        else:
            raise ValueError(f"rope_scaling type {kind!r} is not supported by the reference")
    return inv.to(dtype)


def param_shapes(cfg):
    """HF tensor name -> shape, in model order (lm_head only when untied)."""
    V, C, Fd = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    NH, NKV, HD = cfg["num_attention_heads"], num_kv_heads(cfg), head_dim(cfg)
    shapes = {"model.embed_tokens.weight": (V, C)}
    for il in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{il}."
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "self_attn.q_proj.weight"] = (NH * HD, C)
        shapes[p + "self_attn.k_proj.weight"] = (NKV * HD, C)
        shapes[p + "self_attn.v_proj.weight"] = (NKV * HD, C)
        if has_qkv_bias(cfg):
            shapes[p + "self_attn.q_proj.bias"] = (NH * HD,)
            shapes[p + "self_attn.k_proj.bias"] = (NKV * HD,)
            shapes[p + "self_attn.v_proj.bias"] = (NKV * HD,)
        shapes[p + "self_attn.o_proj.weight"] = (C, NH * HD)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_proj.weight"] = (Fd, C)
        shapes[p + "mlp.up_proj.weight"] = (Fd, C)
        shapes[p + "mlp.down_proj.weight"] = (C, Fd)
    shapes["model.norm.weight"] = (C,)
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(cfg, seed, dtype=torch.float64, std=None):
    """Random weights with O(1) activations (so softmax, norms and SiLU are all exercised).

    std=None: embeddings N(0, 0.3), projections N(0, gain/sqrt(fan_in)) with q/k gain 1.5
    (peaked attention), norm weights U(0.6, 1.4), biases N(0, 0.3).
    std=float: HF-style init (normal(0, std), norms 1, biases 0), used by the benchmark.
    """
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if std is not None:
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=torch.float32)
            elif name.endswith(".bias"):
                t = torch.zeros(shape, dtype=torch.float32)
            else:
                t = torch.randn(shape, generator=g, dtype=torch.float32) * std
        elif name.endswith("norm.weight"):
            t = 0.6 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
        elif name.endswith(".bias"):
            t = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif name == "model.embed_tokens.weight":
            t = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            gain = 1.5 if (".q_proj." in name or ".k_proj." in name) else 1.0
            t = gain / math.sqrt(shape[1]) * torch.randn(shape, generator=g, dtype=torch.float64)
        params[name] = t.to(dtype)
    return params


# ---- model ---------------------------------------------------------------------------------

def rmsnorm(x, weight, eps):
    # HF: the variance is computed in the compute dtype (float32 in HF for half inputs; here the
    # whole reference runs in one dtype), then x * rsqrt(var + eps) * weight.
    var = x.pow(2).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(inv_freq, positions):
    """cos, sin of shape (B, 1, T, HD) for positions (B, T)."""
    ang = positions.to(inv_freq.dtype)[..., None] * inv_freq  # (B, T, HD/2)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos()[:, None], ang.sin()[:, None]


def attention_mask(seg_start, T):
    """allowed[b, i, j] = seg_start[b, i] <= j <= i, shape (B, 1, T, T)."""
    i = torch.arange(T)[None, :, None]
    j = torch.arange(T)[None, None, :]
    return ((j <= i) & (j >= seg_start[:, :, None]))[:, None]


def forward(cfg, P, tokens, positions=None, seg_start=None, linear=None):
    """Logits (B, T, V) for int64 tokens (B, T); params P: HF name -> tensor.

    linear(h, name) computes h @ P[name].t() for the projections q/k/v/o and gate/up/down (a
    hook for adapters, e.g. bench/bench_torch.py's PEFT-style LoRA); default: exactly that."""
    if linear is None:
        def linear(h, name):
            return h @ P[name].t()
    B, T = tokens.shape
    NH, NKV, HD = cfg["num_attention_heads"], num_kv_heads(cfg), head_dim(cfg)
    eps = float(cfg["rms_norm_eps"])
    dtype = P["model.embed_tokens.weight"].dtype
    if positions is None:
        positions = torch.arange(T).expand(B, T)
    if seg_start is None:
        seg_start = torch.zeros(B, T, dtype=torch.int64)
    cos, sin = rope_tables(rope_inv_freq(cfg, dtype), positions)
    allowed = attention_mask(seg_start, T)
    kv_of_head = torch.arange(NH) // (NH // NKV)
    scale = 1.0 / math.sqrt(HD)
    bias = has_qkv_bias(cfg)

    x = P["model.embed_tokens.weight"][tokens]
    for il in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{il}."
        h = rmsnorm(x, P[p + "input_layernorm.weight"], eps)
        q = linear(h, p + "self_attn.q_proj.weight")
        k = linear(h, p + "self_attn.k_proj.weight")
        v = linear(h, p + "self_attn.v_proj.weight")
        if bias:
            q = q + P[p + "self_attn.q_proj.bias"]
            k = k + P[p + "self_attn.k_proj.bias"]
            v = v + P[p + "self_attn.v_proj.bias"]
        q = q.view(B, T, NH, HD).transpose(1, 2)
        k = k.view(B, T, NKV, HD).transpose(1, 2)
        v = v.view(B, T, NKV, HD).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = k[:, kv_of_head], v[:, kv_of_head]  # GQA: (B, NH, T, HD)
        scores = (q @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        a = torch.softmax(scores, dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, NH * HD)
        x = x + linear(a, p + "self_attn.o_proj.weight")
        h = rmsnorm(x, P[p + "post_attention_layernorm.weight"], eps)
        m = F.silu(linear(h, p + "mlp.gate_proj.weight")) * linear(h, p + "mlp.up_proj.weight")
        x = x + linear(m, p + "mlp.down_proj.weight")
    x = rmsnorm(x, P["model.norm.weight"], eps)
    head = P.get("lm_head.weight", P["model.embed_tokens.weight"])
    return x @ head.t()


def loss_sum_count(logits, targets):
    """Sum of -log p(target) over trained positions, and their count (explicit, no F.cross_entropy)."""
    flat = logits.reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    keep = t != IGNORE
    logp = torch.log_softmax(flat[keep], dim=-1)
    nll = -logp.gather(1, t[keep][:, None]).squeeze(1)
    return nll.sum(), int(keep.sum())


def loss_and_grads(cfg, P, tokens, targets, positions=None, seg_start=None):
    """logits (B,T,V), mean loss, {name: grad of the mean loss}."""
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in P.items()}
    logits = forward(cfg, leaves, tokens, positions, seg_start)
    s, n = loss_sum_count(logits, targets)
    loss = s / n
    loss.backward()
    return logits.detach(), loss.detach(), {name: t.grad.detach() for name, t in leaves.items()}


# ---- safetensors ---------------------------------------------------------------------------

_ST_DTYPES = {"F32": ("<f4", 4), "F64": ("<f8", 8), "BF16": ("<u2", 2), "F16": ("<f2", 2),
              "I32": ("<i4", 4), "I64": ("<i8", 8)}


def bf16_bits(t):
    """uint16 numpy array of a tensor rounded to bfloat16 (round to nearest even, as torch)."""
    return t.detach().to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> (dtype name, numpy array already in that dtype's representation).

    Larger element types first, then by name (as the safetensors library orders them), so
    every tensor's data starts at a multiple of its element size.
    """
    order = sorted(tensors, key=lambda n: (-_ST_DTYPES[tensors[n][0]][1], n))
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs, offset = [], 0
    for name in order:
        dt, arr = tensors[name]
        data = np.ascontiguousarray(arr).astype(_ST_DTYPES[dt][0], copy=False).tobytes()
        assert len(data) == int(np.prod(arr.shape, dtype=np.int64)) * _ST_DTYPES[dt][1], name
        header[name] = {"dtype": dt, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)  # data starts 8-aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """name -> float64/int64 torch tensor (for the round-trip self-check)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + end], dtype=_ST_DTYPES[e["dtype"]][0]).reshape(e["shape"])
        if e["dtype"] == "BF16":
            t = torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32).copy()).double()
        elif e["dtype"] in ("I32", "I64"):
            t = torch.from_numpy(arr.astype(np.int64))
        else:
            t = torch.from_numpy(arr.astype(np.float64))
        out[name] = t
    return out


# ---- cases ---------------------------------------------------------------------------------

def make_config(arch, V, C, NH, NKV, Fd, L=2, *, hd=None, tied=False, eps=1e-5, theta=10000.0,
                rope_scaling=None, bias=None, max_pos=256, dtype="float32", extra=None):
    model_type = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2"}[arch]
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": V,
        "hidden_size": C,
        "intermediate_size": Fd,
        "num_hidden_layers": L,
        "num_attention_heads": NH,
        "num_key_value_heads": NKV,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": tied,
        "max_position_embeddings": max_pos,
        "torch_dtype": dtype,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if hd is not None:
        cfg["head_dim"] = hd
    if bias is not None:
        cfg["attention_bias"] = bias
    cfg.update(extra or {})
    return cfg


def llama3_scaling():
    # head_dim 32, theta 500000: wavelengths 2*pi*500000^(i/16) = 6.3, 14.3, 32.6, 74, 169, ...
    # With original_max 64, low_freq_factor 1, high_freq_factor 8: high_freq_wavelen = 8,
    # low_freq_wavelen = 64, so i=0 is kept, i=1,2 are blended and i>=3 are divided by 8.
    return {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
            "original_max_position_embeddings": 64}


# Odd sizes (V, F, C = 48) exercise kernel tails. Each case: config, batch shape, packing, dtype.
CASES = {
    "llama_gqa": dict(cfg=make_config("LlamaForCausalLM", 97, 64, 4, 2, 136, hd=16, bias=False),
                      B=2, T=20),
    "llama_tied_mha": dict(cfg=make_config("LlamaForCausalLM", 83, 48, 4, 4, 100, hd=12, tied=True,
                                           eps=1e-6, bias=False), B=2, T=17),
    # A real Qwen2 config.json has neither head_dim nor attention_bias.
    "qwen2_bias": dict(cfg=make_config("Qwen2ForCausalLM", 128, 64, 4, 1, 120, tied=True, eps=1e-6,
                                       theta=1000000.0,
                                       extra={"use_sliding_window": False, "sliding_window": 4096,
                                              "max_window_layers": 2}), B=2, T=16),
    # head_dim 32 != C / NH: q_proj is (128, 64).
    "llama3_rope": dict(cfg=make_config("LlamaForCausalLM", 101, 64, 4, 2, 144, hd=32, theta=500000.0,
                                        rope_scaling=llama3_scaling(), bias=False), B=2, T=24),
    # The older {"type": ...} spelling of rope_scaling.
    "mistral_linear_rope": dict(cfg=make_config("MistralForCausalLM", 90, 32, 4, 2, 72, hd=8,
                                                rope_scaling={"type": "linear", "factor": 2.0},
                                                extra={"sliding_window": None}), B=2, T=20),
    "packed": dict(cfg=make_config("LlamaForCausalLM", 97, 64, 4, 2, 136, hd=16, bias=False),
                   B=2, T=24, segments=[[7, 9, 8], [13, 11]]),
    "bf16_weights": dict(cfg=make_config("LlamaForCausalLM", 96, 64, 4, 2, 128, hd=16, bias=False,
                                         dtype="bfloat16"), B=2, T=16, bf16=True),
}


def make_batch(case, seed):
    """tokens, targets (B, T) int64, and positions, seg_start (None unless packed)."""
    g = torch.Generator().manual_seed(seed)
    B, T, V = case["B"], case["T"], case["cfg"]["vocab_size"]
    segments = case.get("segments")
    if segments is None:
        seq = torch.randint(0, V, (B, T + 1), generator=g)
        tokens, targets = seq[:, :T].clone(), seq[:, 1:].clone()
        targets[:, T - 1] = IGNORE  # HF's shift: the last position has no label
        positions = seg_start = None
    else:
        assert len(segments) == B and all(sum(s) == T for s in segments)
        tokens = torch.randint(0, V, (B, T), generator=g)
        targets = torch.full((B, T), IGNORE, dtype=torch.int64)
        positions = torch.zeros(B, T, dtype=torch.int64)
        seg_start = torch.zeros(B, T, dtype=torch.int64)
        for b, lens in enumerate(segments):
            start = 0
            for n in lens:
                positions[b, start:start + n] = torch.arange(n)
                seg_start[b, start:start + n] = start
                targets[b, start:start + n - 1] = tokens[b, start + 1:start + n]  # within the sample
                start += n
    # Mask about a quarter of the remaining labels (prompt tokens in SFT).
    drop = torch.rand(B, T, generator=g) < 0.25
    targets[drop] = IGNORE
    return tokens, targets, positions, seg_start


# ---- self-checks ---------------------------------------------------------------------------

def max_rel(a, b):
    """max |a - b| / max |b| (0 when both are zero)."""
    a, b = a.double(), b.double()
    denom = b.abs().max().item()
    d = (a - b).abs().max().item()
    return d / denom if denom > 0 else d


def check_rope_complex(cfg):
    """The rotate-half layout equals complex multiplication of the pairs (x_i, x_{i+HD/2})."""
    hd = head_dim(cfg)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 1, 5, hd, generator=g, dtype=torch.float64)
    pos = torch.tensor([[0, 1, 3, 10, 23]])
    cos, sin = rope_tables(rope_inv_freq(cfg), pos)
    got = x * cos + rotate_half(x) * sin
    z = torch.complex(x[..., :hd // 2], x[..., hd // 2:])
    rot = torch.polar(torch.ones(5, hd // 2, dtype=torch.float64), pos[0, :, None].double() * rope_inv_freq(cfg))
    w = z * rot
    want = torch.cat((w.real, w.imag), dim=-1)
    assert max_rel(got, want) < 1e-12, "rope rotate-half != complex formulation"


def check_llama3_regions(cfg):
    """Every llama3 band (kept, blended, divided by factor) occurs, so each branch is tested."""
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return
    base = rope_inv_freq(dict(cfg, rope_scaling=None))
    ratio = (base / rope_inv_freq(cfg)).tolist()
    factor = rs["factor"]
    kept = sum(abs(r - 1) < 1e-12 for r in ratio)
    scaled = sum(abs(r - factor) < 1e-9 for r in ratio)
    assert kept > 0 and scaled > 0 and kept + scaled < len(ratio), f"llama3 bands: {ratio}"


def check_gqa_equals_mha(cfg, P, tokens):
    """A GQA model equals the MHA model whose k/v heads are repeated (kv head of q head h = h // rep)."""
    NH, NKV, HD = cfg["num_attention_heads"], num_kv_heads(cfg), head_dim(cfg)
    if NKV == NH:
        return
    rep = NH // NKV
    mha = dict(cfg, num_key_value_heads=NH)
    Q = dict(P)
    for il in range(cfg["num_hidden_layers"]):
        for w in ("k_proj", "v_proj"):
            for kind in ("weight", "bias"):
                name = f"model.layers.{il}.self_attn.{w}.{kind}"
                if name in P:
                    t = P[name].view(NKV, HD, *P[name].shape[1:])
                    Q[name] = t.repeat_interleave(rep, dim=0).reshape(NH * HD, *P[name].shape[1:])
    err = max_rel(forward(mha, Q, tokens), forward(cfg, P, tokens))
    assert err < 1e-12, f"GQA != MHA with repeated kv heads ({err})"


def check_packed_equals_separate(cfg, P, case, tokens, targets, positions, seg_start, logits, loss):
    """Packed rows give the logits and loss of running every sample on its own."""
    total, count = 0.0, 0
    for b, lens in enumerate(case["segments"]):
        start = 0
        for n in lens:
            sl = slice(start, start + n)
            sep = forward(cfg, P, tokens[b:b + 1, sl])
            err = max_rel(logits[b:b + 1, sl], sep)
            assert err < 1e-12, f"packed row {b} sample at {start}: logits differ from a separate run ({err})"
            s, c = loss_sum_count(sep, targets[b:b + 1, sl])
            total += s.item()
            count += c
            start += n
    assert abs(total / count - loss.item()) < 1e-12 * max(1.0, abs(loss.item())), "packed loss != separate"
    # And the mask matters: without seg_start the logits differ.
    unpacked = forward(cfg, P, tokens, positions, None)
    assert max_rel(unpacked, logits) > 1e-3, "packing mask has no effect?"


def check_finite_differences(cfg, P, tokens, targets, positions, seg_start, grads, seed):
    """Central differences in float64 on a few entries of a few parameters vs autograd."""
    g = torch.Generator().manual_seed(seed)
    names = sorted(P)
    picks = [names[i] for i in torch.randperm(len(names), generator=g)[:4].tolist()]
    if "model.embed_tokens.weight" not in picks:
        picks.append("model.embed_tokens.weight")
    h = 1e-6
    for name in picks:
        flat = P[name].view(-1)
        if name == "model.embed_tokens.weight":  # pick an entry of a token that occurs
            C = P[name].shape[1]
            idxs = [int(tokens[0, 0]) * C + 3, int(tokens[-1, 2]) * C + 1]
        else:
            idxs = torch.randint(0, flat.numel(), (2,), generator=g).tolist()
        for idx in idxs:
            old = flat[idx].item()
            vals = []
            for d in (h, -h):
                flat[idx] = old + d
                s, n = loss_sum_count(forward(cfg, P, tokens, positions, seg_start), targets)
                vals.append((s / n).item())
            flat[idx] = old
            fd = (vals[0] - vals[1]) / (2 * h)
            an = grads[name].view(-1)[idx].item()
            assert abs(fd - an) <= 1e-6 + 1e-5 * abs(an), f"finite differences: {name}[{idx}] fd {fd} autograd {an}"


def f32_error(cfg, P, tokens, targets, positions, seg_start, logits, loss, grads):
    """Worst max|f32 - f64| / max|f64| over logits, loss and grads: what an exact f32 model gets."""
    P32 = {n: t.float() for n, t in P.items()}
    l32, loss32, g32 = loss_and_grads(cfg, P32, tokens, targets, positions, seg_start)
    worst = max(max_rel(l32, logits), abs(loss32.item() - loss.item()) / abs(loss.item()))
    worst_name = "logits/loss"
    for n in grads:
        e = max_rel(g32[n], grads[n])
        if e > worst:
            worst, worst_name = e, "grad." + n
    return worst, worst_name


# ---- generation ----------------------------------------------------------------------------

def generate_case(name, case, out_dir, seed):
    cfg = case["cfg"]
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    P = init_params(cfg, seed)
    if case.get("bf16"):
        # The reference uses exactly the values the file holds.
        P = {n: t.float().to(torch.bfloat16).double() for n, t in P.items()}
    tokens, targets, positions, seg_start = make_batch(case, seed + 1)
    logits, loss, grads = loss_and_grads(cfg, P, tokens, targets, positions, seg_start)
    B, T, V = case["B"], case["T"], cfg["vocab_size"]
    assert torch.isfinite(logits).all() and torch.isfinite(loss)

    # Self-checks of the reference itself.
    check_rope_complex(cfg)
    check_llama3_regions(cfg)
    check_gqa_equals_mha(cfg, P, tokens)
    if case.get("segments"):
        check_packed_equals_separate(cfg, P, case, tokens, targets, positions, seg_start, logits, loss)
    check_finite_differences(cfg, P, tokens, targets, positions, seg_start, grads, seed + 2)
    f32_err, f32_where = f32_error(cfg, P, tokens, targets, positions, seg_start, logits, loss, grads)

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if case.get("bf16"):
        weights = {n: ("BF16", bf16_bits(t)) for n, t in P.items()}
    else:
        weights = {n: ("F32", t.float().numpy()) for n, t in P.items()}
    write_safetensors(os.path.join(d, "model.safetensors"), weights)

    def i32(t):
        return ("I32", t.to(torch.int32).numpy())

    def f32(t):
        return ("F32", t.detach().float().numpy())

    # Frozen-weight path: the file's F32 matrices (2-D: embedding, projections, head) rounded to
    # bf16 as a model loaded with weight_dtype BF16 stores them; norms and biases stay F32.
    Pb = {n: (t.float().to(torch.bfloat16).double() if t.dim() == 2 else t.float().double())
          for n, t in P.items()}
    logits_b = forward(cfg, Pb, tokens, positions, seg_start)
    s_b, n_b = loss_sum_count(logits_b, targets)

    golden = {"tokens": i32(tokens), "targets": i32(targets),
              "logits": f32(logits.reshape(B * T, V)), "loss": f32(loss.reshape(1)),
              "logits_bf16_matrices": f32(logits_b.reshape(B * T, V)),
              "loss_bf16_matrices": f32((s_b / n_b).reshape(1))}
    if positions is not None:
        golden["positions"] = i32(positions)
        golden["seg_start"] = i32(seg_start)
    for n, gr in grads.items():
        golden["grad." + n] = f32(gr)
    write_safetensors(os.path.join(d, "golden.safetensors"), golden)

    # Round trip: what we wrote is what we computed with.
    back = read_safetensors(os.path.join(d, "model.safetensors"))
    for n, t in P.items():
        want = t if case.get("bf16") else t.float().double()
        assert torch.equal(back[n], want), f"safetensors round trip of {n}"
    n_trained = int((targets != IGNORE).sum())
    print(f"{name:20s} B={B} T={T} V={V} trained={n_trained:3d} loss={loss.item():.6f} "
          f"f32-vs-f64 worst rel err {f32_err:.2e} ({f32_where})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (one subfolder per case)")
    ap.add_argument("--cases", default="", help="comma-separated subset of: " + ",".join(CASES))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # determinism and no oversubscription under ctest
    names = [c for c in args.cases.split(",") if c] or list(CASES)
    for i, name in enumerate(names):
        if name not in CASES:
            sys.exit(f"llama_ref.py: unknown case {name!r} (known: {', '.join(CASES)})")
        generate_case(name, CASES[name], args.out, args.seed + 100 * i)


if __name__ == "__main__":
    main()
