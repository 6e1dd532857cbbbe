#!/usr/bin/env bash
# Install h5gate on Debian 12 / Ubuntu 24.04 with nothing but what a fresh image ships, then start it.
#
# Why a script and not `pip install --user`: Debian's Python refuses pip outside a virtual environment
# (PEP 668), a fresh image has no pip at all, and `python3 -m venv` needs the python3-venv package. So:
# apt-get the few packages that are missing, build a virtual environment from the system's own Python,
# install this folder into it, and run it (in the foreground, or as a systemd service with --service).
#
#   bash install.sh                    as root: /opt/h5gate, starts h5gate in the foreground
#   bash install.sh --service          as root: also the `h5gate` user, /etc/h5gate, the systemd unit
#   bash install.sh --no-start         only install
#   bash install.sh -- --port 8081     everything after -- goes to `h5gate serve`
# Environment: H5GATE_PREFIX (where the venv goes), H5GATE_BIN_LINK (the `h5gate` link), PYTHON (default
# /usr/bin/python3), H5GATE_APT_EXTRA (more Debian packages, e.g. "ffmpeg"; else imageio-ffmpeg's is used).
set -euo pipefail
cd "$(dirname "$0")"
SRC=$(pwd)

service=0
start=1
serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --service) service=1 ;;
    --no-start) start=0 ;;
    --) shift; serve_args=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
  PREFIX=${H5GATE_PREFIX:-/opt/h5gate}
  BIN_LINK=${H5GATE_BIN_LINK:-/usr/local/bin/h5gate}
else
  SUDO=(sudo)
  PREFIX=${H5GATE_PREFIX:-$HOME/.local/opt/h5gate}
  BIN_LINK=${H5GATE_BIN_LINK:-$HOME/.local/bin/h5gate}
fi
[ "$service" -eq 0 ] || [ "$(id -u)" -eq 0 ] || die "--service needs root (sudo bash install.sh --service)"
PYTHON=${PYTHON:-/usr/bin/python3}

# 1. Debian packages: Python and its venv module (a fresh image has neither), plus whatever was asked for.
packages=(python3 python3-venv ca-certificates)
read -r -a extra <<<"${H5GATE_APT_EXTRA:-}"
packages+=("${extra[@]}")
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
  if [ ${#SUDO[@]} -gt 0 ] && ! command -v sudo >/dev/null; then
    die "missing ${missing[*]}: run this as root, or install them first"
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$PYTHON" ] || die "$PYTHON not found (set PYTHON=/path/to/python3.11+)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "h5gate needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"

# 2. A virtual environment of the system Python, and this folder installed into it.
if [ ! -x "$PREFIX/bin/python" ]; then
  say "virtual environment in $PREFIX"
  "$PYTHON" -m venv "$PREFIX"
fi
say "installing h5gate from $SRC"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check "$SRC"
mkdir -p "$(dirname "$BIN_LINK")"
ln -sf "$PREFIX/bin/h5gate" "$BIN_LINK"
say "installed $("$PREFIX/bin/h5gate" --version) as $BIN_LINK"

# 3. Optionally the service: its own user, its data in /var/lib/h5gate, the sandboxed unit.
if [ "$service" -eq 1 ]; then
  id h5gate >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/h5gate --no-create-home --shell /usr/sbin/nologin h5gate
  install -d -m 0755 /etc/h5gate
  if [ ! -e /etc/h5gate/h5gate.toml ]; then
    printf '%s\n' '# h5gate settings (README.md "Configuration"); restart the service after a change.' \
      'data_dir = "/var/lib/h5gate"' 'port = 8080' >/etc/h5gate/h5gate.toml
  fi
  sed "s|/opt/h5gate/bin/h5gate|$PREFIX/bin/h5gate|" deploy/h5gate.service >/etc/systemd/system/h5gate.service
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now h5gate.service
    systemctl restart h5gate.service  # an upgrade runs the new code
    say "service h5gate running: journalctl -u h5gate -f"
    start=0
  else
    say "unit written to /etc/systemd/system/h5gate.service, but systemd is not running here"
  fi
fi

if [ "$start" -eq 1 ]; then
  say "starting h5gate: open http://localhost:8080/ (admin / 12345; change it: h5gate passwd admin)"
  exec "$PREFIX/bin/h5gate" serve "${serve_args[@]}"
fi
