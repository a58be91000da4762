"""Convert the released Pick-a-Pic-derived data of 000/001 into the pair data set layout.

    python -m prefstudio_research.preference.pickapic_convert --train train.pkl --val val.pkl \
        --test test.pkl --out data/pickapic

The release ships pickles, and loading a pickle can run any code its author chose. They are
read here with `PlainDataUnpickler`, which builds nothing but plain containers, strings,
bytes and numbers: a pickle that names any other class or function is refused, with the
name it asked for, before anything of it is built. Records have the fields user_id,
reference_list (liked images), reference_list_bad (disliked images), reference_prompt_list,
image0, image1, prompt and label0 (1: image0 preferred, 0: image1, 0.5: tie, skipped);
the top level may be a list of records or a dict of equal-length columns. Images are
encoded bytes (or {"bytes": …} as Hugging Face datasets store them); they are decoded with
the store's bounded reader, scaled to at most --max-side pixels (the paper trains at 512)
and written once each as PNG, named by content.

Output (bench/README.md): images.jsonl, images/, pairs/{train, val_references, val_1v1,
test_references, test_1v1}.jsonl and pairs/users.json, where test users that also have
training records are "seen" (000 §4.1). A user's history is the reference list of their
first record; targets that share an image with it are dropped and counted.
"""
import argparse
import hashlib
import io
import json
import os
import pickle
import pickletools
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from PIL import Image

from prefstudio.errors import InvalidInput, echo
from prefstudio.preference.pair_data import MAX_USER_ID_CHARS
from prefstudio.store.image_files import load_untrusted_image, open_regular_file, store_png_bytes
from prefstudio.validation import MAX_PROMPT_CHARS, strip_hidden_characters

FIELDS = ("user_id", "reference_list", "reference_list_bad", "reference_prompt_list",
          "image0", "image1", "prompt", "label0")
# The release's largest split is tens of GB of images; a file past this is not that data.
MAX_PICKLE_BYTES = 256 * 2**30


class UnsafePickle(InvalidInput):
    """The pickle asks for something other than plain data."""


def _latin1_bytes(text, encoding):
    # Protocol-2 pickles write bytes as _codecs.encode(str, "latin1"); nothing else is allowed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickle("the pickle calls _codecs.encode with something other than latin-1 text")
    return text.encode("latin-1")


def _plain(kind):
    def build(values=()):
        if not isinstance(values, (list, tuple, set, frozenset, bytes, str)):
            raise UnsafePickle(f"the pickle builds a {kind.__name__} from {type(values).__name__}")
        return kind(values) if not isinstance(values, str) else kind(values, "latin-1")
    return build


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: list, dict, tuple, set, frozenset, str, bytes, bytearray,
    int, float, bool, None. Every global a pickle names goes through `find_class`, and only
    the few that protocols 2–4 need for those types are answered, with guarded stand-ins."""

    _ALLOWED = {
        ("builtins", "set"): _plain(set),
        ("builtins", "frozenset"): _plain(frozenset),
        ("builtins", "bytearray"): _plain(bytearray),
        ("_codecs", "encode"): _latin1_bytes,
    }
    # Protocols below 3 name the builtins module by its Python 2 name.
    _ALLOWED.update({("__builtin__", name): build for (module, name), build in list(_ALLOWED.items())
                     if module == "builtins"})

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(
                f"refused: the pickle needs {_echo(module)}.{_echo(name)}, and PrefStudio only reads pickles of plain "
                f"data (lists, dicts, strings, bytes, numbers); loading it could run code. If you trust "
                f"its source, convert it to plain data there (images as encoded bytes)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickle("refused: the pickle refers to external (persistent) objects")


def _echo(name: str) -> str:
    """A global's name as is when it looks like one, else shortened and quoted."""
    return name if len(name) <= 80 and name.isprintable() else echo(name, 60)


# Tuples and frozensets nested deeper than this are refused before unpickling: hashing one
# (as a dict key or set member) recurses in C with no depth guard, and Python crashes.
MAX_HASHABLE_NESTING = 100


# Opcodes the nesting check treats specially, by name; any other opcode is applied by its
# documented stack effect with plain values (its pushes nest nothing).
_PUSH_CONTAINER = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"}
_ADD_ONE = {"APPEND": 1, "SETITEM": 2}
_ADD_MANY = {"APPENDS", "SETITEMS", "ADDITEMS"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _check_nesting(file) -> None:
    """Walk the opcodes (pickletools, nothing built) tracking how deeply every tuple and
    frozenset nests; lists, dicts and sets cannot be hashed, so they stop the recursion.

    Each stack value is a list [depth, members, reach]: how deep hashing it recurses, the
    most any member would make a set built from it recurse, and for a tuple the same for
    its members (a call's argument tuple: set(list), frozenset(list))."""
    stack: list[list[int]] = []
    marks: list[int] = []
    memo: dict = {}
    limit = MAX_HASHABLE_NESTING

    def pop_to_mark() -> list[list[int]]:
        start = marks.pop() if marks else 0
        items = stack[start:]
        del stack[start:]
        return items

    def hashable(items) -> list[int]:
        members = max((i[0] for i in items), default=0)
        if members >= limit:
            raise UnsafePickle(f"refused: the pickle nests tuples or sets more than {limit} deep")
        return [1 + members, members, max((i[1] for i in items), default=0)]

    for opcode, arg, _ in pickletools.genops(file):
        name = opcode.name
        if name in _ADD_ONE:
            for _ in range(_ADD_ONE[name]):
                item = stack.pop()
                if stack and item[0] > stack[-1][1]:
                    stack[-1][1] = item[0]
        elif name in _PUSH_CONTAINER:
            stack.append([0, 0, 0])
        elif name in _PUT:
            if stack:
                memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            if stack:
                memo[len(memo)] = stack[-1]
        elif name in _GET:
            stack.append(memo.get(arg, [0, 0, 0]))
        elif name == "MARK":
            marks.append(len(stack))
        elif name in _TUPLE_N:
            count = _TUPLE_N[name]
            items = stack[-count:]
            del stack[-count:]
            stack.append(hashable(items))
        elif name in ("TUPLE", "FROZENSET"):
            stack.append(hashable(pop_to_mark()))
        elif name == "EMPTY_TUPLE":
            stack.append([1, 0, 0])
        elif name in _ADD_MANY:
            items = pop_to_mark()
            if stack:
                stack[-1][1] = max([stack[-1][1]] + [i[0] for i in items])
        elif name in ("LIST", "DICT"):
            stack.append([0, max((i[0] for i in pop_to_mark()), default=0), 0])
        elif name == "REDUCE":  # set/frozenset/bytearray of the argument tuple's first member
            arguments = stack.pop()
            if stack:
                stack.pop()
            stack.append(hashable([[arguments[2], 0]]))
        elif name == "DUP":
            stack.append(stack[-1])
        else:
            before = opcode.stack_before
            if pickletools.markobject in before:
                pop_to_mark()
                before = before[:before.index(pickletools.markobject)]
            if before:
                del stack[-len(before):]
            stack.extend([0, 0, 0] for _ in opcode.stack_after)


def load_plain_pickle(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES):
    path = Path(path)
    try:
        file = open_regular_file(path)
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise InvalidInput(f"{path} is {size / 2**30:.1f} GiB; the limit is {max_bytes / 2**30:.0f} GiB")
        try:
            _check_nesting(file)
            file.seek(0)
            return PlainDataUnpickler(file).load()
        except UnsafePickle as err:
            raise UnsafePickle(f"{path}: {err}") from None
        # A malformed pickle can raise nearly anything from the unpickler's C code: BUILD on an
        # allowed set (AttributeError), a bad memo index, a truncated frame, a stack underflow.
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
                IndexError, RecursionError, MemoryError, OverflowError) as err:
            raise InvalidInput(f"{path} is not a readable pickle of plain data: "
                               f"{echo(str(err) or type(err).__name__, 120)}") from None


def records_of(data, source: str) -> list[dict]:
    """A list of records, from a list of dicts or a dict of equal-length columns."""
    if isinstance(data, dict) and set(FIELDS) <= set(data):
        lengths = {len(data[f]) for f in FIELDS if isinstance(data[f], (list, tuple))}
        if len(lengths) != 1 or not all(isinstance(data[f], (list, tuple)) for f in FIELDS):
            raise InvalidInput(f"{source}: columns must be lists of one length")
        data = [{f: data[f][i] for f in FIELDS} for i in range(lengths.pop())]
    if not isinstance(data, (list, tuple)) or not all(isinstance(r, dict) for r in data):
        raise InvalidInput(f"{source}: expected a list of records or a dict of columns with fields {', '.join(FIELDS)}")
    for i, record in enumerate(data):
        missing = set(FIELDS) - set(record)
        if missing:
            raise InvalidInput(f"{source}: record {i} lacks {', '.join(sorted(missing))}")
    return list(data)


class ImageWriter:
    """Decodes image values and writes each distinct image once as a PNG under root/images/."""

    def __init__(self, root: Path, max_side: int):
        self.root, self.max_side = root, max_side
        self.paths: dict[str, str] = {}  # sha256 -> path relative to root, in first-seen order
        self.written: dict[bytes, str] = {}  # SHA-256 of the encoded input -> its path

    def write(self, value, where: str) -> str:
        if isinstance(value, dict) and isinstance(value.get("bytes"), (bytes, bytearray)):
            value = value["bytes"]
        if isinstance(value, str):
            raise InvalidInput(f"{where}: the image is a path or URL ({echo(value, 80)}), not image bytes; "
                               f"fetch the images into the pickle's records first (PrefStudio does not download)")
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidInput(f"{where}: expected encoded image bytes, got {type(value).__name__}")
        # Each distinct encoded image is decoded once: records repeat their reference images,
        # and decoding a 40 MP image takes a noticeable part of a second.
        key = hashlib.sha256(value).digest()
        if key not in self.written:
            self.written[key] = self._write(bytes(value), where)
        return self.written[key]

    def _write(self, value: bytes, where: str) -> str:
        try:
            image = load_untrusted_image(value)
        except InvalidInput as err:
            raise InvalidInput(f"{where}: {err}") from None
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        sha256, path = store_png_bytes(buffer.getvalue(), self.root / "images")
        relative = path.relative_to(self.root).as_posix()
        self.paths.setdefault(sha256, relative)
        return relative


def _user_id(value, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_USER_ID_CHARS:
        return value
    raise InvalidInput(f"{where}: user_id must be text or a whole number, got {type(value).__name__}"
                       + (f" {echo(value)}" if isinstance(value, (str, int)) else ""))


def _prompt(value, where: str) -> str:
    if isinstance(value, str):  # real prompts hold control characters validate_prompt refuses
        value = strip_hidden_characters(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: the prompt must be non-empty text")
    return value.strip()[:MAX_PROMPT_CHARS]


def _judgment(user, prompt, liked, disliked):
    return {"user_id": user, "prompt": prompt, "liked": f"../{liked}", "disliked": f"../{disliked}"}


def convert_split(records: list[dict], writer: ImageWriter, source: str, counts: Counter):
    """-> (each user's first reference list, every reference judgment, target judgments)."""
    references, all_references, targets = {}, [], []
    for i, record in enumerate(records):
        where = f"{source} record {i}"
        user = _user_id(record["user_id"], where)
        liked, disliked, ref_prompts = (record[k] for k in ("reference_list", "reference_list_bad",
                                                             "reference_prompt_list"))
        if not all(isinstance(x, (list, tuple)) for x in (liked, disliked, ref_prompts)) or \
                not len(liked) == len(disliked) == len(ref_prompts):
            raise InvalidInput(f"{where}: reference_list, reference_list_bad and reference_prompt_list "
                               f"must be lists of one length")
        history = [_judgment(user, _prompt(p, where), writer.write(a, where), writer.write(b, where))
                   for a, b, p in zip(liked, disliked, ref_prompts)]
        all_references += history
        if user not in references:
            references[user] = history
        elif history != references[user]:
            counts[f"{source}: records whose references differ from the user's first record"] += 1
        label = record["label0"]
        if not isinstance(label, (int, float)) or label not in (0, 0.5, 1):
            raise InvalidInput(f"{where}: label0 must be 1, 0 or 0.5, got {echo(label)}")
        if label == 0.5:
            counts["ties skipped"] += 1
            continue
        first, second = writer.write(record["image0"], where), writer.write(record["image1"], where)
        if first == second:
            counts["targets with two identical images skipped"] += 1
            continue
        winner, loser = (first, second) if label == 1 else (second, first)
        targets.append(_judgment(user, _prompt(record["prompt"], where), winner, loser))
    return references, all_references, targets


def _disjoint(targets, references, counts):
    kept = []
    for t in targets:
        shown = {p for r in references.get(t["user_id"], []) for p in (r["liked"], r["disliked"])}
        if {t["liked"], t["disliked"]} & shown:
            counts["targets sharing an image with the user's references dropped"] += 1
        else:
            kept.append(t)
    return kept


def convert(train: Path, val: Path, test: Path, out: Path, max_side: int = 512) -> Counter:
    """Write the data set to `out` (which must not exist yet, or be empty). It is built in a
    folder beside it and moved into place at the end: a refused input leaves nothing behind."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty folder; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        counts = _convert(train, val, test, building, max_side)
        if out.exists():
            out.rmdir()
        os.replace(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return counts


def _convert(train: Path, val: Path, test: Path, out: Path, max_side: int) -> Counter:
    (out / "pairs").mkdir(parents=True)
    writer = ImageWriter(out, max_side)
    counts = Counter()
    records = {name: records_of(load_plain_pickle(path), str(path))  # all read and checked before writing
               for name, path in (("train", train), ("val", val), ("test", test))}
    splits = {}
    for name, path in (("train", train), ("val", val), ("test", test)):
        counts[f"{name} records"] = len(records[name])
        splits[name] = convert_split(records[name], writer, str(path), counts)

    def write(name, rows):
        (out / "pairs" / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    train_users, train_references, train_targets = splits["train"]
    unique = {}
    for row in train_references + train_targets:  # the same pair recurs across a user's records
        unique.setdefault(json.dumps(row, sort_keys=True), row)
    write("train.jsonl", list(unique.values()))
    for name in ("val", "test"):
        references, _, targets = splits[name]
        write(f"{name}_references.jsonl", [r for refs in references.values() for r in refs])
        write(f"{name}_1v1.jsonl", _disjoint(targets, references, counts))
    test_users = splits["test"][0]
    users = {"train": sorted(train_users), "val": sorted(splits["val"][0]),
             "test_seen": sorted(u for u in test_users if u in train_users),
             "test_unseen": sorted(u for u in test_users if u not in train_users),
             "n_ref": min((len(r) for r in test_users.values()), default=0)}
    (out / "pairs" / "users.json").write_text(json.dumps(users) + "\n")
    (out / "images.jsonl").write_text("".join(json.dumps({"path": p}) + "\n" for p in writer.paths.values()))
    counts["images written"] = len(writer.paths)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefstudio_research.preference.pickapic_convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", required=True, type=Path, help=f"the {split} pickle of the release")
    parser.add_argument("--out", required=True, type=Path, help="data root to write")
    parser.add_argument("--max-side", type=int, default=512, help="longest image side in pixels (default 512)")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.train, args.val, args.test, args.out, args.max_side)
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in counts.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
