"""KV-cache decoding vs recomputing the whole prefix every step, same model, same tokens.

    LLMCOURSE_THREADS=1 python benchmarks/kv_cache_speed.py            # prompt 256, 256 new tokens, context 512
    LLMCOURSE_THREADS=1 python benchmarks/kv_cache_speed.py --hugging-face   # the same for a Hugging Face GPT-2

Without a cache, step t runs the model over all t tokens of the text so far (cost grows with t);
with the KV cache it runs one new position and reads the cached keys and values of the others.
Both decode greedily with `llmcourse.generation.generate`, so they must produce the same tokens
(checked). The two are timed alternately, `--rounds` times each, in one process, and the ratio
of the median times is printed. The weights are random: speed does not depend on their values.
With --hugging-face the model is transformers' GPT2LMHeadModel of the same shape behind
`gpt2.HuggingFaceAdapter`, whose decoder keeps the model's own KV cache (needs the [hf] extra).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import llmcourse
from llmcourse.generation import GPTAdapter, generate
from llmcourse.model import GPT, GPTConfig
from llmcourse.sampling import SamplingConfig
from llmcourse.tokenizers import BPETokenizer, CharTokenizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens")
    parser.add_argument("--new", type=int, default=256, help="new tokens to generate")
    parser.add_argument("--context", type=int, default=512, help="the model's context length")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each, interleaved")
    parser.add_argument("--device", default=None)
    parser.add_argument("--hugging-face", action="store_true",
                        help="time a Hugging Face GPT2LMHeadModel of the same shape instead of the course GPT")
    args = parser.parse_args(argv)
    if args.prompt + args.new > args.context:
        parser.error("prompt + new must fit in the context (the cache is exact only inside it)")

    device = llmcourse.setup(seed=0, device=args.device, style=False)
    tokenizer = CharTokenizer("".join(chr(32 + i) for i in range(95)) + "\n")   # 96 characters
    if args.hugging_face:
        from transformers import GPT2Config, GPT2LMHeadModel

        from llmcourse.gpt2 import HuggingFaceAdapter

        tokenizer = BPETokenizer()                                   # the 256 bytes: an adapter needs a BPE
        config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=args.context, n_embd=args.width,
                            n_layer=args.layers, n_head=args.heads, bos_token_id=None, eos_token_id=None)
        model = HuggingFaceAdapter(GPT2LMHeadModel(config).to(device), tokenizer)
    else:
        config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=args.context, n_layers=args.layers,
                           d_model=args.width, n_heads=args.heads)
        model = GPTAdapter(GPT(config).to(device), tokenizer)
    prompt = torch.randint(tokenizer.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    greedy = SamplingConfig(temperature=0)
    n_parameters = sum(p.numel() for p in model.model.parameters())
    print(f"{'Hugging Face GPT2LMHeadModel' if args.hugging_face else 'GPT'}: {args.layers} layers, width "
          f"{args.width}, {args.heads} heads, context {args.context}, vocabulary {tokenizer.vocab_size}, "
          f"{n_parameters:,} parameters; device {device}, {torch.get_num_threads()} thread(s)")
    print(f"task: greedy decoding of {args.new} new tokens after a {args.prompt}-token prompt")

    def run(use_cache: bool) -> tuple[float, torch.Tensor]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = generate(model, prompt, args.new, greedy, use_cache=use_cache).tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, tokens

    run(True), run(False)                                                    # warm-up
    times = {True: [], False: []}
    outputs = {}
    for _ in range(args.rounds):                                             # interleaved
        for use_cache in (True, False):
            seconds, outputs[use_cache] = run(use_cache)
            times[use_cache].append(seconds)
    same = torch.equal(outputs[True], outputs[False])
    cached, plain = statistics.median(times[True]), statistics.median(times[False])
    print(f"with KV cache:    {cached:7.3f} s  ({args.new / cached:8.0f} tokens/s)   runs: "
          + ", ".join(f"{t:.3f}" for t in times[True]))
    print(f"without a cache:  {plain:7.3f} s  ({args.new / plain:8.0f} tokens/s)   runs: "
          + ", ".join(f"{t:.3f}" for t in times[False]))
    print(f"speed-up: {plain / cached:.1f}x (ratio of medians, {args.rounds} interleaved runs each); "
          f"identical tokens: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
