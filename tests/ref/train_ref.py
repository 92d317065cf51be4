#!/usr/bin/python3
"""PyTorch reference for whole optimizer steps (tests/test_train_golden.cpp).

Several training steps as the trainer runs them, in float64:

  for each step k (batch k, learning rate lrs[k]):
      loss = mean of -log p(target) over the trained tokens of batch k
      loss.backward()
      norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
      torch.optim.AdamW(betas (0.9, 0.999), eps 1e-8, weight_decay 0.01), lr = lrs[k]

for two cases on the same small GQA Llama (llama_ref.py's llama_gqa config):
  full   every base parameter trained
  lora   the base frozen; LoRA r=4, alpha=8 on every linear layer, dropout 0, B random (not
         PEFT's zero init) so the first step already moves A. The adapter math is lora_ref.py's
         (merged form W + scale * B A, with A and B as the trained leaves).

  /usr/bin/python3 tests/ref/train_ref.py --out DIR

writes per case DIR/<case>/ with
  config.json, model.safetensors       the initial model (F32)
  adapter/                             (lora) the initial adapter in PEFT layout (F32)
  golden.safetensors                   tokens, targets (I32, steps x B x T) and final.<name>: every
                                       trained tensor after the last step (F32, from float64)
  train.json                           lrs, losses and grad_norms per step (float64, the norm
                                       before clipping), the optimizer settings, and what a float32
                                       run of the same steps gets against the float64 one
                                       ("f32_run": worst relative loss / norm error and worst
                                       |w32 - w64| in units of the step's lr; this is what the C++
                                       tolerances are measured against).
Initial values are rounded to f32 first so both sides start from exactly the same numbers.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref as ref  # noqa: E402
import lora_ref  # noqa: E402

STEPS = 4
B, T = 2, 16
# A short warmup then a linear decay, given explicitly per step (the C++ side uses the same list).
LRS = [4e-3, 1e-2, 7e-3, 3e-3]
ADAMW = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
MAX_NORM = 1.0

CFG = ref.CASES["llama_gqa"]["cfg"]
LORA = dict(r=4, lora_alpha=8, use_rslora=False, targets=lora_ref.ALL, b_std=0.5)


def make_batches(seed):
    out = []
    for k in range(STEPS):
        tokens, targets, _, _ = ref.make_batch(dict(cfg=CFG, B=B, T=T, segments=None), seed + k)
        assert int((targets != ref.IGNORE).sum()) > 0
        out.append((tokens, targets))
    return out


def train(base, adapter, batches, dtype):
    """Runs the steps in `dtype`. adapter None: full fine-tuning of base. Returns (losses,
    grad_norms, {name: final trained tensor})."""
    base = {n: t.to(dtype) for n, t in base.items()}
    if adapter is None:
        leaves = {n: t.clone().requires_grad_(True) for n, t in base.items()}
    else:
        leaves = {n: t.to(dtype).clone().requires_grad_(True) for n, t in adapter.items()}
    params = list(leaves.values())
    opt = torch.optim.AdamW(params, lr=LRS[0], foreach=False, **ADAMW)
    losses, norms = [], []
    for (tokens, targets), lr in zip(batches, LRS):
        opt.zero_grad(set_to_none=True)
        P = leaves if adapter is None else lora_ref.effective_params(CFG, base, leaves, LORA)
        s, n = ref.loss_sum_count(ref.forward(CFG, P, tokens), targets)
        loss = s / n
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return losses, norms, {n: t.detach() for n, t in leaves.items()}


def generate_case(name, out_dir, seed):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    P = {n: t.float().double() for n, t in ref.init_params(CFG, seed).items()}
    ad = None
    if name == "lora":
        ad = {n: t.float().double() for n, t in lora_ref.init_adapter(CFG, P, LORA, seed + 1).items()}
    batches = make_batches(seed + 2)

    losses, norms, final = train(P, ad, batches, torch.float64)
    assert all(torch.isfinite(t).all() for t in final.values())
    start = P if ad is None else ad
    for n, t in final.items():
        assert not torch.equal(t, start[n]), f"{n} did not move"
    clipped = [nm > MAX_NORM for nm in norms]  # (with these weights every step clips)

    # What a float32 run of the same steps gets (the scale of the C++ tolerances).
    l32, n32, f32 = train(P, ad, batches, torch.float32)
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(l32, losses))
    norm_err = max(abs(a - b) / abs(b) for a, b in zip(n32, norms))
    w_err = max((f32[n].double() - final[n]).abs().max().item() for n in final)
    moved = max((final[n] - start[n]).abs().max().item() for n in final)

    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CFG, f, indent=2)
        f.write("\n")
    ref.write_safetensors(os.path.join(d, "model.safetensors"), {n: ("F32", t.float().numpy()) for n, t in P.items()})
    if ad is not None:
        os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
        with open(os.path.join(d, "adapter", "adapter_config.json"), "w") as f:
            json.dump(lora_ref.adapter_config(LORA, ".."), f, indent=2, sort_keys=True)
            f.write("\n")
        ref.write_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"),
                              {n: ("F32", t.float().numpy()) for n, t in ad.items()})
    golden = {
        "tokens": ("I32", torch.stack([b[0] for b in batches]).to(torch.int32).numpy()),
        "targets": ("I32", torch.stack([b[1] for b in batches]).to(torch.int32).numpy()),
    }
    for n, t in final.items():
        golden["final." + n] = ("F32", t.float().numpy())
    ref.write_safetensors(os.path.join(d, "golden.safetensors"), golden)
    info = {
        "steps": STEPS, "lrs": LRS, "betas": list(ADAMW["betas"]), "eps": ADAMW["eps"],
        "weight_decay": ADAMW["weight_decay"], "max_grad_norm": MAX_NORM,
        "losses": losses, "grad_norms": norms, "clipped": clipped,
        "f32_run": {"loss_rel_err": loss_err, "grad_norm_rel_err": norm_err, "weight_abs_err": w_err,
                    "weight_abs_err_in_lr": w_err / max(LRS), "max_weight_change": moved},
    }
    with open(os.path.join(d, "train.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"{name:5s} trained tensors={len(final)} losses={['%.5f' % x for x in losses]} "
          f"norms={['%.4f' % x for x in norms]} max|dw|={moved:.3e} | f32 run: loss rel {loss_err:.1e} "
          f"norm rel {norm_err:.1e} max|w32-w64| {w_err:.2e} ({w_err / max(LRS):.2e} lr)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (one subfolder per case)")
    ap.add_argument("--seed", type=int, default=2468)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for i, name in enumerate(["full", "lora"]):
        generate_case(name, args.out, args.seed + 100 * i)


if __name__ == "__main__":
    main()
