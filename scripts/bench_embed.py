"""Benchmark the embedding stage against a naive Hugging Face loop, and the cost of --with-loss.

Both run in the same process on the same randomly initialised Llama-shaped model (built from a config
and saved with save_pretrained, as users' real checkpoints are) and the same pool with a long-tailed
length mix (log-normal token counts, median ~180, clipped to 2048), so the ratio is meaningful on a
noisy machine.

naive:   input order, fixed batches of 8 padded to the longest, AutoModelForCausalLM with
         output_hidden_states=True (full logits), RDS+ pooling of the last layer.
ours:    `EmbedStage` (length-sorted token-budget batches, base model only, inference_mode).
loss:    `EmbedStage --with-loss` (LM head on response positions only, in chunks).

    python scripts/bench_embed.py                      # CPU defaults (a few minutes on 2 cores)
    python scripts/bench_embed.py --device cuda --rows 4000 --hidden 2048 --layers 16 --vocab 128256

Packed against padded batches (issue 19), in the same run, with model-FLOPs utilisation
(MFU = model FLOPs per token x tok/s / the GPU's dense bf16 peak; FLOPs per token = 2 x the
parameters outside the embedding table + the attention's 2 x layers x tokens-in-context x hidden):

    python scripts/bench_embed.py --device cuda --batchings padded,packed --shape 8b --rows 2000 --skip-naive
    python scripts/bench_embed.py --device cuda --batchings padded,packed --shape 1b --rows 4000 --skip-naive
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build_model(path: Path, hidden: int, layers: int, inter: int, vocab: int, heads: int, device: str = "cpu",
                dtype: torch.dtype | None = None) -> Path:
    """A randomly initialised Llama of this shape, saved with save_pretrained (built on ``device``, in ``dtype``:
    an 8B model initialised on a GPU takes seconds, on a CPU minutes)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tinymodel import build_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path)
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                      max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype or default)
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(path)
    del model
    return path


def build_pool(path: Path, rows: int, seed: int = 0) -> Path:
    from tinymodel import corpus

    words = " ".join(corpus()).split()
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(180), 1.0, rows), 16, 2048).astype(int)
    with open(path, "w") as fh:
        for i, n in enumerate(lengths):
            w = rng.choice(words, size=int(n * 0.8))
            cut = max(1, len(w) // 3)
            fh.write(json.dumps({"id": f"b{i}", "prompt": " ".join(w[:cut]), "completion": " ".join(w[cut:])}) + "\n")
    return path


def naive(model_path: str, pool: Path, device: str, dtype, max_length: int = 2048) -> tuple[float, int, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataselect.embedding.pooling import pool_hidden
    from dataselect.embedding.text import render_tulu
    from dataselect.pool import PoolReader

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    texts = [tok.bos_token + render_tulu(r.messages, tok.eos_token)[0] for r in PoolReader(pool)]
    real = padded = 0
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), 8):
            enc = tok(texts[i:i + 8], padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                      add_special_tokens=False).to(device)
            out = model(**enc, output_hidden_states=True)
            pool_hidden(out.hidden_states[-1], enc["attention_mask"].bool(), "rds+").cpu()
            real += int(enc["attention_mask"].sum())
            padded += enc["attention_mask"].numel()
    sync()
    return time.perf_counter() - t0, real, 1 - real / padded


def ours(model_path: str, pool: Path, out: Path, device: str, dtype: str, with_loss: bool) -> tuple[float, int, float]:
    from dataselect.embedding.batching import padding_waste, token_budget_batches

    wall, tokens, stage = batching_run(model_path, pool, out, device, dtype, "auto", with_loss)
    from dataselect.store import Store

    lengths = Store(out).column("n_tokens")
    waste = padding_waste(lengths, token_budget_batches(lengths, stage.batch_tokens))
    # a real shard holds 50k rows: the same length distribution, resampled to that size
    shard = np.random.default_rng(0).choice(lengths, 50_000)
    ours.shard_waste = padding_waste(shard, token_budget_batches(shard, stage.batch_tokens))
    return wall, tokens, waste


SHAPES = {  # Llama-3 shapes: hidden, layers, MLP width, heads, vocab
    "1b": (2048, 16, 8192, 32, 128256),
    "8b": (4096, 32, 14336, 32, 128256),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity


def flops_per_token(hidden: int, layers: int, inter: int, heads: int, mean_context: float) -> float:
    kv = max(1, heads // 4) * (hidden // heads)
    per_layer = 2 * (hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * inter)  # q, o, k, v, MLP
    return layers * (per_layer + 2 * 2 * mean_context * hidden)  # + attention scores and values


def gpu_peak() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16.items() if k in name), None)


def batching_run(model_path: str, pool: Path, out: Path, device: str, dtype: str, batching: str,
                 with_loss: bool = False):
    """One timed EmbedStage run -> (wall seconds, tokens, the stage)."""
    from dataselect.embedding.stage import EmbedOptions, EmbedStage

    stage = EmbedStage(pool, out, EmbedOptions(model=model_path, device=device, dtype=dtype, batching=batching,
                                               with_loss=with_loss, progress=False, overwrite=True))
    sync()
    t0 = time.perf_counter()
    man = stage.run()
    sync()
    return time.perf_counter() - t0, man.counts["tokens"], stage


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--inter", type=int, default=0, help="MLP width (default 2.75 x hidden)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--ray", action="store_true", help="also time the Ray engine (one worker per GPU)")
    ap.add_argument("--batchings", default="", help="e.g. padded,packed: time each, same run, with MFU")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="a Llama-3 shape (overrides hidden/layers/...)")
    args = ap.parse_args()
    if args.shape:
        args.hidden, args.layers, args.inter, args.heads, args.vocab = SHAPES[args.shape]
    dtype_name = "bfloat16" if args.device.startswith("cuda") else "float32"
    dtype = getattr(torch, dtype_name)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_model(tmp / "model", args.hidden, args.layers, args.inter or int(args.hidden * 2.75),
                                args.vocab, args.heads))
        pool = build_pool(tmp / "pool.jsonl", args.rows)
        print(f"model: Llama hidden={args.hidden} layers={args.layers} vocab={args.vocab}  device={args.device} "
              f"dtype={dtype_name}  torch threads={torch.get_num_threads()}  pool rows={args.rows}")
        if args.batchings:
            from dataselect.store import Store

            name, peak = gpu_peak()
            results = {}
            for b in args.batchings.split(","):
                batching_run(model, pool, tmp / f"warm-{b}", args.device, dtype_name, b)  # warm-up
                wall, tokens, _ = batching_run(model, pool, tmp / f"s-{b}", args.device, dtype_name, b)
                lengths = Store(tmp / f"s-{b}").column("n_tokens").astype(np.float64)
                ctx = float((lengths * (lengths + 1) / 2).sum() / lengths.sum())  # mean tokens attended
                fpt = flops_per_token(args.hidden, args.layers, args.inter or int(args.hidden * 2.75), args.heads, ctx)
                rate = tokens / wall
                results[b] = rate
                mfu = f"MFU {fpt * rate / peak:6.1%} of {name}'s dense bf16 peak" if peak else f"({name}: no MFU)"
                print(f"{b:<8s} {rate:12,.0f} tok/s   wall {wall:7.2f}s   {fpt / 1e9:.2f} GFLOP/token   {mfu}")
            if {"padded", "packed"} <= set(results):
                print(f"packed / padded: x{results['packed'] / results['padded']:.2f}")
            return
        ours(model, pool, tmp / "warm", args.device, dtype_name, False)  # warm-up: kernels, caches
        t_ours, tok_ours, w_ours = ours(model, pool, tmp / "s", args.device, dtype_name, False)
        t_loss, _, _ = ours(model, pool, tmp / "sl", args.device, dtype_name, True)
        print(f"ours        {tok_ours / t_ours:10,.0f} tok/s   wall {t_ours:7.2f}s   padding waste {w_ours:6.2%} "
              f"({ours.shard_waste:.2%} on a 50k-row shard of the same length mix)")
        print(f"ours+loss   {tok_ours / t_loss:10,.0f} tok/s   wall {t_loss:7.2f}s   loss cost x{t_loss / t_ours:.2f}")
        if args.ray:
            from dataselect import operations as ops

            gpus = 1.0 if args.device.startswith("cuda") else 0.0

            def on_ray(out):
                return ops.embed(ops.EmbedJob(pool=pool, out=out, model=model, device=args.device, dtype=dtype_name,
                                              progress=False, overwrite=True, engine="ray", workers=1,
                                              num_gpus_per_worker=gpus))

            on_ray(tmp / "ray_warm")  # start Ray, workers
            sync()
            t0 = time.perf_counter()
            man = on_ray(tmp / "ray")
            t_ray = time.perf_counter() - t0
            print(f"ray engine  {man.counts['tokens'] / t_ray:10,.0f} tok/s   wall {t_ray:7.2f}s   "
                  f"(1 worker; x{t_ours / t_ray:.2f} of the local engine, model load per run included)")
        if not args.skip_naive:
            t_naive, tok_naive, w_naive = naive(model, pool, args.device, dtype)
            assert tok_naive == tok_ours, (tok_naive, tok_ours)
            print(f"naive HF    {tok_naive / t_naive:10,.0f} tok/s   wall {t_naive:7.2f}s   padding waste {w_naive:6.2%}")
            print(f"speed-up (ours / naive): x{t_naive / t_ours:.2f}")


if __name__ == "__main__":
    main()
