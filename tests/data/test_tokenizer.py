"""The TorchScript BERT WordPiece tokenizer against transformers' BERT tokenizers.

References: the slow Python tokenizer (``BertTokenizerLegacy`` in transformers 5, named
``BertTokenizer`` in 4.x) is the reference BERT behaviour that mobilevt matches id for id;
the fast one (``BertTokenizerFast``, the Rust ``tokenizers`` backend; ``BertTokenizer`` in
transformers 5) is matched too except on the documented inputs where the two references
disagree (see ``test_documented_disagreements_follow_the_slow_reference``).

No download: the vocabularies are trained here with ``tokenizers``' WordPiece trainer on
questions written below plus the Python standard library's source, the full-size one laid
out like ``bert-base-uncased``'s (30522 entries, [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102,
[MASK]=103, [unused*] fillers).
"""

from __future__ import annotations

import glob
import os
import sysconfig
import unicodedata
import warnings

import pytest
import torch

from mobilevt.data.tokenizer import WordPieceTokenizer, create_tokenizer

_NEEDS_TEST_EXTRA = 'the tokenizer parity tests need it: pip install "mobilevt[test]"'
transformers = pytest.importorskip("transformers", reason=_NEEDS_TEST_EXTRA)
tokenizers = pytest.importorskip("tokenizers", reason=_NEEDS_TEST_EXTRA)
hypothesis = pytest.importorskip("hypothesis", reason=_NEEDS_TEST_EXTRA)
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

try:  # transformers >= 5: the slow Python tokenizer was renamed
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as SlowBertTokenizer
except ImportError:  # transformers 4.x
    from transformers import BertTokenizer as SlowBertTokenizer
from transformers import BertTokenizerFast as FastBertTokenizer  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is deprecated:FutureWarning", "ignore:Lite Interpreter is deprecated:DeprecationWarning"
)

MAX_LENGTH = 40  # ViLT's text length
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Hypothesis: no example database in the repository, no deadline (the machine is shared).
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

QUESTIONS = [
    "How many cats are there?",
    "What color is the small dog sitting on the red sofa?",
    "Is the man wearing a hat?",
    "What is the woman holding in her left hand?",
    "Are there any people in the picture?",
    "What time does the clock show?",
    "Which sport is being played?",
    "What is written on the sign above the door?",
    "How many slices of pizza are left on the plate?",
    "Is this a vegetarian meal?",
    "What brand is the laptop?",
    "Where is the remote control?",
    "Why is the street wet?",
    "What kind of bird is perched on the fence?",
    "Is it raining or snowing outside?",
    "what's the name of the boat?",
    "Isn't the giraffe taller than the tree?",
    "How old is the boy: 5, 10 or 15?",
    "Does the bus say \"Downtown\" or 'Airport'?",
    "Is the price $4.99 or €5,50?",
    "What's 2+2=?",
    "Is the light (on the left) green/red?",
    "e-mail me @ home #1 50% off ~ ^ | \\ ` < > { } [ ]",
    "Où est le café? Crème brûlée à la française.",
    "¿Dónde está el niño? ¡En la montaña!",
    "Über die Brücke, naïve résumé, Ångström, Ærø, Øresund, São Paulo, Dvořák, Łódź",
    "İstanbul'da ne var? IJssel ﬁsh ﬂower straße",
    "Москва или Київ? Ελλάδα και Αθήνα.",
    "Ποια οδός; Πόσες γάτες; Η σοφία της Αθήνας.",
    "这是什么动物？ 日本語のテキスト、東京。한국어 문장입니다.",
    "emoji 😀 🐱 👍🏽 👨‍👩‍👧 ❤️ ok?",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "   leading and trailing   ",
    "",
    "   ",
    "\x00\x01\x7f\u200b\ufeff\ufffd",
    "zero\u200bwidth joiner\u200dand soft\u00adhyphen",
    "nbsp\u00a0ideographic\u3000space\u2003em\u2028line\u2029para\x85nel\x0bvt\x0cff\x1cfs",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "x" * 101 + " after a word longer than 100 characters",
    "y" * 100 + " a word of exactly 100 characters",
    " ".join(["word"] * 60),
    "What is [MASK] on the table? [SEP] second [CLS] [UNK] [PAD]",
    "a[SEP]b [[SEP]] [SE[SEP] [mask] [Mask]",
    "1,234.56 3/4 1e-3 0x1F 007 ½ ² ³ ① Ⅻ",
    "ﬀ ﬃ ＡＢＣ！ ｆｕｌｌｗｉｄｔｈ",
    "combining: e\u0301 a\u0308 n\u0303 o\u0328\u0301 \u0345 \u0300\u0301",
    "Hangul jamo \u1100\u1161\u11a8 and syllables 각 한",
]


def _training_texts() -> list[str]:
    """Offline corpus: the questions above (many times, so their words make it into the
    vocabulary) and the standard library's source."""
    stdlib = sysconfig.get_paths()["stdlib"]
    texts = ["\n".join(QUESTIONS)] * 200
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if any(part in path for part in ("site-packages", f"{os.sep}test", "idlelib")):
            continue
        with open(path, encoding="utf-8", errors="ignore") as handle:
            texts.append(handle.read())
    return texts


def _train_wordpiece(texts: list[str], vocab_size: int, lowercase: bool) -> list[str]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    trainer_tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False)
    trainer_tokenizer.train_from_iterator(texts, trainer)
    by_id = sorted(trainer_tokenizer.get_vocab().items(), key=lambda item: item[1])
    return [token for token, _ in by_id]


def _write_vocab(path, tokens: list[str]) -> str:
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def bert_vocab_file(tmp_path_factory) -> str:
    """30522 entries in bert-base-uncased's layout (special tokens at ids 0 and 100-103)."""
    head = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    head += [f"[unused{i}]" for i in range(99, 994)]
    trained = _train_wordpiece(_training_texts(), 30522 - len(head) + len(SPECIAL), True)
    trained = [token for token in trained if token not in SPECIAL]
    tokens = head + trained
    tokens += [f"[unused{i}]" for i in range(994, 994 + 30522 - len(tokens))]  # if the corpus ran short
    assert len(tokens) == 30522 and tokens.index("[CLS]") == 101
    return _write_vocab(tmp_path_factory.mktemp("bert-uncased") / "vocab.txt", tokens)


@pytest.fixture(scope="module")
def cased_vocab_file(tmp_path_factory) -> str:
    tokens = _train_wordpiece(["\n".join(QUESTIONS)] * 20, 3000, False)
    return _write_vocab(tmp_path_factory.mktemp("bert-cased") / "vocab.txt", tokens)


@pytest.fixture(scope="module")
def uncased(bert_vocab_file):
    """(eager module, scripted module, slow reference, fast reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        eager = create_tokenizer(bert_vocab_file)
        scripted = torch.jit.script(eager)
    return eager, scripted, SlowBertTokenizer(bert_vocab_file), FastBertTokenizer(bert_vocab_file)


@pytest.fixture(scope="module")
def cased(cased_vocab_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = create_tokenizer(cased_vocab_file, lowercase=False)
        scripted = torch.jit.script(eager)
    return (
        eager,
        scripted,
        SlowBertTokenizer(cased_vocab_file, do_lower_case=False),
        FastBertTokenizer(cased_vocab_file, do_lower_case=False),
    )


def _reference_ids(reference, text: str, max_length: int = MAX_LENGTH) -> list[int]:
    return reference(text, truncation=True, max_length=max_length)["input_ids"]


def _assert_same_ids(ours, reference, text: str, name: str) -> None:
    expected = _reference_ids(reference, text)
    got = ours.encode(text)
    assert got == expected, (
        f"{name} differs on {text!r}:\n  ours      {got}\n  reference {expected}\n"
        f"  reference tokens {reference.convert_ids_to_tokens(expected)}"
    )


# ---------------------------------------------------------------- hand-checked behaviour
@pytest.fixture
def toy_tokenizer(tmp_path) -> WordPieceTokenizer:
    # BERT's classic example vocabulary (plus [PAD], and "a"/"##a" for the length limit)
    tokens = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "want",
        "##want",
        "##ed",
        "wa",
        "un",
        "runn",
        "##ing",
        ",",
        "a",
        "##a",
    ]
    return create_tokenizer(_write_vocab(tmp_path / "vocab.txt", tokens), max_length=200)


def test_wordpiece_greedy_longest_match_by_hand(toy_tokenizer):
    # [CLS] un ##want ##ed , runn ##ing [SEP]: lowercased, accent stripped, comma split off
    assert toy_tokenizer.encode("UNwant\u00e9d,running") == [2, 8, 5, 6, 11, 9, 10, 3]
    # "unwantedx": no "##x" in the vocabulary, so the whole word is one [UNK]
    assert toy_tokenizer.encode("unwantedx running") == [2, 1, 9, 10, 3]
    assert toy_tokenizer.encode("") == [2, 3]


def test_words_longer_than_100_characters_are_unknown(toy_tokenizer):
    assert toy_tokenizer.encode("a" * 100) == [2, 12] + [13] * 99 + [3]
    assert toy_tokenizer.encode("a" * 101) == [2, 1, 3]


def test_truncation_keeps_cls_and_sep_and_padding_by_hand(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "want", "un"]
    tokenizer = create_tokenizer(_write_vocab(tmp_path / "vocab.txt", tokens), max_length=5)
    assert tokenizer.encode("un want un want un want") == [2, 5, 4, 5, 3]
    input_ids, attention_mask = tokenizer(["want", "un want un want", ""])
    assert input_ids.dtype == torch.long and attention_mask.dtype == torch.long
    assert input_ids.tolist() == [[2, 4, 3, 0, 0], [2, 5, 4, 5, 3], [2, 3, 0, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    shortest_ids, shortest_mask = tokenizer.encode_batch(["want", "un want"], False)
    assert shortest_ids.tolist() == [[2, 4, 3, 0], [2, 5, 4, 3]]
    assert shortest_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_unicode_normalisation_by_hand(tmp_path):
    # Rare Unicode rules that need a vocabulary holding the pieces they change; expected
    # ids worked out from the Unicode rules, and the slow reference must agree.
    tokens = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "x",
        "##\U0001d165",
        "##\U0001d16d",
        "\u0229",
        "##\u0301",
        "\u00e9",
        "##\u0327",
        "\u00e1",
        "##\u0316",
        "\u03b1\u03b8\u03b7\u03bd\u03b1",
        "##\u03c2",
        "##\u03c3",
        "##\u03b1",
    ]
    vocab_file = _write_vocab(tmp_path / "vocab.txt", tokens)
    uncased_tokenizer = create_tokenizer(vocab_file)
    cased_tokenizer = create_tokenizer(vocab_file, lowercase=False)
    slow_uncased = SlowBertTokenizer(vocab_file)
    slow_cased = SlowBertTokenizer(vocab_file, do_lower_case=False)
    cases = [
        # canonical order survives accent stripping for spacing marks: U+1D16D (class 226)
        # goes after U+1D165 (class 216)
        (uncased_tokenizer, slow_uncased, "x\U0001d16d\U0001d165", [2, 4, 5, 6, 3]),
        # Final_Sigma skips case-ignorable marks: "ΑΘΗΝΑ\u0301Σ" ends in a final sigma
        (uncased_tokenizer, slow_uncased, "\u0391\u0398\u0397\u039d\u0391\u0301\u03a3", [2, 13, 14, 3]),
        (uncased_tokenizer, slow_uncased, "\u0391\u0398\u0397\u039d\u0391\u03a3\u0301\u0391", [2, 13, 15, 16, 3]),
        # NFC: reorder (cedilla, class 202, before acute, 230), then compose e + cedilla
        (cased_tokenizer, slow_cased, "e\u0301\u0327", [2, 7, 8, 3]),
        # NFC composes a + acute across the non-blocking U+0316 (class 220)
        (cased_tokenizer, slow_cased, "a\u0316\u0301", [2, 11, 12, 3]),
    ]
    for ours, reference, text, expected in cases:
        assert ours.encode(text) == expected, ascii(text)
        assert _reference_ids(reference, text) == expected, ascii(text)


def test_decode_by_hand(toy_tokenizer):
    assert toy_tokenizer.decode([2, 8, 5, 6, 11, 9, 10, 3]) == "unwanted, running"
    assert toy_tokenizer.decode([2, 8, 5, 6, 11, 9, 10, 3], False) == "[CLS] unwanted, running [SEP]"


# ---------------------------------------------------------------- parity with transformers
@pytest.mark.parametrize("text", QUESTIONS, ids=range(len(QUESTIONS)))
def test_questions_match_slow_and_fast_references(uncased, text):
    eager, scripted, slow, fast = uncased
    _assert_same_ids(eager, slow, text, "eager vs slow BertTokenizer")
    _assert_same_ids(scripted, slow, text, "scripted vs slow BertTokenizer")
    _assert_same_ids(scripted, fast, text, "scripted vs BertTokenizerFast")


def test_batch_matches_reference_padding(uncased):
    eager, scripted, slow, fast = uncased
    texts = QUESTIONS[:12] + QUESTIONS[-10:]
    for reference in (slow, fast):
        expected = reference(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        longest = reference(texts, padding="longest", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        for ours in (eager, scripted):
            input_ids, attention_mask = ours(texts)
            assert input_ids.shape == (len(texts), MAX_LENGTH)
            assert torch.equal(input_ids, expected["input_ids"])
            assert torch.equal(attention_mask, expected["attention_mask"])
            input_ids, attention_mask = ours.encode_batch(texts, False)
            assert torch.equal(input_ids, longest["input_ids"])
            assert torch.equal(attention_mask, longest["attention_mask"])


@pytest.mark.parametrize("max_length", [2, 3, 8, 64])
def test_other_max_lengths_match_reference(bert_vocab_file, uncased, max_length):
    slow = uncased[2]
    tokenizer = create_tokenizer(bert_vocab_file, max_length=max_length)
    for text in QUESTIONS:
        assert tokenizer.encode(text) == _reference_ids(slow, text, max_length), text


def test_decode_matches_reference(uncased):
    eager, scripted, slow, _ = uncased
    for text in QUESTIONS:
        ids = slow(text)["input_ids"]
        for skip in (True, False):
            expected = slow.decode(ids, skip_special_tokens=skip)
            assert eager.decode(ids, skip) == expected
            assert scripted.decode(ids, skip) == expected


# Inputs on which the two transformers tokenizers disagree; mobilevt follows the slow one.
DISAGREEMENTS = {
    # Python's str.lower() gives the final form at the end of a word; tokenizers
    # lowercases character by character.
    "final sigma": ["ΟΔΟΣ ΣΟΦΙΑΣ.", "ΑΣ.Α ΑΣ\u0301 ΣΑ", "cats\u03a3"],
    # Category Cn / Co: the slow tokenizer drops them as control characters ("C*").
    "unassigned / private use": ["what\U000e0fff is \ue000 this\U00030000?"],
    # Characters newer than the fast tokenizer's Unicode tables (U+07FD Mn, Unicode 11;
    # U+061D Po, Unicode 14): stripped / split off by the slow one only.
    "newer Unicode": ["a\u07fdb", "a\u061db"],
    # A word spelling a special token once cleaned: the slow tokenizer keeps it whole.
    "special token after cleaning": ["[SE\x00P] done", "x [UN\u212a] y"],
}


@pytest.mark.parametrize("kind", sorted(DISAGREEMENTS))
def test_documented_disagreements_follow_the_slow_reference(uncased, kind):
    eager, scripted, slow, fast = uncased
    for text in DISAGREEMENTS[kind]:
        _assert_same_ids(eager, slow, text, "eager vs slow BertTokenizer")
        _assert_same_ids(scripted, slow, text, "scripted vs slow BertTokenizer")
        assert _reference_ids(fast, text) != _reference_ids(slow, text), (
            f"the references now agree on {text!r} ({kind}): update DISAGREEMENTS and the docs"
        )


# singleton decompositions (Angstrom sign, Greek question mark, varia), decomposed text
CASED_EXTRA = ["\u212b \u037e \u1fef x", "e\u0301\u0327 \u1100\u1161\u11a8 o\u0328\u0304"]


@pytest.mark.parametrize("text", QUESTIONS + CASED_EXTRA)
def test_cased_vocabulary_matches_slow_reference(cased, text):
    # lowercase=False: no lowercasing or accent stripping, NFC as the slow reference
    # (the fast one skips NFC, so it differs on decomposed or singleton characters)
    eager, scripted, slow, _ = cased
    _assert_same_ids(eager, slow, text, "cased eager vs slow BertTokenizer")
    _assert_same_ids(scripted, slow, text, "cased scripted vs slow BertTokenizer")


# ---------------------------------------------------------------- property tests
QUESTION_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    " \t\n\r\x0b\x0c\x85\xa0\u2000\u2028\u3000"  # whitespace, some of it dropped as control
    "\x00\x01\x1f\x7f\u200b\u200d\u00ad\ufeff\ufffd"  # control / format characters
    "àéñüÅçøßæœıİẞǅ"  # accents, special casing
    "\u0300\u0301\u0308\u0327\u0345\u0323"  # combining marks
    "αβγδάΑΒΓΔσςΩ"  # Greek without capital sigma (see DISAGREEMENTS)
    "абвгдАБВГДёЁїЇ"
    "日本語中文的こんにちはカタカナ한국어각"
    "…—–“”«»¿¡·•′″€£¥©®™°±×÷"
    "ＡＢ！？０１ﬁﬂ①½²"
    "😀🐱👍🏽\U0001f3fd❤️\u2764"
)
FRAGMENTS = list(SPECIAL) + ["[mask]", "[ SEP ]", "[", "]", "##", "how many", "what", "Σ", "  ", "\t\n"]


def _question_like():
    pieces = st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=QUESTION_ALPHABET, max_size=10))
    return st.lists(pieces, max_size=12).map("".join)


def _cleaning_spells_special_token(text: str) -> bool:
    cleaned = "".join(c for c in text if c in "\t\n\r" or not unicodedata.category(c).startswith("C"))
    return any(cleaned.count(token) != text.count(token) for token in SPECIAL)


@PROPERTY_SETTINGS
@given(text=st.text(max_size=60))
def test_any_unicode_text_matches_slow_reference(uncased, text):
    # all code points but surrogates: unassigned, private use, every script and category
    eager, scripted, slow, _ = uncased
    _assert_same_ids(eager, slow, text, "eager vs slow BertTokenizer")
    _assert_same_ids(scripted, slow, text, "scripted vs slow BertTokenizer")


@PROPERTY_SETTINGS
@given(text=_question_like())
def test_question_like_text_matches_both_references(uncased, text):
    eager, scripted, slow, fast = uncased
    _assert_same_ids(eager, slow, text, "eager vs slow BertTokenizer")
    _assert_same_ids(scripted, slow, text, "scripted vs slow BertTokenizer")
    assume("\u03a3" not in text and not _cleaning_spells_special_token(text))  # DISAGREEMENTS
    _assert_same_ids(scripted, fast, text, "scripted vs BertTokenizerFast")


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(_question_like(), st.text(max_size=40)))
def test_cased_text_matches_slow_reference(cased, text):
    eager, scripted, slow, _ = cased
    _assert_same_ids(eager, slow, text, "cased eager vs slow BertTokenizer")
    _assert_same_ids(scripted, slow, text, "cased scripted vs slow BertTokenizer")


# ---------------------------------------------------------------- TorchScript files
def test_saved_torchscript_reloads_with_the_same_ids(uncased, tmp_path):
    eager, scripted, slow, _ = uncased
    path = eager.save_torchscript(tmp_path / "tokenizer.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.pt"]  # no temporary left over
    loaded = torch.jit.load(str(path))
    for text in QUESTIONS:
        assert loaded.encode(text) == _reference_ids(slow, text), text
    input_ids, attention_mask = loaded(QUESTIONS)
    expected = slow(QUESTIONS, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    assert torch.equal(input_ids, expected["input_ids"]) and torch.equal(attention_mask, expected["attention_mask"])
    expected_text = slow.decode(slow(QUESTIONS[0])["input_ids"], skip_special_tokens=True)
    assert loaded.decode(loaded.encode(QUESTIONS[0])) == expected_text


def test_lite_interpreter_file_gives_the_same_ids(uncased, tmp_path):
    # the file a phone app loads with the PyTorch Mobile lite interpreter
    from torch.jit.mobile import _load_for_lite_interpreter

    scripted, slow = uncased[1], uncased[2]
    scripted._save_for_lite_interpreter(str(tmp_path / "tokenizer.ptl"))
    lite = _load_for_lite_interpreter(str(tmp_path / "tokenizer.ptl"))
    texts = QUESTIONS[:8] + QUESTIONS[23:32]
    input_ids, attention_mask = lite(texts)
    expected = slow(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    assert torch.equal(input_ids, expected["input_ids"]) and torch.equal(attention_mask, expected["attention_mask"])


def test_scripted_calls_do_not_share_state(uncased):
    # TorchScript's optimiser once made a per-word buffer a shared constant from the
    # second call on (see _TORCHSCRIPT_EMPTY_LIST_NOTE): words leaked into later calls
    scripted, slow = uncased[1], uncased[2]
    expected = _reference_ids(slow, "how many cats")
    for _ in range(5):
        assert scripted.encode("how many cats") == expected


# ---------------------------------------------------------------- errors
def test_missing_vocab_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary file not found: .*nope.txt"):
        create_tokenizer(tmp_path / "nope.txt")


def test_vocab_without_required_tokens_is_a_clear_error(tmp_path):
    path = _write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "hello", "##s"])
    with pytest.raises(ValueError, match=r"no \[CLS\], \[SEP\] token"):
        create_tokenizer(path)


def test_non_utf8_vocab_and_bad_max_length_are_clear_errors(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        create_tokenizer(path)
    good = _write_vocab(tmp_path / "good.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        create_tokenizer(good, max_length=1)


def test_decode_rejects_ids_outside_the_vocabulary(toy_tokenizer):
    with pytest.raises(ValueError, match=r"decode got id 99, outside the vocabulary \[0, 14\)"):
        toy_tokenizer.decode([2, 99])


def test_public_api():
    import mobilevt

    assert mobilevt.create_tokenizer is create_tokenizer
