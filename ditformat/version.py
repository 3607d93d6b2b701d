"""Format name and version. FORMAT_VERSION changes whenever a bundle written by one version can not
be read correctly by another; EXPORTER_VERSION names the ditweb release that writes it, so an old or
newer bundle fails with "re-export with ditweb EXPORTER_VERSION"."""
FORMAT = "ditweb-bundle"
# 1: first release.
FORMAT_VERSION = 1
EXPORTER_VERSION = "0.2.0"


def reexport_hint() -> str:
    return f"re-export it with ditweb {EXPORTER_VERSION} (ditweb export CKPT OUT)"
