#!/usr/bin/env python3
"""Reference for tests/test_train_core.cpp: torch.optim.AdamW steps and clip_grad_norm_.

Writes OUT/adamw.json: initial params and per-step grads (generated here with a fixed seed),
and the params, exp_avg, exp_avg_sq after each step, for a few hyper-parameter settings, plus
the norm returned by clip_grad_norm_ and the clipped grads. All values f32, as lists.
Usage: /usr/bin/python3 tests/ref/adamw_ref.py OUT_DIR
"""
import json
import os
import sys

import torch


def case(name, lr_per_step, weight_decay, betas, eps, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float32)) for s in shapes]
    init = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr_per_step[0], betas=betas, eps=eps, weight_decay=weight_decay,
                            foreach=False)
    steps = []
    for lr in lr_per_step:
        for group in opt.param_groups:
            group["lr"] = lr
        grads = [torch.randn(*s, generator=g, dtype=torch.float32) * 0.1 for s in shapes]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        steps.append({
            "lr": lr,
            "grads": [gr.flatten().tolist() for gr in grads],
            "params": [p.detach().flatten().tolist() for p in params],
            "exp_avg": [opt.state[p]["exp_avg"].flatten().tolist() for p in params],
            "exp_avg_sq": [opt.state[p]["exp_avg_sq"].flatten().tolist() for p in params],
        })
    return {"name": name, "weight_decay": weight_decay, "betas": list(betas), "eps": eps,
            "shapes": [list(s) for s in shapes], "init": [p.flatten().tolist() for p in init], "steps": steps}


def clip_case(max_norm, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (13,), (3, 3)]
    params = [torch.nn.Parameter(torch.zeros(*s)) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return {"max_norm": max_norm, "shapes": [list(s) for s in shapes], "grads": [gr.flatten().tolist() for gr in grads],
            "norm": float(norm), "clipped": [p.grad.flatten().tolist() for p in params]}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    shapes = [(17, 9), (31,), (4, 4, 2)]
    data = {
        "adamw": [
            case("plain", [1e-3] * 6, 0.0, (0.9, 0.999), 1e-8, shapes, 1),
            case("decay_schedule", [1e-5, 5e-4, 2e-3, 1e-3, 3e-4, 0.0, 1e-4], 0.1, (0.9, 0.95), 1e-6, shapes, 2),
        ],
        "clip": [clip_case(1.0, 3), clip_case(100.0, 4)],
    }
    tmp = os.path.join(out, "adamw.json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(out, "adamw.json"))


if __name__ == "__main__":
    main()
