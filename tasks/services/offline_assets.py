"""HTML reports that work offline: Great Expectations' Data Docs and `dvc plots show` load jQuery, Bootstrap,
Font Awesome, bootstrap-table and Vega from CDNs, so without a network their pages are unstyled and their
tables and plots empty. This rewrites those URLs to local copies taken from PyPI packages (xstatic-*,
django-js-lib-vega-embed) and from the few files vendored in tasks/vendor/.

    python -m tasks.services.offline_assets dvc_plots     # after `dvc plots show` (what `make plots` does)
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from pathlib import Path

import js_lib_vega_embed
from xstatic.pkg import bootstrap, font_awesome, jquery

VENDORED = Path(__file__).parents[1] / "vendor"
VEGA = Path(js_lib_vega_embed.__file__).parent / "static" / "js_lib_vega_embed"
FONT_AWESOME = Path(font_awesome.BASE_DIR)

# local file name -> where it comes from
SOURCES: dict[str, Path] = {
    "jquery.min.js": Path(jquery.BASE_DIR) / "jquery.min.js",
    "bootstrap.min.css": Path(bootstrap.BASE_DIR) / "css" / "bootstrap.min.css",
    "bootstrap.bundle.min.js": Path(bootstrap.BASE_DIR) / "js" / "bootstrap.bundle.min.js",  # Popper included
    "bootstrap-table.min.js": VENDORED / "bootstrap-table.min.js",
    "bootstrap-table.min.css": VENDORED / "bootstrap-table.min.css",
    "bootstrap-table-filter-control.min.js": VENDORED / "bootstrap-table-filter-control.min.js",
    "bootstrap-table-filter-control.min.css": VENDORED / "bootstrap-table-filter-control.min.css",
    "bootstrap-datepicker.min.js": VENDORED / "bootstrap-datepicker.min.js",
    "bootstrap-datepicker.min.css": VENDORED / "bootstrap-datepicker.min.css",
    "vega5.js": VEGA / "vega5.js",
    "vega-lite5.js": VEGA / "vega-lite5.js",
    "vega-embed6.js": VEGA / "vega-embed6.js",
    "fontawesome/css/all.min.css": FONT_AWESOME / "css" / "all.min.css",
}

# a CDN URL as the pages write it (a prefix; versions vary) -> the local file, or None: drop the tag
# (Popper is in bootstrap.bundle; the dark theme is optional)
CDN: list[tuple[str, str | None]] = [
    ("https://code.jquery.com/jquery-", "jquery.min.js"),
    ("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css", "bootstrap.min.css"),
    ("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js", "bootstrap.bundle.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/popper.js/", None),
    ("https://cdnjs.cloudflare.com/ajax/libs/font-awesome/", "fontawesome/css/all.min.css"),
    ("https://cdn.jsdelivr.net/npm/vega@", "vega5.js"),
    ("https://cdn.jsdelivr.net/npm/vega-lite@", "vega-lite5.js"),
    ("https://cdn.jsdelivr.net/npm/vega-embed@", "vega-embed6.js"),
    ("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js", "bootstrap-table.min.js"),
    ("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css", "bootstrap-table.min.css"),
    ("https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
     "bootstrap-table-filter-control.min.js"),
    ("https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control",
     "bootstrap-table-filter-control.min.css"),
    ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/", "bootstrap-datepicker.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/", "bootstrap-datepicker.min.css"),
    ("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark", None),
]
GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/[\w.-]+\.png(\?[^\"')]*)?")
ASSET_TAG = re.compile(r"<(script|link)\b[^>]*?\b(?:src|href)=\"(https?://[^\"]+)\"[^>]*>(?:\s*</script>)?")


def local_name(url: str) -> str | None | bool:
    """The local file for a CDN URL, None to drop its tag, False when it is not a known asset."""
    for prefix, name in CDN:
        if url.startswith(prefix):
            return name
    return False


def copy_vendor(vendor: Path) -> None:
    for name, source in SOURCES.items():
        (vendor / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, vendor / name)
    shutil.copytree(FONT_AWESOME / "webfonts", vendor / "fontawesome" / "webfonts", dirs_exist_ok=True)
    shutil.copyfile(FONT_AWESOME / "LICENSE.txt", vendor / "fontawesome" / "LICENSE.txt")


def _swap(match: re.Match, to_vendor: str, left: list[str]) -> str:
    name = local_name(match.group(2))
    if name is False:
        left.append(match.group(2))
        return match.group(0)
    if name is None:
        return ""
    tag = re.sub(r'\s(integrity|crossorigin)="[^"]*"', "", match.group(0))  # a CDN's hash, not our copy's
    return tag.replace(match.group(2), f"{to_vendor}/{name}")


def localize(site: Path, vendor: Path, images: Path | None = None) -> list[str]:
    """Copy the assets to `vendor` and point every page under `site` at them; returns the external URLs
    left (none expected). `images`: a folder with logo-long.png for GX's hosted logos."""
    copy_vendor(vendor)
    left: list[str] = []
    for page in sorted(site.rglob("*.html")):
        to_vendor = Path(os.path.relpath(vendor, page.parent)).as_posix()
        text = ASSET_TAG.sub(functools.partial(_swap, to_vendor=to_vendor, left=left),
                             page.read_text(encoding="utf8"))
        if images is not None:
            to_images = Path(os.path.relpath(images, page.parent)).as_posix()
            text = GX_LOGO.sub(f"{to_images}/logo-long.png", text)
            # GX writes validation pages' favicon one level short of the static folder
            text = re.sub(r'href="(?:\.\./|\./)*static/images/favicon\.ico"', f'href="{to_images}/favicon.ico"', text)
        page.write_text(text, encoding="utf8")
    if images is not None:
        for sheet in site.rglob("*.css"):
            if vendor not in sheet.parents:
                to_images = Path(os.path.relpath(images, sheet.parent)).as_posix()
                sheet.write_text(GX_LOGO.sub(f"{to_images}/logo-long.png", sheet.read_text(encoding="utf8")),
                                 encoding="utf8")
    return left


def main() -> None:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "dvc_plots")
    left = localize(site, site / "vendor")
    print(f"{site}: assets served from {site / 'vendor'}" + (f"; still external: {left}" if left else ""))


if __name__ == "__main__":
    main()
