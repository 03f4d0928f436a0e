# The runner image: bookworm's python3 (the base image services/sheep/images.py makes with
# debootstrap and `docker import`, so no registry is needed) with the runner and schemas
# packages and their dependencies, unpacked from wheels into the build context's site/.
# Built by `shepherd image runner`; its tag is <project version>-<hash of what goes in>.
ARG BASE=shepherd/python:bookworm
FROM ${BASE}
COPY site/ /opt/shepherd/
# Compiled once here, or every container would compile pydantic again as it starts.
RUN python3 -m compileall -q /opt/shepherd
ENV PYTHONPATH=/opt/shepherd PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "-m", "runner.cli"]
