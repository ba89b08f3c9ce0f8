"""Caption scores: nltk corpus BLEU on the project's own tokens, and the COCO caption scorer that papers report.

Two scorers on purpose. `corpus_bleu_scores` (nltk, no smoothing) is always available and works on token lists
produced by `vocab.tokenize`; `coco_scores` wraps `pycocoevalcap` (PTB tokenizer in Java, BLEU, METEOR, ROUGE-L,
CIDEr-D), whose BLEU differs slightly (its own tokenisation, "closest" reference length, tiny epsilons). Publishing
both lets readers see how much of a BLEU difference is only the scorer.

pycocoevalcap's `Cider` is CIDEr-D in practice: it clips the hypothesis n-gram counts by the reference counts, applies
the Gaussian length penalty (sigma 6) and multiplies by 10, so it is reported here as `cider_d`.
"""
from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence

from img2text2img.errors import I2TError

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (0.5, 0.5),
    "bleu3": (1 / 3, 1 / 3, 1 / 3),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}


def corpus_bleu_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """Cumulative corpus BLEU-1..4 (nltk, no smoothing) -> {"bleu1": .., "bleu4": ..}.

    references[i] is the list of reference token lists for hypothesis i (e.g. the 5 Flickr8k captions), hypotheses[i]
    one token list. Without smoothing an n-gram order with no match at all gives 0, which is the standard figure.
    """
    from nltk.translate.bleu_score import corpus_bleu

    if len(references) != len(hypotheses):
        raise I2TError(f"BLEU: {len(references)} reference sets for {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise I2TError("BLEU: nothing to score")
    refs = [[list(r) for r in rs] for rs in references]
    hyps = [list(h) for h in hypotheses]
    out = {}
    with warnings.catch_warnings():  # nltk warns when an order has zero matches; 0 is the intended value then
        warnings.simplefilter("ignore")
        for name, w in BLEU_WEIGHTS.items():
            out[name] = float(corpus_bleu(refs, hyps, weights=w))
    return out


def coco_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str], meteor: bool = True) -> dict[str, float]:
    """The COCO caption metrics on raw strings: PTB-tokenised BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

    references[i] is the list of raw reference captions of image i, hypotheses[i] its generated caption. Needs the
    `eval` extra (pycocoevalcap) and Java; raises a one-line `I2TError` when either is missing. Keys are prefixed
    `coco_` so they never collide with the nltk figures.
    """
    if len(references) != len(hypotheses):
        raise I2TError(f"COCO scores: {len(references)} reference sets for {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise I2TError("COCO scores: nothing to score")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise I2TError("pycocoevalcap is not installed: pip install 'img2text2img[eval]' (needs Java too)") from None
    if shutil.which("java") is None:
        raise I2TError("the COCO caption scorer needs Java on PATH (install a JRE, e.g. openjdk-17-jre-headless)")
    gts = {i: [{"caption": str(r)} for r in refs] for i, refs in enumerate(references)}
    res = {i: [{"caption": str(h) if str(h).strip() else "."}] for i, h in enumerate(hypotheses)}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts_t, res_t, verbose=0)
    for n, b in enumerate(bleu, start=1):
        out[f"coco_bleu{n}"] = float(b)
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        m = Meteor()
        try:
            out["coco_meteor"] = float(m.compute_score(gts_t, res_t)[0])
        finally:
            _close_meteor(m)
    out["coco_rouge_l"] = float(Rouge().compute_score(gts_t, res_t)[0])
    out["coco_cider_d"] = float(Cider().compute_score(gts_t, res_t)[0])
    return out


def _close_meteor(m) -> None:
    # Meteor keeps a Java subprocess; stop it now rather than at interpreter exit.
    proc = getattr(m, "meteor_p", None)
    if proc is None:
        return
    try:
        with m.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait()
    except (OSError, ValueError):
        pass
