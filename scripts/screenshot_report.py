#!/usr/bin/env python3
"""Render a report.html in headless chromium: take a PNG screenshot and/or check its images.

Usage::

    python scripts/screenshot_report.py study/report.html --out shot.png --check

``--check`` exits 1 unless every ``<img>`` of the page loaded. The check works on any HTML
file: a copy of the page gets a ``<base>`` pointing at the original folder (so relative image
paths still resolve) and a small script that, on window ``load``, writes
``document.body.dataset.imagesOk = "loaded/total"``; chromium's ``--dump-dom`` then prints the
DOM and the attribute is read back. No devtools-protocol client or extra package is needed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Running as `python scripts/screenshot_report.py` puts scripts/ (not the repo root) on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reprlab.errors import ReprlabError  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container needs --no-sandbox; the rest keeps chromium from touching the network
# (updates, sync, QUIC) or the GPU, which neither CI nor a headless server has.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--hide-scrollbars",
]
_MARKER = re.compile(r'data-images-ok="(\d+)/(\d+)"')
_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesOk = ok + "/" + imgs.length;
});
</script>"""


def _run_chromium(args: list[str], chromium: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run chromium with a throw-away profile; kill its whole process group on timeout."""
    if not chromium.is_file():
        raise ReprlabError(f"{chromium}: chromium not found (install the Debian package 'chromium')")
    with tempfile.TemporaryDirectory(prefix="reprlab-chromium-", ignore_cleanup_errors=True) as profile:
        cmd = [str(chromium), *_FLAGS, f"--user-data-dir={profile}", *args]
        # A new session lets us kill the renderer/zygote children too, not just the browser.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ReprlabError(f"chromium did not finish within {timeout:g} s: {' '.join(args[-1:])}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _html_path(html: Path) -> Path:
    html = Path(html).resolve()
    if not html.is_file():
        raise ReprlabError(f"{html}: HTML file not found")
    return html


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 4000, chromium: Path = CHROMIUM, timeout: float = 90) -> Path:
    """Write a ``width`` x ``height`` PNG screenshot of ``html`` to ``png`` and return its path."""
    html = _html_path(html)
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        png.unlink()  # so a stale file can never pass for a new screenshot
    proc = _run_chromium([f"--screenshot={png}", f"--window-size={width},{height}", html.as_uri()], chromium, timeout)
    if not png.is_file() or png.stat().st_size == 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ReprlabError(f"{html}: chromium wrote no screenshot (exit {proc.returncode}): {tail}")
    return png


def check_images_loaded(html: Path, chromium: Path = CHROMIUM, timeout: float = 90) -> tuple[int, int]:
    """Open ``html`` in headless chromium and return ``(images loaded, images total)``.

    An image counts as loaded when it is ``complete`` with a non-zero natural width, i.e. it
    was fetched *and* decoded (a broken data URI or a missing file has width 0).
    """
    html = _html_path(html)
    text = html.read_text(encoding="utf-8", errors="replace")
    base = f'<base href="{html.parent.as_uri()}/">'
    head = re.search(r"<head[^>]*>", text, flags=re.IGNORECASE)
    text = text[: head.end()] + base + text[head.end() :] if head else base + text
    body_end = text.lower().rfind("</body>")
    text = text[:body_end] + _CHECK_SCRIPT + text[body_end:] if body_end >= 0 else text + _CHECK_SCRIPT
    with tempfile.TemporaryDirectory(prefix="reprlab-imgcheck-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(text, encoding="utf-8")
        # The virtual-time budget makes chromium let pending loads/timers finish before dumping.
        proc = _run_chromium(["--virtual-time-budget=15000", "--dump-dom", probe.as_uri()], chromium, timeout)
    match = _MARKER.search(proc.stdout)
    if match is None:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ReprlabError(f"{html}: chromium reported no image status (exit {proc.returncode}): {tail}")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path, help="the report.html to render")
    p.add_argument("--out", type=Path, default=None, help="screenshot path (default: <html>.png next to it)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=4000)
    p.add_argument("--check", action="store_true", help="also check that every <img> loaded; exit 1 if not")
    p.add_argument("--no-screenshot", action="store_true", help="only run --check")
    args = p.parse_args(argv)
    try:
        if not args.no_screenshot:
            out = args.out or args.html.with_suffix(".png")
            print(f"screenshot: {screenshot(args.html, out, args.width, args.height)}")
        if args.check or args.no_screenshot:
            loaded, total = check_images_loaded(args.html)
            print(f"images loaded: {loaded}/{total}")
            if loaded != total:
                return 1
    except ReprlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
