"""`ditweb`: one console script, one sub-command per verb. Each verb lives next to its code and
registers itself here through a `register(subparsers)` function; this module is the only place that
knows them all, so it sits above every layer.

Errors: a DitwebError (bad bundle, checkpoint, data or argument) is printed as one line, exit status
2; anything else is a bug and keeps its traceback. --debug shows the traceback of a DitwebError too."""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from ditformat.cliargs import check_args
from ditformat.errors import DitwebError

# (verb, "module:register function"); order = order in --help.
VERBS = [
    ("info", "dit_model.cli:register_info"),
    ("sample", "ditweb.sample:register"),
    ("data", "dit_model.data_cli:register"),
    ("train", "dit_model.train:register"),
    ("train-vae", "dit_model.favicon_vae_train:register"),
    ("eval", "dit_model.eval_cli:register"),
    ("bench", "ditweb.bench:register"),
    ("export", "export.cli:register"),
    ("validate", "runtime_py.validate:register"),
    ("serve", "webserve.cli:register_serve"),
    ("site", "webserve.cli:register_site"),
]


class MissingExtra(DitwebError):
    """A verb whose module needs a package that is not installed (torch is an extra)."""


EXTRA_MODULES = ("torch", "onnx", "onnxruntime")       # what the `torch` extra (and dev) bring


def _missing_extra(verb: str, package: str) -> MissingExtra:
    return MissingExtra(f"`ditweb {verb}` needs {package}, which is not installed: pip install 'ditweb[torch]' "
                        f"(a checkout: pip install -e '.[torch]'; sampling a bundle with --runtime wgpu, serve and "
                        f"site need no torch)")


def _unavailable(verb: str, package: str):
    def run(args):
        raise _missing_extra(verb, package)
    return run


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (an unknown option, `--n abc`, a missing argument) as one line, like every
    other bad input: `ditweb VERB: error: ...`, exit status 2. Sub-parsers inherit the class."""

    def error(self, message):
        message = message.replace("\n", " ")
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version_text() -> str:
    from ditformat import EXPORTER_VERSION, FORMAT_VERSION
    return f"ditweb {EXPORTER_VERSION} (bundle format {FORMAT_VERSION})"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ditweb", description="DiT from PyTorch to the web")
    parser.add_argument("--version", action="version", version=version_text())
    # --debug is taken out of argv by main() (before or after the verb), so verbs never see it
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb, spec in VERBS:
        module, func = spec.split(":")
        try:
            register = getattr(importlib.import_module(module), func)
        except ModuleNotFoundError as e:            # e.g. torch, an install extra: the other verbs still work
            if e.name is None or e.name.split(".")[0] not in EXTRA_MODULES:
                raise
            p = sub.add_parser(verb, help=f"(needs {e.name.split('.')[0]}: pip install 'ditweb[torch]')")
            p.add_argument("args", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unavailable(verb, e.name.split(".")[0]))
            continue
        register(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:                 # before build_parser, which imports every verb (torch too)
        print(version_text())
        return 0
    debug = "--debug" in argv                 # also after the verb: `ditweb sample ... --debug`
    if debug:
        argv.remove("--debug")
    args = build_parser().parse_args(argv)
    try:
        check_args(args.verb, args)           # finite numbers, seeds in 32 bits, no negative counts, no file as folder
        try:
            return args.func(args) or 0
        except ModuleNotFoundError as e:      # a verb that imports an extra lazily (export: torch)
            if e.name is None or e.name.split(".")[0] not in EXTRA_MODULES:
                raise
            raise _missing_extra(args.verb, e.name.split(".")[0]) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DitwebError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        # bad input: CheckpointError, BundleError, DataError, UsageError, ... or a path that is not there
        if debug:
            traceback.print_exc()
        print(f"ditweb {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
