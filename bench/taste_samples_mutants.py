"""How far surviving mutants of `taste_samples` (docs/mutation.md) move its samples.

    python bench/mutation.py --modules preference/active   # first: builds mutants/
    python bench/taste_samples_mutants.py 57 59 74 ...      # the mutant numbers

Draws 200 histories in the shipped bank's taste space (1-64 pairs, feature gaps from 0.5 to
30, tight to loose around one direction) and prints, per mutant, the largest difference from
the original's samples (relative to the largest sample), the same for the samples as a set
(sorted), and on how many histories the samples are bit for bit the same."""
import os
import sys
from pathlib import Path

import torch

MUTANTS = Path(__file__).resolve().parent.parent / "mutants"


def main() -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(MUTANTS))
    os.chdir(MUTANTS)
    import prefstudio.preference.active as active
    from prefstudio.preference.user_embedding import UserBank

    assert Path(active.__file__).is_relative_to(MUTANTS), "run bench/mutation.py first"
    bank = UserBank.load("checkpoints/user_bank_embedded.safetensors")
    k = bank.projection.shape[1]
    to_features = torch.linalg.pinv(bank.projection)
    generator = torch.Generator().manual_seed(0)
    histories = []
    for t in range(200):
        n, gap, looseness = [1, 3, 8, 16, 32, 64][t % 6], [0.5, 2, 4, 10, 30][t % 5], [0.2, 1.0, 3.0][t % 3]
        direction = torch.nn.functional.normalize(torch.randn(k, generator=generator), dim=0)
        gaps = gap * (direction + looseness * torch.randn(n, k, generator=generator) / k ** 0.5)
        half = bank.std * (gaps / 2 @ to_features)
        histories.append((bank.mean + half, bank.mean - half))

    def samples(mutant: str) -> list[torch.Tensor]:
        os.environ["MUTANT_UNDER_TEST"] = mutant
        return [active.taste_samples(bank, liked, disliked) for liked, disliked in histories]

    original = samples("")
    for number in sys.argv[1:]:
        mutated = samples(f"prefstudio.preference.active.x_taste_samples__mutmut_{number}")
        scale = [float(o.abs().max()) for o in original]
        apart = max(float((m - o).abs().max()) / s for m, o, s in zip(mutated, original, scale))
        as_sets = max(float((m.sort(0).values - o.sort(0).values).abs().max()) / s
                      for m, o, s in zip(mutated, original, scale))
        same = sum(torch.equal(m, o) for m, o in zip(mutated, original))
        print(f"mutant {number}: largest relative difference {apart:.2g}, as sets {as_sets:.2g}, "
              f"identical on {same} of {len(histories)} histories")


if __name__ == "__main__":
    main()
