"""The FastAPI app of `i2t serve`: the page, the JSON API (documented at /docs), and the error handlers that turn
every bad request into a 4xx with `{"error": "one line"}`, so one bad upload never stops the server.

Endpoints are plain `def`s: FastAPI runs them on its thread pool, and `ServedModels` serialises the model calls.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException

from img2text2img.config import MAX_GUIDANCE, MAX_SEED
from img2text2img.errors import I2TError
from img2text2img.serve.models import ModelMissing, ServedModels
from img2text2img.serve.uploads import MAX_UPLOAD_BYTES, UploadTooLarge, decode_upload
from img2text2img.version import __version__

MAX_N = 16  # pictures per request: a 4x4 grid
MAX_PROMPT_CHARS = 300  # a sentence; the generators read a few dozen words
BODY_SLACK = 64 * 1024  # multipart headers and boundaries around the photo itself
DEFAULT_REPORT = Path("runs/roundtrip/report.html")


class BodyTooLarge(HTTPException):
    """Raised while a request body is read, once it passes the limit (FastAPI re-raises HTTP errors as they are)."""

    def __init__(self) -> None:
        super().__init__(413, f"upload is over the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413 before it is stored (a declared
    Content-Length at once; a chunked body when the limit is passed), instead of being spooled to disk first."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await error_response(413, BodyTooLarge().detail)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())[:500] or "bad request"}, status_code=status)


def validation_message(exc: RequestValidationError) -> str:
    """pydantic's errors as one line: 'n: Input should be less than or equal to 16; prompt: ...'."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "form"))
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            loc, msg = "body", "not valid JSON"
        elif e.get("type") == "missing":
            msg = "required" + (" (a multipart file field)" if loc == "image" else "")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts)) or "invalid request"


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong, in one line.")


def errors(*codes: int) -> dict:
    """The error answers an endpoint can give, for the OpenAPI document (all `{"error": "..."}`)."""
    why = {400: "Not an image, broken, or too many pixels (decompression bomb guard).",
           413: f"Upload over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
           422: "A missing or bad field: n over 16, an empty or over-long prompt, NaN or infinite numbers, ...",
           503: "This server has no model of that kind loaded."}
    return {c: {"model": ErrorBody, "description": why[c]} for c in codes}


class Prompted(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="A sentence, e.g. 'a dog on grass'.",
                        examples=["a black dog runs through the grass"])
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Same seed, same pictures.")

    @field_validator("prompt")
    @classmethod
    def has_words(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty prompt: give a sentence such as 'a red circle on the left'")
        return v.strip()


class GenerateRequest(Prompted):
    n: int = Field(4, ge=1, le=MAX_N, description=f"Pictures to draw (1..{MAX_N}); one near-square PNG grid.")
    guidance: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                   description="pixel / vae / gan generators: how far from the average sentence to "
                                               "draw (null = the model's own; scene generators take none).")


class RoundTripRequest(Prompted):
    pass


def read_upload(image: UploadFile) -> object:
    """The uploaded file as an RGB image (400 not an image or too many pixels, 413 too large)."""
    data = image.file.read(MAX_UPLOAD_BYTES + 1)
    try:
        return decode_upload(data, name=image.filename or "upload")
    except UploadTooLarge:
        raise
    except I2TError as e:
        raise HTTPException(400, str(e)) from None


def openapi_30(node):
    """An OpenAPI 3.1 document (what FastAPI writes) in the 3.0 form the bundled Swagger UI 4 renders: `anyOf` with
    null becomes `nullable`, a file field gets `format: binary` (so /docs offers a file picker)."""
    if isinstance(node, list):
        return [openapi_30(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_30(v) for k, v in node.items()}
    if out.get("openapi", "").startswith("3.1"):
        out["openapi"] = "3.0.3"
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        out.pop("anyOf")
        out.update(rest[0] if len(rest) == 1 else {"anyOf": rest}, nullable=True)
    if out.get("type") == "string" and "contentMediaType" in out:
        out["format"] = "binary"
    return out


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the swagger-ui-bundle package when it is installed (the serve extra), so the API docs
    work offline like the page; FastAPI's own page (its scripts from a CDN) otherwise. The bundle is Swagger UI 4,
    which reads OpenAPI 3.0: it is given the same document in that form (/docs-assets/openapi.json)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    assets, spec = {}, app.openapi_url
    if swagger_ui_path is not None:
        from fastapi.staticfiles import StaticFiles

        spec = "/docs-spec/openapi.json"
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        assets = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js", "swagger_css_url": "/docs-assets/swagger-ui.css",
                  "swagger_favicon_url": "/docs-assets/favicon-32x32.png"}

        @app.get(spec, include_in_schema=False)
        def spec_30() -> JSONResponse:
            return JSONResponse(openapi_30(app.openapi()))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=spec, title="img2text2img API", **assets)


def create_app(models: ServedModels, report: str | Path | None = DEFAULT_REPORT) -> FastAPI:
    """The app over already loaded `models`; `report` is the round-trip report the page links to (when it exists)."""
    app = FastAPI(title="img2text2img", version=__version__, docs_url=None, redoc_url=None,
                  description="Caption and tag photos, draw pictures from sentences, and go around the loop. "
                              "Errors are JSON `{\"error\": \"...\"}` with a 4xx status.")
    add_docs(app)
    app.state.models = models
    report_path = Path(report) if report else None
    page = resources.files("img2text2img.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(I2TError)
    async def user_error(request: Request, exc: I2TError):
        if isinstance(exc, UploadTooLarge):
            return error_response(413, str(exc))
        if isinstance(exc, ModelMissing):
            return error_response(503, str(exc))
        return error_response(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(422, validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        msg = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else f"not found: {request.url.path}"
        return error_response(exc.status_code, msg)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # ours, not the user's: still JSON, and the server goes on
        return error_response(500, f"internal error ({type(exc).__name__}); please report it")

    def report_exists() -> bool:
        return report_path is not None and report_path.is_file()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health", summary="Status and the loaded models")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "device": models.device, "models": models.describe(),
                "max_batch": models.batcher.max_batch,
                "limits": {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_n": MAX_N,
                           "max_prompt_chars": MAX_PROMPT_CHARS},
                "report": "/report" if report_exists() else None}

    @app.post("/api/caption", summary="Caption a photo (with its tags and each word's attention map)",
              responses=errors(400, 413, 422, 503))
    def caption(image: Annotated[UploadFile, File(description="A photo: JPEG, PNG, WebP, GIF, BMP or TIFF.")],
                attention: Annotated[bool, Query(description="Include each word's attention map.")] = True) -> dict:
        picture = read_upload(image)
        return models.caption(picture, attention=attention)

    @app.post("/api/tag", summary="Tag a photo: [[tag, score], ...], best first", responses=errors(400, 413, 422, 503))
    def tag(image: Annotated[UploadFile, File(description="A photo.")],
            top: Annotated[int, Query(ge=1, le=50, description="How many tags.")] = 10) -> dict:
        picture = read_upload(image)
        return models.tag(picture, top=top)

    @app.post("/api/generate", summary="Draw pictures for a sentence: one PNG grid",
              response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "The pictures as one PNG grid."},
                         **errors(422, 503)})
    def generate(req: GenerateRequest) -> Response:
        png, drawn = models.generate_png(req.prompt, n=req.n, seed=req.seed, guidance=req.guidance)
        headers = {"X-I2T-Ms": str(drawn.ms), "X-I2T-Count": str(len(drawn.images))}
        if drawn.warnings:  # ASCII JSON: a header must be latin-1
            headers["X-I2T-Warnings"] = json.dumps(drawn.warnings, ensure_ascii=True)
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/api/roundtrip", summary="Sentence -> drawing -> caption back, with BLEU against the sentence",
              responses=errors(422, 503))
    def roundtrip(req: RoundTripRequest) -> dict:
        return models.roundtrip(req.prompt, seed=req.seed)

    @app.get("/report", summary="The latest round-trip report (i2t roundtrip-eval)", response_class=HTMLResponse)
    def latest_report():
        if not report_exists():
            return error_response(404, f"no round-trip report at {report_path}; run `i2t roundtrip-eval` first")
        return FileResponse(report_path, media_type="text/html")

    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES + BODY_SLACK)
    return app
