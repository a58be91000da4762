"""The trade-off between two or three rewards, as one picture (PPD 002 Fig. 4).

One seed, one prompt; the weight of the chosen rewards ("axes") is shared out in `steps`
equal parts over every combination (the simplex): two rewards give a row from all on the
first to all on the second, three a triangle whose rows hold the first's share and run
from the second to the third. The rewards on the axes are raised, a guard too; every other
reward keeps the weight the blend gives it (a guard such as prompt consistency off the axes
keeps guarding). Each cell is the pick for its weights from one pool of every run's iterates
(`Studio.trade_off`, `CandidatePool.pick`); where two neighbouring cells would pick the
same one, a short run from it bridges the gap (`Studio._bridge_ties`). Each image is captioned with the
weights it was made with and its normalised scores, so a person sees what moving weight
costs and buys.
"""
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from prefstudio.blend import blended_profile, validate_reward_name
from prefstudio.errors import InvalidInput, echo

MAX_AXES = 3
MAX_STEPS = {2: 8, 3: 4}  # 9 images in a row, or a triangle of 15: each one is a guided run
DEFAULT_STEPS = {2: 4, 3: 2}
GAP = 8
TITLE_BAND = 44


@dataclass
class TradeOffCell:
    weights: dict[str, float]  # every weight of this cell's run
    side: object  # the SideBySide the studio made (its personalized image and scores)


@dataclass
class TradeOffGrid:
    profile: str
    prompt: str
    seed: int
    axes: list[str]
    steps: int
    strength: float
    rows: list[list[TradeOffCell]]

    def cells(self) -> list[TradeOffCell]:
        return [cell for row in self.rows for cell in row]

    def repeats(self, load_image) -> list[int | None]:
        """`repeated_pictures` of the cells' images, in reading order."""
        return repeated_pictures([load_image(cell.side.personalized.record.sha256) for cell in self.cells()])


def repeated_pictures(pictures: list[Image.Image]) -> list[int | None]:
    """For each picture, the number (from 1) of the first earlier one with the same pixels, else
    None: neighbouring weights of a grid can have one pick, and the caption of each must not
    read as if its image differed."""
    first, out = {}, []
    for number, picture in enumerate(pictures, 1):
        pixels = picture.convert("RGB").tobytes()
        out.append(first.get(pixels))
        first.setdefault(pixels, number)
    return out


def check_axes(axes, steps: int | None) -> tuple[list[str], int]:
    """Two or three different rewards, and a number of steps within bounds."""
    axes = [validate_reward_name(a) for a in axes]
    if not 2 <= len(axes) <= MAX_AXES:
        raise InvalidInput(f"a trade-off grid weighs two or three rewards against each other; got {len(axes)}")
    if len({a.casefold() for a in axes}) != len(axes):
        raise InvalidInput(f"a trade-off grid needs different rewards; got {', '.join(axes)}")
    steps = DEFAULT_STEPS[len(axes)] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS[len(axes)]:
        raise InvalidInput(f"steps for {len(axes)} rewards must be a whole number in [1, {MAX_STEPS[len(axes)]}], "
                           f"got {echo(steps)}")
    return axes, steps


def simplex_rows(n_axes: int, steps: int, total: float = 1.0) -> list[list[list[float]]]:
    """Rows of weight vectors, each summing to `total`, in shares of total/steps."""
    def share(k: int) -> float:
        return float(Fraction(k, steps) * Fraction(total).limit_denominator(10_000))

    if n_axes == 2:
        return [[[share(steps - i), share(i)] for i in range(steps + 1)]]
    return [[[share(steps - r), share(r - j), share(j)] for j in range(r + 1)] for r in range(steps + 1)]


def reward_label(name: str) -> str:
    other = blended_profile(name)
    return f"taste of {other}" if other is not None else ("your taste" if name == "user" else name.replace("_", " "))


def _font(size: int):
    """DejaVu Sans (shipped with matplotlib, a requirement): accents, Greek, Cyrillic, Hebrew and
    Arabic, which Pillow's default font draws as boxes. Not CJK or emoji."""
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def draw_grid(grid: TradeOffGrid, load_image) -> Image.Image:
    """One labelled PNG: a title, then each row of images with its weights and scores below.
    `load_image(sha)` gives a stored image."""
    pictures = [[load_image(cell.side.personalized.record.sha256).convert("RGB") for cell in row]
                for row in grid.rows]
    width = max(p.width for row in pictures for p in row)
    height = max(p.height for row in pictures for p in row)
    size = max(10, min(15, width // 20))
    line = size + 4
    shown = list(grid.axes) + [n for n in grid.rows[0][0].weights if n not in grid.axes]
    band = line * (2 + len(shown)) + GAP
    columns = max(len(row) for row in grid.rows)
    fixed = {n: w for n, w in grid.rows[0][0].weights.items() if n not in grid.axes}
    title = (f"“{grid.prompt[:70]}” · seed {grid.seed} · strength {grid.strength:g} · {grid.profile}"
             + (" · fixed: " + ", ".join(f"{reward_label(n)} {w:g}" for n, w in fixed.items()) if fixed else ""))
    subtitle = ("weights shared among: " + " · ".join(reward_label(a) for a in grid.axes)
                + "   (scores: normalised, higher is more of it)")
    title_font, font = _font(min(16, size + 2)), _font(size)
    # As wide as the title and subtitle: a grid of two images would cut them off.
    text_width = max(title_font.getlength(title), font.getlength(subtitle)) + 2 * GAP
    sheet = Image.new("RGB", (max(columns * (width + GAP) + GAP, int(text_width) + 1),
                              TITLE_BAND + len(grid.rows) * (height + band)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 6), title, fill="black", font=title_font)
    draw.text((GAP, 6 + size + 6), subtitle, fill="dimgray", font=font)
    repeats = iter(repeated_pictures([picture for row in pictures for picture in row]))
    for r, (row, images) in enumerate(zip(grid.rows, pictures)):
        top = TITLE_BAND + r * (height + band)
        offset = (columns - len(row)) * (width + GAP) // 2  # a triangle's rows are centred
        for c, (cell, picture) in enumerate(zip(row, images)):
            x = GAP + offset + c * (width + GAP)
            sheet.paste(picture, (x, top))
            y = top + picture.height + 2
            weights = " ".join(f"{cell.weights[a]:.2g}" for a in grid.axes)
            draw.text((x, y), f"weights {weights}", fill="black", font=font)
            scores = cell.side.personalized.normalised
            for k, name in enumerate(shown):
                value = scores.get(name)
                text = f"{reward_label(name)[:22]} {value:+z.2f}" if value is not None else reward_label(name)
                draw.text((x, y + line * (k + 1)), text, fill="black" if name in grid.axes else "dimgray",
                          font=font)
            same, gain = next(repeats), cell.side.improved
            note = (f"no gain; same as image {same}" if same and not gain else f"same image as image {same}" if same
                    else "no gain over the baseline" if not gain else "")
            if note:
                draw.text((x, y + line * (len(shown) + 1)), note, fill="firebrick", font=font)
    return sheet
