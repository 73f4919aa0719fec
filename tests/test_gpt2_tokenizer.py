"""GPT-2's tokenizer files: a course BPE saved in them encodes exactly as Hugging Face `tokenizers` does.

The reference is `tokenizers`' byte-level BPE (the Rust implementation behind GPT-2's tokenizer
in transformers), loaded from the files the course writes; offline, no downloads.
"""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from tokenizers.pre_tokenizers import ByteLevel  # noqa: E402

from llmcourse.data import python_docs  # noqa: E402
from llmcourse.tokenizers import (GPT2_SPLIT_PATTERN, BPETokenizer, bytes_to_unicode, load_gpt2_files,  # noqa: E402
                                  save_gpt2_files, split_text)

HOSTILE = [
    "Cafe\u0301 nai\u0308ve Z\u0336a\u0337l\u0338g\u0335o",          # combining marks
    "👩‍👩‍👧‍👦 🇫🇷 👍🏽 ❤️ family",                                  # emoji sequences (ZWJ, flags, skin tone)
    "東京の天気は晴れです。한국어 中文，标点！",                          # CJK and full-width punctuation
    "line one\r\nline two\r\n\r\n\rend\n",                              # Windows and old Mac line ends
    "a" + " " * 37 + "b \t\t  \n   \n",                                 # long runs of spaces, tabs
    "3.14159 1234567890 007 ２０２４ ½ x² Ⅻ -42 1,000,000",            # digits of several kinds
    "don't I'll we've you're it's O'NEIL 'quoted' DON'T",              # GPT-2's contraction rule
    "<|endoftext|>after<|endoftext|><|endoftext|> tail",              # the special token
    "nbsp\u00a0here, zero\u200bwidth, bom\ufeff, \u2028 sep \x00 \x7f",  # odd spaces and controls
    "",
    " ",
]
SPECIAL = "<|endoftext|>"


@pytest.fixture(scope="module")
def trained():
    text = python_docs().train[:40_000] + "".join(HOSTILE)
    return BPETokenizer.train(text, 600, special_tokens=[SPECIAL], pattern=GPT2_SPLIT_PATTERN)


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    save_gpt2_files(trained, folder)
    return folder


def reference(folder) -> ByteLevelBPETokenizer:
    hf = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), add_prefix_space=False)
    hf.add_special_tokens([SPECIAL])
    return hf


def test_byte_alphabet_is_gpt2s():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert set(table.values()) == set(ByteLevel.alphabet())
    assert (table[ord(" ")], table[ord("\n")], table[ord("a")]) == ("Ġ", "Ċ", "a")


@pytest.mark.parametrize("text", HOSTILE + ["The quick brown fox.\n" * 3])
def test_split_pattern_cuts_as_gpt2s_pre_tokenizer(text):
    table = bytes_to_unicode()
    expected = [piece for piece, _ in ByteLevel(add_prefix_space=False).pre_tokenize_str(text)]
    assert ["".join(table[b] for b in chunk.encode()) for chunk in split_text(text, GPT2_SPLIT_PATTERN)] == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_saved_files_encode_identically_in_hugging_face(files, trained, text):
    hf = reference(files)
    ids = trained.encode(text)
    assert ids == hf.encode(text).ids
    assert trained.decode(ids) == text == hf.decode(ids, skip_special_tokens=False)


def test_the_tokenizer_learned_merges_that_the_texts_use(files, trained):
    """Not a vacuous comparison: the hostile texts are cut into merged tokens, not only bytes."""
    ids = [i for text in HOSTILE for i in trained.encode(text)]
    assert sum(i >= 256 for i in ids) > 30 and trained.special_tokens[SPECIAL] in ids


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_encodes_identically(files, trained, text):
    hf = reference(files)
    assert trained.encode(text) == hf.encode(text).ids
    assert trained.decode(trained.encode(text)) == text


def test_files_read_back_give_the_same_tokenizer(files, trained):
    back = load_gpt2_files(files)
    assert back.merges == trained.merges and back.special_tokens == trained.special_tokens
    assert back.vocab == trained.vocab and back.pattern == GPT2_SPLIT_PATTERN
    for text in HOSTILE:
        assert back.encode(text) == trained.encode(text)


def test_gpt2_numbering_of_bytes_reads_and_encodes_like_hugging_face(files, tmp_path):
    """GPT-2's own files number the bytes printable-first ('!' is id 0); the merges follow from 256."""
    table = bytes_to_unicode()
    gpt2_order = sorted(range(256), key=lambda b: (table[b] != chr(b), ord(table[b])))
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    for new_id, b in enumerate(gpt2_order):
        vocab[table[b]] = new_id
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text((files / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
    ours, hf = load_gpt2_files(tmp_path), reference(tmp_path)
    assert ours.vocab[0] == b"!" and ours.encode("!") == [0]
    for text in HOSTILE:
        assert ours.encode(text) == hf.encode(text).ids
        assert ours.decode(ours.encode(text)) == text


# --- clear errors --------------------------------------------------------------------------------


def test_a_tokenizer_with_another_split_pattern_is_not_saved(tmp_path):
    tok = BPETokenizer.train("hello hello world", 260)  # the course's own pattern
    with pytest.raises(ValueError, match="GPT2_SPLIT_PATTERN"):
        save_gpt2_files(tok, tmp_path)


def test_two_merges_spelling_the_same_bytes_are_not_saved(tmp_path):
    a, b, c = ord("a"), ord("b"), ord("c")
    tok = BPETokenizer([(a, b), (256, c), (b, c), (a, 258)], pattern=GPT2_SPLIT_PATTERN)  # 257, 259: b"abc"
    with pytest.raises(ValueError, match="both b'abc'"):
        save_gpt2_files(tok, tmp_path)


def test_missing_or_disagreeing_files_are_named(files, tmp_path):
    with pytest.raises(ValueError, match="vocab.json and merges.txt"):
        load_gpt2_files(tmp_path)
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    merges = (files / "merges.txt").read_text(encoding="utf-8").split("\n")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("\n".join([merges[0], merges[2], merges[1], *merges[3:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="disagree"):
        load_gpt2_files(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nnot-a-token x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_gpt2_files(tmp_path)


def test_transformers_gpt2_tokenizer_reads_the_folder_identically(files, trained):
    """The way a user loads GPT-2's tokenizer: transformers' GPT2Tokenizer.from_pretrained(folder)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2Tokenizer.from_pretrained(str(files))
    assert len(hf) == trained.vocab_size
    for text in HOSTILE:
        assert hf.encode(text) == trained.encode(text)
        assert hf.decode(trained.encode(text)) == text
