"""scripts/compare_generators.py scores exactly what `i2t roundtrip-eval` scores for a seed, and pairs generators by
seed, so its multi-seed comparisons can be checked against single runs of the tool."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import compare_generators as cg

from img2text2img.errors import I2TError


def test_seeds_specs_and_paired_differences():
    assert cg.parse_seeds("2-4") == [2, 3, 4] and cg.parse_seeds("0,5") == [0, 5]
    with pytest.raises(I2TError, match="--seeds"):
        cg.parse_seeds("0-x")
    assert cg.parse_spec("vae=some/dir@2.5", "generator") == ("vae", "some/dir", 2.5)
    assert cg.parse_spec("p=dir", "generator") == ("p", "dir", None)
    with pytest.raises(I2TError, match="NAME=DIR"):
        cg.parse_spec("justadir", "reader")
    with pytest.raises(I2TError, match="not a number"):
        cg.parse_spec("v=dir@high", "generator")
    d = cg.paired([0.5, 0.4, 0.7], [0.4, 0.5, 0.5])  # differences 0.1, -0.1, 0.2
    assert d["mean_difference"] == pytest.approx(0.2 / 3) and d["ahead_at"] == 2 and d["seeds"] == 3
    assert d["standard_error"] == pytest.approx(((0.1 - 0.2 / 3) ** 2 + (0.1 + 0.2 / 3) ** 2 + (0.2 - 0.2 / 3) ** 2)
                                                ** 0.5 / 6 ** 0.5)


def test_compare_scores_each_seed_as_the_roundtrip_tool_does(tmp_path):
    from img2text2img.data import load_dataset
    from img2text2img.models import load_model
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions

    ds = load_dataset("shapes:200", data_dir=tmp_path / "s")
    gen_dir, cap_dir = default_model_dir("generator", "shapes"), default_model_dir("captioner", "shapes")
    res = cg.compare("shapes:200", "test", 20, [0, 1],
                     [("a", str(gen_dir), None), ("b", str(gen_dir), None), ("c", str(gen_dir), None)],
                     [("shapes", str(cap_dir))], data_dir=str(tmp_path / "s"), rerank={"c": str(cap_dir)},
                     candidates=2)
    gen, cap = load_model(gen_dir, kind="generator"), load_model(cap_dir, kind="captioner")
    for seed in (0, 1):
        tool = evaluate_roundtrip(ds, *model_functions(cap, gen), split="test", limit=20, seed=seed)
        mine = [r for r in res["rows"] if r["seed"] == seed]
        assert {r["generator"] for r in mine} == {"a", "b"}
        assert tool.scores["normalised_bleu4"] is not None
        assert all(r["normalised_bleu4"] == pytest.approx(tool.scores["normalised_bleu4"]) for r in mine)
    # the same generator twice: paired seed by seed, it is never ahead of itself
    vs = res["summary"]["shapes"]["b"]["vs_a"]
    assert vs["mean_difference"] == 0 and vs["ahead_at"] == 0 and vs["seeds"] == 2
    # "c" was picked by the only reader's own weights: that reader does not score its own choice
    assert res["not_read"] == [{"generator": "c", "reader": "shapes", "why": "reranked by this reader's weights"}]
    assert "c" not in res["summary"]["shapes"]
    with pytest.raises(I2TError, match="--rerank names no generator: d"):
        cg.compare("shapes:200", "test", 4, [0], [("a", str(gen_dir), None)], [("shapes", str(cap_dir))],
                   data_dir=str(tmp_path / "s"), rerank={"d": str(cap_dir)})
