#!/usr/bin/env bash
# Vendor the site's JavaScript from the npm registry, so the built book works offline:
# MathJax 3 (equations) and @jupyter-widgets/html-manager (saved widget views).
# Only the files a page loads are kept: MathJax's CHTML bundle with its fonts and the
# extensions it autoloads; the html-manager's standalone embed.js with its icon fonts.
# Usage: bash book/vendor-js.sh   (re-run after changing a version below)
set -euo pipefail
MATHJAX_VERSION=3.2.2
HTML_MANAGER_VERSION=1.0.15
root="$(cd "$(dirname "$0")" && pwd)/_static/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" >/dev/null)
mkdir -p "$tmp/mathjax" "$tmp/html-manager"
tar xzf "$tmp/mathjax-$MATHJAX_VERSION.tgz" -C "$tmp/mathjax"
tar xzf "$tmp/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION.tgz" -C "$tmp/html-manager"

rm -rf "$root/mathjax" "$root/html-manager"
mkdir -p "$root/mathjax/output/chtml/fonts" "$root/mathjax/input/tex" "$root/html-manager"
mj="$tmp/mathjax/package"
cp "$mj/LICENSE" "$mj/es5/tex-chtml.js" "$root/mathjax/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$root/mathjax/output/chtml/fonts/"
cp -r "$mj/es5/input/tex/extensions" "$root/mathjax/input/tex/"
cp -r "$mj/es5/a11y" "$mj/es5/ui" "$root/mathjax/"
hm="$tmp/html-manager/package"
# the package has no LICENSE file; its licence (BSD-3-Clause) is in package.json, the bundled ones here
cp "$hm/package.json" "$hm/dist/embed.js" "$hm/dist/embed.js.LICENSE.txt" "$hm/dist/"*.woff* "$root/html-manager/"
printf 'mathjax@%s (Apache-2.0)\n@jupyter-widgets/html-manager@%s (BSD-3-Clause)\n' \
  "$MATHJAX_VERSION" "$HTML_MANAGER_VERSION" > "$root/VERSIONS"
du -sh "$root/mathjax" "$root/html-manager"
