"""Real models: GPT-2's weights in the course's own GPT, and any Hugging Face model in the lab.

The GPT of unit 06 *is* GPT-2's architecture (Radford et al., 2019): token and learned position
embeddings, pre-norm blocks of attention and a 4x MLP, a final LayerNorm, an output layer tied to
the token embedding. Two details make it GPT-2 to the last digit:

* GPT-2's MLP uses the tanh approximation of GELU: GPTConfig(gelu_approximate="tanh").
* Hugging Face stores GPT-2's linear layers as `Conv1D`, y = x W + b with W (in, out), where
  PyTorch's nn.Linear keeps W (out, in): every such weight is transposed on the way in.

The names map one to one (i = block number):

    Hugging Face GPT-2               course GPT
    wte, wpe                         tok_emb, pos_emb
    h.i.ln_1, h.i.ln_2               blocks.i.ln1, blocks.i.ln2
    h.i.attn.c_attn (W transposed)   blocks.i.attn.qkv      queries, keys, values: same layout
    h.i.attn.c_proj (W transposed)   blocks.i.attn.proj
    h.i.mlp.c_fc, h.i.mlp.c_proj     blocks.i.mlp.fc, blocks.i.mlp.proj   (W transposed)
    ln_f, lm_head                    ln_f, lm_head          (lm_head only when not tied)

`load_gpt2(source)` reads a checkpoint folder (`config.json` + `model.safetensors`), or downloads
one by name ("gpt2") where the network and `huggingface_hub` (pip install 'llmcourse[hf]') are
available. `load_gpt2_tokenizer(source)` reads GPT-2's `vocab.json` + `merges.txt` into the
course's own BPETokenizer. `HuggingFaceAdapter` puts any Hugging Face causal language model behind
the interface that `generation.generate` and the temperature lab use (the `LanguageModel`
protocol), and `TokenizerAdapter` does the same for a tokenizer. Nothing here needs the network
unless asked to download.
"""
from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import safetensors.torch
import torch

from llmcourse.model import GPT, GPTConfig
from llmcourse.tokenizers import BPETokenizer, load_gpt2_files

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("vocab.json", "merges.txt")

# Hugging Face's names for GPT-2's GELU -> GPTConfig.gelu_approximate
GELU_APPROXIMATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}

# per block: Hugging Face name -> (course name, transpose?)   (Conv1D weights are (in, out))
BLOCK_NAMES = {
    "ln_1.weight": ("ln1.weight", False), "ln_1.bias": ("ln1.bias", False),
    "attn.c_attn.weight": ("attn.qkv.weight", True), "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True), "attn.c_proj.bias": ("attn.proj.bias", False),
    "ln_2.weight": ("ln2.weight", False), "ln_2.bias": ("ln2.bias", False),
    "mlp.c_fc.weight": ("mlp.fc.weight", True), "mlp.c_fc.bias": ("mlp.fc.bias", False),
    "mlp.c_proj.weight": ("mlp.proj.weight", True), "mlp.c_proj.bias": ("mlp.proj.bias", False),
}
OUTER_NAMES = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
               "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias", "lm_head.weight": "lm_head.weight"}
# buffers some GPT-2 files carry (the causal mask); the course GPT builds its mask on the fly
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


# --- the config -------------------------------------------------------------------------------------


def gpt2_config(hf_config: dict) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 `config.json` (as a dict).

        {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257, ...}
        -> GPTConfig(vocab_size=50257, context_length=1024, n_layers=12, d_model=768, n_heads=12,
                     gelu_approximate="tanh")          (GPT-2 small: 124M parameters)

    Settings the course GPT does not have are refused with a ValueError naming them.
    """
    if not isinstance(hf_config, dict):
        raise ValueError(f"hf_config must be the dict of a config.json; got {type(hf_config).__name__}")
    model_type = hf_config.get("model_type")
    if model_type != "gpt2":
        raise ValueError(f"this is a {model_type!r} checkpoint, not 'gpt2': the course GPT has GPT-2's "
                         f"architecture only; use HuggingFaceAdapter to put other models in the lab")
    d = hf_config.get("n_embd", 768)
    activation = hf_config.get("activation_function", "gelu_new")
    settings = {  # name: (the file's value, the values the course GPT supports)
        "activation_function": (activation, tuple(GELU_APPROXIMATIONS)),
        "n_inner": (hf_config.get("n_inner"), (None, 4 * d)),
        "layer_norm_epsilon": (hf_config.get("layer_norm_epsilon", 1e-5), (1e-5,)),  # nn.LayerNorm's default
        "scale_attn_weights": (hf_config.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf_config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (hf_config.get("add_cross_attention", False), (False,)),
    }
    for name, (value, supported) in settings.items():
        if value not in supported:
            raise ValueError(f"config.json has {name}={value!r}; the course GPT supports {list(supported)}")
    return GPTConfig(vocab_size=hf_config.get("vocab_size", 50257),
                     context_length=hf_config.get("n_positions", hf_config.get("n_ctx", 1024)),
                     n_layers=hf_config.get("n_layer", 12), d_model=d, n_heads=hf_config.get("n_head", 12),
                     dropout=0.0,  # for inference; GPT-2 trained with 0.1
                     tie_weights=hf_config.get("tie_word_embeddings", True), bias=True,
                     gelu_approximate=GELU_APPROXIMATIONS[activation])


# --- the weights ------------------------------------------------------------------------------------


def course_name(hf_name: str) -> tuple[str, bool] | None:
    """The course GPT's name for a Hugging Face GPT-2 tensor, and whether to transpose it.

        "transformer.h.3.mlp.c_fc.weight" -> ("blocks.3.mlp.fc.weight", True)
        "h.0.attn.bias" (a mask buffer)   -> None
    """
    name = hf_name.removeprefix("transformer.")
    if MASK_BUFFER.fullmatch(name):
        return None
    if name in OUTER_NAMES:
        return OUTER_NAMES[name], False
    match = re.fullmatch(r"h\.(\d+)\.(.+)", name)
    if match and match.group(2) in BLOCK_NAMES:
        target, transpose = BLOCK_NAMES[match.group(2)]
        return f"blocks.{match.group(1)}.{target}", transpose
    raise ValueError(f"{hf_name!r} is not a tensor of a GPT-2 checkpoint")


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor GPT(config) loads (built on the "meta" device: no memory used)."""
    with torch.device("meta"):
        state = GPT(config).state_dict()
    if config.tie_weights:
        state.pop("lm_head.weight")
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def gpt2_state_dict(hf_tensors: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors -> the course GPT's state dict (renamed, Conv1D weights transposed).

    Checks every tensor against the config's shapes; a missing, extra or misshapen tensor is a
    ValueError that names it.
    """
    expected = expected_shapes(config)
    state = {}
    for hf_name, tensor in hf_tensors.items():
        mapped = course_name(hf_name)
        if mapped is None:
            continue
        name, transpose = mapped
        if name == "lm_head.weight" and config.tie_weights:
            continue  # tied: the output layer IS the token embedding
        tensor = (tensor.t() if transpose else tensor).float().contiguous()
        if name not in expected:
            raise ValueError(f"{hf_name!r} ({name}) does not belong to a GPT with {config.n_layers} layers")
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"{hf_name!r} has shape {tuple(tensor.shape)} (after transposing: {transpose}); "
                             f"config.json implies {expected[name]} for {name}")
        state[name] = tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} tensors of this config, e.g. {missing[:4]}")
    return state


def read_checkpoint(folder) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json (a dict) and model.safetensors (name -> tensor) of a checkpoint folder."""
    folder = Path(folder)
    paths = {name: folder / name for name in (CONFIG_FILE, WEIGHTS_FILE)}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        other = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
        hint = (f" ({other[0]} is a pickle file, which can run code when loaded: convert it with "
                f"transformers' save_pretrained(..., safe_serialization=True))" if other else "")
        raise ValueError(f"{folder} must hold {CONFIG_FILE} and {WEIGHTS_FILE}; missing {missing}{hint}")
    try:
        hf_config = json.loads(paths[CONFIG_FILE].read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{paths[CONFIG_FILE]} is not valid JSON: {e}") from None
    try:
        tensors = safetensors.torch.load_file(str(paths[WEIGHTS_FILE]))
    except Exception as e:  # safetensors raises its own error types for a short or garbled file
        raise ValueError(f"{paths[WEIGHTS_FILE]} is not a complete safetensors file (truncated or corrupt?): "
                         f"{e}") from None
    return hf_config, tensors


def load_gpt2(source="gpt2", *, device=None) -> GPT:
    """A course GPT holding the weights of a Hugging Face GPT-2 checkpoint, in eval mode.

    source: a folder with config.json and model.safetensors, or a model name on the Hugging Face
    Hub ("gpt2", "gpt2-medium", ...), downloaded (once, then cached) where the network is available.

        model = load_gpt2("path/to/gpt2")      # GPT-2 small: 12 layers, width 768, 124M parameters
    """
    hf_config, tensors = read_checkpoint(checkpoint_folder(source, (CONFIG_FILE, WEIGHTS_FILE)))
    config = gpt2_config(hf_config)
    model = GPT(config)
    model.load_state_dict(gpt2_state_dict(tensors, config), strict=not config.tie_weights)
    return model.to(device if device is not None else "cpu").eval()


def load_gpt2_tokenizer(source="gpt2") -> BPETokenizer:
    """GPT-2's tokenizer (vocab.json + merges.txt, from a folder or by name) as the course's BPETokenizer."""
    return load_gpt2_files(checkpoint_folder(source, TOKENIZER_FILES))


def local_gpt2_folder(name: str = "gpt2", files: Sequence[str] = (CONFIG_FILE, WEIGHTS_FILE, *TOKENIZER_FILES)) -> Path | None:
    """A folder on this machine holding GPT-2's files, found without the network; None if there is none.

    Looks in $LLMCOURSE_GPT2 (a folder you copied the files into), then in Hugging Face's download
    cache (where an earlier load_gpt2("gpt2") on a machine with network put them).
    """
    if os.environ.get("LLMCOURSE_GPT2"):
        folder = Path(os.environ["LLMCOURSE_GPT2"])
        return folder if all((folder / f).is_file() for f in files) else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = [try_to_load_from_cache(name, f) for f in files]   # a path, or a marker/None if not cached
    return Path(cached[0]).parent if all(isinstance(path, str) for path in cached) else None


def checkpoint_folder(source, files: Sequence[str]) -> Path:
    """The local folder holding `files`: `source` itself if it is a folder, else a Hub download."""
    path = Path(source)
    if path.is_dir():
        return path
    if isinstance(source, Path) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(source)) or str(source)[0] in "./":
        raise ValueError(f"no folder {str(source)!r}; pass a folder holding {list(files)} (or a Hub model "
                         f"name such as 'gpt2' where the network is available)")
    return _download(str(source), files)


def _download(name: str, files: Sequence[str]) -> Path:
    """The Hub's files for `name`: from the local cache if there, else downloaded (needs the network)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ValueError(f"no folder {name!r} here, and downloading it needs the optional dependencies: "
                         f"pip install 'llmcourse[hf]'") from None
    paths = []
    for filename in files:
        try:
            paths.append(Path(hf_hub_download(name, filename, local_files_only=True)))
            continue
        except Exception:  # not cached yet: try the network below
            pass
        try:
            paths.append(Path(hf_hub_download(name, filename)))
        except Exception as e:  # offline, unknown model, ...: one clear message either way
            raise ValueError(f"no folder {name!r} here, and {filename} of the Hub model {name!r} could not be "
                             f"downloaded ({type(e).__name__}). Download it where the network is available "
                             f"and pass the folder instead.") from None
    return paths[0].parent


# --- any model behind the course's interface ------------------------------------------------------------


class TokenizerAdapter:
    """A tokenizer as generation and the lab use it: encode(text), decode(ids), and `vocab`, one string per id.

    Wraps the course's BPETokenizer (for instance GPT-2's, from load_gpt2_tokenizer), a Hugging
    Face `tokenizers.Tokenizer`, or a `transformers` tokenizer. Byte-level tokenizers encode any
    text; a token that is only part of a character's bytes shows as '\ufffd' in `vocab`.

        tok = TokenizerAdapter(load_gpt2_tokenizer("gpt2"))
        tok.encode(" Hello")   # [18435]         tok.vocab[18435]  # ' Hello'
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        if isinstance(tokenizer, BPETokenizer):
            self.vocab = [tokenizer.token_bytes(i).decode("utf-8", errors="replace")
                          for i in range(tokenizer.vocab_size)]
            return
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # transformers -> its `tokenizers` object
        if not hasattr(backend, "decode_batch"):
            raise ValueError(f"tokenizer must be an llmcourse BPETokenizer, a tokenizers.Tokenizer or a "
                             f"transformers tokenizer; got {type(tokenizer).__name__}")
        self.tokenizer = backend
        size = backend.get_vocab_size(with_added_tokens=True)
        self.vocab = backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str; got {type(text).__name__}")
        if isinstance(self.tokenizer, BPETokenizer):
            return self.tokenizer.encode(text)
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.vocab)]
        if bad:
            raise ValueError(f"ids must be in [0, {len(self.vocab)}); got {bad[:10]}")
        if isinstance(self.tokenizer, BPETokenizer):
            return self.tokenizer.decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class HuggingFaceAdapter:
    """Any Hugging Face causal language model and its tokenizer as a LanguageModel.

    generate(), generate_text() and the temperature lab then work with it exactly as with the course
    GPT. `next_token_logits` runs the model on the whole (cropped) prefix; `generate` decodes with
    the model's own KV cache (`decoder`), one new position per step. A model whose output layer is
    wider than the tokenizer's vocabulary
    (padded for speed) has its extra scores cut off: those ids are never real tokens.

        from transformers import AutoModelForCausalLM, AutoTokenizer
        lm = HuggingFaceAdapter(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
        generate_text(lm, "The meaning of life is", 20, SamplingConfig(temperature=0.7))
    """

    def __init__(self, model, tokenizer, device=None):
        if not hasattr(model, "config") or not callable(model):
            raise ValueError(f"model must be a Hugging Face causal language model (with a .config); "
                             f"got {type(model).__name__}")
        self.model = model.eval()
        self.tokenizer = tokenizer if isinstance(tokenizer, TokenizerAdapter) else TokenizerAdapter(tokenizer)
        self.device = device if device is not None else next(model.parameters()).device
        config = model.config
        self.context_length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        self.name = getattr(config, "name_or_path", "") or f"{config.model_type} (Hugging Face)"
        output_size = model.get_output_embeddings().weight.shape[0]
        if output_size < len(self.tokenizer.vocab):
            raise ValueError(f"the tokenizer has {len(self.tokenizer.vocab)} tokens but the model scores only "
                             f"{output_size}; use the tokenizer the model was trained with")

    @torch.no_grad()
    def next_token_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """(vocab,) scores for the token after `ids` (only the last context_length ids are seen)."""
        if len(ids) == 0:
            raise ValueError("the model needs at least one token to predict from; got an empty prompt")
        ids = list(ids)[-self.context_length:] if self.context_length else list(ids)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)               # (1, t)
        logits = self.model(input_ids=idx).logits[0, -1]                               # (output_size,)
        return logits[: len(self.tokenizer.vocab)].float().cpu()                       # (vocab,)

    def empty_prompt_ids(self) -> list[int]:
        """What to start from when the prompt is empty: the model's beginning-of-text token (GPT-2: <|endoftext|>)."""
        bos = getattr(self.model.config, "bos_token_id", None)
        return [bos] if isinstance(bos, int) and 0 <= bos < len(self.tokenizer.vocab) else [0]

    def decoder(self, ids: list[list[int]], use_cache: bool = True) -> "HuggingFaceDecoder":
        """What `generation.generate` extends a batch of equal-length prompts with."""
        return HuggingFaceDecoder(self, ids, use_cache)


class HuggingFaceDecoder:
    """A batch of sequences being extended by a Hugging Face causal LM, with its KV cache.

    The first step runs the prompts; each later step runs only the new token, reading the keys and
    values of every earlier position from the model's `past_key_values`. As for the course GPT, the
    cache is exact only while the text fits in the context window; past it each step recomputes the
    last context_length tokens, which is what decoding without a cache does.
    """

    def __init__(self, adapter: HuggingFaceAdapter, ids: list[list[int]], use_cache: bool = True):
        if len({len(row) for row in ids}) != 1 or len(ids[0]) == 0:
            raise ValueError("every sequence of a batch needs the same, non-zero number of prompt tokens")
        self.model, self.T, self.use_cache = adapter.model, adapter.context_length, use_cache
        self.vocab_size = len(adapter.tokenizer.vocab)
        self.idx = torch.tensor(ids, dtype=torch.long, device=adapter.device)   # (batch, t)
        self.past = None
        self._next = None
        # transformers names the cache `cache` since 5.x, `past_key_values` before
        self.cache_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _fits(self) -> bool:
        return not self.T or self.idx.shape[1] <= self.T

    @torch.no_grad()
    def logits(self) -> torch.Tensor:                                  # (batch, vocab)
        if self._next is None:
            context = self.idx[:, -self.T:] if self.T else self.idx     # (batch, <= T)
            cached = self.use_cache and self._fits()
            out = self.model(input_ids=context, use_cache=cached)
            self.past = getattr(out, self.cache_name) if cached else None
            self._next = out.logits[:, -1]
        return self._next[:, :self.vocab_size].float().cpu()

    @torch.no_grad()
    def append(self, tokens: torch.Tensor) -> None:
        new = tokens.to(self.idx.device).view(-1, 1)                    # (batch, 1)
        self.idx = torch.cat([self.idx, new], dim=1)
        if self.past is not None and self._fits():                      # the new position fits: cached step
            out = self.model(input_ids=new, use_cache=True, **{self.cache_name: self.past})
            self.past, self._next = getattr(out, self.cache_name), out.logits[:, -1]
        else:
            self.past, self._next = None, None                          # recompute on demand
