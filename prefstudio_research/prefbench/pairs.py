"""Simulated users judge pairs of clip art: the pair data set of bench/README.md.

Who judges: `sample_population` (common + archetype + personal taste). How: for a pair,
one Bradley–Terry draw; for four images, one Plackett–Luce first choice; both at the
user's temperature, calibrated on the user's own kind of pairs (train pool) so that the
Bayes ceiling of 1v1 is `ceiling`. What they judge: a "situation" is a few images a
person would see together — variants of one drawing (one prompt) where the pool has
them, otherwise drawings of one subject, otherwise of one category.

The users' utilities and the labeller's probabilities go to `pairs/hidden/` (for the
ceiling and the generation judge); methods read the JSON Lines and features only.
"""
import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from prefstudio_research.prefbench.clipart import Drawing, category_prompt, subject_prompt
from prefstudio.eval.simulated_users import (
    ATTRIBUTES, SimulatedUser, TasteMix, calibrate_temperature, sample_population,
)

SAME_PROMPT, SAME_SUBJECT = 0.25, 0.35  # chances of a situation's kind; the rest: same category
CALIBRATION_PAIRS = 400


@dataclass(frozen=True)
class PairConfig:
    seed: int = 0
    # Training users on the scale of 000's Pick-a-Pic split (2,267 users) within the CPU budget.
    n_train_users: int = 1000
    train_pairs_per_user: int = 50
    n_val_users: int = 60
    # Test users: drawn from the training users and judged again on test images (seen), or new.
    # Several hundred, so that the seen/unseen gap and differences between models of a few
    # tenths of a point stand out of the test users' sampling noise (what 40/80 gave:
    # docs/design_figures.md).
    n_seen: int = 200
    n_unseen: int = 400
    n_ref: int = 32  # reference lines per evaluated user: N_ref up to 32
    n_1v1: int = 24
    n_1v3: int = 12
    ceiling: float = 0.85
    mix: TasteMix = field(default_factory=TasteMix)


def rng_for(seed: int, *keys) -> torch.Generator:
    """An independent, reproducible stream per (seed, keys): adding a user changes no one else."""
    digest = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class Situations:
    """Draws sets of images that belong together from one image pool."""

    def __init__(self, drawings: list[Drawing], rows: list[int]):
        self.drawings = drawings
        self.by_category = defaultdict(list)
        self.by_subject = defaultdict(list)
        self.by_group = defaultdict(list)
        for r in rows:
            d = drawings[r]
            self.by_category[d.category].append(r)
            self.by_subject[d.subject].append(r)
            self.by_group[d.group].append(r)
        self.categories = sorted(self.by_category)

    def _pick(self, options: list[list[int]], m: int, used: set[int], rng) -> list[int] | None:
        options = [[r for r in rows if r not in used] for rows in options]
        options = [rows for rows in options if len(rows) >= m]
        if not options:
            return None
        rows = options[int(torch.randint(len(options), (), generator=rng))]
        order = torch.randperm(len(rows), generator=rng)[:m].tolist()
        return [rows[i] for i in order]

    def draw(self, m: int, used: set[int], rng: torch.Generator) -> tuple[list[int], str]:
        """m images not in `used` that a person would see together, and the prompt they share."""
        sizes = torch.tensor([len(self.by_category[c]) for c in self.categories], dtype=torch.float64)
        # √size: big categories (computer icons, flags) come up more often, not overwhelmingly.
        category = self.categories[int(torch.multinomial(sizes.sqrt(), 1, generator=rng))]
        kind = float(torch.rand((), generator=rng))
        members = self.by_category[category]
        groups = {self.drawings[r].group for r in members}
        subjects = {self.drawings[r].subject for r in members}
        rows = None
        if kind < SAME_PROMPT:
            rows = self._pick([self.by_group[g] for g in sorted(groups)], m, used, rng)
        if rows is None and kind < SAME_PROMPT + SAME_SUBJECT:
            rows = self._pick([self.by_subject[s] for s in sorted(subjects)], m, used, rng)
        if rows is None:
            rows = self._pick([members], m, used, rng)
        if rows is None:  # this category is used up for this user: any category
            rows = self._pick([self.by_category[c] for c in self.categories], m, used, rng)
        if rows is None:
            raise ValueError(f"the image pool has fewer than {m} unused images left for a user; "
                             "use more images or fewer pairs per user")
        picked = [self.drawings[r] for r in rows]
        if len({d.prompt for d in picked}) == 1:
            prompt = picked[0].prompt
        elif len({d.subject for d in picked}) == 1:
            prompt = subject_prompt(picked[0].subject)
        else:
            prompt = category_prompt(picked[0].category)
        return rows, prompt


class Labeller:
    """Judges for the simulated users: reads utilities, returns labels and their probabilities."""

    def __init__(self, attributes: dict[str, torch.Tensor], subjects: list[str]):
        self.attributes = attributes
        self.subjects = subjects
        self._utilities = {}

    def utilities(self, user: SimulatedUser) -> torch.Tensor:
        if user.user_id not in self._utilities:
            self._utilities[user.user_id] = user.utility_from_attributes(
                self.attributes, self.subjects).double()
        return self._utilities[user.user_id]

    def calibrate(self, user: SimulatedUser, situations: Situations, target: float, seed: int) -> None:
        rng = rng_for(seed, "calibrate", user.user_id)
        u = self.utilities(user)
        gaps = []
        for _ in range(CALIBRATION_PAIRS):
            (a, b), _prompt = situations.draw(2, set(), rng)
            gaps.append(u[a] - u[b])
        user.temperature = calibrate_temperature(torch.stack(gaps), target)

    def judge_pair(self, user, rows, rng) -> tuple[int, int, float]:
        """(liked row, disliked row, probability of this user liking the first-listed one)."""
        u = self.utilities(user)
        a, b = rows
        if user.prefers_first(float(u[a]), float(u[b]), rng):
            liked, disliked = a, b
        else:
            liked, disliked = b, a
        p_liked = float(torch.sigmoid((u[liked] - u[disliked]) / user.temperature))
        return liked, disliked, p_liked

    def judge_group(self, user, rows, rng) -> tuple[list[int], list[float]]:
        """(rows with the chosen one first, the Plackett–Luce probability of each being chosen)."""
        u = self.utilities(user)[rows]
        chosen = user.choose(u, rng)
        order = [chosen] + [i for i in range(len(rows)) if i != chosen]
        probabilities = torch.softmax(u / user.temperature, 0)
        return [rows[i] for i in order], [float(probabilities[i]) for i in order]


def _line(user_id, prompt, liked, disliked, drawings) -> str:
    return json.dumps({"user_id": user_id, "prompt": prompt,
                       "liked": "../" + drawings[liked].path,
                       "disliked": "../" + drawings[disliked].path})


def build_pairs(cache: Path, drawings: list[Drawing], attributes: dict[str, torch.Tensor],
                config: PairConfig, log=print) -> dict:
    """Sample the users, calibrate them, let them judge, write `cache/pairs/`. Returns a summary."""
    out = cache / "pairs"
    (out / "hidden").mkdir(parents=True, exist_ok=True)
    pools = {p: [i for i, d in enumerate(drawings) if d.split == p] for p in ("train", "val", "test")}
    situations = {p: Situations(drawings, rows) for p, rows in pools.items()}
    subjects = [d.subject for d in drawings]
    all_subjects = sorted(set(subjects))
    spread = {name: float(attributes[name][pools["train"]].std()) for name in ATTRIBUTES}

    train_ids = [f"train{i:04d}" for i in range(config.n_train_users)]
    val_ids = [f"val{i:04d}" for i in range(config.n_val_users)]
    unseen_ids = [f"new{i:04d}" for i in range(config.n_unseen)]
    seen_ids = sorted(train_ids[i] for i in torch.randperm(
        len(train_ids), generator=rng_for(config.seed, "seen"))[: config.n_seen].tolist())
    population = sample_population(
        train_ids + val_ids + unseen_ids, config.seed, all_subjects,
        {s: s.split("/")[0] for s in all_subjects}, spread, config.mix)
    users = {u.user_id: u for u in population.users}
    labeller = Labeller(attributes, subjects)
    for user in population.users:
        labeller.calibrate(user, situations["train"], config.ceiling, config.seed)
    log(f"  {len(users)} users calibrated")

    with open(out / "train.jsonl", "w") as f:
        for user_id in train_ids:
            rng, used = rng_for(config.seed, "train", user_id), set()
            for _ in range(config.train_pairs_per_user):
                rows, prompt = situations["train"].draw(2, used, rng)
                used.update(rows)
                liked, disliked, _ = labeller.judge_pair(users[user_id], rows, rng)
                f.write(_line(user_id, prompt, liked, disliked, drawings) + "\n")

    oracle, summary = {}, {}
    for split, ids, pool in (("val", val_ids, "val"), ("test", seen_ids + unseen_ids, "test")):
        refs, t11, t13 = [], [], []
        p11, p13 = defaultdict(list), defaultdict(list)
        for user_id in ids:
            rng, used, user = rng_for(config.seed, split, user_id), set(), users[user_id]
            for _ in range(config.n_ref):
                rows, prompt = situations[pool].draw(2, used, rng)
                used.update(rows)
                liked, disliked, _ = labeller.judge_pair(user, rows, rng)
                refs.append(_line(user_id, prompt, liked, disliked, drawings))
            for _ in range(config.n_1v1):
                rows, prompt = situations[pool].draw(2, used, rng)
                used.update(rows)
                liked, disliked, p = labeller.judge_pair(user, rows, rng)
                t11.append(_line(user_id, prompt, liked, disliked, drawings))
                p11[user_id].append(p)
            for _ in range(config.n_1v3):
                rows, prompt = situations[pool].draw(4, used, rng)
                used.update(rows)
                ordered, probabilities = labeller.judge_group(user, rows, rng)
                t13 += [_line(user_id, prompt, ordered[0], r, drawings) for r in ordered[1:]]
                p13[user_id].append(probabilities)
        for name, lines in (("references", refs), ("1v1", t11), ("1v3", t13)):
            (out / f"{split}_{name}.jsonl").write_text("".join(line + "\n" for line in lines))
        oracle[f"{split}_1v1"] = p11
        oracle[f"{split}_1v3"] = p13
        summary[split] = {"users": len(ids), "references": len(refs), "1v1": len(t11),
                          "1v3_groups": len(t13) // 3}

    meta = {"seed": config.seed, "n_ref": config.n_ref, "train": train_ids, "val": val_ids,
            "test_seen": seen_ids, "test_unseen": unseen_ids}
    (out / "users.json").write_text(json.dumps(meta, indent=1))
    hidden_users = [{**asdict(u), "archetype": population.archetype[u.user_id]} for u in population.users]
    (out / "hidden" / "users.json").write_text(json.dumps(
        {"mix": asdict(config.mix), "attribute_spread": spread, "users": hidden_users}))
    (out / "hidden" / "oracle.json").write_text(json.dumps(
        {"about": "per user, per target line (1v1) or group (1v3), in file order: the labeller's probability of the "
                  "recorded choice (1v1: P(liked ≻ disliked); 1v3: Plackett–Luce probability "
                  "of each column being picked, liked first)", **oracle}))
    (out / "build.json").write_text(json.dumps(build_key(cache, config), indent=1))
    summary["train"] = {"users": len(train_ids), "pairs": len(train_ids) * config.train_pairs_per_user}
    return summary


def build_key(cache: Path, config: PairConfig) -> dict:
    """What a pair build depends on: its settings and the exact image list."""
    from prefstudio_research.prefbench.features import pool_digest

    return json.loads(json.dumps({"config": asdict(config), "images_sha256": pool_digest(cache)}))


def is_built(cache: Path, config: PairConfig) -> bool:
    build = cache / "pairs" / "build.json"
    return build.exists() and json.loads(build.read_text()) == build_key(cache, config)


def read_hidden_users(cache: Path) -> dict[str, SimulatedUser]:
    """For the judge only (generation win rate): the simulated users with their utilities."""
    data = json.loads((cache / "pairs" / "hidden" / "users.json").read_text())
    return {u["user_id"]: SimulatedUser(u["user_id"], u["attribute_weights"],
                                        u["category_affinity"], u["temperature"])
            for u in data["users"]}


def read_oracle(cache: Path) -> dict:
    """For the Bayes ceiling only."""
    return json.loads((cache / "pairs" / "hidden" / "oracle.json").read_text())


def ceilings_1v1(probabilities: list[float]) -> torch.Tensor:
    """Per target pair: the Bayes accuracy max(p, 1 − p)."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.maximum(p, 1 - p)


def ceilings_1v3(probabilities: list[list[float]], k: int) -> torch.Tensor:
    """Per group: the chance that the picked image is among the oracle's top k (by utility,
    i.e. by Plackett–Luce probability)."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return p.sort(dim=1, descending=True).values[:, :k].sum(1)


def read_archetypes(cache: Path) -> dict[str, int]:
    """For reference points only: which taste cluster each user was drawn from."""
    data = json.loads((cache / "pairs" / "hidden" / "users.json").read_text())
    return {u["user_id"]: u["archetype"] for u in data["users"]}
