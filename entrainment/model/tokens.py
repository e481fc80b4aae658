"""Token ids of prompts and answers under a model's own tokenizer.

The answer " gold" is tokenised *as a continuation of the prompt*: the ids of ``prompt + " " + answer``
minus the ids of ``prompt``. That handles byte-level BPE ("Ġ" spaces) and SentencePiece ("▁" spaces)
alike, with no per-family rules; special tokens (BOS) are added to the prompt only. If a merge
crossed the boundary (never seen with a space boundary), the answer is tokenised alone as
``" " + answer``.

``bos`` chooses the BOS convention of prompts: ``auto`` = the tokenizer's own behaviour (SmolLM2 adds none),
``always`` = make the first id the tokenizer's BOS (TransformerLens and the paper's code prepend one),
``never`` = drop a leading BOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from entrainment.errors import InputError


def context_window(model: object) -> int | None:
    """The most tokens a model takes in one sequence: its config's ``max_position_embeddings`` (GPT-2:
    ``n_positions``; multimodal configs: their ``text_config``); None where the config states none."""
    cfg = getattr(model, "config", None)
    for c in (getattr(cfg, "text_config", None), cfg):
        for name in ("max_position_embeddings", "n_positions"):
            n = getattr(c, name, None)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                return n
    return None


@dataclass
class Tokens:
    """Memoising tokenizer front end: each distinct prompt or (prompt, answer) is encoded once.

    ``max_len`` (the model's context window, ``context_window``; None = unchecked): a prompt, or a prompt and its
    scored answer (``fits``), longer than that is a one-line InputError naming the text, never an IndexError inside
    the model or positions it was not trained on."""

    tokenizer: object
    bos: str = "auto"
    _prompts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _answers: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    boundary_fallbacks: int = 0
    max_len: int | None = None

    def fits(self, n_tokens: int, text: str, where: str = "prompt", column: str = "text") -> None:
        """Raise InputError if a sequence of `n_tokens` (the prompt `text` plus its answer) exceeds max_len."""
        if self.max_len is not None and n_tokens > self.max_len:
            raise InputError(
                where,
                column,
                text,
                f"{n_tokens} tokens to score, more than the model's context "
                f"window of {self.max_len} tokens (shorten it or use a model with a longer context)",
            )

    def prompt(self, text: str, where: str = "prompt", column: str = "text") -> tuple[int, ...]:
        """Model input ids of a prompt (with the tokenizer's special tokens, e.g. BOS); `where` and `column` name it
        in the error of a prompt longer than max_len."""
        ids = self._prompts.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text).input_ids)
            bos = getattr(self.tokenizer, "bos_token_id", None)
            if self.bos == "always":
                if bos is None:
                    raise ValueError("--bos always: this tokenizer has no BOS token")
                if not ids or ids[0] != bos:
                    ids = (bos,) + ids
            elif self.bos == "never" and ids and bos is not None and ids[0] == bos:
                ids = ids[1:]
            if not ids:
                raise ValueError(f"prompt {text!r} encodes to no tokens")
            self.fits(len(ids), text, where, column)
            self._prompts[text] = ids
        return ids

    def answer(self, prompt: str, answer: str) -> tuple[int, ...]:
        """Ids of " " + answer as the continuation of prompt (first id = the scored token)."""
        key = (prompt, answer)
        ids = self._answers.get(key)
        if ids is None:
            enc = self.tokenizer
            p = enc(prompt, add_special_tokens=False).input_ids
            full = enc(f"{prompt} {answer}", add_special_tokens=False).input_ids
            if full[: len(p)] == p and len(full) > len(p):
                ids = tuple(full[len(p) :])
            else:
                self.boundary_fallbacks += 1
                ids = tuple(enc(f" {answer}", add_special_tokens=False).input_ids)
            if not ids:
                raise ValueError(f"answer {answer!r} encodes to no tokens")
            self._answers[key] = ids
        return ids


@dataclass(frozen=True)
class Item:
    prompt: tuple[int, ...]
    gold: int
    distractor: int
    subject: str = ""  # the query subject (the unit of dev_se and of the half-samples); "" = the item itself


def items_with_rows(prompts: pl.DataFrame, tk: Tokens) -> list[tuple[Item, dict]]:
    """items_from's items, each with its prompt row (for groups, templates, donors)."""
    out = []
    for r in prompts.iter_rows(named=True):
        g = tk.answer(r["text_base"], r["gold"])[0]
        d = tk.answer(r["text_base"], r["distractor"])[0]
        if g != d:
            out.append((Item(tk.prompt(r["text_ctx"]), g, d, str(r.get("subject") or "")), r))
    return out
