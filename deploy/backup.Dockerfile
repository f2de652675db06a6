# syntax=docker/dockerfile:1.7
# The compose `backup` service: PostgreSQL's client tools of the server's major version (16, as
# the postgres service), MinIO's `mc`, scripts/backup and scripts/restore, and deploy/backup-loop
# as the main process. Build context: the repository root (see backup.Dockerfile.dockerignore).
ARG MC_IMAGE=minio/mc:latest
FROM ${MC_IMAGE} AS mc

FROM postgres:16-bookworm
COPY --from=mc /usr/bin/mc /usr/local/bin/mc
COPY scripts/backup scripts/restore deploy/backup-loop /usr/local/bin/
ENV BACKUP_DIR=/backups
ENTRYPOINT ["backup-loop"]
