"""`i2t serve` in process: every endpoint and every kind of bad input, on the small shapes models (seconds)."""
from __future__ import annotations

import io
import json
import math
import struct
import threading
import time
import zlib

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="i2t serve needs its extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient

from img2text2img.data.shapes import draw_caption
from img2text2img.models.captioner.api import caption_loaded
from img2text2img.serve.app import MAX_N, MAX_PROMPT_CHARS, create_app
from img2text2img.serve.attention import caption_with_attention, crop_box, has_attention, word_attention
from img2text2img.serve.models import ServedModels, default_data
from img2text2img.serve.uploads import MAX_UPLOAD_BYTES, UploadTooLarge, decode_upload
from img2text2img.vocab import START_ID


@pytest.fixture(scope="module")
def models() -> ServedModels:
    torch.set_num_threads(1)
    return ServedModels.load(data="shapes", device="cpu")


@pytest.fixture(scope="module")
def client(models, tmp_path_factory):
    report = tmp_path_factory.mktemp("rt") / "report.html"
    return TestClient(create_app(models, report=report), raise_server_exceptions=False)


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def circle() -> bytes:
    return png(draw_caption("a large red circle on the left", seed=1))


def claims_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (CRC fixed up), as a bomb's header would."""
    data = bytearray(png(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def upload(client, path: str, data: bytes, name: str = "photo.png", **params):
    return client.post(path, files={"image": (name, data, "image/png")}, params=params)


def assert_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


# -- endpoints ------------------------------------------------------------------------------------------------------


def test_health_lists_the_loaded_models(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok"
    assert h["models"]["captioner"]["name"] == "shapes-captioner"
    assert h["models"]["captioner"]["attention"] is True
    assert h["models"]["tagger"]["name"] == "shapes-tagger"
    assert h["models"]["generator"] == {**h["models"]["generator"], "name": "shapes-scene", "guidance": False}
    assert h["limits"] == {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_n": MAX_N, "max_prompt_chars": MAX_PROMPT_CHARS}
    assert h["report"] is None


def test_the_page_is_one_offline_file(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for needed in ('id="photo-input"', "/api/caption", "/api/generate", "/api/roundtrip", "/docs", 'name="viewport"'):
        assert needed in page
    # nothing from elsewhere: no external scripts, styles, fonts or images
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert "<script src" not in page and "<link" not in page


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/health", "/api/caption", "/api/tag", "/api/generate", "/api/roundtrip"} <= set(paths)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text
    # the errors it documents are the ones it gives
    caption = paths["/api/caption"]["post"]["responses"]
    assert {"400", "413", "422"} <= set(caption)
    assert caption["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_the_api_docs_work_offline(client):
    pytest.importorskip("swagger_ui_bundle")
    docs = client.get("/docs").text
    assert "https://" not in docs and "http://" not in docs  # no CDN
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs and client.get(asset).status_code == 200
    spec = client.get("/docs-spec/openapi.json").json()  # the 3.0 form Swagger UI 4 reads
    assert spec["openapi"] == "3.0.3" and '"type": "null"' not in json.dumps(spec)
    guidance = spec["components"]["schemas"]["GenerateRequest"]["properties"]["guidance"]
    assert guidance["type"] == "number" and guidance["nullable"] is True
    images = [v["properties"]["image"] for v in spec["components"]["schemas"].values() if "image" in v.get("properties", {})]
    assert images and all(im["format"] == "binary" for im in images)


def test_caption_gives_caption_tags_and_attention(client, models, circle):
    r = upload(client, "/api/caption", circle)
    assert r.status_code == 200, r.text
    body = r.json()
    # the same caption as the library gives for the same picture
    want = caption_loaded(models.captioner, [decode_upload(circle)])[0]
    assert body["caption"] == want.text and "circle" in body["caption"]
    assert body["logprob"] == pytest.approx(want.logprob, abs=1e-3)
    assert body["tags"] and all(isinstance(t, str) and 0 <= s <= 1 for t, s in body["tags"])
    assert body["ms"] >= 0 and body["queue_ms"] >= 0
    att = body["attention"]
    assert att["words"] == body["tokens"] and len(att["maps"]) == len(body["tokens"])
    h, w = att["grid"]
    assert all(len(m) == h * w and 0 < sum(m) <= 1.005 for m in att["maps"])
    assert att["box"] == [0.0, 0.0, 1.0, 1.0]  # a square picture: the encoder sees all of it
    assert upload(client, "/api/caption", circle, attention="false").json()["attention"] is None


def test_tag_gives_scored_tags(client, circle):
    r = upload(client, "/api/tag", circle, top=2)
    assert r.status_code == 200, r.text
    tags = r.json()["tags"]
    assert 1 <= len(tags) <= 2 and "red" in {t for t, _ in tags} | {"large", "circle"}
    assert [s for _, s in tags] == sorted((s for _, s in tags), reverse=True)


def test_generate_returns_a_png_grid(client):
    r = client.post("/api/generate", json={"prompt": "a small blue square on the right", "n": 4, "seed": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-i2t-count"] == "4"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)  # 2x2 pictures of 64x64 with 2-pixel gaps
    again = client.post("/api/generate", json={"prompt": "a small blue square on the right", "n": 4, "seed": 3})
    assert again.content == r.content  # same seed, same pictures
    one = client.post("/api/generate", json={"prompt": "a small blue square on the right", "n": 1})
    assert Image.open(io.BytesIO(one.content)).size == (64, 64)


def test_generate_reports_unknown_words_in_a_header(client):
    r = client.post("/api/generate", json={"prompt": "a red zeppelin", "n": 1})
    assert r.status_code == 200
    assert "zeppelin" in " ".join(json.loads(r.headers["x-i2t-warnings"]))


def test_roundtrip_draws_captions_and_scores(client):
    r = client.post("/api/roundtrip", json={"prompt": "a large green triangle at the top", "seed": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["drawing"].startswith("data:image/png;base64,")
    assert body["caption"] and set(body["bleu"]) == {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert all(0 <= v <= 1 for v in body["bleu"].values()) and body["bleu"]["bleu1"] > 0
    assert body["attention"]["words"] == body["caption"].split()


def test_report_link_serves_the_latest_report(models, tmp_path):
    report = tmp_path / "report.html"
    c = TestClient(create_app(models, report=report))
    assert_error(c.get("/report"), 404, "roundtrip-eval")
    report.write_text("<html>round trip</html>", encoding="utf-8")
    assert c.get("/api/health").json()["report"] == "/report"
    assert "round trip" in c.get("/report").text


def test_an_unloaded_model_is_503(tmp_path, models):
    c = TestClient(create_app(ServedModels(captioner=models.captioner, names={"captioner": "x"}), report=None))
    assert_error(c.post("/api/generate", json={"prompt": "a dog"}), 503, "generator")
    assert c.get("/api/health").json()["models"]["generator"] is None


# -- bad input: always a 4xx with {"error": ...}, and the server goes on -------------------------------------------


@pytest.mark.parametrize("data,words", [
    (b"this is not a picture", ["not an image"]),
    (b"", ["empty"]),
    (png(Image.new("RGB", (64, 64)))[:60], ["broken or truncated"]),
])
def test_not_an_image_is_400(client, data, words):
    for path in ("/api/caption", "/api/tag"):
        assert_error(upload(client, path, data), 400, *words)


def test_decompression_bomb_is_400_before_decoding(client):
    # a 70-byte file whose header claims 20000 x 20000 pixels: refused by its header, never decoded
    assert_error(upload(client, "/api/caption", claims_size(20000, 20000)), 400, "pixel limit")
    assert_error(upload(client, "/api/tag", claims_size(6000, 20)), 400, "elongated")


def test_upload_over_10_mb_is_413(client):
    big = b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 10)
    assert_error(upload(client, "/api/caption", big), 413, "10 MB")


def test_upload_over_the_limit_without_a_length_is_413(client):
    def chunks():
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    r = client.post("/api/caption", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert_error(r, 413, "10 MB")


def test_a_file_just_over_10_mb_is_413_by_the_decoder():
    with pytest.raises(UploadTooLarge):
        decode_upload(b"\0" * (MAX_UPLOAD_BYTES + 1))


def test_missing_image_field_is_422(client):
    assert_error(client.post("/api/caption"), 422, "image")
    assert_error(client.post("/api/tag", files={"photo": ("a.png", b"x", "image/png")}), 422, "image")


@pytest.mark.parametrize("body,words", [
    ({"prompt": "a red circle", "n": MAX_N + 1}, ["n", "16"]),
    ({"prompt": "a red circle", "n": 0}, ["n"]),
    ({"prompt": ""}, ["prompt"]),
    ({"prompt": "   "}, ["empty prompt"]),
    ({"prompt": "a " * MAX_PROMPT_CHARS}, ["prompt", str(MAX_PROMPT_CHARS)]),
    ({}, ["prompt", "required"]),
    ({"prompt": 5}, ["prompt"]),
    ({"prompt": "a red circle", "seed": -1}, ["seed"]),
    ({"prompt": "a red circle", "seed": 2**64}, ["seed"]),
    ({"prompt": "a red circle", "guidance": 2.0}, ["no guidance"]),  # the scene generator takes none
    ({"prompt": "a red circle", "guidance": -1}, ["guidance"]),
])
def test_bad_generate_requests_are_422(client, body, words):
    assert_error(client.post("/api/generate", json=body), 422, *words)


@pytest.mark.parametrize("raw", [b'{"prompt": "a red circle", "guidance": NaN}',
                                 b'{"prompt": "a red circle", "guidance": Infinity}',
                                 b'{"prompt": "a red circle", "guidance": -Infinity}',
                                 b'{"prompt": "a red circle", "seed": NaN}',
                                 b'{"prompt": "a red circle", "n": Infinity}',
                                 b'{"prompt": "a red circle", "seed": 1e400}'])
def test_nan_and_inf_are_422(client, raw):
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 422)
    r = client.post("/api/roundtrip", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (200, 422)  # roundtrip ignores guidance and n; a NaN seed is 422
    if b"seed" in raw:
        assert_error(r, 422, "seed")


def test_malformed_json_and_bad_roundtrip_are_422(client):
    r = client.post("/api/generate", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert_error(r, 422, "JSON")
    assert_error(client.post("/api/roundtrip", json={"prompt": ""}), 422, "prompt")
    assert_error(client.post("/api/roundtrip", json={"prompt": "x" * (MAX_PROMPT_CHARS + 1)}), 422, "prompt")


def test_unknown_paths_and_methods_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "/api/nothing")
    assert_error(client.get("/api/caption"), 405)


def test_the_server_keeps_serving_after_bad_input(client, circle):
    for _ in range(3):
        upload(client, "/api/caption", b"junk")
        client.post("/api/generate", content=b'{"prompt": "x", "n": NaN}', headers={"content-type": "application/json"})
    assert upload(client, "/api/caption", circle).status_code == 200


def test_a_bug_is_a_json_500_and_the_server_goes_on(models, circle, monkeypatch):
    c = TestClient(create_app(models, report=None), raise_server_exceptions=False)
    monkeypatch.setattr(models, "tag", lambda *a, **k: 1 / 0)
    assert_error(upload(c, "/api/tag", circle), 500, "internal error")
    monkeypatch.undo()
    assert upload(c, "/api/tag", circle).status_code == 200


# -- concurrency ----------------------------------------------------------------------------------------------------


def test_concurrent_requests_give_the_same_answers(client, circle):
    """Eight threads at once over the shared models: every answer equals the one given alone."""
    square = png(draw_caption("a small blue square on the right", seed=2))
    alone = {k: upload(client, "/api/caption", v, attention="false").json()["caption"]
             for k, v in (("circle", circle), ("square", square))}
    got, errors = [], []

    def work(i: int) -> None:
        key = "circle" if i % 2 else "square"
        try:
            r = upload(client, "/api/caption", circle if key == "circle" else square, attention="false")
            got.append((key, r.status_code, r.json()["caption"]))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 16
    assert all(code == 200 and cap == alone[key] for key, code, cap in got)


def test_requests_waiting_together_run_as_one_batch(models, circle):
    """While the models are busy, arriving captions queue; they then run as one batch, each answer as if alone."""
    square = png(draw_caption("a small blue square on the right", seed=2))
    pictures = [decode_upload(circle), decode_upload(square)] * 3
    alone = [models.caption(p, attention=True) for p in pictures]
    assert all(a["batch"] == 1 for a in alone)
    with models.lock:  # the models are busy: every request now waits in the queue
        futures = [models.batcher.submit(p, attention=(i % 2 == 0)) for i, p in enumerate(pictures)]
        time.sleep(0.2)
    got = [f.result(timeout=60) for f in futures]
    assert max(g["batch"] for g in got) > 1  # the first may have been taken alone, the rest together
    for i, (g, a) in enumerate(zip(got, alone)):
        assert (g["caption"], g["tags"]) == (a["caption"], a["tags"])
        assert (g["attention"] is None) == (i % 2 == 1)
        if g["attention"]:
            assert torch.allclose(torch.tensor(g["attention"]["maps"]), torch.tensor(a["attention"]["maps"]), atol=2e-3)


def test_a_failing_batch_fails_only_its_bad_request(models, circle, monkeypatch):
    good = decode_upload(circle)
    bad = Image.new("RGB", (5000, 10))  # too elongated: prepare_image refuses it inside the model call
    with models.lock:
        futures = [models.batcher.submit(good), models.batcher.submit(bad), models.batcher.submit(good)]
        time.sleep(0.2)
    assert futures[0].result(timeout=60)["caption"] and futures[2].result(timeout=60)["caption"]
    with pytest.raises(Exception, match="elongated"):
        futures[1].result(timeout=60)


# -- the pieces -----------------------------------------------------------------------------------------------------


def test_word_attention_matches_the_decoders_own_weights(models):
    cap = models.captioner
    assert has_attention(cap)
    im = draw_caption("a small green triangle at the bottom", seed=4)
    result, maps = caption_with_attention(cap, im)
    assert result.text == caption_loaded(cap, [im])[0].text
    enc = cap.ensure_encoder()
    with torch.inference_mode():
        pooled, grid = enc(enc.transform()(im)[None])
        ids = [cap.vocab.id(w) for w in result.tokens]
        mine = word_attention(cap.decoder, pooled, grid, [ids])[0]
        # the decoder's own attention step at the first word, from its own state
        state = cap.decoder.init_state(pooled, grid)
        _, alpha0 = cap.decoder._attend(state)
        _, state = cap.decoder.step(state, torch.full((1, 1), START_ID))
        _, alpha1 = cap.decoder._attend(state)
    assert torch.allclose(mine[0], alpha0[0], atol=1e-5) and torch.allclose(mine[1], alpha1[0], atol=1e-5)
    assert not torch.allclose(mine[0], mine[1])  # a map per word, not one map repeated
    assert len(maps.maps) == len(result.tokens) and maps.grid[0] * maps.grid[1] == grid.shape[1]


def test_crop_box_is_the_encoders_centre_square():
    class P:
        image_size, resize_size = 224, 256

    x0, y0, x1, y1 = crop_box((400, 200), P)
    assert (y0, y1) == pytest.approx((1 / 16, 15 / 16))  # 224/256 of the short side
    assert x1 - x0 == pytest.approx(175 / 400) and x0 + x1 == pytest.approx(1.0)
    assert crop_box((100, 100), None) == (0.0, 0.0, 1.0, 1.0)


def test_decode_upload_reads_formats_and_modes_like_files():
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    out = decode_upload(png(rgba))
    assert out.mode == "RGB" and out.size == (40, 30) and out.getpixel((0, 0)) == (255, 255, 255)  # alpha on white
    assert decode_upload(png(Image.new("L", (20, 20), 7), "JPEG")).mode == "RGB"
    assert decode_upload(png(Image.new("I;16", (20, 20), 65535))).getpixel((1, 1)) == (255, 255, 255)


def test_default_data_is_flickr8k_when_its_models_are_installed():
    from img2text2img.models.names import default_model

    present = all(default_model(k, "flickr8k").present for k in ("captioner", "tagger", "generator"))
    assert default_data() == ("flickr8k" if present else "shapes")


def test_logprob_is_finite_json(client, circle):
    body = upload(client, "/api/caption", circle).json()
    assert math.isfinite(body["logprob"])


# -- the command ----------------------------------------------------------------------------------------------------


def test_serve_command_loads_once_warns_off_loopback_and_hands_the_app_to_uvicorn(monkeypatch, capsys, tmp_path):
    import uvicorn

    from img2text2img.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    port = free_port()
    assert main(["serve", "--data", "shapes", "--host", "0.0.0.0", "--port", str(port), "--device", "cpu",
                 "--max-batch", "3", "--report", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert "reachable" in err or "anyone who can reach" in err
    assert (seen["host"], seen["port"]) == ("0.0.0.0", port)
    health = TestClient(seen["app"]).get("/api/health").json()
    assert health["models"]["captioner"]["name"] == "shapes-captioner" and health["max_batch"] == 3


def test_serve_command_on_loopback_does_not_warn(monkeypatch, capsys):
    import uvicorn

    from img2text2img.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main(["serve", "--data", "shapes", "--port", str(free_port()), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_serve_command_refuses_a_busy_port_in_one_line(capsys):
    import socket

    from img2text2img.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--data", "shapes", "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot listen on 127.0.0.1:") and "--port" in err and len(err.splitlines()) == 1


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
