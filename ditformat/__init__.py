"""The bundle format, shared by the exporter and both runtimes; imports only numpy (and json).

The bottom layer of the project (docs/bundle-format.md, "Layers"): everything a bundle means that
more than one side needs to agree on lives here, once.
  version   format name, format version, the exporter version that writes it
  errors    DitwebError, the base class of every error the `ditweb` command reports in one line
  schedule  the noise schedule and the respaced sampler tables, float64 numpy
  step      the 128-byte step uniform: field layout, flags, packing
  forms     linear forms [b, n, c] = b*B + n*N + c (batch-dependent sizes in the manifest)
  noise     the counter-based Gaussian generator every runtime reproduces bit for bit
  schema    bundle-schema.json: the declarative manifest schema both verifiers read (the page through
            web/bundle-schema.js, written by `python -m ditformat`)
"""
from .version import EXPORTER_VERSION, FORMAT, FORMAT_VERSION

__all__ = ["FORMAT", "FORMAT_VERSION", "EXPORTER_VERSION"]
