#!/usr/bin/env bash
# Make sure an nginx binary is on this machine, so the tests can check the receiver's nginx
# recipe (deploy/nginx.conf) with `nginx -t` and run it in front of gunicorn. Installs
# Debian's `nginx-light` when nginx is missing and we are root (the service is not started:
# the tests run their own nginx in a temporary directory); otherwise says what to do. Under
# CI=true a missing nginx is an error, because CI must check the recipe.
set -euo pipefail

have_nginx() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

if have_nginx; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-nginx: nginx not found; installing Debian's nginx-light" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
    if have_nginx; then
        exit 0
    fi
    echo "ensure-nginx: installed nginx-light, but nginx is still missing" >&2
    exit 1
fi

message="ensure-nginx: nginx not found and not root to install it"
case "${CI:-}" in
    1 | true | TRUE | True | yes)
        echo "$message: CI needs it (apt-get install nginx-light)" >&2
        exit 1
        ;;
esac
echo "$message: the nginx recipe test will be SKIPPED (apt-get install nginx-light)" >&2
exit 0
