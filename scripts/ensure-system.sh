#!/usr/bin/env bash
# Install the Debian packages labcloud uses and, with --postgres (the test setup), make sure PostgreSQL answers
# on 127.0.0.1:5432, and the end-to-end tests' browser and the single sign-on tests' OpenID provider are there.
# Idempotent: does nothing when all is there.
# Needs root or sudo for installs.
set -euo pipefail

want_postgres=0
[ "${1:-}" = "--postgres" ] && want_postgres=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
# The browser of the end-to-end UI tests, for the test setup only (scripts/test.sh passes --postgres):
# Playwright drives it through executable_path; `playwright install` is never used.
if [ "$want_postgres" = 1 ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  dpkg -s chromium-driver >/dev/null 2>&1 || missing+=(chromium-driver)
  # The crash test that kills the server while it stores a job's outputs slows those down with strace.
  command -v strace >/dev/null 2>&1 || missing+=(strace)
fi
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "$want_postgres" = 1 ] && ! command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  missing+=(postgresql)
fi
# The single-node Slurm cluster of the Slurm executor's tests (tests/slurm.py, testing/slurm.py), for the test
# setup only; without recommends (slurm-wlm-plugins: some 30 packages of HDF5, IPMI, ROCm... plugins).
lean_missing=() # installed without recommends
if [ "$want_postgres" = 1 ]; then
  [ -x /usr/sbin/slurmctld ] || command -v slurmctld >/dev/null 2>&1 || lean_missing+=(slurm-wlm)
  [ -x /usr/sbin/munged ] || command -v munged >/dev/null 2>&1 || lean_missing+=(munge)
  # slurmrestd and its JWT authentication, for the tests of the executor's REST client (tests/test_slurm_rest.py)
  [ -x /usr/sbin/slurmrestd ] || command -v slurmrestd >/dev/null 2>&1 || lean_missing+=(slurmrestd)
  dpkg -s slurm-wlm-jwt-plugin >/dev/null 2>&1 || lean_missing+=(slurm-wlm-jwt-plugin)
fi
# Docker and Podman for the container tests (tests/engines.py starts a private dockerd and a private Podman
# storage, and scripts/build-image.sh makes their image from the static busybox), for the test setup only: the
# service runs without any container engine. Without recommends (buildah, criu, needrestart, uidmap...): the
# dependencies bring containerd, conmon and a network stack, which is all the tests use.
has() { [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || command -v "$1" >/dev/null 2>&1; }
if [ "$want_postgres" = 1 ]; then
  has dockerd || lean_missing+=(docker.io)
  has podman || lean_missing+=(podman)
  has runc || lean_missing+=(runc)
  dpkg -s busybox-static >/dev/null 2>&1 || lean_missing+=(busybox-static)
  # debootstrap makes the Snakemake image of the TES test (scripts/build-snakemake-image.sh)
  has debootstrap || lean_missing+=(debootstrap)
  # nginx in front of two replicas, the deployment kit's proxy tests (testing/nginx.py)
  has nginx || lean_missing+=(nginx-light)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#lean_missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${lean_missing[*]}"
  [ ${#missing[@]} -gt 0 ] || as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${lean_missing[@]}" >/dev/null
fi
if [ "$want_postgres" = 1 ]; then
  for binary in dockerd containerd runc podman conmon; do
    has "$binary" || { echo "ensure-system: no $binary after installing docker.io, podman and runc" >&2; exit 1; }
  done
fi

if [ "$want_postgres" = 1 ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Test machines only: let local connections in without a password, as the suite expects.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432
fi

# The Celery tests' brokers: Redis on 127.0.0.1:6379 and RabbitMQ on :5672 (guest/guest), started when they
# do not answer (installed first when missing). Test setup only.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ "$want_postgres" = 1 ] && ! answers 6379; then
  command -v redis-server >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
  mkdir -p /tmp/labcloud-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/labcloud-redis \
    --logfile /tmp/labcloud-redis/redis.log
  for _ in $(seq 1 50); do answers 6379 && break; sleep 0.2; done
fi
if [ "$want_postgres" = 1 ] && ! answers 5672; then
  command -v rabbitmq-server >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >/dev/null
  as_root rabbitmq-server -detached
  for _ in $(seq 1 120); do answers 5672 && break; sleep 0.5; done
fi

# The certified OpenID provider of the single sign-on tests: npm's oidc-provider, at the version
# testing/oidc/package-lock.json pins, run by Node (20 or later). Test setup only.
if [ "$want_postgres" = 1 ]; then
  command -v npm >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
  oidc="$(dirname "$0")/../testing/oidc"
  if ! cmp -s "$oidc/package-lock.json" "$oidc/node_modules/.installed-lock.json" 2>/dev/null; then
    npm ci --prefix "$oidc" --no-audit --no-fund --loglevel=error
    cp "$oidc/package-lock.json" "$oidc/node_modules/.installed-lock.json"
  fi
fi
