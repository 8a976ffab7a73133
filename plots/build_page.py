"""Rebuild plots/dvc_plots.html, the page `dvc plots show` fills (.dvc/config `plots.html_template`).

It is plots/page.html with vega, vega-lite and vega-embed inlined, so the page needs no network: the
default page of DVC loads them from a CDN and is blank offline. The three packages are pinned here
(version and the npm registry's sha512 integrity); to update one, change its line and run

    python plots/build_page.py

which downloads the tarballs from the npm registry, checks them, and writes the page. Record the new
versions in plots/README.md.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = HERE / "page.html"
OUT = HERE / "dvc_plots.html"
MARKER = "<!-- VENDORED SCRIPTS -->"
REGISTRY = "https://registry.npmjs.org"

# name: (version, file in the tarball, dist.integrity from `npm view <name>@<version> dist.integrity`)
PACKAGES = {
    "vega": (
        "5.33.1",
        "package/build/vega.min.js",
        "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
    ),
    "vega-lite": (
        "5.23.0",
        "package/build/vega-lite.min.js",
        "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
    ),
    "vega-embed": (
        "6.29.0",
        "package/build/vega-embed.min.js",
        "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
    ),
}


def fetch(name: str, version: str, member: str, integrity: str) -> str:
    """The minified build of one package, from its npm tarball, checked against ``integrity``."""
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        blob = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{url}: integrity {digest} does not match the pinned {integrity}")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        source = tar.extractfile(member)
        if source is None:
            raise SystemExit(f"{url}: no file {member}")
        code = source.read().decode("utf-8")
    # the source map is not vendored: drop the comment that points to it
    code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", code)
    if "</script" in code.lower():
        raise SystemExit(f"{name}: the code holds '</script', it cannot be inlined as is")
    return code


def build() -> str:
    page = PAGE.read_text(encoding="utf-8")
    if page.count(MARKER) != 1:
        raise SystemExit(f"{PAGE} must hold the line {MARKER!r} once")
    scripts = [
        f"<script>/* {name} {version} (BSD-3-Clause, see plots/README.md) */\n"
        f"{fetch(name, version, member, integrity).strip()}\n</script>"
        for name, (version, member, integrity) in PACKAGES.items()
    ]
    return page.replace(MARKER, "\n".join(scripts))


if __name__ == "__main__":
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
