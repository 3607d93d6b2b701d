"""Format name and version, read from the schema (ditformat/bundle-schema.json) so that Python and the
browser agree. FORMAT_VERSION changes whenever a bundle written by one version can not be read
correctly by another; EXPORTER_VERSION names the ditweb release that writes it, so an old or newer
bundle fails with "re-export with ditweb EXPORTER_VERSION".
  1: first release. 2: sampler.prediction (eps | v) and step flag 8 (the output is v); exporter recorded.
  3: no sampler tables (the runtimes compute them from sampler.schedule, bit for bit); kernels declare
     their workgroup-count rule (`groups`); `candidates`: interchangeable kernels the runtimes time and pick.
  4: named models: model.label_levels / label_nested, the label vocabulary in its own verified file
     (vocabulary.json), label_embed sums one table row per level (param `levels`; y_in holds B x L rows)."""
from .schema import SCHEMA

FORMAT = SCHEMA["format"]
FORMAT_VERSION = SCHEMA["format_version"]
EXPORTER_VERSION = SCHEMA["exporter_version"]


def reexport_hint() -> str:
    return f"re-export it with ditweb {EXPORTER_VERSION} (ditweb export CKPT OUT)"
