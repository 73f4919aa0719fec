"""How much faster is incremental BPE training than recounting every pair after every merge?

    python benchmarks/bpe_speed.py                 # 1,024-token vocabulary, first 20,000 characters
    python benchmarks/bpe_speed.py --chars 40000    # a longer prefix (the naive trainer takes minutes)

Both trainers learn the same merges (checked below) on the same prefix of the course corpus's
training text; the naive one recounts the whole text for each of the 768 merges, so it is timed on
a prefix that keeps it near a minute. The incremental trainer is then also timed on the full
training text. One run, side by side, same process: the ratio is the figure to quote.
"""
from __future__ import annotations

import argparse
import time

from llmcourse.data import python_docs
from llmcourse.tokenizers import train_bpe, train_bpe_naive


def timed(func, *args):
    start = time.perf_counter()
    result = func(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--chars", type=int, default=20_000, help="length of the prefix both trainers see")
    args = parser.parse_args()

    train = python_docs().train
    prefix = train[: args.chars]
    print(f"BPE to a {args.vocab_size:,}-token vocabulary ({args.vocab_size - 256} merges) "
          f"on the first {len(prefix):,} of {len(train):,} training characters")
    naive, naive_s = timed(train_bpe_naive, prefix, args.vocab_size)
    fast, fast_s = timed(train_bpe, prefix, args.vocab_size)
    if fast != naive:
        raise SystemExit("the two trainers learned different merges: this is a bug")
    print(f"  naive (recount all pairs every merge): {naive_s:8.2f} s")
    print(f"  incremental (update affected words):   {fast_s:8.2f} s")
    print(f"  speed-up: {naive_s / fast_s:.0f}x  (identical {len(fast)} merges)")
    _, full_s = timed(train_bpe, train, args.vocab_size)
    print(f"incremental on the full training text ({len(train):,} characters): {full_s:.2f} s")


if __name__ == "__main__":
    main()
