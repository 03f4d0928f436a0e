# The image of Shepherd's services: bookworm's python3 (the base image services/sheep/images.py
# makes with debootstrap and `docker import`, so no registry is needed) with the services,
# schemas and runner packages and their dependencies, unpacked from wheels into the build
# context's site/. Its entrypoint is the `shepherd` command: gateway, notifier, or a sheep
# (with bare runners, which run on the same python3). Built by `shepherd image services`.
ARG BASE=shepherd/python:bookworm
FROM ${BASE}
COPY site/ /opt/shepherd/
RUN python3 -m compileall -q /opt/shepherd
ENV PYTHONPATH=/opt/shepherd PYTHONUNBUFFERED=1
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "services.cli"]
