"""The bounds on what a person types or uploads (prefstudio/validation.py): what passes, what is
refused, and the one line that says why — these messages are what the CLI and the UI show."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from prefstudio.errors import InvalidInput, echo
from prefstudio.store.profile_file import is_profile_file
from prefstudio.validation import (MAX_PROFILE_NAME_CHARS, MAX_PROMPT_CHARS, MAX_WEIGHT,
                                   profile_name_keys, size_over_limit, strip_hidden_characters,
                                   validate_device_name, validate_output_file,
                                   validate_output_folder, validate_profile_name, validate_prompt,
                                   validate_seed, validate_weights)


def refusal(function, *args) -> str:
    with pytest.raises(InvalidInput) as caught:
        function(*args)
    return str(caught.value)


def test_a_prompt_at_the_limit_passes_and_one_character_more_is_refused():
    assert validate_prompt("a" * MAX_PROMPT_CHARS) == "a" * MAX_PROMPT_CHARS
    # Surrounding blanks are not counted: they are stripped first.
    assert validate_prompt("  " + "a" * MAX_PROMPT_CHARS + "\n") == "a" * MAX_PROMPT_CHARS
    assert refusal(validate_prompt, "a" * (MAX_PROMPT_CHARS + 1)) == \
        "prompt is 1,001 characters; the limit is 1,000"


@pytest.mark.parametrize("prompt, message", [
    ("ab\x00c", "prompt has a control character at position 3 (U+0000); type plain text"),
    ("a\x1bb", "prompt has a control character at position 2 (U+001B); type plain text"),
    ("x\ud800", "prompt has an invalid character at position 2 (U+D800, a lone surrogate): "
                "it is not valid UTF-8 text"),
    ("abc\u202edef", "prompt has a text-direction override at position 4 (U+202E): "
                     "it would display differently from what is stored"),
    ("\u2066x", "prompt has a text-direction override at position 1 (U+2066): "
                "it would display differently from what is stored"),
    ("\u200b\u200b", "prompt has only invisible characters (zero-width or format characters): "
                     "type what the image should show"),
    (" \u200b \ufeff ", "prompt has only invisible characters (zero-width or format characters): "
                        "type what the image should show"),
    ("   ", "prompt is empty: type what the image should show"),
    ("", "prompt is empty: type what the image should show"),
    (42, "prompt must be text, got int"),
])
def test_a_prompt_with_hidden_or_no_characters_is_refused_saying_where(prompt, message):
    assert refusal(validate_prompt, prompt) == message


def test_tabs_newlines_and_invisible_characters_inside_text_are_kept():
    assert validate_prompt("a fox\tin\nsnow") == "a fox\tin\nsnow"
    assert validate_prompt("\u200bfox") == "\u200bfox"


def test_third_party_text_loses_only_what_a_prompt_may_not_hold():
    assert strip_hidden_characters("a\x00b\u202ec\ud800d\te\nf\x7f") == "a bcd\te\nf "
    cleaned = strip_hidden_characters("plain text, kept as it is 🦊")
    assert cleaned == "plain text, kept as it is 🦊" and validate_prompt(cleaned) == cleaned


def test_profile_names_are_bounded_and_plain():
    assert validate_profile_name("  ann_1 ") == "ann_1"
    assert validate_profile_name("Ann-Marie 2") == "Ann-Marie 2"
    longest = "n" * MAX_PROFILE_NAME_CHARS
    assert validate_profile_name(longest) == longest
    assert refusal(validate_profile_name, longest + "n") == "profile name is 65 characters; the limit is 64"
    assert refusal(validate_profile_name, "   ") == "profile name is empty"
    assert refusal(validate_profile_name, 5) == "profile name must be text, got int"
    assert refusal(validate_profile_name, "a/b.c!") == \
        "profile name 'a/b.c!' contains '!./'; use letters, digits, spaces, '-' or '_'"
    # Found by a review: "  spaced   name  " kept its three spaces, which the menu draws as one, so
    # `profile show "spaced name"` found nothing; a decomposed "mé" was refused for a bare accent;
    # "-" and "--yes" were names the command line reads as options.
    assert validate_profile_name("  spaced   name  ") == "spaced name"
    assert validate_profile_name("me\u0301") == "m\u00e9"
    for name in ("-", "--yes", "-ann"):
        assert refusal(validate_profile_name, name) == \
            f"profile name {name!r} starts with '-', which a command line reads as an option; start it otherwise"


def test_names_that_look_alike_in_a_menu_share_a_key_and_others_do_not():
    assert profile_name_keys("ME") == profile_name_keys("me") == {"me"}
    assert profile_name_keys("ｍｅ") == {"me"}  # fullwidth
    assert profile_name_keys("ﬁne") == {"fine"}  # ligature
    assert profile_name_keys("STRASSE") == profile_name_keys("straße")
    assert not profile_name_keys("ann_1") & profile_name_keys("ann21")
    assert profile_name_keys("ΑΒΓ") & profile_name_keys("αβγ")  # case, read after case folding
    assert profile_name_keys("ΡΟΡΕ") & profile_name_keys("pope")  # look-alikes, read before it


def test_reward_weights_in_range_pass_as_floats():
    known = {"taste", "prompt", "aesthetic"}
    assert validate_weights({"taste": "0.5", "prompt": 0, "aesthetic": MAX_WEIGHT}, known) == \
        {"taste": 0.5, "prompt": 0.0, "aesthetic": 10.0}
    assert refusal(validate_weights, {}, known) == "all reward weights are zero: nothing to optimise"


@pytest.mark.parametrize("weights, message", [
    ({"colour": 1.0}, "unknown reward 'colour'; available: aesthetic, prompt, taste"),
    ({"taste": "much"}, "weight of 'taste' must be a number, got 'much'"),
    ({"taste": None}, "weight of 'taste' must be a number, got None"),
    ({"taste": float("nan")}, "weight of 'taste' is nan; it must be a finite number"),
    ({"taste": float("inf")}, "weight of 'taste' is inf; it must be a finite number"),
    ({"taste": -0.1}, "weight of 'taste' is -0.1; it must lie in [0, 10]"),
    ({"taste": 10.01}, "weight of 'taste' is 10.01; it must lie in [0, 10]"),
    ({"taste": 0, "prompt": 0.0}, "all reward weights are zero: nothing to optimise"),
])
def test_bad_reward_weights_are_refused_naming_the_weight(weights, message):
    assert refusal(validate_weights, weights, {"taste", "prompt", "aesthetic"}) == message


def test_a_size_over_its_limit_reads_as_over_even_when_megabytes_round_alike():
    limit = 64 * 2**20
    assert size_over_limit(65 * 2**20, limit) == "65.0 MB; the limit is 64 MB"
    assert size_over_limit(limit + 2**20 // 10, limit) == "64.1 MB; the limit is 64 MB"
    # /dev/zero read to one byte past the limit must not say "64.0 MB; the limit is 64 MB".
    assert size_over_limit(limit + 1, limit) == "67,108,865 bytes; the limit is 67,108,864 bytes (64 MB)"
    assert size_over_limit(limit + 2**20 // 40, limit) == \
        "67,135,078 bytes; the limit is 67,108,864 bytes (64 MB)"


def test_device_names_torch_understands_pass_and_others_are_refused():
    assert [validate_device_name(d) for d in ("cpu", " CUDA ", "cuda:0", "cuda:999", "mps")] == \
        ["cpu", "cuda", "cuda:0", "cuda:999", "mps"]
    for bogus in ("bogus", "cuda:1000", "cuda:", "cuda:x", "cpu:0", "mps:1", "gpu", ""):
        assert refusal(validate_device_name, bogus) == \
            f"unknown device {bogus!r}; use one of cpu, cuda, cuda:N (N = 0, 1, …), mps"


def test_seeds_are_whole_numbers_in_the_32_bit_range():
    assert [validate_seed(s) for s in (0, "7", 2**32 - 1)] == [0, 7, 2**32 - 1]
    assert refusal(validate_seed, 2**32) == "seed 4294967296 is out of range [0, 2^32)"
    assert refusal(validate_seed, -1) == "seed -1 is out of range [0, 2^32)"
    assert refusal(validate_seed, "seven") == "seed must be a whole number, got 'seven'"
    assert refusal(validate_seed, None) == "seed must be a whole number, got None"
    # A seed typed as 1.5 ran as seed 1 (or 2, rounded by the page), with no word (found by a review).
    assert validate_seed(7.0) == 7
    assert refusal(validate_seed, 1.5) == "seed must be a whole number, got 1.5"
    assert refusal(validate_seed, True) == "seed must be a whole number, got True"
    assert refusal(validate_seed, float("nan")) == "seed must be a whole number, got nan"


def profile_output(path):
    return validate_output_file(path, is_profile_file, "a PrefStudio profile file")


def test_an_output_file_must_be_a_file_in_an_existing_folder(tmp_path):
    target = tmp_path / "me.prefstudio"
    assert profile_output(str(target)) == target
    target.write_bytes(b"old")  # a file PrefStudio did not write is the person's
    assert refusal(profile_output, target) == (
        f"{echo(str(target))} exists and is not a PrefStudio profile file: choose another name (or delete it "
        "first), so that nothing of yours is written over")
    assert refusal(profile_output, tmp_path) == f"{echo(str(tmp_path))} is a folder; give a file name inside it"
    missing = tmp_path / "typo" / "me.prefstudio"
    assert refusal(profile_output, missing) == \
        f"cannot write {echo(str(missing))}: the folder {echo(str(missing.parent))} does not exist"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert refusal(profile_output, fifo) == f"{echo(str(fifo))} exists and is not a regular file"
    assert not (tmp_path / "typo").exists()


def test_an_output_folder_may_be_new_but_its_parent_must_exist(tmp_path):
    assert validate_output_folder(tmp_path) == tmp_path
    assert validate_output_folder(str(tmp_path / "new")) == tmp_path / "new"
    (tmp_path / "file").write_text("x")
    assert refusal(validate_output_folder, tmp_path / "file") == f"{echo(str(tmp_path / 'file'))} is a file, not a folder"
    deep = tmp_path / "a" / "b"
    assert refusal(validate_output_folder, deep) == \
        f"cannot create {echo(str(deep))}: the folder {echo(str(deep.parent))} does not exist"
    assert not (tmp_path / "new").exists() and not (tmp_path / "a").exists()


def test_a_size_just_over_a_limit_of_a_fraction_of_a_megabyte_reads_in_bytes():
    limit = int(10.36 * 2**20)  # 10.4 MB at one decimal, like a size of 10.38 MB
    size = int(10.38 * 2**20)
    assert size_over_limit(size, limit) == "10,884,218 bytes; the limit is 10,863,247 bytes (10 MB)"


def _in_unprivileged_child(function, *args) -> str:
    """`function(*args)` in a forked child without root's right to write anywhere (root
    drops to 'nobody'); returns the InvalidInput message, or '' if it passed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        os.close(read_end)
        message = b"?"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            function(*args)
            message = b""
        except InvalidInput as error:
            message = str(error).encode()
        finally:
            os.write(write_end, message)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_an_output_file_in_an_unwritable_folder_is_refused():
    # Under /tmp (not pytest's root-only tmp_path) so that 'nobody' can reach the folder.
    base = Path(tempfile.mkdtemp(prefix="prefstudio-test-"))
    try:
        base.chmod(0o755)
        assert profile_output(base / "me.prefstudio") == base / "me.prefstudio"  # its owner may write
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        target = locked / "me.prefstudio"
        assert _in_unprivileged_child(profile_output, target) == \
            f"cannot write {echo(str(target))}: the folder {echo(str(locked))} is not writable"
        writable = base / "open"
        writable.mkdir()
        writable.chmod(0o777)
        assert _in_unprivileged_child(profile_output, writable / "me.prefstudio") == ""
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)
