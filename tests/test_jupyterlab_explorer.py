"""In a real JupyterLab in headless chromium: the explorer's widgets render, and the frame slider and
the action menu change what the 3D view shows, with no code edited.

Needs Debian's chromium and the playwright package, like the viewer test; skipped without them.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_viewer_browser import ARGS, CHROMIUM

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
if not CHROMIUM:
    pytest.skip("no chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

CELLS = [
    "from iivformer import evaluate, prepare, synthetic\n"
    "from iivformer.model import IIVFormer\n"
    "from iivformer.viz.explorer import Explorer",
    "prepared = prepare.prepare(*synthetic.write_dataset('tiny', preset='tiny', seed=0, progress=False), keep_archives=True)\n"
    "model = IIVFormer(embed_dim_ratio=8, depth=1, num_heads=2)\n"
    "evaluation = evaluate.evaluate_split(model, prepared.test)",
    "explorer = Explorer(evaluation, prepared, model)\n"
    "explorer.select('S9', 'Walking 1', 0)\n"
    "explorer.show()",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": cell}
                          for cell in CELLS],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (folder / "explorer.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), "iivformer-test"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", f"--ServerApp.token={token}",
         f"--ServerApp.root_dir={folder}", "--allow-root", "--ServerApp.open_browser=False"],
        stdout=open(folder / "server.log", "w"), stderr=subprocess.STDOUT, env=dict(os.environ, JUPYTER_NO_CONFIG="1"))
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}"
    server.terminate()
    server.wait(timeout=30)


def test_explorer_widgets_respond_in_jupyterlab(lab):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.goto(lab)
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        page.locator("text=/Python 3 \\(ipykernel\\) \\| Idle/").first.wait_for(timeout=120_000)
        title = page.locator("text=/S9 Walking 1, frame \\d+/").first
        for attempt in range(3):  # a click that lands while the kernel is still settling is retried
            page.click("text=Run", timeout=30_000)
            page.click("text=Run All Cells", timeout=30_000)
            try:
                title.wait_for(timeout=90_000)
                break
            except sync_api.TimeoutError:
                if attempt == 2:
                    raise
        assert "frame 0" in title.inner_text()
        assert page.locator(".js-plotly-plot").count() >= 1  # the 3D view rendered
        assert page.locator("text=<Figure size").count() == 0  # the 2D views are pictures, not reprs

        page.locator(".jupyter-widgets .noUi-handle, .widget-slider .ui-slider-handle").first.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.locator("text=/S9 Walking 1, frame 3\\b/").first.wait_for(timeout=30_000)

        page.locator(".jupyter-widgets select").nth(1).select_option("Greeting")
        page.locator("text=/S9 Greeting, frame 0\\b/").first.wait_for(timeout=30_000)
        browser.close()
