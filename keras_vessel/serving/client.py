"""A small client for TF Serving's REST predict API (standard library only).

`ServingClient.predict` sends one RGB image to the ``serving_default``
signature written by `keras_vessel.serving.export.export_saved_model` (input
``images``: float32 ``[batch, H, W, 3]`` on 0-255, output ``probability``:
``[batch, H, W]``) and returns the ``(H, W)`` probability map, so that
``predict_files(None, paths, out, predictor=client.predict)`` writes the same
files as local prediction. Padding to the network stride happens inside the
exported graph, so any image size works.

Connection failures, timeouts and HTTP 502/503/504 (a server starting up or a
proxy in front of it) are retried with exponential backoff; other HTTP errors
(4xx: bad request, unknown model or version) are not, because repeating the
same request cannot fix them. No answer after the retries raises `ServerUnreachable`, a
ConnectionError, on which `predict_files` stops instead of trying every other image. Errors say which URL failed and quote the
server's ``{"error": "..."}`` text.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from http.client import HTTPException

import numpy as np

from keras_vessel.models.inference import as_rgb

__all__ = ["ServerUnreachable", "ServingClient", "ServingError"]

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
OUTPUT = "probability"
_RETRY_STATUS = (502, 503, 504)
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ServingError(RuntimeError):
    """A predict request failed; ``url`` is the request URL, ``status`` the HTTP code (None if no answer)."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class ServerUnreachable(ServingError, ConnectionError):
    """No answer at all after the retries (refused, reset, timed out): the next request would fare no better,
    so `keras_vessel.serving.prediction.predict_files` stops its batch at the first."""


class ServingClient:
    """Predict vessel probability maps with a model served by TensorFlow Serving over REST.

    Parameters
    ----------
    base_url : the server's REST root, e.g. ``"http://localhost:8501"``.
    model_name : the served model's name (TF Serving's ``--model_name``).
    version : a specific model version; None lets the server pick (the latest).
    timeout : seconds to wait for one request (connect and answer).
    retries : extra attempts after the first for connection errors, timeouts and 502/503/504.
    backoff : seconds before the first retry; doubled for each further retry.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str,
        *,
        version: int | None = None,
        timeout: float = 30,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
            raise ValueError(f"`base_url` must be an http(s) URL like 'http://localhost:8501'; got {base_url!r}.")
        if not isinstance(model_name, str) or not _NAME_PATTERN.match(model_name):
            raise ValueError(
                f"`model_name` must be a model name of letters, digits, '_', '.', '-'; got {model_name!r}."
            )
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise ValueError(f"`version` must be None or an int >= 1; got {version!r}.")
        for arg, value, minimum in (("timeout", timeout, 0.0), ("backoff", backoff, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise ValueError(f"`{arg}` must be a number >= {minimum:g}; got {value!r}.")
        if timeout == 0:
            raise ValueError(f"`timeout` must be a number > 0; got {timeout!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"`retries` must be an int >= 0; got {retries!r}.")
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)

    @property
    def url(self) -> str:
        """The predict endpoint: ``{base}/v1/models/NAME[/versions/N]:predict``."""
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{self.model_name}{version}:predict"

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Probability map ``(H, W)`` float32 of one ``(H, W, 3)`` RGB image on 0-255.

        Grey and RGBA images are converted to RGB as in local prediction. The
        image is sent in the row ("instances") format; integer images as
        integers, which keeps the JSON about half as long.
        """
        array = np.asarray(image)
        rgb = as_rgb(array)
        pixels = rgb.astype(np.int64) if np.issubdtype(array.dtype, np.integer) else rgb
        body = {"signature_name": SIGNATURE, "instances": [pixels.tolist()]}
        answer = self._post(json.dumps(body, separators=(",", ":")).encode("utf-8"))
        return self._parse(answer, rgb.shape[:2])

    def _parse(self, answer: bytes, shape: tuple[int, int]) -> np.ndarray:
        try:
            payload = json.loads(answer)
            predictions = payload["predictions"]
            first = predictions[0]
            if isinstance(first, dict):  # several outputs: one object per instance
                first = first[OUTPUT]
            prob = np.asarray(first, dtype=np.float32)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ServingError(
                f"unexpected answer from {self.url}: expected JSON {{\"predictions\": [[[...]]]}} holding "
                f"one (H, W) probability map ({type(error).__name__}: {error}); got {answer[:200]!r}",
                url=self.url,
            ) from None
        if prob.shape != shape:
            raise ServingError(
                f"{self.url} returned a probability map of shape {prob.shape} for an image of {shape}; "
                f"is {self.model_name!r} a keras-vessel export (serving_default: images -> probability)?",
                url=self.url,
            )
        return prob

    def _post(self, data: bytes) -> bytes:
        url = self.url
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                url, data=data, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as error:
                detail = _error_text(error)
                if error.code not in _RETRY_STATUS or attempt == attempts:
                    raise ServingError(
                        f"TF Serving at {url} answered HTTP {error.code} {error.reason}: {detail}",
                        url=url,
                        status=error.code,
                    ) from None
                reason = f"HTTP {error.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, HTTPException) as error:
                reason = getattr(error, "reason", None) or error
                if attempt == attempts:
                    raise ServerUnreachable(
                        f"could not get an answer from {url} after {attempts} attempt(s): {reason}; "
                        f"is TF Serving running there (REST port, usually 8501)?",
                        url=url,
                    ) from None
            delay = self.backoff * 2 ** (attempt - 1)
            log.warning("predict request to %s failed (%s); retry %d/%d in %.2fs", url, reason, attempt,
                        self.retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _error_text(error: urllib.error.HTTPError) -> str:
    """The server's ``{"error": "..."}`` message, else the raw body (shortened)."""
    try:
        body = error.read()
    except OSError:
        body = b""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", errors="replace").strip()
        return text[:500] if text else "(empty body)"
