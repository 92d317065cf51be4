#!/usr/bin/python3
"""PyTorch baseline for one training step (full or LoRA) of a Llama-family model on the CPU.

The model is the independent implementation of tests/ref/llama_ref.py, run in float32 (plain
matmul + softmax attention with a causal mask: torch 1.13 has no scaled_dot_product_attention),
with F.cross_entropy for the loss. Weights are random (normal 0.02, norms 1), tokens random.
A step is forward + backward (+ gradient clipping and an AdamW step with --optimizer); one
warm-up step is not timed. With --lora-r the base is frozen and every q/k/v/o/gate/up/down
projection gets a LoRA adapter computed as PEFT computes it (unmerged: x W^T + scale *
dropout(x) A^T B^T, A Kaiming-uniform, B zero), so the comparison is with what PEFT users run.

  /usr/bin/python3 bench/bench_torch.py --preset smol-135m --seq 512 --steps 2 --threads 2 [--json]
  /usr/bin/python3 bench/bench_torch.py --config models/x/config.json --seq 1024
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import llama_ref  # noqa: E402

PRESETS = {
    # SmolLM-135M shapes.
    "smol-135m": llama_ref.make_config("LlamaForCausalLM", 49152, 576, 9, 3, 1536, L=30, hd=64, tied=True,
                                       eps=1e-5, theta=10000.0, bias=False, max_pos=2048),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="an HF config.json")
    src.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--seq", type=int, default=512, help="tokens per row (T)")
    ap.add_argument("--batch", type=int, default=1, help="rows per step (B)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", action="store_true", help="include a torch.optim.AdamW step")
    ap.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
        name = args.config
    else:
        cfg = PRESETS[args.preset]
        name = args.preset

    P = llama_ref.init_params(cfg, args.seed, dtype=torch.float32, std=0.02)
    n_params = sum(t.numel() for t in P.values())
    linear = None
    if args.lora_r > 0:
        r, scale, p_drop = args.lora_r, args.lora_alpha / args.lora_r, args.lora_dropout
        adapters = {}
        for pname, w in P.items():
            if any(m in pname for m in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")):
                out_f, in_f = w.shape
                A = torch.empty(r, in_f)
                torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
                adapters[pname] = (A.requires_grad_(True), torch.zeros(out_f, r, requires_grad=True))

        def linear(h, name):
            y = h @ P[name].t()
            if name in adapters:
                A, B_ = adapters[name]
                y = y + (F.dropout(h, p_drop, training=True) @ A.t() @ B_.t()) * scale
            return y

        trained = [t for pair in adapters.values() for t in pair]
    else:
        trained = list(P.values())
    for t in trained:
        t.requires_grad_(True)
    n_trained = sum(t.numel() for t in trained)
    opt = torch.optim.AdamW(trained, lr=1e-5, weight_decay=0.0) if args.optimizer else None

    B, T, V = args.batch, args.seq, cfg["vocab_size"]
    g = torch.Generator().manual_seed(args.seed + 1)
    seq = torch.randint(0, V, (B, T + 1), generator=g)
    tokens, targets = seq[:, :T], seq[:, 1:]

    def step():
        for t in trained:
            t.grad = None
        logits = llama_ref.forward(cfg, P, tokens, linear=linear)
        loss = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(-1), ignore_index=llama_ref.IGNORE)
        loss.backward()
        if opt is not None:
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
        return loss.item()

    step()  # warm-up
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    step_s = sum(times) / len(times)
    # CPU time of all threads: on a shared machine (run with OMP_WAIT_POLICY=passive) it stays
    # comparable while wall time swings with other jobs; tuner bench reports the same figure.
    best_cpu = min(cpu_times)
    result = {
        "tokens_per_s": B * T / step_s,
        "step_s": step_s,
        "best_step_cpu_s": best_cpu,
        "tokens_per_cpu_s": B * T / best_cpu,
        "threads": args.threads,
        "seq": T,
        "batch": B,
        "steps": args.steps,
        "optimizer": "adamw" if opt is not None else "none",
        "model": name,
        "params": n_params,
        "trainable_params": n_trained,
        "method": f"lora r={args.lora_r}" if args.lora_r > 0 else "full",
        "loss": loss,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name}: {n_params / 1e6:.1f}M params, B={B} T={T}, {args.threads} threads, "
              f"optimizer {result['optimizer']}: {step_s:.3f} s/step, {result['tokens_per_s']:.1f} tokens/s "
              f"(loss {loss:.4f})")


if __name__ == "__main__":
    main()
