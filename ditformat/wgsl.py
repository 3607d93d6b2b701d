"""A kernel's interface read from its WGSL by parsing, not by matching text (docs/bundle-format.md, "Schema and
verification", step 5): the bindings of group 0 with their address space and access, the byte size of each uniform
binding's type, and the one entry point (`@compute`, named `main`) with its literal `@workgroup_size`.

The rules are stricter than WGSL, never looser: the source is printable ASCII (tab, LF, CR allowed; no byte-order
mark), comments (`//`, nested `/* */`) and whitespace are ignored, attributes may come in any order, attribute
arguments are decimal integer literals (`0` or `[1-9][0-9]*`, optional `i`/`u` suffix, below 2^31: no `2_56`, no
other digits than ASCII), storage bindings are runtime-sized arrays of 4-, 8- or 16-byte elements, uniform
bindings are structs of u32/i32/f32 scalars, vectors and arrays. web/bundle.js `wgslInterface` is the twin, held to
the same answers by tests/test_fuzz_bundles.py. numpy-free, standard library only."""
from __future__ import annotations

import re

_ALLOWED = re.compile(r"[\t\n\r\x20-\x7e]*")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9][A-Za-z0-9_.]*|\S")
_INT = re.compile(r"(0|[1-9][0-9]{0,9})[iu]?")
_SCALARS = {"u32": 4, "i32": 4, "f32": 4}
_VEC = re.compile(r"vec([234])(?:<(u32|i32|f32)>|([uif]))")
_STORAGE_ELEMENTS = {"f32", "u32", "i32", "vec2<f32>", "vec2<u32>", "vec4<f32>", "vec4<u32>", "vec4<i32>"}
ACCESS = {("uniform", None): "uniform", ("storage", None): "read-only-storage",
          ("storage", "read"): "read-only-storage", ("storage", "read_write"): "storage"}


class WgslError(ValueError):
    """The source breaks one of the rules above; the message says which (no file name: the caller adds it)."""


_COMMENT = re.compile(r"//|/\*")
_BLOCK_MARK = re.compile(r"/\*|\*/")
_LINE_END = re.compile(r"[\n\r]")


def strip_comments(code: str) -> str:
    """The source with every comment replaced by one space; WgslError for characters outside printable ASCII or
    an unterminated block comment."""
    if not _ALLOWED.fullmatch(code):
        bad = next(c for c in code if not _ALLOWED.fullmatch(c))
        raise WgslError(f"character {bad!r} (U+{ord(bad):04X}): kernel sources are printable ASCII")
    out, i = [], 0
    while True:
        m = _COMMENT.search(code, i)
        if m is None:
            return "".join(out) + code[i:]
        out += [code[i:m.start()], " "]
        if m.group() == "//":
            end = _LINE_END.search(code, m.end())
            i = end.start() if end else len(code)
            continue
        depth, i = 1, m.end()
        while depth:
            mark = _BLOCK_MARK.search(code, i)
            if mark is None:
                raise WgslError("unterminated /* comment")
            depth, i = depth + (1 if mark.group() == "/*" else -1), mark.end()


def tokens(code: str) -> list[str]:
    return _TOKEN.findall(strip_comments(code))


def literal_int(toks: list[str], what: str) -> int:
    """One decimal integer literal (the whole argument list of an attribute)."""
    if len(toks) != 1 or not _INT.fullmatch(toks[0]) or int(toks[0].rstrip("iu")) >= 2 ** 31:
        raise WgslError(f"{what}({' '.join(toks)[:30]}) is not a decimal integer literal")
    return int(toks[0].rstrip("iu"))


def _close(toks: list[str], i: int, open_: str, close: str) -> int:
    """Index just past the token closing the bracket opened at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        depth += (toks[j] == open_) - (toks[j] == close)
        if depth == 0:
            return j + 1
    raise WgslError(f"unbalanced {open_!r}")


def _split_commas(toks: list[str]) -> list[list[str]]:
    """Split at the commas outside () <> []."""
    parts, cur, depth = [], [], 0
    for t in toks:
        depth += (t in "(<[") - (t in ")>]")
        if t == "," and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    return parts + [cur] if cur else parts


def _attribute(toks: list[str], i: int) -> tuple[str, list[str] | None, int]:
    """(name, argument tokens or None, index after it) of the attribute whose '@' is toks[i]."""
    if i + 1 >= len(toks) or not re.fullmatch(r"[A-Za-z_]\w*", toks[i + 1]):
        raise WgslError("'@' without an attribute name")
    if i + 2 < len(toks) and toks[i + 2] == "(":
        end = _close(toks, i + 2, "(", ")")
        return toks[i + 1], toks[i + 3:end - 1], end
    return toks[i + 1], None, i + 2


def _declaration_end(toks: list[str], i: int) -> int:
    """Index after a module-scope declaration starting at toks[i]: its ';' or its closing '}' at depth 0."""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j]
        depth += (t in "({[") - (t in ")}]")
        if depth == 0 and (t == ";" or t == "}"):
            return j + 1
    raise WgslError("a declaration runs to the end of the source")


def _type_layout(toks: list[str], structs: dict, where: str) -> tuple[int, int]:
    """(size, alignment) in the uniform address space of a type written as tokens."""
    text = "".join(toks)
    if text in _SCALARS:
        return 4, 4
    vec = _VEC.fullmatch(text)
    if vec:
        n = int(vec[1])
        return 4 * n, 8 if n == 2 else 16
    if text in structs:
        return structs[text]
    if len(toks) > 4 and toks[0] == "array" and toks[1] == "<" and toks[-1] == ">":
        parts = _split_commas(toks[2:-1])
        if len(parts) == 2:
            size, align = _type_layout(parts[0], structs, where)
            count = literal_int(parts[1], "array length")
            stride = -(-size // align) * align
            if stride % 16:
                raise WgslError(f"{where}: uniform array of {''.join(parts[0])} has a stride of {stride} bytes, not a "
                                "multiple of 16")
            return count * stride, max(align, 16)
    raise WgslError(f"{where}: type {text[:40]} is not u32/i32/f32, a vector, an array or a struct of them")


def _struct(toks: list[str], i: int, structs: dict) -> int:
    """Parse `struct Name { member: type, ... }` at toks[i]; record its uniform (size, align). -> index after."""
    name = toks[i + 1] if i + 1 < len(toks) else ""
    if i + 2 >= len(toks) or toks[i + 2] != "{":
        raise WgslError(f"struct {name[:30]}: expected '{{'")
    end = _close(toks, i + 2, "{", "}")
    offset, align = 0, 4
    for member in _split_commas(toks[i + 3:end - 1]):
        if len(member) < 3 or member[1] != ":" or "@" in member:
            raise WgslError(f"struct {name[:30]}: member {' '.join(member)[:40]} is not 'name: type'")
        size, a = _type_layout(member[2:], structs, f"struct {name[:30]}")
        offset = -(-offset // a) * a + size
        align = max(align, a)
    align = max(align, 16)                      # a struct in the uniform address space aligns to 16
    structs[name] = (-(-offset // align) * align, align)
    return end


def _var(toks: list[str], i: int, attrs: dict, structs: dict) -> dict | None:
    """A module-scope `var` at toks[i] with its attributes -> {binding, type, size?} for a resource of group 0, None
    for workgroup / private memory."""
    space, access, j = None, None, i + 1
    if j < len(toks) and toks[j] == "<":
        end = _close(toks, j, "<", ">")
        inner = _split_commas(toks[j + 1:end - 1])
        if not 1 <= len(inner) <= 2 or any(len(p) != 1 for p in inner):
            raise WgslError(f"var<{' '.join(toks[j + 1:end - 1])[:40]}> is not an address space and access")
        space, access, j = inner[0][0], inner[1][0] if len(inner) == 2 else None, end
    if space in ("workgroup", "private", None):
        if "group" in attrs or "binding" in attrs:
            raise WgslError(f"@binding on a var<{space or 'private'}>")
        return None
    kind = ACCESS.get((space, access))
    if kind is None:
        raise WgslError(f"var<{space}{', ' + access if access else ''}> is not uniform, storage or storage, read_write")
    if set(attrs) != {"group", "binding"}:
        raise WgslError(f"var<{space}> needs exactly @group and @binding, has {', '.join(sorted(attrs)) or 'none'}")
    group, num = literal_int(attrs["group"], "@group"), literal_int(attrs["binding"], "@binding")
    if group != 0:
        raise WgslError(f"@binding({num}) is in @group({group}); kernels use group 0 only")
    if j + 2 >= len(toks) or toks[j + 1] != ":":
        raise WgslError(f"binding {num}: expected 'name: type'")
    ty = toks[j + 2:_declaration_end(toks, j) - 1]
    out = {"binding": num, "type": kind}
    if space == "uniform":
        out["size"] = _type_layout(ty, structs, f"binding {num}")[0]
    elif not (len(ty) >= 4 and ty[:2] == ["array", "<"] and ty[-1] == ">" and "".join(ty[2:-1]) in _STORAGE_ELEMENTS):
        raise WgslError(f"binding {num}: storage type {''.join(ty)[:40]} is not a runtime-sized array of "
                        f"{', '.join(sorted(_STORAGE_ELEMENTS))}")
    return out


def interface(code: str) -> dict:
    """{"bindings": [{binding, type, size?}] sorted, "workgroup_size": [x, y, z]} of a kernel source, or WgslError."""
    toks = tokens(code)
    structs, binds, entries, attrs, i = {}, [], [], {}, 0
    while i < len(toks):
        t = toks[i]
        if t == "@":
            name, args, i = _attribute(toks, i)
            if name in attrs:
                raise WgslError(f"@{name} twice on one declaration")
            attrs[name] = args
            continue
        if t == "struct":
            i = _struct(toks, i, structs)
        elif t == "var":
            b = _var(toks, i, attrs, structs)
            if b is not None:
                binds.append(b)
            i = _declaration_end(toks, i)
        elif t == "fn":
            if any(s in attrs for s in ("compute", "vertex", "fragment")):
                entries.append((toks[i + 1] if i + 1 < len(toks) else "", attrs))
            if i + 2 >= len(toks) or toks[i + 2] != "(":
                raise WgslError(f"fn {toks[i + 1][:30] if i + 1 < len(toks) else ''}: expected '('")
            i = _declaration_end(toks, _close(toks, i + 2, "(", ")"))
        else:
            if attrs and t not in ("const", "override", "alias"):
                raise WgslError(f"attribute(s) {', '.join('@' + a for a in attrs)} before {t[:20]!r}")
            i = _declaration_end(toks, i)
        attrs = {}
    return {"bindings": _check_bindings(binds), "workgroup_size": _entry_point(entries)}


def _check_bindings(binds: list[dict]) -> list[dict]:
    nums = [b["binding"] for b in binds]
    if len(set(nums)) != len(nums):
        raise WgslError(f"binding {next(n for n in nums if nums.count(n) > 1)} declared twice")
    return sorted(binds, key=lambda b: b["binding"])


def _entry_point(entries: list) -> list[int]:
    if len(entries) != 1:
        raise WgslError(f"expected one entry point (@compute fn main), found {len(entries)}")
    name, attrs = entries[0]
    if name != "main" or set(attrs) != {"compute", "workgroup_size"} or attrs["compute"] is not None:
        raise WgslError(f"the entry point must be '@compute @workgroup_size(...) fn main', found "
                        f"{' '.join('@' + a for a in sorted(attrs))} fn {name[:30]}")
    dims = _split_commas(attrs["workgroup_size"])
    if not 1 <= len(dims) <= 3:
        raise WgslError(f"@workgroup_size({' '.join(attrs['workgroup_size'])[:40]}) is not 1 to 3 integers")
    return [literal_int(d, "@workgroup_size") for d in dims] + [1] * (3 - len(dims))
