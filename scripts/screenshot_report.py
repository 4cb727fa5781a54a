"""Render a report (or any HTML file) in headless Chromium and save a PNG screenshot.

    python scripts/screenshot_report.py SELECTION/report.html report.png [--width 1200] [--height 3200]

Needs Debian's chromium (`apt-get install chromium`). The flags keep Chromium off the network (this
machine has none) and out of the user's profile.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 3200, timeout: float = 120) -> Path:
    exe = find_chromium()
    if exe is None:
        raise SystemExit("no chromium found; install Debian's package: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={Path(png).resolve()}", Path(html).resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    return Path(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=3200)
    args = ap.parse_args()
    print(screenshot(args.html, args.png, args.width, args.height))


if __name__ == "__main__":
    main()
