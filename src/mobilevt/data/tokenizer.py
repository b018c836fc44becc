"""BERT WordPiece tokenizer as a TorchScript module: the text half of ViLT VQA pre-processing.

:class:`WordPieceTokenizer` reproduces the reference BERT tokenizer (``BasicTokenizer`` then
``WordpieceTokenizer``, as in transformers' slow ``BertTokenizerLegacy``) id for id, and
``torch.jit.script`` compiles it, so a phone app ships the question pre-processing in the
same kind of file as the model:

1. Special tokens written in the text (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``)
   are kept whole, as transformers does.
2. Cleaning: NUL, U+FFFD and control characters (category ``C*`` except tab, newline,
   carriage return) are dropped; whitespace separates words.
3. CJK ideographs (BERT's ranges) become words of their own.
4. Each word is lowercased (Python's ``str.lower``, final sigma included), decomposed
   (NFD) and stripped of nonspacing marks (``Mn``); with ``lowercase=False`` it is only
   NFC-normalised, as the reference does for cased vocabularies.
5. Punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode ``P*``) is split off.
6. Greedy longest-match-first WordPiece with ``##`` continuations; ``[UNK]`` for a word
   that cannot be split or is longer than 100 characters.
7. ``[CLS] ... [SEP]``, truncated to ``max_length``; batches are padded with ``[PAD]``.

TorchScript has no ``unicodedata``, and its strings are UTF-8 bytes (``len``, iteration,
``ord`` and ``chr`` work on bytes, ``str.lower`` only on ASCII). The module therefore
decodes UTF-8 itself and carries the Unicode facts it needs as tables built at
construction from Python's ``unicodedata`` and ``str.lower``: per-character flags (an ASCII
string indexed by code point for the Basic Multilingual Plane, sorted ranges above it), the
lowercase+NFD mapping, the NFD mapping and composition pairs (NFC) and the canonical
combining classes. Hangul syllables are decomposed and composed arithmetically. The tables
follow the Unicode version of the Python that builds the module (``unicode_version``).

Where transformers' two BERT tokenizers disagree, this module follows the slow one (the
reference BERT code); the fast one (Rust ``tokenizers``) differs on:

* Greek capital sigma at the end of a word: ``str.lower`` gives final ``ς``, the fast one
  lowercases character by character (``σ``);
* unassigned and private-use code points (categories ``Cn``, ``Co``): dropped as control
  characters by the slow one, kept (usually ``[UNK]``) by the fast one;
* characters newer than the fast one's Unicode tables (e.g. U+07FD, U+061D);
* a word that spells a special token only once cleaned (``"[SE\\x00P]"``): kept whole
  (``never_split``) by the slow one, split by the fast one;
* ``lowercase=False``: the slow one NFC-normalises, the fast one does not.

In TorchScript a ``str`` argument must be valid UTF-8 text: Python strings holding lone
surrogates are refused at the call (eager mode drops them, as the reference does).
"""

import functools
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["WordPieceTokenizer", "create_tokenizer", "load_vocab", "tokenizer_json"]

REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
# Special tokens that a text may contain literally and that are then kept whole
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Per-character flags in the range table
_DROP = 1  # removed by BERT's cleaning: NUL, U+FFFD, category C* other than \t \n \r
_BOUNDARY = 2  # separates words: BERT whitespace (" ", \t, \n, \r, Zs) or Python str.isspace()
_PUNCT = 4  # BERT punctuation: the ASCII non-alphanumeric ranges and Unicode P*
_CJK = 8  # BERT's CJK ideograph ranges: each such character is a word
_NONSPACING_MARK = 16  # category Mn: removed by accent stripping
_CASED = 32  # cased and not case-ignorable: decides Python's final-sigma lowercasing
_CASE_IGNORABLE = 64

_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_CAPITAL_SIGMA, _SMALL_SIGMA, _FINAL_SIGMA = 0x3A3, 0x3C3, 0x3C2
# Hangul syllables: decomposition and composition are arithmetic (Unicode 3.12)
_S_BASE, _L_BASE, _V_BASE, _T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
_L_COUNT, _V_COUNT, _T_COUNT = 19, 21, 28
_N_COUNT = _V_COUNT * _T_COUNT
_S_COUNT = _L_COUNT * _N_COUNT
_PAIR_SHIFT = 21  # composition keys: (first << 21) | second; code points fit in 21 bits

# _TORCHSCRIPT_EMPTY_LIST_NOTE: in the scripted code a list reset inside a loop is emptied
# with .clear(), never rebound to a new `[]`: TorchScript's optimiser (torch 2.14) folds an
# empty list literal chosen in an `if` branch into one shared constant, so words would pile
# up across calls from the second call on.


@dataclass(frozen=True)
class UnicodeTables:
    """Unicode facts for the scripted tokenizer, from this Python's ``unicodedata``."""

    unicode_version: str
    range_starts: list[int]  # sorted; range i covers [range_starts[i], range_starts[i + 1])
    range_flags: list[int]
    lower_nfd: dict[int, list[int]]  # NFD(chr(c).lower()) where it is not c itself
    nfd: dict[int, list[int]]  # full canonical decomposition where it is not c itself
    combining_class: dict[int, int]  # canonical combining class where it is not 0
    compose: dict[int, int]  # (first << 21) | second -> primary composite


def _flags_of(cp: int) -> int:
    char = chr(cp)
    category = unicodedata.category(char)
    flags = 0
    if cp == 0 or cp == 0xFFFD or (category[0] == "C" and char not in "\t\n\r"):
        flags |= _DROP
    elif char in " \t\n\r" or category == "Zs" or char.isspace():
        # Python's str.split() (used by the reference after cleaning) also splits at
        # U+2028/U+2029, which BERT's cleaning keeps.
        flags |= _BOUNDARY
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or category[0] == "P":
        flags |= _PUNCT
    if any(lo <= cp <= hi for lo, hi in _CJK_RANGES):
        flags |= _CJK
    if category == "Mn":
        flags |= _NONSPACING_MARK
    if category not in ("Cn", "Co", "Cs"):
        # unicodedata has no Cased / Case_Ignorable property: read them off str.lower's
        # final-sigma rule (sigma is final after a cased letter, skipping case-ignorables).
        # After a space only a cased, not case-ignorable char makes it final.
        if (" " + char + "\u03a3").lower()[-1] == "\u03c2":
            flags |= _CASED
        elif ("A" + char + "\u03a3").lower()[-1] == "\u03c2":
            flags |= _CASE_IGNORABLE
    return flags


@functools.lru_cache(maxsize=1)
def unicode_tables() -> UnicodeTables:
    """Build (once per process, about 2 s) the tables the scripted tokenizer looks up."""
    range_starts: list[int] = []
    range_flags: list[int] = []
    lower_nfd: dict[int, list[int]] = {}
    nfd: dict[int, list[int]] = {}
    combining_class: dict[int, int] = {}
    compose: dict[int, int] = {}
    previous = -1
    for cp in range(0x110000):
        flags = _flags_of(cp)
        if flags != previous:
            range_starts.append(cp)
            range_flags.append(flags)
            previous = flags
        if _S_BASE <= cp < _S_BASE + _S_COUNT or 0xD800 <= cp <= 0xDFFF:
            continue  # Hangul is arithmetic; surrogates never reach the tokenizer
        char = chr(cp)
        ccc = unicodedata.combining(char)
        if ccc:
            combining_class[cp] = ccc
        decomposition = unicodedata.decomposition(char)
        canonical = bool(decomposition) and not decomposition.startswith("<")
        lowered = char.lower()
        if canonical or lowered != char:
            mapped = unicodedata.normalize("NFD", lowered)
            if mapped != char:
                lower_nfd[cp] = [ord(c) for c in mapped]
        if canonical:
            nfd[cp] = [ord(c) for c in unicodedata.normalize("NFD", char)]
            parts = [int(p, 16) for p in decomposition.split()]
            # a primary composite: a pair that NFC recomposes (not excluded)
            if len(parts) == 2 and unicodedata.normalize("NFC", char) == char:
                compose[(parts[0] << _PAIR_SHIFT) | parts[1]] = cp
    return UnicodeTables(
        unicodedata.unidata_version, range_starts, range_flags, lower_nfd, nfd, combining_class, compose
    )


def _expand_flags(range_starts: list[int], range_flags: list[int], end: int) -> str:
    """Flags of code points [0, end) as a string, one character (chr(flags)) each."""
    chars: list[str] = []
    for i, start in enumerate(range_starts):
        if start >= end:
            break
        stop = min(range_starts[i + 1] if i + 1 < len(range_starts) else end, end)
        assert range_flags[i] < 128
        chars.append(chr(range_flags[i]) * (stop - start))
    return "".join(chars)


def load_vocab(vocab_file: str | os.PathLike) -> list[str]:
    """Read a BERT ``vocab.txt`` (one token per line, id = line number) the way the
    reference does: UTF-8, universal newlines, only the line break removed."""
    path = Path(vocab_file)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary file not found: {path}; pass the vocab.txt of a BERT WordPiece tokenizer (one token per line)"
        )
    try:
        with open(path, encoding="utf-8") as reader:
            return [line.rstrip("\n") for line in reader.readlines()]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not a UTF-8 text file ({exc.reason}); expected a BERT vocab.txt") from None


class WordPieceTokenizer(nn.Module):
    """BERT WordPiece tokenizer whose methods run in TorchScript (see the module docstring).

    ``encode(text)`` gives the ids ``[CLS] ... [SEP]`` truncated to ``max_length``;
    ``forward(texts)`` / ``encode_batch(texts)`` give ``(input_ids, attention_mask)``, int64
    ``[B, max_length]`` padded with ``[PAD]``, like transformers' ``BertTokenizer(texts,
    padding="max_length", truncation=True, max_length=max_length)``; ``decode(ids)`` turns ids
    back into text. ``lowercase=True`` (uncased vocabularies, ViLT) also strips accents, as
    BERT does; ``lowercase=False`` keeps case and accents and NFC-normalises.
    """

    vocab: dict[str, int]
    id_to_token: list[str]
    special_token_ids: list[int]
    special_token_codepoints: list[list[int]]
    never_split_codepoints: list[list[int]]
    range_starts: list[int]
    range_flags: list[int]
    ascii_flags: list[int]
    bmp_flags: str
    lower_nfd: dict[int, list[int]]
    nfd: dict[int, list[int]]
    combining_class: dict[int, int]
    compose: dict[int, int]

    # constants, inlined by TorchScript (it cannot read module globals)
    DROP: Final[int] = _DROP
    BOUNDARY: Final[int] = _BOUNDARY
    PUNCT: Final[int] = _PUNCT
    CJK: Final[int] = _CJK
    NONSPACING_MARK: Final[int] = _NONSPACING_MARK
    CASED: Final[int] = _CASED
    CASE_IGNORABLE: Final[int] = _CASE_IGNORABLE
    CAPITAL_SIGMA: Final[int] = _CAPITAL_SIGMA
    SMALL_SIGMA: Final[int] = _SMALL_SIGMA
    FINAL_SIGMA: Final[int] = _FINAL_SIGMA
    S_BASE: Final[int] = _S_BASE
    L_BASE: Final[int] = _L_BASE
    V_BASE: Final[int] = _V_BASE
    T_BASE: Final[int] = _T_BASE
    L_COUNT: Final[int] = _L_COUNT
    V_COUNT: Final[int] = _V_COUNT
    T_COUNT: Final[int] = _T_COUNT
    N_COUNT: Final[int] = _N_COUNT
    S_COUNT: Final[int] = _S_COUNT
    PAIR_SHIFT: Final[int] = _PAIR_SHIFT

    def __init__(
        self,
        tokens: Sequence[str],
        max_length: int = 40,
        lowercase: bool = True,
        max_input_chars_per_word: int = 100,
    ):
        super().__init__()
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InvalidInputError(
                f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}"
            )
        vocab: dict[str, int] = {}
        for index, token in enumerate(tokens):
            vocab[token] = index  # a repeated token keeps its last id, as the reference
        missing = [token for token in REQUIRED_TOKENS if token not in vocab]
        if missing:
            raise InvalidInputError(
                f"the vocabulary has no {', '.join(missing)} token; a BERT WordPiece vocab.txt needs "
                f"{', '.join(REQUIRED_TOKENS)} (one token per line)"
            )
        self.vocab = vocab
        self.id_to_token = [str(token) for token in tokens]
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        # no vocabulary entry is longer, so longer candidate pieces need not be looked up
        self.max_token_chars = max(len(token) for token in vocab)
        self.pad_token_id = vocab["[PAD]"]
        self.unk_token_id = vocab["[UNK]"]
        self.cls_token_id = vocab["[CLS]"]
        self.sep_token_id = vocab["[SEP]"]
        present = [token for token in SPECIAL_TOKENS if token in vocab]
        self.special_token_ids = [vocab[token] for token in present]
        self.special_token_codepoints = [[ord(c) for c in token] for token in present]
        self.never_split_codepoints = [[ord(c) for c in token] for token in SPECIAL_TOKENS]

        tables = unicode_tables()
        self.unicode_version = tables.unicode_version
        self.range_starts = list(tables.range_starts)
        self.range_flags = list(tables.range_flags)
        self.ascii_flags = [_flags_of(cp) for cp in range(128)]
        # the Basic Multilingual Plane's flags as one ASCII string (flags < 128): indexing it
        # is much cheaper than the range search, in TorchScript (bytes) and in Python alike
        self.bmp_flags = _expand_flags(tables.range_starts, tables.range_flags, 0x10000)
        self.combining_class = dict(tables.combining_class)
        # lowercasing needs lower_nfd; NFC (cased words, special-token checks) nfd and compose
        self.lower_nfd = dict(tables.lower_nfd) if self.lowercase else {}
        self.nfd = dict(tables.nfd)
        self.compose = dict(tables.compose)

    @classmethod
    def from_vocab_file(
        cls, vocab_file: str | os.PathLike, max_length: int = 40, lowercase: bool = True
    ) -> "WordPieceTokenizer":
        tokens = load_vocab(vocab_file)
        try:
            return cls(tokens, max_length=max_length, lowercase=lowercase)
        except ValueError as exc:
            raise InvalidInputError(f"{vocab_file}: {exc}") from None

    def extra_repr(self) -> str:
        return f"vocab_size={len(self.id_to_token)}, max_length={self.max_length}, lowercase={self.lowercase}"

    # ------------------------------------------------------------------ public API
    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, int64 ``[len(texts), max_length]``."""
        return self.encode_batch(texts, True)

    @torch.jit.export
    def encode(self, text: str) -> list[int]:
        """Ids of ``[CLS] text [SEP]``, at most ``max_length`` of them (no padding)."""
        codepoints = self._codepoints(text)
        ids: list[int] = [self.cls_token_id]
        limit = self.max_length - 1  # leaves room for [SEP]; tokenizing stops there
        self._tokenize_text(codepoints, ids, limit)
        ids = ids[:limit]
        ids.append(self.sep_token_id)
        return ids

    @torch.jit.export
    def encode_batch(self, texts: list[str], pad_to_max_length: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, int64 ``[len(texts), L]`` padded with ``[PAD]``;
        ``L`` is ``max_length``, or the longest encoding when ``pad_to_max_length=False``."""
        encoded: list[list[int]] = [self.encode(text) for text in texts]
        width = self.max_length
        if not pad_to_max_length:
            width = 0
            for ids in encoded:
                width = max(width, len(ids))
        input_ids = torch.full([len(texts), width], self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros([len(texts), width], dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    @torch.jit.export
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``: word pieces joined, ``##`` continuations glued, spaces before
        punctuation and contractions removed (the reference's ``decode``)."""
        tokens: list[str] = []
        for token_id in ids:
            if token_id < 0 or token_id >= len(self.id_to_token):
                raise InvalidInputError(
                    "decode got id "
                    + str(token_id)
                    + ", outside the vocabulary [0, "
                    + str(len(self.id_to_token))
                    + ")"
                )
            if skip_special_tokens and token_id in self.special_token_ids:
                continue
            tokens.append(self.id_to_token[token_id])
        text = " ".join(tokens).replace(" ##", "").strip()
        for spaced, joined in [
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ]:
            text = text.replace(spaced, joined)
        return text

    def save_torchscript(self, path: str | os.PathLike) -> Path:
        """Script this tokenizer and save it atomically to ``path`` (``torch.jit.load`` it)."""
        from ..export.formats.torchscript import save_torchscript

        save_torchscript(self, path)
        return Path(path)

    # ------------------------------------------------------------------ text -> words
    def _tokenize_text(self, codepoints: list[int], ids: list[int], limit: int) -> None:
        """Append the ids of ``codepoints`` to ``ids``, keeping special tokens written in the
        text whole, until ``ids`` holds ``limit`` ids."""
        segment_start = 0
        i = 0
        n = len(codepoints)
        while i < n and len(ids) < limit:
            matched = -1
            matched_length = 0
            if codepoints[i] == 91:  # "[": every BERT special token starts with it
                for k in range(len(self.special_token_codepoints)):
                    special = self.special_token_codepoints[k]
                    if len(special) > matched_length and self._starts_with(codepoints, i, special):
                        matched = self.special_token_ids[k]
                        matched_length = len(special)
            if matched >= 0:
                self._tokenize_segment(codepoints, segment_start, i, ids, limit)
                if len(ids) < limit:
                    ids.append(matched)
                i += matched_length
                segment_start = i
            else:
                i += 1
        self._tokenize_segment(codepoints, segment_start, n, ids, limit)

    def _starts_with(self, codepoints: list[int], start: int, prefix: list[int]) -> bool:
        if start + len(prefix) > len(codepoints):
            return False
        for k in range(len(prefix)):
            if codepoints[start + k] != prefix[k]:
                return False
        return True

    def _tokenize_segment(self, codepoints: list[int], start: int, end: int, ids: list[int], limit: int) -> None:
        """Clean the text, cut it at whitespace and around CJK ideographs, tokenize each word."""
        word: list[int] = []
        for i in range(start, end):
            if len(ids) >= limit:
                return
            cp = codepoints[i]
            flags = self._flags(cp)
            if flags & self.DROP:
                continue
            if flags & (self.BOUNDARY | self.CJK):
                if len(word) > 0:
                    self._tokenize_word(word, ids)
                    word.clear()  # not `word = []`: see _TORCHSCRIPT_EMPTY_LIST_NOTE
                if flags & self.CJK:
                    self._tokenize_word([cp], ids)
            else:
                word.append(cp)
        if len(word) > 0 and len(ids) < limit:
            self._tokenize_word(word, ids)

    def _tokenize_word(self, word: list[int], ids: list[int]) -> None:
        """Normalise one whitespace-delimited word, split off punctuation, WordPiece each part."""
        if len(word) >= 5 and word[0] == 91 and word[-1] == 93:
            # "[...]": after cleaning (and NFC) a word may spell a special token, which the
            # reference neither lowercases nor splits (its never_split)
            composed = self._nfc(word)
            for special in self.never_split_codepoints:
                if composed == special:
                    self._wordpiece(composed, ids)
                    return
        if self.lowercase:
            normalized = self._lowercase_strip_accents(word)
        else:
            normalized = self._nfc(word)
        piece: list[int] = []
        for cp in normalized:
            flags = self._flags(cp)
            if flags & self.PUNCT:
                if len(piece) > 0:
                    self._wordpiece(piece, ids)
                    piece.clear()
                self._wordpiece([cp], ids)
            elif flags & self.BOUNDARY:
                if len(piece) > 0:
                    self._wordpiece(piece, ids)
                    piece.clear()
            else:
                piece.append(cp)
        if len(piece) > 0:
            self._wordpiece(piece, ids)

    def _wordpiece(self, piece: list[int], ids: list[int]) -> None:
        """Greedy longest-match-first WordPiece; one [UNK] for a piece that cannot be split."""
        n = len(piece)
        if n > self.max_input_chars_per_word:
            ids.append(self.unk_token_id)
            return
        text, offsets = self._utf8_with_offsets(piece)
        found: list[int] = []
        start = 0
        while start < n:
            end = min(n, start + self.max_token_chars)
            match = -1
            while end > start:
                candidate = text[offsets[start] : offsets[end]]
                if start > 0:
                    candidate = "##" + candidate
                token_id = self.vocab.get(candidate)
                if token_id is not None:
                    match = token_id
                    break
                end -= 1
            if match < 0:
                ids.append(self.unk_token_id)
                return
            found.append(match)
            start = end
        ids.extend(found)

    # ------------------------------------------------------------------ normalisation
    def _lowercase_strip_accents(self, word: list[int]) -> list[int]:
        """NFD(lower(word)) without nonspacing marks: the reference's lower + strip_accents
        (its NFC before lowercasing changes nothing here: NFD(lower(c)) == NFD(lower(NFD(c))))."""
        out: list[int] = []
        has_non_ascii = False
        for i in range(len(word)):
            cp = word[i]
            if cp < 128:
                out.append(cp + 32 if 65 <= cp <= 90 else cp)
                continue
            has_non_ascii = True
            if cp == self.CAPITAL_SIGMA:
                out.append(self.FINAL_SIGMA if self._is_final_sigma(word, i) else self.SMALL_SIGMA)
            elif self.S_BASE <= cp < self.S_BASE + self.S_COUNT:
                self._decompose_hangul(cp, out)
            else:
                mapped = self.lower_nfd.get(cp)
                if mapped is None:
                    out.append(cp)
                else:
                    out.extend(mapped)
        if not has_non_ascii:
            return out
        self._canonical_order(out)
        stripped: list[int] = []
        for cp in out:
            if cp < 128 or not (self._flags(cp) & self.NONSPACING_MARK):
                stripped.append(cp)
        return stripped

    def _is_final_sigma(self, word: list[int], i: int) -> bool:
        """Python's Final_Sigma context: a cased letter before (case-ignorables skipped),
        none after."""
        j = i - 1
        while j >= 0 and (self._flags(word[j]) & self.CASE_IGNORABLE):
            j -= 1
        if j < 0 or not (self._flags(word[j]) & self.CASED):
            return False
        j = i + 1
        while j < len(word) and (self._flags(word[j]) & self.CASE_IGNORABLE):
            j += 1
        return j == len(word) or not (self._flags(word[j]) & self.CASED)

    def _nfc(self, word: list[int]) -> list[int]:
        """Unicode NFC: canonical decomposition, canonical order, canonical composition."""
        decomposed: list[int] = []
        has_non_ascii = False
        for cp in word:
            if cp < 128:
                decomposed.append(cp)
                continue
            has_non_ascii = True
            if self.S_BASE <= cp < self.S_BASE + self.S_COUNT:
                self._decompose_hangul(cp, decomposed)
            else:
                mapped = self.nfd.get(cp)
                if mapped is None:
                    decomposed.append(cp)
                else:
                    decomposed.extend(mapped)
        if not has_non_ascii:
            return decomposed
        self._canonical_order(decomposed)
        out: list[int] = []
        starter = -1  # index in out of the last starter, which later characters may join
        last_class = 0  # combining class of out[-1] when it is not the starter
        for cp in decomposed:
            ccc = self._combining_class(cp)
            if starter >= 0 and (len(out) - 1 == starter or (last_class != 0 and last_class < ccc)):
                composite = self._compose_pair(out[starter], cp)
                if composite >= 0:
                    out[starter] = composite
                    continue
            if ccc == 0:
                starter = len(out)
            last_class = ccc
            out.append(cp)
        return out

    def _compose_pair(self, first: int, second: int) -> int:
        if self.L_BASE <= first < self.L_BASE + self.L_COUNT and self.V_BASE <= second < self.V_BASE + self.V_COUNT:
            return self.S_BASE + ((first - self.L_BASE) * self.V_COUNT + (second - self.V_BASE)) * self.T_COUNT
        if (
            self.S_BASE <= first < self.S_BASE + self.S_COUNT
            and (first - self.S_BASE) % self.T_COUNT == 0
            and self.T_BASE < second < self.T_BASE + self.T_COUNT
        ):
            return first + second - self.T_BASE
        composite = self.compose.get((first << self.PAIR_SHIFT) | second)
        return -1 if composite is None else composite

    def _decompose_hangul(self, cp: int, out: list[int]) -> None:
        index = cp - self.S_BASE
        out.append(self.L_BASE + index // self.N_COUNT)
        out.append(self.V_BASE + (index % self.N_COUNT) // self.T_COUNT)
        trailing = index % self.T_COUNT
        if trailing != 0:
            out.append(self.T_BASE + trailing)

    def _canonical_order(self, codepoints: list[int]) -> None:
        """Stable-sort each run of non-starters by combining class, in place."""
        for i in range(1, len(codepoints)):
            cp = codepoints[i]
            ccc = self._combining_class(cp)
            if ccc == 0:
                continue
            j = i
            while j > 0 and self._combining_class(codepoints[j - 1]) > ccc:
                codepoints[j] = codepoints[j - 1]
                j -= 1
            codepoints[j] = cp

    def _combining_class(self, cp: int) -> int:
        if cp < 0x300:  # no combining marks below U+0300
            return 0
        return self.combining_class.get(cp, 0)

    def _flags(self, cp: int) -> int:
        if cp < 128:
            return self.ascii_flags[cp]
        if cp < 0x10000:
            return ord(self.bmp_flags[cp])
        # last range starting at or before cp
        lo = 0
        hi = len(self.range_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.range_starts[mid] <= cp:
                lo = mid
            else:
                hi = mid - 1
        return self.range_flags[lo]

    # ------------------------------------------------------------------ str <-> code points
    def _codepoints(self, text: str) -> list[int]:
        """Unicode code points of ``text``. TorchScript strings are UTF-8 bytes, so the
        scripted module decodes them; invalid bytes become U+FFFD (dropped by cleaning)."""
        if not torch.jit.is_scripting():
            return [ord(c) for c in text]
        out: list[int] = []
        value = 0
        pending = 0  # continuation bytes still expected
        for char in text:
            byte = ord(char)
            if pending > 0:
                if (byte & 0xC0) == 0x80:
                    value = (value << 6) | (byte & 0x3F)
                    pending -= 1
                    if pending == 0:
                        out.append(value)
                    continue
                out.append(0xFFFD)  # truncated sequence; this byte starts anew
                pending = 0
            if byte < 0x80:
                out.append(byte)
            elif byte >= 0xF0:
                value = byte & 0x07
                pending = 3
            elif byte >= 0xE0:
                value = byte & 0x0F
                pending = 2
            elif byte >= 0xC0:
                value = byte & 0x1F
                pending = 1
            else:
                out.append(0xFFFD)  # stray continuation byte
        if pending > 0:
            out.append(0xFFFD)
        return out

    def _utf8_with_offsets(self, codepoints: list[int]) -> tuple[str, list[int]]:
        """``codepoints`` as a string plus where each character starts in it, for slicing:
        character offsets in Python, byte offsets in TorchScript (UTF-8 encoded here)."""
        parts: list[str] = []
        offsets: list[int] = [0]
        position = 0
        scripting = torch.jit.is_scripting()
        for cp in codepoints:
            if cp < 0x80 or not scripting:
                parts.append(chr(cp))
                position += 1
            elif cp < 0x800:
                parts.append(chr(0xC0 | (cp >> 6)))
                parts.append(chr(0x80 | (cp & 0x3F)))
                position += 2
            elif cp < 0x10000:
                parts.append(chr(0xE0 | (cp >> 12)))
                parts.append(chr(0x80 | ((cp >> 6) & 0x3F)))
                parts.append(chr(0x80 | (cp & 0x3F)))
                position += 3
            else:
                parts.append(chr(0xF0 | (cp >> 18)))
                parts.append(chr(0x80 | ((cp >> 12) & 0x3F)))
                parts.append(chr(0x80 | ((cp >> 6) & 0x3F)))
                parts.append(chr(0x80 | (cp & 0x3F)))
                position += 4
            offsets.append(position)
        return "".join(parts), offsets


def create_tokenizer(vocab_file: str | os.PathLike, max_length: int = 40, lowercase: bool = True) -> WordPieceTokenizer:
    """A BERT WordPiece tokenizer (a ``torch.jit.script``-able module) for ``vocab_file``
    (a ``vocab.txt``, or a folder holding one). ``max_length=40`` is ViLT's text length;
    ``lowercase=True`` matches uncased BERT vocabularies (``bert-base-uncased``, ViLT)."""
    return WordPieceTokenizer.from_vocab_file(vocab_file, max_length=max_length, lowercase=lowercase)


def tokenizer_json(tokenizer: WordPieceTokenizer) -> tuple[dict, dict]:
    """``tokenizer`` as the Hugging Face ``tokenizer.json`` and ``tokenizer_config.json``
    (BERT normaliser and pre-tokeniser, WordPiece model, ``[CLS] ... [SEP]`` template), the
    files that Hugging Face's JavaScript tokenizers (``@huggingface/tokenizers``, those of
    ``@huggingface/transformers``) load in a web page, and its Rust ``tokenizers`` in Python.

    Those tokenizers do not truncate by themselves: an app encodes without special tokens,
    keeps the first ``model_max_length - 2`` ids and adds ``[CLS]`` and ``[SEP]``, as
    :meth:`WordPieceTokenizer.encode` does (``examples/web/vilt.js``)."""
    present = [token for token in SPECIAL_TOKENS if token in tokenizer.vocab]
    added = [
        {
            "id": tokenizer.vocab[token],
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token in present
    ]

    def special(token: str) -> dict:
        return {"SpecialToken": {"id": token, "type_id": 0}}

    template = {
        "type": "TemplateProcessing",
        "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
        "pair": [
            special("[CLS]"),
            {"Sequence": {"id": "A", "type_id": 0}},
            special("[SEP]"),
            {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
        ],
        "special_tokens": {
            token: {"id": token, "ids": [tokenizer.vocab[token]], "tokens": [token]} for token in ("[CLS]", "[SEP]")
        },
    }
    document = {
        "version": "1.0",
        "truncation": {
            "direction": "Right",
            "max_length": tokenizer.max_length,
            "strategy": "LongestFirst",
            "stride": 0,
        },
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": None,  # follows lowercase, as in BERT
            "lowercase": tokenizer.lowercase,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": template,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": tokenizer.max_input_chars_per_word,
            "vocab": dict(tokenizer.vocab),
        },
    }
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": tokenizer.lowercase,
        "model_max_length": tokenizer.max_length,
        "clean_up_tokenization_spaces": True,
        **{name: token for name, token in _CONFIG_TOKEN_NAMES.items() if token in tokenizer.vocab},
    }
    return document, config


_CONFIG_TOKEN_NAMES = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
