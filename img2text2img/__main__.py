"""`python -m img2text2img ...` is `i2t ...` (and lets `torchrun -m img2text2img train ...` launch training)."""
from img2text2img.cli import run

run()
