#!/usr/bin/env bash
# Regenerates DejaVuSans-Subset.ttf, the font maxsup-viz embeds so plots render without system
# fonts or fontconfig. Source: Debian's fonts-dejavu-core 2.37 (DejaVuSans.ttf, 760 KB); the
# subset keeps Latin, Latin-1, Greek and common math/punctuation glyphs (~ a tenth of the size).
# Needs `pip install fonttools`. Licence: LICENSE-DejaVu.txt beside this file.
set -euo pipefail
cd "$(dirname "$0")"
pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00A0-00FF,U+0391-03A9,U+03B1-03C9,U+2010-2027,U+2030,U+2032-2033,U+2190-2193,U+2212,U+2248,U+2260,U+2264-2265,U+221E,U+00B7,U+2022" \
  --layout-features='kern' --no-hinting --desubroutinize \
  --output-file=DejaVuSans-Subset.ttf
