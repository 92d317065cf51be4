#!/usr/bin/python3
"""PyTorch + transformers + PEFT baseline for one training step on a GPU (what `tuner bench
--device cuda --lora-r R --optimizer` times), for bench/compare_gpu.sh.

The model is LlamaForCausalLM (any AutoModelForCausalLM type) built from a config.json with
random weights (`tuner init-model PRESET DIR --config-only` writes one). Attention is
flash_attention_2 when the flash_attn package is importable, else sdpa (--attn to force one);
the output says which. Tokens are random; the loss is HF's (labels = input_ids, shifted inside
the model). A step is forward + backward + clip_grad_norm_(1.0) + torch.optim.AdamW.step on the
trained parameters, under torch.autocast(bfloat16) as HF Trainer(bf16=True) runs it. One warm-up
step, then --steps timed steps, each between torch.cuda.synchronize() calls.

Methods (each stated in the JSON's "precision"):
  LoRA (default)  base weights bf16, frozen; PEFT LoraConfig(r, lora_alpha 16, lora_dropout 0.1,
                  all 7 linear projections); PEFT keeps the adapters in float32
                  (autocast_adapter_dtype); AdamW over the adapters.
  --qlora         base 4-bit NF4 (bitsandbytes, double quantisation, bf16 compute) loaded through
                  from_pretrained (the random bf16 model is saved to a temporary folder first:
                  quantization_config only applies there), then peft.prepare_model_for_kbit_training
                  (which upcasts norms, embeddings and lm_head to float32, as the QLoRA recipe does)
                  and the same LoRA.
  --full          every parameter trained. Default: float32 weights + autocast bf16 compute, so
                  AdamW updates float32 master weights with float32 moments (what HF Trainer
                  bf16=True does with a float32 model, and the numerics tuner uses). --pure-bf16:
                  bf16 weights, bf16 gradients and bf16 AdamW moments (no master copy; less memory,
                  what from_pretrained(torch_dtype=bfloat16) + a plain AdamW gives).
  --checkpointing gradient checkpointing (use_reentrant=False).

  python3 bench/bench_peft_gpu.py --config runs/bench/llama-1b/config.json --seq 2048 --lora-r 64 --json

Prints one JSON line with --json (tokens_per_s, step_s, peak_gpu_mib, attn_implementation, ...),
else a sentence. Exit 2 without CUDA, transformers or peft (or bitsandbytes for --qlora); 1 when the
step itself fails (out of memory, ...).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def cannot(msg):
    print(f"bench_peft_gpu: cannot run: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", required=True, help="an HF config.json (or the folder holding it)")
    ap.add_argument("--seq", type=int, default=2048, help="tokens per row (T)")
    ap.add_argument("--batch", type=int, default=1, help="rows per step (B)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    ap.add_argument("--lora-r", type=int, default=64, help="LoRA rank")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    mode.add_argument("--qlora", action="store_true", help="4-bit NF4 base (bitsandbytes) + LoRA")
    ap.add_argument("--pure-bf16", action="store_true", help="--full with bf16 weights and AdamW states")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    ap.add_argument("--attn", choices=["auto", "flash_attention_2", "sdpa", "eager"], default="auto")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for --qlora's temporary bf16 copy (default: $TMPDIR)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.pure_bf16 and not args.full:
        cannot("--pure-bf16 applies to --full only")
    if args.seq < 2 or args.batch < 1 or args.steps < 1:
        cannot("--seq must be >= 2, --batch and --steps >= 1")

    try:
        import torch
    except ImportError as e:
        cannot(f"torch is not installed ({e})")
    if not torch.cuda.is_available():
        cannot(f"no CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False)")
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as e:
        cannot(f"transformers is not installed ({e})")
    peft = None
    if not args.full:
        try:
            import peft
        except ImportError as e:
            cannot(f"peft is not installed ({e}); needed for LoRA/QLoRA (--full runs without it)")
    bnb = None
    if args.qlora:
        try:
            import bitsandbytes as bnb
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            cannot(f"bitsandbytes is not importable ({e}); needed for --qlora")

    config_dir = args.config if os.path.isdir(args.config) else os.path.dirname(os.path.abspath(args.config))
    if not os.path.exists(os.path.join(config_dir, "config.json")):
        cannot(f"{args.config}: no config.json (write one with: tuner init-model PRESET DIR --config-only)")
    try:
        config = AutoConfig.from_pretrained(config_dir)
    except Exception as e:  # noqa: BLE001  (transformers raises many types for a config it cannot read)
        cannot(f"{config_dir}/config.json: transformers {transformers.__version__} cannot read it ({e})")
    config.use_cache = False

    # Attention: flash_attention_2 when importable, else sdpa.
    if args.attn == "auto":
        try:
            from transformers.utils import is_flash_attn_2_available
            fa2 = is_flash_attn_2_available()
        except ImportError:
            fa2 = False
        attn = "flash_attention_2" if fa2 else "sdpa"
        attn_note = "" if fa2 else " (flash_attn not importable)"
    else:
        attn, attn_note = args.attn, " (--attn)"

    torch.manual_seed(args.seed)
    dev = torch.device("cuda")
    bf16 = torch.bfloat16
    full_f32 = args.full and not args.pure_bf16
    weight_dtype = torch.float32 if full_f32 else bf16
    t_load = time.perf_counter()
    tmp_dir = None

    # transformers 4.56 renamed torch_dtype to dtype (5.x warns on the old name).
    tf_version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if tf_version >= (4, 56) else "torch_dtype"

    def build(attn_impl):
        # Built directly on the GPU (torch >= 2.0: torch.device as a context manager; no host copy,
        # fast init); older torch builds on the host and moves it.
        if hasattr(dev, "__enter__"):
            with dev:
                return AutoModelForCausalLM.from_config(config, attn_implementation=attn_impl, **{dtype_key: weight_dtype})
        m = AutoModelForCausalLM.from_config(config, attn_implementation=attn_impl, **{dtype_key: weight_dtype})
        return m.to(dev)

    try:
        try:
            model = build(attn)
        except (ImportError, ValueError, TypeError, RuntimeError) as e:
            if attn == "sdpa" or args.attn != "auto":
                raise
            attn_note = f" (flash_attention_2 failed: {str(e).splitlines()[0][:120]})"
            attn = "sdpa"
            model = build(attn)
        n_params = sum(p.numel() for p in model.parameters())

        if args.qlora:
            # quantization_config only applies in from_pretrained: save the random bf16 model, reload
            # it quantised to NF4.
            tmp_dir = tempfile.mkdtemp(prefix="bench-peft-qlora-", dir=args.tmp)
            model.save_pretrained(tmp_dir, safe_serialization=True)
            del model
            torch.cuda.empty_cache()
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=bf16)
            model = AutoModelForCausalLM.from_pretrained(tmp_dir, quantization_config=q, attn_implementation=attn,
                                                         device_map={"": 0}, **{dtype_key: bf16})
            try:
                model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.checkpointing,
                                                             gradient_checkpointing_kwargs={"use_reentrant": False})
            except TypeError:  # peft < 0.7: no gradient_checkpointing_kwargs
                model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.checkpointing)
        if args.checkpointing:
            try:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            except TypeError:  # transformers < 4.35
                model.gradient_checkpointing_enable()
            if not args.full:
                model.enable_input_require_grads()
        if not args.full:
            lc = peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=MODULES, bias="none", task_type="CAUSAL_LM")
            model = peft.get_peft_model(model, lc)
        model.train()
        trained = [p for p in model.parameters() if p.requires_grad]
        n_trained = sum(p.numel() for p in trained)
        adapter_dtype = str(trained[0].dtype).replace("torch.", "") if trained else "none"
        opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.0)
        torch.cuda.synchronize()
        load_s = time.perf_counter() - t_load

        B, T, V = args.batch, args.seq, config.vocab_size
        g = torch.Generator(device="cuda").manual_seed(args.seed + 1)
        tokens = torch.randint(0, V, (B, T), generator=g, device=dev)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=bf16):
                loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            return loss

        torch.cuda.reset_peak_memory_stats()
        step()  # warm-up: kernels selected, optimizer state allocated
        torch.cuda.synchronize()
        times = []
        for _ in range(args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        loss = float(loss.item())
    except torch.cuda.OutOfMemoryError as e:
        print(f"bench_peft_gpu: FAILED: out of GPU memory ({str(e).splitlines()[0]}); try a smaller --seq or "
              "--checkpointing", file=sys.stderr)
        return 1
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    if args.qlora:
        method = f"qlora r={args.lora_r}"
        precision = ("base NF4 (bitsandbytes, double quant, bf16 compute), prepare_model_for_kbit_training "
                     f"(norms/embeddings/lm_head float32), adapters {adapter_dtype}, autocast bf16")
    elif args.full:
        method = "full"
        precision = ("bf16 weights, bf16 grads, bf16 AdamW moments (no float32 master copy)" if args.pure_bf16 else
                     "float32 weights and AdamW moments (master), autocast bf16 compute")
    else:
        method = f"lora r={args.lora_r}"
        precision = f"base bf16 (frozen), adapters {adapter_dtype}, autocast bf16"
    step_s = sum(times) / len(times)
    result = {
        "tokens_per_s": B * T / step_s,
        "step_s": step_s,
        "best_step_s": min(times),
        "seq": T,
        "batch": B,
        "steps": args.steps,
        "optimizer": "adamw",
        "model": config_dir,
        "model_type": config.model_type,
        "params": n_params,
        "trainable_params": n_trained,
        "method": method,
        "checkpointing": bool(args.checkpointing),
        "precision": precision,
        "attn_implementation": attn + attn_note,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
        "peak_gpu_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        "load_s": load_s,
        "loss": loss,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__ if peft else None,
        "bitsandbytes": bnb.__version__ if bnb else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{config_dir}: {n_params / 1e6:.1f}M params, {method}, B={B} T={T}, attention {result['attn_implementation']}: "
              f"{step_s:.3f} s/step, {result['tokens_per_s']:.0f} tokens/s, peak {result['peak_gpu_mib']:.0f} MiB "
              f"(loss {loss:.4f}; {precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
