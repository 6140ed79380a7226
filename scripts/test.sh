#!/usr/bin/env bash
# Runs every test: unit tests, hsm-sim's suite, and the kms integration suite against SoftHSM2
# and against hsm-sim. Installs what the tests need (softhsm2, opensc, openssl) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v openssl >/dev/null || missing+=(openssl) # the TLS tests make their certificates with it
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Builds target/debug/libhsm_sim.so, which the embedded default and the hsm-sim runs load.
cargo build --workspace --all-targets
echo "== unit tests, hsm-sim, kms integration on SoftHSM2"
cargo test --workspace
echo "== kms integration on hsm-sim"
KMS_TEST_HSM=hsm-sim cargo test --test it
