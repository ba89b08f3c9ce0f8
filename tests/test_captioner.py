"""Captioner: tiny decoders on the shapes set, decoding, checkpoints, CLI."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from img2text2img.data import load_dataset, load_image
from img2text2img.errors import I2TError
from img2text2img.locations import weights_dir
from img2text2img.models.captioner import (
    Captioner,
    EnsembleDecoder,
    beam_search,
    captioner_config,
    create_captioner,
    greedy_search,
    list_captioners,
    load_captioner,
    sample_search,
)
from img2text2img.models.encoders import create_encoder
from img2text2img.train.captioner import CaptionerTask, FeatureSource, SCSTTask, caption_loss, train_captioner
from img2text2img.train.captioner_recipe import CaptionerRecipe
from img2text2img.train.engine import TrainConfig
from img2text2img.vocab import END_ID, Vocabulary, pad_batch

DECODERS = ("lstm", "blstm", "attention")
SHIPPED_SHAPES = Path(__file__).resolve().parent.parent / "img2text2img" / "pretrained" / "captioner_shapes"
RECIPE = CaptionerRecipe()  # the default loss weights


@pytest.fixture(scope="module")
def shapes():
    ds = load_dataset("shapes:400")
    vocab = Vocabulary.build(ds.all_captions("train"))
    torch.manual_seed(0)
    enc = create_encoder("small_cnn", pretrained=False).eval()
    imgs = ds.split("train")[:192]
    tf = enc.transform()
    with torch.no_grad():
        pooled, grid = enc(torch.stack([tf(load_image(ds.image_path(i))) for i in imgs]))
    caps = [ds.captions[i][0] for i in imgs]
    return {"ds": ds, "vocab": vocab, "enc": enc, "pooled": pooled, "grid": grid, "images": imgs,
            "tokens": pad_batch([vocab.encode(c) for c in caps])}


def test_registry_names():
    names = list_captioners()
    for n in ("mobilenet_v2+attention", "mobilenet_v2+lstm", "mobilenet_v2+blstm", "small_cnn+lstm-tiny",
              "efficientnet_lite0+attention", "small_cnn+attention-small"):
        assert n in names
    assert not any(n.startswith("fused_") for n in names)
    with pytest.raises(I2TError):
        captioner_config("nope+lstm")


def _train_on_shapes(model: Captioner, shapes: dict, steps: int) -> list[float]:
    """Adam at lr 1e-2 on batches of 32 of the fixture's 192 captions; the losses, each step's gradients checked
    finite."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        rows = torch.arange(step * 32, step * 32 + 32) % 192
        tokens = shapes["tokens"][rows]
        loss = caption_loss(*model(tokens, shapes["pooled"][rows], shapes["grid"][rows]), tokens, RECIPE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    return losses


@pytest.mark.parametrize("decoder, extra", [*((d, {}) for d in DECODERS), ("attention", {"attribute_words": 4})],
                         ids=[*DECODERS, "attention-attributes"])
def test_each_decoder_loss_falls(shapes, decoder, extra):
    torch.manual_seed(0)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64, dropout=0.0, **extra)
    losses = _train_on_shapes(model, shapes, steps=40)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    if extra.get("attribute_words"):  # the word detector is in the graph, and so are its word cells
        assert all(p.grad is not None for p in [*model.decoder.attr_head.parameters(),
                                                *model.decoder.attr_proj.parameters()])


@pytest.mark.parametrize("decoder", DECODERS)
def test_each_decoder_trains_under_bf16_autocast(shapes, decoder):
    """What `--precision bf16` runs: products in bf16, weights and loss in fp32; the loss must still fall."""
    torch.manual_seed(0)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(40):
        rows = torch.arange(step * 32, step * 32 + 32) % 192
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, aux = model(shapes["tokens"][rows], shapes["pooled"][rows], shapes["grid"][rows])
            loss = caption_loss(logits, aux, shapes["tokens"][rows], RECIPE)
        assert loss.dtype == torch.float32
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("decoder", DECODERS)
def test_features_once_per_image_give_the_same_loss_and_gradients(shapes, decoder):
    """Grouped batches (`index`): each image's features given once for all its captions must be the same function,
    with the same gradients, as the features repeated per caption."""
    torch.manual_seed(3)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64, dropout=0.0)
    index = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3])  # 4 images, 8 captions (of different lengths)
    tokens = shapes["tokens"][torch.arange(8) * 7]
    pooled, grid = shapes["pooled"][:4], shapes["grid"][:4]

    def loss_and_grads(**kw):
        model.zero_grad()
        logits, aux = model(tokens, **kw)
        loss = caption_loss(logits, aux, tokens, RECIPE)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want, want_g = loss_and_grads(pooled=pooled[index], grid=grid[index])
    got, got_g = loss_and_grads(pooled=pooled, grid=grid, index=index)
    assert torch.allclose(got, want, atol=1e-6)
    assert want_g.keys() == got_g.keys()
    for n in want_g:
        assert torch.allclose(got_g[n], want_g[n], atol=1e-5), n


def _task_loss_before_and_after(task, fixed_images: int, per_batch: int, steps: int) -> tuple[float, float]:
    """Train `task.model` (Adam, lr 1e-2) on grouped batches of `per_batch` images; the loss on a fixed batch of the
    first `fixed_images` images before and after."""
    data, model = task.train_dataset(), task.model
    fixed = task.collate([data[i] for i in range(fixed_images)])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(task.loss(model, fixed)[0])

    start = fixed_loss()
    for step in range(steps):
        loss, _ = task.loss(model, task.collate([data[(step * per_batch + k) % len(data)] for k in range(per_batch)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, fixed_loss()


def test_grouped_training_batches_hold_all_captions_of_each_image(shapes, tmp_path):
    recipe = CaptionerRecipe(model="small_cnn+attention-tiny", min_count=1, val_images=16, group_images=True)
    torch.manual_seed(0)  # the task builds the model
    task = CaptionerTask(recipe, shapes["ds"])
    batch = task.collate([task.train_dataset()[i] for i in (0, 5)])
    assert batch["images"].shape[0] == 2 and batch["tokens"].shape[0] == 10  # 2 images x 5 captions
    assert batch["index"].tolist() == [0] * 5 + [1] * 5
    start, end = _task_loss_before_and_after(task, fixed_images=8, per_batch=4, steps=40)
    print(f'grouped training: fixed-batch loss {start:.3f} -> {end:.3f}')
    assert end < 0.75 * start
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=4, batch_size=4, progress=False, eval_every=4, device="cpu")
    summary = train_captioner(recipe, cfg, shapes["ds"])  # the engine runs grouped batches too (no length grouping)
    assert summary["steps"] == 4 and (tmp_path / "run" / "last" / "config.json").exists()
    assert summary["parents"] == [] and summary["recipe"]["group_images"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_beam_width_one_equals_greedy(shapes, decoder):
    torch.manual_seed(1)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64).eval()
    pooled, grid = shapes["pooled"][:16], shapes["grid"][:16] if decoder == "attention" else None
    with torch.no_grad():
        g_ids, g_lp = greedy_search(model.decoder, pooled, grid, 12)
        b_ids, b_lp = beam_search(model.decoder, pooled, grid, 1, 12)
    assert torch.equal(g_ids, b_ids)
    assert torch.allclose(g_lp, b_lp, atol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_beam_search_keeps_per_image_state_without_regathering(shapes, decoder):
    """Skipping the re-gather of per-image state (an image's beams only continue its own beams) changes nothing:
    the same search with every state key re-gathered gives the same words and scores, for an ensemble too."""
    torch.manual_seed(4)
    single = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64).eval()
    pooled, grid = shapes["pooled"][:8], shapes["grid"][:8]
    for dec in (single.decoder, EnsembleDecoder([single.decoder, copy.deepcopy(single.decoder)]).eval()):
        with torch.no_grad():
            fast = beam_search(dec, pooled, grid, 4, 12)
            dec.per_image_state = frozenset()  # an instance attribute hides the class's: re-gather everything
            slow = beam_search(dec, pooled, grid, 4, 12)
        assert torch.equal(fast[0], slow[0]) and torch.allclose(fast[1], slow[1])
    assert decoder == "lstm" or type(single.decoder).per_image_state


@pytest.mark.parametrize("decoder", DECODERS)
def test_batched_beam_search_matches_one_at_a_time(shapes, decoder):
    torch.manual_seed(2)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64).eval()
    pooled, grid = shapes["pooled"][:6], shapes["grid"][:6]
    together = model.decode_features(pooled, grid, beam_size=3)
    alone = [model.decode_features(pooled[i:i + 1], grid[i:i + 1], beam_size=3)[0] for i in range(6)]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.logprob for r in together] == pytest.approx([r.logprob for r in alone], abs=1e-4)


def test_default_search_is_the_models_own_and_is_saved(shapes, tmp_path):
    torch.manual_seed(4)
    model = create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64, dropout=0.0)
    _train_on_shapes(model, shapes, steps=15)  # a little training, so that a wider beam finds other captions than greedy does
    model.eval()
    pooled = shapes["pooled"][:32]

    def search(m, **kw):
        return [(r.text, round(r.logprob, 4)) for r in m.decode_features(pooled, **kw)]

    greedy, wide = search(model, beam_size=1), search(model, beam_size=4)
    assert greedy != wide  # otherwise this test could not tell the two searches apart
    model.settings.beam_size = 4
    assert search(model) == wide
    model.settings.beam_size, model.settings.length_alpha = 1, 1.3
    assert search(model) == greedy
    model.save(tmp_path / "cap")
    loaded = load_captioner(tmp_path / "cap")
    assert (loaded.settings.beam_size, loaded.settings.length_alpha) == (1, 1.3)
    assert search(loaded) == greedy
    # saved beside the network config, not in it
    record = json.loads((tmp_path / "cap" / "config.json").read_text())
    assert {k: record["inference"][k] for k in ("beam_size", "length_alpha")} == {"beam_size": 1, "length_alpha": 1.3}
    assert "beam_size" not in record["config"] and record["inference"]["open_vocab"] is False


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("rows", [1, 3, 8, 12])
def test_search_step_equals_the_training_step(shapes, decoder, rows):
    # Searches (grad off) take the weight-side matrix products for 2-8 rows; the step must stay the same function.
    torch.manual_seed(5)
    model = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64).eval()
    state = model.decoder.init_state(shapes["pooled"][:rows], shapes["grid"][:rows])
    prefix = shapes["tokens"][:rows, :3]
    with torch.enable_grad():
        want, want_state = model.decoder.step(state, prefix)
    with torch.inference_mode():
        got, got_state = model.decoder.step(state, prefix)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    for k in want_state:
        assert torch.allclose(got_state[k], want_state[k], atol=1e-5), k


def test_sample_search_masks_seeds_and_gradients(shapes):
    torch.manual_seed(4)
    model = create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64).eval()
    pooled = shapes["pooled"][:8]
    ids, logp, mask = sample_search(model.decoder, pooled, None, 3, 12, generator=torch.Generator().manual_seed(0))
    assert ids.shape[0] == 24 and ids.shape == logp.shape == mask.shape
    for row, m in zip(ids.tolist(), mask.tolist()):  # a row's mask covers its words and its <end>, nothing after
        n = row.index(END_ID) + 1 if END_ID in row else len(row)
        assert m == [True] * n + [False] * (len(row) - n)
    assert (logp[~mask] == 0).all() and (logp[mask] < 0).all()
    logp.sum().backward()
    assert model.decoder.out.weight.grad.abs().sum() > 0
    again, _, _ = sample_search(model.decoder, pooled, None, 3, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)


def test_self_critical_training_raises_the_cider_reward(shapes, tmp_path):
    torch.manual_seed(5)
    model = create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64, dropout=0.0)
    _train_on_shapes(model, shapes, steps=15)  # a weak cross-entropy start, as SCST always has one
    model.save(tmp_path / "ce")
    src = FeatureSource(shapes["images"], pooled=shapes["pooled"], grid=shapes["grid"])
    task = SCSTTask(CaptionerRecipe(scst=True, scst_samples=4), shapes["ds"], str(tmp_path / "ce"),
                    sources={"train": src})
    assert torch.equal(task.model.decoder.out.weight, model.decoder.out.weight)  # started from the checkpoint
    opt = torch.optim.Adam(task.model.decoder.parameters(), lr=3e-3)
    rewards = []
    for step in range(40):
        batch = task.collate([task.train_dataset()[i] for i in range(step * 24 % 192, step * 24 % 192 + 24)])
        loss, logs = task.loss(task.model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rewards.append(logs["cider"])
    assert sum(rewards[-8:]) / 8 > 1.2 * sum(rewards[:8]) / 8, rewards


def test_save_load_gives_identical_captions(shapes, tmp_path):
    torch.manual_seed(3)
    cfg = captioner_config("small_cnn+attention-tiny", vocab_size=len(shapes["vocab"]), feature_dim=64,
                           store_encoder=True)
    model = Captioner(cfg, shapes["vocab"])
    model.attach_encoder(shapes["enc"])
    ds = shapes["ds"]
    images = [load_image(ds.image_path(i)) for i in ds.split("test")[:4]]
    before = model.caption_images(images, beam_size=3)
    model.save(tmp_path / "cap")
    from img2text2img.models import load_model

    loaded = load_model(tmp_path / "cap")
    after = loaded.caption_images(images, beam_size=3)
    assert [r.text for r in before] == [r.text for r in after]
    assert [r.logprob for r in before] == pytest.approx([r.logprob for r in after], abs=1e-5)
    # the stored encoder is the exact one: no sha lookup, no pretrained file needed
    assert loaded.config.store_encoder and loaded.encoder is not None


def test_train_and_caption_through_cli(tmp_path, capsys):
    from img2text2img.cli import main

    out = tmp_path / "run"
    code = main(["train", "captioner", "--model", "small_cnn+lstm-tiny", "--data", "shapes:400", "--out", str(out),
                 "--max-steps", "12", "--batch-size", "16", "--val-images", "16", "--min-count", "1",
                 "--device", "cpu", "--eval-every", "6"])
    assert code == 0
    assert (out / "best" / "config.json").exists() and (out / "last" / "trainer.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["parents"] == []
    assert summary["recipe"]["batch_size"] == 16 and summary["recipe"]["val_images"] == 16
    assert summary["command"].startswith("i2t train captioner --model small_cnn+lstm-tiny")  # cited by results tables
    ds = load_dataset("shapes:400")
    img = ds.image_path(ds.split("test")[0])
    capsys.readouterr()
    code = main(["caption", str(img), str(tmp_path / "missing.png"), "--model", str(out), "--json", "--beam", "2"])
    captured = capsys.readouterr()
    assert code == 2  # one input failed
    line = json.loads(captured.out.strip().splitlines()[0])
    assert set(line) == {"file", "caption", "logprob", "ms"} and line["file"] == str(img)
    assert "missing.png" in captured.err


@pytest.mark.skipif(not (SHIPPED_SHAPES / "config.json").exists(), reason="shapes captioner not shipped yet")
def test_shipped_shapes_captioner_names_colour_and_shape():
    from img2text2img.data.shapes import COLOURS, SHAPES
    from img2text2img.models.captioner import caption

    ds = load_dataset("shapes")  # the set it was trained on; its test split was never seen
    singles = [i for i in ds.split("test") if len(re.findall("|".join(SHAPES), ds.captions[i][0])) == 1][:30]
    assert len(singles) >= 10
    results = caption([ds.image_path(i) for i in singles], model=SHIPPED_SHAPES, beam_size=3)
    right = 0
    for im, r in zip(singles, results):
        ref = ds.captions[im][0].split()
        colour = next(w for w in ref if w in COLOURS)
        shape = next(w for w in ref if w in SHAPES)
        right += colour in r.tokens and shape in r.tokens
    assert right / len(singles) >= 0.7, (right, len(singles))


def test_self_critical_resume_reaches_same_weights(shapes, tmp_path):
    """Sampling uses the engine's (checkpointed) RNG, so an interrupted self-critical run resumes exactly."""
    from img2text2img.checkpoint import load_checkpoint
    from img2text2img.train.engine import fit

    torch.manual_seed(6)
    create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64).save(tmp_path / "start")
    src = FeatureSource(shapes["images"][:64], pooled=shapes["pooled"][:64], grid=shapes["grid"][:64])

    def task(crash_at=None):
        class Crashing(SCSTTask):
            def training_step(self, batch, step, ctx):
                if step == crash_at:
                    raise KeyboardInterrupt
                return super().training_step(batch, step, ctx)

        recipe = CaptionerRecipe(scst=True, scst_samples=3)
        torch.manual_seed(0)  # the start has no stored encoder, so small_cnn is built afresh: the same one each time
        return Crashing(recipe, shapes["ds"], str(tmp_path / "start"), sources={"train": src})

    def cfg(out, resume=False):
        return TrainConfig(out=str(tmp_path / out), max_steps=8, batch_size=16, lr=1e-3, checkpoint_every=3,
                           progress=False, resume=resume)

    fit(task(), cfg("straight"))
    with pytest.raises(KeyboardInterrupt):
        fit(task(crash_at=5), cfg("part"))
    fit(task(), cfg("part", resume=True))
    a = load_checkpoint(tmp_path / "straight" / "last").state_dict
    b = load_checkpoint(tmp_path / "part" / "last").state_dict
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _assert_first_step_is_members_mean(ens, members, pooled, grid) -> None:
    """One step from <start>: the ensemble's distribution is the renormalised mean of its members' log-probabilities."""
    with torch.no_grad():
        prefix = torch.full((pooled.shape[0], 1), 1, dtype=torch.long)
        want = torch.stack([torch.log_softmax(m.decoder.step(m.decoder.init_state(pooled, grid), prefix)[0], -1)
                            for m in members]).mean(0)
        got, _ = ens.decoder.step(ens.decoder.init_state(pooled, grid), prefix)
    assert torch.allclose(torch.log_softmax(got, -1), torch.log_softmax(want, -1), atol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_ensemble_of_decoders_averages_members_and_round_trips(shapes, decoder, tmp_path):
    from img2text2img.models import load_model
    from img2text2img.models.captioner import ensemble_captioners

    pooled, grid = shapes["pooled"][:8], shapes["grid"][:8]
    members = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        m = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64, dropout=0.0).eval()
        m.save(tmp_path / f"m{seed}")
        members.append(m)
    ens = ensemble_captioners([tmp_path / "m5", tmp_path / "m6"])
    assert ens.config.members == 2
    _assert_first_step_is_members_mean(ens, members, pooled, grid if decoder == "attention" else None)
    # an ensemble of a model with itself captions exactly like the model
    twin = ensemble_captioners([tmp_path / "m5", members[0]])
    assert [r.text for r in twin.decode_features(pooled, grid, beam_size=3)] == \
           [r.text for r in members[0].decode_features(pooled, grid, beam_size=3)]
    before = ens.decode_features(pooled, grid, beam_size=3)
    ens.save(tmp_path / "ens")
    after = load_model(tmp_path / "ens").decode_features(pooled, grid, beam_size=3)
    assert [r.text for r in before] == [r.text for r in after]
    assert [r.logprob for r in before] == pytest.approx([r.logprob for r in after], abs=1e-5)
    with pytest.raises(I2TError, match="at least two"):
        ensemble_captioners([tmp_path / "m5"])


def test_mixed_ensemble_of_an_lstm_and_an_attention_decoder(shapes, tmp_path):
    """Decoders of different types on the same features combine: the config records each member's type and sizes,
    the ensemble reads the grid because one member needs it, and it survives save -> load."""
    from img2text2img.models import load_model
    from img2text2img.models.captioner import CaptionerConfig, ensemble_captioners

    pooled, grid = shapes["pooled"][:8], shapes["grid"][:8]
    members = []
    for seed, decoder in ((5, "lstm"), (6, "attention")):
        torch.manual_seed(seed)
        m = create_captioner(f"small_cnn+{decoder}-tiny", shapes["vocab"], feature_dim=64, dropout=0.0).eval()
        m.save(tmp_path / decoder)
        members.append(m)
    ens = ensemble_captioners([tmp_path / "lstm", tmp_path / "attention"])
    assert ens.config.members == 2 and ens.config.uses_grid
    assert [c.decoder for c in ens.config.member_configs()] == ["lstm", "attention"]
    assert ens.config.member_overrides[1]["feature_proj"] == members[1].config.feature_proj
    _assert_first_step_is_members_mean(ens, members, pooled, grid)
    before = ens.decode_features(pooled, grid, beam_size=3)
    ens.save(tmp_path / "ens")
    loaded = load_model(tmp_path / "ens")
    assert [c.decoder for c in loaded.config.member_configs()] == ["lstm", "attention"]
    after = loaded.decode_features(pooled, grid, beam_size=3)
    assert [r.text for r in before] == [r.text for r in after]
    # an ensemble of ensembles flattens, keeping each member's type
    three = ensemble_captioners([tmp_path / "ens", tmp_path / "lstm"])
    assert [c.decoder for c in three.config.member_configs()] == ["lstm", "attention", "lstm"]
    # a malformed record is refused at load time, in one line
    with pytest.raises(I2TError, match="member_overrides has 1 entries for 2 members"):
        CaptionerConfig(members=2, member_overrides=({"decoder": "lstm"},))
    with pytest.raises(I2TError, match="member_overrides may set only"):
        CaptionerConfig(members=1, member_overrides=({"vocab_size": 3},))
    # members must still read the same features
    other = create_captioner("mobilenet_v2+lstm-tiny", shapes["vocab"], feature_dim=64)
    with pytest.raises(I2TError, match="same encoder"):
        ensemble_captioners([members[0], other])


def test_weight_average_of_captioners(shapes, tmp_path):
    """`average_captioners` (i2t average) gives the mean of the members' weights, keeps the first's search, and
    refuses members it cannot average."""
    from img2text2img.models.captioner import average_captioners, ensemble_captioners

    pooled, grid = shapes["pooled"][:8], shapes["grid"][:8]
    members = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        members.append(create_captioner("small_cnn+attention-tiny", shapes["vocab"], feature_dim=64).eval())
    members[0].settings.beam_size, members[1].settings.length_alpha = 4, 1.3
    avg = average_captioners(members)
    for name, w in avg.decoder.state_dict().items():
        want = (members[0].decoder.state_dict()[name] + members[1].decoder.state_dict()[name]) / 2
        assert torch.allclose(w, want, atol=1e-6), name
    assert (avg.settings.beam_size, avg.settings.length_alpha) == (4, members[0].settings.length_alpha)
    # the average of a model with itself is that model
    same = average_captioners([members[0], members[0]])
    assert [r.text for r in same.decode_features(pooled, grid)] == [r.text for r in members[0].decode_features(pooled, grid)]
    avg.save(tmp_path / "avg")
    assert [r.text for r in load_captioner(tmp_path / "avg").decode_features(pooled, grid)] == \
        [r.text for r in avg.decode_features(pooled, grid)]
    lstm = create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64)
    with pytest.raises(I2TError, match="different architectures"):
        average_captioners([members[0], lstm])
    with pytest.raises(I2TError, match="at least two"):
        average_captioners([members[0]])
    # captioners that store their (fine-tuned) encoder: the encoders are averaged too; an ensemble still refuses them
    from img2text2img.models.encoders import create_encoder

    stored = []
    for seed in (7, 8):
        torch.manual_seed(seed)
        cap = create_captioner("small_cnn+attention-tiny", shapes["vocab"], feature_dim=64, store_encoder=True)
        cap.attach_encoder(create_encoder("small_cnn", pretrained=False))
        stored.append(cap.eval())
    avg = average_captioners(stored)
    for name, w in avg.encoder.state_dict().items():
        a, b = (m.encoder.state_dict()[name] for m in stored)
        assert torch.allclose(w.double(), (a.double() + b.double()) / 2, atol=1e-6) if w.is_floating_point() \
            else torch.equal(w, a), name
    avg.save(tmp_path / "avg-enc")
    again = load_captioner(tmp_path / "avg-enc")
    assert all(torch.equal(v, avg.encoder.state_dict()[k]) for k, v in again.encoder.state_dict().items())
    with pytest.raises(I2TError, match="store their own encoder"):
        ensemble_captioners(stored)


@pytest.mark.skipif(not (SHIPPED_SHAPES / "config.json").exists(), reason="shapes captioner not shipped yet")
def test_beam_search_drops_finished_images_without_changing_results():
    """Images whose beams have all ended leave the batch (beam_search). With a trained captioner, captions of
    different lengths end at different steps, so the batch shrinks several times; every image must still get
    exactly the words and score it gets when decoded alone."""
    from img2text2img.models.captioner import load_captioner

    model = load_captioner(SHIPPED_SHAPES)
    ds = load_dataset("shapes")
    images = [load_image(ds.image_path(i)) for i in ds.split("val")[:12]]
    with torch.no_grad():
        pooled, grid = model.encode_images(images)
        together = model.decode_features(pooled, grid, beam_size=3)
        alone = [model.decode_features(pooled[i:i + 1], grid[i:i + 1], beam_size=3)[0] for i in range(12)]
    assert len({len(r.tokens) for r in together}) >= 2  # images did finish at different steps
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.logprob for r in together] == pytest.approx([r.logprob for r in alone], abs=1e-4)


@pytest.mark.skipif(not (SHIPPED_SHAPES / "config.json").exists(), reason="shapes captioner not shipped yet")
def test_several_batches_encoded_ahead_give_the_same_captions():
    """caption_images encodes the next batch on a second thread while it decodes this one; the captions must be
    those of each batch on its own, in order."""
    from img2text2img.models.captioner import load_captioner

    model = load_captioner(SHIPPED_SHAPES)
    ds = load_dataset("shapes")
    images = [load_image(ds.image_path(i)) for i in ds.split("val")[:10]]
    ahead = model.caption_images(images, beam_size=3, batch_size=4)  # 3 batches
    alone = [r for i in range(0, 10, 4) for r in model.caption_images(images[i:i + 4], beam_size=3, batch_size=4)]
    assert [r.text for r in ahead] == [r.text for r in alone] and len(ahead) == 10


def _grouped_greedy_and_saved_alike(model: Captioner, shapes: dict, tmp_path: Path) -> Captioner:
    """The checks every attention-decoder variant must pass: features given once per image (`index`) are the same
    function as features per caption, beam width 1 equals greedy, and save -> load captions alike (the model gets
    the shapes encoder, stored). Returns the loaded model for the variant's own checks."""
    index = torch.tensor([0, 0, 1, 2, 2, 1])
    tokens = shapes["tokens"][torch.arange(6) * 5]
    with torch.no_grad():
        want, _ = model(tokens, shapes["pooled"][:3][index], shapes["grid"][:3][index])
        got, _ = model(tokens, shapes["pooled"][:3], shapes["grid"][:3], index=index)
        g_ids, _ = greedy_search(model.decoder, shapes["pooled"][:8], shapes["grid"][:8], 12)
        b_ids, _ = beam_search(model.decoder, shapes["pooled"][:8], shapes["grid"][:8], 1, 12)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(g_ids, b_ids)
    model.attach_encoder(shapes["enc"])
    model.config.store_encoder = True
    ds = shapes["ds"]
    images = [load_image(ds.image_path(i)) for i in ds.split("test")[:4]]
    before = model.caption_images(images, beam_size=3)
    model.save(tmp_path / "cap")
    loaded = load_captioner(tmp_path / "cap")
    assert [r.text for r in loaded.caption_images(images, beam_size=3)] == [r.text for r in before]
    return loaded


def test_attribute_words_are_detected_attended_saved_and_added_to_a_trained_model(shapes, tmp_path):
    """`attribute_words`: a word-detector head picks content words that join the grid as cells. It learns to find
    the words of an image's captions, never proposes function words or specials, keeps grouped batches the same
    function, beam 1 = greedy, save -> load identical; and it can be added to a model trained without it."""
    vocab = shapes["vocab"]
    torch.manual_seed(0)
    model = create_captioner("small_cnn+attention-tiny", vocab, feature_dim=64, dropout=0.0, attribute_words=3)
    allowed = model.decoder.attr_allowed
    assert not allowed[:4].any() and not allowed[vocab.stoi["a"]] and allowed[vocab.stoi["circle"]]
    _train_on_shapes(model, shapes, steps=60)
    model.eval()
    with torch.no_grad():
        _, logits = model.decoder.image_state(shapes["pooled"][:64], shapes["grid"][:64])
    top = logits.topk(3, dim=-1).indices
    assert allowed[top].all()  # only content words are ever proposed
    hits = [len(set(t.tolist()) & set(shapes["tokens"][i].tolist())) for i, t in enumerate(top)]
    assert sum(hits) / len(hits) >= 1.5, hits  # of 3 detected words, most are in the training caption

    loaded = _grouped_greedy_and_saved_alike(model, shapes, tmp_path)
    assert loaded.config.attribute_words == 3 and torch.equal(loaded.decoder.attr_allowed, allowed)

    plain = create_captioner("small_cnn+attention-tiny", vocab, feature_dim=64)
    plain.attach_encoder(shapes["enc"])
    plain.config.store_encoder = True
    plain.save(tmp_path / "plain")
    recipe = CaptionerRecipe(val_images=8, group_images=True, attribute_words=2)
    added = CaptionerTask(recipe, shapes["ds"], init_from=str(tmp_path / "plain")).model
    assert added.config.attribute_words == 2
    old = plain.state_dict()
    assert all(torch.equal(v, old[k]) for k, v in added.state_dict().items() if k in old)
    with pytest.raises(I2TError, match="needs the attention decoder"):
        captioner_config("small_cnn+lstm-tiny", attribute_words=2)


LITE0_WEIGHTS = (weights_dir() or Path("no-shared-weights")) / "timm_tf_efficientnet_lite0_imagenet.safetensors"


@pytest.mark.skipif(not LITE0_WEIGHTS.exists(), reason="EfficientNet-Lite0 ImageNet weights not beside the repo")
def test_fine_tuning_the_encoders_last_blocks_trains_them_alone_and_round_trips(tmp_path):
    """--encoder-trainable-blocks: only the encoder's last blocks move, the loss falls, and the checkpoint holds the
    fine-tuned encoder, so save -> load -> caption is identical without the pretrained file's weights."""
    from dataclasses import replace

    from img2text2img.models import load_model

    recipe = CaptionerRecipe(model="efficientnet_lite0+attention-tiny", min_count=1, val_images=8, group_images=True,
                             encoder_trainable_blocks=2)
    ds = load_dataset("shapes:40")
    torch.manual_seed(0)
    task = CaptionerTask(recipe, ds)
    model = task.model
    assert model.config.store_encoder
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.conv_head", "model.bn2")) for n in trainable)
    fresh = create_encoder("efficientnet_lite0", pretrained=True).state_dict()
    start, end = _task_loss_before_and_after(task, fixed_images=6, per_batch=3, steps=40)
    print(f'encoder fine-tuning: fixed-batch loss {start:.3f} -> {end:.3f}')
    assert end < 0.85 * start
    now = model.encoder.state_dict()
    moved = {k for k in fresh if not torch.equal(fresh[k], now[k])}
    assert moved and all(k.startswith(("model.conv_head", "model.bn2")) for k in moved)
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=2, batch_size=3, progress=False, eval_every=2, device="cpu")
    train_captioner(recipe, cfg, ds)
    run = load_model(tmp_path / "run" / "last")
    assert run.config.store_encoder and run.encoder is not None
    images = [load_image(ds.image_path(i)) for i in ds.split("test")[:3]]
    before = run.caption_images(images, beam_size=2)
    run.save(tmp_path / "again")
    after = load_model(tmp_path / "again").caption_images(images, beam_size=2)
    assert [r.text for r in before] == [r.text for r in after]
    assert [r.logprob for r in before] == pytest.approx([r.logprob for r in after], abs=1e-5)
    # a run from it that freezes the encoder again keeps the fine-tuned weights, not the pretrained file's
    frozen = CaptionerTask(replace(recipe, encoder_trainable_blocks=0), ds,
                           init_from=str(tmp_path / "run" / "last")).model
    assert frozen.config.store_encoder and not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(torch.equal(v, run.encoder.state_dict()[k]) for k, v in frozen.encoder.state_dict().items())


def test_the_shipped_flickr8k_captioner_fits_the_package_budget():
    """The package's default captioner, its fine-tuned encoder included, stays within the 25 MB budget."""
    from img2text2img.models.captioner import default_captioner_dir

    assert sum(f.stat().st_size for f in default_captioner_dir().iterdir()) < 25e6


def test_the_shipped_flickr8k_captioner_is_self_contained_and_sees_a_dog(monkeypatch, flickr8k_dog_photo):
    """The default captioner stores its fine-tuned encoder, so it needs no weights file (the weights lookup is
    pointed at nothing), and it names the dog in a photo whose five references all say dog."""
    from img2text2img import locations

    monkeypatch.setattr(locations, "weights_dir", lambda explicit=None: None)
    model = load_captioner()
    assert model.config.store_encoder
    [result] = model.caption_images([load_image(flickr8k_dog_photo)], beam_size=3)
    assert "dog" in result.text.split()


def test_warm_up_builds_the_fast_encoder_before_the_first_photo():
    """`i2t caption --json` times each photo; warm_up does the one-time set-up (the encoder's fast frozen copy)
    beforehand, so the first photo's milliseconds are its own."""
    from PIL import Image

    from img2text2img.models.encoders import create_encoder
    from img2text2img.vocab import Vocabulary

    torch.manual_seed(0)
    cap = create_captioner("small_cnn+lstm-tiny", Vocabulary.build(["a red circle"]), 64, store_encoder=True)
    cap.attach_encoder(create_encoder("small_cnn", pretrained=False))
    cap.eval()
    assert getattr(cap, "_fast_encoder", None) is None
    cap.warm_up()
    built = cap._fast_encoder
    assert built is not None
    cap.encode_images([Image.new("RGB", (64, 48), (200, 30, 30))])
    assert cap._fast_encoder is built


def test_old_checkpoint_configs_migrate_to_network_and_settings():
    """A config.json written before network, recipe and decoding settings were kept apart still loads: decoding keys
    become the settings, training keys are dropped, and removed options load only at their old default."""
    from img2text2img.models.captioner import migrate_config

    old = {"encoder": "small_cnn", "decoder": "attention", "feature_dim": 64, "vocab_size": 48, "refine_layers": 0,
           "label_smoothing": 0.1, "alpha_c": 1.0, "attribute_weight": 0.02, "encoder_trainable_blocks": 5,
           "beam_size": 5, "length_alpha": 1.0, "no_repeat_ngram": 0, "mirror_average": False,
           "member_overrides": []}
    cfg, settings = migrate_config(old, {})
    assert (cfg.encoder, cfg.decoder, cfg.member_overrides) == ("small_cnn", "attention", ())
    assert (settings.beam_size, settings.length_alpha) == (5, 1.0)
    cfg, settings = migrate_config({"encoder": "small_cnn"}, {})  # keys it never had take the old defaults
    assert (settings.beam_size, settings.length_alpha) == (3, 0.7)
    for key, value in (("refine_layers", 2), ("no_repeat_ngram", 3), ("mirror_average", True)):
        with pytest.raises(I2TError, match=f"{key}={value!r} is an option this version no longer has"):
            migrate_config({**old, key: value}, {})
    with pytest.raises(I2TError, match="does not know the keys"):
        migrate_config({**old, "nonsense": 1}, {})


def test_glove_cannot_change_a_model_started_from_init_from(shapes, tmp_path):
    create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64).save(tmp_path / "start")
    with pytest.raises(I2TError, match="--glove cannot change when a run starts from --init-from"):
        CaptionerTask(CaptionerRecipe(glove=True), shapes["ds"], init_from=str(tmp_path / "start"))


@pytest.mark.parametrize("command", ["average", "ensemble"])
def test_average_and_ensemble_record_parents_and_never_replace_what_is_not_a_model(shapes, tmp_path, command):
    """Their output records the members as parents (for `i2t ship`); an existing file or foreign folder is never
    replaced, an existing model only with --force."""
    from img2text2img.cli import main
    from img2text2img.models import load_model

    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        create_captioner("small_cnn+lstm-tiny", shapes["vocab"], feature_dim=64).save(tmp_path / f"m{seed}")
        members.append(str(tmp_path / f"m{seed}"))
    out = tmp_path / "out"
    assert main([command, *members, "--out", str(out)]) == 0
    info = json.loads((out / "config.json").read_text())["info"]
    assert [p["name"] for p in info["parents"]] == ["m1", "m2"] and info["command"].startswith(f"i2t {command}")
    assert json.loads((out / "summary.json").read_text())["parents"] == members
    load_model(out)
    assert main([command, *members, "--out", str(out)]) == 2  # a model: only with --force
    assert main([command, *members, "--out", str(out), "--force"]) == 0
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    for target in ("notes.txt", "photos"):
        assert main([command, *members, "--out", str(tmp_path / target), "--force"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "photos" / "a.jpg").exists()
