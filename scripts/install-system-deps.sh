#!/usr/bin/env bash
# Installs the system packages Sluice's demo, tests and benchmarks use:
# PostgreSQL server and clients (initdb, psql, pgbench, pg_dump) and pgbouncer,
# a C compiler with Python's headers for the compiled hot-path loops, and
# OpenSSL's headers for the compiled record sealing.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
command -v pgbouncer >/dev/null || missing+=(pgbouncer)
command -v runuser >/dev/null || missing+=(util-linux)
# The compiled hot-path loops (src/sluice/protocols/postgres/_speedups.c).
command -v gcc >/dev/null || missing+=(gcc)
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
# OpenSSL's headers for the compiled record sealing (src/sluice/recording/_seal.c).
[ -e /usr/include/openssl/sha.h ] || missing+=(libssl-dev)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a pgbouncer service on install; the tests run their own.
if command -v pgbouncer >/dev/null && [ "$(id -u)" -eq 0 ]; then
    (service pgbouncer stop || true) >/dev/null 2>&1
fi
