"""The temperature lab in a real browser: JupyterLab in headless Chromium.

Starts JupyterLab (127.0.0.1, a random free port, a token) in a temporary folder holding a small
notebook that builds the lab with the shipped GPT, with fresh configuration, runtime and settings
folders so no user setting leaks in (the "Jupyter news" prompt is switched off there). It runs the
notebook, moves the temperature slider with the keyboard and checks that the slider's read-out,
the entropy read-out and the bar chart all changed. A screenshot goes to
build/screenshots/temperature_lab.png. Every process the test started is stopped afterwards.

Chromium defaults to /usr/bin/chromium (set LLMCOURSE_CHROMIUM for another binary). Without
it the test is skipped, except under CI, where it fails.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "build" / "screenshots" / "temperature_lab.png"
CHROMIUM = os.environ.get("LLMCOURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

LAB_NOTEBOOK = [
    "import torch\n\ntorch.set_num_threads(1)",
    "from llmcourse.checkpoints import load_pretrained\nfrom llmcourse.generation import GPTAdapter\n"
    "from llmcourse.widgets import TemperatureLab\n\n"
    "pretrained = load_pretrained(\"python_docs_char\")\n"
    "lab = TemperatureLab(GPTAdapter(pretrained.model, pretrained.tokenizer), prompt=\"The return statement \")\n"
    "lab.widget",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(server: subprocess.Popen) -> None:
    """Stop the server's process group and every process it started (kernels run in their own sessions)."""
    try:
        family = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=5)


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free port, its root a temporary folder with the lab notebook in it."""
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in LAB_NOTEBOOK])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "lab.ipynb")
    settings = tmp_path / "settings"
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               LLMCOURSE_THREADS="1")
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, token
    finally:
        stop(server)
        log.close()


def test_temperature_slider_moves_entropy_and_chart_in_jupyterlab(jupyterlab):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (required when CI is set; set LLMCOURSE_CHROMIUM)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (set LLMCOURSE_CHROMIUM)")
    from playwright.sync_api import expect, sync_playwright

    url, token = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/lab/tree/lab.ipynb?token={token}")
            # The status bar says "… | Idle" once a kernel is attached; running earlier opens a dialog.
            expect(page.get_by_text(re.compile(r"\|\s*Idle"))).to_be_visible(timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator('[data-command="runmenu:run-all"]').click()

            temperature = page.locator(".widget-hslider", has_text="temperature")
            entropy = page.locator(".lab-entropy")
            chart = page.locator("svg.lab-chart")
            expect(entropy).to_be_visible(timeout=60_000)
            expect(temperature.locator(".widget-readout")).to_have_text("1.00")
            entropy_before, chart_before = entropy.inner_text(), chart.inner_html()
            assert re.fullmatch(r"[0-9.]+ nats = [0-9.]+ bits", entropy_before)

            temperature.locator(".noUi-handle").focus()
            for _ in range(10):                              # 10 steps of 0.05: 1.00 -> 1.50
                page.keyboard.press("ArrowRight")
            expect(temperature.locator(".widget-readout")).to_have_text("1.50", timeout=10_000)
            expect(entropy).not_to_have_text(entropy_before, timeout=15_000)
            entropy_after = entropy.inner_text()
            page.wait_for_timeout(300)                      # let the last slider event finish redrawing
            entropy_after = entropy.inner_text()
            assert float(entropy_after.split()[0]) > float(entropy_before.split()[0])   # hotter: more entropy
            assert chart.inner_html() != chart_before and "nan" not in chart.inner_html().lower()

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".jp-OutputArea-output").last.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT))
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()
