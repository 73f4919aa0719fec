"""Tokenizers: text -> integer ids -> text.

Three ways to cut text, from the simplest to the one real models use:

* `CharTokenizer`: one token per distinct character of a training text.
* Words: `split_text` cuts text into word-like chunks (a word with its leading space, a run of
  digits, a run of punctuation, whitespace). A word vocabulary is huge and still misses words.
* `BPETokenizer`: byte-level byte-pair encoding (BPE), as in GPT-2 and its successors. Start from
  the 256 possible bytes of UTF-8 text, so *every* string can be encoded, and learn *merges*:
  again and again, the most frequent pair of neighbouring tokens becomes one new token.

The BPE building blocks are small functions with worked examples in their docstrings:
`get_stats` (count neighbouring pairs), `merge` (replace a pair by a new id), `train_bpe`
(learn the merges, updating pair counts incrementally) and `train_bpe_naive` (the same merges
by recounting everything after each merge: the plain reference, far slower).
`train_sentencepiece` trains Google's SentencePiece (unigram by default) for comparison.
`save_gpt2_files` / `load_gpt2_files` write and read GPT-2's own files (`vocab.json`, `merges.txt`),
so a tokenizer trained here works in other tools, and GPT-2's real tokenizer works here.
"""
from __future__ import annotations

import functools
import heapq
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from llmcourse.validate import check_int

N_BYTES = 256  # the base alphabet of a byte-level tokenizer: ids 0..255 are the bytes themselves

# A word with its leading space, a contraction suffix, up to 3 digits, a run of punctuation, or
# whitespace (a run of spaces keeps its last space for the next word). GPT-2's pattern, written
# for Python's `re`: [^\W\d_] is "a letter". Every character of any text falls in some chunk.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

# GPT-2's pattern exactly as it ships (its encoder.py): \p{L} is a letter and \p{N} a number in any
# script. Numbers are not cut into groups of 3 here, so "2024" and "123456" stay one chunk each.
# Python's `re` has no \p{...}: split_text uses the `regex` package for this pattern.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class CharTokenizer:
    """One id per character seen in the training text, in sorted order.

        >>> tok = CharTokenizer("hello")
        >>> tok.vocab
        ['e', 'h', 'l', 'o']
        >>> tok.encode("hole")
        [1, 3, 2, 0]
    """

    def __init__(self, text: str):
        if not text:
            raise ValueError("text must be a non-empty string to build a character vocabulary from")
        self.vocab: list[str] = sorted(set(text))
        self.ids: dict[str, int] = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.ids.keys())
        if unknown:
            raise ValueError(f"text has characters the tokenizer never saw: {unknown[:10]}"
                             f"{' …' if len(unknown) > 10 else ''}")
        return [self.ids[ch] for ch in text]

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must be in [0, {self.vocab_size}); got unknown ids {bad[:10]}")
        return "".join(self.vocab[i] for i in ids)


# --- the building blocks of BPE ----------------------------------------------------------------

def split_text(text: str, pattern: str | None = SPLIT_PATTERN) -> list[str]:
    """Cut text into the chunks BPE works inside (merges never cross a chunk boundary).

        "Hello, world!!" -> ['Hello', ',', ' world', '!!']

    Joining the chunks gives the text back. pattern=None keeps the text as one chunk.
    """
    if pattern is None:
        return [text] if text else []
    return _compiled(pattern).findall(text)


@functools.lru_cache(maxsize=16)
def _compiled(pattern: str):
    """The pattern compiled by Python's `re`, or by the `regex` package if it uses Unicode classes (\\p{L})."""
    if r"\p{" not in pattern:
        return re.compile(pattern)
    try:
        import regex
    except ImportError:
        raise ImportError("this split pattern uses Unicode classes (\\p{L}, \\p{N}), which need the `regex` "
                          "package: pip install regex (it comes with pip install 'llmcourse[hf]')") from None
    return regex.compile(pattern)


def get_stats(ids: Sequence[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count each pair of neighbouring ids (overlapping pairs count: [1, 1, 1] has (1, 1) twice).

        [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}

    Pass `counts` to add to an existing count (one call per chunk of a text).
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` by `new_id`, scanning left to right without overlap.

        [1, 2, 3, 1, 2], (1, 2), 4 -> [4, 3, 4]
        [1, 1, 1],       (1, 1), 4 -> [4, 1]     (the middle 1 is used once, not twice)
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _check_text(text: str, what: str = "text") -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a str; got {type(text).__name__}")
    if not text:
        raise ValueError(f"{what} must be a non-empty string to learn merges from; got ''")


def _n_merges(vocab_size: int, n_special: int = 0) -> int:
    smallest = N_BYTES + n_special
    extra = f" + {n_special} special token{'s' * (n_special > 1)}" if n_special else ""
    check_int(vocab_size, "vocab_size", smallest,
              why=f"the {N_BYTES} byte tokens{extra}, the base alphabet of a byte-level BPE")
    return vocab_size - smallest


def _best_pair(stats: dict[tuple[int, int], int]) -> tuple[int, int]:
    """The most frequent pair; ties go to the smallest pair, so every trainer agrees."""
    return min(stats, key=lambda pair: (-stats[pair], pair))


def train_bpe_naive(text: str, vocab_size: int, pattern: str | None = SPLIT_PATTERN) -> list[tuple[int, int]]:
    """Learn BPE merges the plain way: after every merge, count all pairs of the text again.

    Each merge costs a pass over the whole text, so training to a vocabulary of V costs
    (V - 256) passes: fine for a paragraph, minutes for a book. `train_bpe` gives the same merges.

        "aaabdaaabac", vocab_size=259 -> [(97, 97), (97, 98), (256, 257)]
        i.e. "aa" -> 256, "ab" -> 257, "aa" + "ab" -> 258 ("aaab")
        (after the first merge, (256, 97) and (97, 98) both occur twice: ties go to the smaller pair)
    """
    _check_text(text)
    n_merges = _n_merges(vocab_size)
    chunks = [list(chunk.encode("utf-8")) for chunk in split_text(text, pattern)]
    merges = []
    for new_id in range(N_BYTES, N_BYTES + n_merges):
        stats: dict[tuple[int, int], int] = {}
        for ids in chunks:                      # recount every pair of the whole text
            get_stats(ids, stats)
        if not stats:                           # every chunk is a single token: nothing to merge
            break
        pair = _best_pair(stats)
        chunks = [merge(ids, pair, new_id) for ids in chunks]
        merges.append(pair)
    return merges


def train_bpe(text: str, vocab_size: int, pattern: str | None = SPLIT_PATTERN,
              progress: bool = False) -> list[tuple[int, int]]:
    """Learn BPE merges, updating the pair counts after each merge instead of recounting.

    Three ideas make it fast (the result equals `train_bpe_naive`, merge for merge):
    1. Count each distinct chunk once: " the" occurring 9,000 times is one word with weight 9,000.
    2. Keep the pair counts and, for each pair, the words that contain it. A merge touches only
       those words: subtract their old pairs, merge, add their new pairs.
    3. Find the most frequent pair with a heap (stale entries are skipped when popped).

        "aaabdaaabac" -> words {"aaabdaaabac": 1}, pairs {(97, 97): 4, (97, 98): 2, (98, 100): 1, ...}
        merge (97, 97) -> 256: only the words in where[(97, 97)] change; that word is now
        [256, 97, 98, 100, 256, 97, 98, 97, 99], so (97, 97): 4 -> 0 and (256, 97): 0 -> 2,
        while (97, 98): 2 is untouched. Merges: [(97, 97), (97, 98), (256, 257)]

    Returns the merges in the order learned: merge i creates token id 256 + i. Stops early if
    every chunk has become a single token.
    """
    _check_text(text)
    n_merges = _n_merges(vocab_size)
    chunk_counts = Counter(split_text(text, pattern))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]   # distinct chunks, as ids
    weights = list(chunk_counts.values())                             # how often each occurs
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)         # pair -> words containing it
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += weights[w]
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    steps = range(N_BYTES, N_BYTES + n_merges)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="BPE merges", leave=False)
    for new_id in steps:
        while heap:                                  # pop until an entry matches the current count
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair) == -negative_count:
                break
        else:
            break                                    # nothing left to merge
        merges.append(pair)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in where.pop(pair):
            old = words[w]
            new = merge(old, pair, new_id)
            if len(new) == len(old):                 # a stale entry: this word lost the pair earlier
                continue
            for p in zip(old, old[1:]):
                delta[p] -= weights[w]
            for p in zip(new, new[1:]):
                delta[p] += weights[w]
                where[p].add(w)
            words[w] = new
        for p, change in delta.items():
            if change == 0:
                continue
            count = pair_counts[p] + change
            if count:
                pair_counts[p] = count
                heapq.heappush(heap, (-count, p))
            else:
                del pair_counts[p]
    return merges


# --- the tokenizer -----------------------------------------------------------------------------

class BPETokenizer:
    """A byte-level BPE tokenizer: ids 0..255 are bytes, then one id per merge, then special tokens.

        >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259)
        >>> tok.merges                  # "aa" -> 256, "ab" -> 257, "aa" + "ab" = "aaab" -> 258
        {(97, 97): 256, (97, 98): 257, (256, 257): 258}
        >>> tok.encode("aaabdaaabac")   # "aaab" "d" "aaab" "a" "c"
        [258, 100, 258, 97, 99]
        >>> tok.decode([258, 100])
        'aaabd'

    Any string round-trips exactly (`decode(encode(s)) == s`), because any string is UTF-8 bytes
    and every byte is a token. Special tokens such as "<|endoftext|>" are encoded as one id each
    and are never part of a merge.
    """

    def __init__(self, merges: Iterable[tuple[int, int]] = (), special_tokens: Iterable[str] = (),
                 pattern: str | None = SPLIT_PATTERN, byte_order: Sequence[int] | None = None):
        self.pattern = pattern
        # byte_order[i] is the byte that id i stands for: ids 0..255 are bytes 0..255 unless the
        # tokenizer comes from files that number the bytes otherwise (GPT-2 puts printable ones first).
        self.byte_order = list(range(N_BYTES)) if byte_order is None else [int(b) for b in byte_order]
        if sorted(self.byte_order) != list(range(N_BYTES)):
            raise ValueError("byte_order must list each of the 256 byte values exactly once")
        byte_to_id = [0] * N_BYTES
        for i, b in enumerate(self.byte_order):
            byte_to_id[b] = i
        self._byte_to_id = bytes(byte_to_id)  # a bytes.translate table: byte b -> its id
        self.merges: dict[tuple[int, int], int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([b]) for i, b in enumerate(self.byte_order)}
        for new_id, (a, b) in enumerate(merges, start=N_BYTES):
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merges must only use ids defined before them; merge {new_id - N_BYTES} "
                                 f"({a}, {b}) uses an id that is not below {new_id}")
            self.merges[(a, b)] = new_id
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self.special_tokens: dict[str, int] = {}
        for token in special_tokens:
            if not token or token in self.special_tokens:
                raise ValueError(f"special_tokens must be distinct non-empty strings; got {token!r} twice or empty")
            self.special_tokens[token] = len(self.vocab) + len(self.special_tokens)
        self.special_ids = {i: s for s, i in self.special_tokens.items()}
        self._special_split = (re.compile("(" + "|".join(re.escape(s) for s in sorted(self.special_tokens, key=len,
                                                                                        reverse=True)) + ")")
                               if self.special_tokens else None)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (),
              pattern: str | None = SPLIT_PATTERN, progress: bool = False) -> "BPETokenizer":
        """Learn merges from `text` until the vocabulary (bytes + merges + specials) has `vocab_size` ids.

        Special tokens in the text are cut out before training, so no merge ever spans one.
        """
        _check_text(text)
        special_tokens = list(special_tokens)
        n_merges = _n_merges(vocab_size, len(special_tokens))
        for token in special_tokens:
            text = text.replace(token, "\n")
        merges = train_bpe(text, N_BYTES + n_merges, pattern=pattern, progress=progress)
        return cls(merges, special_tokens, pattern)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    def truncated(self, vocab_size: int) -> "BPETokenizer":
        """The tokenizer with only the first merges: BPE trained to a smaller `vocab_size` gives exactly these."""
        n_merges = _n_merges(vocab_size, len(self.special_tokens))
        if n_merges > len(self.merges):
            raise ValueError(f"vocab_size must be at most {self.vocab_size} (this tokenizer's size); got {vocab_size}")
        return BPETokenizer(list(self.merges)[:n_merges], self.special_tokens, self.pattern, self.byte_order)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Bytes of one chunk, then apply merges by rank: always the earliest-learned pair present."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = list(chunk.encode("utf-8").translate(self._byte_to_id))   # each byte -> its id
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break                                # no pair left that a merge knows
            ids = merge(ids, pair, self.merges[pair])
        if len(self._cache) < 200_000:
            self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str; got {type(text).__name__}")
        ids: list[int] = []
        for chunk in split_text(text, self.pattern):
            ids.extend(self._encode_chunk(chunk))
        return ids

    def encode(self, text: str) -> list[int]:
        """Encode text; each special token in it ("<|endoftext|>") becomes its single id.

            "hi<|endoftext|>" -> [104, 105, 256]   (no merges learned, one special token)
        """
        if self._special_split is None or not isinstance(text, str):
            return self.encode_ordinary(text)          # (which refuses a text that is not a str)
        ids: list[int] = []
        for part in self._special_split.split(text):   # odd positions are the special tokens
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 text)."""
        if token_id in self.special_ids:
            return self.special_ids[token_id].encode("utf-8")
        return self.vocab[token_id]

    def decode(self, ids) -> str:
        """Join the tokens' bytes, then decode UTF-8 once (invalid bytes become '\ufffd').

        Decoding token by token would break characters whose bytes sit in two tokens:
        "é" is b"\\xc3\\xa9"; tokens [195, 169] decode to "é", not to "\ufffd\ufffd".
        """
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not (isinstance(i, int) and (i in self.vocab or i in self.special_ids))]
        if bad:
            raise ValueError(f"ids must be token ids of this tokenizer (0..{self.vocab_size - 1}); "
                             f"got unknown ids {bad[:10]}")
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """Each token as readable text (bytes that are not whole characters show as '\ufffd')."""
        return [self.token_bytes(i).decode("utf-8", errors="replace") for i in ids]


# --- GPT-2's file format -------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, so that its tokenizer files are plain text.

    The 188 printable bytes stand for themselves ('!'..'~', '¡'..'¬', '®'..'ÿ'); the 68 others
    (control bytes, the space, ...) become chr(256), chr(257), ... in order: the newline 10 is 'Ċ'
    and the space 32 is 'Ġ'. So the token b" the" is written 'Ġthe'.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, moved = {}, 0
    for b in range(N_BYTES):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(N_BYTES + moved)
            moved += 1
    return table


def _as_text(token: bytes, table: dict[int, str]) -> str:
    return "".join(table[b] for b in token)


def save_gpt2_files(tokenizer: BPETokenizer, folder) -> None:
    """Write `tokenizer` as GPT-2 does: `vocab.json` (token text -> id) and `merges.txt` (one merge a line).

        vocab.json   {"!": 0, ..., "Ġthe": 262, ..., "<|endoftext|>": 50256}
        merges.txt   #version: 0.2
                     Ġ t          (merge 0: id 256 = "Ġ" + "t")
                     ...

    Tokens are written with `bytes_to_unicode`. The files do not say how text is cut into chunks:
    every reader assumes GPT-2's pattern, so only a tokenizer using GPT2_SPLIT_PATTERN can be saved.
    """
    if tokenizer.pattern != GPT2_SPLIT_PATTERN:
        raise ValueError("GPT-2's files imply GPT-2's split pattern, but this tokenizer cuts text with another "
                         "one, so a program reading the files would encode differently; train it with "
                         "pattern=GPT2_SPLIT_PATTERN")
    table = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for token_id, token in tokenizer.vocab.items():
        text = _as_text(token, table)
        if text in vocab:  # two merges spelled the same bytes: one string cannot name two ids
            raise ValueError(f"tokens {vocab[text]} and {token_id} are both {token!r}; GPT-2's vocab.json maps "
                             f"each string to one id, so it cannot hold this tokenizer")
        vocab[text] = token_id
    vocab.update(tokenizer.special_tokens)
    merges = [f"{_as_text(tokenizer.vocab[a], table)} {_as_text(tokenizer.vocab[b], table)}"
              for a, b in tokenizer.merges]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")


def load_gpt2_files(folder) -> BPETokenizer:
    """Read `vocab.json` and `merges.txt` (GPT-2's, or any written by save_gpt2_files) into a BPETokenizer.

    The ids are the files' ids: GPT-2's bytes come in printable-first order (id 0 is "!", byte 33),
    merge i makes id 256 + i, and what follows is a special token ("<|endoftext|>" = 50256). The
    tokenizer splits text with GPT2_SPLIT_PATTERN, as every GPT-2 tokenizer does.
    """
    folder = Path(folder)
    paths = {name: folder / name for name in ("vocab.json", "merges.txt")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise ValueError(f"a GPT-2 tokenizer is two files, vocab.json and merges.txt; not found: {missing}")
    try:
        vocab = json.loads(paths["vocab.json"].read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{paths['vocab.json']} is not valid JSON: {e}") from None
    lines = [line for line in paths["merges.txt"].read_text(encoding="utf-8").split("\n")
             if line and not line.startswith("#version")]
    byte_of = {text: b for b, text in bytes_to_unicode().items()}
    byte_order = [0] * N_BYTES
    if sorted(vocab.get(text, -1) for text in byte_of) != list(range(N_BYTES)):
        raise ValueError(f"{paths['vocab.json']} must give the 256 single bytes the ids 0..255")
    for text, b in byte_of.items():
        byte_order[vocab[text]] = b
    merges = []
    for rank, line in enumerate(lines):
        parts = line.split(" ")
        if len(parts) != 2 or any(part not in vocab for part in parts):
            raise ValueError(f"{paths['merges.txt']} line {rank + 2} must be two tokens of vocab.json "
                             f"separated by one space; got {line!r}")
        if vocab.get(parts[0] + parts[1]) != N_BYTES + rank:
            raise ValueError(f"vocab.json and merges.txt disagree: merge {rank} ({line!r}) should make id "
                             f"{N_BYTES + rank}, but vocab.json gives {parts[0] + parts[1]!r} the id "
                             f"{vocab.get(parts[0] + parts[1])}")
        merges.append((vocab[parts[0]], vocab[parts[1]]))
    specials = sorted((i, text) for text, i in vocab.items() if i >= N_BYTES + len(merges))
    if [i for i, _ in specials] != list(range(N_BYTES + len(merges), N_BYTES + len(merges) + len(specials))) \
            or len(vocab) != N_BYTES + len(merges) + len(specials):
        raise ValueError(f"vocab.json has {len(vocab)} entries; expected the 256 bytes, one token per merge "
                         f"({len(merges)}) and then special tokens with the next ids")
    return BPETokenizer(merges, [text for _, text in specials], GPT2_SPLIT_PATTERN, byte_order)


# --- SentencePiece, for comparison --------------------------------------------------------------

def train_sentencepiece(text: str, vocab_size: int, model_type: str = "unigram", **options):
    """Train a SentencePiece model on `text` in memory, quietly; return a SentencePieceProcessor.

    Defaults keep the text as it is (no Unicode normalisation, spaces kept) and fall back to
    bytes for characters it never saw, so it can encode anything, like byte-level BPE.

    The valid vocab_size depends on the text. Every distinct character of the text, the 256
    byte pieces and the 3 control pieces (<unk>, <s>, </s>) are pieces of their own: that is the
    smallest vocabulary. The largest is how many pieces SentencePiece finds worth keeping in this
    text, known only once it has looked. Either way a ValueError names the range.
    """
    import sentencepiece as spm

    _check_text(text)
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise ValueError("text must hold at least one line that is not blank")
    settings = dict(model_type=model_type, vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
                    normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
                    allow_whitespace_only_pieces=True, split_digits=True,
                    minloglevel=2, num_threads=1)
    settings.update(options)
    n_chars = len(set("".join(lines))) if settings["character_coverage"] >= 1 else 1
    smallest = n_chars + 3 + (N_BYTES if settings["byte_fallback"] else 0)
    pieces = f"{n_chars} characters of this text, {N_BYTES if settings['byte_fallback'] else 0} bytes, 3 control pieces"
    check_int(vocab_size, "vocab_size", smallest, why=pieces)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **settings)
    except RuntimeError as error:  # SentencePiece's C++ check names the largest size it could fill
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(error))
        if too_high is None:
            raise
        largest = int(too_high.group(1))
        raise ValueError(f"vocab_size must be an int in [{smallest}, {largest}] for this text (at least the "
                         f"{pieces}; at most the pieces SentencePiece finds in it); got {vocab_size!r}") from None
    return spm.SentencePieceProcessor(model_proto=model.getvalue())
