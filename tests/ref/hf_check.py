#!/usr/bin/python3
"""Ecosystem check: tuner's logits against Hugging Face transformers + PEFT on the same files.

Given a base model folder, a PEFT LoRA adapter folder written by `tuner train`, the merged folder
written by `tuner merge`, token ids, and the .npy logits `tuner logits` wrote for (base + adapter)
and for (merged), this loads

  base + adapter   transformers AutoModelForCausalLM + peft PeftModel.from_pretrained
  merged           transformers AutoModelForCausalLM alone

computes their logits (T, V) in float32 (TF32 off) on the device it has (cuda when available),
and compares each with tuner's: max abs diff, max abs diff relative to max|logit| of the
reference, and argmax agreement per position. It also checks that the adapter changes the
logits (a check of an adapter that does nothing would pass vacuously).

--backend ref replaces transformers/PEFT by this project's independent implementation
(tests/ref/llama_ref.py; LoRA as tests/ref/lora_ref.py defines it: W + scale * B A), in float64
on the CPU, so the comparison logic runs in CI where transformers is not installed.

  tuner logits BASE --adapter ADAPTER --ids 1,2,3 --out adapter.npy
  tuner logits MERGED --ids 1,2,3 --out merged.npy
  python3 tests/ref/hf_check.py --base BASE --adapter ADAPTER --merged MERGED --ids 1,2,3 \\
      --logits adapter.npy --merged-logits merged.npy [--backend hf|ref] [--device auto|cpu|cuda]

Every part is optional except --base, --ids and at least one logits file: --logits alone (no
--adapter) compares the base model. --base-logits also compares tuner's logits of the base.

Exit status: 0 every comparison within tolerance; 1 a comparison beyond tolerance (or an adapter
that changes nothing); 2 the check could not run (transformers/peft/torch/numpy missing, cuda asked
for but absent, files missing or malformed, a QLoRA adapter).
"""

import argparse
import json
import os
import sys

EXIT_FAIL, EXIT_CANNOT = 1, 2


def cannot(msg):
    print(f"hf_check: cannot run: {msg}", file=sys.stderr)
    sys.exit(EXIT_CANNOT)


try:
    import numpy as np
    import torch
except ImportError as e:  # noqa: F841
    cannot(f"needs torch and numpy ({e}); install python3-torch and python3-numpy")

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_ids(text):
    try:
        ids = [int(w) for w in text.replace(",", " ").split()]
    except ValueError:
        cannot(f"--ids {text!r}: expected comma-separated integers such as 1,450,4799")
    if not ids:
        cannot("--ids: no token ids")
    return ids


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        cannot(f"{path}: {e}")


def check_folder(path, what, files):
    if not os.path.isdir(path):
        cannot(f"{what} {path}: not a folder")
    for f in files:
        if not os.path.exists(os.path.join(path, f)):
            cannot(f"{what} {path}: no {f}")


def check_adapter_folder(path):
    check_folder(path, "--adapter", ["adapter_config.json"])
    if not os.path.exists(os.path.join(path, "adapter_model.safetensors")):
        cannot(f"--adapter {path}: no adapter_model.safetensors")
    base = os.path.join(path, "tuner_base.json")
    if os.path.exists(base) and read_json(base).get("base_quantization"):
        cannot(f"--adapter {path}: a QLoRA adapter (tuner_base.json: NF4 base); this check compares "
               "unquantised bases only (train with method: lora)")
    cfg = read_json(os.path.join(path, "adapter_config.json"))
    if cfg.get("peft_type", "LORA") != "LORA":
        cannot(f"--adapter {path}: peft_type {cfg.get('peft_type')!r}, only LORA is checked")


def load_npy(path, T, V):
    try:
        a = np.load(path)
    except (OSError, ValueError) as e:
        cannot(f"{path}: not a readable .npy file ({e})")
    if a.dtype != np.float32:
        cannot(f"{path}: dtype {a.dtype}, expected float32 (tuner logits writes '<f4')")
    if a.shape != (T, V):
        cannot(f"{path}: shape {a.shape}, expected (T, V) = ({T}, {V}) for the {T} ids given")
    return a.astype(np.float64)


# ---- backends -------------------------------------------------------------------------------------
# Each returns an object with .name and logits(kind) -> float64 numpy (T, V) for kind in
# "base", "adapter" (base + adapter), "merged".

class RefBackend:
    """llama_ref.py's forward in float64 on the CPU; LoRA folded in as W + scale * B A."""

    def __init__(self, args, ids):
        sys.path.insert(0, HERE)
        import llama_ref  # noqa: E402
        import lora_ref  # noqa: E402
        self.ref, self.lora_ref = llama_ref, lora_ref
        self.args = args
        self.tokens = torch.tensor([ids], dtype=torch.int64)
        self.name = "ref (tests/ref/llama_ref.py + lora_ref.py, cpu float64)"
        self.device = "cpu"

    def _weights(self, folder):
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            files = sorted(set(read_json(index)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        P = {}
        for f in files:
            path = os.path.join(folder, f)
            if not os.path.exists(path):
                cannot(f"{folder}: no {f}")
            P.update(self.ref.read_safetensors(path))
        return {n: t.double() for n, t in P.items() if not n.endswith("rotary_emb.inv_freq")}

    def _forward(self, folder, P):
        cfg = read_json(os.path.join(folder, "config.json"))
        with torch.no_grad():
            return self.ref.forward(cfg, P, self.tokens)[0].numpy()

    def logits(self, kind):
        if kind == "merged":
            return self._forward(self.args.merged, self._weights(self.args.merged))
        P = self._weights(self.args.base)
        if kind == "adapter":
            P = self._apply_adapter(P)
        return self._forward(self.args.base, P)

    def _apply_adapter(self, P):
        d = self.args.adapter
        acfg = read_json(os.path.join(d, "adapter_config.json"))
        scale = self.lora_ref.lora_scale({"r": acfg["r"], "lora_alpha": acfg["lora_alpha"],
                                          "use_rslora": bool(acfg.get("use_rslora", False))})
        T = self.ref.read_safetensors(os.path.join(d, "adapter_model.safetensors"))
        pairs = {}
        for name, t in T.items():
            for which in ("lora_A", "lora_B"):
                for tail in (f".{which}.weight", f".{which}.default.weight"):
                    if name.endswith(tail):
                        module = name[: -len(tail)]
                        if module.startswith("base_model.model."):
                            module = module[len("base_model.model."):]
                        pairs.setdefault(module, {})[which] = t.double()
        if not pairs:
            cannot(f"--adapter {d}: adapter_model.safetensors holds no lora_A/lora_B tensors")
        Q = dict(P)
        for module, ab in pairs.items():
            w = module + ".weight"
            if w not in Q or "lora_A" not in ab or "lora_B" not in ab:
                cannot(f"--adapter {d}: {module}: no base weight {w} or a missing lora_A/lora_B")
            Q[w] = Q[w] + scale * (ab["lora_B"] @ ab["lora_A"])
        return Q


class HfBackend:
    """transformers AutoModelForCausalLM (+ peft PeftModel) in float32, TF32 off."""

    def __init__(self, args, ids):
        try:
            import transformers
            from transformers import AutoModelForCausalLM
        except ImportError as e:
            cannot(f"transformers is not installed ({e}); pip install transformers, or use --backend ref "
                   "for this project's own reference")
        self.peft = None
        if args.adapter:
            try:
                import peft
                self.peft = peft
            except ImportError as e:
                cannot(f"peft is not installed ({e}); pip install peft (needed for --adapter)")
        self.transformers, self.Auto = transformers, AutoModelForCausalLM
        self.args = args
        if args.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            cannot("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
        else:
            self.device = args.device
        # float32 means float32: no TF32 in matmuls (torch's default for matmul, not for cuDNN).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.tokens = torch.tensor([ids], dtype=torch.int64, device=self.device)
        versions = f"transformers {transformers.__version__}"
        if self.peft:
            versions += f" + peft {self.peft.__version__}"
        gpu = f" {torch.cuda.get_device_name(0)}" if self.device == "cuda" else ""
        self.name = f"hf ({versions}, torch {torch.__version__}, {self.device}{gpu} float32)"
        self._adapted = None

    def _load(self, folder):
        # transformers 4.56 renamed torch_dtype to dtype (5.x warns on the old name).
        major, minor = (int(x) for x in self.transformers.__version__.split(".")[:2])
        dtype_kw = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}
        # Eager attention: the plain softmax(QK^T)V, no fused kernel's own rounding.
        try:
            m = self.Auto.from_pretrained(folder, attn_implementation="eager", **dtype_kw)
        except (TypeError, ValueError):
            m = self.Auto.from_pretrained(folder, **dtype_kw)
        return m.to(self.device).eval()

    def _run(self, model):
        with torch.no_grad():
            out = model(input_ids=self.tokens, use_cache=False)
        return out.logits[0].float().cpu().numpy().astype(np.float64)

    def logits(self, kind):
        if kind == "merged":
            return self._run(self._load(self.args.merged))
        if kind == "base" and not self.args.adapter:
            return self._run(self._load(self.args.base))
        if self._adapted is None:
            self._adapted = self.peft.PeftModel.from_pretrained(self._load(self.args.base), self.args.adapter).eval()
        if kind == "adapter":
            return self._run(self._adapted)
        with self._adapted.disable_adapter():
            return self._run(self._adapted)


# ---- comparison -----------------------------------------------------------------------------------

def compare(label, ours, ref, tol, min_argmax):
    """Prints one line; returns (ok, relative diff)."""
    diff = np.abs(ours - ref)
    max_abs = float(diff.max())
    scale = float(np.abs(ref).max())
    rel = max_abs / scale if scale > 0 else max_abs
    a_ours, a_ref = ours.argmax(axis=-1), ref.argmax(axis=-1)
    agree = int((a_ours == a_ref).sum())
    T = ref.shape[0]
    finite = bool(np.isfinite(ours).all())
    ok = finite and rel <= tol and agree >= min_argmax * T
    print(f"  {label:<22} max|diff| {max_abs:.3e}  rel {rel:.3e} (max|logit| {scale:.3f}, tol {tol:g})  "
          f"argmax {agree}/{T}  {'ok' if ok else 'FAILED'}{'' if finite else '  (tuner logits not finite)'}")
    if not ok and agree < T:
        bad = [int(t) for t in np.nonzero(a_ours != a_ref)[0][:5]]
        print(f"  {'':<22} argmax differs at positions {bad}: tuner {[int(a_ours[t]) for t in bad]}, "
              f"reference {[int(a_ref[t]) for t in bad]}")
    return ok, rel


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--base", required=True, help="base model folder (HF layout)")
    ap.add_argument("--adapter", help="PEFT LoRA adapter folder (tuner train's output_dir/adapter)")
    ap.add_argument("--merged", help="merged model folder (tuner merge's output)")
    ap.add_argument("--ids", required=True, help="token ids, comma-separated (the ones given to tuner logits)")
    ap.add_argument("--logits", help="tuner's logits .npy of base + adapter (of the base when no --adapter)")
    ap.add_argument("--merged-logits", help="tuner's logits .npy of the merged folder")
    ap.add_argument("--base-logits", help="tuner's logits .npy of the base alone (optional)")
    ap.add_argument("--backend", choices=["hf", "ref"], default="hf",
                    help="hf: transformers + peft (default); ref: tests/ref/llama_ref.py + lora_ref.py")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the hf backend runs (auto: cuda when available); ref always runs on the cpu")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="largest allowed max|diff| / max|reference logit| (default 1e-3: f32 vs f32; "
                         "use ~2e-2 for bf16 compute)")
    ap.add_argument("--min-argmax", type=float, default=0.95,
                    help="smallest allowed fraction of positions whose argmax agrees (default 0.95)")
    ap.add_argument("--allow-noop-adapter", action="store_true",
                    help="do not fail when the adapter leaves the logits unchanged")
    args = ap.parse_args(argv)

    ids = parse_ids(args.ids)
    check_folder(args.base, "--base", ["config.json"])
    if args.adapter:
        check_adapter_folder(args.adapter)
    if args.merged:
        check_folder(args.merged, "--merged", ["config.json"])
    if args.merged_logits and not args.merged:
        cannot("--merged-logits needs --merged (the folder the logits came from)")
    if args.merged and not args.merged_logits:
        cannot("--merged needs --merged-logits (tuner logits MERGED --ids ... --out FILE)")
    if not (args.logits or args.merged_logits or args.base_logits):
        cannot("nothing to compare: give --logits, --merged-logits and/or --base-logits")
    V = int(read_json(os.path.join(args.base, "config.json"))["vocab_size"])
    T = len(ids)
    if max(ids) >= V or min(ids) < 0:
        cannot(f"--ids: id {max(ids) if max(ids) >= V else min(ids)} is outside the vocabulary [0, {V})")
    ours = {}
    if args.logits:
        ours["adapter" if args.adapter else "base"] = load_npy(args.logits, T, V)
    if args.base_logits:
        ours["base"] = load_npy(args.base_logits, T, V)
    if args.merged_logits:
        ours["merged"] = load_npy(args.merged_logits, T, V)

    backend = RefBackend(args, ids) if args.backend == "ref" else HfBackend(args, ids)
    print(f"hf_check: {T} tokens, vocab {V}, reference: {backend.name}")
    labels = {"base": "tuner(base)", "adapter": "tuner(base+adapter)", "merged": "tuner(merged)"}
    ok_all, worst = True, 0.0
    refs = {}
    for kind in ("base", "adapter", "merged"):
        if kind not in ours:
            continue
        refs[kind] = backend.logits(kind)
        ok, rel = compare(labels[kind], ours[kind], refs[kind], args.tol, args.min_argmax)
        ok_all &= ok
        worst = max(worst, rel)
    if args.adapter:
        # The adapter must matter, or the adapter comparisons above prove nothing.
        base = refs["base"] if "base" in refs else backend.logits("base")
        with_adapter = refs["adapter"] if "adapter" in refs else backend.logits("adapter")
        effect = float(np.abs(with_adapter - base).max()) / max(float(np.abs(base).max()), 1e-30)
        enough = effect > 10 * args.tol
        print(f"  {'adapter effect':<22} max|ref(base+adapter) - ref(base)| / max|logit| = {effect:.3e}  "
              f"{'ok' if enough else ('(allowed)' if args.allow_noop_adapter else 'FAILED: the adapter barely changes the logits, so matching them proves little (train it for more steps or with a larger lr)')}")
        if not enough and not args.allow_noop_adapter:
            ok_all = False
    n = len(ours)
    if ok_all:
        print(f"hf_check: ok ({n} comparison{'s' if n != 1 else ''}, worst rel {worst:.2e}, backend {args.backend})")
        return 0
    print(f"hf_check: FAILED (tolerance rel {args.tol:g}, argmax >= {args.min_argmax:g}; backend {args.backend})")
    return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
