"""Post-training static int8 quantization of a frozen CNN trunk for fast CPU captioning (opt-in).

Why: in batched captioning on a small CPU the encoder is most of the time, and EfficientNet-Lite was designed to be
quantized (ReLU6, no squeeze-excite). Plain `prepare_fx` on the timm model is however *slower* than the frozen fp32
graph, for reasons handled here:

* timm's TF-"same" convolutions pad asymmetrically (stride 2 on an even size: p-1 pixels before, p after). Done as a
  zero-pad + `padding=0` convolution, int8 depthwise convolutions leave fbgemm's fast path (far slower), and int8
  padding / cropping is slow too. Mirrored, the padding becomes (p, p-1), and a symmetric padding p then gives
  exactly the same outputs. So the image is flipped (height and width) on the way in, every kernel is flipped, every
  convolution gets symmetric padding, and the feature map is flipped back on the way out. 1x1 convolutions, adds and
  activations do not care about orientation; `plain_trunk` checks the rewrite against the original in fp32.
* a ReLU6 after an int8 convolution costs about as much as the convolution (a clamp plus a copy). Instead the
  convolution's output is observed after relu6 (`ReLU6Observer`), so it is quantized to a range [0, m], m <= 6:
  saturation *is* the ReLU6, and the ReLU6 nodes are removed after conversion. It also spends all 256 levels on
  the range the activation really has, not on the negative pre-activations.
* the first depthwise convolution stays fp32 by default (see `quantize_trunk`): it alone costs most of the accuracy.
* AVX2 without VNNI multiplies u8 x s8 pairs into a saturating int16; with 8-bit activations and 8-bit weights that
  overflows and features drift badly. Weights therefore use 7 bits
  (per-channel, symmetric), which keeps every pair in range.

BatchNorm (timm's `BatchNormAct2d` included) is folded into the preceding convolution before tracing, so FX sees
plain Conv2d -> activation chains. Calibration is deterministic: the given images, in order, through histogram
observers. Everything works on a private copy; the encoder itself is never modified.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from img2text2img.models.encoders.base import Features, pooled_and_grid

Run = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (trunk, images [B,3,S,S]) -> fmap [B, D, h, w]


@dataclass(frozen=True)
class ConvSite:
    """One (BatchNorm-folded) convolution of the plain trunk: its module name, the name of the activation module
    that took BatchNorm's place (None if none), whether it is depthwise and whether a ReLU6 follows it."""

    name: str
    act: str | None
    depthwise: bool
    relu6: bool


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF-"same" (before, after) padding of one spatial dim, as timm computes it at run time."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, padding: tuple[int, int]) -> nn.Conv2d:
    """A plain Conv2d (bias on, kernel flipped in height and width) computing bn(conv(x)) in the mirrored frame."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                      conv.groups, bias=True)
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    scale = bn.weight.detach() * inv_std if bn.affine else inv_std
    shift = (bn.bias.detach() if bn.affine else 0.0) - bn.running_mean * scale
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    fused.weight.data.copy_((conv.weight.detach() * scale.reshape(-1, 1, 1, 1)).flip(-1, -2))
    fused.bias.data.copy_(bias * scale + shift)
    return fused.eval()


def _mirrored_padding(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int]:
    """The symmetric padding that reproduces `conv` on mirrored input; ValueError if there is none."""
    pads = []
    for dim in range(2):
        k, s, d, n = conv.kernel_size[dim], conv.stride[dim], conv.dilation[dim], size[dim]
        if type(conv).__name__ == "Conv2dSame":
            before = _same_pads(n, k, s, d)[0]
            n_out = math.ceil(n / s)
        elif isinstance(conv.padding, tuple):
            before = conv.padding[dim]
            n_out = (n + 2 * before - d * (k - 1) - 1) // s + 1
        else:
            raise ValueError(f"padding {conv.padding!r} not supported")
        after = (n_out - 1) * s + d * (k - 1) + 1 - n - before  # the padding the last window really uses
        p = after  # mirrored, `after` comes first
        if p < 0 or before > p or (n + 2 * p - d * (k - 1) - 1) // s + 1 != n_out:
            raise ValueError(f"{conv} at size {n}: padding ({before}, {after}) has no symmetric mirror")
        pads.append(p)
    return pads[0], pads[1]


class _Mirrored(nn.Module):
    """run(model, x) in the mirrored frame: flip in, flip out (cheap: a 3-channel image and the last feature map)."""

    def __init__(self, model: nn.Module, run: Run):
        super().__init__()
        self.model, self.run = model, run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.model, x.flip(-1, -2)).flip(-1, -2)


def plain_trunk(model: nn.Module, run: Run, example: torch.Tensor) -> tuple[nn.Module, list[ConvSite]]:
    """A mirrored copy of `model` with BatchNorm folded and only symmetric convolution padding (module docstring).

    `example` [B, 3, S, S] fixes the input size the padding rewrite holds for. The copy takes *mirrored* images
    (`_Mirrored` wraps it). Returns (the copy, its convolutions in execution order). Raises
    ValueError when the model cannot be rewritten exactly (a convolution not followed by BatchNorm, odd padding,
    a module that is not mirror-symmetric).
    """
    model = copy.deepcopy(model).eval()
    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.__setitem__(mod, tuple(i[0].shape[-2:])))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        want = run(model, example[:2])
    for h in hooks:
        h.remove()
    names = {m: n for n, m in model.named_modules()}
    order = {names[m]: i for i, m in enumerate(sizes)}  # the hooks fired in execution order
    sites: list[ConvSite] = []
    for parent_name, parent in list(model.named_modules()):
        kids = list(parent.named_children())
        for i, (c_name, conv) in enumerate(kids):
            if not (isinstance(conv, nn.Conv2d) and conv in sizes):
                continue
            if i + 1 >= len(kids) or not isinstance(kids[i + 1][1], nn.BatchNorm2d):
                raise ValueError(f"convolution {parent_name}.{c_name} is not followed by BatchNorm")
            b_name, bn = kids[i + 1]
            setattr(parent, c_name, _fold_bn(conv, bn, _mirrored_padding(conv, sizes[conv])))
            act = getattr(bn, "act", None)  # timm BatchNormAct2d carries its activation (and an eval-time no-op)
            setattr(parent, b_name, act if act is not None else nn.Identity())
            nxt_name, nxt = (b_name, act) if act is not None else (kids[i + 2] if i + 2 < len(kids) else (None, None))
            prefix = f"{parent_name}." if parent_name else ""
            sites.append(ConvSite(prefix + c_name, prefix + nxt_name if nxt_name and not isinstance(nxt, nn.Identity)
                                  else None, conv.groups > 1 and conv.groups == conv.in_channels,
                                  isinstance(nxt, nn.ReLU6)))
    with torch.no_grad():
        got = _Mirrored(model, run)(example[:2])
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
        raise ValueError("the mirrored, BatchNorm-folded trunk does not reproduce the original")
    return model, sorted(sites, key=lambda c: order[c.name])


class ReLU6Observer(torch.ao.quantization.observer.HistogramObserver):
    """A histogram observer of relu6(x) for the output of a conv that feeds a ReLU6.

    Its range is then [0, m] with m <= 6: zero point 0, and saturation at m reproduces the ReLU6 (exactly at 0,
    and at the top wherever the histogram search does not clip below 6 on purpose). So the ReLU6 itself can go."""

    def __init__(self, **kwargs):
        super().__init__(dtype=torch.quint8, reduce_range=False, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        super().forward(x.clamp(0.0, 6.0))
        return x


def _observe_relu6_outputs(prepared: torch.fx.GraphModule, convs: list[str]) -> None:
    """Give each of `convs` (each feeds a ReLU6) a `ReLU6Observer` on its output. Input observers, e.g. the stem's
    that sees the image, keep the plain histogram (a qconfig cannot tell a node's input and output apart)."""
    from torch.ao.quantization.observer import ObserverBase

    names = {f"model.{n}" for n in convs}
    modules = dict(prepared.named_modules())
    for node in prepared.graph.nodes:
        if node.op != "call_module" or node.target not in names:
            continue
        observer = ReLU6Observer()
        cur = node
        while len(cur.users) == 1:  # conv -> observer [-> ReLU6 -> observer (shared)]
            (user,) = cur.users
            mod = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(mod, ObserverBase):
                setattr(prepared, user.target, observer)
            elif not isinstance(mod, nn.ReLU6):
                break
            cur = user


def _drop_saturated_relu6(q: torch.fx.GraphModule) -> int:
    """Remove ReLU6 nodes whose input is an int8 conv quantized to [0, m], m <= 6 (the clamp is then a no-op)."""
    modules = dict(q.named_modules())
    dropped = 0
    for node in list(q.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.ReLU6):
            continue
        src = node.args[0]
        conv = modules.get(src.target) if getattr(src, "op", None) == "call_module" else None
        if conv is not None and hasattr(conv, "scale") and int(conv.zero_point) == 0 \
                and float(conv.scale) * 255 <= 6.0 * (1 + 1e-6):
            node.replace_all_uses_with(src)
            q.graph.erase_node(node)
            dropped += 1
    q.graph.lint()
    q.recompile()
    return dropped


def quantize_trunk(model: nn.Module, run: Run, calibration: torch.Tensor, batch_size: int = 32,
                   fp32_convs: Sequence[str] | None = None) -> nn.Module:
    """An int8 copy of `run(model, x) -> fmap`, calibrated on `calibration` [N, 3, S, S].

    Deterministic: the same images in the same order give the same model. The result accepts any batch size at
    the calibration's S x S and returns the dequantized fp32 feature map. Raises on failure (callers fall back to
    fp32).

    `fp32_convs` names convolutions (see `plain_trunk`) kept in fp32 with their activation. By default that is the
    first depthwise convolution: right after the stem its 32 channels have very different ranges, and one per-tensor
    int8 scale crushes the small ones; kept in fp32 it costs a few percent of the run time (docs/BENCHMARKS.md).
    """
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise RuntimeError("this torch build has no x86 int8 backend")
    torch.backends.quantized.engine = "x86"
    plain, sites = plain_trunk(model, run, calibration)
    if fp32_convs is None:
        fp32_convs = [next(c.name for c in sites if c.depthwise)] if any(c.depthwise for c in sites) else []
    unknown = set(fp32_convs) - {c.name for c in sites}
    if unknown:
        raise ValueError(f"no such convolution(s): {sorted(unknown)}")
    qconfig = QConfig(activation=HistogramObserver.with_args(dtype=torch.quint8, reduce_range=False),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                                quant_min=-64, quant_max=63))
    mapping = QConfigMapping().set_global(qconfig)
    for c in sites:
        if c.name in fp32_convs:
            for name in (c.name, c.act):
                if name:
                    mapping.set_module_name(f"model.{name}", None)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # FX / observer deprecation chatter
        prepared = prepare_fx(_Mirrored(plain, run), mapping, example_inputs=(calibration[:1],))
        _observe_relu6_outputs(prepared, [c.name for c in sites if c.relu6 and c.name not in fp32_convs])
        for i in range(0, len(calibration), batch_size):
            prepared(calibration[i:i + batch_size])
        q = convert_fx(prepared)
    _drop_saturated_relu6(q)
    return q.eval()


class QuantizedEncoder:
    """images [B, 3, S, S] -> (pooled [B, D], grid [B, N, D]) through an int8 trunk: the same outputs as
    `Encoder.forward`, for the image size it was calibrated at (the padding rewrite is exact only there)."""

    def __init__(self, trunk: nn.Module, image_hw: tuple[int, int]):
        self.trunk = trunk
        self.image_hw = image_hw

    def __call__(self, images: torch.Tensor) -> Features:
        if tuple(images.shape[-2:]) != self.image_hw:
            raise ValueError(f"int8 encoder was calibrated for {self.image_hw} images, got {tuple(images.shape[-2:])}")
        return pooled_and_grid(self.trunk(images))  # the trunk's map is B x D x h x w, fp32
