"""What the adapters show a model of a result: images bounded, hostile image artifacts refused."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from agent_legs import ActionResult, Artifact, Legs, result_content
from agent_legs._toolset import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE


@pytest.fixture
def legs(open_legs) -> Legs:
    return open_legs()


def _result(*paths: str, mime: str = "image/png") -> ActionResult:
    return ActionResult(
        action="code.run",
        ok=True,
        output="ran",
        duration_ms=1.0,
        artifacts=[Artifact(path=p, mime_type=mime, size=1) for p in paths],
    )


def test_a_large_photo_is_downscaled_and_bounded(legs) -> None:
    noise = Image.frombytes("RGB", (3000, 2000), os.urandom(3000 * 2000 * 3))  # incompressible
    noise.save(legs.workspace / "photo.png")
    assert (legs.workspace / "photo.png").stat().st_size > 10 * MAX_IMAGE_BYTES
    text, image = result_content(legs, _result("photo.png"))
    assert text == {"type": "text", "text": "ran"}
    data = base64.b64decode(image["base64"])
    picture = Image.open(io.BytesIO(data))
    assert len(data) <= MAX_IMAGE_BYTES and max(picture.size) == MAX_IMAGE_SIDE
    assert picture.size == (MAX_IMAGE_SIDE, round(2000 * MAX_IMAGE_SIDE / 3000))
    assert image["mime_type"] == f"image/{picture.format.lower()}"


def test_a_small_image_is_sent_as_is(legs) -> None:
    Image.new("RGB", (64, 32), "red").save(legs.workspace / "small.png")
    _, image = result_content(legs, _result("small.png"))
    assert base64.b64decode(image["base64"]) == (legs.workspace / "small.png").read_bytes()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own notice, then ours
def test_hostile_image_artifacts_are_notes_never_reads_or_crashes(legs, tmp_path) -> None:
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), "blue").save(outside)
    os.symlink(outside, legs.workspace / "link.png")  # e.g. made by sandboxed code
    Image.new("1", (12_000, 12_000)).save(legs.workspace / "bomb.png")  # 144 M pixels in a tiny file
    (legs.workspace / "fake.png").write_text("not an image")
    (text,) = result_content(legs, _result("link.png", "bomb.png", "fake.png", "missing.png"))
    notes = text["text"].splitlines()[1:]
    assert len(notes) == 4 and all(n.startswith("[image ") and "not shown" in n for n in notes)
    assert "link.png" in notes[0] and "bomb.png" in notes[1]


def test_images_off_and_failures_give_text_only(legs) -> None:
    Image.new("RGB", (64, 32), "red").save(legs.workspace / "small.png")
    assert result_content(legs, _result("small.png"), images=False) == [{"type": "text", "text": "ran"}]
    failed = ActionResult(
        action="code.run",
        ok=False,
        output="Error (failed): x",
        duration_ms=1.0,
        artifacts=[Artifact(path="small.png", mime_type="image/png", size=1)],
    )
    assert result_content(legs, failed) == [{"type": "text", "text": "Error (failed): x"}]


def test_at_most_four_images(legs) -> None:
    for i in range(6):
        Image.new("RGB", (16, 16), "red").save(legs.workspace / f"{i}.png")
    parts = result_content(legs, _result(*[f"{i}.png" for i in range(6)]))
    assert [p["type"] for p in parts] == ["text"] + ["image"] * 4


def test_without_pillow_small_images_pass_and_large_ones_are_notes(legs, monkeypatch) -> None:
    Image.new("RGB", (64, 32), "red").save(legs.workspace / "small.png")
    Image.frombytes("RGB", (1000, 1000), os.urandom(3_000_000)).save(legs.workspace / "big.png")
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # as if Pillow were not installed
    text, image = result_content(legs, _result("small.png", "big.png"))
    assert base64.b64decode(image["base64"]) == (legs.workspace / "small.png").read_bytes()
    assert "[image big.png not shown:" in text["text"] and "pip install pillow" in text["text"]
