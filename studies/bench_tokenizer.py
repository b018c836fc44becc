"""Tokenizer latency: mobilevt WordPieceTokenizer (eager, TorchScript) vs transformers'
slow BertTokenizerLegacy and fast BertTokenizer(Fast), same run, interleaved, medians.

    python studies/bench_tokenizer.py VOCAB.txt [--threads 1] [--runs 2000]

A missing VOCAB.txt is first built like tests/data/test_tokenizer.py's 30522-entry
bert-base-uncased-layout vocabulary (run from the repository root).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch.jit.mobile import _load_for_lite_interpreter
from transformers import BertTokenizerFast
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from mobilevt import create_tokenizer

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("vocab")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--runs", type=int, default=2000)
args = parser.parse_args()
torch.set_num_threads(args.threads)
if not os.path.exists(args.vocab):
    sys.path.insert(0, "tests")
    import test_tokenizer as t

    head = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    head += [f"[unused{i}]" for i in range(99, 994)]
    trained = [x for x in t._train_wordpiece(t._training_texts(), 30522 - len(head) + 5, True) if x not in t.SPECIAL]
    tokens = head + trained
    tokens += [f"[unused{i}]" for i in range(994, 994 + 30522 - len(tokens))]
    with open(args.vocab, "w", encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in tokens))

QUESTIONS = {
    "10-word question": "What color is the small dog sitting on the red sofa?",
    "accents+CJK+emoji": "Où est le café? Crème brûlée, 日本語 😀 ΟΔΟΣ naïve Ångström",
    "60 words (truncated)": " ".join(["how many cats are there on the sofa"] * 8),
}
ours = create_tokenizer(args.vocab)
scripted = torch.jit.script(ours)
_tmp = tempfile.mkdtemp()
scripted._save_for_lite_interpreter(os.path.join(_tmp, "tok.ptl"))
lite = _load_for_lite_interpreter(os.path.join(_tmp, "tok.ptl"))
slow = BertTokenizerLegacy(args.vocab)
fast = BertTokenizerFast(args.vocab)


def candidates(q):
    return {
        "mobilevt scripted encode": lambda: scripted.encode(q),
        "mobilevt scripted forward([q]) -> tensors": lambda: scripted([q]),
        "mobilevt lite interpreter forward([q])": lambda: lite([q]),
        "mobilevt eager encode": lambda: ours.encode(q),
        "transformers slow BertTokenizerLegacy": lambda: slow(q, truncation=True, max_length=40),
        "transformers fast BertTokenizer(Fast)": lambda: fast(q, truncation=True, max_length=40),
        "transformers fast, padded pt tensors": lambda: fast(
            [q], padding="max_length", truncation=True, max_length=40, return_tensors="pt"
        ),
    }


print(f"torch {torch.__version__}, threads {args.threads}, runs {args.runs}, vocab {len(ours.id_to_token)}")
for label, q in QUESTIONS.items():
    assert scripted.encode(q) == slow(q, truncation=True, max_length=40)["input_ids"]
    fns = candidates(q)
    for fn in fns.values():
        for _ in range(50):
            fn()
    times = {name: [] for name in fns}
    for _r in range(args.runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ref = statistics.median(times["transformers fast BertTokenizer(Fast)"])
    print(f"\n{label}: {q[:60]!r} ({len(scripted.encode(q))} ids)")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:45s} {m * 1e3:8.3f} ms   x{m / ref:6.2f} of fast")
