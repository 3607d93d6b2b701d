"""`ditweb sample BUNDLE --runtime wgpu`: the same options and output as the torch runtime."""
from __future__ import annotations

import sys
from pathlib import Path


def sample_wgpu(args):
    from tqdm import tqdm
    from dit_model.cli import UsageError, guide_from_args, resolve_class
    from dit_model.images import to_uint8, write_samples
    from .bundle import Bundle
    if not Path(args.source, "manifest.json").is_file():
        raise UsageError(f"--runtime wgpu needs a bundle folder (from ditweb export), got {args.source!r}")
    bundle = Bundle.load(args.source)
    names = bundle.class_names
    cls = resolve_class(args.cls, names)
    guide = guide_from_args(args, names)
    bar = tqdm(total=args.steps, desc="sampling (wgpu)", unit="step", file=sys.stderr)
    x = bundle.sample([cls] * args.n, seed=args.seed, steps=args.steps, guide=guide, sampler=args.sampler,
                      eta=args.eta, clip_x0=args.clip, on_step=lambda i, n: bar.update(1))
    bar.close()
    paths = write_samples(to_uint8(x), Path(args.out))
    print(f"wrote {len(paths)} files to {args.out} (grid: {Path(args.out) / 'grid.png'}), class {names[cls]!r}, "
          f"seed {args.seed}, adapter {bundle.gpu.name}")
