"""The exported viewer in a real headless browser: it renders offline and its frames change.

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package (no downloaded
browsers: playwright drives the system chromium). Skipped when either is missing.
"""
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from iivformer.evaluate import Evaluation
from iivformer.viz import viewer

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-unsafe-swiftshader"]  # WebGL on the CPU (SwiftShader)

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
if not CHROMIUM:
    pytest.skip("no chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def viewer_html(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = 20
    walk = np.linspace(0, 2 * np.pi, frames)[:, None, None]
    targets = rng.normal(0, 250, (1, 17, 3)) * (1 + 0.5 * np.sin(walk + np.arange(17)[None, :, None]))
    predictions = targets + rng.normal(0, 40, targets.shape)
    errors = np.linalg.norm(predictions - targets, axis=-1)
    evaluation = Evaluation(predictions, targets, {"p1": errors, "p2": errors}, np.array(["S9"] * frames),
                            np.array(["Walking 1"] * frames), np.array(["Walking"] * frames), np.arange(frames))
    figure = viewer.sequence_figure(evaluation, "S9", "Walking 1")
    return viewer.export_html(figure, tmp_path_factory.mktemp("viewer") / "S9_Walking_1.html")


@pytest.fixture(scope="module")
def page(viewer_html):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 750})
        page.remote_requests = []

        def refuse_network(route):  # the viewer must not need the network
            if not route.request.url.startswith(("file:", "data:", "blob:")):
                page.remote_requests.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", refuse_network)
        page.goto(viewer_html.as_uri())
        page.wait_for_selector(".gl-container canvas", timeout=30_000)
        page.wait_for_timeout(1500)
        yield page
        browser.close()


def _scene_pixels(page) -> np.ndarray:
    box = page.locator(".gl-container canvas").first.bounding_box()
    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_viewer_renders_the_3d_scene_offline(page):
    assert page.evaluate("typeof Plotly") == "object"
    pixels = _scene_pixels(page)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert pixels.std() > 5 and colours > 50, "the 3D view looks blank"
    # bones coloured by error: some clearly green/red pixels besides the grey background and truth
    saturated = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 80
    assert saturated.sum() > 100
    assert page.remote_requests == []


def _title(page) -> str:
    return page.evaluate("document.querySelector('.gtitle').textContent")


def _changed(before, after) -> float:
    return float((np.abs(before - after).sum(axis=-1) > 30).mean())


def test_moving_to_another_frame_changes_the_view(page):
    before = _scene_pixels(page)
    page.evaluate("""() => Plotly.animate(document.querySelector('.plotly-graph-div'), ['12'],
        {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}})""")
    page.wait_for_timeout(1000)
    after = _scene_pixels(page)
    assert _changed(before, after) > 0.001
    assert "frame 12" in _title(page)


def test_play_button_animates(page):
    page.evaluate("""() => Plotly.animate(document.querySelector('.plotly-graph-div'), ['0'],
        {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}})""")
    page.wait_for_timeout(500)
    before = _scene_pixels(page)
    page.get_by_text("Play", exact=True).click()
    page.wait_for_timeout(400)
    after = _scene_pixels(page)
    page.get_by_text("Pause", exact=True).click()
    assert _changed(before, after) > 0.001
    assert "frame 0:" not in _title(page)
