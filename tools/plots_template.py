"""Build an offline HTML template for `dvc plots show` (Vega, Vega-Lite and vega-embed inlined).

DVC's default plots page loads these libraries from a CDN, which fails offline. This script gets the same
versions DVC uses from the npm registry (`npm pack`), checks the tarballs against the integrity hashes the
registry reports, and writes a template with the scripts inlined and DVC's `{plot_divs}` placeholder.

Usage: python tools/plots_template.py [--out .cache/plots/template.html]
Then:  dvc plots show --html-template .cache/plots/template.html -o reports/_plots
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGES = {"vega@5.20.2": "package/build/vega.min.js", "vega-lite@5.2.0": "package/build/vega-lite.min.js",
            "vega-embed@6.18.2": "package/build/vega-embed.min.js"}
log = logging.getLogger("leam.plots_template")


def _npm_pack(spec: str, cache: Path) -> Path:
    if shutil.which("npm") is None:
        raise SystemExit("error: npm is not installed; it is needed once to fetch Vega for offline plots")
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(cache)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: npm pack {spec} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    info = json.loads(result.stdout)[0]
    tarball = cache / info["filename"]
    algorithm, expected = info["integrity"].split("-", 1)
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"error: {tarball.name} does not match its registry integrity hash")
    return tarball


def build(out: Path, cache: Path) -> Path:
    scripts = []
    for spec, member in PACKAGES.items():
        with tarfile.open(_npm_pack(spec, cache)) as archive:
            code = archive.extractfile(member).read().decode("utf-8")
        safe = code.replace("</script", "<\\/script")
        scripts.append(f"<script>{safe}</script>")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>LEAM plots (dvc plots show)</title>\n"
            + "\n".join(scripts)
            + "\n<style>body{font-family:sans-serif} table{border-spacing:15px}</style></head>\n"
              "<body>\n{plot_divs}\n</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".cache/plots/template.html")
    parser.add_argument("--cache", default=".cache/plots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    path = build(Path(args.out), Path(args.cache))
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
