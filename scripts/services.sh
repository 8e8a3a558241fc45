#!/usr/bin/env bash
# Make sure the services the tests talk to are up: Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432.
set -uo pipefail
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null; then
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
    else
        echo "services: Redis is not running and redis-server is not installed; Redis tests will be skipped" >&2
    fi
fi
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -q; then
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
exit 0
