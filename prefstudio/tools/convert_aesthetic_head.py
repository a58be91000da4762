"""Convert LAION's aesthetic-predictor head (.pth) to the safetensors file PrefStudio reads.

    python -m prefstudio.tools.convert_aesthetic_head sac+logos+ava1-l14-linearMSE.pth aesthetic_head.safetensors

The .pth is read with torch.load(weights_only=True): tensors only, no code runs. The
output is checked by loading it back exactly as AestheticReward does.
"""
import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from prefstudio.rewards.aesthetic import MAX_HEAD_BYTES, load_head


def convert(source: Path, target: Path) -> None:
    if source.stat().st_size > MAX_HEAD_BYTES:
        raise SystemExit(f"{source} is {source.stat().st_size:,} bytes; the LAION head is about 3.7 MB")
    state = torch.load(source, map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    load_head(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="sac+logos+ava1-l14-linearMSE.pth")
    parser.add_argument("target", type=Path, help="output .safetensors")
    args = parser.parse_args()
    convert(args.source, args.target)
    print(f"wrote {args.target}")


if __name__ == "__main__":
    main()
