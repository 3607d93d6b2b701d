"""web/labels.js is the twin of ditformat/labels.py: the same prompts resolve to the same labels (or fail with
the same one-line message), the same suggestions and closest labels, the same verdict and message on bad
vocabulary files. node runs the JS; the vocabulary is the tiny named set of tests/test_named.py plus a few names
that test case, whitespace and code point order."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ditformat.labels import Vocabulary, VocabularyError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vocab():
    from test_named import tiny_set
    from dit_model.named import named_data
    v = named_data(tiny_set()).vocab.to_json()
    v["names"][0] += ["Ärger face", "zebra\u00a0stripe", "𝒜 script"]          # non-ASCII, NBSP, astral
    v["parents"][0] += [0, 0, 1]
    for field, extra in (("short_names", [["arger"], ["zebra"], ["ascript"]]), ("keywords", [["anger"], ["zebra", "stripe"], []]),
                         ("codes", ["1F620", "1F993", "1D49C"])):
        v[field] += extra
    return Vocabulary.from_json(v)


PROMPTS = [("hippo", None), ("hippo", "noto"), ("HIPPO", "twemoji"), ("dog", None), ("DOG_FACE", None), ("dog-face", None),
           ("  dog   face ", None), ("apple", None), ("fruit", None), ("fru", None), ("pet", None), ("Animals & Nature", None),
           ("animal-mammal", "noto"), ("noto", None), ("twemoji", "noto"), ("family: man, boy", None), ("family", None),
           ("category:Animals & Nature", None), ("subcategory:family", None), ("emoji:dog", None), ("style:noto", None),
           ("1F99B", None), ("1f99b", None), ("man", None), ("boy", None), ("face", None), ("a", None), ("zebra", None),
           ("zebra stripe", None), ("ärger", None), ("ÄRGER FACE", None), ("𝒜", None), ("script", None), ("stripe", None),
           ("hipo", None), ("xyzzy", None), ("", None), ("   ", None), ("hippo", "comic"), ("category:", None),
           ("colour:red", None), ("d", None), ("'quoted'", None), ("tab\there", None)]
PREFIXES = ["", "h", "do", "DOG ", "an", "fam", "z", "𝒜", "ä", "qq", "food"]


def bad_files(good: dict) -> list[str]:
    def edit(f):
        d = json.loads(json.dumps(good))
        f(d)
        return json.dumps(d, ensure_ascii=False)
    return [json.dumps(good, ensure_ascii=False), "[]", "{", "null", json.dumps({**good, "format": "other/1"}),
            edit(lambda d: d.pop("levels")), edit(lambda d: d.pop("nested")), edit(lambda d: d.update(levels=[])),
            edit(lambda d: d.update(levels=["a", "a", "b", "c"])), edit(lambda d: d.update(names=d["names"][:3])),
            edit(lambda d: d["names"][1].append(d["names"][1][0])), edit(lambda d: d["names"][2].append("")),
            edit(lambda d: d["names"][2].append("x" * 201)), edit(lambda d: d["names"][2].append(7)),
            edit(lambda d: d.update(nested=0)), edit(lambda d: d.update(nested=True)), edit(lambda d: d.update(nested=9)),
            edit(lambda d: d.update(parents=d["parents"][:1])), edit(lambda d: d["parents"][0].__setitem__(0, 99)),
            edit(lambda d: d["parents"][1].__setitem__(0, -1)), edit(lambda d: d.update(short_names=[["x"]])),
            edit(lambda d: d.update(short_names=None)), edit(lambda d: d.update(keywords={"a": 1})),
            edit(lambda d: d["keywords"][0].append("")), edit(lambda d: d.update(codes=d["codes"][:-1])),
            edit(lambda d: d.update(codes=None)), edit(lambda d: d.update(names=None)), edit(lambda d: d.pop("parents")),
            edit(lambda d: d["names"].__setitem__(3, "noto"))]


def python_answers(v: Vocabulary, files: list[str]) -> dict:
    def attempt(f):
        try:
            return f()
        except VocabularyError as e:
            return {"error": f"VocabularyError: {e}"}
    def resolve(p, s):
        label = v.resolve(p, s)
        return {"ids": list(label.ids), "text": label.text, "describe": v.describe(label)}
    return {"resolve": [attempt(lambda p=p, s=s: resolve(p, s)) for p, s in PROMPTS],
            "suggest": [v.suggest(p) for p in PREFIXES], "closest": [v.closest(p) for p in PREFIXES],
            "files": [attempt(lambda f=f: list(Vocabulary.loads(f, "vocabulary.json").sizes)) for f in files]}


def test_labels_js_answers_as_python(vocab):
    files = bad_files(vocab.to_json())
    req = {"vocab": vocab.dumps(), "prompts": PROMPTS, "prefixes": PREFIXES, "files": files}
    r = subprocess.run(["node", str(REPO / "tests" / "_labels_node.mjs")], input=json.dumps(req), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    js, py = json.loads(r.stdout), python_answers(vocab, files)
    for key in ("resolve", "suggest", "closest"):
        for i, (a, b) in enumerate(zip(js[key], py[key])):
            what = PROMPTS[i] if key == "resolve" else PREFIXES[i]
            assert a == b, f"{key} {what!r}: JS {a} != Python {b}"
    ok = sum("error" not in a for a in py["resolve"])
    assert 15 < ok < len(PROMPTS) - 5                         # both kinds are exercised
    for i, (a, b) in enumerate(zip(js["files"], py["files"])):
        if i == 2:                                            # invalid JSON: the parsers' own words differ
            assert "error" in a and "error" in b and "not valid JSON" in a["error"] and "not valid JSON" in b["error"]
            continue
        assert a == b, f"file {i}: JS {a} != Python {b}"
    assert sum("error" in b for b in py["files"]) == len(files) - 1   # all but the good file
