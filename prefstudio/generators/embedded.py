"""The embedded offline generator: flat-illustration scenes drawn in pure torch.

No weights, nothing downloaded, differentiable from the initial noise to the pixels.

    noise z [B, NOISE_DIM] (standard normal, from the seed)
      + prompt style (palette hues, motifs, layout, texture; see prompt_style.py)
      -> scene: palette, sky gradient and horizon, glow, stars, N_SHAPES layered shapes
         (kind, position, size, rotation, colour, softness), stripes / halftone / grain
      -> pixels [B, 3, H, W]

The mapping is fixed and hand-designed, not trained. Each noise entry has one job: the
first ones shift the prompt's style (brightness, contrast, saturation, hue, density,
textures, kind and layout preferences...), a few place the scene (focus point, horizon),
and each shape slot has its own entries. So a seed varies palette, brightness, contrast,
shape vocabulary, density, texture and composition, and guidance can move each of them.
Every shape is a signed distance field turned into coverage by a sigmoid, and every
choice (which kind of shape, which palette colour, which layout, how many shapes) is a
softmax or sigmoid blend, never an argmax: small noise changes make small image changes.
"""
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from prefstudio.encoders.base import TextEncoder
from prefstudio.errors import InvalidInput
from prefstudio.generators.base import GeneratedImage, Generator, to_pil
from prefstudio.generators.prompt_style import (
    KINDS, LAYOUTS, SCALARS, STYLE_NAMES, PromptStyle, PromptStyler,
)
from prefstudio.validation import validate_prompt, validate_seed

VERSION = "embedded-1"
N_SHAPES = 14
N_ACCENTS = 5

# Noise layout: style shifts, scene extras, palette jitter, then one block per shape slot.
_EXTRAS = ("focus_x", "focus_y", "hue_spread", "horizon_tilt", "horizon_phase", "stripe_angle")
_N_GLOBAL = len(STYLE_NAMES) + len(_EXTRAS) + 2 * N_ACCENTS
SHAPE_FIELDS = ("x", "y", "size", "aspect", "rotation", "colour", "opacity", "softness") \
    + tuple(f"kind_{k}" for k in KINDS)
NOISE_DIM = _N_GLOBAL + N_SHAPES * len(SHAPE_FIELDS)

# How far one standard deviation of seed noise moves each style entry around the prompt's
# value (logit units; hue_shift in turns). Larger = seeds differ more in that respect.
_STYLE_NOISE = dict.fromkeys(SCALARS, 0.8) | {
    "density": 1.2, "stripes": 1.6, "dots": 1.6, "horizon": 1.0, "horizon_y": 0.5,
    "size": 0.6, "val": 0.75, "contrast": 1.0, "sat": 0.75, "grain": 1.1, "hue_shift": 0.035,
} | {f"kind_{k}": 0.7 for k in KINDS} | {f"layout_{l}": 0.9 for l in LAYOUTS}

# Shape kinds as settings of one parametric shape (a rounded, tapered, optionally hollow,
# petalled or wavy box), so a kind mixture is just a weighted mean of these rows.
_TEMPLATE_FIELDS = ("width", "aspect", "stretch", "round", "ring", "petal", "lobes", "wave",
                    "soft", "rotate", "taper", "ground", "below", "opacity", "windows")
_TEMPLATES = {
    #          width aspect stretch round ring petal lobes wave soft rotate taper ground below opac. windows
    "circle":   (1.0, 1.0,  0.1, 1.0,  0.0, 0.0,  0.0,  0.0, 0.2,  0.2,  0.0, 0.15, 0.0, 1.0,  0.0),
    "box":      (0.9, 0.7,  1.0, 0.06, 0.0, 0.0,  0.0,  0.0, 0.1,  1.0,  0.0, 0.4,  0.0, 1.0,  0.0),
    "ring":     (1.0, 1.0,  0.1, 1.0,  1.0, 0.0,  0.0,  0.0, 0.1,  0.2,  0.0, 0.0,  0.0, 1.0,  0.0),
    "band":     (6.0, 0.06, 1.0, 0.5,  0.0, 0.0,  0.0,  1.0, 0.3,  0.12, 0.0, 0.0,  1.0, 0.9,  0.0),
    "blob":     (1.2, 0.75, 1.0, 1.0,  0.0, 0.0,  0.14, 0.0, 0.8,  1.0,  0.0, 0.2,  0.2, 0.9,  0.0),
    "line":     (1.3, 0.025, 1.0, 1.0, 0.0, 0.0,  0.0,  0.0, 0.0,  1.0,  0.0, 0.0,  0.0, 1.0,  0.0),
    "petal":    (1.0, 1.0,  0.1, 1.0,  0.0, 0.35, 0.0,  0.0, 0.1,  0.5,  0.0, 0.15, 0.1, 1.0,  0.0),
    "tower":    (0.3, 3.0,  1.0, 0.04, 0.0, 0.0,  0.0,  0.0, 0.0,  0.0,  0.0, 1.0,  0.0, 1.0,  1.0),
    "triangle": (1.1, 0.7,  1.0, 0.02, 0.0, 0.0,  0.0,  0.0, 0.05, 0.35, 1.0, 1.0,  0.0, 1.0,  0.0),
    "tree":     (0.35, 2.2, 0.6, 0.05, 0.0, 0.0,  0.0,  0.0, 0.05, 0.0,  1.0, 1.0,  0.0, 1.0,  0.0),
}
# Optional parts of the shape, skipped in a slot where no image of the batch uses them.
_OPTIONAL = ("wave", "taper", "petal", "lobes", "ring", "windows")
# What the drawing loop reads per slot (all [B, N], derived once for every slot together).
_DRAW_FIELDS = ("x", "y", "cos", "sin", "inner_w", "inner_h", "radius", "wave", "taper",
                "top_scale", "petal", "lobes", "ring", "thickness", "sharpness", "opacity",
                "shade", "windows")
# Palette: accents fan out from the anchor hues with these offsets (times the spread),
# and sit above or below the base brightness by these amounts (times the contrast).
_HUE_OFFSETS = (0.0, 1.0, -1.0, 0.5, -0.5)
_VALUE_OFFSETS = (0.7, -0.6, 0.3, -1.0, 1.1)
_SAT_FACTORS = (1.0, 0.9, 1.0, 0.8, 0.6)
_KIND_TEMPERATURE = 0.2      # softmax temperature of the per-slot kind choice
_NEGLIGIBLE = 1e-4           # an optional part this weak moves edges by < 1/1000 pixel
_WAVE_AMPLITUDE = 0.025      # of wavy bands, in image widths
_N_STARS = 140
_FIXED_SEED = 1234           # grain, stars: part of the look, the same for every image


class EmbeddedGenerator(Generator):
    name = "embedded"

    def __init__(self, resolution: int = 256, text_encoder: TextEncoder | None = None,
                 device: torch.device | str = "cpu"):
        if not 64 <= int(resolution) <= 2048:
            raise InvalidInput(f"resolution {resolution} is outside [64, 2048] pixels")
        self.resolution = res = int(resolution)
        self.device = dev = torch.device(device)
        self.styler = PromptStyler(text_encoder)
        coords = (torch.arange(res, dtype=torch.float32) + 0.5) / res
        self._x, self._y = coords.view(1, 1, res).to(dev), coords.view(1, res, 1).to(dev)
        self._style_noise = torch.tensor([_STYLE_NOISE[n] for n in STYLE_NAMES], device=dev)
        self._templates = torch.tensor([_TEMPLATES[k] for k in KINDS], device=dev)
        self._slot = torch.arange(N_SHAPES, dtype=torch.float32, device=dev)
        self._hero = (self._slot == 0).float()   # slot 0: the large focal shape at the back
        rng = torch.Generator().manual_seed(_FIXED_SEED)
        self._grain = _film_grain(res, rng).to(dev)
        star_light, star_rank = _star_map(coords, rng)
        self._star_light, self._star_rank = star_light.to(dev), star_rank.to(dev)
        self._halftone = _cell_pattern(coords, cells=36, fill=(0.28, 0.28), round_cells=True).to(dev)
        self._window_grid = _cell_pattern(coords, cells=40, fill=(0.2, 0.3), round_cells=False).to(dev)
        self._corner_distance = ((coords.view(1, -1) - 0.5) ** 2 + (coords.view(-1, 1) - 0.5) ** 2).to(dev)

    def params(self) -> dict:
        return {**super().params(), "version": VERSION, "noise_dim": NOISE_DIM,
                "lexicon": self.styler.lexicon.version, "prompt_vector": self.styler.vector_name}

    def encode_prompt(self, prompt: str) -> PromptStyle:
        return self.styler(prompt)

    def prompt_notes(self, prompt: str) -> list[str]:
        return [] if self.styler.text_encoder is None else self.styler.text_encoder.prompt_notes(prompt)

    def conditioning_tokens(self, conditioning: PromptStyle) -> torch.Tensor:
        return conditioning.mean.reshape(-1, len(STYLE_NAMES))[:1]   # [1, S]: the prompt's own style

    def modulate(self, conditioning: PromptStyle, offsets: torch.Tensor) -> PromptStyle:
        """Shifts the style the seeds vary around, per image (`mean` becomes [B, S]); the
        palette anchors stay the prompt's, and hue_shift, one style entry, rotates them."""
        if offsets.dim() != 3 or offsets.shape[1:] != (1, len(STYLE_NAMES)):
            raise InvalidInput(f"embedded generator offsets must be [batch, 1, {len(STYLE_NAMES)}], "
                               f"got {list(offsets.shape)}")
        base = self.conditioning_tokens(conditioning).to(offsets.device)
        return replace(conditioning, mean=base + offsets[:, 0])

    @torch.no_grad()
    def generate(self, prompt: str, seeds: list[int]) -> list[GeneratedImage]:
        """One render per seed: which shapes are drawn where is decided per batch (see
        `_draw_shapes`), so drawing each seed alone makes its pixels exactly the same
        whatever other seeds it was asked with. It costs no more than one batch."""
        prompt = validate_prompt(prompt)
        seeds = [validate_seed(s) for s in seeds]
        style = self.encode_prompt(prompt)
        return [GeneratedImage(to_pil(self.render(self.initial_noise(seed), style))[0], prompt, seed,
                               self.name, self.params()) for seed in seeds]

    def initial_noise(self, seed: int, batch: int = 1) -> torch.Tensor:
        rng = torch.Generator().manual_seed(int(seed))
        return torch.randn(batch, NOISE_DIM, generator=rng).to(self.device)

    def render(self, noise: torch.Tensor, conditioning: PromptStyle) -> torch.Tensor:
        if noise.dim() != 2 or noise.shape[1] != NOISE_DIM:
            raise InvalidInput(f"embedded generator noise must be [batch, {NOISE_DIM}], "
                               f"got {list(noise.shape)}")
        if not isinstance(conditioning, PromptStyle):
            raise InvalidInput("render needs the conditioning from this generator's encode_prompt")
        scene = self._scene(noise.to(self.device, torch.float32), conditioning)
        image, ground = self._background(scene)
        image, coverage, towers = self._draw_shapes(image, ground, scene)
        return self._finish(image, coverage, towers, scene).clamp(0.0, 1.0)

    # -- noise + style -> scene ----------------------------------------------------------------

    def _scene(self, z: torch.Tensor, style: PromptStyle) -> dict:
        n_style, n_extra = len(STYLE_NAMES), len(_EXTRAS)
        # mean is [S], or [B, S] when a preference adapter modulated it per image.
        s = style.mean.to(self.device) + self._style_noise * z[:, :n_style]
        g = dict(zip(STYLE_NAMES, s.unbind(1)))                      # style entries, each [B]
        extra = dict(zip(_EXTRAS, z[:, n_style:n_style + n_extra].unbind(1)))
        jitter = z[:, n_style + n_extra:_N_GLOBAL].view(-1, 2, N_ACCENTS)   # hue, value
        zs = dict(zip(SHAPE_FIELDS, z[:, _N_GLOBAL:].view(z.shape[0], N_SHAPES, -1).unbind(2)))
        p = lambda name: torch.sigmoid(g[name])                    # noqa: E731  amount in [0,1]
        # Textures switch on steeply: absent or faint for most seeds, clear for some.
        steep = lambda name: torch.sigmoid(2.5 * (g[name] + 0.3))  # noqa: E731
        night = torch.sigmoid(-3.0 * g["val"] - 2.0)                # 1 in a dark scene

        scene = {"grain": 0.03 * steep("grain"), "stripes": 0.35 * steep("stripes"),
                 "dots": 0.6 * steep("dots"), "vignette": 0.8 * p("vignette"),
                 "glow": 0.6 * steep("glow"), "stars": p("stars") * night,
                 "stripe_angle": 0.5 * math.pi * torch.tanh(extra["stripe_angle"]),
                 "stripe_freq": 14.0 + 18.0 * p("density"),
                 "horizon": p("horizon"), "horizon_y": 0.3 + 0.55 * p("horizon_y"),
                 "horizon_tilt": 0.08 * torch.tanh(extra["horizon_tilt"]),
                 "horizon_phase": 2 * math.pi * torch.sigmoid(extra["horizon_phase"])}
        scene.update(self._palette(g, extra, jitter, style, night))

        layout = torch.softmax(torch.stack([g[f"layout_{l}"] for l in LAYOUTS], 1), 1)
        # The focal shape sinks behind the horizon as much as the layout is a horizon one.
        scene["sets"] = layout[:, LAYOUTS.index("horizon")]
        kind_logits = torch.stack([g[f"kind_{k}"] for k in KINDS], 1)
        scene["shapes"], scene["shape_colour"], scene["focus"] = self._shapes(
            zs, layout, kind_logits, p, scene, extra)
        return scene

    def _palette(self, g: dict, extra: dict, jitter: torch.Tensor, style: PromptStyle,
                 night: torch.Tensor) -> dict:
        """Five accents fanned out from the prompt's anchor hues, plus sky, ground and light colours."""
        anchors = style.hues.to(self.device)
        count = len(anchors)
        shift = g["hue_shift"][:, None]
        spread = style.hue_spread * 0.4 * torch.sigmoid(extra["hue_spread"])[:, None]
        value, contrast = g["val"][:, None], torch.sigmoid(g["contrast"])[:, None]
        # HSV saturation around 0.5 already looks dusty: lift the middle, keep greys grey.
        saturation = 1 - (1 - torch.sigmoid(g["sat"])[:, None]) ** 1.6
        gradient = torch.sigmoid(g["gradient"])[:, None]
        tensor = lambda values: torch.tensor(values, device=self.device)  # noqa: E731

        accent_hue = anchors[[k % count for k in range(N_ACCENTS)]] + shift \
            + spread * tensor(_HUE_OFFSETS) + 0.025 * jitter[:, 0]
        # Accents lean away from the base brightness, towards where there is room:
        # bright shapes on a dark ground, dark or bright ones on a light ground.
        room = -4.0 * (torch.sigmoid(value) - 0.5)
        accent_value = value + contrast * (3.5 * tensor(_VALUE_OFFSETS) + room) + 0.35 * jitter[:, 1]
        accent_sat = saturation * tensor(_SAT_FACTORS)

        # Like real skies: the coolest anchor hue at the top, the one furthest from it (warmer,
        # usually) down at the horizon: dusk over a city glows orange, a sunset pink over orange.
        turns_apart = lambda a, b: ((a - b + 0.5) % 1.0 - 0.5).abs()  # noqa: E731
        top = anchors[int(turns_apart(anchors, 0.62).argmin())]         # 0.62 turns: blue
        bottom = anchors[int(turns_apart(anchors, top).argmax())]
        ground_hue = anchors[1 % count] - 0.5 * spread
        ground_value = value - 0.2 - 1.2 * contrast
        scenery_hue = torch.cat([top + 0.5 * spread, bottom + 0 * spread,
                                 ground_hue, ground_hue, anchors[0] + 0 * spread], 1) + shift
        scenery_value = torch.cat([value - 0.8 * gradient, value + 0.3 + 0.8 * gradient,
                                   ground_value, ground_value - 0.7, value + 3.5], 1)
        scenery_sat = saturation * tensor((1.0, 0.9, 0.9, 1.0, 0.5))
        colours = _hsv(torch.cat([accent_hue, scenery_hue], 1), torch.cat([accent_sat, scenery_sat], 1),
                       torch.sigmoid(torch.cat([accent_value, scenery_value], 1)))
        accents, (sky_top, sky_bottom, ground_top, ground_bottom, light) = \
            colours[:, :N_ACCENTS], colours[:, N_ACCENTS:].unbind(1)
        # Windows: lit (the light colour) at night, dark panes by day.
        windows = night[:, None] * light + (1 - night[:, None]) * 0.5 * sky_top
        return {"accents": accents, "sky_top": sky_top, "sky_bottom": sky_bottom,
                "ground_top": ground_top, "ground_bottom": ground_bottom, "light": light,
                "window_colour": windows}

    def _shapes(self, zs: dict, layout: torch.Tensor, kind_logits: torch.Tensor, p, scene: dict,
                extra: dict):
        slot, hero = self._slot, self._hero
        # Kind per slot: a soft choice around the style's preferences (the hero keeps them best).
        kind_noise = torch.stack([zs[f"kind_{k}"] for k in KINDS], -1) * (1 - 0.6 * hero)[:, None]
        kinds = torch.softmax((kind_logits[:, None] + kind_noise) / _KIND_TEMPERATURE, -1)
        t = dict(zip(_TEMPLATE_FIELDS, (kinds @ self._templates).unbind(-1)))   # each [B, N]

        # Layout: a focus point, and where the other shapes go, blended over the four layouts
        # (centred, rule of thirds, scattered, along a horizon).
        horizon_y = scene["horizon_y"][:, None]
        fx, fy = torch.tanh(3 * extra["focus_x"])[:, None], torch.tanh(3 * extra["focus_y"])[:, None]
        # Focus offset from the centre per layout: none, a third point, anywhere, on the horizon.
        focus_x = 0.5 + (layout * torch.cat([0 * fx, fx / 6, 0.3 * fx, 0.3 * fx], 1)).sum(1, keepdim=True)
        focus_y = 0.5 + (layout * torch.cat([0 * fy, fy / 6, 0.3 * fy, horizon_y - 0.6], 1)).sum(1, keepdim=True)
        zx, zy = zs["x"], zs["y"]
        wide_x, wide_y = 0.5 + 0.46 * torch.tanh(0.8 * zx), 0.5 + 0.46 * torch.tanh(0.8 * zy)
        free_x = torch.stack([focus_x + 0.13 * zx, focus_x + 0.18 * zx, wide_x, wide_x], -1)
        free_y = torch.stack([focus_y + 0.13 * zy, focus_y + 0.18 * zy, wide_y,
                              horizon_y - 0.08 + 0.1 * zy], -1)
        free_x = (layout[:, None] * free_x).sum(-1)
        free_y = (layout[:, None] * free_y).sum(-1)
        x = hero * (focus_x + 0.03 * zx) + (1 - hero) * free_x
        free_y = hero * (focus_y + 0.03 * zy) + (1 - hero) * free_y

        # Density: how many slots are in use. Slots beyond the count shrink and fade out
        # (shrinking, not just fading, so that half-present shapes are small, not ghostly).
        count = 1.5 + (N_SHAPES - 1.5) * p("density")[:, None]
        presence = torch.sigmoid(4.0 * (count - slot - 0.5))
        size = (0.08 + 0.2 * p("size")[:, None]) * (4.0 / (count + 2.0)).sqrt() \
            * (1.0 - 0.5 * slot / (N_SHAPES - 1)) * (1 + 0.4 * hero) * torch.exp(0.3 * zs["size"]) \
            * (0.4 + 0.6 * torch.sigmoid(2.5 * (count - slot - 0.5)))
        stretch = torch.exp(0.3 * t["stretch"] * zs["aspect"])   # circles stay round
        half_w = size * t["width"] * stretch
        half_h = size * t["width"] * t["aspect"] / stretch

        # Grounded kinds (towers, trees, mountains) stand on the horizon; bands lie below it.
        horizon = scene["horizon"][:, None]
        ground, below = t["ground"] * horizon, t["below"] * horizon
        y = (1 - ground - below) * free_y + ground * (horizon_y - 0.92 * half_h) \
            + below * (horizon_y + (1 - horizon_y) * torch.sigmoid(zy))

        # Colour: a soft pick among the accents by a circular index.
        pick = 2.0 * slot + 1.2 * zs["colour"]
        offsets = pick[..., None] - torch.arange(N_ACCENTS, device=self.device)
        colour = torch.softmax(3.0 * torch.cos(2 * math.pi * offsets / N_ACCENTS), -1) @ scene["accents"]
        # Far grounded shapes fade into the sky (layered mountains and skylines), and the
        # focal shape glows when the scene does (a sun, a moon, a lantern).
        haze = (0.5 * ground * (1 - slot / (N_SHAPES - 1)))[..., None]
        colour = colour + haze * (scene["sky_bottom"][:, None] - colour)
        shine = (hero * scene["glow"][:, None] ** 2)[..., None]
        colour = colour + shine * (scene["light"][:, None] - colour)

        rotation = 0.5 * math.pi * p("rotation")[:, None] * t["rotate"] * torch.tanh(zs["rotation"])
        # Edge width of the coverage sigmoid (10% to 90% over 4.4 edges): a third of a pixel
        # is a crisp antialiased edge; softness widens it in proportion to the size.
        edge = 0.35 / self.resolution + size * p("softness")[:, None] * (0.004 + 0.03 * t["soft"]) \
            * torch.exp(0.5 * zs["softness"])
        opacity = t["opacity"] * (0.8 + 0.2 * torch.sigmoid(1.5 + zs["opacity"])) * presence
        shapes = {"x": x, "y": y, "half_w": half_w, "half_h": half_h, "cos": torch.cos(rotation),
                  "sin": torch.sin(rotation), "edge": edge, "opacity": opacity, "round": t["round"]}
        shapes.update({k: t[k] for k in _OPTIONAL})
        return shapes, colour, (focus_x[:, 0], focus_y[:, 0])

    # -- drawing ---------------------------------------------------------------------------------

    def _background(self, scene: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Sky gradient with glow and stars, ground below a wavy horizon; also the ground mask."""
        x, y = self._x, self._y
        col = lambda c: c[:, :, None, None]  # noqa: E731  [B,3] -> [B,3,1,1]
        b = lambda v: v[:, None, None]       # noqa: E731  [B] -> [B,1,1]
        sky = col(scene["sky_top"]) + (col(scene["sky_bottom"]) - col(scene["sky_top"])) * y[:, None]
        # Light around the focus (separable Gaussian) and stars share the light colour.
        fx, fy = scene["focus"]
        glow = b(scene["glow"]) * torch.exp(-(x - b(fx)) ** 2 / 0.035) * torch.exp(-(y - b(fy)) ** 2 / 0.035)
        stars = self._star_light * torch.sigmoid(12.0 * (b(scene["stars"]) - self._star_rank)) \
            * torch.tanh(5.0 * b(scene["stars"]))
        light = (glow + stars - glow * stars)[:, None]
        sky = sky + light * (col(scene["light"]) - sky)
        line = b(scene["horizon_y"]) + b(scene["horizon_tilt"]) * (x - 0.5) \
            + 0.012 * torch.sin(2 * math.pi * 1.3 * x + b(scene["horizon_phase"]))
        ground_mask = b(scene["horizon"]) * torch.sigmoid((y - line) * (self.resolution / 1.5))
        depth = ((y - b(scene["horizon_y"])) / (1.0 - b(scene["horizon_y"]))).clamp(0, 1)[:, None]
        ground = col(scene["ground_top"]) + (col(scene["ground_bottom"]) - col(scene["ground_top"])) * depth
        return sky + ground_mask[:, None] * (ground - sky), ground_mask

    def _draw_shapes(self, image: torch.Tensor, ground_mask: torch.Tensor, scene: dict):
        """Composites the shape slots back to front; returns the image, the shapes' coverage
        and where towers (which get windows) are visible, each [B,(3,)H,W].

        Two economies keep a forward+backward at 256² fast (bench/generator_speed.py times it):
        - each shape is drawn only inside its bounding box (union over the batch), widened
          until its edge sigmoid is below 1e-4: outside it the shape changes nothing;
        - an optional part (wave, taper, petals, lobes, ring, windows) whose weight is below
          _NEGLIGIBLE in a slot for every image of the batch is skipped there.
        """
        sh = scene["shapes"]
        uses = {k: (sh[k] > _NEGLIGIBLE).any(0).tolist() for k in _OPTIONAL}
        boxes = self._bounding_boxes(sh)
        radius = sh["round"] * torch.minimum(sh["half_w"], sh["half_h"])
        draw = torch.stack([
            sh["x"], sh["y"], sh["cos"], sh["sin"], sh["half_w"] - radius, sh["half_h"] - radius,
            radius, _WAVE_AMPLITUDE * sh["wave"], 0.97 * sh["taper"], 0.5 / sh["half_h"],
            sh["petal"] * radius, sh["lobes"] * radius, sh["ring"], 0.22 * radius + 0.004,
            -1 / sh["edge"], sh["opacity"], 0.12 / (sh["half_w"] + sh["half_h"]), sh["windows"],
        ], -1)                                                               # [B, N, fields]
        # One canvas for all a shape updates: RGB, the share still uncovered, tower coverage.
        canvas = torch.cat([image, torch.ones_like(image[:, :1]), torch.zeros_like(image[:, :1])], 1)
        for i, (x0, x1, y0, y1) in enumerate(boxes):
            if x0 >= x1 or y0 >= y1:
                continue   # entirely off the canvas
            v = dict(zip(_DRAW_FIELDS, draw[:, i, :, None, None].unbind(1)))   # each [B,1,1]
            used = {k: flags[i] for k, flags in uses.items()}
            alpha, shade = _shape_coverage(v, i, used, self._x[..., x0:x1], self._y[:, y0:y1])
            if i == 0:
                alpha = alpha * (1 - scene["sets"][:, None, None] * ground_mask[:, y0:y1, x0:x1])
            patch = canvas[:, :, y0:y1, x0:x1]
            keep = (1 - alpha)[:, None]
            rgb = patch[:, :3] * keep + (alpha * shade)[:, None] * scene["shape_colour"][:, i, :, None, None]
            towers = patch[:, 4:] * keep
            if used["windows"]:
                towers = towers + (alpha * v["windows"])[:, None]
            patch = torch.cat([rgb, patch[:, 3:4] * keep, towers], 1)
            # Out of place, as autograd needs; only the rows of the box are copied twice.
            rows = canvas[:, :, y0:y1].slice_scatter(patch, dim=3, start=x0, end=x1)
            canvas = canvas.slice_scatter(rows, dim=2, start=y0, end=y1)
        return canvas[:, :3], 1 - canvas[:, 3], canvas[:, 4]

    @torch.no_grad()
    def _bounding_boxes(self, sh: dict) -> list[tuple[int, int, int, int]]:
        """Pixel box (x0, x1, y0, y1) per slot that holds every pixel the shape can touch."""
        bumps = torch.minimum(sh["half_w"], sh["half_h"]) * (sh["petal"] + sh["lobes"])
        half_w = sh["half_w"] + bumps
        half_h = sh["half_h"] + bumps + _WAVE_AMPLITUDE * sh["wave"]
        margin = 10 * sh["edge"] + 1.5 / self.resolution   # sigmoid(-10) < 1e-4
        reach_x = (half_w * sh["cos"]).abs() + (half_h * sh["sin"]).abs() + margin
        reach_y = (half_w * sh["sin"]).abs() + (half_h * sh["cos"]).abs() + margin
        res = self.resolution
        box = lambda lo, hi: (  # noqa: E731  union over the batch, clipped to the canvas
            (lo * res).floor().min(0).values.clamp(0, res).int().tolist(),
            (hi * res).ceil().max(0).values.clamp(0, res).int().tolist())
        x0, x1 = box(sh["x"] - reach_x, sh["x"] + reach_x)
        y0, y1 = box(sh["y"] - reach_y, sh["y"] + reach_y)
        return list(zip(x0, x1, y0, y1))

    def _finish(self, image: torch.Tensor, coverage: torch.Tensor, towers: torch.Tensor,
                scene: dict) -> torch.Tensor:
        """Stripes on the shapes, windows on towers, halftone dots on the background, grain, vignette."""
        x, y = self._x, self._y
        b = lambda v: v[:, None, None]  # noqa: E731
        angle, freq = b(scene["stripe_angle"]), b(scene["stripe_freq"])
        phase = (2 * math.pi * freq * torch.cos(angle)) * x + (2 * math.pi * freq * torch.sin(angle)) * y
        stripes = b(scene["stripes"]) * (0.5 + 0.5 * torch.sin(phase)) * coverage
        image = image * (1 - stripes[:, None])
        lit = (0.75 * towers * self._window_grid)[:, None]
        image = image + lit * (scene["window_colour"][:, :, None, None] - image)
        dots = (b(scene["dots"]) * self._halftone * (1 - coverage))[:, None]
        image = image + dots * (scene["accents"][:, 3, :, None, None] - image)
        image = image + scene["grain"][:, None, None, None] * self._grain
        return image * (1 - b(scene["vignette"]) * self._corner_distance)[:, None]


def _shape_coverage(v: dict, i: int, used: dict, x: torch.Tensor, y: torch.Tensor):
    """Coverage [B,h,w] of shape slot i at pixel centres x [1,1,w], y [1,h,1], and its shading."""
    dx, dy = x - v["x"], y - v["y"]
    u = dx * v["cos"] + dy * v["sin"]          # along the shape
    w = dy * v["cos"] - dx * v["sin"]          # across it (down = +)
    if used["wave"]:    # along the image's x axis: the waves of a tilted band stay level
        w = w - v["wave"] * torch.sin(2 * math.pi * 2.5 * dx + 1.7 * i)
    if used["taper"]:   # narrows the top towards an apex: triangles, mountains, conifers
        u = u / (1 - v["taper"] * (0.5 - w * v["top_scale"]).clamp(0, 1))
    # Rounded box, exact signed distance (negative inside). hypot(0, 0) has a NaN gradient, which
    # passes clamp(min=0) at exactly 0: guidance does reach a pixel centre exactly on a box's
    # edge, and one NaN spoils the noise for good. A floor of 1e-12 (far below a pixel) keeps
    # the gradient finite without changing the image.
    qu, qw = u.abs() - v["inner_w"], w.abs() - v["inner_h"]
    dist = torch.hypot(qu.clamp(min=0), qw.clamp(min=1e-12)) + torch.maximum(qu, qw).clamp(max=0) - v["radius"]
    if used["petal"] or used["lobes"]:   # 5-7 petals, or a blob's 3 soft lobes
        angle = torch.atan2(w, u)
        bumps = v["petal"] * torch.cos((5 + i % 3) * angle) if used["petal"] else 0.0
        if used["lobes"]:
            bumps = bumps + v["lobes"] * torch.cos(3 * angle + 2.1 * i)
        dist = dist - bumps
    if used["ring"]:    # hollow: distance to the outline, thickened
        dist = dist + v["ring"] * ((dist + v["thickness"]).abs() - v["thickness"] - dist)
    alpha = torch.sigmoid(dist * v["sharpness"]) * v["opacity"]
    # Light from the upper left: a gentle shading that makes shapes read as objects.
    shade = 1.0 - (u + w) * v["shade"]
    return alpha, shade


def _hsv(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB [..., 3]; hue in turns (any real number); continuous everywhere."""
    # Dark yellows read as olive mud; like painters, shift them towards amber as they darken.
    from_yellow = (hue - 1 / 6 + 0.5) % 1.0 - 0.5
    hue = hue - 0.07 * (1 - value) * torch.exp(-(from_yellow / 0.07) ** 2)
    k = (torch.tensor([5.0, 3.0, 1.0], device=hue.device) + 6.0 * hue[..., None]) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value[..., None] * (1.0 - saturation[..., None] * ramp)


def _cell_pattern(coords: torch.Tensor, cells: int, fill: tuple[float, float], round_cells: bool):
    """A fixed, antialiased grid [H, W] in [0, 1] of round dots or rectangular windows."""
    # |frac(t) - 1/2| is a triangle wave: 0 at cell centres, 1/2 at the borders.
    tri = ((coords * cells) % 1.0 - 0.5).abs()
    sharpness = len(coords) / cells * 2.5   # edges of about 0.4 px
    tx, ty = tri.view(1, -1), tri.view(-1, 1)
    if round_cells:
        return torch.sigmoid((fill[0] - (tx**2 + ty**2).sqrt()) * sharpness)
    return torch.sigmoid((fill[0] - tx) * sharpness) * torch.sigmoid((fill[1] - ty) * sharpness)


def _film_grain(resolution: int, rng: torch.Generator) -> torch.Tensor:
    """Fixed unit-variance grain [1,1,H,W], slightly blurred: film rather than pixel noise."""
    noise = torch.randn(1, 1, resolution, resolution, generator=rng)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    grain = F.conv2d(F.pad(noise, (1, 1, 1, 1), mode="circular"), (kernel[:, None] * kernel).view(1, 1, 3, 3))
    return grain / grain.std()


def _star_map(coords: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed stars: light [H,W] in [0,1], and each pixel's star rank in [0,1] (low = shown first)."""
    resolution = len(coords)
    position = torch.rand(_N_STARS, 2, generator=rng)
    radius = (0.6 + 1.2 * torch.rand(_N_STARS, generator=rng) ** 3) / resolution
    rank = torch.rand(_N_STARS, generator=rng)
    light = torch.zeros(resolution, resolution)
    rank_map = torch.ones(resolution, resolution)
    for (sx, sy), r, rk in zip(position, radius, rank):
        footprint = torch.exp(-((coords[None] - sx) ** 2 + (coords[:, None] - sy) ** 2) / (2 * r * r))
        brighter = footprint > light
        light = torch.where(brighter, footprint, light)
        rank_map = torch.where(brighter & (footprint > 0.01), rk, rank_map)
    return light, rank_map
