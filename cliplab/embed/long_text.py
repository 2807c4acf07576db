"""Prompts longer than the text tower's context: counted, reported, and embedded whole on request.

A CLIP text tower reads at most ``context_length`` tokens (77 for OpenAI's and most open_clip models), counting the
start and end tokens the tokenizer adds (SOT and EOT for CLIP's BPE tokenizer). open_clip's tokenizer and the
Hugging Face one both cut a longer prompt silently. Here a prompt's *length* is its token count as the tokenizer
would lay it out without a limit (content tokens + the special tokens); it is *cut* when that length exceeds the
context, by ``length - context_length`` tokens.

Two ways of embedding a prompt (the shared parameter ``long_text``):

* ``truncate`` (the default, what open_clip and transformers do): the first ``context_length`` tokens, the last
  replaced by EOT. Every prompt cut is counted and the run ends with one warning (how many of the run's prompts were
  cut, the longest in tokens, the context, how many tokens were cut on average).
* ``windows``: a prompt that fits is embedded exactly as with ``truncate`` (the same tokens, so the same vector and
  the same cache entry). A longer one has its content tokens (the tokens between SOT and EOT) split in order into
  windows of ``w = context_length - n_special`` tokens (the last one shorter); each window is laid out as its own
  prompt (``SOT + window + EOT``, padded), embedded, and unit-normalised; the prompt's embedding is the unweighted
  mean of those unit vectors, normalised again to unit length. Nothing overlaps and nothing is dropped. Its cache
  key differs from the truncated embedding's (``tw:`` instead of ``t:``), so one is never read for the other.
"""
from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from cliplab.io import hash_bytes, hash_json, write_json_atomic
from cliplab.progress import note, warn

if TYPE_CHECKING:
    from cliplab.models.base import LoadedModel

MODES = ("truncate", "windows")


@dataclass(frozen=True)
class Layout:
    """How one model's tokenizer lays out a prompt: ``content`` (texts -> content token ids, no special tokens),
    ``n_special`` (the tokens it adds around them), ``context_length``, and ``pack`` (windows of content ids -> the
    tokens the text tower takes; None when windows cannot be laid out for this tokenizer)."""
    context_length: int
    n_special: int
    content: Callable[[list[str]], list[list[int]]] | None  # None: a layout known from the memo (no tokenizer)
    pack: Callable[[list[list[int]]], Any] | None = None
    packs: bool | None = None  # whether windows can be laid out, for a layout known from the memo

    @property
    def windowed(self) -> bool:
        """Whether windows can be laid out for this tokenizer."""
        return self.pack is not None if self.packs is None else self.packs

    @property
    def window(self) -> int:
        """Content tokens per window."""
        return self.context_length - self.n_special

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in tokens, special tokens included, as laid out without a limit."""
        return [len(c) + self.n_special for c in self.content(list(texts))]

    def windows(self, ids: list[int]) -> list[list[int]]:
        """Content ids split in order into windows of :attr:`window` tokens (the last may be shorter)."""
        w = self.window
        return [ids[i:i + w] for i in range(0, len(ids), w)] or [[]]


def _open_clip_layout(tok) -> Layout:
    import torch

    ctx = int(tok.context_length)

    def pack(windows: list[list[int]]):
        out = torch.zeros(len(windows), ctx, dtype=torch.long)
        for i, w in enumerate(windows):
            row = [tok.sot_token_id, *w, tok.eot_token_id]
            out[i, :len(row)] = torch.tensor(row)
        return out

    return Layout(ctx, 2, lambda texts: [tok.encode(t) for t in texts], pack)


def _hf_layout(hf, ctx: int, packs: bool, clean: Callable[[str], str] = lambda t: t) -> Layout:
    """A Hugging Face tokenizer ``hf`` (cliplab's ``hf:`` models; open_clip's HF-tokenizer models count only)."""
    import torch

    prefix, suffix = _special_tokens(hf)
    pad = hf.pad_token_id if hf.pad_token_id is not None else 0

    def content(texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return list(hf([clean(t) for t in texts], add_special_tokens=False)["input_ids"])

    def pack(windows: list[list[int]]):
        ids = torch.full((len(windows), ctx), pad, dtype=torch.long)
        mask = torch.zeros((len(windows), ctx), dtype=torch.long)
        for i, w in enumerate(windows):
            row = [*prefix, *w, *suffix]
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    return Layout(ctx, len(prefix) + len(suffix), content, pack if packs else None)


def _special_tokens(hf) -> tuple[list[int], list[int]]:
    """The tokens a Hugging Face tokenizer adds before and after a text's own (CLIP: [BOS], [EOS]), read off a probe
    text tokenized with and without them (``build_inputs_with_special_tokens`` is gone from transformers 5)."""
    probe = "a photo"
    bare = list(hf(probe, add_special_tokens=False)["input_ids"])
    full = list(hf(probe)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i], full[i + len(bare):]
    raise ValueError(f"cannot find the special tokens of {type(hf).__name__}")


def layout(model: "LoadedModel") -> Layout | None:
    """The layout of ``model``'s tokenizer; None for a tokenizer whose prompt lengths cannot be read."""
    tok = model.tokenizer
    if hasattr(tok, "sot_token_id") and hasattr(tok, "encode") and getattr(tok, "context_length", None):
        if getattr(tok, "reduction_fn", None) is not None:  # a training-time reduction: not CLIP's plain layout
            return None
        return _open_clip_layout(tok)
    try:
        if hasattr(tok, "tok") and hasattr(tok, "max_length"):  # cliplab's hf: tokenizer (models/hf.py)
            return _hf_layout(tok.tok, int(tok.max_length), packs=True)
        inner = getattr(tok, "tokenizer", None)  # open_clip's HFTokenizer (SigLIP, ...): lengths only
        if inner is not None and callable(inner) and getattr(tok, "context_length", None):
            return _hf_layout(inner, int(tok.context_length), packs=False,
                              clean=getattr(tok, "clean_fn", lambda t: t))
    except (ValueError, TypeError, KeyError, AttributeError):  # a tokenizer laid out otherwise: lengths unknown
        return None
    return None


LENGTHS_DIR = "text-lengths"


def measure(model: "LoadedModel", texts: list[str], cache_dir: Path | None) -> tuple[Layout | None, list[int]]:
    """(the layout of ``model``'s tokenizer, each of ``texts``' length in tokens; no lengths when the layout is
    None). A model known from its memo (:class:`cliplab.models.memo.LazyModel`, not loaded) takes both from the memo
    when it knows every text, so nothing is tokenized and no model is loaded; lengths measured by a tokenizer are
    memoised in ``cache_dir`` (keyed by the model's weights, which name its tokenizer, and the package versions)."""
    path = _lengths_path(model, cache_dir)
    known = _read_lengths(path) if path is not None else {}
    hashes = [hash_bytes(t.encode("utf-8")) for t in texts]
    if getattr(model, "loaded", True) is False:
        facts = model.text_layout
        if facts is None:
            return None, []
        if all(h in known for h in hashes):
            lay = Layout(int(facts["context_length"]), int(facts["n_special"]), None, packs=bool(facts["windows"]))
            return lay, [known[h] for h in hashes]
    lay = layout(model)
    if lay is None:
        return None, []
    lengths = lay.lengths(texts)
    fresh = {h: n for h, n in zip(hashes, lengths) if known.get(h) != n}
    if fresh and path is not None:
        try:
            write_json_atomic(path, {"format": 1, "lengths": {**known, **fresh}})
        except OSError:
            pass  # a memo only: the next run tokenizes again
    return lay, lengths


def _lengths_path(model: "LoadedModel", cache_dir: Path | None) -> Path | None:
    if cache_dir is None or not getattr(model, "weights_fingerprint", ""):
        return None
    from cliplab.models.memo import MEMO_DIR, environment

    key = hash_json({"weights": model.weights_fingerprint, "source": model.source, "env": environment()})[:32]
    return Path(cache_dir) / MEMO_DIR / LENGTHS_DIR / f"{key}.json"


def _read_lengths(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        lengths = data.get("lengths") if isinstance(data, dict) else None
        return lengths if isinstance(lengths, dict) else {}
    except (OSError, ValueError):
        return {}


def windows_embedding(window_embeddings: np.ndarray) -> np.ndarray:
    """One prompt's embedding from its windows' (k, d) raw embeddings: the mean of the unit-normalised rows,
    normalised to unit length."""
    e = np.asarray(window_embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    m = e.mean(axis=0)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)


def encode_windows(model: "LoadedModel", lay: Layout, texts: list[str], backend: str, batch_size: int = 256,
                   bar=None) -> np.ndarray:
    """(n, d) embeddings of long ``texts``, each the :func:`windows_embedding` of its windows."""
    per_text = [lay.windows(ids) for ids in lay.content(texts)]
    flat = [w for ws in per_text for w in ws]
    rows = []
    for s in range(0, len(flat), batch_size):
        rows.append(model.runtime.encode_texts(model, lay.pack(flat[s:s + batch_size]), backend).numpy())
    emb = np.concatenate(rows) if rows else np.zeros((0, model.embed_dim), np.float32)
    out, at = [], 0
    for ws in per_text:
        out.append(windows_embedding(emb[at:at + len(ws)]))
        at += len(ws)
        if bar is not None:
            bar.advance(1)
    return np.stack(out) if out else np.zeros((0, model.embed_dim), np.float32)


# ---- one report per run ----

@dataclass
class _Seen:
    """The prompts one model embedded in a run: every distinct text, and the length of each longer than ``context``."""
    model: str
    context: int
    window: int
    mode: str
    texts: set = field(default_factory=set)
    long: dict = field(default_factory=dict)


_RUN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cliplab_long_text", default=None)


class one_report:  # noqa: N801 - used as ``with one_report():``, like a contextmanager function
    """Count the prompts embedded inside the block and report those longer than the context once, when it ends
    (nested blocks report through the outermost). A class, not a generator: the warning is then raised from a frame
    of cliplab, so the notebook's warnings point at the caller's line, not at contextlib."""

    def __enter__(self) -> "one_report":
        self._token = None
        if _RUN.get() is None:
            self._seen: dict = {}
            self._token = _RUN.set(self._seen)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _RUN.reset(self._token)
            report(self._seen.values())


def record(model: "LoadedModel", lay: Layout, mode: str, texts: Sequence[str], lengths: dict[str, int]) -> None:
    """Count ``texts`` (``lengths``: the length of each longer than the context) for the run's report, or report
    them now outside a run."""
    key = (model.fingerprint, mode)
    run = _RUN.get()
    seen = run if run is not None else {}
    s = seen.setdefault(key, _Seen(model.name, lay.context_length, lay.window, mode))
    s.texts.update(texts)
    s.long.update(lengths)
    if run is None:
        report(seen.values())


def report(seen) -> None:
    for s in seen:
        if not s.long:
            continue
        n, total = len(s.long), len(s.texts)
        longest = max(s.long.values())
        cut = [v - s.context for v in s.long.values()]
        if s.mode == "truncate":
            warn(f"{n} of {total} prompt{'s' if total > 1 else ''} {'are' if n > 1 else 'is'} longer than the text "
                 f"context of {s.model} ({s.context} tokens) and {'were' if n > 1 else 'was'} cut to it: the longest "
                 f"has {longest} tokens ({longest - s.context} cut), {np.mean(cut):.1f} tokens cut on average; "
                 f"{{p:long_text}} windows embeds each whole (the mean of its {s.window}-token windows' embeddings)")
        else:
            most = max(-(-(v - (s.context - s.window)) // s.window) for v in s.long.values())
            note(f"{n} of {total} prompt{'s' if total > 1 else ''} longer than the text context of {s.model} "
                 f"({s.context} tokens; the longest {longest}) embedded whole as the mean of {s.window}-token "
                 f"windows (up to {most} window{'s' if most > 1 else ''} each)")
