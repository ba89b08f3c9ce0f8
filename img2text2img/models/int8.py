"""Where `from img2text2img.models.int8 import ...` keeps working: the int8 path lives in `models/encoders/int8.py`."""
from img2text2img.models.encoders.int8 import ConvSite, QuantizedEncoder, ReLU6Observer, plain_trunk, quantize_trunk

__all__ = ["ConvSite", "QuantizedEncoder", "ReLU6Observer", "plain_trunk", "quantize_trunk"]
