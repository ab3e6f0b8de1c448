#!/usr/bin/env sh
# Writes the secrets of the docker-compose cluster into deploy/secrets/ (one
# file each, fresh random values), unless they already exist. Run once
# before `docker compose up`; delete deploy/secrets/ to start over (the
# PostgreSQL volume keeps the old password: `docker compose down -v` too).
set -eu
cd "$(dirname "$0")"
dir=secrets
if [ -e "$dir/jwt_secret" ]; then
  echo "$dir/ already holds secrets; leaving them as they are"
  exit 0
fi
umask 077
mkdir -p "$dir"
# The directory is private to you; the files in it are readable by the
# containers' users (compose mounts each file as it is on the host).
umask 022
random() { openssl rand -hex "$1"; }
postgres_password=$(random 24)
printf '%s' "$postgres_password" > "$dir/postgres_password"
printf 'postgres://atlas:%s@postgres:5432/atlas' "$postgres_password" > "$dir/database_url"
random 32 > "$dir/jwt_secret"
# The audit signing key: a 32-byte Ed25519 seed in base64.
openssl rand -base64 32 > "$dir/audit_signing_key"
random 24 > "$dir/nats_atlas_password"
random 24 > "$dir/nats_ops_password"
random 16 > "$dir/grafana_admin_password"
echo "wrote $(ls "$dir" | wc -l) secrets to deploy/$dir/"
