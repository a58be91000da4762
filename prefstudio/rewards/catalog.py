"""Which rewards besides the person's taste this machine can offer: found in one place.

    found = discover_rewards(data_dir, folders={"clip": "/models/clip-l14"}, device=generator.device)
    found.rewards   # {"clip": CLIPAlignmentReward, "aesthetic": AestheticReward, ...}: the ready ones
    found.states    # every catalogued reward, ready or missing with its size and how to get it

The catalog is data (`CATALOG`): each entry names the weights it reads, their size, and how
to build the reward from them. Weights come from a folder the person names
(`--reward NAME=FOLDER`), else from the local Hugging Face cache (`hub.resolve`; downloads
only with `--allow-downloads`). A reward whose weights are missing is listed as missing,
never fetched behind the person's back; a folder the person named that does not load is an
error, since they asked for it.

CLIP ViT-L/14 serves three purposes from one load: text alignment, the aesthetic head's
features and, for a real generator, prompt consistency (`CLIPPromptConsistencyReward`); it
can also be the preference model's image encoder (`image_encoder`).
"""
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefstudio.errors import InvalidInput, ModelUnavailable, NotFound, echo
from prefstudio.rewards.base import Reward

CLIP_WEIGHTS = "openai/clip-vit-large-patch14"
PICKSCORE_WEIGHTS = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
AESTHETIC_HEAD_FILE = "aesthetic_head.safetensors"
AESTHETIC_PTH = "sac+logos+ava1-l14-linearMSE.pth"
IMAGE_ENCODERS = ("embedded", "clip")


@dataclass
class RewardState:
    name: str
    ready: bool
    source: str  # the folder or file named with --reward, or the hub id found in the cache ("" when missing)
    detail: str  # ready: what it reads; missing: what is missing, its size and how to get it
    normalisation: str = ""  # where its offset and spread come from (ready rewards)


@dataclass
class FoundRewards:
    rewards: dict[str, Reward] = field(default_factory=dict)
    states: dict[str, RewardState] = field(default_factory=dict)
    clip: object | None = None  # the CLIPEncoder the CLIP rewards share, when present


class _Loader:
    """Encoders built once per discovery, so rewards on the same weights share one instance
    (and one forward per guidance iteration, `ImageEncoder.encode_shared`)."""

    def __init__(self, folders: dict[str, str], data_dir: Path, device):
        self.folders, self.data_dir, self.device = folders, data_dir, device
        self._encoders: dict[tuple[str, str], object] = {}

    def encoder(self, weights: str, processor: str | None = None):
        from prefstudio.encoders.clip import CLIPEncoder

        key = (weights, processor or weights)
        if key not in self._encoders:
            self._encoders[key] = CLIPEncoder(weights, processor_id=processor, device=self.device)
        return self._encoders[key]

    def clip_weights(self) -> str:
        return self.folders.get("clip", CLIP_WEIGHTS)

    def clip(self):
        return self.encoder(self.clip_weights())


def _clip_alignment(load: _Loader) -> tuple[Reward, str]:
    from prefstudio.rewards.clip_alignment import CLIPAlignmentReward

    return CLIPAlignmentReward(load.clip()), load.clip_weights()


def _aesthetic(load: _Loader) -> tuple[Reward, str]:
    from prefstudio.rewards.aesthetic import AestheticReward

    given = load.folders.get("aesthetic")
    head = Path(given).expanduser() if given else load.data_dir / "models" / AESTHETIC_HEAD_FILE
    if head.is_dir():
        head = head / AESTHETIC_HEAD_FILE
    if not head.is_file():
        if given:
            raise NotFound(f"--reward aesthetic: no aesthetic head at {echo(str(head))} (a .safetensors file, "
                           f"or a folder holding {AESTHETIC_HEAD_FILE})")
        raise ModelUnavailable(
            f"the LAION aesthetic head (3.7 MB) is not at {head}: download {AESTHETIC_PTH} from "
            "github.com/christophschuhmann/improved-aesthetic-predictor, then run "
            f"`python -m prefstudio.tools.convert_aesthetic_head {AESTHETIC_PTH} {head}`; "
            "it reads CLIP ViT-L/14 features, so CLIP must be here too.")
    return AestheticReward(head, load.clip()), f"{head} on {load.clip_weights()}"


def _pickscore(load: _Loader) -> tuple[Reward, str]:
    from prefstudio.rewards.pickscore import PickScoreReward

    folder = load.folders.get("pickscore")
    # A folder holds PickScore's weights and tokenizer; from the cache, the tokenizer is LAION's ViT-H one.
    encoder = load.encoder(folder) if folder else load.encoder(PICKSCORE_WEIGHTS, PICKSCORE_PROCESSOR)
    return PickScoreReward(encoder), folder or PICKSCORE_WEIGHTS


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # the slider's id, and NAME in --reward NAME=FOLDER and --weight NAME=VALUE
    reads: str  # what the folder given with --reward must hold
    build: Callable[[_Loader], tuple[Reward, str]]


CATALOG = (
    CatalogEntry("clip", f"a CLIP model folder like {CLIP_WEIGHTS} (about 1.7 GB)", _clip_alignment),
    CatalogEntry("aesthetic", f"the converted LAION head ({AESTHETIC_HEAD_FILE}, 3.7 MB) or a folder holding it; "
                              "its features come from the clip weights", _aesthetic),
    CatalogEntry("pickscore", f"a CLIP model folder like {PICKSCORE_WEIGHTS} with its tokenizer (about 3.9 GB)",
                 _pickscore),
)
CATALOG_NAMES = tuple(entry.name for entry in CATALOG)


def check_folders(folders: dict[str, str]) -> dict[str, str]:
    """--reward NAME=FOLDER pairs: known names, each an existing path."""
    for name, path in folders.items():
        if name not in CATALOG_NAMES:
            raise InvalidInput(f"--reward {echo(name)}: no such reward; folders can be given for "
                               f"{', '.join(CATALOG_NAMES)}")
        if not Path(path).expanduser().exists():
            raise NotFound(f"--reward {name}: {echo(path)} does not exist (it should hold "
                           f"{next(e.reads for e in CATALOG if e.name == name)})")
    return {name: str(Path(path).expanduser()) for name, path in folders.items()}


def discover_rewards(data_dir: str | Path, folders: dict[str, str] | None = None, device=None) -> FoundRewards:
    """Every catalogued reward whose weights are on this machine, built; the others described.

    Folders the person named must load (an error otherwise); weights looked for in the local
    cache that are not there make a "missing" state saying their size and the command that
    gets them."""
    folders = check_folders(dict(folders or {}))
    load = _Loader(folders, Path(data_dir), device)
    found = FoundRewards()
    for entry in CATALOG:
        try:
            reward, source = entry.build(load)
        except (ModelUnavailable, NotFound, InvalidInput) as missing:
            if entry.name in folders:
                raise
            found.states[entry.name] = RewardState(
                entry.name, False, "", f"{missing} Or name where it is: --reward {entry.name}=PATH, {entry.reads}.")
            continue
        found.rewards[entry.name] = reward
        found.states[entry.name] = RewardState(entry.name, True, source, f"reads {source}",
                                               reward.normalisation_source)
    if "clip" in found.rewards:
        found.clip = found.rewards["clip"].clip
    return found


def image_encoder(kind: str, folders: dict[str, str] | None = None, device=None):
    """The preference model's image encoder: 'embedded' (built in) or 'clip' (the clip reward's
    weights: a --reward clip folder or the cached CLIP ViT-L/14)."""
    if kind not in IMAGE_ENCODERS:
        raise InvalidInput(f"--image-encoder must be one of {', '.join(IMAGE_ENCODERS)}, got {echo(kind)}")
    if kind == "embedded":
        from prefstudio.encoders.embedded import EmbeddedImageEncoder

        return EmbeddedImageEncoder()
    folders = check_folders(dict(folders or {}))
    return _Loader(folders, Path("."), device).clip()
