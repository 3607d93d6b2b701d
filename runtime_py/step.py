"""The step uniform and sampler tables now live in the format module (ditformat.step,
ditformat.schedule); these names stay importable from here for the parity tools."""
from ditformat.schedule import sampler_tables  # noqa: F401
from ditformat.step import (FLAG_CLIP, FLAG_DDPM, FLAG_NOISE, FLAG_V, FLOATS, STEP_BYTES, pack_step,  # noqa: F401
                            rounded, step_fields)
