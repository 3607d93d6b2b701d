"""The label vocabulary of a named model: which words a user may ask for, and which label rows they become.

A named model is conditioned on several *levels* at once (emoji identity, subcategory, category,
style). Each level has its own names and its own null label; the conditioning vector is the sum of
one embedding per level. A *label* is therefore one id per level, with the level's size meaning
"left out" (its null row). The first `nested` levels form a hierarchy (an emoji belongs to one
subcategory, a subcategory to one category): asking for a finer level implies its coarser ones.
The remaining levels (style) are free: left out unless asked for.

This module is plain Python (no numpy, no torch): the torch model, the wgpu runtime and the
exporter read the same vocabulary, and it is written to JSON as one verified bundle file.

Prompts resolve by name: exact before prefix before keyword (see `Vocabulary.resolve`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import DitwebError

VOCAB_FORMAT = "ditweb-vocabulary/1"
NAMED_LEVELS = ("emoji", "subcategory", "category", "style")
MAX_LABELS = 100_000
MAX_NAME = 200


class VocabularyError(DitwebError):
    """A vocabulary file or a prompt that cannot be used; the message is one line."""


def normalise(text: str) -> str:
    """Case, underscores, hyphens and runs of spaces do not matter when matching a prompt."""
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())


@dataclass(frozen=True)
class Label:
    """One id per level (`ids[l] == sizes[l]`: level l left out), and how it was asked for."""
    ids: tuple[int, ...]
    text: str = ""

    def __str__(self) -> str:
        return self.text


@dataclass
class Vocabulary:
    levels: list[str]                       # level names, finest nested level first, free levels last
    names: list[list[str]]                  # per level: its label names (ids are positions)
    nested: int                             # the first `nested` levels form the hierarchy
    parents: list[list[int]] = field(default_factory=list)   # per nested level but the last: id of its parent label
    short_names: list[list[str]] = field(default_factory=list)   # per label of level 0: other names
    keywords: list[list[str]] = field(default_factory=list)      # per label of level 0: keywords
    codes: list[str] = field(default_factory=list)               # per label of level 0: its code (emoji: unified)

    def __post_init__(self):
        self.check()
        self._index = None

    # ---------------------------------------------------------------- structure

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(n) for n in self.names)

    @property
    def null(self) -> Label:
        return Label(self.sizes, "(unconditional)")

    def level(self, name: str) -> int:
        if name not in self.levels:
            raise VocabularyError(f"unknown label level {name!r}; this model's levels: {', '.join(self.levels)}")
        return self.levels.index(name)

    def label(self, level: int, i: int, **free: str) -> Label:
        """Label `i` of `level` with its coarser nested levels filled in; `free` levels (e.g.
        style="noto") by name."""
        ids = list(self.sizes)
        text = self.names[level][i]
        if level < self.nested:
            for l in range(level, self.nested):
                ids[l] = i
                if l + 1 < self.nested:
                    i = self.parents[l][i]
        else:
            ids[level] = i
        for lname, value in free.items():
            if value is None:
                continue
            l = self.level(lname)
            if l < self.nested:
                raise VocabularyError(f"{lname!r} is not a free level (free: {', '.join(self.levels[self.nested:])})")
            if value not in self.names[l]:
                raise VocabularyError(f"unknown {lname} {value!r}; known: {', '.join(self.names[l])}")
            ids[l] = self.names[l].index(value)
            text += f" [{value}]"
        return Label(tuple(ids), text)

    def describe(self, label: Label) -> str:
        """'hippopotamus < animal-mammal < Animals & Nature, style noto' (what a label conditions on)."""
        parts = [self.names[l][i] for l, i in enumerate(label.ids[:self.nested]) if i < self.sizes[l]]
        text = " < ".join(parts) if parts else "(any)"
        for l in range(self.nested, len(self.levels)):
            i = label.ids[l]
            text += f", {self.levels[l]} {self.names[l][i] if i < self.sizes[l] else '(any)'}"
        return text

    def check_label(self, label: Label) -> Label:
        if len(label.ids) != len(self.levels) or any(not 0 <= i <= n for i, n in zip(label.ids, self.sizes)):
            raise VocabularyError(f"label {label.ids} does not fit the vocabulary's levels {self.sizes}")
        return label

    def flat_names(self) -> list[str]:
        """Every label's name, level after level (a checkpoint's `class_names`)."""
        return [n for names in self.names for n in names]

    # ---------------------------------------------------------------- prompts

    def _entries(self):
        """(normalised key, kind, level, id): kind 0 exact name, 1 short name / code, 2 keyword."""
        if self._index is None:
            out = []
            for l, names in enumerate(self.names):
                for i, n in enumerate(names):
                    out.append((normalise(n), 0, l, i))
            for i, shorts in enumerate(self.short_names):
                out += [(normalise(s), 1, 0, i) for s in shorts]
            for i, code in enumerate(self.codes):
                out.append((normalise(code), 1, 0, i))
            for i, kws in enumerate(self.keywords):
                out += [(normalise(k), 2, 0, i) for k in kws]
            self._index = out
        return self._index

    def resolve(self, prompt: str, style: str | None = None) -> Label:
        """A word or phrase -> a label: a name equal to the prompt, else a short name or code, else names that
        start with it, else keywords equal to it, else keywords that start with it, else names that
        contain it as whole words; the first tier
        that finds anything decides, and must find one label (an exact name found at several levels:
        the finest). 'LEVEL:NAME' (e.g. 'category:Flags') asks one level only. Unknown or ambiguous
        prompts raise a one-line error that lists the closest labels."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise VocabularyError("empty prompt; ask for an emoji, a subcategory, a category or a style by name")
        entries = self._entries()
        head, sep, rest = prompt.partition(":")
        if sep and head.strip() in self.levels:
            only = self.levels.index(head.strip())
            entries = [e for e in entries if e[2] == only]
            prompt = rest
        key = normalise(prompt)
        tiers = (                                            # tried in order, each only when those before found nothing
            lambda k, kind: kind == 0 and k == key,
            lambda k, kind: kind == 1 and k == key,
            lambda k, kind: kind <= 1 and k.startswith(key),
            lambda k, kind: kind == 2 and k == key,
            lambda k, kind: kind == 2 and k.startswith(key),
            lambda k, kind: kind <= 1 and f" {key} " in f" {k} ",
        )
        for tier, match in enumerate(tiers):
            found = sorted({(l, i) for k, kind, l, i in entries if match(k, kind)})
            if not found:
                continue
            if tier == 0:                                    # an exact name at several levels: the finest
                found = [f for f in found if f[0] == found[0][0]]
            if len(found) == 1:
                l, i = found[0]
                if l >= self.nested:                         # a style alone: any emoji in that style
                    return self.label(l, i)
                return self.label(l, i, **({self.levels[-1]: style} if style and len(self.levels) > self.nested else {}))
            shown = ", ".join(repr(self.names[l][i]) for l, i in found[:8])
            more = f" and {len(found) - 8} more" if len(found) > 8 else ""
            raise VocabularyError(f"prompt {prompt!r} is ambiguous: {shown}{more}; use a longer name")
        raise VocabularyError(f"unknown prompt {prompt!r}; closest labels: {', '.join(map(repr, self.closest(prompt)))}")

    def closest(self, prompt: str, k: int = 5) -> list[str]:
        """The k labels nearest to the prompt: edit distance to a name, short name or keyword, or to
        its start (a half point more; keywords a quarter more), for error messages."""
        key = normalise(prompt)
        best: dict[str, float] = {}
        for n, kind, l, i in self._entries():
            d = min(_edit_distance(key, n), _edit_distance(key, n[:len(key)]) + 0.5) + 0.25 * (kind == 2)
            name = self.names[l][i]
            if d < best.get(name, 1 << 30):
                best[name] = d
        return [n for n, _ in sorted(best.items(), key=lambda kv: (kv[1], kv[0]))[:k]]

    def suggest(self, prefix: str, k: int = 10) -> list[str]:
        """Names (all levels) and short names starting with `prefix`, shortest first."""
        key = normalise(prefix)
        out = {}
        for n, kind, l, i in self._entries():
            if kind <= 1 and n.startswith(key):
                out.setdefault(self.names[l][i], len(n))
        return [n for n, _ in sorted(out.items(), key=lambda kv: (kv[1], kv[0]))[:k]]

    # ---------------------------------------------------------------- the file

    def to_json(self) -> dict:
        return {"format": VOCAB_FORMAT, "levels": self.levels, "nested": self.nested, "names": self.names,
                "parents": self.parents, "short_names": self.short_names, "keywords": self.keywords,
                "codes": self.codes}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, d, where: str = "vocabulary") -> "Vocabulary":
        if not isinstance(d, dict):
            raise VocabularyError(f"{where}: expected a JSON object")
        if d.get("format") != VOCAB_FORMAT:
            raise VocabularyError(f"{where}: format {d.get('format')!r} is not {VOCAB_FORMAT!r}")
        try:
            return cls(levels=d["levels"], names=d["names"], nested=d["nested"], parents=d.get("parents", []),
                       short_names=d.get("short_names", []), keywords=d.get("keywords", []), codes=d.get("codes", []))
        except KeyError as e:
            raise VocabularyError(f"{where}: missing field {e.args[0]!r}") from None
        except VocabularyError as e:
            raise VocabularyError(f"{where}: {e}") from None

    @classmethod
    def loads(cls, text: str, where: str = "vocabulary") -> "Vocabulary":
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise VocabularyError(f"{where}: not valid JSON ({e})") from None
        return cls.from_json(d, where)

    def check(self) -> None:
        """Types, sizes and links; a vocabulary is untrusted input (it travels in bundles)."""
        def strings(v, what, lo=0):
            if not isinstance(v, list) or len(v) < lo or len(v) > MAX_LABELS or not all(
                    isinstance(s, str) and 0 < len(s) <= MAX_NAME for s in v):
                raise VocabularyError(f"{what} must be a list of {lo}..{MAX_LABELS} non-empty strings of at most {MAX_NAME} characters")
        strings(self.levels, "levels", 1)
        if len(set(self.levels)) != len(self.levels) or len(self.levels) > 8:
            raise VocabularyError("levels must be at most 8 distinct names")
        if not isinstance(self.names, list) or len(self.names) != len(self.levels):
            raise VocabularyError(f"names must hold one list per level ({len(self.levels)})")
        for lname, names in zip(self.levels, self.names):
            strings(names, f"names of level {lname!r}", 1)
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise VocabularyError(f"level {lname!r} names {dup!r} twice")
        if sum(map(len, self.names)) > MAX_LABELS:
            raise VocabularyError(f"more than {MAX_LABELS} labels")
        if isinstance(self.nested, bool) or not isinstance(self.nested, int) or not 1 <= self.nested <= len(self.levels):
            raise VocabularyError(f"nested must be an integer in [1, {len(self.levels)}]")
        if not isinstance(self.parents, list) or len(self.parents) != self.nested - 1:
            raise VocabularyError(f"parents must hold one list per nested level but the last ({self.nested - 1})")
        for l, par in enumerate(self.parents):
            n, up = len(self.names[l]), len(self.names[l + 1])
            if (not isinstance(par, list) or len(par) != n
                    or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < up for p in par)):
                raise VocabularyError(f"parents of level {self.levels[l]!r} must be {n} ids in [0, {up})")
        n0 = len(self.names[0])
        for what, v in (("short_names", self.short_names), ("keywords", self.keywords)):
            if not isinstance(v, list) or (v and len(v) != n0):     # (null in a file is no list either)
                raise VocabularyError(f"{what} must be empty or hold one list per {self.levels[0]} ({n0})")
            for s in v:
                strings(s, f"{what} entries")
        if self.codes or not isinstance(self.codes, list):
            strings(self.codes, "codes", n0)
            if len(self.codes) != n0:
                raise VocabularyError(f"codes must be empty or hold one per {self.levels[0]} ({n0})")


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
