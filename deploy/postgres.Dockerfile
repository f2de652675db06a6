# syntax=docker/dockerfile:1.7
# PostgreSQL 16 with pgBackRest and rclone, for two services of docker-compose.yml: `postgres`
# (the server: archive_command pushes every WAL segment into the pgBackRest repository) and
# `backup` (deploy/backup-loop: the scheduled backups and the off-site copies, scripts/backup).
# One image, so both sides of the repository run the same pgBackRest. The official image's own
# apt source (PostgreSQL's) provides pgbackrest; Debian's provides rclone.
# Build context: the repository root (see postgres.Dockerfile.dockerignore).
ARG POSTGRES_IMAGE=postgres:16.10-bookworm
FROM ${POSTGRES_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbackrest rclone ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 750 /var/lib/pgbackrest /var/lib/goaltrack-backup \
    && install -d -o postgres -g postgres -m 770 /var/log/pgbackrest /var/spool/pgbackrest /tmp/pgbackrest
COPY scripts/backup scripts/restore deploy/backup-loop /usr/local/bin/
# postgres-exporter's role (pg_monitor only), made when the image initialises an empty volume.
COPY deploy/postgres-monitor-role /docker-entrypoint-initdb.d/10-monitor-role.sh
