#!/usr/bin/env bash
# Vendor the site's JavaScript from the npm registry, so the built book works offline:
# MathJax 3 (equations); the widget manager @jupyter-widgets/html-manager (saved widget
# views) in its AMD build, with RequireJS to load it; and anywidget's front-end, which runs
# the explorers' ES module (saved in each notebook's widget state) on the static pages.
# Only the files a page loads are kept: MathJax's CHTML bundle with its fonts and the
# extensions it autoloads; the html-manager's embed-amd.js with its icon fonts.
# Usage: bash book/vendor-js.sh   (re-run after changing a version below; ANYWIDGET_VERSION
# follows the anywidget Python package, whose widgets name it as their front-end version)
set -euo pipefail
MATHJAX_VERSION=3.2.2
HTML_MANAGER_VERSION=1.0.15
REQUIREJS_VERSION=2.3.7
ANYWIDGET_VERSION=0.11.0
root="$(cd "$(dirname "$0")" && pwd)/_static/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX_VERSION" "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
  "requirejs@$REQUIREJS_VERSION" "anywidget@$ANYWIDGET_VERSION" >/dev/null)
for pkg in mathjax html-manager requirejs anywidget; do mkdir -p "$tmp/$pkg"; done
tar xzf "$tmp/mathjax-$MATHJAX_VERSION.tgz" -C "$tmp/mathjax"
tar xzf "$tmp/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION.tgz" -C "$tmp/html-manager"
tar xzf "$tmp/requirejs-$REQUIREJS_VERSION.tgz" -C "$tmp/requirejs"
tar xzf "$tmp/anywidget-$ANYWIDGET_VERSION.tgz" -C "$tmp/anywidget"

rm -rf "$root/mathjax" "$root/html-manager" "$root/requirejs" "$root/anywidget"
mkdir -p "$root/mathjax/output/chtml/fonts" "$root/mathjax/input/tex" "$root/html-manager" "$root/requirejs" "$root/anywidget"
mj="$tmp/mathjax/package"
cp "$mj/LICENSE" "$mj/es5/tex-chtml.js" "$root/mathjax/"
cp -r "$mj/es5/output/chtml/fonts/woff-v2" "$root/mathjax/output/chtml/fonts/"
cp -r "$mj/es5/input/tex/extensions" "$root/mathjax/input/tex/"
cp -r "$mj/es5/a11y" "$mj/es5/ui" "$root/mathjax/"
hm="$tmp/html-manager/package"
# the package has no LICENSE file; its licence (BSD-3-Clause) is in package.json, the bundled ones here
cp "$hm/package.json" "$hm/dist/embed-amd.js" "$hm/dist/embed.js.LICENSE.txt" "$hm/dist/"*.woff* "$root/html-manager/"
# RequireJS's licence (MIT) heads require.js; anywidget's (MIT) is its LICENSE
cp "$tmp/requirejs/package/require.js" "$tmp/requirejs/package/package.json" "$root/requirejs/"
cp "$tmp/anywidget/package/dist/index.js" "$tmp/anywidget/package/LICENSE" "$tmp/anywidget/package/package.json" "$root/anywidget/"
printf 'mathjax@%s (Apache-2.0)\n@jupyter-widgets/html-manager@%s (BSD-3-Clause)\nrequirejs@%s (MIT)\nanywidget@%s (MIT)\n' \
  "$MATHJAX_VERSION" "$HTML_MANAGER_VERSION" "$REQUIREJS_VERSION" "$ANYWIDGET_VERSION" > "$root/VERSIONS"
du -sh "$root/mathjax" "$root/html-manager" "$root/requirejs" "$root/anywidget"
