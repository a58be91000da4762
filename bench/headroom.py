"""Where the points go at each history length: the studio's models against predictors that know
PrefBench's population model (analysis only: they read the hidden users, no method does).

    python bench/headroom.py --data data/bench

On the test split's unseen users, 1v1 top-1 at N_ref 1 to 32 (a user's first N_ref reference
pairs, as `bench/studio_models.py` scores them; its saved scores give the served models' rows):
- **Bayes, true utilities**: the posterior predictive of a person's choice given their N_ref pairs,
  over `--prior-people` people drawn from the benchmark's own population model (its common taste
  and archetypes, `sample_population` with the data's seed) with every image's true utility and
  each person's labeller temperature (calibrated as the builder calibrates them). What any model
  could do with these histories if it saw the images' attributes and subjects exactly.
- **bank posterior, true tastes, taste space**: the user embedding's cold start (a posterior over
  the bank's training users) with each training user's true taste instead of the one fitted on
  their 50 judgments, read in the bank's 32-d taste space (a ridge fit of their true utilities
  on the projected features of the train-pool images). What the user embedding could do with a
  noise-free bank in its feature space.
- **bank posterior, true tastes, RBF**: the same with each training user's true utilities read
  through an RBF kernel over all the standardised features (kernel ridge, as in the second table)
  in place of the 32-d taste space; and **+ user embedding**, its log-odds added to the served
  user embedding's, each divided by its spread over the person's judged images (as auto adds its
  members). What a member reading the images non-linearly could add to the user embedding with a
  noise-free bank (`bench/kernel_bank.py` fits such a bank from the judgments).

A second table asks what a taste could express with unlimited judgments: each unseen user's true
utilities of the train-pool images, fitted by ridge regression on one reading of the image features
and scored on the user's targets. Readings: linear in the bank's 32-d taste space, linear in all
the standardised features, and an RBF kernel over all the standardised features (its width the
median heuristic's). Each regularisation was chosen on the validation users. The gap between the
rows is what a model reading the images that way could gain with any amount of data.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from prefstudio.eval.simulated_users import ATTRIBUTES, TasteMix, sample_population  # noqa: E402
from prefstudio.preference.user_embedding import UserBank  # noqa: E402
from prefstudio.studio import DEFAULT_BANK  # noqa: E402
from prefstudio_research.prefbench.clipart import Drawing  # noqa: E402
from prefstudio_research.prefbench.data import load_split  # noqa: E402
from prefstudio_research.prefbench.methods import STUDIO_MODELS  # noqa: E402
from prefstudio_research.prefbench.pairs import Situations, rng_for  # noqa: E402
from prefstudio_research.prefbench.studio_scores import (  # noqa: E402
    ENCODER, mean_se, per_user, present, target_owner, top1,
)

REPO = Path(__file__).resolve().parents[1]
CALIBRATION_PAIRS = 2000  # train-pool pairs each drawn person's temperature is calibrated on
RIDGE = 1.0
# Ridge strength and kernel width of each reading in the unlimited-judgments table, chosen on the
# validation users (the best of three strengths a decade apart each).
CEILING_READINGS = {"taste space, linear": 1.0, "all features, linear": 100.0, "all features, RBF kernel": 0.1}


class Population:
    """True tastes of some people: attribute weights [K, A], subject affinities [K, S], temperatures [K]."""

    def __init__(self, weights, affinity, temperature, attributes, subject_index):
        self.weights, self.affinity, self.temperature = weights, affinity, temperature
        self.attributes, self.subject_index = attributes, subject_index

    def utilities(self, rows: torch.Tensor) -> torch.Tensor:
        """[len(rows), K] each person's utility of each image."""
        return self.attributes[rows] @ self.weights.T + self.affinity[:, self.subject_index[rows]].T


def read_population(data: Path, n_prior: int, tested: list[str]):
    build = json.loads((data / "pairs" / "build.json").read_text())["config"]
    drawings = [Drawing(**json.loads(line)) for line in open(data / "images.jsonl")]
    attributes = load_file(str(data / "labeller" / "attributes.safetensors"))
    attributes = torch.stack([attributes[a].double() for a in ATTRIBUTES], 1)
    subjects = sorted({d.subject for d in drawings})
    subject_index = torch.tensor([subjects.index(d.subject) for d in drawings])
    hidden = json.loads((data / "pairs" / "hidden" / "users.json").read_text())
    meta = json.loads((data / "pairs" / "users.json").read_text())
    by_id = {u["user_id"]: u for u in hidden["users"]}

    def tensors(people):
        weights = torch.tensor([[p["attribute_weights"][a] for a in ATTRIBUTES] for p in people], dtype=torch.float64)
        affinity = torch.tensor([[p["category_affinity"][s] for s in subjects] for p in people], dtype=torch.float64)
        return weights, affinity, torch.tensor([p["temperature"] for p in people], dtype=torch.float64)

    bank_people = Population(*tensors([by_id[u] for u in meta["train"]]), attributes, subject_index)
    tested_people = Population(*tensors([by_id[u] for u in tested]), attributes, subject_index)
    # More people of the same population: the builder's draw with extra ids appended (the first
    # ones come out as the benchmark's own people, checked below).
    ids = meta["train"] + meta["val"] + meta["test_unseen"]
    drawn = sample_population(ids + [f"prior{i:06d}" for i in range(n_prior)], build["seed"], subjects,
                              {s: s.split("/")[0] for s in subjects}, hidden["attribute_spread"],
                              TasteMix(**hidden["mix"]))
    first = drawn.users[0]
    if any(abs(first.attribute_weights[a] - by_id[ids[0]]["attribute_weights"][a]) > 1e-9 for a in ATTRIBUTES):
        raise SystemExit("the population model no longer draws this data's people: rebuild the data")
    extra = [{"attribute_weights": u.attribute_weights, "category_affinity": u.category_affinity, "temperature": 1.0}
             for u in drawn.users[len(ids):]]
    prior = Population(*tensors(extra), attributes, subject_index)
    train_rows = [i for i, d in enumerate(drawings) if d.split == "train"]
    situations, rng = Situations(drawings, train_rows), rng_for(build["seed"], "headroom-calibration")
    pairs = torch.tensor([situations.draw(2, set(), rng)[0] for _ in range(CALIBRATION_PAIRS)])
    gaps = (prior.utilities(pairs[:, 0]) - prior.utilities(pairs[:, 1])).abs()
    low, high = torch.full((n_prior,), -12.0, dtype=torch.float64), torch.full((n_prior,), 12.0, dtype=torch.float64)
    for _ in range(60):  # bisection on log T, as `calibrate_temperature`, for every person at once
        mid = 0.5 * (low + high)
        above = torch.sigmoid(gaps / mid.exp()).mean(0) > build["ceiling"]
        low, high = torch.where(above, mid, low), torch.where(above, high, mid)
    prior.temperature = (0.5 * (low + high)).exp()
    return bank_people, tested_people, prior, torch.tensor(train_rows)


def posterior_predictive(log_odds_refs: torch.Tensor, log_odds_targets: torch.Tensor) -> torch.Tensor:
    """[N, K] each person's log-odds of the history's choices, [T, K] of the targets' liked image ->
    [T] probability that the liked image is chosen, averaged over the posterior."""
    weights = torch.softmax(F.logsigmoid(log_odds_refs).sum(0), 0)
    return torch.sigmoid(log_odds_targets) @ weights


def unlimited_judgment_fits(readings: dict, utilities: torch.Tensor, rows: torch.Tensor) -> dict:
    """{reading: [N_images, K] each person's utilities predicted by a ridge fit on `rows` in that reading}.
    Each reading is (kernel function, ridge): a kernel ridge fit, all people at once."""
    fits = {}
    for name, (kernel, ridge) in readings.items():
        gram = kernel(rows, rows) + ridge * torch.eye(len(rows), dtype=torch.float64)
        fits[name] = kernel(None, rows) @ torch.linalg.solve(gram, utilities[rows])
    return fits


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench")
    parser.add_argument("--prior-people", type=int, default=2000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start, load_start = time.perf_counter(), os.getloadavg()
    split = load_split(args.data, "test", ENCODER)
    scores = load_file(str(args.data / "studio_models" / "scores.safetensors"))
    bank_people, tested_people, prior, train_rows = read_population(args.data, args.prior_people, split.users)
    bank = UserBank.load(DEFAULT_BANK)
    taste_space = bank.project(split.features.float()).double()
    design = torch.cat([taste_space[train_rows], torch.ones(len(train_rows), 1, dtype=torch.float64)], 1)
    true_tastes = torch.linalg.solve(design.T @ design + RIDGE * torch.eye(design.shape[1], dtype=torch.float64),
                                     design.T @ bank_people.utilities(train_rows))[:-1] / bank_people.temperature

    standardised = (split.features.double() - split.features.double().mean(0)) / (split.features.double().std(0) + 1e-6)
    median_sq = torch.cdist(standardised[train_rows], standardised[train_rows]).pow(2).median()

    def rbf(a, b):
        return torch.exp(-torch.cdist(standardised if a is None else standardised[a], standardised[b]).pow(2)
                         / median_sq)

    bank_rbf_utilities = unlimited_judgment_fits(
        {"rbf": (rbf, CEILING_READINGS["all features, RBF kernel"])},
        bank_people.utilities(torch.arange(split.features.shape[0])), train_rows)["rbf"] / bank_people.temperature

    owner = target_owner(split)
    unseen = torch.tensor([u not in split.seen for u in split.users])
    def true_gaps(pairs):  # [N, K] each drawn person's log-odds of liked over disliked
        return (prior.utilities(pairs[:, 0]) - prior.utilities(pairs[:, 1])) / prior.temperature

    def bank_gaps(pairs):  # [N, K] the same for the bank's users, read in the taste space
        return (taste_space[pairs[:, 0]] - taste_space[pairs[:, 1]]) @ true_tastes

    def bank_rbf_gaps(pairs):  # [N, K] the same read through the RBF kernel
        return bank_rbf_utilities[pairs[:, 0]] - bank_rbf_utilities[pairs[:, 1]]

    def unseen_top1(scores_of_targets):  # [T, 2] -> (mean, SE) over unseen users
        return mean_se(per_user(top1(scores_of_targets), owner, len(split.users))[unseen])

    rows = []
    for n_ref in present(scores, "test"):
        predicted = {"bayes": [], "bank": [], "bank rbf": [], "bank rbf + ue": []}
        user_embedding, scales = scores[f"test.{n_ref}.user-embedding"], scores[f"test.{n_ref}.scales"]
        for k, user in enumerate(split.users):
            refs, targets = split.references[user][:n_ref], split.targets_1v1[user]
            for name, gaps in (("bayes", true_gaps), ("bank", bank_gaps), ("bank rbf", bank_rbf_gaps)):
                p = posterior_predictive(gaps(refs), gaps(targets))
                predicted[name].append(torch.stack([p, 1 - p], 1))
            # As a member it scores an image by its posterior-mean utility (the user embedding's cold
            # start scores by its posterior-mean taste), divided by the spread over the judged images.
            weights = torch.softmax(F.logsigmoid(bank_rbf_gaps(refs)).sum(0), 0)
            utility = bank_rbf_utilities @ weights
            ue = user_embedding[owner == k]
            both = ((utility[targets[:, 0]] - utility[targets[:, 1]]) / utility[refs.reshape(-1)].std()
                    + (ue[:, 0] - ue[:, 1]) / scales[k, 0])
            predicted["bank rbf + ue"].append(torch.stack([both, -both], 1))
        row = {"n_ref": n_ref, **{name: unseen_top1(scores[f"test.{n_ref}.{name}"]) for name in STUDIO_MODELS},
               **{name: unseen_top1(torch.cat(parts)) for name, parts in predicted.items()}}
        rows.append(row)
        print(row, flush=True)

    def linear(x):
        return lambda a, b: (x if a is None else x[a]) @ x[b].T + 1  # + 1: the intercept

    kernels = {"taste space, linear": linear(taste_space), "all features, linear": linear(standardised),
               "all features, RBF kernel": rbf}
    utilities = tested_people.utilities(torch.arange(split.features.shape[0]))
    fits = unlimited_judgment_fits({n: (kernels[n], ridge) for n, ridge in CEILING_READINGS.items()},
                                   utilities, train_rows)
    fits["true utilities"] = utilities
    ceilings = {}
    for name, predicted in fits.items():
        parts = [predicted[split.targets_1v1[user], k] for k, user in enumerate(split.users)]  # [T, 2] each
        ceilings[name] = unseen_top1(torch.cat(parts))
        print(name, ceilings[name], flush=True)
    from prefstudio_research.report import how_it_ran, write_section

    head = ("| N_ref | user embedding | preference tokens | auto | bank posterior, true tastes, taste space "
            "| bank posterior, true tastes, RBF | + user embedding | Bayes, true utilities |\n"
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cell = lambda v: f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"
    lines = [f"| {r['n_ref']} | " + " | ".join(cell(r[k]) for k in (*STUDIO_MODELS, "bank", "bank rbf", "bank rbf + ue", "bayes")) + " |"
             for r in rows]
    ran = how_it_ran("bench/headroom.py", list(sys.argv[1:] if argv is None else argv), load_start, start)
    text = "\n".join([
        "## Where the points go at each history length (issue 15)", "",
        f"{ran} PrefBench's {int(unseen.sum())} unseen test users (data/bench, "
        "seed 0), 1v1 top-1, ± the standard error over users. The first three columns are the studio's models "
        "(the scores `bench/studio_models.py` saved); the last four read the hidden users and are analysis only "
        "(bench/headroom.py's docstring says how each is built).", "", head, *lines, "",
        "**With unlimited judgments**: each unseen user's true utilities of the train-pool images fitted in one "
        "reading of the image features (ridge; the regularisation chosen on the validation users), 1v1 top-1 on "
        "their targets.", "", "| reading of the images | top-1 |", "| --- | ---: |",
        *[f"| {name} | {cell(v)} |" for name, v in ceilings.items()]])
    print(text)
    if not args.no_docs:
        write_section("headroom", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
