"""Write what the torch-free open vocabulary reads (img2text2img/openvocab/scoring.py): an encoder's ImageNet head as
safetensors (heads/<encoder>.safetensors), and with --sources MODEL the source word of every table word that
captioner's vocabulary lacks (sources/<vocab sha>.json, nearest in GloVe or "animal").

    python scripts/export_openvocab_head.py --encoder efficientnet_lite0 --sources captioner
"""
from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import torch
from safetensors.torch import save_file

from img2text2img.io import write_text_atomic
from img2text2img.models.captioner import load_captioner
from img2text2img.models.captioner.openvocab import source_word
from img2text2img.models.encoders import create_encoder
from img2text2img.openvocab import load_word_table
from img2text2img.openvocab.scoring import ADAPTERS, HEADS, SOURCES, sources_path
from img2text2img.vocab import load_word_vectors


def export_head(name: str) -> None:
    model = create_encoder(name, keep_head=True).model
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise SystemExit(f"{name}: its ImageNet head is not one linear layer on the pooled features")
    HEADS.mkdir(exist_ok=True)
    out = HEADS / f"{name}.safetensors"
    save_file({"weight": head.weight.detach().float().contiguous(), "bias": head.bias.detach().float().contiguous()},
              str(out))
    print(f"wrote {out}")


def export_sources(model_name: str) -> None:
    model = load_captioner(model_name)
    table, vectors, vocab = load_word_table(), load_word_vectors(), model.vocab
    sources = {w: s for w in table.words if w not in vocab.stoi
               and (s := source_word(w, vocab, vectors, table)) is not None}
    SOURCES.mkdir(exist_ok=True)
    out = sources_path(vocab.sha256)
    write_text_atomic(out, json.dumps({"model": model_name, "vocab_sha256": vocab.sha256,
                                       "date": date.today().isoformat(), "sources": sources}, indent=0) + "\n")
    print(f"wrote {out}: {len(sources)} words")
    if model.config.store_encoder:  # the runtime finds this model's adapter by its weights' hash
        from img2text2img.models.names import resolve_model
        from img2text2img.openvocab.detector import encoder_state_key
        from img2text2img.openvocab.scoring import adapter_keys

        meta = json.loads((Path(resolve_model(model_name, "captioner", None)) / "config.json").read_text(encoding="utf-8"))
        keys = {**adapter_keys(), meta["weights_sha256"]: encoder_state_key(model.ensure_encoder())}
        write_text_atomic(ADAPTERS / "models.json", json.dumps(keys, indent=1) + "\n")
        print(f"wrote {ADAPTERS / 'models.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet_lite0")
    ap.add_argument("--sources", default=None, help="captioner (shipped name or folder) to save the sources for")
    a = ap.parse_args()
    torch.set_num_threads(1)
    export_head(a.encoder)
    if a.sources:
        export_sources(a.sources)


if __name__ == "__main__":
    main()
