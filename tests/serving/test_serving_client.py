"""keras_vessel.serving.client against a stand-in for TF Serving's REST predict API.

This is a contract test, not a test of TF Serving itself: `_FakeServing` is a
small `http.server` on 127.0.0.1 that implements the documented REST predict
contract (POST /v1/models/NAME[/versions/N]:predict; row "instances" ->
"predictions", columnar "inputs" -> "outputs"; errors as HTTP 4xx with
{"error": "..."}; 404 "Servable not found" for unknown models/versions) by
running a SavedModel written by `export_saved_model` through
`tf.saved_model.load(...).signatures[...]`, as TF Serving runs it. The real
server is not available in CI; the client sees the same wire format.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_vessel.serving.client import ServingClient, ServingError

MODEL = "vessel"
VERSION = 1
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?:predict$")


class _FakeServing(BaseHTTPRequestHandler):
    """TF Serving's REST predict contract over one exported SavedModel version."""

    loaded = None  # set on the subclass made by the fixture
    requests: list = []
    fail_next: list = []  # HTTP statuses to answer (once each) before serving normally
    delay = 0.0

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        import tensorflow as tf

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append((self.path, body))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return self._reply(status, {"error": f"injected failure {status}"})
        match = _PATH.match(self.path)
        if not match:
            return self._reply(404, {"error": "Malformed request: POST " + self.path})
        name, version = match["name"], match["version"]
        if name != MODEL or version not in (None, str(VERSION)):
            spec = f"Specific({name}, {version})" if version else f"Latest({name})"
            return self._reply(404, {"error": f"Servable not found for request: {spec}"})
        try:
            request = json.loads(body)
        except ValueError as error:
            return self._reply(400, {"error": f"JSON Parse error: {error}"})
        signature_name = request.get("signature_name", "serving_default")
        if signature_name not in self.loaded.signatures:
            return self._reply(400, {"error": f'Serving signature name: "{signature_name}" not found in signature def'})
        signature = self.loaded.signatures[signature_name]
        row = "instances" in request
        values = request["instances"] if row else request.get("inputs")
        if isinstance(values, dict):
            values = values.get("images")
        try:
            result = signature(images=tf.constant(np.asarray(values, dtype=np.float32)))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            message = getattr(error, "message", None) or str(error)
            return self._reply(400, {"error": message})
        probability = result["probability"].numpy().tolist()  # one output: no per-name nesting
        self._reply(200, {"predictions": probability} if row else {"outputs": probability})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    import keras
    import tensorflow as tf

    from keras_vessel.serving.export import export_saved_model
    from keras_vessel.models import build_model

    keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("serving")
    model_path = root / "tiny.keras"
    build_model("unet", base_filters=4, depth=2).save(model_path)
    saved = export_saved_model(model_path, root / "saved_models", name=MODEL, version=VERSION)
    return {"model_path": model_path, "loaded": tf.saved_model.load(str(saved))}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out leaves a broken pipe behind; expected here


@pytest.fixture(scope="module")
def server(exported):
    handler = type("Handler", (_FakeServing,), {"loaded": exported["loaded"], "requests": [], "fail_next": []})
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "handler": handler}
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def handler(server):
    server["handler"].requests.clear()
    server["handler"].fail_next.clear()
    server["handler"].delay = 0.0
    yield server["handler"]
    server["handler"].delay = 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- the client


def test_predict_matches_local_prediction(exported, server, handler):
    from keras_vessel.models.inference import load_inference_model, predict_probability

    model = load_inference_model(exported["model_path"])
    rng = np.random.default_rng(4)
    client = ServingClient(server["url"], MODEL, version=VERSION)
    for image in (rng.integers(0, 256, (37, 51, 3), dtype=np.uint8),  # odd size: padded in the graph
                  rng.uniform(0, 255, (16, 24, 3)).astype(np.float32),
                  rng.integers(0, 256, (20, 12), dtype=np.uint8)):  # grey, repeated to RGB  # fmt: skip
        got = client.predict(image)
        expected = predict_probability(model, image)
        assert got.shape == image.shape[:2] and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5
    path, body = handler.requests[0]
    assert path == f"/v1/models/{MODEL}/versions/{VERSION}:predict"
    request = json.loads(body)
    assert request["signature_name"] == "serving_default"
    assert np.asarray(request["instances"]).shape == (1, 37, 51, 3)


def test_latest_version_url(server, handler):
    client = ServingClient(server["url"] + "/", MODEL)
    assert client.url == f"{server['url']}/v1/models/{MODEL}:predict"
    assert client.predict(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8)
    assert handler.requests[0][0] == f"/v1/models/{MODEL}:predict"


def test_http_400_quotes_the_server_error_and_is_not_retried(server, handler):
    client = ServingClient(server["url"], MODEL, backoff=0.0)
    with pytest.raises(ServingError, match=r"(?s)answered HTTP 400 Bad Request: .*RGB on 0-255 \(found a value > 255\)") \
            as info:  # fmt: skip
        client.predict(np.full((8, 8, 3), 300.0, np.float32))
    assert info.value.status == 400 and info.value.url == client.url
    assert client.url in str(info.value)
    assert len(handler.requests) == 1


def test_unknown_version_is_a_404_naming_the_servable(server, handler):
    client = ServingClient(server["url"], MODEL, version=7, backoff=0.0)
    with pytest.raises(ServingError, match=r"versions/7:predict answered HTTP 404 .*Servable not found for "
                                           r"request: Specific\(vessel, 7\)"):  # fmt: skip
        client.predict(np.zeros((8, 8, 3), np.uint8))
    assert len(handler.requests) == 1


def test_retries_503_then_succeeds(server, handler, caplog):
    handler.fail_next[:] = [503, 503]
    client = ServingClient(server["url"], MODEL, retries=3, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="keras_vessel.serving.client"):
        prob = client.predict(np.zeros((8, 8, 3), np.uint8))
    assert prob.shape == (8, 8) and len(handler.requests) == 3
    assert [r.getMessage().split(";")[-1].strip()[:9] for r in caplog.records] == ["retry 1/3", "retry 2/3"]
    assert "injected failure 503" in caplog.records[0].getMessage()


def test_gives_up_after_retries_on_503(server, handler):
    handler.fail_next[:] = [503] * 5
    client = ServingClient(server["url"], MODEL, retries=1, backoff=0.0)
    with pytest.raises(ServingError, match=r"HTTP 503 .*injected failure 503"):
        client.predict(np.zeros((8, 8, 3), np.uint8))
    assert len(handler.requests) == 2


def test_refused_connection_retries_then_names_the_url(caplog):
    url = f"http://127.0.0.1:{_free_port()}"
    client = ServingClient(url, MODEL, retries=2, backoff=0.01, timeout=2)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="keras_vessel.serving.client"):
        with pytest.raises(ServingError, match=re.escape(f"could not get an answer from {url}/v1/models/vessel:predict "
                                                         "after 3 attempt(s)") + r".*[Cc]onnection refused"):
            client.predict(np.zeros((8, 8, 3), np.uint8))
    assert len(caplog.records) == 2  # two retries logged, then the error
    assert time.monotonic() - start < 5


def test_timeout_is_retried_then_reported(server, handler):
    handler.delay = 0.6
    client = ServingClient(server["url"], MODEL, retries=1, backoff=0.0, timeout=0.2)
    with pytest.raises(ServingError, match=r"after 2 attempt\(s\): .*timed out"):
        client.predict(np.zeros((8, 8, 3), np.uint8))
    assert len(handler.requests) == 2
    time.sleep(0.6)  # let the server threads finish the abandoned requests


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("localhost:8501", MODEL), {}, r"`base_url` must be an http\(s\) URL .* got 'localhost:8501'"),
        (("http://h:8501", "a/b"), {}, r"`model_name` must be a model name .* got 'a/b'"),
        (("http://h:8501", MODEL), {"version": 0}, r"`version` must be None or an int >= 1; got 0"),
        (("http://h:8501", MODEL), {"version": "2"}, r"`version` must be None or an int >= 1; got '2'"),
        (("http://h:8501", MODEL), {"timeout": 0}, r"`timeout` must be a number > 0; got 0"),
        (("http://h:8501", MODEL), {"retries": -1}, r"`retries` must be an int >= 0; got -1"),
        (("http://h:8501", MODEL), {"backoff": -0.5}, r"`backoff` must be a number >= 0; got -0.5"),
    ],
)
def test_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ServingClient(*args, **kwargs)


# ---------------------------------------------------------------- predict_files / CLI through the server


@pytest.fixture()
def inputs(tmp_path) -> list[Path]:
    rng = np.random.default_rng(6)
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, shape in (("a.png", (40, 36, 3)), ("b.png", (21, 30, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


def _assert_same_outputs(local: Path, remote: Path, names: list[str]) -> None:
    for name in names:
        a = np.asarray(Image.open(local / f"{name}_prob.png")).astype(np.int64)
        b = np.asarray(Image.open(remote / f"{name}_prob.png")).astype(np.int64)
        assert np.abs(a - b).max() <= 1, name  # 1e-5 apart -> at most one 16-bit step
        ma, mb = np.asarray(Image.open(local / f"{name}_mask.png")), np.asarray(Image.open(remote / f"{name}_mask.png"))
        near = np.abs(a / 65535 - 0.5) < 2e-5  # float noise may flip pixels right at the threshold
        np.testing.assert_array_equal(ma[~near], mb[~near])


def test_predict_files_through_the_server_equals_local(exported, server, handler, inputs, tmp_path):
    from keras_vessel.serving.prediction import predict_files

    client = ServingClient(server["url"], MODEL, version=VERSION)
    remote = predict_files(None, inputs, tmp_path / "remote", fov="none", predictor=client.predict, progress=False)
    local = predict_files(exported["model_path"], inputs, tmp_path / "local", fov="none", progress=False)
    assert remote.failures == [] == local.failures
    assert [p.name for p in remote.written] == [p.name for p in local.written]
    _assert_same_outputs(tmp_path / "local", tmp_path / "remote", ["a", "b"])


def _cli(args):
    from keras_vessel_cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    shown = f"exit {result.exit_code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n{result.exception!r}"
    return result, shown


def test_cli_predict_server_writes_what_local_predict_writes(exported, server, handler, inputs, tmp_path):
    folder = inputs[0].parent
    result, shown = _cli(["predict", "--server", server["url"], "--model-name", MODEL, "--version", VERSION,
                          folder, "--output", tmp_path / "remote", "--fov", "none", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, shown
    assert "for 2 of 2 images" in result.stdout
    assert ("masks at threshold 0.5: a served model's own threshold is applied only by its predict_image "
            "signature (give it with --threshold; an export records it in its version folder's "
            "assets.extra/keras_vessel.json)") in " ".join(result.stderr.split())
    result, shown = _cli(["predict", "--model", exported["model_path"], folder, "--output", tmp_path / "local",
                          "--fov", "none", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, shown
    _assert_same_outputs(tmp_path / "local", tmp_path / "remote", ["a", "b"])


def test_cli_predict_server_failure_stops_at_the_first_image_naming_the_url(inputs, tmp_path, caplog):
    """`keras-vessel predict --server http://localhost:9 --model-name m DIR --output o` (nothing listening):
    every image was retried in turn (41 s and 40 lines for 8 images); now the batch stops at the first."""
    url = f"http://127.0.0.1:{_free_port()}"
    with caplog.at_level("WARNING"):
        result, shown = _cli(["predict", "--server", url, "--model-name", MODEL, *inputs, "--output",
                              tmp_path / "o", "--quiet", "--fov", "none", "--threshold", "0.5"])  # fmt: skip
    assert result.exit_code == 1, shown
    assert f"could not get an answer from {url}/v1/models/vessel:predict" in result.stderr
    assert f"(stopped at image 1 of {len(inputs)}, {inputs[0]})" in result.stderr and len(inputs) > 1
    assert not (tmp_path / "o").exists()  # nothing written: no empty output folder left
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, shown
    assert sum("retry" in record.getMessage() for record in caplog.records) == 3  # the first image's retries only


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", __file__, "--server", "http://h:8501", "--model-name", MODEL],
         "give either --model PATH (local prediction) or --server URL --model-name NAME (TF Serving), not both"),
        (["--server", "http://h:8501"], "--server needs --model-name"),
        (["--server", "http://h:8501", "--model-name", MODEL, "--heads", "pixel"], "--heads applies to a local --model"),
        (["--server", "http://h:8501", "--model-name", MODEL, "--tile-size", "64"], "--tile-size applies to a local"),
        (["--server", "http://h:8501", "--model-name", MODEL, "--threshold", "train"], "--threshold train reads"),
        (["--server", "h:8501", "--model-name", MODEL], "`base_url` must be an http(s) URL"),
        (["--model-name", MODEL], "--model-name and --version are only used with --server"),  # bundled model
    ],
)  # fmt: skip
def test_cli_predict_server_usage_errors(inputs, tmp_path, extra, message):
    result, shown = _cli(["predict", inputs[0], "--output", tmp_path / "o", *extra])
    assert result.exit_code == 2, shown
    assert message in " ".join(result.stderr.split()), shown
    assert not (tmp_path / "o").exists()
