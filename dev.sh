#!/usr/bin/env bash
# The project's single entry point. Every command first does whatever set-up is still missing
# (Debian packages, the .venv, Python packages) and skips what is already there.
#
#   ./dev.sh demo [RASTER]            predict + rank patches on a built-in example (or your raster)
#   ./dev.sh test [PYTEST ARGS]       ruff + the whole test suite (what CI runs)
#   ./dev.sh bench [ARGS]             the performance benchmarks (see BENCHMARKS.md)
#   ./dev.sh package                  the installable plugin zip, in dist/
#   ./dev.sh qgis                     the QGIS desktop with the plugin and the example scene
#   ./dev.sh setup                    only the set-up
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(python3-gdal gdal-bin python3-rasterio python3-scipy python3-matplotlib python3-skimage
              python3-venv xvfb xauth)
VENV=.venv
PY=$VENV/bin/python
LOCK=requirements.lock  # every version pip installs here (tools/constraints.py writes it)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

QGIS_PACKAGES=(qgis python3-qgis qgis-providers)
QGIS_OLDEST=3.40   # the current LTR; Debian 12 has it in bookworm-backports, Debian 13 in its own suite
BACKPORTS=/etc/apt/sources.list.d/sial-bookworm-backports.sources

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

qgis_is_current() {  # QGIS, its Python bindings and providers, QGIS_OLDEST or newer
  local version package
  for package in "${QGIS_PACKAGES[@]}"; do installed "$package" || return 1; done
  version=$(dpkg-query -W -f='${Version}' qgis 2>/dev/null) || return 1
  dpkg --compare-versions "$version" ge "$QGIS_OLDEST"
}

setup_system() {
  local missing=() sudo=() codename
  for package in "${APT_PACKAGES[@]}"; do installed "$package" || missing+=("$package"); done
  qgis_is_current || missing+=(qgis-lts)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install: ${missing[*]}" >&2; exit 2; }
    sudo=(sudo)
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  local target=()
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      say "adding bookworm-backports (QGIS $QGIS_OLDEST LTR)"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | "${sudo[@]}" tee "$BACKPORTS" >/dev/null
    fi
    target=(-t bookworm-backports)
  fi
  "${sudo[@]}" apt-get update -q
  local others=()
  for package in "${missing[@]}"; do
    case " ${QGIS_PACKAGES[*]} qgis-lts " in *" $package "*) ;; *) others+=("$package") ;; esac
  done
  [ ${#others[@]} -eq 0 ] || "${sudo[@]}" apt-get install -y -q "${others[@]}"
  "${sudo[@]}" apt-get install -y -q "${target[@]}" "${QGIS_PACKAGES[@]}"
  qgis_is_current || { echo "error: QGIS $QGIS_OLDEST or newer could not be installed" >&2; exit 2; }
}

setup_python() {
  if [ ! -x "$PY" ]; then
    say "creating $VENV from Debian's Python (with its PyQGIS, GDAL, rasterio, numpy)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  local stamp=$VENV/.requirements.sha256 wanted
  wanted=$(cat requirements.txt "$LOCK" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing Python packages (torch is large: a few GB, a minute or two)"
    # Keep Debian's numpy: its GDAL bindings are built against it. The lock holds every other
    # version, so the tests run with what the plugin installs into QGIS, whatever the registry
    # has released since (tools/constraints.py says how to move them).
    local constraints=$VENV/constraints.txt
    /usr/bin/python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > "$constraints"
    "$PY" -m pip install --quiet --disable-pip-version-check -c "$constraints" -c "$LOCK" -r requirements.txt
    echo "$wanted" > "$stamp"
  fi
}

setup() { setup_system; setup_python; }

command=${1:-help}
shift || true
case "$command" in
  setup) setup ;;
  demo)
    setup
    exec "$PY" -m backend demo "$@" ;;
  test)
    setup
    say "ruff"
    "$PY" -m ruff check .
    "$PY" -m ruff format --check .
    say "pytest"
    QT_QPA_PLATFORM=offscreen exec "$PY" -m pytest "$@" ;;
  bench)
    setup
    exec "$PY" -m benchmarks "$@" ;;
  package)
    setup
    exec "$PY" tools/package.py "$@" ;;
  qgis)
    setup
    exec "$PY" tools/desktop.py ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    [ "$command" = help ] || exit 2 ;;
esac
