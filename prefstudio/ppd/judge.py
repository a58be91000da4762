"""A VLM as judge of personalized generation (002 app. B.3).

For each prompt the judge sees the person's history (the same chain-of-thought prompt that
makes the profile) and a new pair: the adapter's image and the baseline's, from one seed.
It is asked twice, once in each order; a verdict counts only if both answers pick the same
image, so position bias and unreadable answers drop out instead of counting as votes.
"""
from dataclasses import dataclass, field

from prefstudio.ppd.vlm_profile import JudgedPair, VLMUserEncoder


def consistent_verdict(first_order: int | None, second_order: int | None) -> str | None:
    """"candidate" / "baseline" from the two answers (first order: candidate shown as image 1,
    second order: baseline as image 1), or None when they disagree or either is unreadable."""
    if first_order == 1 and second_order == 2:
        return "candidate"
    if first_order == 2 and second_order == 1:
        return "baseline"
    return None


@dataclass
class WinRate:
    wins: int = 0
    losses: int = 0
    dropped: int = 0  # inconsistent or unreadable verdicts
    verdicts: list = field(default_factory=list)

    def add(self, verdict: str | None) -> None:
        self.verdicts.append(verdict)
        if verdict == "candidate":
            self.wins += 1
        elif verdict == "baseline":
            self.losses += 1
        else:
            self.dropped += 1

    @property
    def rate(self) -> float | None:
        decided = self.wins + self.losses
        return self.wins / decided if decided else None

    def as_dict(self) -> dict:
        return {"win_rate": self.rate, "wins": self.wins, "losses": self.losses, "dropped": self.dropped,
                "judged": len(self.verdicts)}


def judge_pair(judge: VLMUserEncoder, history: list[JudgedPair], prompt: str, candidate, baseline,
               seed: int = 0) -> str | None:
    first = judge.predict(history, prompt, candidate, baseline, seed=seed)
    second = judge.predict(history, prompt, baseline, candidate, seed=seed + 1)
    return consistent_verdict(first, second)
