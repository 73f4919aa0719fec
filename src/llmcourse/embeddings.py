"""Embeddings: token ids -> vectors, what the vectors learn, and where each token sits.

Three ideas, one section each:

* **Lookup.** An embedding table `W` has one row per token of the vocabulary. Multiplying a
  one-hot vector by `W` picks out one row, so a model never does the multiplication: it indexes,
  `W[ids]`. The table is an ordinary learned parameter, and a training step changes only the
  rows of the tokens that were used.
* **Meaning from training.** A skip-gram model with negative sampling (word2vec) learns a table
  in which words used in similar places get similar vectors; cosine similarity and nearest
  neighbours read that similarity back out, and a 2-D projection (PCA) draws it.
* **Position.** Attention by itself ignores the order of its inputs. Sinusoidal encodings
  ("Attention is all you need"), learned position tables and rotary embeddings (RoPE, RoFormer)
  put the order back.
* **Images as tokens.** A vision transformer cuts an image into patches and embeds each flattened
  patch with one learned matrix (`image_patches`, `PatchEmbedding`): the same kind of sequence.

Shapes: `vocab` rows in a table, `d` (or `d_model`) numbers per vector, `t` positions in a text.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from llmcourse.validate import check_int, is_int

# --- 1. lookup -----------------------------------------------------------------------------------


def _check_ids(ids: torch.Tensor, vocab_size: int, what: str = "table") -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"ids must be an integer tensor; got {type(ids).__name__}"
                         f"{' of dtype ' + str(ids.dtype) if isinstance(ids, torch.Tensor) else ''}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)].unique()[:5].tolist()
        raise ValueError(f"ids must be in [0, {vocab_size}) for a {what} of {vocab_size} rows; "
                         f"got ids {bad} (ids of shape {tuple(ids.shape)})")


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(..., vocab_size) float: a row of zeros with a single 1 at each id.

        >>> one_hot(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    _check_ids(ids, vocab_size, "vocabulary")
    return F.one_hot(ids.long(), vocab_size).float()


def lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The embedding of each id: row `ids[...]` of `table`.

    table: (vocab, d)   ids: (...) integers in [0, vocab)   ->   (..., d)
    Same as `one_hot(ids, vocab) @ table`, and as `torch.nn.functional.embedding(ids, table)`,
    without the vocab-times-wider multiplication. An id outside the table is refused with a
    ValueError (PyTorch raises an IndexError that does not say which id).

        >>> lookup(torch.tensor([[0., 0.], [1., 2.], [3., 4.]]), torch.tensor([2, 1]))
        tensor([[3., 4.],
                [1., 2.]])
    """
    if table.dim() != 2:
        raise ValueError(f"table must be 2-D (vocab, d); got shape {tuple(table.shape)}")
    _check_ids(ids, table.shape[0])
    return table[ids.long()]


# --- 2. similarity -------------------------------------------------------------------------------


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine of the angle between every row of `a` and every row of `b`.

    a: (n, d) or (d,)   b: (m, d) or (d,)   ->   (n, m), (n,), (m,) or a scalar
    cos(a, b) = a . b / (|a| |b|): 1 for the same direction, 0 for perpendicular, -1 for opposite.
    Both sides are normalised, so the length of a vector (which, in a trained table, mostly
    tracks how frequent the word is) does not count, only its direction.

        >>> cosine_similarity(torch.tensor([1., 0.]), torch.tensor([[2., 0.], [1., 1.]]))
        tensor([1.0000, 0.7071])
    """
    if a.dim() not in (1, 2) or b.dim() not in (1, 2) or a.shape[-1] != b.shape[-1]:
        raise ValueError("a and b must be (n, d) or (d,) with the same d; "
                         f"got a {tuple(a.shape)}, b {tuple(b.shape)}")
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)  # (n, d): unit length rows
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)  # (m, d)
    return a_unit @ b_unit.T if b.dim() == 2 else a_unit @ b_unit


def nearest_neighbours(table: torch.Tensor, index: int, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` rows of `table` most similar (cosine) to row `index`, the row itself excluded.

    table: (vocab, d)  ->  (indices (k,), similarities (k,)), most similar first.
    Without the exclusion every word's nearest neighbour would be itself, with similarity 1.
    """
    if table.dim() != 2:
        raise ValueError(f"table must be 2-D (vocab, d); got shape {tuple(table.shape)}")
    if not 0 <= index < table.shape[0]:
        raise ValueError(f"index must be in [0, {table.shape[0]}) for a table of shape {tuple(table.shape)}; got {index}")
    if not 1 <= k < table.shape[0]:
        raise ValueError(f"k must be between 1 and vocab - 1 = {table.shape[0] - 1}; got {k}")
    sims = cosine_similarity(table[index], table)  # (vocab,)
    sims[index] = -math.inf                        # never return the word itself
    best = sims.topk(k)
    return best.indices, best.values


# --- 3. words and a word-level vocabulary ------------------------------------------------------

WORD = re.compile(r"[a-z_][a-z0-9_]*")


def words(text: str) -> list[str]:
    """Lower-case words (letters, digits and underscores, not starting with a digit).

        >>> words("Return True if x is an int.")
        ['return', 'true', 'if', 'x', 'is', 'an', 'int']
    """
    return WORD.findall(text.lower())


@dataclass
class WordVocab:
    """The `size` most frequent words of a text, most frequent first; id = rank.

    words: list of the words   counts: (size,) how often each occurs in the text it was built from.
    """

    words: list[str]
    counts: torch.Tensor
    ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, tokens: list[str], size: int) -> "WordVocab":
        check_int(size, "size")
        common = Counter(tokens).most_common(size)
        return cls([w for w, _ in common], torch.tensor([n for _, n in common], dtype=torch.float64))

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.ids

    def __getitem__(self, word: str) -> int:
        if word not in self.ids:
            raise ValueError(f"{word!r} is not among the {len(self)} words of the vocabulary")
        return self.ids[word]

    def encode(self, tokens: list[str]) -> torch.Tensor:
        """(n,) int64: the ids of the tokens that are in the vocabulary; rarer words are dropped."""
        return torch.tensor([self.ids[w] for w in tokens if w in self.ids], dtype=torch.long)


# --- 4. skip-gram with negative sampling (word2vec) --------------------------------------------


def skipgram_pairs(ids: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (centre, context) pair of words at most `window` positions apart, both directions.

    ids: (n,)  ->  centres (p,), contexts (p,) with p = 2 * sum_{o=1..window} (n - o).

        >>> skipgram_pairs(torch.tensor([5, 6, 7]), window=1)
        (tensor([5, 6, 6, 7]), tensor([6, 7, 5, 6]))
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D (n,); got shape {tuple(ids.shape)}")
    check_int(window, "window")
    centres, contexts = [], []
    for offset in range(1, min(window, len(ids) - 1) + 1):
        centres += [ids[:-offset], ids[offset:]]   # the word `offset` places to the right ...
        contexts += [ids[offset:], ids[:-offset]]  # ... and to the left
    if not centres:
        return ids[:0], ids[:0]
    return torch.cat(centres), torch.cat(contexts)


def keep_probabilities(counts: torch.Tensor, threshold: float = 1e-3) -> torch.Tensor:
    """(vocab,): how likely each occurrence of a word is to be kept when subsampling.

    word2vec (Mikolov et al., 2013) drops frequent words at random: "the" tells little about its
    neighbours and would otherwise dominate the pairs. With f the word's share of the text,
    keep = sqrt(threshold / f) + threshold / f, capped at 1 (the formula in word2vec's code).
    """
    f = counts / counts.sum()
    return ((threshold / f).sqrt() + threshold / f).clamp(max=1.0)


class SkipGram(nn.Module):
    """word2vec's skip-gram model: two tables, one for centre words, one for context words.

    score(c, o) = v_c . u_o  (v: `centre` row of c, u: `context` row of o)
    loss = -log sigma(score(c, o)) - K * mean_j log sigma(-score(c, noise_j))
    A true (centre, context) pair should score high, a centre word with random "noise" words low.
    The batch shares its noise words (one matrix product); their mean, times K, estimates the sum
    over K noise words per pair in the paper. The `centre` table is the embedding we keep.
    """

    def __init__(self, vocab_size: int, dim: int, negatives_per_pair: int = 5):
        super().__init__()
        self.centre = nn.Embedding(vocab_size, dim)   # (vocab, dim): the word vectors we keep
        self.context = nn.Embedding(vocab_size, dim)  # (vocab, dim): each word as a context
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)  # word2vec's initialisation
        nn.init.zeros_(self.context.weight)
        self.k = negatives_per_pair

    def loss(self, centres: torch.Tensor, contexts: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """centres, contexts: (batch,) ids of true pairs;  noise: (n_noise,) ids drawn at random."""
        v = self.centre(centres)                               # (batch, dim)
        positive = (v * self.context(contexts)).sum(-1)        # (batch,)  v_c . u_o
        negative = v @ self.context(noise).T                   # (batch, n_noise)  v_c . u_noise
        return -(F.logsigmoid(positive) + self.k * F.logsigmoid(-negative).mean(-1)).mean()


@dataclass
class SkipGramResult:
    """What `train_skipgram` returns: the model, the loss of every step, and the settings."""

    model: SkipGram
    losses: list[float]
    pairs_seen: int

    @property
    def table(self) -> torch.Tensor:
        """(vocab, dim): the learned word vectors (the centre table), detached."""
        return self.model.centre.weight.detach().clone()


def train_skipgram(ids: torch.Tensor, counts: torch.Tensor, *, dim: int = 64, window: int = 3,
                   epochs: int = 3, batch_size: int = 2048, n_noise: int = 32, negatives_per_pair: int = 5,
                   lr: float = 0.02, subsample: float = 1e-3, seed: int = 0, progress: bool = True) -> SkipGramResult:
    """Train word vectors on a stream of word ids with skip-gram and negative sampling.

    ids: (n,) word ids of the text, in order.  counts: (vocab,) how often each word occurs.
    Each epoch drops frequent words at random (`keep_probabilities`), makes every
    (centre, context) pair within `window`, shuffles them and takes Adam steps on batches.
    Noise words are drawn from the unigram distribution raised to the power 3/4 (word2vec's choice:
    rare words are drawn more often than their share of the text). Seeded: same result every run.
    """
    from tqdm.auto import tqdm

    if ids.dim() != 1 or counts.dim() != 1:
        raise ValueError(f"ids and counts must be 1-D; got ids {tuple(ids.shape)}, counts {tuple(counts.shape)}")
    _check_ids(ids, len(counts), "vocabulary (counts)")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the model's initialisation
    model = SkipGram(len(counts), dim, negatives_per_pair)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    keep = keep_probabilities(counts.double(), subsample).float()
    noise_probs = counts.double() ** 0.75
    noise_probs = (noise_probs / noise_probs.sum()).float()

    # The number of steps per epoch varies a little with the subsampling; estimate it for the bar.
    expected_pairs = 2 * window * float(keep[ids].sum())
    bar = tqdm(total=epochs * math.ceil(expected_pairs / batch_size), desc="skip-gram", unit="step",
               disable=not progress)
    losses, pairs_seen = [], 0
    for _ in range(epochs):
        kept = ids[torch.rand(len(ids), generator=g) < keep[ids]]  # subsample frequent words
        centres, contexts = skipgram_pairs(kept, window)
        order = torch.randperm(len(centres), generator=g)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            noise = torch.multinomial(noise_probs, n_noise, replacement=True, generator=g)
            loss = model.loss(centres[batch], contexts[batch], noise)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            pairs_seen += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    bar.close()
    return SkipGramResult(model, losses, pairs_seen)


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """(n, d) -> (n, 2): the coordinates of each row along the two directions of largest variance.

    Centre the rows, take the singular value decomposition X = U S V^T, and project onto the
    first two right singular vectors: X V[:, :2]. The sign of each axis is arbitrary; we fix it so
    that the largest coordinate on each axis is positive, which makes the picture reproducible.
    """
    if x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"x must be (n, d) with d >= 2; got shape {tuple(x.shape)}")
    centred = x - x.mean(dim=0, keepdim=True)             # (n, d)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ vh[:2].T                           # (n, 2)
    flip = torch.sign(coords.gather(0, coords.abs().argmax(0, keepdim=True)))  # (1, 2)
    return coords * flip


# --- 5. positions ------------------------------------------------------------------------------


def _check_pairs(d: int, name: str) -> None:
    if not is_int(d) or d < 2 or d % 2:
        raise ValueError(f"{name} must be a positive even int (the dimensions come in (sin, cos) pairs); got {d!r}")


def sinusoidal_positions(n_positions: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """(n_positions, d_model): the fixed position encodings of "Attention is all you need".

    PE(pos, 2i)   = sin(pos / base^(2i / d_model))
    PE(pos, 2i+1) = cos(pos / base^(2i / d_model))
    Pair i is a clock turning at frequency 1 / base^(2i/d): pair 0 turns once every 2 pi
    positions, the last pair almost not at all. Positions count from 0.
    """
    _check_pairs(d_model, "d_model")
    check_int(n_positions, "n_positions")
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)            # (t, 1)
    freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)  1 / base^(2i/d)
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)  # even dimensions: sine
    pe[:, 1::2] = torch.cos(pos * freq)  # odd dimensions: cosine of the same angle
    return pe.float()


def rope_angles(positions: torch.Tensor, d: int, base: float = 10000.0) -> torch.Tensor:
    """(t, d/2): the angle m * theta_j by which RoPE turns pair j at position m.

    theta_j = base^(-2j/d), j = 0 .. d/2 - 1 (RoFormer, Su et al. 2021): the same frequencies as the
    sinusoidal encoding.
    """
    _check_pairs(d, "d (the last axis)")
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)   # (d/2,)
    return positions.double().unsqueeze(-1) * theta                     # (t, d/2)


def apply_rope(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding: turn each pair (x_2j, x_2j+1) by the angle m * theta_j.

    x: (..., t, d) queries or keys   positions: (t,) integer positions m (default 0 .. t-1)
    -> (..., t, d), same dtype. For each pair,
        [x'_2j  ]   [cos m θ_j  -sin m θ_j] [x_2j  ]
        [x'_2j+1] = [sin m θ_j   cos m θ_j] [x_2j+1]
    Rotations keep lengths, and rotating q by m θ and k by n θ leaves their dot product depending
    only on (m - n) θ: attention scores see *relative* position. (Some libraries pair dimension j
    with j + d/2 instead of 2j with 2j+1; that is the same idea on a permuted vector.)
    """
    if x.dim() < 2:
        raise ValueError(f"x must be (..., t, d); got shape {tuple(x.shape)}")
    t, d = x.shape[-2], x.shape[-1]
    _check_pairs(d, "d (the last axis of x)")
    if positions is None:
        positions = torch.arange(t, device=x.device)
    if positions.shape != (t,):
        raise ValueError(f"positions must have shape (t,) = ({t},) to match x {tuple(x.shape)}; "
                         f"got {tuple(positions.shape)}")
    angles = rope_angles(positions, d, base).to(x.device)   # (t, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]                   # (..., t, d/2) each
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


# --- 4. images as tokens: patches ------------------------------------------------------------------

def image_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into square patches and flatten each one: the "tokens" of a vision transformer.

    images: (batch, channels, height, width), height and width multiples of patch_size.
    -> (batch, n_patches, patch_size * patch_size * channels), patches in reading order (row by row).

        a (1, 3, 32, 32) image, patch_size 8  ->  (1, 16, 192): 16 patches of 8 x 8 pixels x 3 colours
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (batch, channels, height, width); got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if not is_int(patch_size) or patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(f"patch_size must be a positive int dividing height {height} and width {width}; "
                         f"got {patch_size!r}")
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


class PatchEmbedding(nn.Module):
    """A ViT-style patch embedding: each flattened patch times one learned matrix, plus a learned
    position vector per patch. (batch, channels, H, W) -> (batch, n_patches, d_model).

    After it, an image is a sequence of d_model-wide vectors, exactly like a text after its token
    embedding, and the same transformer blocks can read both.
    """

    def __init__(self, channels: int, image_size: int, patch_size: int, d_model: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        self.patch_size = patch_size
        self.project = nn.Linear(patch_size * patch_size * channels, d_model)          # patch -> vector
        self.positions = nn.Parameter(torch.zeros((image_size // patch_size) ** 2, d_model))  # one per patch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(image_patches(images, self.patch_size)) + self.positions   # (b, n_patches, d)
