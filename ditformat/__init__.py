"""The bundle format, shared by the exporter and both runtimes; imports only numpy (and json).

The bottom layer of the project (docs/bundle-format.md, "Layers"): everything a bundle means that
more than one side needs to agree on lives here, once.
  version   format name, format version, the exporter version that writes it
  errors    DitwebError, the base class of every error the `ditweb` command reports in one line
  schedule  the noise schedule, the respaced tables (the torch trainer's too), the predictions (eps, v)
  guidance  the guides and their plans (Guide, Plan, make_plan, parse_interval): branches and coefficients
  layout    the binary layouts as data: the step record's fields and flags, each op's params
  step      the 128-byte step uniform: its fields for a sampler index, packing (from layout)
  forms     linear forms [b, n, c] = b*B + n*N + c (batch-dependent sizes in the manifest)
  noise     the counter-based Gaussian generator every runtime reproduces bit for bit
  schema    bundle-schema.json: the declarative manifest schema both verifiers read (the page through
            web/bundle-schema.js, written by `python -m ditformat`)
  wgsl      a kernel's interface parsed from its WGSL (bindings, uniform sizes, entry point, workgroup size)
  reach     reach.json: how far each op's dispatch reaches into each buffer, from its params
  packed    packed weight encodings (q4k: int4 bundles' 4-bit block weights): the quantiser's step choice,
            packing, and the checked unpacking every runtime does at load (web/bundle.js unpackQ4k the twin)
  generate  the files generated from these declarations (`python -m ditformat`): web/bundle-schema.js,
            web/bundle-layout.js (packStep, OP_PARAMS) and wasm/bundle-layout.h (included by wasm/kernels.c)
"""
from .version import EXPORTER_VERSION, FORMAT, FORMAT_VERSION

__all__ = ["FORMAT", "FORMAT_VERSION", "EXPORTER_VERSION"]
