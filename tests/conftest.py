"""Shared test settings."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and CI has 2 shared cores: extra intra-op threads only spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def flickr8k_dog_photo():
    """The path of a Flickr8k photo of a black retriever on grass, all five of whose captions mention a dog: what
    a real pretrained model must recognise. Skips where Flickr8k is not present."""
    from img2text2img import locations
    from img2text2img.errors import I2TError

    try:
        path = locations.flickr8k_dir() / "images" / "1026685415_0431cbf574.jpg"
    except I2TError:
        pytest.skip("Flickr8k not present")
    if not path.exists():
        pytest.skip("Flickr8k photo not present")
    return path


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A 160-picture shapes set, its vocabulary and its training pictures held in memory: what the generator tests
    train on (a test module may define its own `shapes`)."""
    from img2text2img.data import load_dataset
    from img2text2img.train.generator import load_image_captions
    from img2text2img.vocab import Vocabulary

    ds = load_dataset("shapes:160", data_dir=tmp_path_factory.mktemp("shapes") / "s")
    vocab = Vocabulary.build(ds.all_captions("train"))
    return ds, vocab, load_image_captions(ds, "train", vocab)
