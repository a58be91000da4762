"""Simulated people as the studio meets them: each judges the studio's own candidates in a
profile of its own and is fitted there (bench/never_worse.py, bench/instant.py)."""
from prefstudio.encoders.base import pil_to_tensor
from prefstudio.eval.simulated_users import ATTRIBUTES, SimulatedUser, image_attributes, sample_population
from prefstudio.studio import Studio

JUDGED_PROMPTS = ["a quiet landscape", "a city street at dusk"]


def judged_candidates(studio: Studio) -> list:
    """The candidates every simulated person judges: 8 seeds × JUDGED_PROMPTS, stored."""
    return [c for i, p in enumerate(JUDGED_PROMPTS)
            for c in studio.generate_candidates(p, seeds=list(range(8 * i, 8 * i + 8)))]


def judged_people(studio: Studio, n_users: int, seed: int, candidates: list | None = None,
                  first: int = 0) -> list[SimulatedUser]:
    """PrefBench's unseen users as the studio meets them: drawn by `sample_population` (its
    population model and seed, ids new0000…; `first` skips that many, for validation people no
    benchmark reads), each with a profile in the studio in which they judged 16 of its candidates
    (`judged_candidates`, unless given; liking their better half), fitted."""
    candidates = judged_candidates(studio) if candidates is None else candidates
    pixels = pil_to_tensor([studio.store.load_image(c.sha256) for c in candidates])
    attributes = image_attributes(pixels)
    spread = {name: float(attributes[name].std()) for name in ATTRIBUTES}
    ids = [f"new{i:04d}" for i in range(first + n_users)]
    people = sample_population(ids, seed, ["generated"], None, spread).users[first:]
    for person in people:
        studio.store.create_profile(person.user_id)
        utility = person.utility(pixels)
        for candidate, value in zip(candidates, utility):
            studio.judge(person.user_id, "like" if value > utility.median() else "dislike", candidate.sha256)
        studio.fit(person.user_id)
    return people
