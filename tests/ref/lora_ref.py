#!/usr/bin/python3
"""Independent PyTorch reference for LoRA adapters on the Llama family (tests/test_lora.cpp).

LoRA as Hugging Face PEFT defines it, for a linear layer y = x W^T (+ b):

  y = x W^T (+ b) + scale * dropout(x) A^T B^T      A (r, in), B (out, r)
  scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora

The reference evaluates it in the merged form W_eff = W + scale * B A (exact without dropout;
the goldens use lora_dropout 0), running the model functions of llama_ref.py on W_eff with A
and B as autograd leaves, so the C++ unmerged path (xa = scale * x A^T, y += xa B^T) is checked
against a different formulation of the same function. Self-checks: the merged form equals the
explicit unmerged product on every adapted layer's input, and central finite differences in
float64 agree with autograd for a few entries of A and B.

  /usr/bin/python3 tests/ref/lora_ref.py --out DIR

writes per case DIR/<case>/ with
  config.json, model.safetensors       the base model (F32)
  adapter/adapter_config.json          PEFT's keys
  adapter/adapter_model.safetensors    base_model.model.<module>.lora_A.weight / lora_B.weight (F32)
  golden.safetensors                   tokens, targets (I32, B x T), logits (B*T x V), loss [1]
                                       (the mean), grad.<adapter tensor name> (gradient of the
                                       mean loss), and logits_bf16_base / loss_bf16_base /
                                       grad_bf16_base.<name>: the same with the base's 2-D
                                       weights rounded to bf16 (what a model with a frozen bf16
                                       base computes; adapters stay f32)
Goldens are computed in float64 and stored as F32. B is random (not PEFT's zero init) so that
every gradient is non-zero.
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402  (the model functions; its own goldens are untouched)

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parent(module):
    return "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"


def module_path(il, module):
    return f"model.layers.{il}.{parent(module)}.{module}"


def adapter_names(cfg, targets):
    """[(base weight name, A name, B name)] in layer order, modules in MODULES order."""
    out = []
    for il in range(cfg["num_hidden_layers"]):
        for m in MODULES:
            if m in targets:
                p = module_path(il, m)
                out.append((p + ".weight", f"base_model.model.{p}.lora_A.weight", f"base_model.model.{p}.lora_B.weight"))
    return out


def lora_scale(lora):
    r, alpha = lora["r"], lora["lora_alpha"]
    return alpha / math.sqrt(r) if lora["use_rslora"] else alpha / r


def init_adapter(cfg, P, lora, seed, dtype=torch.float64):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT's kaiming_uniform_(a=sqrt(5)); B ~ N(0, 1/sqrt(r)) * b_std
    (random instead of zero so gradients reach A). Sized so the adapter's term is comparable to
    the base's (a real test of the added path, not a tiny perturbation)."""
    g = torch.Generator().manual_seed(seed)
    r = lora["r"]
    ad = {}
    for wname, an, bn in adapter_names(cfg, lora["targets"]):
        out_f, in_f = P[wname].shape
        bound = 1.0 / math.sqrt(in_f)
        ad[an] = (2 * torch.rand(r, in_f, generator=g, dtype=torch.float64) - 1) * bound
        ad[bn] = torch.randn(out_f, r, generator=g, dtype=torch.float64) * (lora["b_std"] / math.sqrt(r))
    return {n: t.to(dtype) for n, t in ad.items()}


def effective_params(cfg, P, ad, lora):
    """Base params with every adapted W replaced by W + scale * B A (differentiable in A, B)."""
    s = lora_scale(lora)
    Q = dict(P)
    for wname, an, bn in adapter_names(cfg, lora["targets"]):
        Q[wname] = P[wname] + s * (ad[bn] @ ad[an])
    return Q


def lora_loss_and_grads(cfg, P, ad, lora, tokens, targets):
    """logits (B,T,V), mean loss, {adapter name: grad of the mean loss}; the base is frozen."""
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in ad.items()}
    logits = ref.forward(cfg, effective_params(cfg, P, leaves, lora), tokens)
    s, n = ref.loss_sum_count(logits, targets)
    loss = s / n
    loss.backward()
    return logits.detach(), loss.detach(), {name: t.grad.detach() for name, t in leaves.items()}


# ---- self-checks ---------------------------------------------------------------------------

def check_merged_equals_unmerged(cfg, P, ad, lora):
    """For every adapted layer: x W_eff^T == x W^T + scale * (x A^T) B^T (the identity the
    reference relies on), on random inputs."""
    s = lora_scale(lora)
    g = torch.Generator().manual_seed(5)
    for wname, an, bn in adapter_names(cfg, lora["targets"]):
        W = P[wname]
        x = torch.randn(7, W.shape[1], generator=g, dtype=torch.float64)
        merged = x @ (W + s * ad[bn] @ ad[an]).t()
        unmerged = x @ W.t() + s * (x @ ad[an].t()) @ ad[bn].t()
        assert ref.max_rel(merged, unmerged) < 1e-12, f"merged != unmerged for {wname}"


def check_finite_differences(cfg, P, ad, lora, tokens, targets, grads, seed):
    g = torch.Generator().manual_seed(seed)
    names = sorted(ad)
    picks = [names[i] for i in torch.randperm(len(names), generator=g)[:6].tolist()]
    h = 1e-6
    for name in picks:
        flat = ad[name].view(-1)
        for idx in torch.randint(0, flat.numel(), (2,), generator=g).tolist():
            old = flat[idx].item()
            vals = []
            for d in (h, -h):
                flat[idx] = old + d
                s, n = ref.loss_sum_count(ref.forward(cfg, effective_params(cfg, P, ad, lora), tokens), targets)
                vals.append((s / n).item())
            flat[idx] = old
            fd = (vals[0] - vals[1]) / (2 * h)
            an = grads[name].view(-1)[idx].item()
            assert abs(fd - an) <= 1e-6 + 1e-5 * abs(an), f"finite differences: {name}[{idx}] fd {fd} autograd {an}"


# ---- cases ---------------------------------------------------------------------------------

ALL = MODULES
CASES = {
    # r=4, alpha=8 on every linear layer of a GQA Llama: scale 2.
    "lora_all": dict(cfg=ref.CASES["llama_gqa"]["cfg"], B=2, T=20,
                     lora=dict(r=4, lora_alpha=8, use_rslora=False, targets=ALL, b_std=0.5)),
    # rsLoRA (scale alpha / sqrt(r) = 16 / 4 = 4) on Qwen2 (q/k/v biases, tied embeddings, NKV 1).
    "rslora_qwen2": dict(cfg=ref.CASES["qwen2_bias"]["cfg"], B=2, T=16,
                         lora=dict(r=16, lora_alpha=16, use_rslora=True, targets=ALL, b_std=0.25)),
    # A subset of modules (the original LoRA paper's choice): q_proj and v_proj only.
    "lora_qv": dict(cfg=ref.CASES["llama_tied_mha"]["cfg"], B=2, T=17,
                    lora=dict(r=8, lora_alpha=16, use_rslora=False, targets=["q_proj", "v_proj"], b_std=0.5)),
}


def adapter_config(lora, base_path):
    """adapter_config.json as PEFT writes it (sorted keys)."""
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_path, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": lora["lora_alpha"],
        "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": lora["r"], "rank_pattern": {}, "revision": None,
        "target_modules": sorted(lora["targets"]), "task_type": "CAUSAL_LM", "use_dora": False,
        "use_rslora": lora["use_rslora"],
    }


def generate_case(name, case, out_dir, seed):
    cfg, lora = case["cfg"], case["lora"]
    d = os.path.join(out_dir, name)
    os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
    # Rounded to f32 first: the files hold F32, and the goldens are those of exactly these values.
    P = {n: t.float().double() for n, t in ref.init_params(cfg, seed).items()}
    ad = {n: t.float().double() for n, t in init_adapter(cfg, P, lora, seed + 1).items()}
    tokens, targets, _, _ = ref.make_batch(dict(case, segments=None), seed + 2)
    logits, loss, grads = lora_loss_and_grads(cfg, P, ad, lora, tokens, targets)
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    base_logits = ref.forward(cfg, P, tokens)
    effect = ref.max_rel(logits, base_logits)
    assert effect > 0.05, f"the adapter barely changes the logits ({effect}); the test would be weak"

    check_merged_equals_unmerged(cfg, P, ad, lora)
    check_finite_differences(cfg, P, ad, lora, tokens, targets, grads, seed + 3)
    for n, gr in grads.items():
        assert gr.abs().max().item() > 0, f"zero gradient for {n}"

    # Frozen bf16 base: 2-D base weights rounded to bf16, norms/biases and adapters kept.
    Pb = {n: (t.float().to(torch.bfloat16).double() if t.dim() == 2 else t.float().double()) for n, t in P.items()}
    logits_b, loss_b, grads_b = lora_loss_and_grads(cfg, Pb, ad, lora, tokens, targets)

    # What an exact f32 implementation gets (to state the tolerance).
    P32 = {n: t.float() for n, t in P.items()}
    ad32 = {n: t.float() for n, t in ad.items()}
    l32, loss32, g32 = lora_loss_and_grads(cfg, P32, ad32, lora, tokens, targets)
    f32_err = max([ref.max_rel(l32, logits)] + [ref.max_rel(g32[n], grads[n]) for n in grads])

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(d, "model.safetensors"), {n: ("F32", t.float().numpy()) for n, t in P.items()})
    with open(os.path.join(d, "adapter", "adapter_config.json"), "w") as f:
        json.dump(adapter_config(lora, ".."), f, indent=2, sort_keys=True)
        f.write("\n")
    ref.write_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"),
                          {n: ("F32", t.float().numpy()) for n, t in ad.items()})

    def f32(t):
        return ("F32", t.detach().float().numpy())

    B, T, V = case["B"], case["T"], cfg["vocab_size"]
    golden = {"tokens": ("I32", tokens.to(torch.int32).numpy()), "targets": ("I32", targets.to(torch.int32).numpy()),
              "logits": f32(logits.reshape(B * T, V)), "loss": f32(loss.reshape(1)),
              "logits_bf16_base": f32(logits_b.reshape(B * T, V)), "loss_bf16_base": f32(loss_b.reshape(1))}
    for n, gr in grads.items():
        golden["grad." + n] = f32(gr)
        golden["grad_bf16_base." + n] = f32(grads_b[n])
    ref.write_safetensors(os.path.join(d, "golden.safetensors"), golden)

    # Round trip: the files hold what we computed with (adapters as F32).
    back = ref.read_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"))
    for n, t in ad.items():
        assert torch.equal(back[n], t), f"safetensors round trip of {n}"
    n_trained = int((targets != ref.IGNORE).sum())
    print(f"{name:14s} B={B} T={T} V={V} r={lora['r']} scale={lora_scale(lora):g} adapters={len(ad) // 2} "
          f"trained={n_trained} loss={loss.item():.6f} (base {ref.loss_sum_count(base_logits, targets)[0].item() / n_trained:.6f}) "
          f"f32-vs-f64 worst rel err {f32_err:.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (one subfolder per case)")
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for i, name in enumerate(CASES):
        generate_case(name, CASES[name], args.out, args.seed + 100 * i)


if __name__ == "__main__":
    main()
