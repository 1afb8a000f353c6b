"""`hf-detr app` (Gradio) in a real browser and through its Python API, the Space that push_to_hub(..., space=True)
writes, and the Inference Endpoints handler of a saved folder in a process where hf_detr cannot be imported."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, RepoUrl, SpaceCard
from PIL import Image
from transformers import pipeline

from hf_detr.apps.app import MAX_PIXELS, DetectionApp, require_gradio
from hf_detr.apps.cli import main
from hf_detr.apps.predict import load_model
from hf_detr.hub import model_card, push_to_hub, save_model_folder
from test_predict_inputs import _save_random, _write_video

SRC = Path(__file__).resolve().parents[1] / "src"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# A process that sees the installed libraries but not hf_detr: without `site`, the editable install's .pth (which
# puts src/ on the path) is never read, and PYTHONPATH gives the libraries.
SITE_PACKAGES = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


@pytest.fixture(scope="module")
def app(model_dir):
    return DetectionApp(*load_model(model_dir), max_video_frames=5)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "noise.png"
    _save_random(path, 150, 200, seed=0)
    return path


def _pipeline_detections(model_dir, image_path, threshold):
    return pipeline("object-detection", model=str(model_dir))(str(image_path), threshold=threshold)


def _assert_same_detections(shown, expected):
    """The page's detections (scores to 4 decimals, boxes to 2) against the pipeline's (boxes truncated to ints)."""
    assert len(shown) == len(expected) > 0
    for mine, theirs in zip(shown, expected):
        assert mine["label"] == theirs["label"]
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)
        assert all(abs(mine["box"][k] - theirs["box"][k]) < 1 for k in ("xmin", "ymin", "xmax", "ymax")), (mine, theirs)


def test_the_image_tab_shows_the_pipeline_detections(app, model_dir, image_path):
    result = app.image(image_path, threshold=0.0)
    _assert_same_detections(result.detections, _pipeline_detections(model_dir, image_path, 0.0))
    assert result.table == [[d["label"], d["score"], *d["box"].values()] for d in result.detections]
    assert result.picture.shape == (150, 200, 3) and result.picture.dtype == np.uint8
    assert (result.picture != np.asarray(Image.open(image_path))).any()  # the boxes are drawn
    assert result.message == "10 detection(s) with score >= 0.00 in noise.png (200 x 150 pixels)"
    assert len(app.image(image_path, threshold=1.0).detections) == 0  # the slider filters


def test_a_segmentation_model_shows_masks(segmentation_dir, image_path):
    from pycocotools import mask as coco_mask

    result = DetectionApp(*load_model(segmentation_dir)).image(image_path, threshold=0.0)
    masks = [coco_mask.decode(d["mask"]).astype(bool) for d in result.detections]
    assert len(masks) == 10 and all(mask.shape == (150, 200) for mask in masks)
    covered = np.any(masks, axis=0)
    assert covered.any()
    changed = (result.picture != np.asarray(Image.open(image_path))).any(axis=-1)
    assert changed[covered].mean() > 0.9  # the masks are laid over the picture


def _bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Bad uploads and the words their message must contain."""
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    Image.new("1", (20000, 20000)).save(folder / "huge.png")  # 1 bit per pixel: 50 MB to write, 48 kB of PNG
    side = int(MAX_PIXELS**0.5) + 1
    Image.new("1", (side, side)).save(folder / "large.png")  # under PIL's own limit, over the app's
    (folder / "notes.png").write_text("not an image")
    return {
        "1x1": (folder / "dot.png", "dot.png is 1 x 1 pixels; the model needs at least 16 pixels on each side"),
        "20000x20000": (folder / "huge.png", "huge.png is too large (more than 178 megapixels)"),
        "over the limit": (
            folder / "large.png",
            f"large.png is too large ({side} x {side} pixels); the app takes "
            "at most 50 megapixels: downscale it, or run `hf-detr predict MODEL IMAGE --tile 800`",
        ),
        "not an image": (folder / "notes.png", "notes.png could not be read as an image"),
        "missing": (folder / "gone.png", "gone.png could not be read as an image"),
    }


def test_bad_images_give_a_message_not_an_exception(app, tmp_path, image_path):
    for name, (path, words) in _bad_images(tmp_path).items():
        result = app.image(path, 0.5)
        assert result.message.startswith("Error: ") and words in result.message, (name, result.message)
        assert (result.picture, result.table, result.detections) == (None, [], None)
    assert app.image(None, 0.5).message == "Error: no image given: upload one, or pick an example"
    assert app.image(image_path, 1.5).message == "Error: threshold must be a score in [0, 1], got 1.5"
    # two channels (gray and alpha) are read as training reads them, and the page says so
    gray_alpha = tmp_path / "gray_alpha.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 2), dtype=np.uint8), mode="LA").save(gray_alpha)
    result = app.image(gray_alpha, 0.0)
    assert len(result.detections) == 10 and result.picture.shape == (40, 60, 3)
    assert "(60 x 40 pixels, stored as LA: read as RGB, as in training)" in result.message


def test_the_video_tab_annotates_a_short_clip_and_refuses_a_long_one(app, tmp_path, image_path):
    import av

    rng = np.random.default_rng(0)
    clip = tmp_path / "clip.mp4"
    _write_video(clip, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)], 10)
    result = app.video(clip, 0.0)
    assert [(frame["video"], frame["frame"]) for frame in result.frames] == [("clip.mp4", i) for i in range(3)]
    assert all(len(frame["detections"]) == 10 for frame in result.frames)
    assert result.message == "30 detection(s) with score >= 0.00 in 3 frame(s) of clip.mp4"
    with av.open(result.video) as annotated:
        assert sum(1 for _ in annotated.decode(video=0)) == 3

    _write_video(tmp_path / "long.mp4", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)], 10)
    messages = [app.video(path, 0.5).message for path in (tmp_path / "long.mp4", image_path, None)]
    assert messages[0].startswith("Error: long.mp4 has 6 frames; the app takes clips of at most 5")
    assert messages[1].startswith("Error: noise.png is not a video file (.avi, .mkv, .mov, .mp4, .webm)")
    assert messages[2] == "Error: no video given: upload a short clip"
    (tmp_path / "broken.mp4").write_text("not a video")
    assert app.video(tmp_path / "broken.mp4", 0.5).message.startswith("Error: video ")


def test_without_gradio_the_command_names_the_extra(model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # importing it now fails
    with pytest.raises(ImportError, match=r"pip install 'hf_detr\[app\]'"):
        require_gradio()
    assert main(["app", str(model_dir)]) == 1
    assert "hf-detr app: error: the app is a Gradio page, which is not installed" in capsys.readouterr().err


def test_other_commands_do_not_import_gradio():
    script = "import sys\nfrom hf_detr.apps.cli import build_parser\nbuild_parser()\nprint('gradio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serving(command: list[str], log: Path, port: int, **popen):
    """Run `command`, a Gradio server on local `port`, until it answers; yields its URL and stops it afterwards."""
    env = {**os.environ, **popen.pop("env", {}), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, **popen)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the app did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Chromium and its driver: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _coco_folder(root: Path) -> Path:
    """A COCO folder of two images, for the page's examples."""
    (root / "annotations").mkdir(parents=True)
    images = []
    for i in range(2):
        _save_random(root / f"{i}.png", 96, 128, seed=i + 1)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 128, "height": 96})
    coco = {"images": images, "annotations": [], "categories": [{"id": 0, "name": "circle"}]}
    (root / "annotations" / "instances_validation.json").write_text(json.dumps(coco))
    return root


@pytest.mark.slow
def test_hf_detr_app_in_a_browser(browser, model_dir, image_path, tmp_path):
    """Upload an image in a real Chromium, read the detections back from the page's JSON, compare with the pipeline;
    a bad image gives its message on the page, which then still answers (an example of --dataset)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "hf_detr",
        "app",
        str(model_dir),
        "--port",
        str(port),
        "--dataset",
        str(_coco_folder(tmp_path / "coco")),
        "--examples",
        "2",
    ]
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    with _serving(command, tmp_path / "app.log", port, env=env) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image-input input[type=file]"))
        score = browser.find_element(By.CSS_SELECTOR, "#threshold input[type=number]")
        score.clear()
        score.send_keys("0", Keys.ENTER)  # the slider's number box: every detection
        status = browser.find_element(By.ID, "image-status")

        def shows(words):
            return wait.until(lambda b: words in status.text, message=f"{words!r} not in {status.text!r}")

        upload.send_keys(str(image_path))
        shows("10 detection(s) with score >= 0.00 in noise.png")
        # the JSON view puts every token on a line of its own; joined, it is the JSON the function returned
        shown = json.loads(browser.find_element(By.CSS_SELECTOR, "#image-json .json-holder").text.replace("\n", ""))
        _assert_same_detections(shown, _pipeline_detections(model_dir, image_path, 0.0))
        header, *rows = browser.find_elements(By.CSS_SELECTOR, "#image-table [role=row]")
        assert header.text.split() == ["label", "score", "xmin", "ymin", "xmax", "ymax"]
        assert [row.text.split() for row in rows] == [
            [d["label"], str(d["score"]), *map(str, d["box"].values())] for d in shown
        ]
        assert browser.find_element(By.CSS_SELECTOR, "#image-output img").get_attribute("src")
        browser.save_screenshot(str(tmp_path / "app.png"))

        bad, words = _bad_images(tmp_path)["1x1"]
        browser.find_element(By.CSS_SELECTOR, "#image-input button[aria-label='Clear']").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#image-input input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#image-input input[type=file]").send_keys(str(bad))
        shows(words)
        browser.save_screenshot(str(tmp_path / "app_error.png"))
        browser.find_element(By.XPATH, "//button[contains(., 'validation_1.png')]").click()  # an example
        shows("10 detection(s) with score >= 0.00 in validation_1.png (128 x 96 pixels)")
    print(f"screenshots: {tmp_path / 'app.png'}, {tmp_path / 'app_error.png'}")


_HANDLER_SCRIPT = """
import base64, importlib.util, json, sys
try:
    import hf_detr
except ImportError:
    pass
else:
    raise SystemExit(f"hf_detr is importable from {hf_detr.__file__}")
results = {}
for folder in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("handler", folder + "/handler.py")
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    handler = handler_module.EndpointHandler(folder)
    assert type(handler.pipeline.model).__module__.startswith("transformers_modules")
    encoded = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
    results[folder] = handler({"inputs": encoded, "parameters": {"threshold": 0.0}})
    assert handler({"inputs": "data:image/png;base64," + encoded}) == handler({"inputs": base64.b64decode(encoded)})
errors = []
for request in ({"inputs": "not base64!"}, {"inputs": base64.b64encode(b"text").decode()}, {"image": "..."},
                {"inputs": encoded, "parameters": {"threshold": 2}}, {"inputs": encoded, "parameters": {"top_k": 3}},
                {"inputs": 3}):
    try:
        handler(request)
    except (ValueError, TypeError) as error:
        errors.append(f"{type(error).__name__}: {error}")
print("RESULTS" + json.dumps({"results": results, "errors": errors}))
"""


@pytest.mark.slow
def test_the_endpoint_handler_of_a_saved_folder_runs_without_hf_detr(model_dir, segmentation_dir, image_path, tmp_path):
    folders = {}
    for name, source in (("detector", model_dir), ("segmentation", segmentation_dir)):
        folders[name] = tmp_path / name
        save_model_folder(folders[name], *load_model(source))
        assert (folders[name] / "handler.py").read_bytes() == (SRC / "hf_detr" / "hub" / "handler.py").read_bytes()
        requirements = (folders[name] / "requirements.txt").read_text().split()
        assert [r.split("<")[0].split(">")[0] for r in requirements] == ["torch", "torchvision", "timm", "transformers"]
    env = {
        "PYTHONPATH": SITE_PACKAGES,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-S", "-c", _HANDLER_SCRIPT, str(image_path), *map(str, folders.values())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert "RESULTS" in done.stdout, (done.stdout[-2000:], done.stderr[-3000:])
    output = json.loads(done.stdout.split("RESULTS", 1)[1])
    for name, folder in folders.items():  # a segmentation folder gives its detector's boxes, as the pipeline does
        expected, answered = _pipeline_detections(folder, image_path, 0.0), output["results"][str(folder)]
        assert len(answered) == len(expected) == 10, name
        for mine, theirs in zip(answered, expected):
            assert (mine["label"], mine["box"]) == (theirs["label"], theirs["box"]), name
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-6), name
    assert output["errors"] == [
        "ValueError: inputs is not a base64 image (Only base64 data is allowed); send the file's bytes "
        'base64-encoded, as in {"inputs": "<base64 image>", "parameters": {"threshold": 0.5}}',
        output["errors"][1],
        'ValueError: the request body must be a JSON object {"inputs": "<base64 image>", "parameters": '
        "{\"threshold\": 0.5}}, got \"{'image': '...'}\"",
        "ValueError: parameters.threshold must be a score in [0, 1], got 2",
        "ValueError: unknown parameters ['top_k']; the one parameter is threshold, e.g. "
        '{"inputs": "<base64 image>", "parameters": {"threshold": 0.5}}',
        "TypeError: inputs must be a base64 string, bytes or a PIL image, got int",
    ]
    assert output["errors"][1].startswith("ValueError: inputs could not be read as an image")


class _Uploads:
    """The Hub calls of push_to_hub, recorded (bound to this object, not to the HfApi): repositories by (type, id)
    and the files uploaded to each."""

    def __init__(self, monkeypatch) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    def create_repo(self, repo_id, repo_type=None, **kwargs) -> RepoUrl:
        self.repos.setdefault((repo_type or "model", repo_id), {})
        return RepoUrl(f"https://huggingface.co/{'spaces/' if repo_type == 'space' else ''}{repo_id}")

    def upload_folder(self, folder_path, repo_id, repo_type=None, **kwargs) -> None:
        files = self.repos[(repo_type or "model", repo_id)]
        files.update(
            {str(p.relative_to(folder_path)): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()}
        )


@pytest.mark.slow
def test_push_to_hub_with_a_space_runs_the_app(model_dir, image_path, tmp_path, monkeypatch):
    """push_to_hub(..., space=True) uploads the model (with its handler) and a Space; the Space's app.py, run where
    only its own copy of hf_detr can be imported, serves the page for the model, from the Hub cache."""
    uploads = _Uploads(monkeypatch)
    model, processor = load_model(model_dir)
    push_to_hub(model, "someone/detr-tiny", processor, card=model_card(model.config, "someone/detr-tiny"), space=True)
    model_files = uploads.repos[("model", "someone/detr-tiny")]
    space_files = uploads.repos[("space", "someone/detr-tiny")]
    assert {"handler.py", "requirements.txt", "model.safetensors", "README.md"} <= set(model_files)
    assert {"app.py", "requirements.txt", "README.md", "hf_detr/apps/app.py", "hf_detr/modeling/backbone.py"} <= set(
        space_files
    )
    assert "create_app('someone/detr-tiny').launch()" in space_files["app.py"].decode()
    requirements = space_files["requirements.txt"].decode().split()
    assert {"timm>=1.0", "av>=12"} <= set(requirements) and not any(r.startswith("pytest") for r in requirements)
    card = SpaceCard(space_files["README.md"].decode())
    assert (card.data.sdk, card.data.app_file, card.data.models) == ("gradio", "app.py", ["someone/detr-tiny"])
    with pytest.raises(TypeError, match="space must be True, False or a Space id"):
        push_to_hub(model, "someone/detr-tiny", processor, card=ModelCard("---\n---\n"), space=1)

    space, snapshot = tmp_path / "space", tmp_path / "hub" / "models--someone--detr-tiny" / "snapshots" / ("0" * 40)
    for root, files in ((space, space_files), (snapshot, model_files)):
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    port = _free_port()  # a Space tells Gradio its address through the environment
    env = {
        "PYTHONPATH": SITE_PACKAGES,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "GRADIO_SERVER_PORT": str(port),
    }
    with _serving([sys.executable, "-S", "app.py"], tmp_path / "space.log", port, cwd=space, env=env) as url:
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False)
        _, _, shown, message = client.predict(handle_file(str(image_path)), 0.0, api_name="/on_image")
    assert message == "10 detection(s) with score >= 0.00 in noise.png (200 x 150 pixels)"
    _assert_same_detections(shown, _pipeline_detections(model_dir, image_path, 0.0))
