"""`features clip`: the real open_clip code path on a small model with random weights (test flag only)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from temacli import artifacts
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError
from temacli.features import clip as fclip
from temacli.features import store
from test_features_helpers import build_dataset, write_images, write_items

MODEL = "ViT-S-32-alt"  # 43M parameters, embed dim 256: the smallest ViT config open_clip ships


@pytest.fixture(scope="module")
def small_clip():
    return fclip.load_clip(MODEL, None, random_weights=True, seed=42, precision="float32")  # the CLI's --seed


@pytest.fixture
def image_dataset(tmp_path, make_dataset):
    img = write_images(tmp_path / "images")
    images = [
        str(img["red_png"]),  # 0 absolute path
        "noise.jpg",  # 1 relative to --images-dir
        "gray.png",  # 2 grayscale
        str(img["truncated_jpg"]),  # 3 truncated JPEG
        None,  # 4 no path
        "missing/nothere.jpg",  # 5 file not found
        str(img["garbage_png"]),  # 6 not an image
        "https://example.com/a.jpg",  # 7 URL (not fetched)
        "rgba.png",  # 8 RGBA, non-square
    ]
    titles_x = ["Red tea tin", "Noise crackers", "Gray sea salt", "Broken jar"]
    titles_y = ["", "Knife", "Garbage bin", "Web pan", "Rainbow mug"]
    rows = [("food", t) for t in titles_x] + [("kitchen", t) for t in titles_y]
    data = make_dataset(tmp_path, "data", items=[(d, t, None, im) for (d, t), im in zip(rows, images)])
    return data, tmp_path / "images"


def direct_image(clip, path):
    import torch
    from PIL import Image

    with Image.open(path) as im:
        x = clip.preprocess(im.convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        z = clip.model.encode_image(x).float()
    return torch.nn.functional.normalize(z, dim=-1)[0].numpy()


def direct_text(clip, text):
    import torch

    with torch.inference_mode():
        z = clip.model.encode_text(clip.tokenizer([text])).float()
    return torch.nn.functional.normalize(z, dim=-1)[0].numpy()


def test_cli_random_weights_images_texts_and_reports(image_dataset, tmp_path, run_cli, small_clip):
    data, images_dir = image_dataset
    out = tmp_path / "features"
    code, stdout, stderr = run_cli(
        ["features", "clip", "--items", data / "items.parquet", "--out", out, "--clip-model", MODEL,
         "--random-weights", "--images-dir", images_dir, "--device", "cpu", "--workers", "0",
         "--batch-size", "3", "--precision", "float32", "--json"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["weights_source"] == "random"
    ds = Dataset.open(data)
    img = store.load_modality(out, "image", ds)
    txt = store.load_modality(out, "text", ds)
    assert img.embeddings.shape == (9, 256) and txt.embeddings.shape == (9, 256)
    assert img.embeddings.dtype == np.float32
    assert img.mask.tolist() == [True, True, True, False, False, False, False, False, True]
    e = np.asarray(img.embeddings)
    np.testing.assert_allclose(np.linalg.norm(e[img.mask], axis=1), 1, atol=1e-5)
    assert not e[~img.mask].any()
    # row alignment: row i is item i's own image, same as encoding it alone (same random weights, the default seed 42)
    for row, name in ((0, "red.png"), (1, "noise.jpg"), (2, "gray.png"), (8, "rgba.png")):
        np.testing.assert_allclose(e[row], direct_image(small_clip, images_dir / name), atol=1e-4)
    report = json.loads((out / "missing_image.json").read_text())
    reasons = {r["item"]: r["reason"].split(":")[0] for r in report["items"]}
    assert reasons == {3: "unreadable", 4: "no_path", 5: "not_found", 6: "unreadable", 7: "url_not_fetched"}
    assert report["items"][0]["item_id"] == "I0003" and "truncated" in report["items"][0]["reason"]
    assert report["by_reason"] == {"unreadable": 2, "no_path": 1, "not_found": 1, "url_not_fetched": 1}
    # texts: item 4 has no text
    assert txt.mask.tolist() == [True] * 4 + [False] + [True] * 4
    t = np.asarray(txt.embeddings)
    assert not t[4].any()
    np.testing.assert_allclose(t[5], direct_text(small_clip, "Knife"), atol=1e-4)
    for m in (img.manifest, txt.manifest):
        assert m["stage"] == "features clip"
        assert m["params"]["model"] == MODEL and m["params"]["pretrained"] == "random"
        assert m["params"]["weights_source"] == "random"
        assert m["params"]["weights_fingerprint"] == small_clip.weights_fingerprint
        assert m["inputs"]["items"]["fingerprint"] == ds.items_fingerprint
    assert img.manifest["counts"] == {"n_items": 9, "dim": 256, "missing": 5}
    assert txt.manifest["counts"] == {"n_items": 9, "dim": 256, "missing": 1}


def test_determinism_float16_and_workers(image_dataset, tmp_path, small_clip):
    data, images_dir = image_dataset
    kw = dict(images_dir=images_dir, clip=small_clip, workers=0, batch_size=4)
    fclip.compute_clip_features(data, tmp_path / "a", **kw)
    fclip.compute_clip_features(data, tmp_path / "b", **kw)
    for name in ("image.npy", "text.npy", "has_image.npy", "has_text.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # a fresh model from the same seed gives the same weights, hence the same rows
    again = fclip.load_clip(MODEL, None, random_weights=True, seed=42)
    assert again.weights_fingerprint == small_clip.weights_fingerprint
    # the default precision (bfloat16 on CPUs with native bf16) stays close to float32
    fclip.compute_clip_features(data, tmp_path / "auto", **{**kw, "clip": again})
    for name in ("image", "text"):
        fast, ref = np.load(tmp_path / "auto" / f"{name}.npy"), np.load(tmp_path / "a" / f"{name}.npy")
        has = np.load(tmp_path / "a" / f"has_{name}.npy")
        assert (fast[has] * ref[has]).sum(1).min() > 0.99
    # float16 output and one decoding worker process give the same rows (to float16 precision)
    s = fclip.compute_clip_features(data, tmp_path / "h", dtype="float16", **{**kw, "workers": 1})
    assert [m["dtype"] for m in s["modalities"]] == ["float16", "float16"]
    for name in ("image", "text"):
        h = np.load(tmp_path / "h" / f"{name}.npy")
        f = np.load(tmp_path / "a" / f"{name}.npy")
        assert h.dtype == np.float16
        np.testing.assert_allclose(h.astype(np.float32), f, atol=2e-3)
        assert (np.load(tmp_path / "h" / f"has_{name}.npy") == np.load(tmp_path / "a" / f"has_{name}.npy")).all()


def test_checkpoint_round_trip_file_and_local_dir(image_dataset, tmp_path, small_clip, run_cli):
    data, images_dir = image_dataset
    ref = fclip.compute_clip_features(data, tmp_path / "ref", images_dir=images_dir, clip=small_clip, workers=0)
    assert ref["weights_source"] == "random"
    st = fclip.save_checkpoint(small_clip, tmp_path / "ckpt" / "small.safetensors")
    pt = fclip.save_checkpoint(small_clip, tmp_path / "ckpt" / "small.pt")
    folder = tmp_path / "localdir"
    folder.mkdir()
    fclip.save_checkpoint(small_clip, folder / "open_clip_model.safetensors")
    model_cfg = __import__("open_clip").get_model_config(MODEL)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    # .pt: the library path, texts only (the CLI path is run below for .safetensors and local-dir:)
    c = fclip.load_clip(MODEL, str(pt), precision="float32")
    assert c.source == "file" and c.weights_fingerprint == artifacts.fingerprint(pt)
    got = np.zeros((3, 256), np.float32)
    mask = fclip.encode_clip_texts(c, ["Red tea tin", "", "Knife"], got)
    assert mask.tolist() == [True, False, True]
    # other batches (trimmed to another length): equal up to float rounding
    np.testing.assert_allclose(got[[0, 2]], np.load(tmp_path / "ref" / "text.npy")[[0, 5]], atol=1e-5)
    for weights, source, fp in (
        (str(st), "file", artifacts.fingerprint(st)),
        (f"local-dir:{folder}", "local-dir", artifacts.fingerprint(folder)),
    ):
        out = tmp_path / f"out_{source}_{len(fp) % 7}_{weights[-3:]}"
        code, stdout, stderr = run_cli(
            ["features", "clip", "--items", data, "--out", out, "--clip-model", MODEL, "--pretrained", weights,
             "--images-dir", images_dir, "--workers", "0", "--device", "cpu", "--precision", "float32", "--json"])
        assert code == 0, stderr
        assert json.loads(stdout)["weights_source"] == source
        for name in ("image.npy", "text.npy"):
            np.testing.assert_array_equal(np.load(out / name), np.load(tmp_path / "ref" / name), err_msg=weights)
        m = json.loads((out / "image.npy.manifest.json").read_text())
        assert m["params"]["weights_source"] == source and m["params"]["weights_fingerprint"] == fp


def test_tag_read_from_cache_when_offline(tmp_path, monkeypatch, small_clip):
    """An open_clip tag whose weights are in the cache loads offline, without network retries."""
    import huggingface_hub.constants
    import open_clip.pretrained

    cache = tmp_path / "hf"
    snap = cache / "models--temacli-test--tiny-clip" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / "models--temacli-test--tiny-clip" / "refs").mkdir()
    (cache / "models--temacli-test--tiny-clip" / "refs" / "main").write_text("0" * 40)
    fclip.save_checkpoint(small_clip, snap / "open_clip_model.safetensors")
    cfg = {"url": "", "hf_hub": "temacli-test/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, MODEL, {"testtag": cfg})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(fclip, "_online", lambda *a, **k: False)  # as on a machine without network
    t0 = time.time()
    c = fclip.load_clip(MODEL, "testtag", cache_dir=str(cache), precision="float32")
    assert time.time() - t0 < 20
    assert c.source == "tag" and c.pretrained == "testtag"
    assert c.weights_fingerprint == artifacts.fingerprint(snap / "open_clip_model.safetensors")
    assert c.weights_fingerprint != small_clip.weights_fingerprint  # a file fingerprint, not the state's
    x = c.tokenizer(["tea"])
    import torch

    with torch.inference_mode():
        np.testing.assert_array_equal(c.model.encode_text(x).numpy(), small_clip.model.encode_text(x).numpy())


def test_weights_refusals(tmp_path, monkeypatch, run_cli):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(fclip, "_online", lambda *a, **k: False)
    data = write_items(tmp_path / "data", ["Tea"], ["Pan"])
    out = tmp_path / "f"
    base = ["features", "clip", "--items", data, "--out", out, "--cache-dir", tmp_path / "empty"]
    t0 = time.time()
    code, _, err = run_cli(base + ["--clip-model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k"])
    assert code == 2 and "offline" in err and "features text" in err and "--pretrained" in err
    assert time.time() - t0 < 20  # no ~45 s of network retries
    code, _, err = run_cli(base + ["--clip-model", MODEL, "--pretrained", "no_such_tag"])
    assert code == 2 and "not a checkpoint file and not an open_clip tag" in err
    code, _, err = run_cli(base + ["--clip-model", MODEL, "--pretrained", str(tmp_path / "none.safetensors")])
    assert code == 2 and "checkpoint file not found" in err
    code, _, err = run_cli(base + ["--clip-model", "ViT-Nope-1", "--random-weights"])
    assert code == 2 and "not an open_clip model" in err
    code, _, err = run_cli(base + ["--clip-model", MODEL, "--random-weights", "--pretrained", "x.pt"])
    assert code == 2 and "exclude each other" in err
    code, _, err = run_cli(base + ["--clip-model", MODEL, "--random-weights", "--dtype", "float64"])
    assert code == 2 and "float16" in err
    code, _, err = run_cli(base + ["--clip-model", MODEL, "--random-weights", "--images-dir", tmp_path / "nodir"])
    assert code == 2 and "--images-dir" in err
    assert not out.exists() or not any(out.glob("*.npy"))
    with pytest.raises(TemacliError, match="no weights given"):
        fclip.load_clip(MODEL, None)  # never a silent fall back to random weights


def test_checkpoint_of_another_architecture_is_refused(tmp_path, small_clip, run_cli):
    data = write_items(tmp_path / "data", ["Tea"], ["Pan"])
    ckpt = fclip.save_checkpoint(small_clip, tmp_path / "s32.safetensors")
    code, _, err = run_cli(
        ["features", "clip", "--items", data, "--out", tmp_path / "f", "--clip-model", "ViT-M-32-alt",
         "--pretrained", ckpt])
    assert code == 2 and "check that --clip-model matches the checkpoint" in err


def test_modality_text_only_without_image_column_and_up_to_date(tmp_path, small_clip):
    data = write_items(tmp_path / "data", ["Tea", ""], ["Pan"], extra={"llm": ["hot drink", "snack", ""]})
    out = tmp_path / "f"
    s = fclip.compute_clip_features(data, out, modality="text", text_column="llm", clip=small_clip)
    assert [m["modality"] for m in s["modalities"]] == ["text"]
    assert not (out / "image.npy").exists()
    t = np.load(out / "text.npy")
    np.testing.assert_allclose(t[1], direct_text(small_clip, "snack"), atol=1e-4)  # the extra column alone
    np.testing.assert_allclose(t[0], direct_text(small_clip, "Tea. hot drink"), atol=1e-4)
    s = fclip.compute_clip_features(data, out, modality="text", text_column="llm", clip=small_clip)
    assert s["modalities"][0].get("up_to_date") is True
    # no image column at all: every item is missing its image, counted, nothing crashes
    s = fclip.compute_clip_features(data, out, modality="image", clip=small_clip)
    assert s["modalities"][0]["missing"] == 3
    assert s["modalities"][0]["missing_by_reason"] == {"no_image_column": 3}
    assert not np.load(out / "has_image.npy").any()


def test_interrupted_rewrite_leaves_no_manifest(tmp_path, small_clip, monkeypatch):
    data = build_dataset(tmp_path / "data", ["Tea"], ["Pan"])
    out = tmp_path / "f"
    fclip.compute_clip_features(data, out, modality="text", clip=small_clip)
    assert (out / "text.npy.manifest.json").exists()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fclip, "encode_clip_texts", boom)
    with pytest.raises(KeyboardInterrupt):
        fclip.compute_clip_features(data, out, modality="text", clip=small_clip, force=True)
    assert not (out / "text.npy.manifest.json").exists()  # old manifest gone: load refuses
    assert not [p for p in out.iterdir() if artifacts.TEMP_MARK in p.name]  # no temporary leftovers
    with pytest.raises(TemacliError, match="manifest not found"):
        store.load_modality(out, "text", Dataset.open(data))


def test_help_shows_examples_and_random_flag(run_cli):
    code, out, _ = run_cli(["features", "clip", "--help"])
    assert code == 0 and "Example:" in out and "FOR TESTS" in out
    code, out, _ = run_cli(["features", "text", "--help"])
    assert code == 0 and "Example:" in out


def test_trimmed_text_path_equals_full_context(small_clip):
    """Running the causal text tower only up to the longest text gives encode_text's embeddings."""
    assert small_clip.trim_text
    texts = ["tea", "OXO Good Grips 8 Inch Bread Knife", " ".join(["long"] * 120), "Yogi Green Tea, 16 bags"]
    trimmed = np.zeros((4, small_clip.dim), np.float32)
    fclip.encode_clip_texts(small_clip, texts, trimmed, batch_size=2)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(trimmed[i], direct_text(small_clip, t), atol=1e-5)
